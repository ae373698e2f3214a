//! The human-readable side of a result: `report.md` with every table, and PNG plots beside it
//! (error vs severity per corruption, flip probability per perturbation, accuracy vs eps).
//! Plots are drawn with plotters into an RGB buffer and encoded by `image`; text uses DejaVu
//! Sans embedded in the binary, so no system fonts are needed.

use std::{fmt::Write as _, path::Path, sync::OnceLock};

use plotters::{prelude::*, style::FontStyle};

use crate::{
    EvalError, metrics,
    result::{AccuracySummary, EvalResult},
    store::write_atomic,
};

/// File names of the plots, relative to the report.
pub const CORRUPTION_PLOT: &str = "corruption_errors.png";
/// Flip probabilities.
pub const FLIP_PLOT: &str = "flip_probabilities.png";
/// Accuracy under attack.
pub const ATTACK_PLOT: &str = "attack_accuracy.png";

fn register_font() -> Result<(), EvalError> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(()).ok_or(EvalError::Plot {
        path: "(font)".into(),
        reason: "the embedded DejaVu Sans font did not load".into(),
    })
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn accuracy_line(name: &str, a: &AccuracySummary) -> String {
    let ece = a.ece.map_or_else(String::new, |e| format!(" | {:.2}", 100.0 * e));
    format!(
        "| {name} | {} | {} | {}{ece} |\n",
        a.images,
        pct(a.top1_error),
        pct(a.top5_error)
    )
}

/// `text` (a file name, an error message) as literal Markdown text: no markup, no raw HTML.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The section on items that could not be evaluated; empty when none failed.
fn failures_section(result: &EvalResult) -> String {
    let mut md = String::new();
    if result.failed_images.is_empty() {
        return md;
    }
    let total = result.failed_total();
    let _ = writeln!(
        md,
        "## Failed images
"
    );
    let _ = writeln!(
        md,
        "{total} item(s) could not be evaluated (malformed, truncated or unreadable files, or files \
         outside the data root) and are counted in none of the figures below; for the `p/...` parts \
         they are sequences.\n"
    );
    let _ = writeln!(md, "| part | failed |\n|---|---|");
    for (part, n) in &result.failed_images {
        let _ = writeln!(md, "| {} | {n} |", literal(part));
    }
    md.push('\n');
    let _ = writeln!(md, "Why (the first of each part):\n");
    for (part, failures) in &result.failures {
        for f in failures {
            let _ = writeln!(md, "- {}: {}: {}", literal(part), literal(&f.item), literal(&f.reason));
        }
    }
    md.push('\n');
    md
}

