//! `hardy inspect`: what an ONNX file contains, and how Hardy would serve it.

use std::path::PathBuf;

use anyhow::Result;
use engine::{artifact::ModelArtifact, onnx};

/// Arguments of `hardy inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// An ONNX file, or a model directory from the repository.
    model: PathBuf,
}

pub fn run(args: Args) -> Result<std::process::ExitCode> {
    let artifact = ModelArtifact::open(&args.model, None);
    let path = match &artifact {
        Ok(a) => a.model_path.clone(),
        Err(_) => args.model.clone(),
    };
    let model = onnx::read_model(&path)?;
    print!("{}", onnx::ModelInfo::from_model(&model));
    match artifact {
        Ok(a) => {
            let spec = a.config.preprocess_spec();
            println!("\nServed by Hardy as {} with:", a.display_name());
            println!("  config: {}", describe_sources(&a));
            println!(
                "  preprocess: resize shorter side to {}, centre-crop {}x{}, {:?}, {:?} {:?}, mean {:?}, std {:?}",
                spec.resize_size,
                spec.crop_height,
                spec.crop_width,
                spec.interpolation,
                spec.color,
                spec.layout,
                spec.mean,
                spec.std
            );
            println!(
                "  labels: {}",
                if a.config.labels.is_empty() {
                    "none (classes by index)".to_string()
                } else {
                    a.config.labels.len().to_string()
                }
            );
        }
        Err(e) => println!("\nNot servable by Hardy as it is: {e}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn describe_sources(a: &ModelArtifact) -> String {
    let mut parts = vec!["defaults".to_string()];
    if a.self_described {
        parts.push(format!("metadata {}", engine::config::METADATA_KEY));
    }
    if let Some(p) = &a.config_path {
        parts.push(p.display().to_string());
    }
    parts.join(" < ")
}
