//! Coverage of the attack gradient on the torchvision classification zoo (issue 22, item 5).
//!
//! `scripts/torchvision_zoo.py` (PyTorch from PyPI into Hardy's cache by
//! `scripts/torch-env.sh`) exports one model of each torchvision family at random weights with
//! torch.onnx (opset 17, dynamic batch), with a fixed 64x64 batch and torch autograd's pixel
//! gradient of the summed cross-entropy (ImageNet normalisation in front). Here every export
//! goes through `Attacker::from_model` and `loss_gradient` as a user's ONNX file would: the
//! gradient must point where torch's does (cosine >= 0.999 over the batch) and the loss must
//! agree, unless the model is listed in [`EXPECTED_UNSUPPORTED`] with the error it gives
//! today. The lists are checked both ways, so a row goes stale the moment a backward rule
//! lands. The table (stderr, and markdown in `target/zoo-table.md` or `$HARDY_ZOO_TABLE`) is
//! what eval/README.md's "Coverage: the torchvision zoo" shows. The fixed-batch ShuffleNet
//! also runs through `hardy eval` as a user would run it, without `--batch-size`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::preprocess::{ColorMode, Interpolation, Layout, PreprocessSpec};
use engine::session::SessionOptions;
use eval::attack::{Attacker, Loss};
use serde_json::Value;

use crate::cli::hardy;
use crate::common::{root, runtime};

/// Models the gradient transform refuses today, and a substring of the error each gives (the
/// operator's name). When a backward rule lands, the model differentiates and its row must go.
const EXPECTED_UNSUPPORTED: &[(&str, &str)] = &[];

/// Models torch.onnx (opset 17, TorchScript exporter) fails to export, and a substring of the
/// script's recorded error.
const EXPECTED_EXPORT_FAILURES: &[(&str, &str)] = &[];

/// The smallest cosine between Hardy's and torch's pixel gradients that passes (item 5).
const MIN_COSINE: f64 = 0.999;

/// The largest relative difference between Hardy's and torch's per-image losses that passes.
const MAX_LOSS_ERROR: f64 = 1e-3;

/// One model's outcome.
struct Row {
    name: String,
    family: String,
    params: u64,
    /// `Err`: why torch.onnx failed.
    export: Result<(), String>,
    /// `Err`: why Hardy could not build or run the gradient graph.
    gradient: Result<Agreement, String>,
    torch_seconds: f64,
    hardy_seconds: f64,
}

