//! The fine-tuning loop: batches, optimizer steps, evaluation, progress, metrics, checkpoints
//! and resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::tensor::Device;
use burn_peft_core::format::{remove_stale_temporaries, temporary_owner, write_atomic};
use burn_peft_optim::{PeftOptimizer, trainable_weight_rms};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::batch::{Batch, BatcherState, collate, split_evenly};
use crate::data::{Dataset, Sample};
use crate::error::TrainError;

/// Kept apart from `Result`: burn's `Config` derive expands to code that names `Result`.
type R<T> = crate::error::Result<T>;
use crate::Batcher;
use crate::eval::{EvalMetrics, evaluate};
use crate::metrics::{MetricsLog, plot_metrics, step_record};
use burn_peft_models::CausalLm;

use crate::model::{batch_gradients, batch_loss};
use crate::regularizer::Regularizer;
use crate::weights::WeightsIo;
use burn_peft_core::SplitMix64;

/// How long and how to train; optimizer settings live in `PeftOptimizerConfig`.
///
/// ```
/// use burn_peft_train::TrainConfig;
/// let config = TrainConfig::new(200, 8).with_eval_every(50).with_save_every(50);
/// assert_eq!(config.seed, 42);
/// ```
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Samples per micro-batch (an optimizer step takes `gradient_accumulation_steps` of them).
    pub batch_size: usize,
    /// Evaluate every this many steps (0: only before and after training).
    #[config(default = 0)]
    pub eval_every: usize,
    /// Write a checkpoint every this many steps (0: none).
    #[config(default = 0)]
    pub save_every: usize,
    /// Checkpoints kept on disk (the oldest are deleted).
    #[config(default = 2)]
    pub keep_checkpoints: usize,
    /// Samples per evaluation batch.
    #[config(default = 8)]
    pub eval_batch_size: usize,
    /// Seed of the data order and of dropout.
    #[config(default = 42)]
    pub seed: u64,
    /// Draw a progress bar on a terminal.
    #[config(default = true)]
    pub progress: bool,
    /// Splits each micro-batch into this many slices whose forward and backward passes run on
    /// threads of their own (see [`PeftOptimizer::backward_step_parallel`]). On a CPU with
    /// burn-flex this overlaps one slice's single-threaded element-wise work with another's
    /// multi-threaded matrix products; on a GPU keep 1. Dropout would draw its masks from one
    /// generator in whatever order the threads reach it, so runs with dropout are reproducible
    /// with 1 only. Evaluation scores this many batches at a time too (same metrics), unless
    /// `eval_threads` says otherwise.
    #[config(default = 1)]
    pub batch_threads: usize,
    /// Batches that evaluation scores at a time, on threads of their own; `None`: as many as
    /// `batch_threads`. Evaluation keeps no gradients and draws no dropout, so it can use
    /// threads where training keeps one (full fine-tuning, whose slices would each hold a
    /// gradient of every weight; dropout). The metrics do not depend on it.
    #[config(default = "None")]
    pub eval_threads: Option<usize>,
    /// Keep only each decoder layer's input in the forward pass and recompute the layer in
    /// the backward pass (see [`CausalLm::layerwise_gradients`]), as HF's
    /// `gradient_checkpointing_enable()` does: a step holds one layer's activations instead of
    /// all of them, for one more forward pass of the layers. Dropout masks are then seeded per
    /// slice and layer, so runs with dropout are reproducible on any `batch_threads`.
    #[config(default = false)]
    pub checkpoint_layers: bool,
}

impl TrainConfig {
    /// The batches evaluation scores at a time: `eval_threads`, else `batch_threads`.
    pub fn eval_threads(&self) -> usize {
        self.eval_threads.unwrap_or(self.batch_threads)
    }
}

