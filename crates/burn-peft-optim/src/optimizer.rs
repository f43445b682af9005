//! [`PeftOptimizer`]: burn's AdamW with LoRA+ groups, a schedule, global-norm clipping,
//! accumulation and exact save/resume.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use burn_peft_core::format::{
    NamedTensor, check_shape, ensure_all_used, read_safetensors, take_tensor, write_atomic,
    write_safetensors,
};
use burn_peft_core::{PeftError, Result};
use serde::{Deserialize, Serialize};

use crate::buckets::{BucketedAdamW, ParamState};
use crate::params::{NewLeaves, trainable_params};
use crate::schedule::{LrSchedule, ScheduleKind};

/// Hyper-parameters of a fine-tuning optimizer, named and defaulted as HF `TrainingArguments`
/// (AdamW, linear schedule, no warm-up, clipping at norm 1) except the learning rate, whose
/// default is the usual LoRA one.
///
/// ```
/// use burn_peft_optim::{PeftOptimizerConfig, ScheduleKind};
/// let config = PeftOptimizerConfig::new(1000)
///     .with_learning_rate(1e-4)
///     .with_lr_scheduler_type(ScheduleKind::Cosine)
///     .with_warmup_steps(50)
///     .with_loraplus_lr_ratio(Some(16.0));
/// assert_eq!(config.max_grad_norm, Some(1.0));
/// ```
#[derive(Config, Debug)]
pub struct PeftOptimizerConfig {
    /// Optimizer steps in the whole run (the schedule's length).
    pub total_steps: usize,
    /// Peak learning rate.
    #[config(default = 2e-4)]
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW).
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Adam's β₁.
    #[config(default = 0.9)]
    pub adam_beta1: f32,
    /// Adam's β₂.
    #[config(default = 0.999)]
    pub adam_beta2: f32,
    /// Adam's ε.
    #[config(default = 1e-8)]
    pub adam_epsilon: f32,
    /// What the learning rate does after the warm-up.
    #[config(default = "ScheduleKind::Linear")]
    pub lr_scheduler_type: ScheduleKind,
    /// Steps of linear warm-up from zero.
    #[config(default = 0)]
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this (`None`: no clipping).
    #[config(default = "Some(1.0)")]
    pub max_grad_norm: Option<f32>,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    #[config(default = 1)]
    pub gradient_accumulation_steps: usize,
    /// LoRA+: the learning rate of the `lora_b` matrices is this times the base one
    /// (Hayou et al. 2024 recommend 16). `None`: one learning rate for all.
    #[config(default = "None")]
    pub loraplus_lr_ratio: Option<f64>,
    /// Dynamic loss scaling, for training in f16 (`None`: off).
    #[config(default = "None")]
    pub loss_scale: Option<LossScaleConfig>,
}

/// Dynamic loss scaling for f16 training, with the defaults of PyTorch's `GradScaler`.
///
/// The loss is multiplied by the scale before the backward pass, so that small gradients do not
/// underflow in f16; the gradients are divided by it before clipping and the update. A step
/// whose gradients overflowed (a non-finite norm) is skipped and the scale multiplied by
/// `backoff_factor`; after `growth_interval` good steps in a row it is multiplied by
/// `growth_factor`.
///
/// ```
/// use burn_peft_optim::{LossScaleConfig, PeftOptimizerConfig};
/// let config = PeftOptimizerConfig::new(100).with_loss_scale(Some(LossScaleConfig::new()));
/// let optim = config.init::<burn::nn::Linear>().unwrap();
/// assert_eq!(optim.loss_scale(), Some(65536.0));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct LossScaleConfig {
    /// The first scale.
    #[config(default = 65536.0)]
    pub init_scale: f32,
    /// What the scale is multiplied by after `growth_interval` good steps.
    #[config(default = 2.0)]
    pub growth_factor: f32,
    /// What the scale is multiplied by after a step with non-finite gradients.
    #[config(default = 0.5)]
    pub backoff_factor: f32,
    /// Good steps in a row before the scale grows.
    #[config(default = 2000)]
    pub growth_interval: usize,
}

