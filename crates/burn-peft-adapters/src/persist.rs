//! Saving and loading adapters in HF PEFT's directory format.

use std::path::Path;

use burn_peft_core::format::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_adapter, import_adapter, read_safetensors,
    write_atomic, write_safetensors,
};
use burn_peft_core::{PeftError, PeftModel, Result};

use crate::ia3::Ia3Config;
use crate::lora::{LoraConfig, LoraInit};
use crate::prefix::PrefixTuningConfig;
use crate::prompt::PromptTuningConfig;
use crate::{Adapter, AddAdapter};

/// A parsed `adapter_config.json`, by method.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterConfig {
    /// `peft_type: "LORA"`.
    Lora(LoraConfig),
    /// `peft_type: "IA3"`.
    Ia3(Ia3Config),
    /// `peft_type: "PREFIX_TUNING"`.
    Prefix(PrefixTuningConfig),
    /// `peft_type: "PROMPT_TUNING"`.
    Prompt(PromptTuningConfig),
}

/// Reads `<dir>/adapter_config.json` and picks the method from `peft_type`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| PeftError::io(&path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PeftError::format(&path, e))?;
    let peft_type = value
        .get("peft_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| PeftError::format(&path, "no 'peft_type' string"))?;
    match peft_type {
        "LORA" => {
            let config: LoraConfig =
                serde_json::from_value(value.clone()).map_err(|e| PeftError::format(&path, e))?;
            config.validate()?;
            Ok(AdapterConfig::Lora(config))
        }
        "IA3" => {
            let config: Ia3Config =
                serde_json::from_value(value.clone()).map_err(|e| PeftError::format(&path, e))?;
            config.validate()?;
            Ok(AdapterConfig::Ia3(config))
        }
        "PREFIX_TUNING" => serde_json::from_value(value.clone())
            .map(AdapterConfig::Prefix)
            .map_err(|e| PeftError::format(&path, e)),
        "PROMPT_TUNING" => serde_json::from_value(value.clone())
            .map(AdapterConfig::Prompt)
            .map_err(|e| PeftError::format(&path, e)),
        other => Err(PeftError::UnsupportedMethod(other.to_string())),
    }
}

/// Writes adapter `name` of `model` to `dir` as PEFT does: `adapter_model.safetensors`
/// (metadata `format: pt`, PEFT keys and `[out, in]` shapes) and `adapter_config.json`.
/// Each file is written atomically, weights first.
pub fn save_adapter<M>(model: &M, name: &str, dir: &Path) -> Result<()>
where
    M: PeftModel<Adapter = Adapter>,
{
    let tensors = export_adapter(model, name)?;
    let mut config = None;
    let saved: Vec<String> = model.modules_to_save();
    let modules_to_save = (!saved.is_empty()).then_some(saved);
    model.clone().visit_adapter(name, &mut |_, adapter| {
        if config.is_none() {
            config = Some(match adapter {
                Adapter::Lora(l) => LoraConfig {
                    modules_to_save: modules_to_save.clone(),
                    ..l.config.clone()
                }
                .to_peft_json(),
                Adapter::Ia3(a) => Ia3Config {
                    modules_to_save: modules_to_save.clone(),
                    ..a.config.clone()
                }
                .to_peft_json(),
            });
        }
    });
    let config = config.ok_or_else(|| PeftError::UnknownAdapter(name.to_string()))??;
    std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    write_atomic(&dir.join(ADAPTER_CONFIG), config.as_bytes())
}

/// Loads the PEFT adapter directory `dir` into `model` as adapter `name` (inactive unless it
/// is the model's first adapter, as in PEFT). On any error the model is left unchanged.
pub fn load_adapter<M>(model: &mut M, dir: &Path, name: &str) -> Result<()>
where
    M: PeftModel<Adapter = Adapter>,
{
    let config = read_adapter_config(dir)?;
    let weights = dir.join(ADAPTER_WEIGHTS);
    let tensors = read_safetensors(&weights)?;
    let mut staged = model.clone();
    match config {
        AdapterConfig::Lora(mut lora) => {
            // The file holds the trained values; PiSSA must not rewrite the base on load.
            lora.init_lora_weights = LoraInit::Default;
            lora.inference_mode = false;
            staged.add_lora(name, &lora)?;
        }
        AdapterConfig::Ia3(mut ia3) => {
            ia3.inference_mode = false;
            staged.add_ia3(name, &ia3)?;
        }
        AdapterConfig::Prefix(_) => {
            return Err(PeftError::UnsupportedMethod(
                "PREFIX_TUNING on a model without prompt-learning support (Llama has it: Llama::load_adapter)".into(),
            ));
        }
        AdapterConfig::Prompt(_) => {
            return Err(PeftError::UnsupportedMethod(
                "PROMPT_TUNING on a model without prompt-learning support (Llama has it: Llama::load_adapter)".into(),
            ));
        }
    }
    import_adapter(&mut staged, name, tensors, &weights)?;
    *model = staged;
    Ok(())
}
