//! A Llama-architecture GGUF file (llama.cpp's layout) as the same `Llama` an HF directory gives.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use burn_peft_core::format::{NamedTensor, check_shape};

use super::config::{LlamaConfig, ModelType, RopeScaling};
use super::model::{Llama, WeightSource};
use crate::error::{ModelError, Result};
use crate::gguf::{Gguf, GgufValue};

impl LlamaConfig {
    /// The model shape from a GGUF file's `llama.*` metadata.
    pub fn from_gguf(file: &Gguf) -> Result<Self> {
        let bad = |reason: String| ModelError::UnsupportedModel {
            path: file.path().to_path_buf(),
            reason,
        };
        let arch = file.metadata_str("general.architecture").unwrap_or("");
        if arch != "llama" {
            return Err(bad(format!(
                "general.architecture is '{arch}', not 'llama'"
            )));
        }
        let uint = |key: &str| -> Result<usize> {
            file.get(key)?
                .as_u64()
                .map(|v| v as usize)
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("'{key}' is not a positive integer")))
        };
        let float = |key: &str, default: f64| -> f64 {
            file.metadata
                .get(key)
                .and_then(GgufValue::as_f64)
                .unwrap_or(default)
        };
        // llama.cpp keeps Llama 3.1's frequency factors as a tensor, and other scalings in the
        // metadata: neither is read, so both are refused rather than ignored.
        if file.info("rope_freqs.weight").is_ok() {
            return Err(bad(
                "rope_freqs.weight (Llama 3.1's RoPE frequency factors) is not supported yet"
                    .into(),
            ));
        }
        if let Some(kind) = file
            .metadata_str("llama.rope.scaling.type")
            .filter(|k| *k != "none")
        {
            return Err(bad(format!(
                "llama.rope.scaling.type '{kind}' is not supported yet"
            )));
        }
        let heads = uint("llama.attention.head_count")?;
        let vocab = match file
            .metadata
            .get("llama.vocab_size")
            .and_then(GgufValue::as_u64)
        {
            Some(v) => v as usize,
            None => file
                .get("tokenizer.ggml.tokens")?
                .as_array()
                .map(<[GgufValue]>::len)
                .ok_or_else(|| bad("tokenizer.ggml.tokens is not an array".into()))?,
        };
        let hidden = uint("llama.embedding_length")?;
        let head_dim = file
            .metadata
            .get("llama.rope.dimension_count")
            .and_then(GgufValue::as_u64)
            .map(|v| v as usize)
            .filter(|&d| d != hidden / heads);
        let id = |key: &str| {
            file.metadata
                .get(key)
                .and_then(GgufValue::as_u64)
                .map(|v| v as u32)
        };
        let config = LlamaConfig {
            model_type: ModelType::Llama,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: uint("llama.feed_forward_length")?,
            num_hidden_layers: uint("llama.block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: file
                .metadata
                .get("llama.attention.head_count_kv")
                .and_then(GgufValue::as_u64)
                .map_or(heads, |v| v as usize),
            head_dim,
            rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: float("llama.rope.freq_base", 10000.0),
            rope_scaling: RopeScaling::None,
            max_position_embeddings: uint("llama.context_length").unwrap_or(2048),
            tie_word_embeddings: file.info("output.weight").is_err(),
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
        };
        config.check().map_err(bad)?;
        Ok(config)
    }
}

/// Hands out GGUF tensors under HF names, undoing llama.cpp's Q/K row permutation.
struct GgufWeights<'a> {
    file: &'a Gguf,
    config: &'a LlamaConfig,
}

/// The GGUF name of an HF parameter, and the head count to un-permute with (Q and K only).
fn gguf_name(key: &str, config: &LlamaConfig) -> Option<(String, Option<usize>)> {
    let fixed = match key {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some((name.to_string(), None));
    }
    let rest = key.strip_prefix("model.layers.")?;
    let (layer, sub) = rest.split_once('.')?;
    let (name, heads) = match sub {
        "self_attn.q_proj.weight" => ("attn_q.weight", Some(config.num_attention_heads)),
        "self_attn.k_proj.weight" => ("attn_k.weight", Some(config.num_key_value_heads)),
        "self_attn.v_proj.weight" => ("attn_v.weight", None),
        "self_attn.o_proj.weight" => ("attn_output.weight", None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
        "mlp.up_proj.weight" => ("ffn_up.weight", None),
        "mlp.down_proj.weight" => ("ffn_down.weight", None),
        "input_layernorm.weight" => ("attn_norm.weight", None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{name}"), heads))
}

/// Undoes llama.cpp's reordering of Q/K rows: within each head it stores the rotary pairs
/// interleaved (rows 0, d/2, 1, d/2+1, ...); HF's rotate-half layout wants the two halves.
pub(crate) fn unpermute_rows(t: &NamedTensor, heads: usize) -> NamedTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut data = vec![0f32; t.data.len()];
    for h in 0..heads {
        for i in 0..half {
            for pair in 0..2 {
                // GGUF row h·d + 2i + pair holds HF row h·d + pair·(d/2) + i.
                let src = h * head_dim + 2 * i + pair;
                let dst = h * head_dim + pair * half + i;
                data[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    NamedTensor {
        shape: t.shape.clone(),
        data,
    }
}

impl GgufWeights<'_> {
    fn fetch(&self, key: &str, shape: &[usize]) -> Result<NamedTensor> {
        let (name, heads) =
            gguf_name(key, self.config).ok_or_else(|| ModelError::UnsupportedModel {
                path: self.file.path().to_path_buf(),
                reason: format!("no GGUF tensor for '{key}'"),
            })?;
        let t = self.file.tensor(&name)?;
        check_shape(&name, &t, shape)?;
        Ok(match heads {
            Some(h) => unpermute_rows(&t, h),
            None => t,
        })
    }
}

impl WeightSource for GgufWeights<'_> {
    fn matrix(&mut self, key: &str, shape: [usize; 2], device: &Device) -> Result<Tensor<2>> {
        Ok(self.fetch(key, &shape)?.to_tensor(device, key)?)
    }

    fn vector(&mut self, key: &str, len: usize, device: &Device) -> Result<Tensor<1>> {
        Ok(self.fetch(key, &[len])?.to_tensor(device, key)?)
    }

    fn has(&self, key: &str) -> bool {
        gguf_name(key, self.config).is_some_and(|(name, _)| self.file.info(&name).is_ok())
    }
}

impl Llama {
    /// Builds the model from a parsed Llama-architecture GGUF file (weights dequantized to f32).
    pub fn from_gguf(file: &Gguf, device: &Device) -> Result<Self> {
        let config = LlamaConfig::from_gguf(file)?;
        let mut src = GgufWeights {
            file,
            config: &config,
        };
        Llama::build(&config, &mut src, device)
    }

    /// Reads a GGUF file and builds the model.
    pub fn from_gguf_file(path: &Path, device: &Device) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols).
        let (heads, d, cols) = (3, 4, 2);
        let rows = heads * d;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for two in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + two * (d / 2) + i; // [h, two, i]
                    let dst = h * d + i * 2 + two; // [h, i, two]
                    permuted[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let t = NamedTensor {
            shape: vec![rows, cols],
            data: permuted,
        };
        assert_eq!(unpermute_rows(&t, heads).data, hf);
    }
}
