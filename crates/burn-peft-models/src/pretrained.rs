//! One entry point for a pretrained decoder: an HF directory or a GGUF file, with its tokenizer
//! and chat template.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{ModelError, Result};
use crate::gguf::Gguf;
use crate::llama::Llama;
use crate::tokenizer::TextTokenizer;

/// A pretrained Llama-family model with what is needed to talk to it.
///
/// ```no_run
/// use burn::tensor::Device;
/// use burn_peft_models::Pretrained;
/// let p = Pretrained::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::flex()).unwrap();
/// let prompt = p.chat_prompt("What is the capital of France?").unwrap();
/// let ids = p.tokenizer.encode(&prompt).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// The model.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The chat template text (Jinja), if the source has one.
    pub chat_template: Option<String>,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl Pretrained {
    /// Loads an HF model directory (config.json, safetensors, tokenizer.json) or a `.gguf` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if path.is_file() {
            let file = Gguf::open(path)?;
            let model = Llama::from_gguf(&file, device)?;
            let tokenizer = TextTokenizer::from_gguf(&file)?;
            let chat_template = file
                .metadata_str("tokenizer.chat_template")
                .map(str::to_string);
            return Ok(Self {
                model,
                tokenizer,
                chat_template,
                source: path.to_path_buf(),
            });
        }
        let model = Llama::from_pretrained(path, device)?;
        let tokenizer = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
        let chat_template = std::fs::read_to_string(path.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            });
        Ok(Self {
            model,
            tokenizer,
            chat_template,
            source: path.to_path_buf(),
        })
    }

    /// A one-turn chat prompt ending where the assistant answers. ChatML templates (SmolLM2,
    /// Qwen) are supported, including a default system message written in the template.
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::InvalidInput(format!("{} has no chat template", self.source.display()))
        })?;
        if !template.contains("<|im_start|>") {
            return Err(ModelError::InvalidInput(
                "only ChatML chat templates (<|im_start|>) are supported".into(),
            ));
        }
        let mut prompt = String::new();
        let marker = "<|im_start|>system\n";
        if let Some(start) = template.find(marker) {
            let rest = &template[start + marker.len()..];
            if let Some(end) = rest.find("<|im_end|>") {
                let system = &rest[..end];
                if !system.contains("{{") && !system.contains("{%") {
                    prompt.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
            }
        }
        prompt.push_str(&format!(
            "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ));
        Ok(prompt)
    }

    /// Tokens that end an answer: the model's EOS and the chat end-of-turn token.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops: Vec<u32> = self.model.config.eos_token_id.into_iter().collect();
        for t in ["<|im_end|>", "<|endoftext|>", "</s>"] {
            if let Some(id) = self.tokenizer.token_id(t)
                && !stops.contains(&id)
            {
                stops.push(id);
            }
        }
        stops
    }
}
