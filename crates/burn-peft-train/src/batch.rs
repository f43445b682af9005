//! Seeded shuffling and padded batches.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use burn_peft_core::SplitMix64;

/// Where a [`Batcher`] is in the data: saved in checkpoints so a resumed run sees the same
/// batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatcherState {
    /// Completed passes over the data.
    pub epoch: usize,
    /// Samples of the current epoch already handed out.
    pub position: usize,
}

/// Hands out sample indices in a seeded random order, reshuffled every epoch.
///
/// ```
/// use burn_peft_train::Batcher;
/// let mut a = Batcher::new(5, 42);
/// let first: Vec<usize> = (0..3).flat_map(|_| a.next_batch(2)).collect();
/// let mut b = Batcher::new(5, 42);
/// b.next_batch(2);
/// let mut c = Batcher::resume(5, 42, b.state());
/// assert_eq!(first[2..], [c.next_batch(2), c.next_batch(2)].concat());
/// ```
#[derive(Debug, Clone)]
pub struct Batcher {
    len: usize,
    seed: u64,
    order: Vec<usize>,
    state: BatcherState,
}

impl Batcher {
    /// A batcher over `len` samples at the start of epoch 0.
    pub fn new(len: usize, seed: u64) -> Self {
        Self::resume(len, seed, BatcherState::default())
    }

    /// A batcher at `state`.
    pub fn resume(len: usize, seed: u64, state: BatcherState) -> Self {
        Self {
            len,
            seed,
            order: Self::order(len, seed, state.epoch),
            state,
        }
    }

    fn order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407))
            .shuffle(&mut order);
        order
    }

    /// The next `size` indices, continuing into the next epoch when this one runs out.
    pub fn next_batch(&mut self, size: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size && self.len > 0 {
            if self.state.position == self.len {
                self.state.epoch += 1;
                self.state.position = 0;
                self.order = Self::order(self.len, self.seed, self.state.epoch);
            }
            out.push(self.order[self.state.position]);
            self.state.position += 1;
        }
        out
    }

    /// The current position.
    pub fn state(&self) -> BatcherState {
        self.state
    }
}

/// `0..len` as `parts` consecutive ranges whose lengths differ by at most one (fewer ranges
/// when `len < parts`, none when `len` is 0): how a batch is sliced for
/// [`TrainConfig::batch_threads`](crate::TrainConfig::batch_threads).
///
/// ```
/// use burn_peft_train::split_evenly;
/// assert_eq!(split_evenly(5, 4), [0..2, 2..3, 3..4, 4..5]);
/// assert_eq!(split_evenly(2, 4), [0..1, 1..2]);
/// assert_eq!(split_evenly(3, 1), [0..3]);
/// assert!(split_evenly(0, 4).is_empty());
/// ```
pub fn split_evenly(len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1).min(len);
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (len / parts, len % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + base + usize::from(i < extra);
            let range = start..end;
            start = end;
            range
        })
        .collect()
}

/// A padded batch on a device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[batch, seq]`, right-padded.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<2, Int>,
    /// 1 where the token counts in the loss.
    pub target_mask: Tensor<2, Int>,
    /// Real tokens in the batch.
    pub tokens: usize,
    /// `input_ids` on the host, row-major.
    pub ids: Vec<u32>,
    /// `target_mask` on the host, row-major.
    pub targets: Vec<bool>,
}

/// Pads `samples` on the right to the longest one with `pad_id`.
pub fn collate(samples: &[&Sample], pad_id: u32, device: &Device) -> Batch {
    let b = samples.len();
    let s = samples
        .iter()
        .map(|x| x.ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![pad_id as i64; b * s];
    let mut attention = vec![0i64; b * s];
    let mut targets = vec![0i64; b * s];
    let mut tokens = 0;
    for (r, sample) in samples.iter().enumerate() {
        for (c, (&id, &t)) in sample.ids.iter().zip(&sample.targets).enumerate() {
            ids[r * s + c] = id as i64;
            attention[r * s + c] = 1;
            targets[r * s + c] = t as i64;
        }
        tokens += sample.ids.len();
    }
    let host_ids = ids.iter().map(|&i| i as u32).collect();
    let host_targets = targets.iter().map(|&t| t == 1).collect();
    let t = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, s]), device);
    Batch {
        ids: host_ids,
        targets: host_targets,
        input_ids: t(ids),
        attention_mask: t(attention),
        target_mask: t(targets),
        tokens,
    }
}
