//! The Llama family (Llama, SmolLM2, Mistral, Qwen2-style) as an adapter host.

mod config;
mod gguf_load;
mod lm;
mod load;
mod model;
mod prompt;
mod save;

pub use config::{LlamaConfig, ModelType, RopeScaling};
pub use load::weight_files;
pub(crate) use model::contiguous_transpose;
pub use model::{
    Attention, DecoderLayer, KvCache, LayerContext, Llama, Mlp, PeftLinear, RmsNorm, rope_tables,
};
