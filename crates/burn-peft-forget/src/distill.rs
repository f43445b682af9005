//! Distillation from the frozen base model, without a second copy of its weights.

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_core::PeftModel;
use burn_peft_models::{Llama, linear_kl_divergence};
use burn_peft_train::{CausalLm, Regularizer, Result, Sample, SplitMix64, TrainError, collate};

/// A model that can show its frozen base: the same weights with every adapter switched off.
pub trait BaseView: Sized {
    /// The base model sharing this model's weights, or `None` when nothing is switched off
    /// (full fine-tuning: the base itself trains).
    fn base_view(&self) -> Option<Self>;
}

impl BaseView for Llama {
    fn base_view(&self) -> Option<Self> {
        let mut base = self.clone();
        let has_prompt = base.prompt_learning.take().is_some();
        base.prompt_name = None;
        let has_linear = !base.clone().adapter_names().is_empty();
        if has_linear {
            base.disable_adapters().ok()?;
        }
        (has_prompt || has_linear).then_some(base)
    }
}

/// Distillation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillConfig {
    /// Weight of the KL term.
    pub lambda: f64,
    /// Softmax temperature of teacher and student (the KL is scaled by T²).
    pub temperature: f64,
    /// General samples per micro-batch.
    pub batch_size: usize,
}

impl DistillConfig {
    /// λ, temperature 1, 2 general samples per micro-batch.
    pub fn new(lambda: f64) -> Self {
        Self {
            lambda,
            temperature: 1.0,
            batch_size: 2,
        }
    }
}

/// `λ · T² · KL(teacher ‖ student)` per token on general text, where the teacher is the base
/// model ([`BaseView`]) or, for full fine-tuning, the model as training started. The KL goes
/// through [`linear_kl_divergence`]: no autodiff graph over the vocabulary's softmax.
pub struct Distill<M> {
    config: DistillConfig,
    general: Vec<Sample>,
    pad_id: u32,
    snapshot: Option<M>,
}

impl<M> Distill<M> {
    /// Distillation on `general` samples.
    pub fn new(config: DistillConfig, general: Vec<Sample>, pad_id: u32) -> Result<Self> {
        if !(config.lambda.is_finite() && config.lambda >= 0.0 && config.temperature > 0.0) {
            return Err(TrainError::Config(format!(
                "distillation needs lambda >= 0 and temperature > 0 (got {} and {})",
                config.lambda, config.temperature
            )));
        }
        if general.is_empty() || config.batch_size == 0 {
            return Err(TrainError::Config(
                "distillation needs general samples (--general-data)".into(),
            ));
        }
        Ok(Self {
            config,
            general,
            pad_id,
            snapshot: None,
        })
    }
}

impl<M: CausalLm + BaseView> Regularizer<M> for Distill<M> {
    fn name(&self) -> String {
        "distill".into()
    }

    fn prepare(&mut self, model: &M, _device: &Device) -> Result<()> {
        if model.base_view().is_none() && self.snapshot.is_none() {
            // Full fine-tuning: burn tensors are immutable values, so this clone keeps the
            // starting weights while the trained ones move on (the first task's start: the
            // base model stays the teacher over a sequence of tasks).
            self.snapshot = Some(model.clone().no_grad());
        }
        Ok(())
    }

    fn load(&mut self, model: &M, _dir: &std::path::Path, device: &Device) -> Result<()> {
        // The trainer passes the model as the run started, before the checkpoint's weights:
        // the same teacher `prepare` would have kept.
        self.prepare(model, device)
    }

    fn penalty(&mut self, model: &M, rng: &mut SplitMix64) -> Option<Tensor<1>> {
        let picks: Vec<&Sample> = (0..self.config.batch_size)
            .map(|_| &self.general[(rng.next_u64() % self.general.len() as u64) as usize])
            .collect();
        let device = model.devices().first().cloned()?;
        let batch = collate(&picks, self.pad_id, &device);
        let teacher = match model.base_view() {
            Some(base) => base,
            None => self.snapshot.clone()?,
        };
        // Every real (unpadded) token's position in the flattened batch.
        let [b, s] = batch.input_ids.dims();
        let positions: Vec<i64> = picks
            .iter()
            .enumerate()
            .flat_map(|(r, x)| (0..x.ids.len()).map(move |t| (r * s + t) as i64))
            .collect();
        let n = positions.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device);
        let real = |hidden: Tensor<3>| {
            let h = hidden.dims()[2];
            hidden.reshape([b * s, h]).select(0, index.clone())
        };
        let hidden = |m: &M| {
            real(m.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone())))
        };
        let teacher_hidden = hidden(&teacher).detach();
        let t = self.config.temperature;
        let kl = linear_kl_divergence(
            hidden(model),
            |rows| {
                let f = teacher_hidden.dims()[1];
                teacher.row_logits(teacher_hidden.clone().slice([rows, 0..f]))
            },
            None,
            t,
            |x| model.row_logits(x),
        );
        Some(kl * (self.config.lambda * t * t) as f32)
    }
}
