//! # burn-peft-forget
//!
//! Fine-tuning that measures and limits catastrophic forgetting. Every method is a
//! [`Regularizer`](burn_peft_train::Regularizer) that the trainer consults at each micro-batch,
//! so it works for every adapter method and for full fine-tuning alike:
//!
//! - [`Ewc`]: elastic weight consolidation, `λ/2 · Σ F (θ − θ*)²`, with the diagonal Fisher
//!   estimated on general (old-task) text from per-sample or per-batch gradients, empirical
//!   (from the data's tokens) or sampled ("true", from the model's own predictions); online EWC
//!   folds each consolidation in with decay γ.
//! - [`L2Sp`]: `α/2 · Σ (θ − θ₀)²`, a pull toward the starting values.
//! - [`Replay`]: a [`ReplayBuffer`] (reservoir sampling, balanced per source) whose samples
//!   replace a share of every batch.
//! - [`Distill`]: KL divergence from the frozen base model's predictions on general text. The
//!   teacher is the same model with its adapters switched off ([`BaseView`]), so no second copy
//!   of the weights is held (PEFT users keep a teacher copy; for full fine-tuning a snapshot of
//!   the start is unavoidable and is what is kept).
//! - [`ForgettingConfig`] builds any of them by name ([`Mitigation`]) with the CLI's defaults.
//! - [`OLora`]: over a sequence of tasks, a LoRA per task, each kept orthogonal to the earlier
//!   ones' input subspaces, joined into one PEFT LoRA at the end.
//!
//! ## Where the penalty lives for adapters
//!
//! EWC and L2-SP act on the parameters that train: the adapter's (A, B, magnitudes, IA3
//! vectors, prefixes) or, for full fine-tuning, every weight. For LoRA, the anchors are the
//! initial A and B (B = 0), and the Fisher of B at B = 0 is the Fisher of the product's output
//! directions, so pulling B toward zero along high-Fisher directions limits `ΔW = s·A·B` where
//! the general text is sensitive. A penalty on the effective weight `W + ΔW` with the base
//! weights' Fisher is the stricter form, but it needs a Fisher as large as the model
//! (135 M values for SmolLM2, estimated with gradients of every frozen weight) and a dense `ΔW`
//! per layer at every step, which is what LoRA exists to avoid. The adapter form costs
//! nothing beyond the adapter's own size.
//!
//! Over a sequence of tasks ([`Trainer::fit_sequence`](burn_peft_train::Trainer::fit_sequence)),
//! each method is told the finished task's samples: EWC consolidates on them (separately, or
//! online with decay γ), replay keeps a balanced share of every task, distillation keeps
//! the base as teacher, and O-LoRA freezes the finished task's adapter and starts a new one.
//! [`backward_transfer`] scores the sequence.
#![warn(missing_docs)]

mod distill;
mod ewc;
mod flat;
mod mitigation;
mod olora;
mod replay;

pub use burn_peft_models::BaseView;
pub use distill::{Distill, DistillConfig};
pub use ewc::{Ewc, EwcConfig, FisherKind, L2Sp};
pub use mitigation::{ForgettingConfig, Mitigation, Unfit};
pub use olora::OLora;
pub use replay::{Replay, ReplayBuffer};

/// Backward transfer over a sequence of tasks (defined with the sequence trainer).
pub use burn_peft_train::backward_transfer;
