//! The gated activation of Llama's feed-forward block, with a small autodiff footprint.

use burn::tensor::GradientCheckpointingStrategy;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{FloatDType, Tensor};

use crate::attention::like;

/// `silu(gate) · up`, elementwise, computed in f32 and returned in `gate`'s type.
///
/// When either input is tracked, autodiff does not record burn's composed SiLU (a sigmoid and
/// two products, which keep the gate, its sigmoid, its SiLU and `up` for the backward pass).
/// It records `h̄ + (g − ḡ)·∂g + (u − ū)·silu(ḡ)` instead, where a bar marks an untracked copy:
/// `g − ḡ` and `u − ū` are exactly zero, so the value is `h̄ = silu(ḡ)·ū`, and the gradients
/// are the product's, with `∂g = d silu(g)/dg · u = h̄ + σ(g)·(u − h̄)` formed in the forward
/// pass. The backward pass keeps two tensors of the input's size instead of four and runs one
/// product per input. Under burn's balanced gradient checkpointing, which recomputes
/// element-wise operations from their tracked inputs, the composed form keeps less and is used.
pub(crate) fn swiglu(gate: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
    let dtype = gate.dtype();
    let balanced = |t: &Tensor<2>| {
        t.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Balanced)
    };
    if (!gate.is_tracked() && !up.is_tracked()) || balanced(&gate) || balanced(&up) {
        // The same f32 arithmetic as below, so that a pass without a graph (generation, or
        // the forward pass of checkpointing by layer) gives the same values as one with.
        // Under burn's balanced checkpointing these element-wise operations are recomputed
        // from `gate` and `up` in the backward pass, which keeps less than the surrogate, whose
        // operations on untracked values are kept.
        return (silu(gate.cast(FloatDType::F32)) * up.cast(FloatDType::F32)).cast(dtype);
    }
    let g = gate.clone().inner().cast(FloatDType::F32);
    let u = up.clone().inner().cast(FloatDType::F32);
    let s = sigmoid(g.clone());
    // As burn's `silu` composes it, for the untracked path's values.
    let silu_g = g * s.clone();
    let value = silu_g.clone() * u.clone();
    let d_gate = (u - value.clone()) * s + value.clone();
    let zero_gate = gate.clone() - gate.clone().detach();
    let zero_up = up.clone() - up.detach();
    like(value.cast(dtype), &gate)
        + zero_gate * like(d_gate.cast(dtype), &gate)
        + zero_up * like(silu_g.cast(dtype), &gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};
    use burn_peft_core::{SplitMix64, host_random};

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.cast(FloatDType::F32)
            .into_data()
            .try_to_vec()
            .expect("f32")
    }

    /// Gate, up and output weights, the gate spread wide enough to reach SiLU's flat tails.
    fn inputs(device: &Device) -> [Tensor<2>; 3] {
        let mut rng = SplitMix64::new(5);
        let mut draw = |std| host_random([7, 33], Distribution::Normal(0.0, std), &mut rng, device);
        [draw(6.0), draw(1.5), draw(1.0)]
    }

    /// Output and gradients by gate and up of `Σ out·w`, each input tracked or not as `track`
    /// says (an untracked input gets no gradient: an empty list). Tracked inputs enter as the
    /// output of an operation, not as leaves, as a linear layer's outputs do in the model.
    fn run(
        act: fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
        inputs: &[Tensor<2>; 3],
        track: [bool; 2],
    ) -> Vec<Vec<f32>> {
        let [g, u, w] = inputs.clone();
        let leaf = |t: Tensor<2>, tracked| if tracked { t.require_grad() } else { t };
        let (g, u) = (leaf(g, track[0]), leaf(u, track[1]));
        let out = act(g.clone() * 1.0, u.clone() * 1.0);
        let grads = (out.clone() * w).sum().backward();
        let grad = |t: &Tensor<2>| t.grad(&grads).map(values).unwrap_or_default();
        vec![values(out), grad(&g), grad(&u)]
    }

    fn composed(g: Tensor<2>, u: Tensor<2>) -> Tensor<2> {
        silu(g) * u
    }

    fn assert_close(ours: &[Vec<f32>], reference: &[Vec<f32>], tolerance: impl Fn(f32) -> f32) {
        for (what, (a, b)) in ["output", "d/dgate", "d/dup"]
            .iter()
            .zip(ours.iter().zip(reference))
        {
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= tolerance(*y),
                    "{what}[{i}]: {x} against {y}"
                );
            }
        }
    }

    /// With and without burn's balanced checkpointing (the composed form there).
    #[test]
    fn value_and_gradients_match_the_composed_silu() {
        let plain = Device::flex().autodiff();
        for device in [plain.clone(), plain.gradient_checkpointing()] {
            let inputs = inputs(&device);
            let ours = run(swiglu, &inputs, [true, true]);
            let reference = run(composed, &inputs, [true, true]);
            assert_close(&ours, &reference, |y| 1e-5 * (1.0 + y.abs()));
        }
    }

    /// Only one input tracked (a frozen gate or up projection on a frozen input path): the
    /// other gets no gradient, and the tracked one the composed gradient.
    #[test]
    fn one_tracked_input_gets_its_gradient() {
        let device = Device::flex().autodiff();
        let inputs = inputs(&device);
        for track in [[true, false], [false, true]] {
            let ours = run(swiglu, &inputs, track);
            let reference = run(composed, &inputs, track);
            for (i, tracked) in track.iter().enumerate() {
                assert_eq!(ours[i + 1].is_empty(), !tracked, "{track:?}");
            }
            assert_close(&ours, &reference, |y| 1e-5 * (1.0 + y.abs()));
        }
    }

    /// Untracked inputs, with and without autodiff: the same values, and an untracked result.
    #[test]
    fn untracked_inputs_give_the_same_values() {
        let autodiff = Device::flex().autodiff();
        let tracked = run(swiglu, &inputs(&autodiff), [true, true]);
        let [g, u, _] = inputs(&autodiff);
        let out = swiglu(g, u);
        assert!(!out.is_tracked());
        let [g, u, _] = inputs(&Device::flex());
        for out in [values(out), values(swiglu(g, u))] {
            assert_close(&[out], &tracked[..1], |y| 1e-6 * (1.0 + y.abs()));
        }
    }

    /// bf16 inputs: against the composed SiLU on the same rounded inputs in f32, within bf16's
    /// precision, the result in bf16, and the same values without a graph.
    #[test]
    fn bf16_follows_the_f32_reference() {
        let device = Device::flex().autodiff();
        let rounded = inputs(&device).map(|t| t.cast(FloatDType::BF16).cast(FloatDType::F32));
        let half = rounded.clone().map(|t| t.cast(FloatDType::BF16));
        let [g, u, _] = half.clone();
        assert_eq!(swiglu(g.require_grad(), u).dtype(), FloatDType::BF16.into());
        let ours = run(swiglu, &half, [true, true]);
        let reference = run(composed, &rounded, [true, true]);
        assert_close(&ours, &reference, |y| 0.01 * (1.0 + y.abs()));
        // Without a graph, the very same values (checkpointing by layer relies on it).
        let [g, u, _] = half;
        assert_eq!(values(swiglu(g, u)), ours[0]);
    }
}
