//! Learning-rate schedules with HF `transformers`' semantics.

use std::f64::consts::PI;

use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::LearningRate;
use serde::{Deserialize, Serialize};

/// What the learning rate does after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Stays at the peak.
    Constant,
    /// Falls linearly to zero at the last step (HF's default).
    #[default]
    Linear,
    /// Falls along half a cosine to zero at the last step.
    Cosine,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            other => Err(format!(
                "unknown schedule '{other}': expected constant, linear or cosine"
            )),
        }
    }
}

/// Linear warm-up from zero to `peak_lr` over `warmup_steps`, then `kind` until `total_steps`.
///
/// Step `s` (counted from 0, the first optimizer step) uses `peak_lr · f(s)` with HF's
/// `get_{constant,linear,cosine}_schedule_with_warmup` factor: `s / warmup` during the warm-up,
/// then 1, `(total − s) / (total − warmup)`, or `½(1 + cos(π · (s − warmup) / (total − warmup)))`.
/// So with a warm-up the very first step runs at learning rate 0, exactly as in `transformers`.
///
/// It is a burn [`LrScheduler`], so it also plugs into burn's own optimizers.
///
/// ```
/// use burn::lr_scheduler::LrScheduler;
/// use burn_peft_optim::{LrSchedule, ScheduleKind};
///
/// let mut s = LrSchedule::new(ScheduleKind::Cosine, 1e-3, 2, 10);
/// let lrs: Vec<f64> = (0..10).map(|_| s.step()).collect();
/// assert_eq!(lrs[0], 0.0);
/// assert_eq!(lrs[1], 5e-4);
/// assert_eq!(lrs[2], 1e-3);
/// assert!((lrs[6] - 5e-4).abs() < 1e-12); // half-way through the decay
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// The shape after the warm-up.
    pub kind: ScheduleKind,
    /// The learning rate at the end of the warm-up.
    pub peak_lr: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// All optimizer steps of the run.
    pub total_steps: usize,
    /// Steps taken so far.
    pub step: usize,
}

impl LrSchedule {
    /// A schedule at its first step.
    pub fn new(kind: ScheduleKind, peak_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self {
            kind,
            peak_lr,
            warmup_steps,
            total_steps,
            step: 0,
        }
    }

    /// The same schedule with every learning rate multiplied by `ratio` (LoRA+'s B group).
    pub fn scaled(&self, ratio: f64) -> Self {
        Self {
            peak_lr: self.peak_lr * ratio,
            ..self.clone()
        }
    }

    /// The multiplier of `peak_lr` at step `step`.
    pub fn factor(&self, step: usize) -> f64 {
        let (s, w, n) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        let progress = (s - w) / (n - w).max(1.0);
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => (0.5 * (1.0 + (PI * progress).cos())).max(0.0),
        }
    }

    /// The learning rate at step `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.peak_lr * self.factor(step)
    }
}

impl LrScheduler for LrSchedule {
    fn step(&mut self) -> LearningRate {
        let lr = self.lr_at(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by transformers 5.24's `get_*_schedule_with_warmup` (LambdaLR over a
    /// base lr of 1.0, warm-up 3, 10 steps): the learning rate each optimizer step ran with.
    #[test]
    fn factors_match_transformers() {
        let linear = [
            0.0,
            1.0 / 3.0,
            2.0 / 3.0,
            1.0,
            0.857142857142857,
            0.714285714285714,
            0.571428571428571,
            0.428571428571429,
            0.285714285714286,
            0.142857142857143,
        ];
        let cosine = [
            0.0,
            1.0 / 3.0,
            2.0 / 3.0,
            1.0,
            0.950484433951210,
            0.811744900929367,
            0.611260466978157,
            0.388739533021843,
            0.188255099070633,
            0.049515566048790,
        ];
        let l = LrSchedule::new(ScheduleKind::Linear, 1.0, 3, 10);
        let c = LrSchedule::new(ScheduleKind::Cosine, 1.0, 3, 10);
        let k = LrSchedule::new(ScheduleKind::Constant, 1.0, 3, 10);
        for s in 0..10 {
            assert!((l.factor(s) - linear[s]).abs() < 1e-12, "linear step {s}");
            assert!((c.factor(s) - cosine[s]).abs() < 1e-12, "cosine step {s}");
            assert_eq!(k.factor(s), if s < 3 { s as f64 / 3.0 } else { 1.0 });
        }
    }

    #[test]
    fn record_round_trip_resumes_the_sequence() {
        let mut a = LrSchedule::new(ScheduleKind::Cosine, 2e-4, 2, 20);
        for _ in 0..7 {
            a.step();
        }
        let mut b = LrSchedule::new(ScheduleKind::Cosine, 2e-4, 2, 20);
        b.load_record(a.to_record());
        for _ in 0..13 {
            assert_eq!(a.step(), b.step());
        }
    }
}
