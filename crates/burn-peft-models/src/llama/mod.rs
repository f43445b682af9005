//! The Llama family (Llama, SmolLM2, Mistral, Qwen2-style) as an adapter host.

mod config;
mod gguf_load;
mod layerwise;
mod load;
mod model;
mod prompt;
mod save;

pub use config::LlamaConfig;
pub use load::weight_files;
pub(crate) use model::contiguous_transpose;
pub use model::{Attention, DecoderLayer, KvCache, Llama, Mlp, PeftLinear, RmsNorm, rope_tables};
pub use prompt::PREFIX_ENCODER_FILE;
