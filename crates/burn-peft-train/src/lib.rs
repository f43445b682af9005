//! # burn-peft-train
//!
//! The fine-tuning loop over any [`CausalLm`] (the model contract of `burn-peft-models`: its
//! decoders, or your own model):
//!
//! - data: plain text as causal-LM chunks, JSONL (`prompt`/`completion`, chat `messages` with
//!   the loss on the answers only, or `text`) and CSV classification rendered as an
//!   instruction ([`Dataset`], [`Encoder`], [`CsvTask`]), `.bz2` read transparently;
//! - seeded shuffling ([`Batcher`]) and right-padded batches with attention and target masks
//!   ([`collate`]);
//! - evaluation: loss, perplexity, exact match, accuracy by the most likely label
//!   ([`evaluate`]);
//! - the loop ([`Trainer`]): an `indicatif` progress bar with loss, tokens/s and ETA,
//!   `metrics.jsonl`, a `loss.svg` curve, atomic checkpoints, and `resume` that continues a
//!   killed run on the same loss trajectory; gradient checkpointing by decoder layer
//!   ([`TrainConfig::checkpoint_layers`], [`CausalLm::layerwise_gradients`]);
//! - continual learning ([`Trainer::fit_sequence`]): tasks one after another, every task
//!   scored after each, backward transfer in `metrics.jsonl` and `tasks.svg`.
#![warn(missing_docs)]

mod batch;
mod data;
mod error;
mod eval;
mod metrics;
mod model;
mod regularizer;
mod sequence;
mod trainer;
mod weights;

pub use batch::{Batch, Batcher, BatcherState, collate, split_evenly};
pub use burn_peft_core::SplitMix64;
pub use burn_peft_models::CausalLm;
pub use data::{CsvTask, Dataset, Encoder, PromptFormat, Sample, Task, read_text};
pub use error::{Result, TrainError};
pub use eval::{EvalMetrics, SampleScore, evaluate, score_samples};
pub use metrics::{MetricsLog, plot_metrics, read_metrics};
pub use model::{batch_loss, loss_of_hidden, loss_of_hidden_with};
pub use regularizer::Regularizer;
pub use sequence::{SequenceSummary, SequenceTask, backward_transfer};
pub use trainer::{
    RunSummary, TrainConfig, Trainer, WEIGHT_GROWTH_LIMIT, check_fresh_output, describe,
};
pub use weights::{LoadWeights, SaveWeights, WeightsIo};
