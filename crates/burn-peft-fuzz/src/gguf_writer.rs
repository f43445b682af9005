//! A GGUF seed for the fuzzer: the tiny Llama fixture (one layer) as llama.cpp lays a Llama
//! out, with its byte-level BPE tokenizer in the metadata, so that mutations reach the config,
//! tokenizer and model builders and not only the header parser.

use std::path::Path;

use burn_peft_core::format::read_safetensors;

/// GGUF metadata value types.
const UINT32: u32 = 4;
const FLOAT32: u32 = 6;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const ALIGNMENT: usize = 32;

enum Value {
    Uint(u32),
    Float(f32),
    Str(String),
    Strings(Vec<String>),
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The GGUF file (version 3, F32 tensors) of `fixtures/tiny-llama`'s first layer, its
/// tokenizer in the metadata.
pub fn tiny_llama(fixtures: &Path) -> Vec<u8> {
    let dir = fixtures.join("tiny-llama");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("config JSON");
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).expect("tokenizer"))
            .expect("tokenizer JSON");
    let vocab = tokenizer["model"]["vocab"].as_object().expect("BPE vocab");
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().expect("id") as usize] = token.clone();
    }
    let merges = tokenizer["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().unwrap_or(""),
                pair[1].as_str().unwrap_or("")
            ),
            other => other.as_str().unwrap_or("").to_string(),
        })
        .collect();
    let int = |key: &str| Value::Uint(config[key].as_u64().expect(key) as u32);
    let metadata = vec![
        ("general.architecture", Value::Str("llama".into())),
        ("llama.block_count", Value::Uint(1)),
        ("llama.context_length", int("max_position_embeddings")),
        ("llama.embedding_length", int("hidden_size")),
        ("llama.feed_forward_length", int("intermediate_size")),
        ("llama.attention.head_count", int("num_attention_heads")),
        ("llama.attention.head_count_kv", int("num_key_value_heads")),
        ("llama.rope.dimension_count", int("head_dim")),
        ("llama.rope.freq_base", Value::Float(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::Float(1e-5)),
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Strings(tokens)),
        ("tokenizer.ggml.merges", Value::Strings(merges)),
        ("tokenizer.ggml.eos_token_id", Value::Uint(0)),
    ];
    let weights = read_safetensors(&dir.join("model.safetensors")).expect("weights");
    let names = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
        ("input_layernorm.weight", "attn_norm.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ];
    let tensors: Vec<(String, &burn_peft_core::format::NamedTensor)> = names
        .iter()
        .map(|(hf, gguf)| {
            let (key, name) = if hf.starts_with("model.") || hf.starts_with("lm_head") {
                (hf.to_string(), gguf.to_string())
            } else {
                (format!("model.layers.0.{hf}"), format!("blk.0.{gguf}"))
            };
            (name, &weights[&key])
        })
        .collect();

    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in &metadata {
        string(&mut out, key);
        match value {
            Value::Uint(v) => {
                out.extend(UINT32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Float(v) => {
                out.extend(FLOAT32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend(STRING.to_le_bytes());
                string(&mut out, s);
            }
            Value::Strings(list) => {
                out.extend(ARRAY.to_le_bytes());
                out.extend(STRING.to_le_bytes());
                out.extend((list.len() as u64).to_le_bytes());
                for s in list {
                    string(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0usize;
    for (name, tensor) in &tensors {
        string(&mut out, name);
        out.extend((tensor.shape.len() as u32).to_le_bytes());
        // GGUF lists dimensions innermost first.
        for d in tensor.shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(0u32.to_le_bytes()); // F32
        out.extend((offset as u64).to_le_bytes());
        offset = (offset + 4 * tensor.data.len()).next_multiple_of(ALIGNMENT);
    }
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    for (_, tensor) in &tensors {
        for v in &tensor.data {
            out.extend(v.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    }
    out
}