impl PeftOptimizerConfig {
    /// The peak learning rate a run takes when none is given: 2e-4 for adapters (PEFT's
    /// recipes, and this config's default), 2e-5 when every weight trains (HF's full
    /// fine-tuning recipes: a full model moves much further per step).
    ///
    /// ```
    /// use burn_peft_optim::PeftOptimizerConfig;
    /// assert_eq!(PeftOptimizerConfig::default_learning_rate(false), 2e-4);
    /// assert_eq!(PeftOptimizerConfig::default_learning_rate(true), 2e-5);
    /// ```
    pub fn default_learning_rate(full_fine_tuning: bool) -> f64 {
        if full_fine_tuning { 2e-5 } else { 2e-4 }
    }

    /// Checks the values and builds the optimizer for a model of type `M`.
    pub fn init<M: Module>(&self) -> Result<PeftOptimizer<M>> {
        let bad = |m: String| Err(PeftError::InvalidConfig(m));
        if self.total_steps == 0 {
            return bad("total_steps must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!("learning rate {} must be > 0", self.learning_rate));
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps must be at least 1".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay {} must be >= 0", self.weight_decay));
        }
        if let Some(n) = self.max_grad_norm
            && !(n.is_finite() && n > 0.0)
        {
            return bad(format!("max_grad_norm {n} must be > 0"));
        }
        if let Some(r) = self.loraplus_lr_ratio
            && !(r.is_finite() && r > 0.0)
        {
            return bad(format!("loraplus_lr_ratio {r} must be > 0"));
        }
        if !(0.0..1.0).contains(&self.adam_beta1) || !(0.0..1.0).contains(&self.adam_beta2) {
            return bad("Adam betas must be in [0, 1)".into());
        }
        if let Some(ls) = &self.loss_scale
            && !(ls.init_scale.is_finite()
                && ls.init_scale > 0.0
                && ls.growth_factor >= 1.0
                && ls.backoff_factor > 0.0
                && ls.backoff_factor < 1.0
                && ls.growth_interval > 0)
        {
            return bad(format!(
                "loss scaling needs init_scale > 0, growth_factor >= 1, backoff_factor in (0, 1) \
                 and growth_interval >= 1, got {ls:?}"
            ));
        }
        Ok(PeftOptimizer {
            optim: BucketedAdamW::new(self.adamw()),
            accumulator: GradientsAccumulator::new(),
            pending: 0,
            step: 0,
            scaler: self.loss_scale.as_ref().map(|c| Scaler {
                scale: c.init_scale,
                good_steps: 0,
            }),
            config: self.clone(),
            phantom: PhantomData,
        })
    }

    fn adamw(&self) -> burn::optim::AdamW {
        AdamWConfig::new()
            .with_beta_1(self.adam_beta1)
            .with_beta_2(self.adam_beta2)
            .with_epsilon(self.adam_epsilon)
            .with_weight_decay(self.weight_decay)
            .build()
    }

    /// The schedule of the base group.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule::new(
            self.lr_scheduler_type,
            self.learning_rate,
            self.warmup_steps,
            self.total_steps,
        )
    }
}

