//! The trainer through the real `hardy` binary: `hardy train supervised` on real
//! Fashion-MNIST, `hardy export` of the run, and the exported file classified by
//! `hardy classify` with no config beside it. Bad configs give clear errors.

use std::path::Path;

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

/// `hardy train supervised --config CFG --out RUN EXTRA...`.
fn train_supervised(cfg: &Path, run: &Path, extra: &[&str]) -> crate::cli::Output {
    let mut args = vec![
        "train",
        "supervised",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(extra);
    hardy(&args, &[])
}

#[test]
fn train_export_classify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(&cfg, config(2)).unwrap();
    let run = dir.path().join("run");
    let out = train_supervised(&cfg, &run, &[]);
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

    // The exported model teaches: MEAL V2 without labels on the 600 labelled images plus 400
    // of the split's unlabelled ones, one epoch of 20 batches of 50, so the teacher labels
    // 1,000 images; without `unlabelled` it would see only the 600.
    let distill = format!(
        "{}\n[train.distill]\nteachers = [{:?}]\nunlabelled = true\n",
        config(1).replace(
            "labelled_per_class = 60",
            "labelled_per_class = 60\nunlabelled_limit = 400"
        ),
        model_dir
    );
    std::fs::write(&cfg, &distill).unwrap();
    let student = dir.path().join("student");
    let args = [
        "train",
        "distill",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        student.to_str().unwrap(),
    ];
    let out = hardy(&args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("teacher inference: 1000 images"), "{}", out.stdout);
    // Unlabelled images have no hard label to mix in.
    std::fs::write(
        &cfg,
        distill.replace("unlabelled = true", "unlabelled = true\nlabel_weight = 0.5"),
    )
    .unwrap();
    let out = hardy(&args, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("label_weight = 0"), "{}", out.stderr);
}

#[test]
fn bad_train_configs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, config(0)).unwrap();
    let run = dir.path().join("run");
    let out = train_supervised(&cfg, &run, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("epochs"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    std::fs::write(&cfg, "[model]\nfamily = \"transformer\"\n").unwrap();
    let out = train_supervised(&cfg, &run, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);
    let out = hardy(&["export", dir.path().to_str().unwrap(), "--out", "x.onnx"], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("model.json"), "{}", out.stderr);
}

/// `hardy train --backend tch`: in a build with the `tch` feature it trains on LibTorch, and
/// the run exports and classifies like a flex run; without the feature, and for devices this
/// machine lacks, it stops before training with a message that says what to do.
#[test]
fn train_on_libtorch_or_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(&cfg, config(1)).unwrap();
    let run = dir.path().join("run");
    let train = |extra: &[&str]| train_supervised(&cfg, &run, extra);
    let out = train(&["--backend", "flex", "--device", "cuda"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("flex on cuda:0") && out.stderr.contains("--backend tch"),
        "{}",
        out.stderr
    );
    let out = train(&["--backend", "torch"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("expected flex or tch"), "{}", out.stderr);
    let out = train(&["--backend", "tch", "--device", "cuda:0"]);
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    if cfg!(feature = "tch") {
        // The CPU libtorch the tests link (scripts/torch-env.sh) sees no GPU.
        assert!(out.stderr.contains("no CUDA device"), "{}", out.stderr);
    } else {
        assert!(out.stderr.contains("`tch` feature"), "{}", out.stderr);
    }
    assert!(
        !run.join("model.bpk").exists(),
        "nothing is trained on a device that is missing"
    );
    let out = train(&["--backend", "tch"]);
    if !cfg!(feature = "tch") {
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("scripts/with-libtorch.sh"), "{}", out.stderr);
        return;
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("trained 1 epochs"), "{}", out.stdout);
    let onnx = dir.path().join("models/fmnist/1/model.onnx");
    let out = hardy(&["export", run.to_str().unwrap(), "--out", onnx.to_str().unwrap()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sample = crate::common::root().join("samples/fashion-mnist/test00002-trouser.png");
    let model_dir = dir.path().join("models/fmnist");
    let out = hardy(
        &[
            "classify",
            "--model",
            model_dir.to_str().unwrap(),
            sample.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `hardy import lite0` writes an ONNX file that `hardy classify` serves with the given class
/// names: the foolbox ImageNet photos come out as their labelled class (label in the name).
#[test]
fn import_lite0_then_classify() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    let names: Vec<String> = (0..1000).map(|i| format!("class-{i}")).collect();
    std::fs::write(&labels, names[..999].join("\n")).unwrap();
    let onnx = dir.path().join("lite0/1/model.onnx");
    let import = |labels: &std::path::Path| {
        hardy(
            &[
                "import",
                "lite0",
                "--out",
                onnx.to_str().unwrap(),
                "--labels",
                labels.to_str().unwrap(),
            ],
            &[],
        )
    };
    let out = import(&labels);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("999 class names"), "{}", out.stderr);
    std::fs::write(&labels, names.join("\n")).unwrap();
    let out = import(&labels);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let samples = data::fetch::foolbox_imagenet_samples().expect("foolbox samples");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    let model_dir = dir.path().join("lite0");
    let mut args = vec!["classify", "--model", model_dir.to_str().unwrap(), "--top-k", "1"];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = hardy(&args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let correct = files
        .iter()
        .filter(|f| {
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            let label: usize = stem.rsplit('_').next().unwrap().parse().unwrap();
            let block = out.stdout.split(&f.display().to_string()).nth(1).unwrap_or("");
            let first = block.lines().nth(1).unwrap_or("");
            first.contains(&format!("class-{label} ({label})"))
        })
        .count();
    assert!(correct >= 16, "{correct}/20 correct:\n{}", out.stdout);
}
