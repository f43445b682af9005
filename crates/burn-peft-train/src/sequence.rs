//! Continual learning: a sequence of tasks trained one after another, with the score on every
//! task after each one and the backward transfer.

use std::path::Path;

use burn::tensor::Device;
use burn_peft_core::format::write_atomic;
use burn_peft_optim::PeftOptimizer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::eval::{EvalMetrics, evaluate};
use crate::metrics::plot_metrics;
use crate::trainer::{RunSummary, Trainer};
use burn_peft_models::CausalLm;

/// One task of a sequence (see [`Trainer::fit_sequence`]).
pub struct SequenceTask<'d> {
    /// A short name (a column of the scores).
    pub name: String,
    /// Training samples.
    pub train: &'d Dataset,
    /// Held-out samples that score the task after every stage.
    pub eval: &'d Dataset,
    /// Optimizer steps spent on this task.
    pub steps: usize,
}

/// What a sequence of tasks measured; `sequence.json` in the output directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SequenceSummary {
    /// The tasks' names, in training order.
    pub tasks: Vec<String>,
    /// The forgetting method ([`Regularizer::name`](crate::Regularizer::name), `none`
    /// without one); a resumed sequence must use the same. Empty in files written before it
    /// was recorded (not checked then).
    #[serde(default)]
    pub regularizer: String,
    /// What scores each task: `accuracy`, `exact_match` or `neg_loss` (minus the eval loss),
    /// whichever its evaluation has first.
    pub metrics: Vec<String>,
    /// Scores of every task before training.
    pub initial: Vec<f64>,
    /// `scores[i][j]`: the score on task `j` after learning tasks `0..=i`.
    pub scores: Vec<Vec<f64>>,
    /// [`backward_transfer`] of the finished table (negative: forgetting).
    pub backward_transfer: Option<f64>,
    /// General-text loss before the first task and after each one.
    pub general_loss: Vec<f64>,
    /// Each task's run.
    pub runs: Vec<RunSummary>,
}

/// Backward transfer over a sequence of tasks (Lopez-Paz & Ranzato 2017): `scores[i][j]` is
/// the score on task `j` after training on tasks `0..=i`. The mean over earlier tasks of
/// (latest score − score right after learning it); negative means forgetting. Rows may be
/// longer than the table is tall (scores of tasks not learned yet are ignored), so a
/// sequence's partial table gives the transfer so far. `None` for fewer than two rows or a
/// row too short.
///
/// ```
/// use burn_peft_train::backward_transfer;
/// let scores = vec![vec![0.9, 0.1], vec![0.7, 0.8]];
/// assert!((backward_transfer(&scores).unwrap() + 0.2).abs() < 1e-12);
/// ```
pub fn backward_transfer(scores: &[Vec<f64>]) -> Option<f64> {
    let t = scores.len();
    if t < 2 || scores.iter().any(|r| r.len() < t) {
        return None;
    }
    let last = &scores[t - 1];
    Some((0..t - 1).map(|j| last[j] - scores[j][j]).sum::<f64>() / (t - 1) as f64)
}

fn score(m: &EvalMetrics) -> (f64, &'static str) {
    match (m.accuracy, m.exact_match) {
        (Some(a), _) => (a, "accuracy"),
        (None, Some(e)) => (e, "exact_match"),
        _ => (-m.loss, "neg_loss"),
    }
}

const SEQUENCE: &str = "sequence.json";

