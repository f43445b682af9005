//! What the trainer needs from a model.

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use burn_peft_models::Llama;

/// A causal language model: logits `[batch, seq, vocab]` for token ids `[batch, seq]`, where
/// position `t` predicts token `t + 1`.
pub trait CausalLm: Module + Clone {
    /// The logits; `attention_mask` is 1 for real tokens and 0 for padding.
    fn logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3>;
}

impl CausalLm for Llama {
    fn logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.forward(input_ids, attention_mask)
    }
}

/// Mean cross-entropy of the target tokens of a batch.
pub fn batch_loss<M: CausalLm>(model: &M, batch: &crate::Batch) -> Tensor<1> {
    let logits = model.logits(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
    Llama::causal_lm_loss(
        logits,
        batch.input_ids.clone(),
        Some(batch.target_mask.clone()),
    )
}
