//! The comparison's results: every run, each arm's summary with 95% intervals over seeds, and
//! the files they are written to.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use burn_peft_optim::PeftOptimizerConfig;

use crate::{CompareConfig, CompareError, CompareTask, Result};

/// One run of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The arm's name.
    pub arm: String,
    /// The seed (`None` for the deterministic arms).
    pub seed: Option<u64>,
    /// Share of held-out items whose likelier candidate is the answer (`None` without
    /// candidates).
    pub accuracy: Option<f64>,
    /// Share of held-out items whose every answer token is the model's first choice.
    pub exact_match: f64,
    /// Mean cross-entropy per answer token.
    pub answer_loss: f64,
    /// General-text perplexity change in percent (0 for the arms that train nothing; `None`
    /// for a training arm without general text).
    pub general_ppl_change_pct: Option<f64>,
    /// Training time (training arms) or index building (RAG), in seconds.
    pub setup_seconds: f64,
    /// Peak resident memory of the process during the run.
    pub peak_rss_bytes: Option<u64>,
    /// Mean tokens before the answer, per held-out item.
    pub prompt_tokens: f64,
    /// Milliseconds to score one held-out item (all its candidates).
    pub ms_per_query: f64,
    /// Parameters trained.
    pub trainable_params: u64,
    /// Bytes of what training writes (the adapter's files; a full model's f32 weights).
    pub weights_bytes: u64,
    /// The last training loss (training arms).
    pub final_train_loss: Option<f64>,
}

/// A mean over runs with the half-width of its 95% interval (Student's t; 0 for one run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The mean.
    pub mean: f64,
    /// Half the 95% interval's width.
    pub half_width: f64,
    /// Runs averaged.
    pub runs: usize,
}

impl Estimate {
    /// The mean and 95% interval of `values`.
    ///
    /// ```
    /// use burn_peft_compare::Estimate;
    /// let e = Estimate::of(&[1.0, 2.0, 3.0]);
    /// assert_eq!(e.mean, 2.0);
    /// assert!((e.half_width - 4.303 / 3f64.sqrt()).abs() < 1e-9); // sd 1, t(2) 4.303
    /// ```
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let half_width = if n < 2 {
            0.0
        } else {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t95(n - 1) * (var / n as f64).sqrt()
        };
        Self {
            mean,
            half_width,
            runs: n,
        }
    }
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        // Past 30, df 30's value: a little wide, never too narrow.
        _ => T[29],
    }
}

/// One arm over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// The arm's name.
    pub arm: String,
    /// Accuracy by the likelier candidate.
    pub accuracy: Option<Estimate>,
    /// Exact match.
    pub exact_match: Estimate,
    /// General-text perplexity change in percent (`None` without general text).
    pub general_ppl_change_pct: Option<Estimate>,
    /// Mean training (or index building) time in seconds.
    pub setup_seconds: f64,
    /// Highest peak resident memory over the runs.
    pub peak_rss_bytes: Option<u64>,
    /// Mean prompt tokens per query.
    pub prompt_tokens: f64,
    /// Mean milliseconds per query.
    pub ms_per_query: f64,
    /// Parameters trained.
    pub trainable_params: u64,
    /// Bytes of what training writes.
    pub weights_bytes: u64,
}

/// What a comparison found: the settings, every run and each arm's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// The task's name.
    pub task: String,
    /// Items the arms learned from.
    pub train_items: usize,
    /// Held-out items scored.
    pub test_items: usize,
    /// Passages of a knowledge task.
    pub passages: usize,
    /// Demonstrations or passages per prompt.
    pub k: usize,
    /// Training steps and batch size.
    pub steps: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// The longest sample.
    pub seq_len: usize,
    /// The PEFT arm's method (PEFT's `peft_type`).
    pub peft_method: String,
    /// The PEFT arm's learning rate.
    pub peft_lr: f64,
    /// The full arm's learning rate.
    pub full_lr: f64,
    /// The seeds of the seeded arms.
    pub seeds: Vec<u64>,
    /// Each arm, in the order run.
    pub arms: Vec<ArmSummary>,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// What the user should know (prompts cut to fit).
    pub warnings: Vec<String>,
    /// Who ran it (model, device, CPU): filled by the caller.
    pub notes: Vec<String>,
}

