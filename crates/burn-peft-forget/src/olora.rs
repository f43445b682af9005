//! O-LoRA: each task of a sequence learns its own LoRA, kept orthogonal to the earlier ones.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use burn_peft_adapters::{Adapter, AddAdapter, LoraInit};
use burn_peft_core::{PeftError, PeftModel};
use burn_peft_train::{Regularizer, Result, SplitMix64, TrainError};

/// O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
/// Learning") over a sequence of tasks
/// ([`Trainer::fit_sequence`](burn_peft_train::Trainer::fit_sequence)):
///
/// - before each task but the first, the adapter that just learned a task is kept, frozen and
///   active, as `<adapter>-olora-<task>`, and `<adapter>` starts again from a fresh LoRA with
///   the same config (a new seed);
/// - while a task trains, the penalty `λ · Σ_layers Σ_earlier |A_earlierᵀ · A_new|` (the sum of
///   absolute values, as O-LoRA's code writes it) pushes the new adapter's input subspace
///   away from the earlier ones, so what it learns disturbs what they learned less;
/// - after the last task, every task's adapter is joined into one adapter named `<adapter>`,
///   by concatenation ([`AddAdapter::add_concatenated_lora`]), so the run's output is one
///   ordinary PEFT LoRA directory of rank `r · tasks`.
///
/// The earlier adapters are the only state, and they live in the model, so a resumed sequence
/// rebuilds them from the finished tasks' directories. Each task adds a rank-r path to the
/// forward pass until the sequence ends. O-LoRA's optional L2 term on the new adapter is left
/// out (its published runs set it to 0). On a single task (no sequence) nothing changes: there
/// is no earlier adapter. DoRA and PiSSA are refused.
///
/// ```
/// use burn_peft_forget::OLora;
/// let olora = OLora::new(0.5, "default").unwrap().with_init_seed(42);
/// assert!(OLora::new(-1.0, "default").is_err());
/// # let _ = olora;
/// ```
pub struct OLora {
    lambda: f64,
    adapter: String,
    init_seed: Option<u64>,
    earlier: Vec<String>,
}

impl OLora {
    /// O-LoRA with weight `lambda` (O-LoRA's λ₁; its experiments use 0.5) on the LoRA adapter
    /// called `adapter`.
    pub fn new(lambda: f64, adapter: &str) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(TrainError::Config(format!(
                "O-LoRA lambda {lambda} must be >= 0"
            )));
        }
        Ok(Self {
            lambda,
            adapter: adapter.to_string(),
            init_seed: None,
            earlier: Vec::new(),
        })
    }

    /// Draws each task's fresh adapter on the host from `seed` and the task's index
    /// ([`LoraConfig::init_seed`](burn_peft_adapters::LoraConfig::init_seed)), so a resumed
    /// sequence starts each task where the uninterrupted one did, on every backend. Without it
    /// the device's generator draws them.
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = Some(seed);
        self
    }

    /// The frozen adapters of the tasks learned so far.
    pub fn earlier_adapters(&self) -> &[String] {
        &self.earlier
    }

    /// Moves the trained adapter, as it is (frozen), to `<adapter>-olora-<task>`, one of the
    /// earlier adapters.
    fn keep<M: PeftModel<Adapter = Adapter>>(
        &mut self,
        model: &mut M,
        config: &burn_peft_adapters::LoraConfig,
        task: usize,
    ) -> Result<()> {
        let kept = format!("{}-olora-{task}", self.adapter);
        let mut copies = BTreeMap::new();
        model.clone().visit_adapter(&self.adapter, &mut |path, a| {
            copies.insert(path.to_string(), a.clone());
        });
        model.add_adapter_with(&kept, &config.selector(), |path, _| {
            copies.remove(path).ok_or_else(|| {
                PeftError::InvalidConfig(format!("adapter '{}' is not on {path}", self.adapter))
            })
        })?;
        model.delete_adapter(&self.adapter)?;
        self.earlier.push(kept);
        Ok(())
    }

    fn lora_config<M: PeftModel<Adapter = Adapter>>(
        &self,
        model: &M,
    ) -> Result<burn_peft_adapters::LoraConfig> {
        let mut config = None;
        let mut dora = false;
        model.clone().visit_adapter(&self.adapter, &mut |_, a| {
            if let Some(l) = a.as_lora() {
                dora |= l.magnitude.is_some();
                config.get_or_insert_with(|| l.config.clone());
            }
        });
        match config {
            Some(_) if dora => Err(TrainError::Config(format!(
                "O-LoRA needs plain LoRA: adapter '{}' uses DoRA",
                self.adapter
            ))),
            // PiSSA would move part of the base into every task's fresh adapter again.
            Some(c) if c.init_lora_weights == LoraInit::Pissa => Err(TrainError::Config(format!(
                "O-LoRA cannot start each task with PiSSA (adapter '{}'): use another init",
                self.adapter
            ))),
            Some(c) => Ok(c),
            None => Err(TrainError::Config(format!(
                "O-LoRA needs a LoRA adapter named '{}' on the model",
                self.adapter
            ))),
        }
    }
}

