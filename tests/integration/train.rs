//! The trainer through the real `hardy` binary: `hardy train supervised` on real
//! Fashion-MNIST, `hardy export` of the run, and the exported file classified by
//! `hardy classify` with no config beside it. Bad configs give clear errors.

use crate::cli::hardy;

fn config(epochs: usize) -> String {
    format!(
        r#"
[data]
labelled_per_class = 60
[data.source]
format = "fashion-mnist"

[model]
family = "efficientnet"
stages = [{{ expand = 1, kernel = 3, stride = 2, channels = 16, repeats = 1 }},
          {{ expand = 4, kernel = 3, stride = 2, channels = 32, repeats = 1 }}]
width = 0.5
depth = 1.0
stem_channels = 32
stem_stride = 1
head_channels = 64
lite = false
se_ratio = 0.25
dropout = 0.1
drop_path_rate = 0.1
in_channels = 1
num_classes = 10
resolution = 28
bn_momentum = 0.1

[train]
epochs = {epochs}
batch_size = 50
seed = 3
"#
    )
}

#[test]
fn train_export_classify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(&cfg, config(2)).unwrap();
    let run = dir.path().join("run");
    let out = hardy(
        &[
            "train",
            "supervised",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("trained 2 epochs"), "{}", out.stdout);
    let onnx = dir.path().join("models/fmnist/1/model.onnx");
    let out = hardy(&["export", run.to_str().unwrap(), "--out", onnx.to_str().unwrap()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model_dir = dir.path().join("models/fmnist");
    let sample = "samples/fashion-mnist/";
    let files: Vec<String> = std::fs::read_dir(crate::common::root().join(sample))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut args = vec!["classify", "--model", model_dir.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let out = hardy(&args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Labels and preprocessing come from the file's own metadata.
    assert!(
        ["T-shirt/top", "Trouser", "Sneaker", "Bag", "Ankle boot"]
            .iter()
            .any(|l| out.stdout.contains(l)),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_train_configs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, config(0)).unwrap();
    let run = dir.path().join("run");
    let out = hardy(
        &[
            "train",
            "supervised",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("epochs"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    std::fs::write(&cfg, "[model]\nfamily = \"transformer\"\n").unwrap();
    let out = hardy(
        &[
            "train",
            "supervised",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);
    let out = hardy(&["export", dir.path().to_str().unwrap(), "--out", "x.onnx"], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("model.json"), "{}", out.stderr);
}
