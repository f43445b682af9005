//! Cross-entropy and distillation's KL divergence through an output layer, in chunks of rows
//! and without an autodiff graph over the softmax.

use std::ops::Range;

use burn::tensor::{FloatDType, IndexingUpdateOp, Int, Tensor};

use crate::attention::untracked_softmax;

/// Elements of logits computed at once (16 MB in f32): larger vocabularies take fewer rows per
/// chunk. A trainable output layer's chunks have at least as many rows as there are features,
/// so that its weight gradient (features × vocabulary, once per chunk) never outweighs a
/// chunk's logits. Smaller chunks would cost time: each one's products pass over the whole
/// output layer (on burn-flex, packing it anew); the size was chosen by measuring peak memory
/// against speed (`docs/perf-log/2026-11-28-frozen-head-loss.md`).
const CHUNK_ELEMENTS: usize = 1 << 22;

/// Mean cross-entropy of `targets` (`[rows]`) under the logits `project(hidden)`, where
/// `hidden` is `[rows, features]` and `project` returns `[chunk rows, vocab]` logits.
///
/// `weights` (`[rows]`, for example a 0/1 mask) weight each row's loss; the result is then
/// `Σ wᵢ·lossᵢ / Σ wᵢ`, else the plain mean. The value and the gradients equal those of
/// `log_softmax` followed by `gather`, but:
///
/// - the logits are computed a chunk of rows at a time, so no `[rows, vocab]` intermediate
///   beyond one chunk exists in the forward pass;
/// - the gradient with respect to the logits, `(softmax − one_hot)·wᵢ / Σ w`, is formed in the
///   forward pass from untracked values, and only it is kept for the backward pass. Autodiff
///   then sees `Σ logits · gradient` per chunk instead of the softmax's half-dozen full-size
///   steps, each with its own buffers;
/// - when the output layer is frozen (adapters, prompt learning), that gradient is taken
///   through the layer right away, chunk by chunk, and the step keeps `[rows, features]` for
///   the backward pass instead of `[rows, vocab]`.
///
/// Measured against `log_softmax` + `gather` in `docs/perf-log/`.
///
/// Gradients reach whatever `project` tracks: the hidden states, and the output layer's
/// weights when they train (tied embeddings in full fine-tuning, or an adapter on `lm_head`).
/// The softmax runs in the logits' type; [`Llama::logits`](crate::Llama::logits) returns f32
/// whatever the model computes in, as HF's Llama does.
///
/// # Panics
///
/// As burn's tensor operations do, when `targets` or `weights` do not have `rows` entries or
/// `project` does not return `rows` rows. Targets must be below the vocabulary size, as for
/// `gather`; [`Llama::check_ids`](crate::Llama::check_ids) checks token ids.
///
/// ```
/// use burn::tensor::activation::log_softmax;
/// use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
/// use burn_peft_models::linear_cross_entropy;
///
/// let device = Device::flex();
/// let hidden = Tensor::<2>::random([3, 4], Distribution::Default, &device);
/// let weight = Tensor::<2>::random([4, 10], Distribution::Default, &device);
/// let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 7, 2], [3]), &device);
///
/// let loss = linear_cross_entropy(hidden.clone(), targets.clone(), None, |h| {
///     h.matmul(weight.clone())
/// });
/// let reference = log_softmax(hidden.matmul(weight), 1)
///     .gather(1, targets.reshape([3, 1]))
///     .mean()
///     .neg();
/// let (a, b) = (loss.into_scalar::<f32>(), reference.into_scalar::<f32>());
/// assert!((a - b).abs() < 1e-5);
/// ```
pub fn linear_cross_entropy(
    hidden: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Option<Tensor<1>>,
    project: impl Fn(Tensor<2>) -> Tensor<2>,
) -> Tensor<1> {
    chunked(hidden, targets, weights, project, CHUNK_ELEMENTS)
}

