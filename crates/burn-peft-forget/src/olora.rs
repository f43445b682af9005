//! O-LoRA: each task of a sequence learns its own LoRA, kept orthogonal to the earlier ones.

use burn::tensor::{Device, Tensor};
use burn_peft_adapters::{Adapter, AddAdapter, LoraInit};
use burn_peft_train::{Regularizer, Result, SplitMix64, TrainError};

/// O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
/// Learning") over a sequence of tasks
/// ([`Trainer::fit_sequence`](burn_peft_train::Trainer::fit_sequence)):
///
/// - before each task but the first, the adapter that just learned a task joins the earlier
///   tasks' adapters in one frozen, active adapter `<adapter>-earlier-<tasks>`, their
///   concatenation ([`AddAdapter::add_concatenated_lora`], with each task's scaling folded into
///   its `A`), and `<adapter>` starts again from a fresh LoRA with the same config (a new
///   seed). The forward pass then holds two LoRA paths however many tasks came before, as
///   O-LoRA's code concatenates after each task;
/// - while a task trains, the penalty `λ · Σ_layers Σ_earlier |A_earlierᵀ · A_new|` (the sum of
///   absolute values, as O-LoRA's code writes it, with each earlier `A` unscaled) pushes the
///   new adapter's input subspace away from the earlier ones, so what it learns disturbs what
///   they learned less. Over the joined adapter it is one product per layer;
/// - after the last task, its adapter joins the others under the name `<adapter>`, so the
///   run's output is one ordinary PEFT LoRA directory of rank `r · tasks`.
///
/// The earlier adapter is the only state, and it lives in the model, so a resumed sequence
/// rebuilds it from the finished tasks' directories. O-LoRA's optional L2 term on the new
/// adapter is left out (its published runs set it to 0). On a single task (no sequence)
/// nothing changes: there is no earlier adapter. DoRA and PiSSA are refused.
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
    /// The frozen adapter that holds the finished tasks, and how many it holds.
    earlier: Option<(String, usize)>,
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
            earlier: None,
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

    /// The frozen adapter that holds the tasks learned so far (`<adapter>-earlier-<tasks>`),
    /// if a task has finished.
    pub fn earlier_adapter(&self) -> Option<&str> {
        self.earlier.as_ref().map(|(name, _)| name.as_str())
    }

    /// Joins the trained adapter, as it is, to the earlier tasks' adapter (if any), as one
    /// adapter of the next name; the trained adapter and the old earlier one are deleted.
    fn keep<M: AddAdapter>(&mut self, model: &mut M) -> Result<String> {
        let tasks = self.earlier.as_ref().map_or(0, |(_, n)| *n) + 1;
        let joined = format!("{}-earlier-{tasks}", self.adapter);
        let mut parts: Vec<(&str, f64)> = Vec::with_capacity(2);
        if let Some((name, _)) = &self.earlier {
            parts.push((name, 1.0));
        }
        parts.push((&self.adapter, 1.0));
        model.add_concatenated_lora(&joined, &parts)?;
        for (name, _) in &parts {
            model.delete_adapter(name)?;
        }
        self.earlier = Some((joined.clone(), tasks));
        Ok(joined)
    }

    fn lora_config<M: AddAdapter>(&self, model: &M) -> Result<burn_peft_adapters::LoraConfig> {
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

impl<M: AddAdapter> Regularizer<M> for OLora {
    fn name(&self) -> String {
        "olora".into()
    }

    fn prepare(&mut self, model: &M, _device: &Device) -> Result<()> {
        self.lora_config(model).map(|_| ())
    }

    fn begin_task(&mut self, mut model: M, task: usize) -> Result<M> {
        let mut config = self.lora_config(&model)?;
        if task == 0 {
            return Err(TrainError::Config(
                "O-LoRA's first task has no earlier adapter to keep".into(),
            ));
        }
        let earlier = self.keep(&mut model)?;
        // A fresh start that differs from every earlier task's.
        config.init_seed = self
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, &format!("olora-task-{task}")).next_u64());
        model.add_lora(&self.adapter, &config)?;
        model.set_adapter(&[&earlier, &self.adapter])?;
        model.set_requires_grad(&[&earlier], false)?;
        Ok(model)
    }

    fn end_sequence(&mut self, mut model: M) -> Result<M> {
        if self.earlier.is_none() {
            return Ok(model);
        }
        // The last task joins the others, which frees the run's own name for the result, so
        // that the final save writes it.
        self.lora_config(&model)?;
        let all = self.keep(&mut model)?;
        model.add_concatenated_lora(&self.adapter, &[(&all, 1.0)])?;
        model.delete_adapter(&all)?;
        model.set_adapter(&[&self.adapter])?;
        self.earlier = None;
        Ok(model)
    }

    fn penalty(&mut self, model: &M, _rng: &mut SplitMix64) -> Option<Tensor<1>> {
        let (earlier, _) = self.earlier.as_ref()?;
        if self.lambda == 0.0 {
            return None;
        }
        let mut total: Option<Tensor<1>> = None;
        model.clone().visit_adapted_linears(&mut |_, layer| {
            let (Some(new), Some(old)) = (
                layer.adapter(&self.adapter).and_then(Adapter::as_lora),
                layer.adapter(earlier).and_then(Adapter::as_lora),
            ) else {
                return;
            };
            // The joined A holds each task's A times its scaling on this layer, which is the
            // new adapter's (one config for every task): divided out, the A are unscaled. Its
            // size only: a negative alpha must not turn the penalty into a reward.
            if new.scaling == 0.0 {
                return;
            }
            let overlap = old
                .lora_a
                .val()
                .detach()
                .transpose()
                .matmul(new.lora_a.val());
            let term = overlap.abs().sum().div_scalar(new.scaling.abs());
            total = Some(match total.take() {
                Some(t) => t + term,
                None => term,
            });
        });
        total.map(|t| t * self.lambda as f32)
    }
}