/// Renders the Markdown report (plots are referenced by file name).
pub fn markdown(result: &EvalResult) -> String {
    let mut md = String::new();
    let m = &result.model;
    let _ = writeln!(md, "# Robustness report: {}\n", m.name);
    let _ = writeln!(
        md,
        "Model file `{}` ({} classes, fingerprint `{}`); shard {}.\n",
        m.path, m.classes, m.fingerprint, result.shard
    );
    if !result.data.is_empty() {
        let _ = writeln!(md, "Data:\n");
        for (suite, source) in &result.data {
            let _ = writeln!(md, "- {suite}: `{source}`");
        }
        md.push('\n');
    }
    md.push_str(&failures_section(result));
    let sets: Vec<(&str, &AccuracySummary)> = [
        ("clean", result.clean.as_ref()),
        ("ImageNet-A (200 classes)", result.imagenet_a.as_ref()),
        ("ImageNet-R (200 classes)", result.imagenet_r.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, a)| a.map(|a| (n, a)))
    .collect();
    if !sets.is_empty() {
        let _ = writeln!(md, "## Accuracy\n");
        let with_ece = sets.iter().any(|(_, a)| a.ece.is_some());
        let _ = writeln!(
            md,
            "| set | images | top-1 error % | top-5 error %{} |\n|---|---|---|---{}|",
            if with_ece { " | ECE % (15 bins)" } else { "" },
            if with_ece { "|---" } else { "" }
        );
        for (name, a) in sets {
            md.push_str(&accuracy_line(name, a));
        }
        md.push('\n');
    }
    if let Some(c) = &result.corruptions {
        let _ = writeln!(md, "## Corruptions\n");
        let _ = writeln!(
            md,
            "mCE {} · relative mCE {} · mean error of the benchmark corruptions {} %\n",
            opt(c.mce, 1),
            opt(c.relative_mce, 1),
            opt(c.mean_error.map(|e| 100.0 * e), 2)
        );
        let _ = writeln!(
            md,
            "CE and relative CE are normalised by AlexNet's ImageNet errors (x100), so they are given \
             for 1000-class models only; the mean error is the unnormalised figure.\n"
        );
        let _ = writeln!(
            md,
            "| corruption | s1 | s2 | s3 | s4 | s5 | mean error % | CE | relative CE |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (corruption, row) in &c.corruptions {
            let cells: Vec<String> = row.errors.iter().map(|e| e.map_or("–".into(), pct)).collect();
            let _ = writeln!(
                md,
                "| {corruption} | {} | {} | {} | {} |",
                cells.join(" | "),
                pct(row.mean_error),
                opt(row.ce, 1),
                opt(row.relative_ce, 1)
            );
        }
        let _ = writeln!(md, "\n![top-1 error vs severity]({CORRUPTION_PLOT})\n");
    }
    if let Some(p) = &result.perturbations {
        let _ = writeln!(md, "## Perturbation sequences\n");
        let _ = writeln!(
            md,
            "mFR {} · mean flip probability of the benchmark perturbations {} % · mT5D {} (unnormalised: no public AlexNet baseline)\n",
            opt(p.mfr, 1),
            opt(p.mean_flip_probability.map(|f| 100.0 * f), 2),
            opt(p.mt5d, 3)
        );
        let _ = writeln!(
            md,
            "| perturbation | difficulty | sequences | flip probability % | FR | mean top-5 distance |\n|---|---|---|---|---|---|"
        );
        for (perturbation, rows) in &p.perturbations {
            for (d, row) in rows {
                let _ = writeln!(
                    md,
                    "| {perturbation} | {d} | {} | {} | {} | {:.3} |",
                    row.sequences,
                    pct(row.flip_probability),
                    opt(row.flip_rate, 1),
                    row.top5_distance
                );
            }
        }
        let _ = writeln!(md, "\n![flip probability per perturbation]({FLIP_PLOT})\n");
    }
    if !result.fgsm.is_empty() || !result.pgd.is_empty() {
        let _ = writeln!(md, "## Attacks (L-inf, eps in 0..255 pixel units)\n");
        let _ = writeln!(
            md,
            "| attack | eps | eps x 255 | images | accuracy % |\n|---|---|---|---|---|"
        );
        for (name, rows) in [("FGSM", &result.fgsm), ("PGD", &result.pgd)] {
            for r in rows {
                let _ = writeln!(
                    md,
                    "| {name} | {:.5} | {:.1} | {} | {} |",
                    r.eps,
                    r.eps * 255.0,
                    r.images,
                    pct(r.accuracy)
                );
            }
        }
        let _ = writeln!(md, "\n![accuracy vs eps]({ATTACK_PLOT})\n");
    }
    md.push_str(&autoattack_section(result));
    md
}

