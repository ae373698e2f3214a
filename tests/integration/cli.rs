//! The real `hardy` binary: classification of the shipped model checked against a direct
//! computation, `inspect`, and every bad input giving a clear error and no panic.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use engine::{classify::softmax, config::ModelConfig, onnx};

use crate::common::{root, runtime};

pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn hardy(args: &[&str], env: &[(&str, &str)]) -> Output {
    runtime(); // make sure the library is provisioned before the child looks for it
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hardy"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("HARDY_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hardy");
    let o = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hardy {args:?} panicked:\n{}", o.stderr);
    o
}

/// Runs `hardy`, expects failure, and checks stderr holds every `needle`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let o = hardy(args, &[]);
    assert_eq!(
        o.code, 1,
        "hardy {args:?} should fail\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "hardy {args:?}: stderr lacks {n:?}:\n{}",
            o.stderr
        );
    }
}

const MODEL: &str = "models/fashion-mnist-linear";

fn samples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("samples/fashion-mnist"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v
}

fn initializer(model: &onnx_protobuf::ModelProto, name: &str) -> Vec<f32> {
    let t = model.graph.initializer.iter().find(|t| t.name == name).expect(name);
    if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    }
}

#[test]
fn classify_shipped_model_matches_direct_computation() {
    let files = samples();
    assert_eq!(files.len(), 10, "one sample per Fashion-MNIST class");
    let mut args = vec!["classify", "--model", MODEL];
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    args.extend(names.iter().map(String::as_str));
    let o = hardy(&args, &[]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("fashion-mnist-linear:1") && o.stdout.contains("on cpu"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("10 image(s) classified, 0 failed"), "{}", o.stdout);

    // The same logits computed by hand from the ONNX initializers and the PNG pixels.
    let model_path = root().join(MODEL).join("1/model.onnx");
    let model = onnx::read_model(&model_path).unwrap();
    let (w, b) = (initializer(&model, "weight"), initializer(&model, "bias"));
    let meta = model
        .metadata_props
        .iter()
        .find(|p| p.key == engine::config::METADATA_KEY)
        .unwrap();
    let cfg = ModelConfig::from_toml(&meta.value, "metadata").unwrap();
    let (mean, std) = (cfg.preprocess.mean[0], cfg.preprocess.std[0]);
    let mut correct = 0;
    for (name, path) in names.iter().zip(&files) {
        let img = image::open(path).unwrap().to_luma8();
        let x: Vec<f32> = img.pixels().map(|p| (p.0[0] as f32 / 255.0 - mean) / std).collect();
        let logits: Vec<f32> = (0..10)
            .map(|c| {
                b[c] + w[c * 784..(c + 1) * 784]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
            })
            .collect();
        let probs = softmax(&logits);
        let best = (0..10).max_by(|&a, &c| probs[a].total_cmp(&probs[c])).unwrap();
        let block = o
            .stdout
            .split(&format!("\n{name}  "))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} missing:\n{}", o.stdout));
        let first = block.lines().nth(1).unwrap();
        let expected = format!("1. {:>7.4}  {} ({best})", probs[best], cfg.labels[best]);
        assert!(
            first.trim_start().starts_with(&expected),
            "{name}: printed {first:?}, direct computation gives {expected:?}"
        );
        correct += usize::from(name.contains(&cfg.labels[best].to_lowercase().replace([' ', '/'], "-")));
    }
    println!("shipped model: {correct}/10 samples correct");
    assert!(
        correct >= 7,
        "the baseline scores ~84% on the test set; {correct}/10 here"
    );
}

#[test]
fn inspect_shows_signature_ops_and_metadata() {
    let o = hardy(&["inspect", MODEL], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for needle in [
        "Gemm",
        "Flatten",
        "input",
        "[batch, 1, 28, 28]",
        "logits",
        "hardy.config",
        "7,850",
        "Served by Hardy as fashion-mnist-linear:1",
    ] {
        assert!(o.stdout.contains(needle), "inspect lacks {needle:?}:\n{}", o.stdout);
    }
}

/// A PNG whose header claims 100000 x 100000 pixels (valid signature and IHDR CRC).
pub(crate) fn huge_png_header() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png.extend(0u32.to_be_bytes());
    png.extend(b"IDAT");
    png.extend(crc32(b"IDAT").to_be_bytes());
    png
}

