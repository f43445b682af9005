//! # burn-peft-forget
//!
//! Fine-tuning that measures and limits catastrophic forgetting. Every method is a
//! [`Regularizer`](burn_peft_train::Regularizer) that the trainer consults at each micro-batch,
//! so it works for every adapter method and for full fine-tuning alike:
//!
//! - [`Ewc`]: elastic weight consolidation, `λ/2 · Σ F (θ − θ*)²`, with the diagonal Fisher
//!   estimated on general (old-task) text, empirical (from the data's tokens) or sampled
//!   ("true", from the model's own predictions); online EWC folds each consolidation in with
//!   decay γ.
//! - [`L2Sp`]: `α/2 · Σ (θ − θ₀)²`, a pull toward the starting values.
//! - [`Replay`]: a [`ReplayBuffer`] (reservoir sampling, balanced per source) whose samples
//!   replace a share of every batch.
//! - [`Distill`]: KL divergence from the frozen base model's predictions on general text. The
//!   teacher is the same model with its adapters switched off ([`BaseView`]), so no second copy
//!   of the weights is held (PEFT users keep a teacher copy; for full fine-tuning a snapshot of
//!   the start is unavoidable and is what is kept).
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
//! [`backward_transfer`] scores a sequence of tasks.
#![warn(missing_docs)]

mod distill;
mod ewc;
mod flat;
mod replay;

pub use distill::{BaseView, Distill, DistillConfig};
pub use ewc::{Ewc, EwcConfig, FisherKind, L2Sp};
pub use replay::{Replay, ReplayBuffer};

/// Backward transfer over a sequence of tasks (Lopez-Paz & Ranzato 2017): `scores[i][j]` is
/// the score on task `j` after training on tasks `0..=i`. The mean over earlier tasks of
/// (final score − score right after learning it); negative means forgetting. `None` for
/// fewer than two tasks or a ragged table.
///
/// ```
/// use burn_peft_forget::backward_transfer;
/// let scores = vec![vec![0.9, 0.1], vec![0.7, 0.8]];
/// assert!((backward_transfer(&scores).unwrap() + 0.2).abs() < 1e-12);
/// ```
pub fn backward_transfer(scores: &[Vec<f64>]) -> Option<f64> {
    let t = scores.len();
    if t < 2 || scores.iter().any(|r| r.len() != t) {
        return None;
    }
    let last = &scores[t - 1];
    Some((0..t - 1).map(|j| last[j] - scores[j][j]).sum::<f64>() / (t - 1) as f64)
}
