//! The learning-rate schedule: linear warm-up, then a cosine down to a floor. A module of its
//! own because it is pure arithmetic on step counts, tested without a model, and because the
//! learner, the progress bar and the metrics all read the same rate from it.

use crate::config::OptimizerConfig;

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then a cosine from
/// `peak` down to `peak * min_ratio`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The schedule of one run: [`learning_rate`] with the run's step counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Steps in the whole run.
    pub total: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// Peak learning rate.
    pub peak: f64,
    /// Final rate as a fraction of the peak.
    pub min_ratio: f64,
}

impl LrSchedule {
    /// The schedule of `epochs` epochs of `steps_per_epoch` steps under `optimizer`
    /// (warm-up epochs rounded to whole steps).
    pub fn new(optimizer: &OptimizerConfig, steps_per_epoch: usize, epochs: usize) -> Self {
        Self {
            total: steps_per_epoch * epochs,
            warmup: (optimizer.warmup_epochs * steps_per_epoch as f64).round() as usize,
            peak: optimizer.lr,
            min_ratio: optimizer.min_lr_ratio,
        }
    }

    /// The rate at global step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        learning_rate(step, self.total, self.warmup, self.peak, self.min_ratio)
    }

    /// How far training is after global step `step`: `(step + 1) / total`, 1 at the last step.
    pub fn progress(&self, step: usize) -> f64 {
        (step + 1) as f64 / self.total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_follows_a_cosine() {
        let lr = |s| learning_rate(s, 100, 10, 1.0, 0.01);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - (0.01 + 0.99 * 0.5)).abs() < 1e-12, "half way down the cosine");
        assert!((lr(100) - 0.01).abs() < 1e-12);
        assert!((10..100).all(|s| lr(s + 1) <= lr(s)));
    }

    #[test]
    fn a_run_schedule_counts_warm_up_in_whole_steps() {
        let optimizer = OptimizerConfig {
            lr: 1.0,
            warmup_epochs: 0.5,
            min_lr_ratio: 0.01,
            ..OptimizerConfig::default()
        };
        let s = LrSchedule::new(&optimizer, 5, 4);
        assert_eq!((s.total, s.warmup), (20, 3));
        assert_eq!(s.at(7), learning_rate(7, 20, 3, 1.0, 0.01));
        assert_eq!(s.progress(19), 1.0);
    }
}