impl<'a, M: CausalLm> Trainer<'a, M> {
    /// Trains `model` on `tasks` one after another, each into `out/task-K/` (a complete run:
    /// weights, `metrics.jsonl`, `loss.svg`, checkpoints) with a fresh optimizer from
    /// `optimizer(steps)`. After each task, every task's eval set is scored; `out/sequence.json`
    /// ([`SequenceSummary`]), `out/metrics.jsonl` (one record per task with `score/<name>`,
    /// `backward_transfer` and `general_loss`) and `out/tasks.svg` are rewritten, and the final
    /// weights go to `out`.
    ///
    /// The regularizer may change the model before every task but the first
    /// ([`Regularizer::begin_task`](crate::Regularizer::begin_task)) and after the last
    /// ([`Regularizer::end_sequence`](crate::Regularizer::end_sequence)), is prepared at the
    /// start of every task and is told each finished task's training samples
    /// ([`Regularizer::end_task`](crate::Regularizer::end_task)), so EWC consolidates on the
    /// task just learned and replay keeps some of it; its state is saved into each task's
    /// directory. With `resume`, finished tasks are loaded and the first
    /// unfinished one continues from its latest checkpoint (or starts over).
    ///
    /// `model` must be ready for a new run (adapter added) and `WeightsIo::load` must accept
    /// it. `TrainConfig::steps` is replaced by each task's `steps`.
    pub fn fit_sequence(
        &mut self,
        model: M,
        optimizer: &dyn Fn(usize) -> Result<PeftOptimizer<M>>,
        tasks: &[SequenceTask],
        device: &Device,
        resume: bool,
    ) -> Result<(M, SequenceSummary)> {
        if tasks.is_empty() {
            return Err(TrainError::Config(
                "a sequence needs at least one task".into(),
            ));
        }
        if let Some(t) = tasks.iter().find(|t| t.eval.samples.is_empty()) {
            return Err(TrainError::Config(format!(
                "task '{}' has no evaluation samples to score it",
                t.name
            )));
        }
        let root = self.out.clone();
        let regularizer = self
            .regularizer
            .as_ref()
            .map_or_else(|| "none".to_string(), |r| r.name());
        let summary_path = root.join(SEQUENCE);
        let eval_device = device.clone().without_autodiff();
        let (batch, pad, threads) = (
            self.config.eval_batch_size,
            self.pad_id,
            self.config.eval_threads(),
        );
        let general = self.general;
        // Scores every task; `done` is a run that just evaluated its own task and the general
        // text on this model, whose results are taken rather than computed again.
        let score_all = |m: &M, done: Option<(usize, &RunSummary)>| {
            let valid = m.valid();
            let mut scores = Vec::new();
            let mut names = Vec::new();
            for (j, t) in tasks.iter().enumerate() {
                let known = done.and_then(|(k, run)| (k == j).then_some(run.eval_after.as_ref()));
                let (s, n) = match known.flatten() {
                    Some(e) => score(e),
                    None => score(&evaluate(
                        &valid,
                        t.eval,
                        batch,
                        pad,
                        &eval_device,
                        threads,
                    )?),
                };
                scores.push(s);
                names.push(n.to_string());
            }
            let g = match done.and_then(|(_, run)| run.general_loss_after) {
                Some(g) => Some(g),
                None => general
                    .map(|g| evaluate(&valid, g, batch, pad, &eval_device, threads).map(|e| e.loss))
                    .transpose()?,
            };
            Ok::<_, TrainError>((scores, names, g))
        };
        let mut seq: SequenceSummary = if resume && summary_path.is_file() {
            let text = std::fs::read_to_string(&summary_path)
                .map_err(|e| TrainError::io(&summary_path, e))?;
            let s: SequenceSummary =
                serde_json::from_str(&text).map_err(|e| TrainError::data(&summary_path, 0, e))?;
            let names: Vec<&String> = tasks.iter().map(|t| &t.name).collect();
            if s.tasks.iter().collect::<Vec<_>>() != names {
                return Err(TrainError::Resume {
                    path: summary_path,
                    message: format!("the run's tasks were {:?}, now {names:?}", s.tasks),
                });
            }
            if !s.regularizer.is_empty() && s.regularizer != regularizer {
                return Err(TrainError::Resume {
                    path: summary_path,
                    message: format!(
                        "the run's forgetting method was {}, now {regularizer}",
                        s.regularizer
                    ),
                });
            }
            s
        } else {
            if summary_path.exists() || root.join("task-0").exists() {
                return Err(TrainError::Config(format!(
                    "{} already holds a run: resume it or choose another output directory",
                    root.display()
                )));
            }
            crate::trainer::check_fresh_output(&root)?;
            std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
            let (initial, metrics, g) = score_all(&model, None)?;
            SequenceSummary {
                tasks: tasks.iter().map(|t| t.name.clone()).collect(),
                regularizer,
                metrics,
                initial,
                general_loss: g.into_iter().collect(),
                ..Default::default()
            }
        };
        write_sequence(&root, &seq)?;
        let result: Result<M> = (|mut model: M| {
            for (k, task) in tasks.iter().enumerate() {
                let dir = root.join(format!("task-{k}"));
                if k > 0
                    && let Some(r) = self.regularizer.as_mut()
                {
                    model = r.begin_task(model, k)?;
                }
                if k < seq.scores.len() {
                    // Finished: its weights and the regularizer's state after it.
                    if let Some(r) = self.regularizer.as_mut() {
                        r.load(&model, &dir, device)?;
                        r.end_task(&task.name, &task.train.samples);
                    }
                    model = (self.weights.load)(model, &dir)?;
                    continue;
                }
                let resume_task = resume && Self::latest_checkpoint(&dir).is_some();
                if !resume_task && dir.exists() {
                    // Started but killed before its first checkpoint: start it over.
                    std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
                }
                if self.config.progress {
                    eprintln!("task {}/{}: {}", k + 1, tasks.len(), task.name);
                }
                self.out = dir.clone();
                self.config.steps = task.steps;
                let (m, run) = self.fit(
                    model,
                    optimizer(task.steps)?,
                    task.train,
                    Some(task.eval),
                    device,
                    resume_task,
                )?;
                model = m;
                if let Some(r) = self.regularizer.as_mut() {
                    r.save(&dir)?;
                    r.end_task(&task.name, &task.train.samples);
                }
                let (row, _, g) = score_all(&model, Some((k, &run)))?;
                seq.scores.push(row);
                seq.general_loss.extend(g);
                seq.runs.push(run);
                seq.backward_transfer = backward_transfer(&seq.scores);
                write_sequence(&root, &seq)?;
            }
            match self.regularizer.as_mut() {
                Some(r) => r.end_sequence(model),
                None => Ok(model),
            }
        })(model);
        self.out = root.clone();
        let model = result?;
        (self.weights.save)(&model, &root)?;
        Ok((model, seq))
    }
}

