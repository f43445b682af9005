//! Writing a Llama as an HF model directory (`config.json` + `model.safetensors`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::Linear;
use burn_peft_core::format::{NamedTensor, write_atomic, write_safetensors};
use burn_peft_core::{PeftError, PeftModel};
use serde_json::json;

use super::config::{LlamaConfig, ModelType, RopeScaling};
use super::model::Llama;
use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;

impl LlamaConfig {
    /// The config as HF `transformers` writes it for this architecture.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let arch = self.model_type.architecture();
        let mut config = json!({
            "architectures": [arch],
            "model_type": self.model_type.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        });
        if self.rope_scaling != RopeScaling::None {
            config["rope_scaling"] = json!(self.rope_scaling);
        }
        if self.model_type == ModelType::Mistral {
            config["sliding_window"] = json!(self.sliding_window);
        }
        config
    }
}

impl Llama {
    /// Writes the model as an HF directory that [`Llama::from_pretrained`] and `transformers`
    /// load: `config.json`, `model.safetensors` (f32) and, when given, `tokenizer.json` and a
    /// `tokenizer_config.json` with the chat template. Each file is written atomically.
    ///
    /// The model must hold no adapters: merge them first ([`PeftModel::merge_and_unload`]).
    pub fn save_pretrained(
        &self,
        dir: &Path,
        tokenizer: Option<&TextTokenizer>,
        chat_template: Option<&str>,
    ) -> Result<()> {
        let names = self.clone().adapter_names();
        if !names.is_empty() || self.prompt.adapter().is_some() {
            return Err(ModelError::InvalidInput(format!(
                "the model still holds adapters ({}): merge_and_unload them before saving a full model",
                if names.is_empty() {
                    "prompt learning".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        let mut tensors = BTreeMap::new();
        let mut put_linear = |key: String, l: &Linear| {
            tensors.insert(
                format!("{key}.weight"),
                NamedTensor::from_tensor(l.weight.val()).transposed(),
            );
            if let Some(b) = &l.bias {
                tensors.insert(format!("{key}.bias"), NamedTensor::from_tensor(b.val()));
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &layer.self_attn;
            put_linear(format!("{p}.self_attn.q_proj"), &a.q_proj.base);
            put_linear(format!("{p}.self_attn.k_proj"), &a.k_proj.base);
            put_linear(format!("{p}.self_attn.v_proj"), &a.v_proj.base);
            put_linear(format!("{p}.self_attn.o_proj"), &a.o_proj.base);
            let m = &layer.mlp;
            put_linear(format!("{p}.mlp.gate_proj"), &m.gate_proj.base);
            put_linear(format!("{p}.mlp.up_proj"), &m.up_proj.base);
            put_linear(format!("{p}.mlp.down_proj"), &m.down_proj.base);
        }
        if let Some(head) = &self.lm_head {
            put_linear("lm_head".into(), head);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            tensors.insert(
                format!("{p}.input_layernorm.weight"),
                NamedTensor::from_tensor(layer.input_layernorm.weight.val()),
            );
            tensors.insert(
                format!("{p}.post_attention_layernorm.weight"),
                NamedTensor::from_tensor(layer.post_attention_layernorm.weight.val()),
            );
            let a = &layer.self_attn;
            for (name, n) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
                if let Some(n) = n {
                    tensors.insert(
                        format!("{p}.self_attn.{name}.weight"),
                        NamedTensor::from_tensor(n.weight.val()),
                    );
                }
            }
        }
        tensors.insert(
            "model.norm.weight".into(),
            NamedTensor::from_tensor(self.norm.weight.val()),
        );
        tensors.insert(
            "model.embed_tokens.weight".into(),
            NamedTensor::from_tensor(self.embed_tokens.weight.val()),
        );
        std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        let mut config = self.config.to_hf_json();
        if self.lm_head.is_some() {
            config["tie_word_embeddings"] = json!(false);
        }
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| PeftError::format(dir.join("config.json"), e))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        if let Some(tok) = tokenizer {
            tok.save(&dir.join("tokenizer.json"))?;
        }
        if let Some(template) = chat_template {
            let text = serde_json::to_string_pretty(&json!({ "chat_template": template }))
                .map_err(|e| PeftError::format(dir.join("tokenizer_config.json"), e))?;
            write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())?;
        }
        Ok(())
    }
}
