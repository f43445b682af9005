//! EWC (separate and online) and L2-SP.

use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, FloatDType, Int, Tensor};
use burn_peft_train::{
    CausalLm, Regularizer, Result, Sample, SplitMix64, TrainError, collate, loss_of_hidden,
    loss_of_hidden_with,
};

use crate::flat::{self, Flat};

/// How the diagonal Fisher is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FisherKind {
    /// Squared gradients of the loss on the data's own next tokens.
    #[default]
    Empirical,
    /// Squared gradients of the loss on next tokens sampled from the model's predictions (the
    /// Fisher information proper, one sample per position).
    Sampled,
}

/// EWC settings.
///
/// ```
/// use burn_peft_forget::{EwcConfig, FisherKind};
/// let online = EwcConfig::new(1e4).with_fisher_samples(64).with_gamma(Some(0.9));
/// assert_eq!(online.fisher, FisherKind::Empirical);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EwcConfig {
    /// λ in `λ/2 · Σ F (θ − θ*)²`.
    pub lambda: f64,
    /// Gradients that estimate the Fisher (their squares are averaged).
    pub fisher_samples: usize,
    /// Samples behind each gradient: 1 (the default) for per-sample gradients, the empirical
    /// Fisher proper; more for per-batch gradients, the squared gradient of a batch's mean
    /// loss: fewer backward passes for the same data, but for uncorrelated samples about
    /// `1/fisher_batch_size` of the per-sample estimate (raise λ to match).
    pub fisher_batch_size: usize,
    /// Empirical or sampled Fisher.
    pub fisher: FisherKind,
    /// Online EWC: each consolidation folds into one term, `γ·F_old + F_new`, anchored at the
    /// latest values (`None`: separate EWC, one term per consolidation).
    pub gamma: Option<f64>,
    /// Computes each Fisher gradient one decoder layer at a time
    /// ([`CausalLm::layerwise_gradients`]): the same estimate in the memory of gradient
    /// checkpointing, for more time. Off by default.
    pub checkpoint_layers: bool,
}

impl EwcConfig {
    /// λ, 32 per-sample gradients, empirical Fisher, not online.
    pub fn new(lambda: f64) -> Self {
        Self {
            lambda,
            fisher_samples: 32,
            fisher_batch_size: 1,
            fisher: FisherKind::Empirical,
            gamma: None,
            checkpoint_layers: false,
        }
    }

    /// Sets how many gradients estimate the Fisher.
    pub fn with_fisher_samples(mut self, n: usize) -> Self {
        self.fisher_samples = n;
        self
    }

    /// Sets how many samples each gradient is taken over (1: per-sample gradients).
    ///
    /// ```
    /// use burn_peft_forget::EwcConfig;
    /// let per_batch = EwcConfig::new(1e5).with_fisher_samples(8).with_fisher_batch_size(4);
    /// assert_eq!(per_batch.fisher_batch_size, 4); // 8 gradients over 32 samples
    /// ```
    pub fn with_fisher_batch_size(mut self, n: usize) -> Self {
        self.fisher_batch_size = n;
        self
    }

    /// Sets the Fisher estimator.
    pub fn with_fisher(mut self, kind: FisherKind) -> Self {
        self.fisher = kind;
        self
    }

    /// Online EWC with decay γ.
    pub fn with_gamma(mut self, gamma: Option<f64>) -> Self {
        self.gamma = gamma;
        self
    }

    /// Estimates the Fisher with gradient checkpointing by layer (as training does with
    /// `TrainConfig::checkpoint_layers`).
    ///
    /// ```
    /// use burn_peft_forget::EwcConfig;
    /// assert!(EwcConfig::new(1e4).with_checkpoint_layers(true).checkpoint_layers);
    /// ```
    pub fn with_checkpoint_layers(mut self, on: bool) -> Self {
        self.checkpoint_layers = on;
        self
    }
}

