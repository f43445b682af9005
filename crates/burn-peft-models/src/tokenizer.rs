//! Tokenizers from `tokenizer.json` files, through the `tokenizers` crate.

use std::path::{Path, PathBuf};

use std::str::FromStr;

use crate::error::{ModelError, Result};
use crate::gguf::{Gguf, GgufValue};

/// A tokenizer loaded from an HF `tokenizer.json`, used exactly as configured there
/// (normalizer, pre-tokenizer, post-processor and special tokens).
///
/// ```no_run
/// let tok = burn_peft_models::TextTokenizer::from_file("model/tokenizer.json".as_ref()).unwrap();
/// let ids = tok.encode("Hello world").unwrap();
/// assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
/// ```
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({})", self.path.display())
    }
}

impl TextTokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, true).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` alone, without the special tokens a post-processor adds (for pieces
    /// that continue a sequence).
    pub fn encode_piece(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Writes the tokenizer as an HF `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.inner.to_string(true).map_err(|e| self.error(e))?;
        burn_peft_core::format::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    /// Number of tokens, special ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Rebuilds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata (byte-level
    /// BPE of type `gpt2`): vocabulary, merges, pre-tokenizer, and control tokens as special
    /// tokens. A BOS is added only when `tokenizer.ggml.add_bos_token` says so.
    pub fn from_gguf(file: &Gguf) -> Result<Self> {
        let path = file.path().to_path_buf();
        let bad = |message: String| ModelError::Tokenizer {
            path: path.clone(),
            message,
        };
        let model = file.metadata_str("tokenizer.ggml.model").unwrap_or("");
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model '{model}' is not supported (only byte-level BPE, 'gpt2')"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            file.get(key)?
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad(format!("'{key}' is not an array of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match file.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| match x {
                            GgufValue::Int(i) => *i,
                            GgufValue::Uint(u) => *u as i64,
                            _ => 1,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let digits = serde_json::json!({"type": "Digits", "individual_digits": true});
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        });
        let pre = file.metadata_str("tokenizer.ggml.pre").unwrap_or("default");
        let pre_tokenizer = match pre {
            "smollm" => {
                serde_json::json!({"type": "Sequence", "pretokenizers": [digits, byte_level]})
            }
            "gpt2" | "default" => byte_level.clone(),
            other => {
                return Err(bad(format!(
                    "pre-tokenizer '{other}' is not supported (smollm, gpt2)"
                )));
            }
        };
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
            .collect();
        // Token type 3 is "control" (special), 4 "user defined".
        let added: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3 || **t == 4)
            .filter_map(|(i, t)| {
                tokens.get(i).map(|content| {
                    serde_json::json!({
                        "id": i, "content": content, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": *t == 3
                    })
                })
            })
            .collect();
        let id = |key: &str| file.metadata.get(key).and_then(GgufValue::as_u64);
        let add_bos = file
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GgufValue::as_bool)
            .unwrap_or(false);
        let post_processor = match (add_bos, id("tokenizer.ggml.bos_token_id")) {
            (true, Some(bos)) => {
                let content = tokens.get(bos as usize).cloned().unwrap_or_default();
                serde_json::json!({
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": content, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": content, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {content.clone(): {"id": content, "ids": [bos], "tokens": [content]}}
                })
            }
            _ => serde_json::json!({
                "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true
            }),
        };
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges
            }
        });
        let inner = tokenizers::Tokenizer::from_str(&json.to_string())
            .map_err(|e| bad(format!("cannot build the tokenizer: {e}")))?;
        Ok(Self { inner, path })
    }

    /// The same tokenizer with padding turned off (tokenizer.json files often pad to a fixed
    /// length, which would change mean pooling).
    pub fn without_padding(mut self) -> Self {
        self.inner.with_padding(None);
        self
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn error(&self, e: impl ToString) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}