fn chunked(
    hidden: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Option<Tensor<1>>,
    project: impl Fn(Tensor<2>) -> Tensor<2>,
    chunk_elements: usize,
) -> Tensor<1> {
    let rows = hidden.dims()[0];
    let targets = targets.reshape([rows, 1]);
    by_chunks(
        hidden,
        weights,
        project,
        chunk_elements,
        |logits, rows, share, tracked| {
            // loss_i = log Σ exp(logits) − logits[target], and the gradient
            // share_i · (softmax − one_hot). The softmax at the row's largest logit is
            // 1 / Σ exp(logits − max), at least 1 / vocab, so log Σ exp(logits) is
            // max − log(its largest probability) without underflow.
            let target = targets.clone().slice([rows, 0..1]);
            let max = logits.clone().max_dim(1);
            let picked = logits.clone().gather(1, target.clone());
            let p = untracked_softmax(logits, 1);
            let log_sum_exp = max - p.clone().max_dim(1).log();
            let value = ((log_sum_exp - picked) * share.clone()).sum();
            let gradient = tracked.then(|| {
                (p * share.clone()).scatter(1, target, share.neg(), IndexingUpdateOp::Add)
            });
            (value, gradient)
        },
    )
}

/// Mean `KL(softmax(teacher / T) ‖ softmax(student / T))` over rows, where the student's
/// logits are `project(hidden)` and `teacher(rows)` returns the teacher's logits for a range of
/// rows: distillation's loss, computed as [`linear_cross_entropy`] computes its own (a chunk of
/// rows at a time, the gradient `(softmax(student / T) − softmax(teacher / T))·wᵢ / (T·Σ w)`
/// formed from untracked values, no autodiff graph over the softmax). The teacher's logits are
/// used untracked.
///
/// `weights` (`[rows]`) weight each row as in [`linear_cross_entropy`]. Multiply by T² for
/// the usual scale of distillation's gradients (Hinton et al. 2015).
///
/// # Panics
///
/// As burn's tensor operations do, when `weights` does not have `rows` entries or `project` and
/// `teacher` return logits of other shapes than `[chunk rows, vocab]`; also when `temperature`
/// is not positive.
///
/// ```
/// use burn::tensor::activation::{log_softmax, softmax};
/// use burn::tensor::{Device, Distribution, Tensor};
/// use burn_peft_models::linear_kl_divergence;
///
/// let device = Device::flex();
/// let hidden = Tensor::<2>::random([3, 4], Distribution::Default, &device);
/// let weight = Tensor::<2>::random([4, 10], Distribution::Default, &device);
/// let teacher = Tensor::<2>::random([3, 10], Distribution::Default, &device);
///
/// let kl = linear_kl_divergence(
///     hidden.clone(),
///     |rows| teacher.clone().slice([rows, 0..10]),
///     None,
///     2.0,
///     |h| h.matmul(weight.clone()),
/// );
/// let (s, t) = (hidden.matmul(weight) / 2.0, teacher / 2.0);
/// let reference = (softmax(t.clone(), 1) * (log_softmax(t, 1) - log_softmax(s, 1)))
///     .sum_dim(1)
///     .mean();
/// let (a, b) = (kl.into_scalar::<f32>(), reference.into_scalar::<f32>());
/// assert!((a - b).abs() < 1e-5);
/// ```
pub fn linear_kl_divergence(
    hidden: Tensor<2>,
    teacher: impl Fn(Range<usize>) -> Tensor<2>,
    weights: Option<Tensor<1>>,
    temperature: f64,
    project: impl Fn(Tensor<2>) -> Tensor<2>,
) -> Tensor<1> {
    kl_chunked(
        hidden,
        teacher,
        weights,
        temperature,
        project,
        CHUNK_ELEMENTS,
    )
}