/// What a finished run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Mean training loss of the last step.
    pub final_loss: f64,
    /// Evaluation before training (absent when resumed).
    pub eval_before: Option<EvalMetrics>,
    /// Evaluation after training.
    pub eval_after: Option<EvalMetrics>,
    /// Loss on the general text before training (see [`Trainer::with_general_eval`]).
    pub general_loss_before: Option<f64>,
    /// Loss on the general text after training.
    pub general_loss_after: Option<f64>,
    /// `general_loss_after - general_loss_before`: how much of the old skill was lost.
    pub forgetting: Option<f64>,
    /// Training wall time over all sessions of the run, evaluation excluded.
    pub train_seconds: f64,
    /// Tokens (padding excluded) per second of training.
    pub tokens_per_s: f64,
    /// Wall time of this session's first step. On a GPU it includes compiling and autotuning
    /// the kernels (cubecl caches both on disk, so a second run starts faster); `None` when no
    /// step was left to take.
    #[serde(default)]
    pub first_step_seconds: Option<f64>,
    /// Where the weights were written.
    pub output: PathBuf,
}

/// How many times the trained weights' root mean square may grow over a run's start before the
/// run is stopped as diverged. Adam moves each weight by about the learning rate per step, so a
/// sound run grows its adapter weights by a small factor; a learning rate of 10⁶ grows them
/// ten-million-fold while the loss can stay finite.
pub const WEIGHT_GROWTH_LIMIT: f32 = 1000.0;

/// `trainer_state.json` in a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    batcher: BatcherState,
    tokens: usize,
    train_seconds: f64,
    seed: u64,
    batch_size: usize,
    samples: usize,
    before: Evals,
    /// The trained weights' root mean square at the run's first step (the divergence watch's
    /// reference); absent in checkpoints written before it existed.
    #[serde(default)]
    start_weight_rms: Option<f32>,
}

/// The evaluations at one point of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Evals {
    task: Option<EvalMetrics>,
    general: Option<EvalMetrics>,
}

impl Evals {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.task {
            parts.push(describe(t));
        }
        if let Some(g) = &self.general {
            parts.push(format!("general-text loss {:.4}", g.loss));
        }
        parts.join("; ")
    }
}

/// What a run carries from one step to the next.
struct RunState {
    batcher: Batcher,
    tokens: usize,
    train_seconds: f64,
    metrics: MetricsLog,
    before: Evals,
    final_loss: f64,
    first_step_seconds: Option<f64>,
    start_weight_rms: Option<f32>,
}

impl RunState {
    fn new(
        batcher: Batcher,
        tokens: usize,
        train_seconds: f64,
        metrics: MetricsLog,
        before: Evals,
    ) -> Self {
        Self {
            batcher,
            tokens,
            train_seconds,
            metrics,
            before,
            final_loss: f64::NAN,
            first_step_seconds: None,
            start_weight_rms: None,
        }
    }

    /// A divergence the loss does not show yet: gradients that are not finite (outside loss
    /// scaling's skipped steps), or trained weights whose root mean square (`rms`: before
    /// the step's update, or of the model about to be saved) grew [`WEIGHT_GROWTH_LIMIT`]
    /// times past the run's start (at least 0.01).
    fn watch(
        &mut self,
        report: &burn_peft_optim::StepReport,
        rms: f32,
    ) -> std::result::Result<(), TrainError> {
        let start = *self.start_weight_rms.get_or_insert(report.weight_rms);
        let diverged = |what: String| TrainError::WeightsDiverged {
            step: report.step,
            what,
        };
        if let Some(norm) = report
            .grad_norm
            .filter(|n| !n.is_finite() && !report.skipped)
        {
            return Err(diverged(format!("the gradient norm became {norm}")));
        }
        let limit = WEIGHT_GROWTH_LIMIT * start.max(0.01);
        if !(rms.is_finite() && rms <= limit) {
            return Err(diverged(format!(
                "the trained weights' root mean square grew from {start:.3e} to {rms:.3e}"
            )));
        }
        Ok(())
    }

