//! Evaluation: loss and perplexity over the target tokens, exact match of answers, and
//! accuracy of classification by the most likely label.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::collate;
use crate::data::{Dataset, Sample, Task};
use crate::error::{Result, TrainError};
use burn_peft_models::CausalLm;

/// What an evaluation measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per target token.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Classification: share of samples whose most likely label is the right one.
    pub accuracy: Option<f64>,
    /// Completion and classification: share of samples whose every answer token is the
    /// model's top choice (what greedy decoding would produce).
    pub exact_match: Option<f64>,
    /// Samples evaluated.
    pub samples: usize,
}

/// Per-sample results of one forward pass.
struct Scored {
    /// Sum of target log-probabilities.
    logprob: f64,
    /// Target tokens counted.
    count: usize,
    /// Every target token is the argmax.
    exact: bool,
    /// Log-probabilities of each label's first token at the answer position.
    first_token: Vec<f32>,
}

/// Evaluates `model` (put it in inference mode first, e.g. `model.valid()`) on `data`, in
/// batches of `batch_size`, `threads` batches at a time on threads of their own (as
/// [`TrainConfig::batch_threads`](crate::TrainConfig::batch_threads) does for training: on a
/// CPU backend that keeps the cores busy while one thread runs element-wise work; elsewhere use
/// 1). The metrics do not depend on `threads`.
pub fn evaluate<M: CausalLm>(
    model: &M,
    data: &Dataset,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
    threads: usize,
) -> Result<EvalMetrics> {
    if data.samples.is_empty() {
        return Err(TrainError::Config("nothing to evaluate".into()));
    }
    let labels = match &data.task {
        Task::Classification { labels } => labels.len(),
        _ => 0,
    };
    let firsts: Vec<u32> = data
        .label_ids
        .iter()
        .filter_map(|l| l.first().copied())
        .collect();
    let distinct_first =
        firsts.len() == labels && (0..firsts.len()).all(|i| !firsts[..i].contains(&firsts[i]));
    let probe = if distinct_first {
        firsts.as_slice()
    } else {
        &[]
    };
    let score_chunk = |m: &M, chunk: &[Sample]| {
        let refs: Vec<&Sample> = chunk.iter().collect();
        score(m, &refs, pad_id, probe, device)
    };
    let chunks: Vec<&[Sample]> = data.samples.chunks(batch_size.max(1)).collect();
    let mut all = Vec::with_capacity(data.samples.len());
    for group in chunks.chunks(threads.max(1)) {
        std::thread::scope(|scope| {
            let others: Vec<_> = group[1..]
                .iter()
                .map(|chunk| {
                    let m = model.clone();
                    scope.spawn(move || score_chunk(&m, chunk))
                })
                .collect();
            all.extend(score_chunk(model, group[0]));
            for handle in others {
                all.extend(
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
        });
    }
    let (sum, count) = all
        .iter()
        .fold((0.0, 0), |(s, c), x| (s + x.logprob, c + x.count));
    let loss = if count == 0 {
        f64::NAN
    } else {
        -sum / count as f64
    };
    let n = all.len() as f64;
    let exact_match = match data.task {
        Task::LanguageModeling => None,
        _ => Some(all.iter().filter(|s| s.exact).count() as f64 / n),
    };
    let accuracy = if labels > 0 {
        let mut right = 0usize;
        for (i, sample) in data.samples.iter().enumerate() {
            let pick = if distinct_first {
                argmax(&all[i].first_token)
            } else {
                argmax(&label_logprobs(
                    model,
                    sample,
                    &data.label_ids,
                    pad_id,
                    device,
                ))
            };
            right += (Some(pick) == sample.label) as usize;
        }
        Some(right as f64 / n)
    } else {
        None
    };
    Ok(EvalMetrics {
        loss,
        perplexity: loss.exp(),
        accuracy,
        exact_match,
        samples: all.len(),
    })
}

/// How well a model predicts one sample's targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    /// Sum of the targets' log-probabilities (natural log).
    pub logprob: f64,
    /// Target tokens counted (the first token never is: nothing predicts it).
    pub tokens: usize,
    /// Every target token is the model's top choice (what greedy decoding would produce).
    pub exact: bool,
}

/// Scores each sample on its own (in batches of `batch_size`, padded with `pad_id`): the
/// building block for answers ranked among candidates, where [`evaluate`] reports only
/// averages. Put the model in inference mode first.
pub fn score_samples<M: CausalLm>(
    model: &M,
    samples: &[Sample],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Vec<SampleScore> {
    samples
        .chunks(batch_size.max(1))
        .flat_map(|chunk| {
            let refs: Vec<&Sample> = chunk.iter().collect();
            score(model, &refs, pad_id, &[], device)
        })
        .map(|s| SampleScore {
            logprob: s.logprob,
            tokens: s.count,
            exact: s.exact,
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Log-probability of each label's full answer after the sample's prompt (when labels share
/// their first token).
fn label_logprobs<M: CausalLm>(
    model: &M,
    sample: &Sample,
    label_ids: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> Vec<f32> {
    let candidates: Vec<Sample> = label_ids.iter().map(|l| sample.with_answer(l)).collect();
    let refs: Vec<&Sample> = candidates.iter().collect();
    score(model, &refs, pad_id, &[], device)
        .into_iter()
        .map(|s| s.logprob as f32)
        .collect()
}

fn score<M: CausalLm>(
    model: &M,
    samples: &[&Sample],
    pad_id: u32,
    first_tokens: &[u32],
    device: &Device,
) -> Vec<Scored> {
    let batch = collate(samples, pad_id, device);
    let longest = samples.iter().map(|x| x.ids.len()).max().unwrap_or(0);
    if longest < 2 {
        // Nothing predicts anything in one-token samples.
        return samples
            .iter()
            .map(|_| Scored {
                logprob: 0.0,
                count: 0,
                exact: true,
                first_token: vec![0.0; first_tokens.len()],
            })
            .collect();
    }
    // The output layer on the rows that predict a target (and each answer position for the
    // label probe) only: a classification prompt's other positions would cost a full
    // vocabulary of logits each.
    let mut rows: Vec<i64> = Vec::new();
    // The token each row predicts (0 for a probe row past the sample's end).
    let mut next: Vec<i64> = Vec::new();
    // Per sample: (target position, row).
    let mut row_of = vec![Vec::new(); samples.len()];
    let mut probe_row = vec![0usize; samples.len()];
    for (r, sample) in samples.iter().enumerate() {
        let probe_at = (!first_tokens.is_empty())
            .then(|| sample.first_target().unwrap_or(1).clamp(1, longest - 1) - 1);
        for p in 0..longest - 1 {
            let target = sample.targets.get(p + 1).copied().unwrap_or(false);
            if !target && probe_at != Some(p) {
                continue;
            }
            if probe_at == Some(p) {
                probe_row[r] = rows.len();
            }
            if target {
                row_of[r].push((p + 1, rows.len()));
            }
            rows.push((r * longest + p) as i64);
            next.push(sample.ids.get(p + 1).map_or(0, |&t| t as i64));
        }
    }
    let n = rows.len();
    let (picked, best, first) = if n == 0 {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        let hidden = model.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask));
        let [b, s, h] = hidden.dims();
        // The rows index the padded batch: a model whose hidden states have other positions
        // (virtual tokens left in) would be read at the wrong places.
        assert_eq!(
            (b, s),
            (samples.len(), longest),
            "hidden states must have one position per input token"
        );
        let index = Tensor::<1, Int>::from_ints(rows.as_slice(), device);
        let logp = log_softmax(
            model.row_logits(hidden.reshape([b * s, h]).select(0, index)),
            1,
        );
        let next = Tensor::<1, Int>::from_ints(next.as_slice(), device).reshape([n, 1]);
        let picked: Vec<f32> = logp
            .clone()
            .gather(1, next)
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap_or_default();
        let best: Vec<i64> = logp
            .clone()
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap_or_default();
        let first: Vec<f32> = if first_tokens.is_empty() {
            Vec::new()
        } else {
            // Log-probabilities of the label tokens at each sample's answer position.
            let at: Vec<i64> = probe_row.iter().map(|&r| r as i64).collect();
            let at = Tensor::<1, Int>::from_ints(at.as_slice(), device);
            let ids: Vec<i64> = first_tokens.iter().map(|&t| t as i64).collect();
            let k = ids.len();
            let idx = Tensor::<1, Int>::from_ints(ids.as_slice(), device)
                .reshape([1, k])
                .expand([samples.len(), k]);
            logp.select(0, at)
                .gather(1, idx)
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .unwrap_or_default()
        };
        (picked, best, first)
    };
    samples
        .iter()
        .enumerate()
        .map(|(r, sample)| {
            let mut logprob = 0.0;
            let mut count = 0;
            let mut exact = true;
            for &(t, i) in &row_of[r] {
                logprob += picked[i] as f64;
                count += 1;
                exact &= best[i] == sample.ids[t] as i64;
            }
            let k = first_tokens.len();
            Scored {
                logprob,
                count,
                exact,
                first_token: first.get(r * k..(r + 1) * k).unwrap_or_default().to_vec(),
            }
        })
        .collect()
}