/// `hardy classify` batches a 224 px RGB model by the CPU's default (4) when nothing sets the
/// batch; an explicit `--batch-size` is taken as given, capped only by a `max_batch_size` that
/// the model's config.toml sets.
#[test]
fn classify_batch_size_is_the_default_the_flag_or_the_configured_cap() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide");
    let onnx =
        crate::common::TinyCnn::new(3, 2, 4, 224, 43).write(&model, false, &crate::common::config_for(224, 3, 4), 17);
    let images: Vec<String> = (0..6)
        .map(|i| {
            let path = dir.path().join(format!("{i}.png"));
            image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([(x + i) as u8, y as u8, 7]))
                .save(&path)
                .unwrap();
            path.display().to_string()
        })
        .collect();
    let batches = |extra: &[&str]| -> Vec<usize> {
        let mut args = vec!["classify", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(images.iter().map(String::as_str));
        let o = hardy(&args, &[]);
        assert_eq!(o.code, 0, "{args:?}: {}\n{}", o.stdout, o.stderr);
        o.stdout
            .split("for a batch of ")
            .skip(1)
            .map(|rest| rest.split(')').next().and_then(|n| n.parse().ok()).unwrap())
            .collect()
    };
    assert_eq!(batches(&[]), [4, 4, 4, 4, 2, 2]);
    assert_eq!(batches(&["--batch-size", "6"]), [6; 6]);
    std::fs::write(onnx.with_file_name("config.toml"), "[batching]\nmax_batch_size = 3\n").unwrap();
    assert_eq!(batches(&["--batch-size", "6"]), [3; 6]);
    assert_eq!(batches(&[]), [3; 6]);
}

/// `hardy classify --json`: one JSON object per image on stdout, with the HTTP answer's
/// fields, the same classes as the text output, and an `error` object for a bad file.
#[test]
fn classify_json_prints_one_object_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let good: Vec<String> = samples()[..3].iter().map(|p| p.display().to_string()).collect();
    let bad = bad.display().to_string();
    let args = [
        "classify", "--model", MODEL, "--json", "--top-k", "3", &good[0], &bad, &good[1], &good[2],
    ];
    let o = hardy(&args, &[]);
    assert_eq!(o.code, 1, "one file is bad: {}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("3 image(s) classified, 1 failed"), "{}", o.stderr);
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 4, "{}", o.stdout);
    let error = lines
        .iter()
        .find(|l| l["name"] == bad.as_str())
        .expect("the bad file's line");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("notes.png")),
        "{error}"
    );
    let text = hardy(
        &[
            "classify", "--model", MODEL, "--top-k", "3", &good[0], &good[1], &good[2],
        ],
        &[],
    );
    for name in &good {
        let line = lines
            .iter()
            .find(|l| l["name"] == name.as_str())
            .expect("a line per image");
        assert_eq!(line["model_name"], "fashion-mnist-linear");
        assert_eq!(line["model_version"], "1");
        assert_eq!(line["device"], "cpu");
        let predictions = line["predictions"].as_array().expect("predictions");
        assert_eq!(predictions.len(), 3);
        let top = &predictions[0];
        let block = text.stdout.split(&format!("\n{name}  ")).nth(1).expect("text block");
        let first = block.lines().nth(1).unwrap_or_default().trim_start().to_string();
        let expected = format!(
            "1. {:>7.4}  {} ({})",
            top["score"].as_f64().unwrap_or(f64::NAN),
            top["label"].as_str().unwrap_or("-"),
            top["index"]
        );
        assert!(
            first.starts_with(&expected),
            "{name}: text {first:?}, JSON {expected:?}"
        );
    }
}

#[test]
fn bad_images_give_clear_errors_and_the_good_ones_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let photos = data::fetch::foolbox_imagenet_samples().unwrap();
    let jpeg = std::fs::read(photos.join("imagenet_00_243.jpg")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let cases = [
        (write("truncated.jpg", &jpeg[..jpeg.len() * 2 / 5]), "truncated.jpg"),
        (write("empty.png", b""), "empty.png"),
        (write("huge.png", &huge_png_header()), "100000"),
        (write("notes.jpg", b"just some text, not an image\n"), "notes.jpg"),
    ];
    let good = samples()[0].display().to_string();
    for (path, needle) in &cases {
        let o = hardy(&["classify", "--model", MODEL, path, &good], &[]);
        assert_eq!(o.code, 1, "{path}: {}", o.stderr);
        assert!(
            o.stderr.contains(needle),
            "{path}: stderr lacks {needle:?}:\n{}",
            o.stderr
        );
        assert!(
            o.stdout.contains("1 image(s) classified, 1 failed"),
            "{path}: {}",
            o.stdout
        );
    }
    fails_with(
        &["classify", "--model", MODEL, "/nonexistent/cat.jpg"],
        &["/nonexistent/cat.jpg"],
    );
}