    /// What a checkpoint after `step` records.
    fn state(&self, step: usize, config: &TrainConfig, train: &Dataset) -> TrainerState {
        TrainerState {
            step,
            batcher: self.batcher.state(),
            tokens: self.tokens,
            train_seconds: self.train_seconds,
            seed: config.seed,
            batch_size: config.batch_size,
            samples: train.samples.len(),
            before: self.before.clone(),
            start_weight_rms: self.start_weight_rms,
        }
    }
}

/// What one optimizer step did.
struct StepOutcome {
    report: burn_peft_optim::StepReport,
    /// Mean training loss over the micro-batches.
    loss: f64,
    /// Mean penalty over the micro-batches (0 without a regularizer).
    penalty: f64,
    tokens: usize,
}

/// Scores a model on the run's evaluation sets.
struct Evaluator<'a> {
    batch_size: usize,
    threads: usize,
    task: Option<&'a Dataset>,
    general: Option<&'a Dataset>,
    pad_id: u32,
    device: Device,
}

impl Evaluator<'_> {
    fn run<M: CausalLm>(&self, model: &M) -> R<Evals> {
        let valid = model.valid();
        let score = |d: &Dataset| {
            evaluate(
                &valid,
                d,
                self.batch_size,
                self.pad_id,
                &self.device,
                self.threads,
            )
        };
        Ok(Evals {
            task: self.task.map(score).transpose()?,
            general: self.general.map(score).transpose()?,
        })
    }
}

const CHECKPOINTS: &str = "checkpoints";
const LATEST: &str = "latest";
const STATE: &str = "trainer_state.json";
const METRICS: &str = "metrics.jsonl";

/// Runs fine-tuning into an output directory.
///
/// `out` receives the final weights (through [`WeightsIo::save`]), `metrics.jsonl`,
/// `loss.svg`, `train_summary.json` and `checkpoints/step-NNNNNN/` (weights, optimizer state,
/// data position), each written atomically. With `resume`, it continues from the latest
/// checkpoint in `out` and reproduces the loss trajectory of an uninterrupted run.
pub struct Trainer<'a, M> {
    pub(crate) config: TrainConfig,
    pub(crate) out: PathBuf,
    pub(crate) pad_id: u32,
    pub(crate) weights: WeightsIo<'a, M>,
    pub(crate) regularizer: Option<Box<dyn Regularizer<M> + 'a>>,
    pub(crate) general: Option<&'a Dataset>,
}

impl<'a, M: CausalLm> Trainer<'a, M> {
    /// A trainer writing to `out`; `pad_id` fills batches.
    pub fn new(config: TrainConfig, out: &Path, pad_id: u32, weights: WeightsIo<'a, M>) -> R<Self> {
        if config.steps == 0
            || config.batch_size == 0
            || config.eval_batch_size == 0
            || config.batch_threads == 0
            || config.eval_threads == Some(0)
        {
            return Err(TrainError::Config(
                "steps, batch_size, eval_batch_size, batch_threads and eval_threads must be at \
                 least 1"
                    .into(),
            ));
        }
        Ok(Self {
            config,
            out: out.to_path_buf(),
            pad_id,
            weights,
            regularizer: None,
            general: None,
        })
    }

    /// Adds a forgetting mitigation (or any other [`Regularizer`]).
    pub fn with_regularizer(mut self, regularizer: Box<dyn Regularizer<M> + 'a>) -> Self {
        self.regularizer = Some(regularizer);
        self
    }

    /// General (old-skill) text to evaluate at every evaluation: its loss before and after
    /// measures forgetting (`general_loss` in the metrics).
    pub fn with_general_eval(mut self, general: &'a Dataset) -> Self {
        self.general = Some(general);
        self
    }

