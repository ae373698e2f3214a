//! The PNG training curve of a run (`curve.png`): training loss and evaluation top-1 per
//! epoch, redrawn after every epoch so that a running job can be watched from a file viewer.
//! Drawn with plotters into an RGB buffer and encoded by `image`; the text uses DejaVu Sans
//! embedded in the binary, so no system fonts are needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::TrainerError;
use crate::checkpoint::write_atomic;
use crate::metrics::EpochMetrics;

/// Width and height of the picture in pixels.
pub const CURVE_SIZE: (u32, u32) = (1000, 420);

fn register_font() -> Result<(), TrainerError> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(TrainerError::Plot("the embedded DejaVu Sans font did not load".into()))
    }
}

fn plot_err(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Plot(e.to_string())
}

/// Draws `history` (training loss on the left, evaluation top-1 in percent on the right) with
/// `title` above, and writes it to `path` as PNG (atomically).
pub fn write_training_curve(history: &[EpochMetrics], title: &str, path: &Path) -> Result<(), TrainerError> {
    register_font()?;
    let (w, h) = CURVE_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(w / 2);
        let last = history.iter().map(|m| m.epoch).max().unwrap_or(1).max(1) as f64;
        let epochs = 0.0..last + 0.5;

        let losses: Vec<(f64, f64)> = history.iter().map(|m| (m.epoch as f64, m.train_loss)).collect();
        let max_loss = losses.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&left)
            .caption("training loss", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(epochs.clone(), 0.0..(max_loss * 1.1).max(1e-3))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(losses.iter().copied(), RED.stroke_width(2)).point_size(3))
            .map_err(plot_err)?;

        let accs: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|m| m.eval_top1.map(|a| (m.epoch as f64, a * 100.0)))
            .collect();
        let lo = accs.iter().map(|p| p.1).fold(100.0, f64::min);
        let lo = if accs.is_empty() {
            0.0
        } else {
            (lo - 5.0).max(0.0).floor()
        };
        let mut chart = ChartBuilder::on(&right)
            .caption("evaluation top-1 (%)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(epochs, lo..100.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("top-1 %")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(accs.iter().copied(), BLUE.stroke_width(2)).point_size(3))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| plot_err("buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(plot_err)?;
    write_atomic(path, &png)
}

/// Draws a run directory's `curve.png`, titled with the directory's name and `epochs`.
pub fn write_run_curve(dir: &Path, history: &[EpochMetrics], epochs: usize) -> Result<(), TrainerError> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    write_training_curve(history, &format!("{name} ({epochs} epochs)"), &dir.join("curve.png"))
}

/// Draws `dir/curve.png` from the run's `metrics.jsonl`.
pub fn redraw(dir: &Path) -> Result<(), TrainerError> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainerError::Io { path, source })?;
    let history: Vec<EpochMetrics> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    write_run_curve(dir, &history, history.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, loss: f64, top1: Option<f64>) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: loss,
            lr: 0.1,
            eval_top1: top1,
            seconds: 1.0,
            images_per_second: 1.0,
        }
    }

    #[test]
    fn the_curve_is_a_png_with_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.png");
        let history = [
            epoch(1, 2.0, Some(0.5)),
            epoch(2, 1.0, Some(0.7)),
            epoch(3, 0.5, Some(0.8)),
        ];
        write_training_curve(&history, "test run", &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), CURVE_SIZE);
        let reddish = img.pixels().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count();
        let blueish = img.pixels().filter(|p| p[2] > 200 && p[0] < 60 && p[1] < 60).count();
        let dark = img.pixels().filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80).count();
        assert!(reddish > 100, "loss line missing ({reddish} red pixels)");
        assert!(blueish > 100, "accuracy line missing ({blueish} blue pixels)");
        assert!(dark > 500, "no text or axes ({dark} dark pixels)");
        // A run without evaluation or with one epoch still draws.
        write_training_curve(&[epoch(1, f64::NAN, None)], "one", &path).unwrap();
        write_training_curve(&[], "empty", &path).unwrap();
    }
}