/// How Hardy's gradient and loss compare with torch's.
struct Agreement {
    cosine: f64,
    loss_error: f64,
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{}: not float32", path.display());
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// The preprocessing the script's normalisation stands for: RGB, NCHW, a `size` crop, the
/// record's mean and std (the gradient graph starts from `[0, 1]` pixels, so only these and
/// the shape matter).
fn spec(record: &Value, size: u32) -> PreprocessSpec {
    let floats = |key: &str| -> Vec<f32> {
        numbers(record, key, Value::as_f64)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    PreprocessSpec {
        resize_size: size,
        crop_height: size,
        crop_width: size,
        interpolation: Interpolation::Bilinear,
        mean: floats("mean"),
        std: floats("std"),
        color: ColorMode::Rgb,
        layout: Layout::Nchw,
        exif_orientation: true,
    }
}

/// Hardy's gradient of one exported model against the script's torch autograd reference.
/// The array `record[key]`, each entry read by `read` (the script writes them; a missing or
/// mistyped entry is the script's bug and fails the test).
fn numbers<T>(record: &Value, key: &str, read: fn(&Value) -> Option<T>) -> Vec<T> {
    record[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {record}"))
        .iter()
        .map(|v| read(v).unwrap_or_else(|| panic!("{key}: {v}")))
        .collect()
}

fn check(dir: &Path, name: &str, record: &Value) -> Result<Agreement, String> {
    let size = record["size"].as_u64().unwrap() as u32;
    let path = dir.join(format!("{name}.onnx"));
    let model = engine::onnx::read_model(&path).map_err(|e| e.to_string())?;
    let pixels = read_f32(&dir.join(format!("{name}.input.f32")));
    let want = read_f32(&dir.join(format!("{name}.grad.f32")));
    let labels: Vec<i64> = numbers(record, "labels", Value::as_i64);
    let losses: Vec<f64> = numbers(record, "losses", Value::as_f64);
    let batch = labels.len();
    assert_eq!(pixels.len(), batch * 3 * (size * size) as usize, "{name}: input size");
    let mut attacker = Attacker::from_model(
        &runtime(),
        &model,
        &spec(record, size),
        None,
        None,
        &SessionOptions::default(),
        &path,
    )
    .map_err(|e| e.to_string())?;
    let got = attacker
        .loss_gradient(&pixels, batch, &labels, None, Loss::CrossEntropy)
        .map_err(|e| e.to_string())?;
    if got.grad.len() != want.len() || got.loss.len() != batch {
        return Err(format!(
            "{} gradient values and {} losses, torch has {} and {batch}",
            got.grad.len(),
            got.loss.len(),
            want.len()
        ));
    }
    let loss_error = got
        .loss
        .iter()
        .zip(&losses)
        .map(|(&h, &t)| (f64::from(h) - t).abs() / t.abs().max(1e-6))
        .fold(0.0, f64::max);
    // A zero reference would compare nothing (a head initialised at zero, say).
    if want.iter().all(|&g| g == 0.0) {
        return Err("torch's gradient is zero: nothing to compare".into());
    }
    Ok(Agreement {
        cosine: cosine(&got.grad, &want),
        loss_error,
    })
}

/// A table cell: one line, no pipes.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| model | family | parameters | torch.onnx export | gradient | cosine vs torch | loss rel. error | torch s | Hardy s |\n\
         |---|---|---:|---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let export = match &r.export {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("fails: {}", cell(e)),
        };
        let (gradient, cos, loss) = match (&r.export, &r.gradient) {
            (Err(_), _) => ("-".to_string(), "-".to_string(), "-".to_string()),
            (Ok(()), Ok(a)) => (
                "yes".to_string(),
                format!("{:.6}", a.cosine),
                format!("{:.1e}", a.loss_error),
            ),
            (Ok(()), Err(e)) => (format!("no: {}", cell(e)), "-".to_string(), "-".to_string()),
        };
        out += &format!(
            "| `{}` | {} | {:.1}M | {export} | {gradient} | {cos} | {loss} | {:.1} | {:.1} |\n",
            r.name,
            r.family,
            r.params as f64 / 1e6,
            r.torch_seconds,
            r.hardy_seconds
        );
    }
    out
}

/// Whether `rows` match the expectations; one message per mismatch.
fn mismatches(rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = |table: &[(&str, &'static str)], name: &str| -> Option<&'static str> {
        table.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
    };
    for r in rows {
        match (&r.export, expected(EXPECTED_EXPORT_FAILURES, &r.name)) {
            (Ok(()), Some(_)) => problems.push(format!(
                "{}: exports now; remove it from EXPECTED_EXPORT_FAILURES",
                r.name
            )),
            (Err(e), None) => problems.push(format!("{}: torch.onnx export failed: {e}", r.name)),
            (Err(e), Some(s)) if !e.contains(s) => problems.push(format!(
                "{}: export failed with {e:?}, which lacks the expected {s:?}",
                r.name
            )),
            _ => {}
        }
        if r.export.is_err() {
            continue;
        }
        match (&r.gradient, expected(EXPECTED_UNSUPPORTED, &r.name)) {
            (Ok(a), Some(_)) => problems.push(format!(
                "{}: differentiates now (cosine {:.6}); remove it from EXPECTED_UNSUPPORTED",
                r.name, a.cosine
            )),
            (Ok(a), None) => {
                if a.cosine.is_nan() || a.cosine < MIN_COSINE {
                    problems.push(format!(
                        "{}: cosine with torch autograd {:.6} < {MIN_COSINE}",
                        r.name, a.cosine
                    ));
                }
                if a.loss_error.is_nan() || a.loss_error > MAX_LOSS_ERROR {
                    problems.push(format!(
                        "{}: loss differs from torch's by {:.2e} (relative) > {MAX_LOSS_ERROR}",
                        r.name, a.loss_error
                    ));
                }
            }
            (Err(e), None) => problems.push(format!("{}: no gradient: {e}", r.name)),
            (Err(e), Some(s)) if !e.contains(s) => {
                problems.push(format!("{}: failed with {e:?}, which lacks the expected {s:?}", r.name))
            }
            (Err(_), Some(_)) => {}
        }
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for (name, _) in EXPECTED_UNSUPPORTED.iter().chain(EXPECTED_EXPORT_FAILURES) {
        if !names.contains(name) {
            problems.push(format!(
                "{name} is listed as expected to fail but the zoo has no such model"
            ));
        }
    }
    problems
}

/// `hardy eval` on the fixed-batch ShuffleNet as a user runs it: the ONNX file with a
/// `config.toml` for its 64-px input beside it, clean and FGSM on a few Fashion-MNIST test
/// images (grey, made RGB and resized by the preprocessing), no `--batch-size`.
fn eval_fixed_batch_model(zoo: &Path, tmp: &Path) -> Result<(), String> {
    let dir = tmp.join("shufflenet-batch1");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.onnx");
    std::fs::copy(zoo.join("shufflenet_v2_batch1.onnx"), &model).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[preprocess]\nresolution = 64\ncrop_pct = 1.0\n",
    )
    .unwrap();
    let out = tmp.join("shufflenet-batch1-eval");
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--suite",
        "clean,fgsm",
        "--eps",
        "8",
        "--data",
        "fashion-mnist:test",
        "--limit",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = hardy(&args, &[]);
    if o.code != 0 {
        return Err(format!(
            "hardy {} failed ({}): {}",
            args.join(" "),
            o.code,
            o.stderr.trim()
        ));
    }
    let text = std::fs::read_to_string(out.join("result.json")).map_err(|e| e.to_string())?;
    let result: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let images = (result["clean"]["images"].as_u64(), result["fgsm"][0]["images"].as_u64());
    if images != (Some(4), Some(4)) {
        return Err(format!("result.json counts {images:?} images, not 4 each: {result}"));
    }
    Ok(())
}

/// The torchvision zoo at random weights, exported by torch.onnx: every model differentiates
/// with torch autograd's gradient (cosine >= 0.999) and loss, except those listed as
/// unsupported, which fail with the listed operator; the fixed-batch ShuffleNet evaluates
/// through the CLI without `--batch-size`.
#[test]
fn torchvision_models_differentiate_and_match_torch_autograd() {
    let tmp = tempfile::tempdir().unwrap();
    let zoo = tmp.path().join("zoo");
    let started = Instant::now();
    crate::common::torch_script("torchvision_zoo.py", &[zoo.as_os_str()]);
    let script_seconds = started.elapsed().as_secs_f64();

    let read_json = |path: PathBuf| -> Value {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let index = read_json(zoo.join("zoo.json"));
    let mut rows = Vec::new();
    for name in index["models"].as_array().expect("models in zoo.json") {
        let name = name.as_str().unwrap();
        let record = read_json(zoo.join(format!("{name}.json")));
        let export = match record["export_error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        };
        let start = Instant::now();
        let gradient = match &export {
            Ok(()) => check(&zoo, name, &record),
            Err(_) => Err("not exported".to_string()),
        };
        rows.push(Row {
            name: name.to_string(),
            family: record["family"].as_str().unwrap_or("").to_string(),
            params: record["params"].as_u64().unwrap_or(0),
            export,
            gradient,
            torch_seconds: record["seconds"].as_f64().unwrap_or(0.0),
            hardy_seconds: start.elapsed().as_secs_f64(),
        });
    }
    let hardy_seconds: f64 = rows.iter().map(|r| r.hardy_seconds).sum();
    let table = markdown(&rows);
    eprintln!(
        "torchvision zoo ({} models; script {script_seconds:.1} s, Hardy {hardy_seconds:.1} s):\n{table}",
        rows.len()
    );
    let table_path = std::env::var_os("HARDY_ZOO_TABLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/zoo-table.md"));
    if let Some(parent) = table_path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&table_path, &table).unwrap();
    eprintln!("wrote {}", table_path.display());

    let mut problems = mismatches(&rows);
    if let Err(e) = eval_fixed_batch_model(&zoo, tmp.path()) {
        problems.push(format!("shufflenet_v2_batch1 through `hardy eval`: {e}"));
    }
    assert!(problems.is_empty(), "torchvision zoo:\n{}", problems.join("\n"));
}