impl<M: PeftModel<Adapter = Adapter>> Regularizer<M> for OLora {
    fn name(&self) -> String {
        "olora".into()
    }

    fn prepare(&mut self, model: &M, _device: &Device) -> Result<()> {
        self.lora_config(model).map(|_| ())
    }

    fn begin_task(&mut self, mut model: M, task: usize) -> Result<M> {
        let mut config = self.lora_config(&model)?;
        let Some(finished) = task.checked_sub(1) else {
            return Err(TrainError::Config(
                "O-LoRA's first task has no earlier adapter to keep".into(),
            ));
        };
        self.keep(&mut model, &config, finished)?;
        // A fresh start that differs from every earlier task's.
        config.init_seed = self
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, &format!("olora-task-{task}")).next_u64());
        model.add_lora(&self.adapter, &config)?;
        let mut active: Vec<&str> = self.earlier.iter().map(String::as_str).collect();
        active.push(&self.adapter);
        model.set_adapter(&active)?;
        model.set_requires_grad(&active[..active.len() - 1], false)?;
        Ok(model)
    }

    fn end_sequence(&mut self, mut model: M) -> Result<M> {
        if self.earlier.is_empty() {
            return Ok(model);
        }
        // The last task's adapter is kept like the others, which frees the run's own name for
        // the joined one, so that the final save writes it.
        let config = self.lora_config(&model)?;
        self.keep(&mut model, &config, self.earlier.len())?;
        let parts: Vec<(&str, f64)> = self.earlier.iter().map(|n| (n.as_str(), 1.0)).collect();
        model.add_concatenated_lora(&self.adapter, &parts)?;
        for (name, _) in &parts {
            model.delete_adapter(name)?;
        }
        model.set_adapter(&[&self.adapter])?;
        self.earlier.clear();
        Ok(model)
    }

    fn penalty(&mut self, model: &M, _rng: &mut SplitMix64) -> Option<Tensor<1>> {
        if self.earlier.is_empty() || self.lambda == 0.0 {
            return None;
        }
        let mut total: Option<Tensor<1>> = None;
        model.clone().visit_adapted_linears(&mut |_, layer| {
            let Some(new) = layer.adapter(&self.adapter).and_then(Adapter::as_lora) else {
                return;
            };
            let a_new = new.lora_a.val();
            for name in &self.earlier {
                let Some(old) = layer.adapter(name).and_then(Adapter::as_lora) else {
                    continue;
                };
                let overlap = old.lora_a.val().detach().transpose().matmul(a_new.clone());
                let term = overlap.abs().sum();
                total = Some(match total.take() {
                    Some(t) => t + term,
                    None => term,
                });
            }
        });
        total.map(|t| t * self.lambda as f32)
    }
}
