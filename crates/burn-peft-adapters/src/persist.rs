//! Saving and loading adapters of every method in HF PEFT's directory format.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, NamedTensor, check_shape, ensure_all_used, export_adapter,
    read_safetensors, take_tensor, write_atomic, write_safetensors,
};
use burn_peft_core::{PeftError, Result};

use crate::config::read_adapter_config;
use crate::model::AddAdapter;
use crate::model::PROMPT_KEY;
use crate::{PrefixProjection, PrefixTuning, PromptLearning};

/// The file [`AddAdapter::save_prefix_encoder`] writes: prefix tuning's trainable form when it
/// is trained with `prefix_projection` (PEFT's adapter file keeps only the projected table,
/// from which training cannot go on).
pub const PREFIX_ENCODER_FILE: &str = "prefix_encoder.safetensors";

/// Writes adapter `name` of `model`, of any method, to `dir` as PEFT does:
/// `adapter_model.safetensors` (metadata `format: pt`, PEFT keys and `[out, in]` shapes) and
/// `adapter_config.json`. Each file is written atomically, weights first.
pub fn save_adapter<M: AddAdapter>(model: &M, name: &str, dir: &Path) -> Result<()> {
    let prompt = model
        .prompt_host()
        .and_then(|h| h.prompt_slot().named(name));
    let (tensors, config) = match prompt {
        Some(prompt) => {
            let mut tensors = BTreeMap::new();
            tensors.insert(
                PROMPT_KEY.to_string(),
                NamedTensor::from_tensor(prompt.prompt_embeddings()),
            );
            (tensors, prompt.to_peft_json()?)
        }
        None => {
            let tensors = export_adapter(model, name)?;
            let mut config = model
                .adapter_config(name)
                .ok_or_else(|| PeftError::UnknownAdapter(name.to_string()))?;
            let saved = model.modules_to_save();
            config.set_modules_to_save((!saved.is_empty()).then_some(saved));
            (tensors, config.to_peft_json()?)
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    write_atomic(&dir.join(ADAPTER_CONFIG), config.as_bytes())
}

/// Loads the PEFT adapter directory `dir`, of any method (picked from its `peft_type`), into
/// `model` as adapter `name` (inactive unless it is the model's first adapter, as in PEFT).
/// On any error the model is left unchanged.
pub fn load_adapter<M: AddAdapter>(model: &mut M, dir: &Path, name: &str) -> Result<()> {
    let config = read_adapter_config(dir)?.for_loading();
    let weights = dir.join(ADAPTER_WEIGHTS);
    let tensors = read_safetensors(&weights)?;
    let mut staged = model.clone();
    config.load_into(&mut staged, name, tensors, &weights)?;
    *model = staged;
    Ok(())
}

/// See [`AddAdapter::save_prefix_encoder`].
pub(crate) fn save_prefix_encoder<M: AddAdapter>(model: &M, dir: &Path) -> Result<bool> {
    let Some(PrefixTuning {
        embedding,
        projection: Some(mlp),
        ..
    }) = model.prompt_host().and_then(|h| h.prompt_slot().prefix())
    else {
        return Ok(false);
    };
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "embedding".to_string(),
        NamedTensor::from_tensor(embedding.val()),
    );
    for (name, layer) in [("first", &mlp.first), ("second", &mlp.second)] {
        tensors.insert(
            format!("{name}.weight"),
            NamedTensor::from_tensor(layer.weight.val()),
        );
        if let Some(bias) = &layer.bias {
            tensors.insert(format!("{name}.bias"), NamedTensor::from_tensor(bias.val()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    write_safetensors(&dir.join(PREFIX_ENCODER_FILE), &tensors)?;
    Ok(true)
}

/// See [`AddAdapter::load_prefix_encoder`].
pub(crate) fn load_prefix_encoder<M: AddAdapter>(model: &mut M, dir: &Path) -> Result<bool> {
    let file = dir.join(PREFIX_ENCODER_FILE);
    if !file.is_file() {
        return Ok(false);
    }
    let Some(PrefixTuning {
        embedding,
        projection: Some(mlp),
        config,
    }) = model.prompt_host().and_then(|h| h.prompt_slot().prefix())
    else {
        return Err(PeftError::InvalidConfig(format!(
            "{} holds a prefix encoder, but the model has no prefix tuning with projection to \
             load it into",
            file.display()
        )));
    };
    let mut tensors = read_safetensors(&file)?;
    let device = embedding.device();
    let mut linear = |name: &str, old: &Linear| -> Result<Linear> {
        let key = format!("{name}.weight");
        let weight = take_param(&mut tensors, &file, &key, old.weight.dims(), &device)?;
        let bias = match &old.bias {
            Some(b) => {
                let key = format!("{name}.bias");
                Some(take_param(&mut tensors, &file, &key, b.dims(), &device)?)
            }
            None => None,
        };
        Ok(Linear { weight, bias })
    };
    let first = linear("first", &mlp.first)?;
    let second = linear("second", &mlp.second)?;
    let embedding = take_param(&mut tensors, &file, "embedding", embedding.dims(), &device)?;
    ensure_all_used(&tensors, &file)?;
    let prefix = PromptLearning::Prefix(PrefixTuning {
        embedding,
        projection: Some(PrefixProjection { first, second }),
        config: config.clone(),
    });
    crate::model::set_prompt_adapter(model, prefix)?;
    Ok(true)
}

/// Removes `key` from `tensors` as a trainable parameter of shape `dims`.
fn take_param<const D: usize>(
    tensors: &mut BTreeMap<String, NamedTensor>,
    file: &Path,
    key: &str,
    dims: [usize; D],
    device: &burn::tensor::Device,
) -> Result<Param<Tensor<D>>> {
    let t = take_tensor(tensors, file, key)?;
    check_shape(key, &t, &dims)?;
    Ok(Param::from_tensor(t.to_tensor(device, key)?))
}
