//! # burn-peft-models
//!
//! Reference models whose linear layers host adapters under HF PEFT's module names, with
//! loaders for HF model directories and tokenizers.
//!
//! - The model contract, written against by the training loop and the forgetting methods:
//!   [`CausalLm`], [`BaseView`] (the frozen base behind the adapters), [`PretrainedWeights`],
//!   and [`DecoderStack`], which [`layerwise_gradients`] (checkpointing by decoder layer) needs.
//!   A model family is one folder implementing them (see `llama/`).
//! - [`Llama`]: a Llama-family decoder (RMSNorm, rotate-half RoPE, grouped-query attention,
//!   SwiGLU, tied or untied embeddings), from `config.json` + `model.safetensors` (or shards).
//! - [`Bert`]: a BERT encoder (all-MiniLM-L6-v2) with mean-pooled, normalized embeddings.
//! - [`Gguf`]: a validated GGUF reader; [`Pretrained`] loads an HF directory or a GGUF file.
//! - [`linear_cross_entropy`]: the training loss through an output layer, chunked, with the
//!   softmax's gradient formed in the forward pass; [`linear_kl_divergence`], distillation's
//!   loss, the same way.
//! - [`TextTokenizer`]: `tokenizer.json` through the `tokenizers` crate.
#![warn(missing_docs)]

mod attention;
mod bert;
mod error;
mod generate;
pub mod gguf;
mod layerwise;
mod llama;
mod lm;
mod loss;
mod pretrained;
mod swiglu;
mod tokenizer;

pub use bert::{Bert, BertClassifier, BertConfig, BertLayer};
pub use error::{ModelError, Result};
pub use generate::GenerationConfig;
pub use gguf::{Gguf, GgufError, GgufValue};
pub use layerwise::{DecoderStack, layerwise_gradients, prefix_table};
pub use llama::*;
pub use lm::{BaseView, CausalLm, PretrainedWeights};
pub use loss::{linear_cross_entropy, linear_kl_divergence};
pub use pretrained::Pretrained;
pub use tokenizer::TextTokenizer;
