//! Prefix and prompt tuning on the Llama model, and adapter files of every method.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Int, Tensor, TensorData};
use burn_peft_adapters::{
    AdapterConfig, PrefixProjection, PrefixTuning, PrefixTuningConfig, PromptGeometry,
    PromptLearning, PromptTuning, PromptTuningConfig, PromptTuningInit, read_adapter_config,
};
use burn_peft_core::format::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, NamedTensor, check_shape, ensure_all_used, read_safetensors,
    take_tensor, write_atomic, write_safetensors,
};
use burn_peft_core::{PeftError, PeftModel};

use super::model::Llama;
use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;

/// The key PEFT saves prompt-learning adapters under.
const PROMPT_KEY: &str = "prompt_embeddings";

/// The file [`Llama::save_prefix_encoder`] writes: prefix tuning's trainable form when it is
/// trained with `prefix_projection` (PEFT's adapter file keeps only the projected table, from
/// which training cannot go on).
pub const PREFIX_ENCODER_FILE: &str = "prefix_encoder.safetensors";

impl Llama {
    /// The shape prompt-learning adapters need.
    pub fn prompt_geometry(&self) -> PromptGeometry {
        PromptGeometry {
            num_layers: self.config.num_hidden_layers,
            hidden_size: self.config.hidden_size,
            num_kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim(),
        }
    }

    fn attach_prompt(&mut self, name: &str, prompt: PromptLearning) -> Result<()> {
        if let Some(existing) = &self.prompt_name {
            return Err(PeftError::InvalidConfig(format!(
                "the model already has the prompt-learning adapter '{existing}': remove it first"
            ))
            .into());
        }
        if self.adapter_names().iter().any(|n| n == name) {
            return Err(PeftError::DuplicateAdapter(name.to_string()).into());
        }
        let frozen = self.clone().no_grad();
        *self = frozen;
        self.prompt_learning = Some(prompt.set_require_grad(true));
        self.prompt_name = Some(name.to_string());
        Ok(())
    }

    /// Adds a prefix-tuning adapter (random init); geometry missing from `config` is taken from
    /// the model. Everything else is frozen.
    pub fn add_prefix_tuning(&mut self, name: &str, config: &PrefixTuningConfig) -> Result<()> {
        let config = config.clone().fill(&self.prompt_geometry())?;
        let device = self.embed_tokens.weight.device();
        let prefix = PrefixTuning::init(&config, &device)?;
        self.attach_prompt(name, PromptLearning::Prefix(prefix))
    }

    /// Adds a prompt-tuning adapter; `TEXT` init needs the tokenizer.
    pub fn add_prompt_tuning(
        &mut self,
        name: &str,
        config: &PromptTuningConfig,
        tokenizer: Option<&TextTokenizer>,
    ) -> Result<()> {
        let config = config.clone().fill(&self.prompt_geometry())?;
        let device = self.embed_tokens.weight.device();
        let prompt = match config.prompt_tuning_init {
            PromptTuningInit::Random => {
                PromptTuning::random(&config, self.config.hidden_size, &device)
            }
            PromptTuningInit::Text => {
                let tokenizer = tokenizer.ok_or_else(|| {
                    PeftError::InvalidConfig("prompt_tuning_init TEXT needs a tokenizer".into())
                })?;
                let text = config.prompt_tuning_init_text.clone().unwrap_or_default();
                let ids =
                    PromptTuning::init_ids(&tokenizer.encode(&text)?, config.num_virtual_tokens)?;
                self.check_ids(&ids)?;
                let n = ids.len();
                let ids = Tensor::<2, Int>::from_data(
                    TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
                    &device,
                );
                let e = self.embed_tokens.forward(ids).detach();
                let [_, n, h] = e.dims();
                PromptTuning::from_embeddings(&config, e.reshape([n, h]))
            }
        };
        self.attach_prompt(name, PromptLearning::Prompt(prompt))
    }

    /// Removes the prompt-learning adapter, if any.
    pub fn remove_prompt_learning(&mut self) -> Option<PromptLearning> {
        self.prompt_name = None;
        self.prompt_learning.take()
    }

    /// Loads a PEFT adapter directory of any method (LoRA, DoRA, IA3, prefix or prompt tuning),
    /// picked from its `peft_type`. On error the model is unchanged.
    pub fn load_adapter(&mut self, dir: &Path, name: &str) -> Result<()> {
        let config = read_adapter_config(dir)?;
        let (prefix, prompt) = match config {
            AdapterConfig::Prefix(c) => (Some(c), None),
            AdapterConfig::Prompt(c) => (None, Some(c)),
            _ => return Ok(burn_peft_adapters::load_adapter(self, dir, name)?),
        };
        let file = dir.join(ADAPTER_WEIGHTS);
        let mut tensors = read_safetensors(&file)?;
        let table = take_tensor(&mut tensors, &file, PROMPT_KEY)?;
        ensure_all_used(&tensors, &file)?;
        let device = self.embed_tokens.weight.device();
        let g = self.prompt_geometry();
        let mut staged = self.clone();
        if let Some(config) = prefix {
            let mut config = config.fill(&g)?;
            config.inference_mode = false;
            let width = 2 * g.num_layers * g.head_dim * g.num_kv_heads;
            check_shape(PROMPT_KEY, &table, &[config.num_virtual_tokens, width])?;
            let t = table.to_tensor(&device, PROMPT_KEY)?;
            staged.attach_prompt(
                name,
                PromptLearning::Prefix(PrefixTuning::from_table(&config, t)),
            )?;
        } else if let Some(config) = prompt {
            let mut config = config.fill(&g)?;
            config.inference_mode = false;
            check_shape(
                PROMPT_KEY,
                &table,
                &[config.num_virtual_tokens, g.hidden_size],
            )?;
            let t = table.to_tensor(&device, PROMPT_KEY)?;
            staged.attach_prompt(
                name,
                PromptLearning::Prompt(PromptTuning::from_embeddings(&config, t)),
            )?;
        }
        *self = staged;
        Ok(())
    }