impl CompareReport {
    pub(crate) fn new(
        task: &CompareTask,
        config: &CompareConfig,
        runs: Vec<RunResult>,
        warnings: Vec<String>,
    ) -> Self {
        let mut arms: Vec<ArmSummary> = Vec::new();
        for arm in &config.arms {
            let own: Vec<&RunResult> = runs.iter().filter(|r| r.arm == arm.name()).collect();
            let values =
                |f: &dyn Fn(&RunResult) -> f64| -> Vec<f64> { own.iter().map(|r| f(r)).collect() };
            let mean = |f: &dyn Fn(&RunResult) -> f64| {
                values(f).iter().sum::<f64>() / own.len().max(1) as f64
            };
            let accuracy: Vec<f64> = own.iter().filter_map(|r| r.accuracy).collect();
            let forgetting: Option<Vec<f64>> =
                own.iter().map(|r| r.general_ppl_change_pct).collect();
            arms.push(ArmSummary {
                arm: arm.name().into(),
                accuracy: (!accuracy.is_empty()).then(|| Estimate::of(&accuracy)),
                exact_match: Estimate::of(&values(&|r| r.exact_match)),
                general_ppl_change_pct: forgetting
                    .filter(|f| !f.is_empty())
                    .map(|f| Estimate::of(&f)),
                setup_seconds: mean(&|r| r.setup_seconds),
                peak_rss_bytes: own.iter().filter_map(|r| r.peak_rss_bytes).max(),
                prompt_tokens: mean(&|r| r.prompt_tokens),
                ms_per_query: mean(&|r| r.ms_per_query),
                trainable_params: own.first().map_or(0, |r| r.trainable_params),
                weights_bytes: own.first().map_or(0, |r| r.weights_bytes),
            });
        }
        Self {
            task: task.name.clone(),
            train_items: task.train.len(),
            test_items: task.test.len(),
            passages: task.passages.len(),
            k: config.k,
            steps: config.steps,
            batch_size: config.batch_size,
            seq_len: config.seq_len,
            peft_method: config.adapter.peft_type().to_string(),
            peft_lr: config
                .lr
                .unwrap_or(PeftOptimizerConfig::default_learning_rate(false)),
            full_lr: config
                .full_lr
                .unwrap_or(PeftOptimizerConfig::default_learning_rate(true)),
            seeds: config.seeds.clone(),
            arms,
            runs,
            warnings,
            notes: Vec::new(),
        }
    }

