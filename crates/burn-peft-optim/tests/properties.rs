//! Properties of the learning-rate schedules, for any length, warm-up and peak.

use burn::lr_scheduler::LrScheduler;
use burn_peft_optim::{LrSchedule, ScheduleKind};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = ScheduleKind> {
    prop::sample::select(vec![
        ScheduleKind::Constant,
        ScheduleKind::Linear,
        ScheduleKind::Cosine,
    ])
}

proptest! {
    #[test]
    fn warm_up_rises_then_the_schedule_never_rises(
        kind in kind(),
        total in 1usize..400,
        warmup_share in 0.0f64..1.0,
        peak in 1e-6f64..1.0,
    ) {
        let warmup = (warmup_share * total as f64) as usize;
        let mut s = LrSchedule::new(kind, peak, warmup, total);
        let lrs: Vec<f64> = (0..total).map(|_| s.step()).collect();
        for (step, lr) in lrs.iter().enumerate() {
            // The burn scheduler and the direct lookup agree, within [0, peak].
            prop_assert_eq!(*lr, s.lr_at(step));
            prop_assert!((0.0..=peak * (1.0 + 1e-12)).contains(lr), "{} at {}", lr, step);
        }
        for w in lrs[..warmup.min(total)].windows(2) {
            prop_assert!(w[0] < w[1]);
        }
        if warmup > 0 {
            prop_assert_eq!(lrs[0], 0.0);
        }
        for w in lrs[warmup.min(total)..].windows(2) {
            prop_assert!(w[1] <= w[0] * (1.0 + 1e-12));
        }
        let end = s.lr_at(total);
        match kind {
            ScheduleKind::Constant => prop_assert_eq!(end, if warmup < total { peak } else { end }),
            _ if warmup < total => prop_assert!(end.abs() < 1e-12 * peak, "{}", end),
            _ => {}
        }
    }

    /// LoRA+'s scaled schedule is the same curve times the ratio.
    #[test]
    fn a_scaled_schedule_is_the_curve_times_the_ratio(
        kind in kind(),
        total in 1usize..200,
        step in 0usize..200,
        ratio in 0.5f64..32.0,
    ) {
        let s = LrSchedule::new(kind, 1e-3, total / 4, total);
        let scaled = s.scaled(ratio).lr_at(step);
        prop_assert!((scaled - ratio * s.lr_at(step)).abs() <= 1e-15 * ratio.max(1.0));
    }
}
