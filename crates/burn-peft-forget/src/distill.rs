//! Distillation from the frozen base model, without a second copy of its weights.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_models::{BaseView, linear_kl_divergence};
use burn_peft_train::{CausalLm, Regularizer, Result, Sample, SplitMix64, TrainError, collate};

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
                "distillation needs general samples".into(),
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
        let draw = self.draw(model, rng)?;
        let student = model.hidden_states(draw.input_ids.clone(), Some(draw.mask.clone()));
        Some(self.loss(model, &draw, student))
    }

    fn penalty_gradients(
        &mut self,
        model: &M,
        rng: &mut SplitMix64,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        seed: u64,
    ) -> Option<(Tensor<1>, GradientsParams)> {
        let draw = self.draw(model, rng)?;
        let mut head = |student| self.loss(model, &draw, student);
        Some(model.layerwise_gradients(
            draw.input_ids.clone(),
            Some(draw.mask.clone()),
            &mut head,
            scale,
            seed,
        ))
    }
}

/// One micro-batch's general samples and what the teacher makes of them.
struct Draw<M> {
    input_ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    /// Each real (unpadded) token's row in the flattened `[batch · seq]` hidden states.
    real: Tensor<1, Int>,
    teacher: M,
    /// The teacher's final hidden states at the real tokens, untracked.
    teacher_hidden: Tensor<2>,
}

impl<M: CausalLm + BaseView> Distill<M> {
    /// Draws the general samples and runs the teacher on them.
    fn draw(&self, model: &M, rng: &mut SplitMix64) -> Option<Draw<M>> {
        let picks: Vec<&Sample> = (0..self.config.batch_size)
            .map(|_| &self.general[(rng.next_u64() % self.general.len() as u64) as usize])
            .collect();
        let device = model.devices().first().cloned()?;
        let batch = collate(&picks, self.pad_id, &device);
        let teacher = match model.base_view() {
            Some(base) => base,
            None => self.snapshot.clone()?,
        };
        let s = batch.input_ids.dims()[1];
        let positions: Vec<i64> = picks
            .iter()
            .enumerate()
            .flat_map(|(r, x)| (0..x.ids.len()).map(move |t| (r * s + t) as i64))
            .collect();
        let n = positions.len();
        let real = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device);
        let teacher_hidden =
            teacher.hidden_states(batch.input_ids.clone(), Some(batch.attention_mask.clone()));
        let teacher_hidden = select_rows(teacher_hidden, &real).detach();
        Some(Draw {
            input_ids: batch.input_ids,
            mask: batch.attention_mask,
            real,
            teacher,
            teacher_hidden,
        })
    }

    /// `λ · T² · KL(teacher ‖ student)` for the student's final hidden states of `draw`.
    fn loss(&self, model: &M, draw: &Draw<M>, student: Tensor<3>) -> Tensor<1> {
        let t = self.config.temperature;
        let teacher_hidden = &draw.teacher_hidden;
        let kl = linear_kl_divergence(
            select_rows(student, &draw.real),
            |rows| {
                let f = teacher_hidden.dims()[1];
                draw.teacher
                    .row_logits(teacher_hidden.clone().slice([rows, 0..f]))
            },
            None,
            t,
            |x| model.row_logits(x),
        );
        kl * (self.config.lambda * t * t) as f32
    }
}

/// The rows `real` of hidden states `[batch, seq, hidden]` flattened to `[batch · seq, hidden]`.
fn select_rows(hidden: Tensor<3>, real: &Tensor<1, Int>) -> Tensor<2> {
    let [b, s, h] = hidden.dims();
    hidden.reshape([b * s, h]).select(0, real.clone())
}