fn scale_loss(loss: Tensor<1>, accum: usize, scale: Option<f32>) -> Tensor<1> {
    let loss = if accum > 1 { loss / accum as f32 } else { loss };
    match scale {
        Some(s) => loss * s,
        None => loss,
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Optimizer steps taken, this one included.
    pub step: usize,
    /// The base learning rate of this step.
    pub lr: f64,
    /// The global gradient norm before clipping (infinite or NaN on a skipped step). `None`
    /// when nothing needed it: no clipping (`max_grad_norm` `None`) and no loss scaling. As in
    /// HF's Trainer with `max_grad_norm=0`, it is then not computed, which spares a reduction
    /// and a wait for the device on every step.
    pub grad_norm: Option<f32>,
    /// The root mean square of the trained parameters' values before this step's update (read
    /// back with the gradient norm): what the trainer watches for a divergence that the loss
    /// does not show yet.
    pub weight_rms: f32,
    /// Whether the update was skipped because the loss-scaled gradients overflowed.
    pub skipped: bool,
}

/// The optimizer state of a fine-tuning run over a model of type `M`.
///
/// Call [`backward_step`](Self::backward_step) with each micro-batch's loss; every
/// `gradient_accumulation_steps` calls it clips, updates the model and returns a
/// [`StepReport`]. Only parameters that get a gradient (the adapters, or everything after
/// [`make_trainable`](crate::make_trainable)) are touched and hold state.
///
/// ```
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_optim::PeftOptimizerConfig;
///
/// let device = Device::flex().autodiff();
/// let mut model = LinearConfig::new(4, 1).init(&device);
/// let mut optim = PeftOptimizerConfig::new(20)
///     .with_learning_rate(0.05)
///     .init::<Linear>()
///     .unwrap();
/// let x = Tensor::<2>::ones([8, 4], &device);
/// let loss = |m: &Linear| (m.forward(x.clone()) - 1.0).square().mean();
/// let first = loss(&model).into_scalar::<f32>();
/// for _ in 0..20 {
///     let l = loss(&model);
///     let (m, _report) = optim.backward_step(model, l);
///     model = m;
/// }
/// assert!(loss(&model).into_scalar::<f32>() < first);
/// ```
pub struct PeftOptimizer<M> {
    optim: BucketedAdamW,
    accumulator: GradientsAccumulator<M>,
    pending: usize,
    step: usize,
    scaler: Option<Scaler>,
    config: PeftOptimizerConfig,
    phantom: PhantomData<M>,
}

/// The state of dynamic loss scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Scaler {
    scale: f32,
    /// Good steps since the scale last changed.
    good_steps: usize,
}

/// What [`PeftOptimizer::save`] writes next to the moments.
#[derive(Serialize, Deserialize)]
struct SavedState {
    step: usize,
    /// Every trainable parameter's path -> the Adam steps it has taken (0: none, so no
    /// moments in the file).
    adam_steps: BTreeMap<String, usize>,
    /// Loss scaling's state, when it is on.
    #[serde(default)]
    scaler: Option<Scaler>,
}

const MOMENTS_FILE: &str = "optimizer.safetensors";
/// What burn-peft wrote before the moments moved to safetensors.
const OLD_RECORD_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "optimizer_state.json";
const FIRST_MOMENT: &str = "exp_avg";
const SECOND_MOMENT: &str = "exp_avg_sq";