    /// The latest complete checkpoint in `out`, if any.
    pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
        let name = std::fs::read_to_string(out.join(CHECKPOINTS).join(LATEST)).ok()?;
        let dir = out.join(CHECKPOINTS).join(name.trim());
        dir.join(STATE).is_file().then_some(dir)
    }

    /// Trains `model` (on the autodiff `device`) with `optim` on `train`, evaluating on `eval`
    /// (and on the general text of [`with_general_eval`](Self::with_general_eval)).
    pub fn fit(
        &mut self,
        model: M,
        mut optim: PeftOptimizer<M>,
        train: &Dataset,
        eval: Option<&Dataset>,
        device: &Device,
        resume: bool,
    ) -> R<(M, RunSummary)> {
        if train.samples.is_empty() {
            return Err(TrainError::Config("the training set is empty".into()));
        }
        let evals = Evaluator {
            batch_size: self.config.eval_batch_size,
            threads: self.config.eval_threads(),
            task: eval,
            general: self.general,
            pad_id: self.pad_id,
            device: device.clone().without_autodiff(),
        };
        let (mut model, mut run) = if resume {
            self.resume_run(model, &mut optim, train, device)?
        } else {
            let run = self.start_run(&model, train, device, &evals)?;
            (model, run)
        };
        let steps = self.config.steps;
        let bar = self.progress_bar(optim.steps_taken());
        // The first step compiles and autotunes the kernels on a GPU, which can take a minute:
        // say so, and keep the elapsed time ticking, so that it does not look like a hang.
        bar.set_message("first step: compiling and tuning kernels on a GPU can take a while");
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        let every = |n: usize, step: usize| n > 0 && step.is_multiple_of(n);
        while optim.steps_taken() < steps {
            let started = Instant::now();
            let (m, step) = self.train_step(model, &mut optim, train, &mut run.batcher, device)?;
            model = m;
            let seconds = started.elapsed().as_secs_f64();
            run.first_step_seconds.get_or_insert(seconds);
            run.train_seconds += seconds;
            run.tokens += step.tokens;
            run.final_loss = step.loss;
            if !(step.loss.is_finite() && step.penalty.is_finite()) {
                bar.finish_and_clear();
                return Err(TrainError::Diverged {
                    step: step.report.step,
                    loss: step.loss + step.penalty,
                });
            }
            // Before each step's update every step, and of the model itself before it is saved,
            // so that a checkpoint never holds weights that ran away.
            let done = step.report.step == steps;
            let save = done || every(self.config.save_every, step.report.step);
            let rms = if save {
                trainable_weight_rms(&model)
            } else {
                step.report.weight_rms
            };
            if let Err(e) = run.watch(&step.report, rms) {
                bar.finish_and_clear();
                return Err(e);
            }
            let tps = step.tokens as f64 / seconds.max(1e-9);
            self.record_step(&run, &step, &optim, tps)?;
            bar.set_message(format!("loss {:.4}  {tps:.0} tok/s", step.loss));
            bar.inc(1);
            if every(self.config.eval_every, step.report.step) && !done {
                let e = evals.run(&model)?;
                run.metrics.append(&eval_record(step.report.step, &e))?;
                let line = format!("step {}: {}", step.report.step, e.describe());
                bar.suspend(|| eprintln!("{line}"));
            }
            if every(self.config.save_every, step.report.step) && !done {
                let state = run.state(step.report.step, &self.config, train);
                self.checkpoint(&model, &optim, &state)?;
            }
        }
        bar.finish_and_clear();
        self.finish(model, run, &evals)
    }

    /// A new run: `out` must hold none. Creates `metrics.jsonl`, evaluates the starting model
    /// and prepares the regularizer on it.
    fn start_run(
        &mut self,
        model: &M,
        train: &Dataset,
        device: &Device,
        evals: &Evaluator<'_>,
    ) -> R<RunState> {
        let metrics_path = self.out.join(METRICS);
        check_fresh_output(&self.out)?;
        // A run killed before its first complete checkpoint left only what it starts over.
        let checkpoints = self.out.join(CHECKPOINTS);
        if checkpoints.is_dir() {
            std::fs::remove_dir_all(&checkpoints).map_err(|e| TrainError::io(&checkpoints, e))?;
        }
        std::fs::create_dir_all(&self.out).map_err(|e| TrainError::io(&self.out, e))?;
        self.remove_leftovers()?;
        let metrics = MetricsLog::create(&metrics_path)?;
        let before = evals.run(model)?;
        metrics.append(&eval_record(0, &before))?;
        if let Some(r) = self.regularizer.as_mut() {
            r.prepare(model, device)?;
        }
        Ok(RunState::new(
            Batcher::new(train.samples.len(), self.config.seed),
            0,
            0.0,
            metrics,
            before,
        ))
    }

    /// Whether the run in `out` can resume with `model` (freshly built, its adapter added) on
    /// `train`, without loading anything: a complete checkpoint, the same seed, batch size and
    /// number of samples, weights that fit ([`WeightsIo::check`]) and a readable
    /// `metrics.jsonl`. Returns the checkpoint.
    /// [`fit`](Self::fit) asks it too; a program can ask first, to refuse before it prints or
    /// prepares anything.
    ///
    /// [`WeightsIo::check`]: crate::WeightsIo::check
    pub fn check_resume(&self, model: &M, train: &Dataset) -> R<PathBuf> {
        self.resumable(model, train).map(|(dir, _)| dir)
    }

    /// [`check_resume`](Self::check_resume), with the checkpoint's state it read.
    fn resumable(&self, model: &M, train: &Dataset) -> R<(PathBuf, TrainerState)> {
        let cfg = &self.config;
        let dir = Self::latest_checkpoint(&self.out).ok_or_else(|| TrainError::Resume {
            path: self.out.clone(),
            message: "no complete checkpoint (checkpoints/latest) to resume from".into(),
        })?;
        let state: TrainerState = read_json(&dir.join(STATE))?;
        if state.seed != cfg.seed
            || state.batch_size != cfg.batch_size
            || state.samples != train.samples.len()
        {
            return Err(TrainError::Resume {
                path: dir,
                message: format!(
                    "the run used seed {}, batch size {} and {} training samples; now {}, {} and {}",
                    state.seed,
                    state.batch_size,
                    state.samples,
                    cfg.seed,
                    cfg.batch_size,
                    train.samples.len()
                ),
            });
        }
        if let Some(check) = &self.weights.check {
            check(model, &dir)?;
        }
        MetricsLog::read_log(&self.out.join(METRICS))?;
        Ok((dir, state))
    }

    /// The run in `out` from its latest checkpoint: the checkpoint's weights, optimizer state,
    /// data position and regularizer state, checked against this run's settings.
    fn resume_run(
        &mut self,
        model: M,
        optim: &mut PeftOptimizer<M>,
        train: &Dataset,
        device: &Device,
    ) -> R<(M, RunState)> {
        self.remove_leftovers()?;
        let cfg = &self.config;
        let (dir, state) = self.resumable(&model, train)?;
        // The regularizer sees the model as this run started it (distillation during full
        // fine-tuning keeps it as the teacher), then the checkpoint's weights go in.
        if let Some(r) = self.regularizer.as_mut() {
            r.load(&model, &dir, device)?;
        }
        let model = (self.weights.load)(model, &dir)?;
        let model = optim.load(model, &dir)?;
        if optim.steps_taken() != state.step {
            return Err(TrainError::Resume {
                path: dir,
                message: "optimizer and trainer states disagree on the step".into(),
            });
        }
        let mut run = RunState::new(
            Batcher::resume(train.samples.len(), cfg.seed, state.batcher),
            state.tokens,
            state.train_seconds,
            MetricsLog::resume(&self.out.join(METRICS), state.step)?,
            state.before,
        );
        run.start_weight_rms = state.start_weight_rms;
        Ok((model, run))
    }

    /// One optimizer step: `gradient_accumulation_steps` micro-batches, each split into slices
    /// that train on threads, with the regularizer's replay and penalty.
    fn train_step(
        &mut self,
        mut model: M,
        optim: &mut PeftOptimizer<M>,
        train: &Dataset,
        batcher: &mut Batcher,
        device: &Device,
    ) -> R<(M, StepOutcome)> {
        let cfg = &self.config;
        let step = optim.steps_taken();
        let accum = optim.config().gradient_accumulation_steps;
        let (mut loss_sum, mut penalty_sum, mut tokens) = (0.0, 0.0, 0);
        let mut report = None;
        for micro in 0..accum {
            let idx = batcher.next_batch(cfg.batch_size);
            let mut samples: Vec<Sample> = idx.iter().map(|&i| train.samples[i].clone()).collect();
            // Replay draws, dropout masks and distillation batches come from seeds fixed by
            // (run, step, micro-batch), so a resumed run repeats them.
            let seed = mix(cfg.seed, step as u64, micro as u64);
            let mut rng = SplitMix64::new(seed);
            if let Some(r) = self.regularizer.as_mut() {
                r.mix(&mut samples, &mut rng);
            }
            tokens += samples.iter().map(|s| s.ids.len()).sum::<usize>();
            let slices = slices(&samples, cfg.batch_threads, self.pad_id, device);
            device.seed(seed);
            let (m, losses, r) = if cfg.checkpoint_layers {
                // The penalty's gradients first, layer by layer as well (distillation runs the
                // model); then each slice with its own dropout seed.
                let penalty = self.regularizer.as_mut().and_then(|r| {
                    let scale = |loss| optim.scaled_loss(loss);
                    r.penalty_gradients(&model, &mut rng, &scale, mix(seed, u64::MAX, 0))
                });
                let penalty = penalty.map(|(value, grads)| {
                    penalty_sum += value.into_scalar::<f32>() as f64;
                    grads
                });
                let slices: Vec<_> = slices.into_iter().enumerate().collect();
                optim.backward_step_parallel_with(
                    model,
                    slices,
                    penalty,
                    |m, (k, (batch, share)), scale| {
                        let seed = mix(seed, k as u64, u64::MAX);
                        batch_gradients(m, &batch, share, scale, seed)
                    },
                )
            } else {
                let penalty = self
                    .regularizer
                    .as_mut()
                    .and_then(|r| r.penalty(&model, &mut rng));
                if let Some(p) = &penalty {
                    penalty_sum += p.clone().into_scalar::<f32>() as f64;
                }
                optim.backward_step_parallel(model, slices, penalty, |m, (batch, share)| {
                    let loss = batch_loss(m, &batch);
                    if share == 1.0 { loss } else { loss * share }
                })
            };
            model = m;
            for l in losses {
                loss_sum += l.into_scalar::<f32>() as f64;
            }
            report = report.or(r);
        }
        let report = report.ok_or_else(|| {
            TrainError::Config("the optimizer did not step after a full accumulation window".into())
        })?;
        let outcome = StepOutcome {
            report,
            loss: loss_sum / accum as f64,
            penalty: penalty_sum / accum as f64,
            tokens,
        };
        Ok((model, outcome))
    }

    /// The step's line in `metrics.jsonl`.
    fn record_step(
        &self,
        run: &RunState,
        step: &StepOutcome,
        optim: &PeftOptimizer<M>,
        tokens_per_s: f64,
    ) -> R<()> {
        let mut record = step_record(
            step.report.step,
            step.loss,
            step.report.lr,
            step.report.grad_norm,
            run.tokens,
            run.train_seconds,
            tokens_per_s,
        );
        record["weight_rms"] = json!(step.report.weight_rms);
        if self.regularizer.is_some() {
            record["penalty"] = json!(step.penalty);
        }
        if let Some(scale) = optim.loss_scale() {
            // The scale the next step will use, and whether this one overflowed.
            record["loss_scale"] = json!(scale);
            record["skipped"] = json!(step.report.skipped);
        }
        run.metrics.append(&record)
    }

    /// After the last step: the final evaluation, the weights, `loss.svg` and
    /// `train_summary.json`.
    fn finish(&self, model: M, run: RunState, evals: &Evaluator<'_>) -> R<(M, RunSummary)> {
        let steps = self.config.steps;
        let after = evals.run(&model)?;
        run.metrics.append(&eval_record(steps, &after))?;
        (self.weights.save)(&model, &self.out)?;
        let records = run.metrics.read()?;
        plot_metrics(
            &records,
            &[
                ("train loss", "loss"),
                ("eval loss", "eval_loss"),
                ("general-text loss", "general_loss"),
            ],
            "fine-tuning loss",
            "loss",
            &self.out.join("loss.svg"),
        )?;
        let before = run.before;
        let loss = |m: &Option<EvalMetrics>| m.as_ref().map(|m| m.loss);
        let summary = RunSummary {
            steps,
            final_loss: run.final_loss,
            eval_before: before.task,
            eval_after: after.task,
            general_loss_before: loss(&before.general),
            general_loss_after: loss(&after.general),
            forgetting: loss(&after.general)
                .zip(loss(&before.general))
                .map(|(a, b)| a - b),
            train_seconds: run.train_seconds,
            tokens_per_s: run.tokens as f64 / run.train_seconds.max(1e-9),
            first_step_seconds: run.first_step_seconds,
            output: self.out.clone(),
        };
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| TrainError::data(&self.out, 0, e))?;
        write_atomic(&self.out.join("train_summary.json"), text.as_bytes())?;
        Ok((model, summary))
    }

    fn progress_bar(&self, start: usize) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(self.config.steps as u64),
            if self.config.progress {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        ) {
            bar.set_style(style);
        }
        bar.set_position(start as u64);
        bar.reset_eta();
        bar
    }

    /// Deletes what a killed run left in `out`: temporary files of dead processes (in `out`,
    /// `checkpoints/` and each checkpoint) and unfinished checkpoint folders
    /// (`checkpoints/.step-N.tmp`).
    fn remove_leftovers(&self) -> R<()> {
        let root = self.out.join(CHECKPOINTS);
        let mut dirs = vec![self.out.clone(), root.clone()];
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if name.starts_with(".step-") && name.ends_with(".tmp") && is_dir {
                    let path = entry.path();
                    std::fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
                } else if name.starts_with("step-") && is_dir {
                    dirs.push(entry.path());
                }
            }
        }
        for dir in dirs {
            remove_stale_temporaries(&dir)?;
        }
        Ok(())
    }

    /// Writes `checkpoints/step-NNNNNN` through a temporary directory and a rename, then
    /// points `checkpoints/latest` at it and deletes the oldest beyond `keep_checkpoints`.
    fn checkpoint(&self, model: &M, optim: &PeftOptimizer<M>, state: &TrainerState) -> R<()> {
        let root = self.out.join(CHECKPOINTS);
        let name = format!("step-{:06}", state.step);
        let tmp = root.join(format!(".{name}.tmp"));
        let dir = root.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        (self.weights.save)(model, &tmp)?;
        optim.save(model, &tmp)?;
        if let Some(r) = &self.regularizer {
            r.save(&tmp)?;
        }
        let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::data(&tmp, 0, e))?;
        write_atomic(&tmp.join(STATE), text.as_bytes())?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
        write_atomic(&root.join(LATEST), name.as_bytes())?;
        let mut old: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(|e| TrainError::io(&root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
            })
            .collect();
        old.sort();
        let keep = self.config.keep_checkpoints.max(1);
        for p in old.iter().take(old.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
        }
        Ok(())
    }
}