    /// The table as markdown: one row per arm.
    pub fn markdown(&self) -> String {
        let pct = |e: &Estimate| {
            if e.runs > 1 {
                format!("{:.1} ± {:.1}", 100.0 * e.mean, 100.0 * e.half_width)
            } else {
                format!("{:.1}", 100.0 * e.mean)
            }
        };
        let mut s = format!(
            "## {}: {} held-out items, {} to learn from{}\n\n",
            self.task,
            self.test_items,
            self.train_items,
            if self.passages > 0 {
                format!(", {} passages", self.passages)
            } else {
                String::new()
            }
        );
        s.push_str(&format!(
            "k = {}, {} steps of batch {}, {} tokens, PEFT method {} (lr {:e}), full lr {:e}, \
             seeds {:?}; ± is the 95% interval over seeds (deterministic arms run once).\n\n",
            self.k,
            self.steps,
            self.batch_size,
            self.seq_len,
            self.peft_method,
            self.peft_lr,
            self.full_lr,
            self.seeds
        ));
        s.push_str(
            "| arm | accuracy % | exact match % | general ppl change % | train/index s | peak \
             RSS GiB | prompt tokens | ms/query | trainable params | weights MiB |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for a in &self.arms {
            let forgetting = match &a.general_ppl_change_pct {
                None => "n/a".to_string(),
                Some(f) if f.runs > 1 => format!("{:+.2} ± {:.2}", f.mean, f.half_width),
                Some(f) => format!("{:+.2}", f.mean),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {} | {:.0} | {:.0} | {} | {:.2} |\n",
                a.arm,
                a.accuracy.as_ref().map_or("n/a".into(), pct),
                pct(&a.exact_match),
                forgetting,
                a.setup_seconds,
                a.peak_rss_bytes.map_or("n/a".into(), |b| format!(
                    "{:.2}",
                    b as f64 / (1u64 << 30) as f64
                )),
                a.prompt_tokens,
                a.ms_per_query,
                a.trainable_params,
                a.weights_bytes as f64 / (1u64 << 20) as f64,
            ));
        }
        for w in &self.warnings {
            s.push_str(&format!("\nWarning: {w}\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("\n{n}\n"));
        }
        s
    }

    /// Writes `compare.json`, `compare.md` and `compare.svg` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| CompareError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| fail(dir, &e))?;
        for (name, bytes) in [
            ("compare.json", json.into_bytes()),
            ("compare.md", self.markdown().into_bytes()),
            ("compare.svg", self.svg()?.into_bytes()),
        ] {
            let path = dir.join(name);
            burn_peft_core::format::write_atomic(&path, &bytes).map_err(|e| fail(&path, &e))?;
        }
        Ok(())
    }

    /// Each arm's score (accuracy, else exact match) as a bar with its 95% interval, and its
    /// general-text perplexity change written above it.
    pub fn svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
            let n = self.arms.len().max(1);
            let score = |a: &ArmSummary| a.accuracy.unwrap_or(a.exact_match);
            let labels: Vec<String> = self.arms.iter().map(|a| a.arm.clone()).collect();
            let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
                root.fill(&WHITE)?;
                let mut chart = ChartBuilder::on(&root)
                    .caption(
                        format!("{}: score per arm (95% interval over seeds)", self.task),
                        ("sans-serif", 20),
                    )
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(60)
                    .build_cartesian_2d(0f64..n as f64, 0f64..110f64)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(0)
                    .y_desc("accuracy (exact match without candidates), %")
                    .draw()?;
                for (i, a) in self.arms.iter().enumerate() {
                    let e = score(a);
                    let x = i as f64;
                    let (top, half) = (100.0 * e.mean, 100.0 * e.half_width);
                    let forgot = a.general_ppl_change_pct.map(|f| f.mean);
                    let color = if forgot.is_some_and(|f| f > 0.0) {
                        RED.mix(0.6)
                    } else {
                        BLUE.mix(0.6)
                    };
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.2, 0.0), (x + 0.8, top)],
                        color.filled(),
                    )))?;
                    if half > 0.0 {
                        let (lo, hi) = ((top - half).max(0.0), (top + half).min(110.0));
                        chart.draw_series(std::iter::once(PathElement::new(
                            vec![(x + 0.5, lo), (x + 0.5, hi)],
                            BLACK.stroke_width(2),
                        )))?;
                    }
                    let forgetting = forgot.map_or(String::new(), |f| format!(" (ppl {f:+.1}%)"));
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{}{forgetting}", labels[i]),
                        (x + 0.2, (top + half).min(100.0) + 6.0),
                        ("sans-serif", 14),
                    )))?;
                }
                root.present()?;
                Ok(())
            };
            draw().map_err(|e| CompareError::Write {
                path: "compare.svg".into(),
                message: format!("plotting failed: {e}"),
            })?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_use_students_t() {
        let e = Estimate::of(&[0.5, 0.7]);
        assert!((e.mean - 0.6).abs() < 1e-12);
        // sd = 0.1414, se = 0.1, t(1) = 12.706
        assert!((e.half_width - 1.2706).abs() < 1e-3, "{e:?}");
        assert_eq!(Estimate::of(&[0.3]).half_width, 0.0);
    }
}
