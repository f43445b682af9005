//! Attention shared by the decoder and the encoder.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor};

/// softmax(q·kᵀ / √d, masked) · v for `[batch, heads, len, head_dim]` inputs; `mask` is true
/// where attention is forbidden and broadcasts over heads. The softmax runs in f32 whatever the
/// inputs are stored in, as HF's eager attention does.
///
/// The probabilities come from the backend's own softmax kernel on untracked values (on
/// burn-flex: one fused pass per row, rows on every core). When the scores are tracked,
/// autodiff does not see the softmax; it sees `o − c·ō` instead, where `o = p·v + (p·z)·v̄`,
/// `z = s − s̄` and `c = Σⱼ p·z` are zero-valued and a bar marks an untracked copy. The value is
/// `p·v`, and the gradient by the scores is the softmax's, `p·(dp − Σⱼ p·dp)`: the term
/// `−p·Σⱼ p·dp` arrives through `c`, since `Σⱼ p·dp = Σₖ do·o` (FlashAttention's row sums, here
/// in f32 whatever the inputs are stored in). Autodiff records four operations over the
/// `[len, len]` scores (sub, mul, sum, add) instead of burn's composed softmax and the mask
/// (six, with a scalar `exp` on one thread). Two products with `v` instead of one with `p + p·z`
/// cost one more (zero-valued) matrix product in the forward pass, but in f32 the backward pass
/// then keeps `p` alone, not also `p + p·z`, of the scores' size (in half precision, `p` and
/// its half copy, as many bytes as before). Masked scores get no gradient, as with the mask
/// before; in half precision `z` is masked too, so that a score that overflowed to infinity
/// where attention is forbidden cannot turn the row into NaN.
pub fn scaled_dot_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let d = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
    let dtype = scores.dtype();
    let scores = scores.cast(FloatDType::F32);
    let inner = scores.clone().inner();
    let masked = match mask.clone() {
        Some(m) => inner.mask_fill(m.inner(), f32::NEG_INFINITY),
        None => inner,
    };
    let p = like(softmax(masked, 3), &scores);
    if !scores.is_tracked() {
        return p.cast(dtype).matmul(v);
    }
    let z = scores.clone() - scores.detach();
    let z = match mask {
        Some(m) if dtype != DType::F32 => z.mask_fill(m, 0.0),
        _ => z,
    };
    let pz = p.clone() * z;
    let c = pz.clone().sum_dim(3);
    let out = p.cast(dtype).matmul(v.clone()) + pz.cast(dtype).matmul(v.detach());
    let correction = c * out.clone().detach().cast(FloatDType::F32);
    out - correction.cast(dtype)
}

/// `softmax` along `dim` of untracked values by the backend's own kernel: on an autodiff device
/// burn composes it from five operations (on burn-flex each its own pass over the tensor, the
/// `exp` on one thread), while burn-flex's kernel is one fused pass per row, on every core. The
/// result keeps `x`'s autodiff setting and checkpointing strategy, and is untracked.
pub(crate) fn untracked_softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let p = softmax(x.clone().inner(), dim);
    like(p, &x)
}

/// `t` (an inner, untracked tensor) on `like`'s autodiff setting and checkpointing strategy.
pub(crate) fn like<const D: usize>(t: Tensor<D>, like: &Tensor<D>) -> Tensor<D> {
    match like.gradient_checkpointing_strategy() {
        Some(strategy) => t.autodiff().with_gradient_checkpointing_strategy(strategy),
        None => t,
    }
}