/// Elastic weight consolidation over the trainable parameters.
///
/// Every [`consolidate`](Ewc::consolidate) (the trainer calls it through
/// [`Regularizer::prepare`] at the start of each task) estimates a Fisher at the current values
/// on the old-task samples. Separate EWC keeps one `(F, θ*)` term per consolidation and sums
/// their penalties; online EWC keeps a single term, `γ·F_old + F_new` anchored at the latest
/// values (Schwarz et al. 2018). [`Regularizer::end_task`] makes a finished task's samples the
/// data of the next estimate.
pub struct Ewc {
    config: EwcConfig,
    general: Vec<Sample>,
    pad_id: u32,
    /// `(fisher, anchor)` per consolidation (one for online EWC).
    terms: Vec<(Flat, Flat)>,
}

/// The loss scale of the Fisher estimate (see `Ewc::consolidate`).
const FISHER_SCALE: f32 = 1024.0;
const EWC_FILE: &str = "ewc.safetensors";

impl Ewc {
    /// EWC whose Fisher comes from `general` samples (the old task, or general text).
    pub fn new(config: EwcConfig, general: Vec<Sample>, pad_id: u32) -> Result<Self> {
        if !(config.lambda.is_finite() && config.lambda >= 0.0) {
            return Err(TrainError::Config(format!(
                "EWC lambda {} must be >= 0",
                config.lambda
            )));
        }
        if config.fisher_samples == 0 || config.fisher_batch_size == 0 || general.is_empty() {
            return Err(TrainError::Config(
                "EWC needs general samples to estimate the Fisher (--general-data, \
                 --fisher-samples >= 1, --fisher-batch-size >= 1)"
                    .into(),
            ));
        }
        if let Some(g) = config.gamma
            && !(0.0..=1.0).contains(&g)
        {
            return Err(TrainError::Config(format!(
                "EWC gamma {g} must be in [0, 1]"
            )));
        }
        Ok(Self {
            config,
            general,
            pad_id,
            terms: Vec::new(),
        })
    }

    /// Penalty terms held: consolidations for separate EWC, at most one for online EWC.
    pub fn terms(&self) -> usize {
        self.terms.len()
    }

