//! # burn-peft-optim
//!
//! What fine-tuning needs on top of `burn-optim`, and nothing it already has:
//!
//! - [`PeftOptimizer`]: burn's AdamW over the parameters that get a gradient (adapters, or the
//!   whole model for full fine-tuning), with a LoRA+ group whose learning rate is
//!   `loraplus_lr_ratio` times the base one for the B matrices. Small parameters are stepped
//!   in buckets, flattened and concatenated (as PyTorch's multi-tensor `foreach` AdamW): the
//!   same values as one step per tensor, with a few recorded operations per tensor instead of
//!   fifteen, which is what bounds a LoRA step on a GPU;
//! - [`LrSchedule`]: linear warm-up, then constant, linear or cosine decay, with HF
//!   `transformers`' step semantics, as a burn [`LrScheduler`](burn::lr_scheduler::LrScheduler);
//! - global-norm gradient clipping over all parameters at once ([`clip_global_norm`]): burn's
//!   own `GradientClipping::Norm` clips each tensor separately, which is not what PyTorch's
//!   `clip_grad_norm_` (and so every PEFT recipe) does;
//! - gradient accumulation (burn's `GradientsAccumulator`) and optimizer state that is saved
//!   (Adam's moments in safetensors, keyed by parameter path) and resumed exactly, even into a
//!   freshly loaded model ([`PeftOptimizer::save`]);
//! - gradients from backward passes the caller runs itself (several per loss, as gradient
//!   checkpointing by layer does), with the same accumulation and loss scaling
//!   ([`PeftOptimizer::backward_step_with`], [`PeftOptimizer::backward_step_parallel_with`]).
//!
//! Full fine-tuning goes through the same path: make every parameter trainable with
//! [`make_trainable`].
#![warn(missing_docs)]

mod buckets;
mod optimizer;
mod params;
mod schedule;

pub use optimizer::{LossScaleConfig, PeftOptimizer, PeftOptimizerConfig, StepReport};
pub use params::{
    clip_global_norm, global_grad_norm, make_trainable, trainable_param_ids, trainable_weight_rms,
};
pub use schedule::{LrSchedule, ScheduleKind};