#[test]
fn bad_models_and_configs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = samples()[0].display().to_string();
    fails_with(
        &["classify", "--model", "models/no-such-model", &img],
        &["models/no-such-model", "no such file"],
    );

    let not_model = dir.path().join("text.onnx");
    std::fs::write(&not_model, "hello, I am not an ONNX model\n").unwrap();
    fails_with(
        &["classify", "--model", not_model.to_str().unwrap(), &img],
        &["text.onnx"],
    );
    fails_with(&["inspect", not_model.to_str().unwrap()], &["text.onnx"]);

    let version = dir.path().join("m/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(root().join(MODEL).join("1/model.onnx"), version.join("model.onnx")).unwrap();
    std::fs::write(version.join("config.toml"), "[preprocess]\nresolutoin = 28\n").unwrap();
    let m = dir.path().join("m");
    fails_with(
        &["classify", "--model", m.to_str().unwrap(), &img],
        &["config.toml", "resolutoin"],
    );
    std::fs::write(version.join("config.toml"), "[preprocess]\nstd = [0.0]\n").unwrap();
    fails_with(
        &["classify", "--model", m.to_str().unwrap(), &img],
        &["preprocess.std", "> 0"],
    );
    fails_with(
        &["classify", "--model", m.to_str().unwrap(), "--model-version", "7", &img],
        &["version 7 not found"],
    );
}

#[test]
fn devices_are_reported_and_strictness_is_honoured() {
    let img = samples()[0].display().to_string();
    let o = hardy(&["classify", "--model", MODEL, "--device", "cuda", &img], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("on cpu") && o.stderr.contains("falling back to CPU"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    fails_with(
        &[
            "classify",
            "--model",
            MODEL,
            "--device",
            "cuda:1",
            "--strict-device",
            &img,
        ],
        &["cannot run on cuda:1"],
    );
    // A device that is not one is refused where it enters, by the argument parser: a usage
    // error (exit status 2) that names it.
    let o = hardy(&["classify", "--model", MODEL, "--device", "tpu", &img], &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("invalid device \"tpu\""), "{}", o.stderr);
}

/// With `HARDY_OFFLINE`, nothing is fetched: what is missing from the cache is an error that
/// names it and the setting.
#[test]
fn offline_fetches_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let cache = empty.path().join("cache");
    let out = empty.path().join("lite0/1/model.onnx");
    let o = hardy(
        &["import", "lite0", "--out", out.to_str().unwrap()],
        &[("HARDY_OFFLINE", "1"), ("HARDY_CACHE_DIR", cache.to_str().unwrap())],
    );
    assert_eq!(o.code, 1, "{}", o.stdout);
    for needle in ["not in Hardy's cache", "HARDY_OFFLINE", "=="] {
        assert!(o.stderr.contains(needle), "lacks {needle:?}: {}", o.stderr);
    }
    assert!(!o.stderr.contains("fetching"), "{}", o.stderr);
    assert!(!out.exists() && !cache.join("efficientnet-lite0").exists());
}

#[test]
fn missing_runtime_offline_says_how_to_provide_it() {
    let empty = tempfile::tempdir().unwrap();
    let img = samples()[0].display().to_string();
    let cache: &Path = empty.path();
    let o = hardy(
        &["classify", "--model", MODEL, &img],
        &[("HARDY_OFFLINE", "1"), ("HARDY_CACHE_DIR", cache.to_str().unwrap())],
    );
    assert_eq!(o.code, 1, "{}", o.stdout);
    for needle in ["ONNX Runtime 1.31.1 was not found", "ORT_DYLIB_PATH", "hardy setup"] {
        assert!(o.stderr.contains(needle), "lacks {needle:?}: {}", o.stderr);
    }
    let o = hardy(
        &[
            "--ort-library",
            "/nowhere/libonnxruntime.so",
            "classify",
            "--model",
            MODEL,
            &img,
        ],
        &[],
    );
    assert!(
        o.code == 1 && o.stderr.contains("/nowhere/libonnxruntime.so"),
        "{}",
        o.stderr
    );
}