    /// The latest term's diagonal Fisher by parameter path (empty before the first
    /// consolidation; for online EWC, the folded one).
    pub fn fisher(&self) -> Vec<(String, Vec<f32>)> {
        let Some((fisher, _)) = self.terms.last() else {
            return Vec::new();
        };
        fisher
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.clone()
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec()
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Estimates the Fisher at `model`'s current values and makes them the anchors; with
    /// `gamma`, folds the earlier Fisher in (online EWC across a sequence of tasks).
    pub fn consolidate<M: CausalLm>(&mut self, model: &M, device: &Device) -> Result<()> {
        let (n, k) = (self.config.fisher_samples, self.config.fisher_batch_size);
        let mut sum: Flat = Flat::new();
        for i in 0..n {
            let samples: Vec<&Sample> = (i * k..(i + 1) * k)
                .map(|j| &self.general[j % self.general.len()])
                .collect();
            let batch = collate(&samples, self.pad_id, device);
            let seed = 0x5EED_F15E ^ i as u64;
            device.seed(seed);
            let kind = self.config.fisher;
            let mut loss_of = |hidden: Tensor<3>| match kind {
                FisherKind::Empirical => loss_of_hidden(model, hidden, &batch),
                FisherKind::Sampled => {
                    // The draws' own seed: the same tokens with and without checkpointing,
                    // whatever the layers drew before.
                    hidden.device().seed(!seed);
                    sampled_loss(model, hidden, &batch)
                }
            };
            // Scaled by a power of two (exact in f32 and bf16) so that per-sample gradients
            // through f16 activations do not underflow; unscaled in the square.
            let scale = |loss: Tensor<1>| loss * FISHER_SCALE;
            let grads = if self.config.checkpoint_layers {
                let ids = batch.input_ids.clone();
                let mask = Some(batch.attention_mask.clone());
                model
                    .layerwise_gradients(ids, mask, &mut loss_of, &scale, seed)
                    .1
            } else {
                let hidden = model
                    .hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
                GradientsParams::from_grads(scale(loss_of(hidden)).backward(), model)
            };
            for (k, g) in flat::gradients(model, &grads) {
                let g2 = g.square() / (FISHER_SCALE * FISHER_SCALE);
                let entry = sum.remove(&k);
                sum.insert(
                    k,
                    match entry {
                        Some(s) => s + g2,
                        None => g2,
                    },
                );
            }
        }
        let new: Flat = sum.into_iter().map(|(k, v)| (k, v / n as f32)).collect();
        let new = flat::constants(new, device);
        let anchor = flat::constants(flat::values(model), device);
        match (self.config.gamma, self.terms.pop()) {
            (Some(g), Some((old, _))) => {
                let folded = new
                    .into_iter()
                    .map(|(k, v)| match old.get(&k) {
                        Some(o) => (k, o.clone() * g as f32 + v),
                        None => (k, v),
                    })
                    .collect();
                self.terms.push((folded, anchor));
            }
            (_, last) => {
                self.terms.extend(last);
                self.terms.push((new, anchor));
            }
        }
        Ok(())
    }
}

/// Cross-entropy against next tokens drawn from the model's own (detached) predictions, at the
/// batch's target positions, from the final hidden states. The draws and the loss go a chunk of
/// rows at a time ([`draw_tokens`], [`loss_of_hidden_with`]), so neither the logits of the
/// whole batch nor an autodiff graph over the vocabulary's softmax is ever held.
fn sampled_loss<M: CausalLm>(
    model: &M,
    hidden: Tensor<3>,
    batch: &burn_peft_train::Batch,
) -> Tensor<1> {
    loss_of_hidden_with(model, hidden, batch, |rows, _| {
        draw_tokens(rows.detach(), &|x| model.row_logits(x), DRAW_CHUNK_ELEMENTS)
    })
}

/// Logits held at once while drawing (rows × vocabulary), as the chunked losses hold.
const DRAW_CHUNK_ELEMENTS: usize = 1 << 23;

/// One token per row of `hidden` `[rows, features]`, drawn from `softmax(project(rows))` by the
/// Gumbel-max trick (the device's random generator), `chunk_elements` logits at a time.
fn draw_tokens(
    hidden: Tensor<2>,
    project: &dyn Fn(Tensor<2>) -> Tensor<2>,
    chunk_elements: usize,
) -> Tensor<1, Int> {
    let [rows, features] = hidden.dims();
    let mut drawn = Vec::new();
    // The vocabulary is known after the first chunk.
    let mut chunk = 1;
    let mut start = 0;
    while start < rows {
        let end = rows.min(start + chunk);
        let logits = project(hidden.clone().slice([start..end, 0..features])).cast(FloatDType::F32);
        let [n, vocab] = logits.dims();
        let u = Tensor::<2>::random(
            [n, vocab],
            Distribution::Uniform(1e-10, 1.0),
            &logits.device(),
        );
        let gumbel = u.log().neg().log().neg();
        drawn.push((logits + gumbel).argmax(1).reshape([n]));
        chunk = (chunk_elements / vocab.max(1)).max(1);
        start = end;
    }
    Tensor::cat(drawn, 0)
}

impl<M: CausalLm> Regularizer<M> for Ewc {
    fn name(&self) -> String {
        if self.config.gamma.is_some() {
            "online-ewc"
        } else {
            "ewc"
        }
        .into()
    }

    fn prepare(&mut self, model: &M, device: &Device) -> Result<()> {
        self.consolidate(model, device)
    }

    fn end_task(&mut self, _task: &str, samples: &[Sample]) {
        if !samples.is_empty() {
            self.general = samples.to_vec();
        }
    }