/// One line for people.
pub fn describe(m: &EvalMetrics) -> String {
    let mut s = format!("eval loss {:.4}, perplexity {:.2}", m.loss, m.perplexity);
    if let Some(a) = m.accuracy {
        s.push_str(&format!(", accuracy {:.1}%", 100.0 * a));
    }
    if let Some(e) = m.exact_match {
        s.push_str(&format!(", exact match {:.1}%", 100.0 * e));
    }
    s
}

fn eval_record(step: usize, e: &Evals) -> Value {
    let mut r = json!({ "step": step });
    if let Some(m) = &e.task {
        r["eval_loss"] = json!(m.loss);
        r["eval_perplexity"] = json!(m.perplexity);
        if let Some(a) = m.accuracy {
            r["eval_accuracy"] = json!(a);
        }
        if let Some(x) = m.exact_match {
            r["eval_exact_match"] = json!(x);
        }
    }
    if let Some(g) = &e.general {
        r["general_loss"] = json!(g.loss);
        r["general_perplexity"] = json!(g.perplexity);
    }
    r
}

/// `samples` as `threads` padded batches (fewer when there are fewer samples), each with its
/// share of the micro-batch's loss positions: the weighted slices' losses add up to the loss of
/// the whole micro-batch.
fn slices(samples: &[Sample], threads: usize, pad_id: u32, device: &Device) -> Vec<(Batch, f32)> {
    let positions = |s: &[Sample]| -> usize {
        s.iter()
            .map(|x| x.targets.iter().skip(1).filter(|&&t| t).count())
            .sum()
    };
    let total = positions(samples);
    let ranges = split_evenly(samples.len(), threads);
    let n = ranges.len();
    ranges
        .into_iter()
        .map(|range| {
            let chunk = &samples[range];
            let refs: Vec<&Sample> = chunk.iter().collect();
            let share = match total {
                _ if n == 1 => 1.0,
                0 => 1.0 / n as f32,
                t => positions(chunk) as f32 / t as f32,
            };
            (collate(&refs, pad_id, device), share)
        })
        .collect()
}