/// The AutoAttack table: robust accuracy after each attack (the per-image worst case over
/// the attacks so far), PGD at the same radius when it ran, and the reference's warnings.
fn autoattack_section(result: &EvalResult) -> String {
    if result.autoattack.is_empty() {
        return String::new();
    }
    let mut md = String::from("## AutoAttack\n\n");
    md.push_str(
        "Each attack runs on the images every attack before it left robust; robust accuracy is the \
         per-image worst case. Per-image outcomes are in `parts/autoattack__*.json`.\n\n",
    );
    md.push_str(
        "| norm | eps | eps x 255 | images | clean % | after each attack (robust %) | AutoAttack % | PGD % |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    let mut warnings = Vec::new();
    for r in &result.autoattack {
        let steps: Vec<String> = r
            .after
            .iter()
            .map(|s| format!("{} {}", s.attack, pct(s.robust_accuracy)))
            .collect();
        let _ = writeln!(
            md,
            "| {:?} | {:.5} | {:.1} | {} | {} | {} | {} | {} |",
            r.norm,
            r.eps,
            r.eps * 255.0,
            r.images,
            pct(r.clean_accuracy),
            steps.join(", "),
            pct(r.robust_accuracy),
            r.pgd_accuracy.map_or_else(|| "-".into(), pct)
        );
        let at = format!("{:?} eps {:.5}", r.norm, r.eps);
        if r.randomized {
            warnings.push(format!(
                "{at}: two forward passes differ: a randomised model; this evaluation is not reliable"
            ));
        }
        if r.probabilities {
            warnings.push(format!(
                "{at}: the outputs look like probabilities; the attacks need logits"
            ));
        }
        if r.zero_gradients > 0 {
            warnings.push(format!(
                "{at}: {} image(s) had a zero gradient at an APGD-T start",
                r.zero_gradients
            ));
        }
        if r.square_beat_white_box {
            warnings.push(format!(
                "{at}: Square lowered the robust accuracy after the white-box attacks: their gradients may be unreliable"
            ));
        }
    }
    if !warnings.is_empty() {
        md.push_str("\nWarnings (the reference's checks):\n\n");
        for w in warnings {
            let _ = writeln!(md, "- {w}");
        }
    }
    md.push('\n');
    md
}

fn perr<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> EvalError + '_ {
    move |e| EvalError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn save_png(rgb: Vec<u8>, (w, h): (u32, u32), path: &Path) -> Result<(), EvalError> {
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| perr(path)("buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(perr(path))?;
    write_atomic(path, &png)
}

/// Small multiples: top-1 error (%) against severity for every evaluated corruption, with
/// AlexNet's per-severity error dashed for 1000-class models.
fn corruption_plot(result: &EvalResult, path: &Path) -> Result<(), EvalError> {
    let Some(c) = &result.corruptions else { return Ok(()) };
    let cols = 5usize;
    let rows = c.corruptions.len().div_ceil(cols).max(1);
    let size = (1250u32, 60 + 230 * rows as u32);
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(perr(path))?;
        let root = root
            .titled(
                &format!("{}: top-1 error (%) vs severity", result.model.name),
                ("sans-serif", 22),
            )
            .map_err(perr(path))?;
        let cells = root.split_evenly((rows, cols));
        let imagenet = result.model.classes == 1000;
        for ((corruption, row), cell) in c.corruptions.iter().zip(cells.iter()) {
            let mut chart = ChartBuilder::on(cell)
                .caption(corruption.name(), ("sans-serif", 15))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(34)
                .build_cartesian_2d(0.5f64..5.5, 0.0f64..100.0)
                .map_err(perr(path))?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .draw()
                .map_err(perr(path))?;
            let points: Vec<(f64, f64)> = row
                .errors
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| ((i + 1) as f64, 100.0 * v)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, BLUE.stroke_width(2)).point_size(3))
                .map_err(perr(path))?;
            if imagenet {
                let baseline = metrics::alexnet_corruption_errors(*corruption)
                    .map(|b| b.to_vec())
                    .unwrap_or_else(|| vec![metrics::alexnet_corruption_mean_error(*corruption); 5]);
                let points: Vec<(f64, f64)> = baseline
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, 100.0 * v))
                    .collect();
                chart
                    .draw_series(DashedLineSeries::new(points, 4, 4, RED.stroke_width(1)))
                    .map_err(perr(path))?;
            }
        }
        root.present().map_err(perr(path))?;
    }
    save_png(rgb, size, path)
}

/// Bars: flip probability (%) per perturbation (difficulties averaged), AlexNet's beside it for
/// 1000-class models.
fn flip_plot(result: &EvalResult, path: &Path) -> Result<(), EvalError> {
    let Some(p) = &result.perturbations else { return Ok(()) };
    let bars: Vec<(String, f64, f64)> = p
        .perturbations
        .iter()
        .map(|(pert, rows)| {
            let fp = rows.values().map(|r| r.flip_probability).sum::<f64>() / rows.len().max(1) as f64;
            (
                pert.name().to_string(),
                100.0 * fp,
                100.0 * metrics::alexnet_flip_probability(*pert),
            )
        })
        .collect();
    let imagenet = result.model.classes == 1000;
    let top = bars
        .iter()
        .map(|b| if imagenet { b.1.max(b.2) } else { b.1 })
        .fold(1.0, f64::max)
        * 1.15;
    let size = (1100u32, 480u32);
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(perr(path))?;
        let n = bars.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: flip probability (%){}",
                    result.model.name,
                    if imagenet { ", AlexNet in red" } else { "" }
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n, 0.0..top)
            .map_err(perr(path))?;
        let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.26 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .x_label_style(("sans-serif", 12))
            .y_desc("flip probability %")
            .draw()
            .map_err(perr(path))?;
        let width = if imagenet { 0.38 } else { 0.7 };
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let x0 = i as f64 + 0.5 - if imagenet { width } else { width / 2.0 };
                Rectangle::new([(x0, 0.0), (x0 + width, b.1)], BLUE.filled())
            }))
            .map_err(perr(path))?;
        if imagenet {
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let x0 = i as f64 + 0.5;
                    Rectangle::new([(x0, 0.0), (x0 + width, b.2)], RED.mix(0.7).filled())
                }))
                .map_err(perr(path))?;
        }
        root.present().map_err(perr(path))?;
    }
    save_png(rgb, size, path)
}

