//! LoRA, rsLoRA and DoRA, as in HF PEFT's `tuners/lora`.

mod config;
mod layer;

pub use config::{LLAMA_DEFAULT_TARGETS, LoraConfig, LoraInit, OneOrMany};
pub use layer::Lora;
pub(crate) use layer::replace;