    fn penalty(&mut self, model: &M, _rng: &mut SplitMix64) -> Option<Tensor<1>> {
        let values = flat::values(model);
        let d = self
            .terms
            .iter()
            .filter_map(|(f, a)| flat::weighted_distance(&values, a, Some(f)))
            .reduce(|x, y| x + y)?;
        Some(d * (self.config.lambda / 2.0) as f32)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let names: Vec<(String, String)> = (0..self.terms.len())
            .map(|i| (format!("fisher.{i}"), format!("anchor.{i}")))
            .collect();
        let groups: Vec<(&str, &Flat)> = names
            .iter()
            .zip(&self.terms)
            .flat_map(|((f, a), (fv, av))| [(f.as_str(), fv), (a.as_str(), av)])
            .collect();
        flat::save(&dir.join(EWC_FILE), &groups)
    }

    fn load(&mut self, model: &M, dir: &Path, device: &Device) -> Result<()> {
        let path = dir.join(EWC_FILE);
        let paths: Vec<String> = flat::values(model).into_keys().collect();
        // One (Fisher, anchor) pair per consolidated task: fisher.0, anchor.0, fisher.1, ...
        let pairs = |found: &[String]| -> Vec<String> {
            let n = found.iter().filter(|g| g.starts_with("fisher.")).count();
            (0..n)
                .flat_map(|i| [format!("fisher.{i}"), format!("anchor.{i}")])
                .collect()
        };
        let mut groups = flat::load(&path, pairs, &paths, device)?.into_iter();
        self.terms.clear();
        while let (Some(f), Some(a)) = (groups.next(), groups.next()) {
            self.terms.push((f, a));
        }
        Ok(())
    }
}

/// L2-SP: `α/2 · Σ (θ − θ₀)²`, a pull toward the values training started from.
pub struct L2Sp {
    alpha: f64,
    anchor: Flat,
}

const L2SP_FILE: &str = "l2sp.safetensors";

impl L2Sp {
    /// L2-SP with strength `alpha`.
    pub fn new(alpha: f64) -> Result<Self> {
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(TrainError::Config(format!(
                "L2-SP alpha {alpha} must be >= 0"
            )));
        }
        Ok(Self {
            alpha,
            anchor: Flat::new(),
        })
    }
}

impl<M: Module> Regularizer<M> for L2Sp {
    fn name(&self) -> String {
        "l2sp".into()
    }

    fn prepare(&mut self, model: &M, device: &Device) -> Result<()> {
        self.anchor = flat::constants(flat::values(model), device);
        Ok(())
    }

    fn penalty(&mut self, model: &M, _rng: &mut SplitMix64) -> Option<Tensor<1>> {
        let d = flat::weighted_distance(&flat::values(model), &self.anchor, None)?;
        Some(d * (self.alpha / 2.0) as f32)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        flat::save(&dir.join(L2SP_FILE), &[("anchor", &self.anchor)])
    }

    fn load(&mut self, model: &M, dir: &Path, device: &Device) -> Result<()> {
        let paths: Vec<String> = flat::values(model).into_keys().collect();
        let anchor = |_: &[String]| vec!["anchor".to_string()];
        self.anchor = flat::load(&dir.join(L2SP_FILE), anchor, &paths, device)?
            .pop()
            .unwrap_or_default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The draws follow the softmax of the logits, over chunks of rows and a last short one.
    #[test]
    fn drawn_tokens_follow_the_softmax() {
        let device = Device::flex();
        device.seed(7);
        let logits = [0.0f32, 1.0, 2.0, -1.0, 0.5];
        let table = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [1, 5]), &device);
        let rows = 20_001;
        let hidden = Tensor::<2>::ones([rows, 1], &device);
        let drawn = draw_tokens(hidden, &|x| x.matmul(table.clone()), 5 * 1000);
        let drawn: Vec<i64> = drawn.into_data().convert::<i64>().try_to_vec().unwrap();
        assert_eq!(drawn.len(), rows);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (token, l) in logits.iter().enumerate() {
            let p = l.exp() / z;
            let f = drawn.iter().filter(|&&d| d == token as i64).count() as f32 / rows as f32;
            // About six standard deviations of a frequency over 20,001 draws.
            assert!((f - p).abs() < 0.02, "token {token}: {f} drawn, p = {p}");
        }
    }
}
