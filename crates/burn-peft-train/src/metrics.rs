//! The run's metrics as JSONL, and the loss curve as an SVG picture.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::{Value, json};

use crate::error::{Result, TrainError};

/// Appends one JSON object per line to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// A log at `path`, emptied.
    pub fn create(path: &Path) -> Result<Self> {
        burn_peft_core::format::write_atomic(path, b"")?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The log's text: a missing log is empty; one that cannot be read is an error, never
    /// taken as empty (that would drop every record).
    pub(crate) fn read_log(path: &Path) -> Result<String> {
        match std::fs::read(path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| TrainError::data(path, 0, "not UTF-8 text: not a metrics log")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(TrainError::io(path, e)),
        }
    }

    /// A log at `path` that keeps only the records up to `step` (the records of a killed run
    /// after its last checkpoint are dropped, so a resumed run does not repeat them).
    pub fn resume(path: &Path, step: usize) -> Result<Self> {
        let text = Self::read_log(path)?;
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(Value::as_u64))
                    .is_some_and(|s| s as usize <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        burn_peft_core::format::write_atomic(path, kept.as_bytes())?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends one record.
    pub fn append(&self, record: &Value) -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        // The log is a file this run made: a symbolic link put in its place is not followed.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        let mut file = options
            .open(&self.path)
            .map_err(|e| TrainError::io(&self.path, e))?;
        writeln!(file, "{record}").map_err(|e| TrainError::io(&self.path, e))
    }

    /// All records.
    pub fn read(&self) -> Result<Vec<Value>> {
        read_metrics(&self.path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The records of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| TrainError::data(path, i + 1, e)))
        .collect()
}

/// Draws `series` (name, key in the records) against `step` as an SVG line chart at `path`,
/// titled `title` with `y_label` on the vertical axis, written atomically. Records without the
/// key are skipped.
pub fn plot_metrics(
    records: &[Value],
    series: &[(&str, &str)],
    title: &str,
    y_label: &str,
    path: &Path,
) -> Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, key)| {
            let points = records
                .iter()
                .filter_map(|r| {
                    let x = r.get("step")?.as_f64()?;
                    let y = r.get(*key)?.as_f64()?;
                    y.is_finite().then_some((x, y))
                })
                .collect();
            (*name, points)
        })
        .filter(|(_, p): &(&str, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if lines.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc("optimizer step")
                .y_desc(y_label)
                .draw()?;
            let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
            for (i, (name, points)) in lines.iter().enumerate() {
                let color = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
                // Sparse series (evaluations) get markers: a line between two far-apart points
                // says nothing about the steps in between.
                if points.len() <= 50 {
                    chart.draw_series(
                        points
                            .iter()
                            .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| TrainError::data(path, 0, format!("plotting failed: {e}")))?;
    }
    burn_peft_core::format::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// A step record.
pub(crate) fn step_record(
    step: usize,
    loss: f64,
    lr: f64,
    grad_norm: Option<f32>,
    tokens: usize,
    elapsed: f64,
    tokens_per_s: f64,
) -> Value {
    json!({
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": tokens,
        "tokens_per_s": tokens_per_s,
        "elapsed_s": elapsed,
    })
}