    /// Saves adapter `name` of any method in PEFT's format.
    pub fn save_adapter(&self, name: &str, dir: &Path) -> Result<()> {
        match (&self.prompt_name, &self.prompt_learning) {
            (Some(n), Some(prompt)) if n == name => {
                let mut tensors = std::collections::BTreeMap::new();
                tensors.insert(
                    PROMPT_KEY.to_string(),
                    NamedTensor::from_tensor(prompt.prompt_embeddings()),
                );
                std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
                write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
                write_atomic(&dir.join(ADAPTER_CONFIG), prompt.to_peft_json()?.as_bytes())?;
                Ok(())
            }
            _ => Ok(burn_peft_adapters::save_adapter(self, name, dir)?),
        }
    }

    /// Writes the embedding and the MLP of a prefix-tuning adapter trained with
    /// `prefix_projection` to `dir/`[`PREFIX_ENCODER_FILE`], next to what
    /// [`save_adapter`](Self::save_adapter) writes, so that training can resume. Returns
    /// `false`, writing nothing, when the model has no such adapter.
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use burn_peft_adapters::PrefixTuningConfig;
    /// use burn_peft_models::{Llama, LlamaConfig};
    ///
    /// let device = Device::flex();
    /// let mut model = Llama::init(&LlamaConfig::tiny(32), &device);
    /// let mut config = PrefixTuningConfig::new(4);
    /// config.prefix_projection = true;
    /// model.add_prefix_tuning("p", &config).unwrap();
    /// let dir = std::env::temp_dir().join("burn-peft-doc-prefix-encoder");
    /// model.save_adapter("p", &dir).unwrap(); // PEFT's files: the projected table only
    /// assert!(model.save_prefix_encoder(&dir).unwrap()); // the embedding and the MLP
    /// assert!(model.load_prefix_encoder(&dir).unwrap());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn save_prefix_encoder(&self, dir: &Path) -> Result<bool> {
        let Some(PromptLearning::Prefix(PrefixTuning {
            embedding,
            projection: Some(mlp),
            ..
        })) = &self.prompt_learning
        else {
            return Ok(false);
        };
        let mut tensors = std::collections::BTreeMap::new();
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

    /// Puts what [`save_prefix_encoder`](Self::save_prefix_encoder) wrote into this model's
    /// prefix-tuning adapter, which must have been added with the same configuration
    /// (`prefix_projection`, sizes). Returns `false` when `dir` has no such file. On error the
    /// model is unchanged.
    pub fn load_prefix_encoder(&mut self, dir: &Path) -> Result<bool> {
        let file = dir.join(PREFIX_ENCODER_FILE);
        if !file.is_file() {
            return Ok(false);
        }
        let Some(PromptLearning::Prefix(PrefixTuning {
            embedding,
            projection: Some(mlp),
            config,
        })) = &self.prompt_learning
        else {
            return Err(PeftError::InvalidConfig(format!(
                "{} holds a prefix encoder, but the model has no prefix tuning with projection to \
                 load it into",
                file.display()
            ))
            .into());
        };
        let mut tensors = read_safetensors(&file)?;
        let device = self.embed_tokens.weight.device();
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
        self.prompt_learning = Some(PromptLearning::Prefix(PrefixTuning {
            embedding,
            projection: Some(PrefixProjection { first, second }),
            config: config.clone(),
        }));
        Ok(true)
    }

    /// Merges the active linear-layer adapters; prefix and prompt tuning cannot be merged.
    pub fn merge_active(&mut self) -> Result<()> {
        if let Some(prompt) = &self.prompt_learning {
            return Err(ModelError::InvalidInput(format!(
                "{} adapters cannot be merged into the weights",
                prompt.peft_type()
            )));
        }
        Ok(self.merge_adapter(None)?)
    }
}

/// Removes `key` from `tensors` as a trainable parameter of shape `dims`.
fn take_param<const D: usize>(
    tensors: &mut std::collections::BTreeMap<String, NamedTensor>,
    file: &Path,
    key: &str,
    dims: [usize; D],
    device: &burn::tensor::Device,
) -> Result<Param<Tensor<D>>> {
    let t = take_tensor(tensors, file, key)?;
    check_shape(key, &t, &dims)?;
    Ok(Param::from_tensor(t.to_tensor(device, key)?))
}
