//! The server's default model as shipped in `models/`: the ONNX file alone (settings from its
//! own metadata, nothing beside it) run by the engine on the 10,000 Fashion-MNIST test images
//! must score what its `training.json` says the trainer measured in burn, and its training
//! config must be the experiment's.

use engine::{
    artifact::ModelArtifact,
    preprocess::{ImageLimits, Preprocessor},
    session::{ModelSession, SessionOptions},
};

use crate::common::{root, runtime};

/// The default model: the one the README's commands use.
pub const DEFAULT_MODEL: &str = "models/fashion-mnist-effnet";

/// The MEAL V2 student of the distillation experiment (trainer/README.md).
pub const DISTILLED_MODEL: &str = "models/fashion-mnist-resnet-meal";

#[test]
fn default_model_scores_its_recorded_test_accuracy_through_the_engine() {
    let experiment =
        std::fs::read_to_string(root().join("trainer/experiments/fashion-mnist-noisy-student.toml")).unwrap();
    scores_recorded_accuracy(DEFAULT_MODEL, Some(&experiment));
}

#[test]
fn distilled_model_scores_its_recorded_test_accuracy_through_the_engine() {
    scores_recorded_accuracy(DISTILLED_MODEL, None);
}

/// Runs the highest version of `model` on the 10,000 test images through the engine and
/// compares with its `training.json`; `experiment`, when given, must equal its `training.toml`.
fn scores_recorded_accuracy(model: &str, experiment: Option<&str>) {
    let dir = root().join(model);
    let artifact = ModelArtifact::open(&dir, None).unwrap();
    assert!(artifact.self_described, "the exporter's metadata describes the model");
    assert!(artifact.config_path.is_none(), "no config.toml is needed");
    let version = dir.join(artifact.version.unwrap().to_string());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(version.join("training.json")).unwrap()).unwrap();
    let recorded = record["test_top1"].as_f64().expect("training.json: test_top1");
    let config = std::fs::read_to_string(version.join("training.toml")).unwrap();
    if let Some(experiment) = experiment {
        assert_eq!(config, experiment, "training.toml is the experiment's config");
    }

    let data = data::fetch::fashion_mnist().expect("Fashion-MNIST");
    let f = data::fetch::FASHION_MNIST_FILES;
    let test = trainer::data::read_idx(data.join(f[2]), data.join(f[3]), None).unwrap();
    let mut session = ModelSession::load(&runtime(), &artifact, &SessionOptions::default()).unwrap();
    let mut pre = Preprocessor::new(artifact.config.preprocess_spec(), ImageLimits::default()).unwrap();
    let len = session.image_len();
    let batch = 500;
    let mut correct = 0usize;
    for start in (0..test.len()).step_by(batch) {
        let n = batch.min(test.len() - start);
        let mut input = vec![0f32; n * len];
        for i in 0..n {
            let img = test.rgb(start + i).unwrap();
            pre.preprocess_image(&img, &mut input[i * len..(i + 1) * len]).unwrap();
        }
        let logits = session.infer(&input, n).unwrap();
        for (i, row) in logits.rows().enumerate() {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k)
                .unwrap();
            correct += usize::from(Some(best) == test.label(start + i));
        }
    }
    let top1 = correct as f64 / test.len() as f64;
    println!("{model}: {correct}/10000 through ONNX Runtime, {recorded} recorded in burn");
    // burn (f32, unfolded BatchNorm) and ONNX Runtime (folded) may flip a handful of
    // near-ties; a preprocessing mismatch would cost far more.
    assert!((top1 - recorded).abs() <= 0.001, "{top1} vs recorded {recorded}");
}
