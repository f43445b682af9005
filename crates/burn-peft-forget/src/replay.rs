//! Replay buffers and batch mixing.

use burn_peft_train::{Regularizer, Result, Sample, SplitMix64, TrainError};

/// A fixed-size sample of one or more streams of old-task samples, by reservoir sampling
/// (Vitter's algorithm R) per source, so each source keeps an equal share however long its
/// stream is.
///
/// ```
/// use burn_peft_forget::ReplayBuffer;
/// use burn_peft_train::Sample;
/// let s = |i: u32| Sample { ids: vec![i, i], targets: vec![true, true], label: None };
/// let mut buffer = ReplayBuffer::new(4, 7);
/// for i in 0..100 { buffer.offer("news", s(i)); }
/// for i in 0..3 { buffer.offer("chat", s(1000 + i)); }
/// assert_eq!(buffer.len(), 4);
/// assert_eq!(buffer.count("chat"), 2); // balanced: half the room each
/// ```
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    rng: SplitMix64,
    sources: Vec<Source>,
}

#[derive(Debug, Clone)]
struct Source {
    name: String,
    seen: usize,
    items: Vec<Sample>,
}

impl ReplayBuffer {
    /// An empty buffer for `capacity` samples.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity,
            rng: SplitMix64::new(seed),
            sources: Vec::new(),
        }
    }

    fn share(&self) -> usize {
        (self.capacity / self.sources.len().max(1)).max(1)
    }

    /// Offers one sample of stream `source`.
    pub fn offer(&mut self, source: &str, sample: Sample) {
        if !self.sources.iter().any(|s| s.name == source) {
            self.sources.push(Source {
                name: source.to_string(),
                seen: 0,
                items: Vec::new(),
            });
            let share = self.share();
            for s in &mut self.sources {
                s.items.truncate(share);
            }
        }
        let share = self.share();
        let i = self
            .sources
            .iter()
            .position(|s| s.name == source)
            .unwrap_or(0);
        let r = self.rng.next_u64();
        let src = &mut self.sources[i];
        src.seen += 1;
        if src.items.len() < share {
            src.items.push(sample);
        } else {
            let j = (r % src.seen as u64) as usize;
            if j < share {
                src.items[j] = sample;
            }
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.sources.iter().map(|s| s.items.len()).sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples held from `source`.
    pub fn count(&self, source: &str) -> usize {
        self.sources
            .iter()
            .find(|s| s.name == source)
            .map_or(0, |s| s.items.len())
    }

    /// One sample drawn uniformly over sources, then within the source.
    pub fn draw(&self, rng: &mut SplitMix64) -> Option<&Sample> {
        let filled: Vec<&Source> = self
            .sources
            .iter()
            .filter(|s| !s.items.is_empty())
            .collect();
        if filled.is_empty() {
            return None;
        }
        let s = filled[(rng.next_u64() % filled.len() as u64) as usize];
        Some(&s.items[(rng.next_u64() % s.items.len() as u64) as usize])
    }
}

/// Replaces `ratio` of every micro-batch with samples from a [`ReplayBuffer`].
pub struct Replay {
    buffer: ReplayBuffer,
    ratio: f64,
}

impl Replay {
    /// Replay at `ratio` (in (0, 1)) from `buffer`.
    pub fn new(buffer: ReplayBuffer, ratio: f64) -> Result<Self> {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(TrainError::Config(format!(
                "replay ratio {ratio} must be in (0, 1)"
            )));
        }
        if buffer.is_empty() {
            return Err(TrainError::Config(
                "the replay buffer is empty: offer it general samples".into(),
            ));
        }
        Ok(Self { buffer, ratio })
    }
}

impl<M> Regularizer<M> for Replay {
    fn name(&self) -> String {
        "replay".into()
    }

    fn end_task(&mut self, task: &str, samples: &[Sample]) {
        for s in samples {
            self.buffer.offer(task, s.clone());
        }
    }

    fn mix(&mut self, samples: &mut Vec<Sample>, rng: &mut SplitMix64) {
        let k = ((samples.len() as f64) * self.ratio).round() as usize;
        let k = k.clamp(1, samples.len().saturating_sub(1).max(1));
        for slot in samples.iter_mut().rev().take(k) {
            if let Some(s) = self.buffer.draw(rng) {
                *slot = s.clone();
            }
        }
    }
}
