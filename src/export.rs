//! `hardy export`: a trained run directory to an ONNX model the engine serves as it is.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use engine::config::ModelConfig;
use engine::preprocess::Interpolation;
use trainer::export::{ExportOptions, export};
use trainer::train::{StageInfo, load_weights};

/// `hardy export` arguments.
#[derive(ClapArgs)]
pub struct Args {
    /// A run directory written by `hardy train` (holds `model.bpk` and `model.json`).
    run: PathBuf,
    /// The ONNX file to write, e.g. `models/NAME/1/model.onnx`.
    #[arg(long)]
    out: PathBuf,
    /// ONNX opset (13 to 21).
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// A description stored in the file.
    #[arg(long, default_value = "")]
    doc: String,
}

/// Runs `hardy export`.
pub fn run(args: Args) -> Result<std::process::ExitCode> {
    let info = StageInfo::read(&args.run)?;
    let weights = args.run.join("model.bpk");
    let model = load_weights(&info.spec, &weights, &trainer::default_device())
        .with_context(|| format!("loading {}", weights.display()))?;
    let mut config = ModelConfig {
        labels: info.class_names.clone(),
        ..ModelConfig::default()
    };
    // Trained on whole images at the model's resolution: resize to it, no crop margin.
    config.preprocess.crop_pct = 1.0;
    config.preprocess.interpolation = Interpolation::Bilinear;
    config.preprocess.mean = info.mean.clone();
    config.preprocess.std = info.std.clone();
    let mut options = ExportOptions::new(config);
    options.opset = args.opset;
    options.doc = if args.doc.is_empty() {
        info.spec.describe()
    } else {
        args.doc
    };
    export(&model, &info.spec, &options, &args.out)?;
    println!("wrote {} ({})", args.out.display(), info.spec.describe());
    Ok(std::process::ExitCode::SUCCESS)
}