/// `[batch, 1, queries, keys]` mask that hides padded keys (attention mask 0).
pub fn padding_mask(attention_mask: Tensor<2, Int>, queries: usize) -> Tensor<4, Bool> {
    let [b, t] = attention_mask.dims();
    attention_mask
        .equal_elem(0)
        .reshape([b, 1, 1, t])
        .expand([b, 1, queries, t])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};
    use burn_peft_core::{SplitMix64, host_random};

    const SHAPE: [usize; 4] = [2, 3, 5, 4];

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.cast(FloatDType::F32)
            .into_data()
            .try_to_vec()
            .expect("f32")
    }

    /// burn's own composition, as this module computed it before: the mask, then `softmax`.
    fn composed(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<4, Bool>>,
    ) -> Tensor<4> {
        let d = q.dims()[3];
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
        let scores = match mask {
            Some(m) => scores.mask_fill(m, f32::NEG_INFINITY),
            None => scores,
        };
        softmax(scores, 3).matmul(v)
    }

    /// Causal, and the second sequence's last two keys padded.
    fn mask(device: &Device) -> Tensor<4, Bool> {
        let [b, _, t, _] = SHAPE;
        let causal = Tensor::<2, Bool>::tril_mask([t, t], 0, device).unsqueeze::<4>();
        let lengths = [t, t - 2];
        let ids: Vec<i64> = (0..b * t)
            .map(|i| i64::from(i % t < lengths[i / t]))
            .collect();
        let padded = padding_mask(Tensor::from_data(TensorData::new(ids, [b, t]), device), t);
        causal.expand([b, 1, t, t]).bool_or(padded)
    }

    /// Output and gradients by q, k and v of `Σ out·w` for random `w`.
    fn run(
        attend: fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<4, Bool>>) -> Tensor<4>,
        inputs: &[Tensor<4>; 4],
        mask: Option<Tensor<4, Bool>>,
    ) -> Vec<Vec<f32>> {
        let [q, k, v, w] = inputs.clone();
        let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
        // Not leaves, as projections' outputs are in a model: their detached copies are then
        // untracked (a leaf's keeps its `require_grad`).
        let out = attend(q.clone() * 1.0, k.clone() * 1.0, v.clone() * 1.0, mask);
        let grads = (out.clone() * w).sum().backward();
        let grad = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
        vec![values(out), grad(&q), grad(&k), grad(&v)]
    }

    fn inputs(device: &Device) -> [Tensor<4>; 4] {
        let mut rng = SplitMix64::new(11);
        let mut draw = || host_random(SHAPE, Distribution::Normal(0.0, 1.5), &mut rng, device);
        [draw(), draw(), draw(), draw()]
    }

    #[test]
    fn value_and_gradients_match_the_composed_softmax() {
        let device = Device::flex().autodiff();
        let inputs = inputs(&device);
        for mask in [None, Some(mask(&device))] {
            let ours = run(scaled_dot_attention, &inputs, mask.clone());
            let reference = run(composed, &inputs, mask.clone());
            for (what, (a, b)) in ["output", "d/dq", "d/dk", "d/dv"]
                .iter()
                .zip(ours.iter().zip(&reference))
            {
                assert_eq!(a.len(), b.len());
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{what}[{i}] (mask {}): {x} against {y}",
                        mask.is_some()
                    );
                }
            }
        }
    }

    /// Untracked inputs, on a device with and without autodiff: the same values, and an
    /// untracked result.
    #[test]
    fn untracked_inputs_give_the_same_values() {
        let autodiff = Device::flex().autodiff();
        let [q, k, v, _] = inputs(&autodiff);
        let tracked = run(
            scaled_dot_attention,
            &inputs(&autodiff),
            Some(mask(&autodiff)),
        );
        let out = scaled_dot_attention(q, k, v, Some(mask(&autodiff)));
        assert!(!out.is_tracked());
        let plain = Device::flex();
        let [q, k, v, _] = inputs(&plain);
        let plain_out = scaled_dot_attention(q, k, v, Some(mask(&plain)));
        for out in [values(out), values(plain_out)] {
            for (x, y) in out.iter().zip(&tracked[0]) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} against {y}");
            }
        }
    }

    /// bf16 inputs: against the composed softmax on the same rounded inputs in f32, within
    /// bf16's precision.
    #[test]
    fn bf16_follows_the_f32_reference() {
        let device = Device::flex().autodiff();
        let rounded = inputs(&device).map(|t| t.cast(FloatDType::BF16).cast(FloatDType::F32));
        let half = rounded.clone().map(|t| t.cast(FloatDType::BF16));
        let ours = run(scaled_dot_attention, &half, Some(mask(&device)));
        let reference = run(composed, &rounded, Some(mask(&device)));
        for (what, (a, b)) in ["output", "d/dq", "d/dk", "d/dv"]
            .iter()
            .zip(ours.iter().zip(&reference))
        {
            let scale = b.iter().fold(0f32, |m, y| m.max(y.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 0.03 * scale,
                    "{what}[{i}]: {x} against {y}"
                );
            }
        }
    }

    /// f16: a score that overflows to infinity where the causal mask forbids attention leaves
    /// the output and the gradients finite.
    #[test]
    fn an_infinite_masked_score_stays_harmless_in_f16() {
        let device = Device::flex().autodiff();
        let [b, h, t, d] = SHAPE;
        let [q, k, v, w] = inputs(&device);
        // Query 1 and key 3 (a future key, masked) share a large direction: 300·300·d > 65504.
        let spike = |t: Tensor<4>, row: usize| {
            let big = Tensor::<4>::full([b, h, 1, d], 300.0, &device);
            t.slice_assign([0..b, 0..h, row..row + 1, 0..d], big)
        };
        let [q, k, v, w] = [spike(q, 1), spike(k, 3), v, w].map(|t| t.cast(FloatDType::F16));
        let causal = Tensor::<2, Bool>::tril_mask([t, t], 0, &device)
            .unsqueeze::<4>()
            .expand([b, 1, t, t]);
        let out = run(scaled_dot_attention, &[q, k, v, w], Some(causal));
        for (what, values) in ["output", "d/dq", "d/dk", "d/dv"].iter().zip(&out) {
            assert!(values.iter().all(|x| x.is_finite()), "{what}: {values:?}");
        }
    }
}
