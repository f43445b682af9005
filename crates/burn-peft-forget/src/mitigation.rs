//! Choosing a mitigation by name and building it with the defaults the CLI uses, so that a
//! program of your own gets the same behaviour as `burn-peft finetune --forgetting`.

use burn_peft_adapters::AddAdapter;
use burn_peft_models::{BaseView, CausalLm};
use burn_peft_train::{Regularizer, Result, Sample, TrainError};

use crate::{
    Distill, DistillConfig, Ewc, EwcConfig, FisherKind, L2Sp, OLora, Replay, ReplayBuffer,
};

/// A forgetting mitigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mitigation {
    /// None (general-text loss is still measured when general samples are given).
    None,
    /// Elastic weight consolidation with a Fisher from the general samples.
    Ewc,
    /// Online EWC (decay [`ForgettingConfig::ewc_gamma`]).
    OnlineEwc,
    /// A pull toward the starting values.
    L2Sp,
    /// General samples mixed into every batch ([`ForgettingConfig::replay_ratio`]).
    Replay,
    /// KL from the frozen base model's predictions on general text.
    Distill,
    /// O-LoRA: over a sequence of tasks, a new LoRA per task kept orthogonal to the earlier
    /// tasks' ones.
    OLora,
}

impl Mitigation {
    /// The strength used when none is given: EWC's λ 1e4, L2-SP's α 1e-2, distillation's
    /// weight 1, O-LoRA's λ₁ 0.5; `None` for the mitigations without one.
    pub fn default_strength(self) -> Option<f64> {
        match self {
            Mitigation::Ewc | Mitigation::OnlineEwc => Some(1e4),
            Mitigation::L2Sp => Some(1e-2),
            Mitigation::Distill => Some(1.0),
            Mitigation::OLora => Some(0.5),
            Mitigation::None | Mitigation::Replay => None,
        }
    }

    /// Whether it draws on general (old-skill) samples.
    pub fn needs_general_samples(self) -> bool {
        !matches!(self, Mitigation::None | Mitigation::OLora)
    }
}

/// Why a mitigation does not fit a run ([`ForgettingConfig::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// O-LoRA keeps one LoRA per task: the run must train LoRA.
    #[error("O-LoRA keeps one LoRA per task: it needs LoRA")]
    NeedsLora,
    /// O-LoRA needs a sequence of at least two tasks.
    #[error("O-LoRA needs a sequence of tasks: two or more training sets")]
    NeedsTaskSequence,
    /// The mitigation draws on general (old-skill) samples and none were given.
    #[error("{0:?} needs general (old-skill) samples")]
    NeedsGeneralSamples(Mitigation),
}

impl From<Unfit> for TrainError {
    fn from(e: Unfit) -> Self {
        TrainError::Config(e.to_string())
    }
}

/// A mitigation and its settings, with the CLI's defaults.
///
/// ```
/// use burn_peft_forget::{ForgettingConfig, Mitigation};
/// let config = ForgettingConfig::new(Mitigation::Ewc);
/// assert_eq!(config.strength(), Some(1e4));
/// // EWC needs general samples to estimate its Fisher.
/// assert!(config.check(true, 1, false).is_err());
/// assert!(config.check(true, 1, true).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ForgettingConfig {
    /// Which mitigation.
    pub mitigation: Mitigation,
    /// Its strength; `None` takes [`Mitigation::default_strength`].
    pub lambda: Option<f64>,
    /// Replay: the share of every batch taken from the general samples.
    pub replay_ratio: f64,
    /// EWC: gradients that estimate the Fisher.
    pub fisher_samples: usize,
    /// EWC: samples behind each of those gradients.
    pub fisher_batch_size: usize,
    /// EWC: next tokens sampled from the model (true Fisher) instead of the data's.
    pub sampled_fisher: bool,
    /// Online EWC: decay of the earlier Fisher.
    pub ewc_gamma: f64,
    /// EWC: estimate the Fisher with checkpointing by layer.
    pub checkpoint_layers: bool,
    /// Seed of the replay buffer and of O-LoRA's new adapters.
    pub seed: u64,
    /// O-LoRA: the name of the adapter the run trains.
    pub adapter_name: String,
}

impl ForgettingConfig {
    /// `mitigation` with the defaults: replay ratio 0.25, 32 Fisher gradients of one sample,
    /// empirical Fisher, online decay 0.9, seed 42, adapter `default`.
    pub fn new(mitigation: Mitigation) -> Self {
        Self {
            mitigation,
            lambda: None,
            replay_ratio: 0.25,
            fisher_samples: 32,
            fisher_batch_size: 1,
            sampled_fisher: false,
            ewc_gamma: 0.9,
            checkpoint_layers: false,
            seed: 42,
            adapter_name: "default".into(),
        }
    }

    /// The strength in force: the one set, or the mitigation's default.
    pub fn strength(&self) -> Option<f64> {
        self.lambda.or(self.mitigation.default_strength())
    }

    /// Checks that the mitigation fits the run: O-LoRA needs LoRA (`lora`) and a sequence of
    /// at least two tasks; the others need general samples.
    pub fn check(
        &self,
        lora: bool,
        tasks: usize,
        has_general_samples: bool,
    ) -> std::result::Result<(), Unfit> {
        match self.mitigation {
            Mitigation::OLora if !lora => Err(Unfit::NeedsLora),
            Mitigation::OLora if tasks < 2 => Err(Unfit::NeedsTaskSequence),
            m if m.needs_general_samples() && !has_general_samples => {
                Err(Unfit::NeedsGeneralSamples(m))
            }
            _ => Ok(()),
        }
    }

    /// The regularizer to give the [`Trainer`](burn_peft_train::Trainer), `None` for
    /// [`Mitigation::None`]. `general` is the pool of general samples EWC's Fisher, replay
    /// and distillation draw from; `pad_id` fills their batches.
    pub fn build<M>(
        &self,
        general: Vec<Sample>,
        pad_id: u32,
    ) -> Result<Option<Box<dyn Regularizer<M>>>>
    where
        M: AddAdapter + CausalLm + BaseView + 'static,
    {
        let lambda = self.strength().unwrap_or(0.0);
        Ok(match self.mitigation {
            Mitigation::None => None,
            Mitigation::Ewc | Mitigation::OnlineEwc => {
                let mut c = EwcConfig::new(lambda)
                    .with_fisher_samples(self.fisher_samples)
                    .with_fisher_batch_size(self.fisher_batch_size)
                    .with_checkpoint_layers(self.checkpoint_layers)
                    .with_fisher(if self.sampled_fisher {
                        FisherKind::Sampled
                    } else {
                        FisherKind::Empirical
                    });
                if self.mitigation == Mitigation::OnlineEwc {
                    c = c.with_gamma(Some(self.ewc_gamma));
                }
                Some(Box::new(Ewc::new(c, general, pad_id)?))
            }
            Mitigation::L2Sp => Some(Box::new(L2Sp::new(lambda)?)),
            Mitigation::Replay => {
                let mut buffer = ReplayBuffer::new(general.len(), self.seed);
                for s in general {
                    buffer.offer("general", s);
                }
                Some(Box::new(Replay::new(buffer, self.replay_ratio)?))
            }
            Mitigation::Distill => Some(Box::new(Distill::new(
                DistillConfig::new(lambda),
                general,
                pad_id,
            )?)),
            Mitigation::OLora => Some(Box::new(
                OLora::new(lambda, &self.adapter_name)?.with_init_seed(self.seed),
            )),
        })
    }
}
