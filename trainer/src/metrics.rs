//! What a run reports while and after it trains: the progress bar of an epoch, the metrics of
//! every epoch ([`EpochMetrics`]) in the log and in the run directory (`metrics.jsonl`,
//! appended; `metrics.csv` and `curve.png`, rewritten), and reading them back on resume.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::checkpoint::{RunDir, io_err, write_atomic};

/// One line of `metrics.jsonl` / `metrics.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Top-1 accuracy on the evaluation set (of the EMA weights when there are some).
    pub eval_top1: Option<f64>,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// The running totals of one epoch, shown on a progress bar.
pub(crate) struct EpochProgress {
    bar: ProgressBar,
    started: Instant,
    epoch: usize,
    steps: usize,
    loss_sum: f64,
    images: usize,
    lr: f64,
}

impl EpochProgress {
    /// Starts epoch `epoch` (0-based) of `epochs`, `steps` steps long.
    pub(crate) fn start(epoch: usize, epochs: usize, steps: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        Self {
            bar,
            started: Instant::now(),
            epoch,
            steps,
            loss_sum: 0.0,
            images: 0,
            lr: 0.0,
        }
    }

    /// Counts step `step` (0-based): its loss, the images it trained on and its rate.
    pub(crate) fn record(&mut self, step: usize, loss: f32, images: usize, lr: f64) {
        self.loss_sum += f64::from(loss);
        self.images += images;
        self.lr = lr;
        self.bar
            .set_message(format!("loss {:.4} lr {lr:.2e}", self.loss_sum / (step + 1) as f64));
        self.bar.inc(1);
    }

    /// Clears the bar and stops the clock (before evaluation, which the timing leaves out).
    pub(crate) fn stop(&self) -> f64 {
        self.bar.finish_and_clear();
        self.started.elapsed().as_secs_f64()
    }

    /// The epoch's metrics, given its training time `seconds` and its evaluation result.
    pub(crate) fn finish(self, seconds: f64, eval_top1: Option<f64>) -> EpochMetrics {
        EpochMetrics {
            epoch: self.epoch + 1,
            train_loss: self.loss_sum / self.steps as f64,
            lr: self.lr,
            eval_top1,
            seconds,
            images_per_second: self.images as f64 / seconds.max(1e-9),
        }
    }
}

/// Logs an epoch's metrics (one `info` line).
pub(crate) fn log_epoch(m: &EpochMetrics, epochs: usize) {
    tracing::info!(
        "epoch {}/{}: loss {:.4}, eval top-1 {}, {:.0} s ({:.0} img/s)",
        m.epoch,
        epochs,
        m.train_loss,
        m.eval_top1.map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
        m.seconds,
        m.images_per_second
    );
}

/// Appends `m` to the run's `metrics.jsonl` and to `history`, then rewrites `metrics.csv` and
/// `curve.png` (titled with `epochs`) from the whole history.
pub(crate) fn record_epoch(
    run: &RunDir,
    history: &mut Vec<EpochMetrics>,
    m: EpochMetrics,
    epochs: usize,
) -> Result<(), TrainerError> {
    let path = run.metrics();
    let mut line = serde_json::to_string(&m).map_err(|e| TrainerError::serialize("epoch metrics", e))?;
    line.push('\n');
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(line.as_bytes()).map_err(io_err(&path))?;
    history.push(m);
    write_csv(history, &run.metrics_csv())?;
    crate::curve::write_run_curve(run.path(), history, epochs)
}

/// The first `epochs` metrics of `metrics.jsonl` at `path` (unreadable lines skipped, a
/// missing file is empty).
pub(crate) fn read_history(path: &Path, epochs: usize) -> Vec<EpochMetrics> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(epochs)
        .collect()
}

/// Writes `history` as CSV with a header line (atomically).
pub fn write_csv(history: &[EpochMetrics], path: &Path) -> Result<(), TrainerError> {
    let mut s = String::from("epoch,train_loss,lr,eval_top1,seconds,images_per_second\n");
    for m in history {
        s.push_str(&format!(
            "{},{:.6},{:.6e},{},{:.2},{:.1}\n",
            m.epoch,
            m.train_loss,
            m.lr,
            m.eval_top1.map_or(String::new(), |a| format!("{a:.6}")),
            m.seconds,
            m.images_per_second
        ));
    }
    write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path()).unwrap();
        let mut history = Vec::new();
        for epoch in 1..=2 {
            let mut p = EpochProgress::start(epoch - 1, 2, 4);
            for step in 0..4 {
                p.record(step, 1.0 / epoch as f32, 10, 0.1);
            }
            let seconds = p.stop();
            let m = p.finish(seconds.max(1.0), Some(0.5));
            assert_eq!((m.epoch, m.train_loss), (epoch, 1.0 / epoch as f64));
            record_epoch(&run, &mut history, m, 2).unwrap();
        }
        assert_eq!(read_history(&run.metrics(), 5).len(), 2);
        assert_eq!(read_history(&run.metrics(), 1)[0].epoch, 1);
        let csv = fs::read_to_string(run.metrics_csv()).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(
            csv.lines()
                .nth(2)
                .unwrap()
                .starts_with("2,0.500000,1.000000e-1,0.500000,")
        );
    }
}
