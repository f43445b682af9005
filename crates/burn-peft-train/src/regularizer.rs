//! The hook through which forgetting mitigations (EWC, L2-SP, replay, distillation; see
//! `burn-peft-forget`) take part in training.

use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::data::Sample;
use crate::error::Result;
use burn_peft_core::SplitMix64;

/// Something the trainer consults at every micro-batch: it may replace samples of the batch
/// (replay) and add a penalty to its loss (EWC, L2-SP, distillation).
pub trait Regularizer<M> {
    /// A short name for logs (`ewc`, `replay`, ...).
    fn name(&self) -> String;

    /// Called before the first step of a new run (not on resume), and so at the start of
    /// every task of a sequence: estimate what is needed from the starting model (Fisher
    /// information, anchors, a snapshot).
    fn prepare(&mut self, _model: &M, _device: &Device) -> Result<()> {
        Ok(())
    }

    /// Called before task `task` (counted from 0) of a sequence other than the first starts,
    /// or is restored when a sequence resumes; it may change the model. O-LoRA freezes the
    /// finished task's adapter and gives the new task a fresh one here.
    fn begin_task(&mut self, model: M, _task: usize) -> Result<M> {
        Ok(model)
    }

    /// Called once when a sequence's last task is done, before its final weights are saved;
    /// it may change the model (O-LoRA joins its adapters into one).
    fn end_sequence(&mut self, model: M) -> Result<M> {
        Ok(model)
    }

    /// Called when task `task` of a sequence has been learned, before the next one starts:
    /// its samples become old-task data (EWC's next Fisher is estimated on them, replay keeps
    /// some of them).
    fn end_task(&mut self, _task: &str, _samples: &[Sample]) {}

    /// Replaces some of the micro-batch's samples; `rng` is seeded from the run, step and
    /// micro-batch, so a resumed run mixes the same samples.
    fn mix(&mut self, _samples: &mut Vec<Sample>, _rng: &mut SplitMix64) {}

    /// The penalty added to this micro-batch's task loss (`None`: nothing).
    fn penalty(&mut self, _model: &M, _rng: &mut SplitMix64) -> Option<Tensor<1>> {
        None
    }

    /// The [`penalty`](Self::penalty) (detached) and the gradients of `scale(penalty)`, for
    /// training with gradient checkpointing ([`TrainConfig::checkpoint_layers`]): a penalty
    /// that runs the model (distillation) computes them through
    /// [`CausalLm::layerwise_gradients`], one decoder layer at a time, with dropout masks
    /// drawn from `seed`. The default back-propagates [`penalty`](Self::penalty) at once and
    /// ignores `seed`: its draws come from the device's generator, which the trainer seeds
    /// for each micro-batch.
    ///
    /// [`TrainConfig::checkpoint_layers`]: crate::TrainConfig::checkpoint_layers
    /// [`CausalLm::layerwise_gradients`]: crate::CausalLm::layerwise_gradients
    fn penalty_gradients(
        &mut self,
        model: &M,
        rng: &mut SplitMix64,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        _seed: u64,
    ) -> Option<(Tensor<1>, GradientsParams)>
    where
        M: Module,
    {
        let penalty = self.penalty(model, rng)?;
        let grads = if penalty.is_tracked() {
            GradientsParams::from_grads(scale(penalty.clone()).backward(), model)
        } else {
            GradientsParams::new()
        };
        Some((penalty.detach(), grads))
    }

    /// Writes the state that `prepare` computed into a checkpoint directory.
    fn save(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Reads the state [`save`](Self::save) wrote, when resuming. `model` is the model as the
    /// run (or, in a sequence, the task) started, before the checkpoint's weights are loaded
    /// into it.
    fn load(&mut self, _model: &M, _dir: &Path, _device: &Device) -> Result<()> {
        Ok(())
    }
}