fn kl_chunked(
    hidden: Tensor<2>,
    teacher: impl Fn(Range<usize>) -> Tensor<2>,
    weights: Option<Tensor<1>>,
    temperature: f64,
    project: impl Fn(Tensor<2>) -> Tensor<2>,
    chunk_elements: usize,
) -> Tensor<1> {
    assert!(temperature > 0.0, "temperature {temperature} must be > 0");
    let t = temperature as f32;
    by_chunks(
        hidden,
        weights,
        project,
        chunk_elements,
        |student, rows, share, tracked| {
            // With p = softmax(student / T) and q = softmax(teacher / T):
            // KL_i = Σ q (log q − log p), and its gradient by the student's logits
            // share_i · (p − q) / T. The logarithms are subtracted element by element: a KL
            // near zero is then not the difference of two sums near log(vocab).
            let (log_q, q) = softmax_untracked(teacher(rows).detach().cast(student.dtype()) / t);
            let (log_p, p) = softmax_untracked(student / t);
            let value = ((q.clone() * (log_q - log_p)).sum_dim(1) * share.clone()).sum();
            let gradient = tracked.then(|| (p - q) * (share / t));
            (value, gradient)
        },
    )
}

/// `log_softmax` and `softmax` along the last dimension of untracked values, with one `exp`.
/// Not [`untracked_softmax`]: a KL near zero is the difference of two such logarithms, and with
/// burn-flex's fused softmax a KL of 3.4e-6 (a test's) came out 3% off, against 1e-5 here.
fn softmax_untracked(x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let shifted = x.clone() - x.max_dim(1);
    let exp = shifted.clone().exp();
    let sum = exp.clone().sum_dim(1);
    (shifted - sum.clone().log(), exp / sum)
}