/// Writes `sequence.json`, `metrics.jsonl` (one record per task, `step` counting steps over
/// the whole sequence) and `tasks.svg`.
fn write_sequence(root: &Path, seq: &SequenceSummary) -> Result<()> {
    let text = serde_json::to_string_pretty(seq).map_err(|e| TrainError::data(root, 0, e))?;
    write_atomic(&root.join(SEQUENCE), text.as_bytes())?;
    let record = |step: usize, task: Option<usize>, row: &[f64], i: usize| {
        let mut r = json!({ "step": step });
        if let Some(k) = task {
            r["task"] = json!(seq.tasks[k]);
        }
        for (name, s) in seq.tasks.iter().zip(row) {
            r[format!("score/{name}")] = json!(s);
        }
        if let Some(g) = seq.general_loss.get(i) {
            r["general_loss"] = json!(g);
        }
        if let Some(b) = task.and_then(|k| backward_transfer(&seq.scores[..=k])) {
            r["backward_transfer"] = json!(b);
        }
        r
    };
    let mut records: Vec<Value> = vec![record(0, None, &seq.initial, 0)];
    let mut step = 0;
    for (k, row) in seq.scores.iter().enumerate() {
        step += seq.runs.get(k).map_or(0, |r| r.steps);
        records.push(record(step, Some(k), row, k + 1));
    }
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(&root.join("metrics.jsonl"), lines.as_bytes())?;
    let keys: Vec<(String, String)> = seq
        .tasks
        .iter()
        .zip(&seq.metrics)
        .map(|(n, m)| (format!("{n} ({m})"), format!("score/{n}")))
        .chain([(
            "backward transfer".to_string(),
            "backward_transfer".to_string(),
        )])
        .collect();
    let series: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    plot_metrics(
        &records,
        &series,
        "scores over the sequence",
        "score (accuracy, exact match, or minus the loss)",
        &root.join("tasks.svg"),
    )
}