fn mix(seed: u64, step: u64, micro: u64) -> u64 {
    let mut r =
        SplitMix64::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ micro.rotate_left(32));
    r.next_u64()
}

/// Checks that a new run may write into `out`: it does not exist, is empty, or holds only what
/// a run that never completed a checkpoint left (`metrics.jsonl`, its plots, a `checkpoints/`
/// folder without `latest`), which the run starts over. Anything else is refused, so that no
/// model, adapter or earlier run is overwritten: a run with a complete checkpoint is resumed,
/// other files are kept. [`Trainer::fit`] checks it; a program can check it before any work.
///
/// ```
/// use burn_peft_train::check_fresh_output;
/// let dir = tempfile::tempdir().unwrap();
/// assert!(check_fresh_output(&dir.path().join("new")).is_ok());
/// std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
/// assert!(check_fresh_output(dir.path()).is_err());
/// ```
pub fn check_fresh_output(out: &Path) -> R<()> {
    const RESTARTABLE: [&str; 3] = [METRICS, "loss.svg", "tasks.svg"];
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(TrainError::Config(format!(
            "the output {} exists and is not a directory",
            out.display()
        )));
    }
    if out.join(CHECKPOINTS).join(LATEST).exists() {
        return Err(TrainError::Config(format!(
            "{} already holds a run with a checkpoint: resume it or choose another output \
             directory",
            out.display()
        )));
    }
    let entries = std::fs::read_dir(out).map_err(|e| TrainError::io(out, e))?;
    let mut others = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let ours = if is_dir {
            name == CHECKPOINTS
        } else {
            RESTARTABLE.contains(&&*name) || temporary_owner(&name).is_some()
        };
        if !ours {
            others.push(name);
        }
    }
    if others.is_empty() {
        return Ok(());
    }
    others.sort();
    others.truncate(3);
    Err(TrainError::Config(format!(
        "{} already holds files ({}{}): choose a new or empty output directory",
        out.display(),
        others.join(", "),
        if others.len() == 3 { ", ..." } else { "" }
    )))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> R<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::data(path, 0, e))
}