impl<M: Module> PeftOptimizer<M> {
    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// Micro-batches accumulated since the last optimizer step.
    pub fn pending_micro_batches(&self) -> usize {
        self.pending
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &PeftOptimizerConfig {
        &self.config
    }

    /// The current loss scale, when loss scaling is on.
    pub fn loss_scale(&self) -> Option<f32> {
        self.scaler.map(|s| s.scale)
    }

    /// The base learning rate the next optimizer step will use.
    pub fn next_lr(&self) -> f64 {
        self.config.schedule().lr_at(self.step)
    }

    /// Back-propagates one micro-batch's mean loss. On the last micro-batch of an
    /// accumulation window it averages the gradients, clips them and steps.
    pub fn backward_step(&mut self, model: M, loss: Tensor<1>) -> (M, Option<StepReport>) {
        let grads = GradientsParams::from_grads(self.scaled_loss(loss).backward(), &model);
        self.accumulate_or_step(model, grads)
    }

    /// [`backward_step`](Self::backward_step) for callers that run the backward passes
    /// themselves: `grads_of(&model, scale)` returns the micro-batch's gradients, where every
    /// loss is passed through `scale` (the division by the accumulation steps, the loss scale)
    /// before its backward pass. For losses that take several backward passes, such as
    /// `Llama::layerwise_gradients` (one per layer) or a penalty's own.
    ///
    /// ```
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::GradientsParams;
    /// use burn::tensor::{Device, Tensor};
    /// use burn_peft_optim::PeftOptimizerConfig;
    ///
    /// let device = Device::flex().autodiff();
    /// let model = LinearConfig::new(4, 1).init(&device);
    /// let mut optim = PeftOptimizerConfig::new(1).init::<Linear>().unwrap();
    /// let x = Tensor::<2>::ones([8, 4], &device);
    /// let (model, report) = optim.backward_step_with(model, |m: &Linear, scale| {
    ///     let loss = (m.forward(x) - 1.0).square().mean();
    ///     GradientsParams::from_grads(scale(loss).backward(), m)
    /// });
    /// assert_eq!(report.unwrap().step, 1);
    /// ```
    pub fn backward_step_with<F>(&mut self, model: M, grads_of: F) -> (M, Option<StepReport>)
    where
        F: FnOnce(&M, &dyn Fn(Tensor<1>) -> Tensor<1>) -> GradientsParams,
    {
        let grads = grads_of(&model, &|loss| self.scaled_loss(loss));
        self.accumulate_or_step(model, grads)
    }

    /// [`backward_step`](Self::backward_step) for a micro-batch whose loss is a sum of parts,
    /// each part's forward and backward pass on a thread of its own.
    ///
    /// The micro-batch's loss is `extra` (a penalty, say) plus `part_loss(model, input)` summed
    /// over `inputs`: weight each part by its share of the micro-batch. The first part and
    /// `extra` run on the calling thread. Every other part runs on its own thread against a
    /// copy of `model` whose trainable parameters are new autodiff leaves over the same
    /// weights (nothing is copied), so the parts' graphs stay apart; their gradients are added
    /// in the order of `inputs`, so the result does not depend on which thread finishes first.
    /// It returns the model, the parts' loss values (detached, before any accumulation or loss
    /// scaling) and, at the end of an accumulation window, the step's report.
    ///
    /// Why: burn-flex runs element-wise operations on one thread and matrix products on all
    /// cores, so one part's element-wise work can overlap another's products. A GPU gains
    /// nothing from it. Anything that draws from the device's random generator (dropout) would
    /// see the threads' draws interleaved, so keep one part when dropout is on.
    ///
    /// ```
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::tensor::{Device, Tensor};
    /// use burn_peft_optim::PeftOptimizerConfig;
    ///
    /// let device = Device::flex().autodiff();
    /// let model = LinearConfig::new(4, 1).init(&device);
    /// let mut optim = PeftOptimizerConfig::new(1).init::<Linear>().unwrap();
    /// let x = Tensor::<2>::ones([8, 4], &device);
    /// // The mean squared error over eight rows, as two halves of four rows each.
    /// let halves = vec![x.clone().slice([0..4]), x.slice([4..8])];
    /// let part = |m: &Linear, x: Tensor<2>| (m.forward(x) - 1.0).square().mean() * 0.5;
    /// let (model, losses, report) = optim.backward_step_parallel(model, halves, None, part);
    /// assert_eq!(losses.len(), 2);
    /// assert_eq!(report.unwrap().step, 1);
    /// ```
    pub fn backward_step_parallel<T, F>(
        &mut self,
        model: M,
        inputs: Vec<T>,
        extra: Option<Tensor<1>>,
        part_loss: F,
    ) -> (M, Vec<Tensor<1>>, Option<StepReport>)
    where
        T: Send,
        F: Fn(&M, T) -> Tensor<1> + Sync,
    {
        // First, so that its graph (a distillation's whole forward pass, say) is freed before
        // the parts record their own. A penalty that records nothing (no trainable parameter
        // in it) has no gradient.
        let extra = extra
            .filter(Tensor::is_tracked)
            .map(|extra| GradientsParams::from_grads(self.scaled_loss(extra).backward(), &model));
        self.backward_step_parallel_with(model, inputs, extra, |m, input, scale| {
            let loss = part_loss(m, input);
            let grads = GradientsParams::from_grads(scale(loss.clone()).backward(), m);
            (loss.detach(), grads)
        })
    }

    /// [`backward_step_parallel`](Self::backward_step_parallel) for parts that run their
    /// backward passes themselves, as [`backward_step_with`](Self::backward_step_with) does
    /// for one: `part_grads(model, input, scale)` returns the part's loss (detached) and the
    /// gradients of `scale(loss)`. `extra` holds gradients the caller computed itself (a
    /// penalty's, from a loss passed through [`scaled_loss`](Self::scaled_loss)); they are
    /// added before the parts'.
    ///
    /// ```
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::optim::GradientsParams;
    /// use burn::tensor::{Device, Tensor};
    /// use burn_peft_optim::PeftOptimizerConfig;
    ///
    /// let device = Device::flex().autodiff();
    /// let model = LinearConfig::new(4, 1).init(&device);
    /// let mut optim = PeftOptimizerConfig::new(1).init::<Linear>().unwrap();
    /// let x = Tensor::<2>::ones([8, 4], &device);
    /// let halves = vec![x.clone().slice([0..4]), x.slice([4..8])];
    /// let part = |m: &Linear, x: Tensor<2>, scale: &dyn Fn(Tensor<1>) -> Tensor<1>| {
    ///     let loss = (m.forward(x) - 1.0).square().mean() * 0.5;
    ///     let grads = GradientsParams::from_grads(scale(loss.clone()).backward(), m);
    ///     (loss.detach(), grads)
    /// };
    /// let (model, losses, report) = optim.backward_step_parallel_with(model, halves, None, part);
    /// assert_eq!(losses.len(), 2);
    /// assert_eq!(report.unwrap().step, 1);
    /// ```
    pub fn backward_step_parallel_with<T, F>(
        &mut self,
        model: M,
        inputs: Vec<T>,
        extra: Option<GradientsParams>,
        part_grads: F,
    ) -> (M, Vec<Tensor<1>>, Option<StepReport>)
    where
        T: Send,
        F: Fn(&M, T, &dyn Fn(Tensor<1>) -> Tensor<1>) -> (Tensor<1>, GradientsParams) + Sync,
    {
        let mut inputs = inputs.into_iter();
        let first = inputs.next();
        let (accum, scale) = (
            self.config.gradient_accumulation_steps,
            self.scaler.map(|s| s.scale),
        );
        let scaled = move |loss| scale_loss(loss, accum, scale);
        let part_grads = &part_grads;
        let (grads, losses) = std::thread::scope(|scope| {
            let others: Vec<_> = inputs
                .map(|input| {
                    let fork = model.clone().map(&mut NewLeaves);
                    scope.spawn(move || part_grads(&fork, input, &scaled))
                })
                .collect();
            let mut losses = Vec::new();
            let mut sum = GradientsAccumulator::<M>::new();
            if let Some(grads) = extra {
                sum.accumulate(&model, grads);
            }
            if let Some(input) = first {
                let (loss, grads) = part_grads(&model, input, &scaled);
                losses.push(loss);
                sum.accumulate(&model, grads);
            }
            for handle in others {
                let (loss, grads) = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                losses.push(loss);
                sum.accumulate(&model, grads);
            }
            (sum.grads(), losses)
        });
        let (model, report) = self.accumulate_or_step(model, grads);
        (model, losses, report)
    }

    /// The loss as it is back-propagated: divided by the accumulation steps, times the loss
    /// scale. The `scale` that [`backward_step_with`](Self::backward_step_with) hands out, for
    /// gradients computed outside it (`extra` of
    /// [`backward_step_parallel_with`](Self::backward_step_parallel_with)).
    ///
    /// ```
    /// use burn::nn::{Linear, LinearConfig};
    /// use burn::tensor::{Device, Tensor};
    /// use burn_peft_optim::PeftOptimizerConfig;
    ///
    /// let device = Device::flex().autodiff();
    /// let config = PeftOptimizerConfig::new(1).with_gradient_accumulation_steps(4);
    /// let optim = config.init::<Linear>().unwrap();
    /// let loss = Tensor::<1>::from_floats([2.0], &device);
    /// assert_eq!(optim.scaled_loss(loss).into_scalar::<f32>(), 0.5);
    /// ```
    pub fn scaled_loss(&self, loss: Tensor<1>) -> Tensor<1> {
        scale_loss(
            loss,
            self.config.gradient_accumulation_steps,
            self.scaler.map(|s| s.scale),
        )
    }

    fn accumulate_or_step(&mut self, model: M, grads: GradientsParams) -> (M, Option<StepReport>) {
        let accum = self.config.gradient_accumulation_steps;
        self.pending += 1;
        if self.pending < accum {
            self.accumulator.accumulate(&model, grads);
            return (model, None);
        }
        let grads = if accum > 1 {
            self.accumulator.accumulate(&model, grads);
            self.accumulator.grads()
        } else {
            grads
        };
        self.pending = 0;
        let (model, report) = self.apply(model, grads);
        (model, Some(report))
    }

    /// Clips `grads` and takes one optimizer step with them (for callers that compute gradients
    /// themselves, e.g. with extra penalty terms). With loss scaling on, `grads` are those of
    /// the scaled loss: they are unscaled here, and a step whose gradients overflowed is
    /// skipped (it still counts as a step of the schedule, as in HF's Trainer).
    pub fn apply(&mut self, model: M, grads: GradientsParams) -> (M, StepReport) {
        let unscale = self.scaler.map_or(1.0, |s| 1.0 / s.scale);
        let schedule = self.config.schedule();
        let base_lr = schedule.lr_at(self.step);
        // LoRA+: the B matrices follow the same schedule from a scaled peak.
        let b_lr = self
            .config
            .loraplus_lr_ratio
            .map(|ratio| schedule.scaled(ratio).lr_at(self.step));
        let lr_of = |path: &str| match b_lr {
            Some(lr) if path.contains("lora_b") => lr,
            _ => base_lr,
        };
        let mut gathered = self.optim.gather(&model, grads, &lr_of);
        let with_grad = self.config.max_grad_norm.is_some() || self.scaler.is_some();
        let (grad_norm, weight_rms) = gathered.norms(with_grad).unwrap_or((Some(0.0), 0.0));
        let grad_norm = grad_norm.map(|n| n * unscale);
        let skipped = grad_norm.is_some_and(|n| !n.is_finite()) && self.scaler.is_some();
        if let (Some(scaler), Some(config)) = (&mut self.scaler, &self.config.loss_scale) {
            if skipped {
                scaler.scale *= config.backoff_factor;
                scaler.good_steps = 0;
            } else {
                scaler.good_steps += 1;
                if scaler.good_steps == config.growth_interval {
                    scaler.scale *= config.growth_factor;
                    scaler.good_steps = 0;
                }
            }
        }
        self.step += 1;
        let report = StepReport {
            step: self.step,
            lr: base_lr,
            grad_norm,
            weight_rms,
            skipped,
        };
        if skipped {
            self.optim.keep(gathered);
            return (model, report);
        }
        // PyTorch's clip_grad_norm_: scale down when the norm exceeds the maximum (1e-6 guard).
        let clip = match (self.config.max_grad_norm, grad_norm) {
            (Some(max), Some(norm)) => (max / (norm + 1e-6)).min(1.0),
            _ => 1.0,
        };
        if unscale * clip != 1.0 {
            gathered.scale(unscale * clip);
        }
        let model = self.optim.update(model, gathered);
        (model, report)
    }

    /// Writes the optimizer state into `dir`, each file atomically: `optimizer.safetensors`
    /// (Adam's moments, `<parameter path>.exp_avg` and `.exp_avg_sq` in the parameter's
    /// shape, as PyTorch names them) and `optimizer_state.json` (the step, each parameter's
    /// Adam step count, loss scaling).
    ///
    /// Refused in the middle of an accumulation window, where the partial gradients would be
    /// lost.
    pub fn save(&self, model: &M, dir: &Path) -> Result<()> {
        if self.pending > 0 {
            return Err(PeftError::InvalidConfig(format!(
                "cannot save the optimizer after {} of {} accumulated micro-batches: save at an \
                 optimizer step",
                self.pending, self.config.gradient_accumulation_steps
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
        let mut states = self.optim.states();
        let mut moments = BTreeMap::new();
        let mut adam_steps = BTreeMap::new();
        for (path, param) in trainable_params(model) {
            let time = match states.remove(&param.id) {
                Some(state) => {
                    let host = |t: Tensor<1>| NamedTensor {
                        shape: param.dims.clone(),
                        ..NamedTensor::from_tensor(t)
                    };
                    moments.insert(format!("{path}.{FIRST_MOMENT}"), host(state.moment_1));
                    moments.insert(format!("{path}.{SECOND_MOMENT}"), host(state.moment_2));
                    state.time
                }
                None => 0,
            };
            adam_steps.insert(path, time);
        }
        write_safetensors(&dir.join(MOMENTS_FILE), &moments)?;
        let state = SavedState {
            step: self.step,
            adam_steps,
            scaler: self.scaler,
        };
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| PeftError::format(dir.join(STATE_FILE), e))?;
        write_atomic(&dir.join(STATE_FILE), json.as_bytes())
    }

    /// Restores the state [`save`](Self::save) wrote, for `model` built and loaded the same way
    /// (same adapters, same trainable parameters): parameters are matched by path, so a model
    /// loaded afresh continues exactly. Returns the model unchanged.
    pub fn load(&mut self, model: M, dir: &Path) -> Result<M> {
        let state_path = dir.join(STATE_FILE);
        if dir.join(OLD_RECORD_FILE).exists() && !dir.join(MOMENTS_FILE).exists() {
            return Err(PeftError::format(
                dir.join(OLD_RECORD_FILE),
                "optimizer state from a burn-peft before 2026-11-28 (burn's record), which this \
                 version does not read: start the run again without resuming",
            ));
        }
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| PeftError::io(&state_path, e))?;
        let state: SavedState =
            serde_json::from_str(&text).map_err(|e| PeftError::format(&state_path, e))?;
        if let Some((path, steps)) = state.adam_steps.iter().find(|(_, n)| **n > state.step) {
            return Err(PeftError::format(
                &state_path,
                format!(
                    "'{path}' has {steps} Adam steps, more than the {} taken",
                    state.step
                ),
            ));
        }
        let current = trainable_params(&model);
        if current.len() != state.adam_steps.len()
            || current.keys().any(|k| !state.adam_steps.contains_key(k))
        {
            // Both directions: a parameter the state lacks, or one the model lacks.
            let not_saved: Vec<&String> = current
                .keys()
                .filter(|k| !state.adam_steps.contains_key(*k))
                .take(3)
                .collect();
            let not_in_model: Vec<&String> = state
                .adam_steps
                .keys()
                .filter(|k| !current.contains_key(*k))
                .take(3)
                .collect();
            return Err(PeftError::format(
                &state_path,
                format!(
                    "the saved state covers {} trainable parameters, the model has {} \
                     (in the model only: {not_saved:?}; in the state only: {not_in_model:?})",
                    state.adam_steps.len(),
                    current.len()
                ),
            ));
        }
        let moments_path = dir.join(MOMENTS_FILE);
        let mut moments = read_safetensors(&moments_path)?;
        let mut states = HashMap::new();
        for (path, param) in &current {
            let time = state.adam_steps[path];
            if time == 0 {
                continue;
            }
            let numel = param.dims.iter().product::<usize>();
            let mut take = |which: &str| -> Result<Tensor<1>> {
                let key = format!("{path}.{which}");
                let t = take_tensor(&mut moments, &moments_path, &key)?;
                check_shape(&key, &t, &param.dims)?;
                let flat = Tensor::<1>::from_data(TensorData::new(t.data, [numel]), &param.device);
                Ok(flat.cast(param.dtype))
            };
            states.insert(
                param.id,
                ParamState {
                    time,
                    moment_1: take(FIRST_MOMENT)?,
                    moment_2: take(SECOND_MOMENT)?,
                },
            );
        }
        ensure_all_used(&moments, &moments_path)?;
        self.optim.set_states(states);
        self.step = state.step;
        if self.scaler.is_some() {
            self.scaler = state.scaler.or(self.scaler);
        }
        self.pending = 0;
        self.accumulator = GradientsAccumulator::new();
        Ok(model)
    }
}
