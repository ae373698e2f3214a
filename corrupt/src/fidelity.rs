//! Fidelity against the Python port (reference data made by `scripts/corruption_reference.py`).
//!
//! Deterministic corruptions: PSNR against the port's output on the committed input, over the
//! pixels at even (row, column) (a uniform quarter of the image, stored to keep the data
//! small), must be >= 35 dB at every severity, and infinite (identical pixels) for those in
//! [`EXACT`]. Random corruptions: over 8 seeds (the reference
//! used 24), the mean across seeds of three statistics (mean and standard
//! deviation of output - input, standard deviation of the output; 0..255 scale) must agree
//! with the port's within `4 * SE + 1.5`, where SE is the standard error of the difference of
//! the two means (from the across-seed spreads of both) and 1.5 (of 255) allows for small
//! implementation differences (8-bit rounding, a different Gaussian sampler). Run with
//! `--nocapture` to print the tables (copied into benches/CORRUPT.md).

use std::path::PathBuf;

use image::RgbImage;

use super::*;

/// The deterministic corruptions that must match the port pixel for pixel.
const EXACT: [Corruption; 3] = [Corruption::Contrast, Corruption::Pixelate, Corruption::JpegCompression];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/corrupt")
}

fn input() -> RgbImage {
    image::open(data_dir().join("input224.png")).unwrap().to_rgb8()
}

fn psnr_quarter(ours: &RgbImage, reference: &RgbImage, severity: u32) -> f64 {
    let mut se = 0.0f64;
    let mut n = 0.0f64;
    for y in 0..112 {
        for x in 0..112 {
            let a = ours.get_pixel(2 * x, 2 * y);
            let b = reference.get_pixel(x, (severity - 1) * 112 + y);
            for k in 0..3 {
                se += (f64::from(a[k]) - f64::from(b[k])).powi(2);
                n += 1.0;
            }
        }
    }
    let mse = se / n;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn deterministic_corruptions_match_the_port() {
    let x = input();
    let c = Corruptor::default();
    let names = [
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::Saturate,
        Corruption::Pixelate,
        Corruption::JpegCompression,
        Corruption::DefocusBlur,
        Corruption::ZoomBlur,
        Corruption::GaussianBlur,
    ];
    println!("| corruption | s1 | s2 | s3 | s4 | s5 |  (PSNR dB vs imagecorruptions-imaug 1.1.5)");
    println!("|---|---|---|---|---|---|");
    let mut failures = vec![];
    for corruption in names {
        let reference = image::open(data_dir().join(format!("det_{}.png", corruption.name())))
            .unwrap()
            .to_rgb8();
        let mut row = format!("| {} |", corruption.name());
        for s in 1..=5u8 {
            let ours = c.apply(&x, corruption, s, 0).unwrap();
            let p = psnr_quarter(&ours, &reference, u32::from(s));
            row += &if p.is_infinite() {
                " exact |".to_string()
            } else {
                format!(" {p:.1} |")
            };
            if p < 35.0 {
                failures.push(format!("{} s{s}: {p:.1} dB", corruption.name()));
            }
            // implemented with the reference's own integer arithmetic: nothing may differ
            if EXACT.contains(&corruption) && p.is_finite() {
                failures.push(format!("{} s{s}: {p:.1} dB, not exact", corruption.name()));
            }
        }
        println!("{row}");
    }
    assert!(failures.is_empty(), "below 35 dB or not exact: {failures:?}");
}

/// Seeds we draw per (corruption, severity): fewer than the reference's, to keep the debug-build
/// test fast; the standard error accounts for both counts.
const OUR_SEEDS: u64 = 8;

#[derive(serde::Deserialize)]
struct Stat {
    mean: f64,
    sd: f64,
}

#[derive(serde::Deserialize)]
struct SevStats {
    diff_mean: Stat,
    diff_std: Stat,
    out_std: Stat,
}

#[derive(serde::Deserialize)]
struct RandomStats {
    seeds: u64,
    corruptions: std::collections::BTreeMap<String, Vec<SevStats>>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

#[test]
fn random_corruptions_match_the_port_statistics() {
    let text = std::fs::read_to_string(data_dir().join("random_stats.json")).unwrap();
    let stats: RandomStats = serde_json::from_str(&text).unwrap();
    let x = input();
    let xf: Vec<f64> = x.as_raw().iter().map(|&v| f64::from(v)).collect();
    let c = Corruptor::new(Some(crate::tests::provisioned_frost())).unwrap();
    let mut failures = vec![];
    println!("| corruption | severity | diff mean ours / port | diff std ours / port | output std ours / port |");
    println!("|---|---|---|---|---|");
    for corruption in Corruption::ALL.into_iter().filter(|c| c.is_random()) {
        let per_sev = &stats.corruptions[corruption.name()];
        for (si, refs) in per_sev.iter().enumerate() {
            let s = si as u8 + 1;
            let (mut dm, mut ds, mut os) = (vec![], vec![], vec![]);
            for seed in 0..OUR_SEEDS {
                let y = c.apply(&x, corruption, s, seed).unwrap();
                let yf: Vec<f64> = y.as_raw().iter().map(|&v| f64::from(v)).collect();
                let d: Vec<f64> = yf.iter().zip(&xf).map(|(a, b)| a - b).collect();
                let (m, sd) = mean_sd(&d);
                dm.push(m);
                ds.push(sd);
                os.push(mean_sd(&yf).1);
            }
            let mut cells = vec![];
            for (name, ours, r) in [
                ("diff_mean", &dm, &refs.diff_mean),
                ("diff_std", &ds, &refs.diff_std),
                ("out_std", &os, &refs.out_std),
            ] {
                let (m, sd) = mean_sd(ours);
                let se = (sd * sd / OUR_SEEDS as f64 + r.sd * r.sd / stats.seeds as f64).sqrt();
                let tol = 4.0 * se + 1.5;
                cells.push(format!("{m:.1} / {:.1}", r.mean));
                if (m - r.mean).abs() > tol {
                    failures.push(format!(
                        "{} s{s} {name}: ours {m:.2} vs port {:.2} (tolerance {tol:.2})",
                        corruption.name(),
                        r.mean
                    ));
                }
            }
            println!("| {} | {s} | {} |", corruption.name(), cells.join(" | "));
        }
    }
    assert!(failures.is_empty(), "statistics off:\n{}", failures.join("\n"));
}