/// The loop both losses share. `part(logits, rows, share, tracked)` gets a chunk's logits
/// (untracked), its rows, their shares of the mean (`[chunk, 1]`, untracked) and whether the
/// logits are tracked. It returns the chunk's weighted loss and, when tracked, the gradient of
/// the whole loss by those logits. The result has that value and those gradients, through a
/// zero-valued surrogate:
///
/// - when the output layer trains (`project` of an untracked row is tracked), `Σ logits ·
///   gradient` per chunk, so that the backward pass takes the gradient through the layer and
///   to its weights; chunks then have at least as many rows as features.
/// - when it is frozen (adapters, prompt learning), each chunk's gradient is taken through the
///   layer at once, in a backward pass of the chunk alone, and `Σ hidden · that gradient` is
///   recorded. The step then keeps `[rows, features]` for the backward pass instead of
///   `[rows, vocab]`, and no chunk's logits outlive the chunk, so chunks can be small.
fn by_chunks(
    hidden: Tensor<2>,
    weights: Option<Tensor<1>>,
    project: impl Fn(Tensor<2>) -> Tensor<2>,
    chunk_elements: usize,
    mut part: impl FnMut(Tensor<2>, Range<usize>, Tensor<2>, bool) -> (Tensor<1>, Option<Tensor<2>>),
) -> Tensor<1> {
    let [rows, features] = hidden.dims();
    if rows == 0 {
        // Zero, still connected to the graph so that `backward` works and gives zeros.
        return hidden.cast(FloatDType::F32).sum() * 0.0;
    }
    let device = hidden.device();
    // Each row's share of the mean: wᵢ / Σ w, or 1 / rows; untracked.
    let share = match weights {
        Some(w) => {
            let w = w.detach().reshape([rows, 1]);
            w.clone() / w.sum().unsqueeze()
        }
        None => Tensor::<2>::full([rows, 1], 1.0 / rows as f32, &device),
    };
    // One untracked row tells the vocabulary and whether the output layer trains.
    let probe = project(hidden.clone().slice([0..1, 0..features]).detach());
    let [_, vocab] = probe.dims();
    let head_trains = probe.is_tracked();
    drop(probe);
    let through_head = hidden.is_tracked() && !head_trains;
    let chunk = match head_trains {
        true => (chunk_elements / vocab.max(1)).max(features),
        false => chunk_elements / vocab.max(1),
    }
    .max(1);
    // Per chunk: Σ share·loss, and the surrogate's term.
    let mut values = Vec::new();
    let mut surrogates = Vec::new();
    for start in (0..rows).step_by(chunk) {
        let end = rows.min(start + chunk);
        let x = hidden.clone().slice([start..end, 0..features]);
        let share = share.clone().slice([start..end, 0..1]);
        if through_head {
            let leaf = x.clone().detach().require_grad();
            let logits = project(leaf.clone());
            let (value, gradient) = part(logits.clone().detach(), start..end, share, true);
            values.push(value);
            if let Some(gradient) = gradient {
                let mut local = (logits * gradient).sum().backward();
                if let Some(by_hidden) = leaf.grad_remove(&mut local) {
                    // In the hidden states' type (burn's backward pass through a cast to
                    // f32 may hand back f32).
                    let by_hidden = by_hidden.cast(x.dtype());
                    surrogates.push((x * by_hidden).cast(FloatDType::F32).sum());
                }
            }
        } else {
            let logits = project(x);
            let tracked = logits.is_tracked();
            let (value, gradient) = part(logits.clone().detach(), start..end, share, tracked);
            values.push(value);
            if let Some(gradient) = gradient {
                surrogates.push((logits * gradient).sum());
            }
        }
    }
    // At least one chunk ran (rows > 0).
    let value = Tensor::cat(values, 0).sum();
    if surrogates.is_empty() {
        return value;
    }
    let surrogate = Tensor::cat(surrogates, 0).sum();
    // Zero in value, `gradient` in its derivative.
    surrogate.clone() - surrogate.detach() + value
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::{log_softmax, softmax};
    use burn::tensor::{Device, Distribution, TensorData};

    const ROWS: usize = 37;
    const FEATURES: usize = 8;
    const VOCAB: usize = 11;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec().expect("f32")
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} against {y}"
            );
        }
    }

    /// A loss of `(hidden, weight)`: its value and its gradients by both.
    fn value_and_gradients(
        hidden: &Tensor<2>,
        weight: &Tensor<2>,
        loss: &dyn Fn(Tensor<2>, Tensor<2>) -> Tensor<1>,
    ) -> (f32, Vec<f32>, Vec<f32>) {
        let (h, w) = (hidden.clone().require_grad(), weight.clone().require_grad());
        let loss = loss(h.clone(), w.clone());
        let grads = loss.backward();
        let gh = values(h.grad(&grads).expect("hidden gradient"));
        let gw = values(w.grad(&grads).expect("weight gradient"));
        (loss.into_scalar::<f32>(), gh, gw)
    }

    fn assert_same(
        what: &str,
        ours: &(f32, Vec<f32>, Vec<f32>),
        reference: &(f32, Vec<f32>, Vec<f32>),
    ) {
        assert!(
            (ours.0 - reference.0).abs() < 1e-5,
            "{what}: loss {} against {}",
            ours.0,
            reference.0
        );
        assert_close(&format!("{what}: d/dhidden"), &ours.1, &reference.1);
        assert_close(&format!("{what}: d/dweight"), &ours.2, &reference.2);
    }

    /// Value and both gradients (hidden states and output weight) against `log_softmax` +
    /// `gather`, with and without row weights, in one chunk after the first and in chunks of as many rows as features.
    #[test]
    fn matches_log_softmax_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let hidden = Tensor::<2>::random([ROWS, FEATURES], Distribution::Normal(0.0, 2.0), &device);
        let weight =
            Tensor::<2>::random([FEATURES, VOCAB], Distribution::Normal(0.0, 1.0), &device);
        let ids: Vec<i64> = (0..ROWS).map(|i| ((i * 5 + 2) % VOCAB) as i64).collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(ids, [ROWS]), &device);
        let mask: Vec<f32> = (0..ROWS)
            .map(|i| if i % 4 == 3 { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [ROWS]), &device);

        for weights in [None, Some(mask)] {
            let run = |loss: &dyn Fn(Tensor<2>, Tensor<2>) -> Tensor<1>| {
                value_and_gradients(&hidden, &weight, loss)
            };
            let reference = run(&|h, w| {
                let picked = log_softmax(h.matmul(w), 1)
                    .gather(1, targets.clone().reshape([ROWS, 1]))
                    .reshape([ROWS]);
                match &weights {
                    Some(m) => (picked * m.clone()).sum().neg() / m.clone().sum(),
                    None => picked.mean().neg(),
                }
            });
            for chunk_elements in [CHUNK_ELEMENTS, 1] {
                let ours = run(&|h, w| {
                    chunked(
                        h,
                        targets.clone(),
                        weights.clone(),
                        |x| x.matmul(w.clone()),
                        chunk_elements,
                    )
                });
                let what = format!("weights {}, chunk {chunk_elements}", weights.is_some());
                assert_same(&what, &ours, &reference);
            }
        }
    }

    /// The KL divergence's value and both gradients against `softmax` / `log_softmax`, at
    /// temperature 2, with and without row weights, in one chunk and in many.
    #[test]
    fn kl_matches_softmax_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(4);
        let hidden = Tensor::<2>::random([ROWS, FEATURES], Distribution::Normal(0.0, 2.0), &device);
        let weight =
            Tensor::<2>::random([FEATURES, VOCAB], Distribution::Normal(0.0, 1.0), &device);
        let teacher = Tensor::<2>::random([ROWS, VOCAB], Distribution::Normal(0.0, 3.0), &device);
        let mask: Vec<f32> = (0..ROWS)
            .map(|i| if i % 3 == 1 { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [ROWS]), &device);
        let t = 2.0;

        for weights in [None, Some(mask)] {
            let run = |loss: &dyn Fn(Tensor<2>, Tensor<2>) -> Tensor<1>| {
                value_and_gradients(&hidden, &weight, loss)
            };
            let reference = run(&|h, w| {
                let (s, q) = (h.matmul(w) / t, teacher.clone() / t);
                let kl = (softmax(q.clone(), 1) * (log_softmax(q, 1) - log_softmax(s, 1)))
                    .sum_dim(1)
                    .reshape([ROWS]);
                match &weights {
                    Some(m) => (kl * m.clone()).sum() / m.clone().sum(),
                    None => kl.mean(),
                }
            });
            assert!(reference.0 > 0.1, "a KL worth testing: {}", reference.0);
            for chunk_elements in [CHUNK_ELEMENTS, 1] {
                let ours = run(&|h, w| {
                    kl_chunked(
                        h,
                        |rows| teacher.clone().slice([rows, 0..VOCAB]),
                        weights.clone(),
                        t,
                        |x| x.matmul(w.clone()),
                        chunk_elements,
                    )
                });
                let what = format!("KL, weights {}, chunk {chunk_elements}", weights.is_some());
                assert_same(&what, &ours, &reference);
            }
        }
    }

    /// A frozen output layer (as under adapters): the loss and the gradients of what lies
    /// before it (here a trainable `lift` and the input, so that the hidden states are not a
    /// leaf, as in a model) against `log_softmax` + `gather` and against the composed KL, in
    /// one chunk and in several, with and without row weights, and under burn's balanced
    /// checkpointing.
    #[test]
    fn a_frozen_output_layer_gives_the_same_gradients_before_it() {
        let plain = Device::flex().autodiff();
        for device in [plain.clone(), plain.gradient_checkpointing()] {
            device.seed(5);
            let normal = |shape: [usize; 2], std: f64| {
                Tensor::<2>::random(shape, Distribution::Normal(0.0, std), &device)
            };
            let base = normal([ROWS, FEATURES], 1.5);
            let lift = normal([FEATURES, FEATURES], 0.5);
            let head = normal([FEATURES, VOCAB], 1.0);
            let teacher = normal([ROWS, VOCAB], 3.0);
            let ids: Vec<i64> = (0..ROWS).map(|i| ((i * 7 + 3) % VOCAB) as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(ids, [ROWS]), &device);
            let mask: Vec<f32> = (0..ROWS).map(|i| (i % 5 != 2) as u8 as f32).collect();
            let mask = Tensor::<1>::from_data(TensorData::new(mask, [ROWS]), &device);
            let weighted = |per_row: Tensor<1>, weights: &Option<Tensor<1>>| match weights {
                Some(m) => (per_row * m.clone()).sum() / m.clone().sum(),
                None => per_row.mean(),
            };
            // Value and gradients by `base` and `lift` of `loss(hidden)`.
            let run = |loss: &dyn Fn(Tensor<2>) -> Tensor<1>| {
                let (b, l) = (base.clone().require_grad(), lift.clone().require_grad());
                let loss = loss(b.clone().matmul(l.clone()));
                let grads = loss.backward();
                let gb = values(b.grad(&grads).expect("input gradient"));
                let gl = values(l.grad(&grads).expect("lift gradient"));
                (loss.into_scalar::<f32>(), gb, gl)
            };
            let project = |x: Tensor<2>| x.matmul(head.clone());
            for weights in [None, Some(mask.clone())] {
                let what = format!("weights {}", weights.is_some());
                let reference = run(&|h| {
                    let picked = log_softmax(project(h), 1)
                        .gather(1, targets.clone().reshape([ROWS, 1]))
                        .reshape([ROWS]);
                    weighted(picked, &weights).neg()
                });
                let t = 2.0;
                let kl_reference = run(&|h| {
                    let (s, q) = (project(h) / t, teacher.clone() / t);
                    let kl = (softmax(q.clone(), 1) * (log_softmax(q, 1) - log_softmax(s, 1)))
                        .sum_dim(1)
                        .reshape([ROWS]);
                    weighted(kl, &weights)
                });
                for chunk_elements in [CHUNK_ELEMENTS, 5 * VOCAB, 1] {
                    let what = format!("{what}, chunk {chunk_elements}");
                    let ours = run(&|h| {
                        let (t, w) = (targets.clone(), weights.clone());
                        chunked(h, t, w, project, chunk_elements)
                    });
                    assert_same(&what, &ours, &reference);
                    let ours = run(&|h| {
                        let teacher = |rows| teacher.clone().slice([rows, 0..VOCAB]);
                        kl_chunked(h, teacher, weights.clone(), t, project, chunk_elements)
                    });
                    assert_same(&format!("KL, {what}"), &ours, &kl_reference);
                }
            }
        }
    }

    /// Without autodiff the value is the same, and no rows give a zero loss.
    #[test]
    fn untracked_and_empty_inputs() {
        let device = Device::flex();
        let hidden = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 2.0]], &device);
        let weight = Tensor::<2>::from_floats([[1.0, -1.0, 0.5], [0.0, 1.0, 3.0]], &device);
        let targets = Tensor::<1, Int>::from_ints([2, 0], &device);
        let loss = linear_cross_entropy(hidden, targets, None, |x| x.matmul(weight.clone()));
        // Row 0: logits [1, -1, 0.5], target 2; row 1: logits [0, 2, 6], target 0.
        let row = |l: [f32; 3], t: usize| l.iter().map(|x| x.exp()).sum::<f32>().ln() - l[t];
        let expected = (row([1.0, -1.0, 0.5], 2) + row([0.0, 2.0, 6.0], 0)) / 2.0;
        assert!((loss.into_scalar::<f32>() - expected).abs() < 1e-5);

        let none = linear_cross_entropy(
            Tensor::<2>::zeros([0, 2], &device),
            Tensor::<1, Int>::zeros([0], &device),
            None,
            |x| x.matmul(weight.clone()),
        );
        assert_eq!(none.into_scalar::<f32>(), 0.0);

        // No rows under autodiff: a zero that still takes `backward`.
        let device = device.autodiff();
        let hidden = Tensor::<2>::zeros([0, 2], &device).require_grad();
        let loss = linear_cross_entropy(
            hidden.clone(),
            Tensor::<1, Int>::zeros([0], &device),
            None,
            |x| x,
        );
        let grads = loss.backward();
        assert_eq!(loss.into_scalar::<f32>(), 0.0);
        assert_eq!(hidden.grad(&grads).map(|g| g.dims()), Some([0, 2]));
    }
}