/// Lines: top-1 accuracy (%) against eps x 255 for FGSM and PGD, starting at the clean accuracy.
fn attack_plot(result: &EvalResult, path: &Path) -> Result<(), EvalError> {
    if result.fgsm.is_empty() && result.pgd.is_empty() {
        return Ok(());
    }
    let max_eps = result
        .fgsm
        .iter()
        .chain(&result.pgd)
        .map(|r| r.eps * 255.0)
        .fold(1.0, f64::max);
    let size = (900u32, 480u32);
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(perr(path))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: accuracy under attack (FGSM blue, PGD red)", result.model.name),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_eps * 1.05, 0.0..100.0)
            .map_err(perr(path))?;
        chart
            .configure_mesh()
            .x_desc("eps x 255")
            .y_desc("top-1 accuracy %")
            .draw()
            .map_err(perr(path))?;
        let clean = result.clean.as_ref().map(|c| (0.0, 100.0 * (1.0 - c.top1_error)));
        for (rows, color) in [(&result.fgsm, BLUE), (&result.pgd, RED)] {
            if rows.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = clean
                .into_iter()
                .chain(rows.iter().map(|r| (r.eps * 255.0, 100.0 * r.accuracy)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(4))
                .map_err(perr(path))?;
        }
        root.present().map_err(perr(path))?;
    }
    save_png(rgb, size, path)
}

/// Writes `report.md` and its plots into `dir`.
pub fn write(result: &EvalResult, dir: &Path) -> Result<(), EvalError> {
    register_font()?;
    corruption_plot(result, &dir.join(CORRUPTION_PLOT))?;
    flip_plot(result, &dir.join(FLIP_PLOT))?;
    attack_plot(result, &dir.join(ATTACK_PLOT))?;
    write_atomic(&dir.join("report.md"), markdown(result).as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::result::{ItemFailure, ModelSummary};

    fn result() -> EvalResult {
        EvalResult {
            model: ModelSummary {
                name: "m".into(),
                path: "m.onnx".into(),
                fingerprint: "0".into(),
                classes: 10,
            },
            shard: "0/1".into(),
            data: BTreeMap::new(),
            clean: Some(AccuracySummary {
                images: 8,
                top1_error: 0.25,
                top5_error: 0.0,
                ece: None,
            }),
            corruptions: None,
            perturbations: None,
            imagenet_a: None,
            imagenet_r: None,
            fgsm: Vec::new(),
            pgd: Vec::new(),
            autoattack: Vec::new(),
            failed_images: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// The report says how many items failed, in which part and why, as plain text (a file
    /// name cannot inject markup or HTML); without failures there is no such section.
    #[test]
    fn failed_images_are_reported_as_text() {
        let clean = markdown(&result());
        assert!(!clean.contains("Failed images"), "{clean}");
        let mut r = result();
        r.failed_images.insert("clean".into(), 2);
        r.failed_images.insert("c/fog/1".into(), 3);
        r.failures.insert(
            "clean".into(),
            vec![
                ItemFailure {
                    item: "3/<script>x</script>.png".into(),
                    reason: "not a supported image".into(),
                },
                ItemFailure {
                    item: "3/cut.jpg".into(),
                    reason: "cannot decode JPEG image: the file is truncated".into(),
                },
            ],
        );
        let md = markdown(&r);
        for needle in [
            "## Failed images",
            "5 item(s) could not be evaluated",
            "| clean | 2 |",
            "| c/fog/1 | 3 |",
            "- clean: 3/cut.jpg: cannot decode JPEG image: the file is truncated",
            "&lt;script&gt;",
        ] {
            assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
        }
        assert!(!md.contains("<script>"), "{md}");
        assert_eq!(literal("a_b|c\n`d`"), "a\\_b\\|c \\`d\\`");
    }
}
