//! The training loss of a batch, through any [`CausalLm`] (the model contract of
//! `burn-peft-models`).

use burn::optim::GradientsParams;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use burn_peft_models::{CausalLm, linear_cross_entropy};

use crate::batch::Batch;

/// Mean cross-entropy of the target tokens of a batch.
///
/// Only the positions that predict a target go through the output layer: for answers after
/// long prompts this skips most of the vocabulary projection (49k columns for SmolLM2), in the
/// forward and the backward pass, which [`linear_cross_entropy`] runs in chunks. The value
/// equals the full causal-LM loss with the target mask.
pub fn batch_loss<M: CausalLm>(model: &M, batch: &Batch) -> Tensor<1> {
    let hidden = model.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
    loss_of_hidden(model, hidden, batch)
}

/// [`batch_loss`] times `share` (its part of a micro-batch) and the gradients of
/// `scale(share · loss)`, computed one decoder layer at a time
/// ([`CausalLm::layerwise_gradients`]); the loss is detached.
pub(crate) fn batch_gradients<M: CausalLm>(
    model: &M,
    batch: &Batch,
    share: f32,
    scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
    seed: u64,
) -> (Tensor<1>, GradientsParams) {
    model.layerwise_gradients(
        batch.input_ids.clone(),
        Some(batch.attention_mask.clone()),
        &mut |hidden| {
            let loss = loss_of_hidden(model, hidden, batch);
            if share == 1.0 { loss } else { loss * share }
        },
        scale,
        seed,
    )
}

/// [`batch_loss`] from the final hidden states `[batch, seq, hidden]` of `batch` (what
/// [`CausalLm::hidden_states`] returns): the target tokens' mean cross-entropy, a chunk of
/// rows at a time. The head to give [`CausalLm::layerwise_gradients`] for that loss.
///
/// ```
/// use burn::tensor::Device;
/// use burn_peft_models::LlamaConfig;
/// use burn_peft_train::{CausalLm, Sample, batch_loss, collate, loss_of_hidden};
///
/// let device = Device::flex();
/// let model = LlamaConfig::tiny(32).init(&device);
/// let sample = Sample { ids: vec![1, 5, 9, 2], targets: vec![false, true, true, true], label: None };
/// let batch = collate(&[&sample], 0, &device);
/// let hidden = model.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
/// let a = loss_of_hidden(&model, hidden, &batch).into_scalar::<f32>();
/// let b = batch_loss(&model, &batch).into_scalar::<f32>();
/// assert!((a - b).abs() < 1e-6);
/// ```
pub fn loss_of_hidden<M: CausalLm>(model: &M, hidden: Tensor<3>, batch: &Batch) -> Tensor<1> {
    loss_of_hidden_with(model, hidden, batch, |_, targets| targets)
}

/// [`loss_of_hidden`] against other next tokens: `choose(rows, targets)` gets the hidden states
/// `[n, hidden]` at the positions that predict a target and the data's tokens there `[n]`, and
/// returns the tokens to score (EWC's sampled Fisher draws them from the model). With no
/// target in the batch, the loss is a zero that still reaches the parameters.
///
/// ```
/// use burn::tensor::{Device, Int, Tensor};
/// use burn_peft_models::LlamaConfig;
/// use burn_peft_train::{CausalLm, Sample, collate, loss_of_hidden, loss_of_hidden_with};
///
/// let device = Device::flex();
/// let model = LlamaConfig::tiny(32).init(&device);
/// let sample = Sample { ids: vec![1, 5, 9, 2], targets: vec![false, true, true, true], label: None };
/// let batch = collate(&[&sample], 0, &device);
/// let hidden = model.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
/// // The data's own tokens: the ordinary loss.
/// let same = loss_of_hidden_with(&model, hidden.clone(), &batch, |_, targets| targets);
/// let plain = loss_of_hidden(&model, hidden.clone(), &batch);
/// assert_eq!(same.into_scalar::<f32>(), plain.into_scalar::<f32>());
/// // Token 7 at every target position instead.
/// let sevens = loss_of_hidden_with(&model, hidden, &batch, |rows, _| {
///     Tensor::<1, Int>::full([rows.dims()[0]], 7, &device)
/// });
/// assert!(sevens.into_scalar::<f32>() > 0.0);
/// ```
pub fn loss_of_hidden_with<M: CausalLm>(
    model: &M,
    hidden: Tensor<3>,
    batch: &Batch,
    choose: impl FnOnce(Tensor<2>, Tensor<1, Int>) -> Tensor<1, Int>,
) -> Tensor<1> {
    let [b, s, h] = hidden.dims();
    let device = hidden.device();
    // Position r*s + t predicts token t + 1 of row r.
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for r in 0..b {
        for t in 1..s {
            if batch.targets[r * s + t] {
                positions.push((r * s + t - 1) as i64);
                targets.push(batch.ids[r * s + t] as i64);
            }
        }
    }
    let n = positions.len();
    if n == 0 {
        // Summed in f32: an f16 sum of every hidden value can overflow, and inf · 0 is NaN.
        return (hidden.cast(FloatDType::F32).sum() * 0.0).reshape([1]);
    }
    let index = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device);
    let picked = hidden.reshape([b * s, h]).select(0, index);
    let target = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let target = choose(picked.clone(), target);
    linear_cross_entropy(picked, target, None, |x| model.row_logits(x))
}
