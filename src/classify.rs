//! `hardy classify`: preprocess images, run them through a model in batches, print the top-k.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use engine::{
    artifact::ModelArtifact,
    classify::top_k,
    device::{Device, DevicePolicy},
    preprocess::{ImageLimits, Preprocessor},
    runtime::{self, RuntimeOptions},
    session::{ModelSession, SessionOptions},
};

/// Arguments of `hardy classify`.
#[derive(clap::Args)]
pub struct Args {
    /// A model directory (`models/NAME`, highest version), a version directory, or an ONNX file.
    #[arg(long, short)]
    model: PathBuf,
    /// Use this version of the model directory instead of the highest.
    #[arg(long)]
    model_version: Option<u64>,
    /// `cpu`, `cuda` (or `gpu`) or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Fail instead of falling back to CPU when the device cannot be used.
    #[arg(long)]
    strict_device: bool,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Images per inference run, at most the model's fixed batch or its config's
    /// max_batch_size (default: that max_batch_size; unset, 32, or fewer for large inputs on
    /// the CPU).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Print one JSON object per image on stdout (JSON Lines), with the fields of the HTTP
    /// classify answer: `name` (the path), `model_name`, `model_version`, `device` and
    /// `predictions` (`index`, `label`, `score`), or `name` and `error` for an image that
    /// failed. Timings and the summary go to stderr.
    #[arg(long)]
    json: bool,
    /// Images to classify (JPEG, PNG, WebP, BMP, GIF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

struct Prepared {
    path: PathBuf,
    tensor: Vec<f32>,
    preprocess: Duration,
}

pub fn run(args: Args, runtime_options: &RuntimeOptions) -> Result<ExitCode> {
    let device = args.device;
    let t0 = Instant::now();
    let artifact = ModelArtifact::open(&args.model, args.model_version)?;
    let rt = runtime::init(runtime_options)?;
    let options = SessionOptions {
        device,
        policy: if args.strict_device {
            DevicePolicy::Strict
        } else {
            DevicePolicy::FallBackToCpu
        },
        intra_threads: args.threads,
        ..SessionOptions::default()
    };
    let mut session = ModelSession::load(&rt, &artifact, &options)?;
    let load = t0.elapsed();
    let json = args.json;
    // In JSON mode stdout holds only the JSON lines; the human-readable lines go to stderr.
    macro_rules! say {
        ($($arg:tt)*) => {
            if json { eprintln!($($arg)*) } else { println!($($arg)*) }
        };
    }
    say!(
        "model {} ({}) on {}; ONNX Runtime {} from {}; loaded in {}",
        artifact.display_name(),
        artifact.model_path.display(),
        session.device(),
        runtime::ORT_VERSION,
        rt.library().display(),
        ms(load)
    );

    let spec = artifact.config.preprocess_spec();
    let mut pre = Preprocessor::new(spec, ImageLimits::default())?;
    let mut failures = 0usize;
    let mut prepared = Vec::new();
    for path in &args.images {
        let t = Instant::now();
        let mut tensor = vec![0f32; session.image_len()];
        let result = read_limited(path, pre.limits().max_bytes)
            .and_then(|bytes| pre.preprocess(&bytes, &mut tensor).map_err(anyhow::Error::from))
            .with_context(|| format!("{}", path.display()));
        match result {
            Ok(()) => prepared.push(Prepared {
                path: path.clone(),
                tensor,
                preprocess: t.elapsed(),
            }),
            Err(e) => {
                failures += 1;
                let text = crate::error_text(&e);
                if json {
                    let line = serde_json::json!({ "name": path.display().to_string(), "error": text });
                    println!("{line}");
                } else {
                    eprintln!("error: {text}");
                }
            }
        }
    }

    // A --batch-size is capped only by what the model or its config fixes (a fixed batch
    // dimension, a max_batch_size that was set); without one, the device's default applies.
    let batching = &artifact.config.batching;
    let cap = [session.fixed_batch(), batching.max_batch_size]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(usize::MAX);
    let batch_size = match args.batch_size {
        Some(n) => n.clamp(1, cap),
        None => batching.max_batch(session.device(), session.image_len()).min(cap),
    };
    let (mut total_pre, mut total_infer) = (Duration::ZERO, Duration::ZERO);
    for chunk in prepared.chunks(batch_size) {
        let input: Vec<f32> = chunk.iter().flat_map(|p| p.tensor.iter().copied()).collect();
        let t = Instant::now();
        let logits = session.infer_any(&input, chunk.len())?;
        let infer = t.elapsed();
        total_infer += infer;
        for (i, p) in chunk.iter().enumerate() {
            total_pre += p.preprocess;
            let predictions = top_k(logits.row(i), args.top_k, &artifact.config.labels);
            if json {
                let line = serde_json::json!({
                    "name": p.path.display().to_string(),
                    "model_name": artifact.name,
                    "model_version": artifact.version.map(|v| v.to_string()),
                    "device": session.device().to_string(),
                    "predictions": predictions,
                });
                println!("{line}");
                continue;
            }
            println!(
                "\n{}  (decode+preprocess {}, inference {} for a batch of {})",
                p.path.display(),
                ms(p.preprocess),
                ms(infer),
                chunk.len()
            );
            for (rank, pred) in predictions.iter().enumerate() {
                let label = pred.label.as_deref().unwrap_or("-");
                println!("  {:>2}. {:>7.4}  {label} ({})", rank + 1, pred.score, pred.index);
            }
        }
    }
    say!(
        "\n{} image(s) classified, {failures} failed; load {}, preprocess {}, inference {}, total {}",
        prepared.len(),
        ms(load),
        ms(total_pre),
        ms(total_infer),
        ms(t0.elapsed())
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads a file after checking its size, so a huge file is refused before it is read.
fn read_limited(path: &std::path::Path, max_bytes: usize) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > max_bytes as u64 {
        anyhow::bail!("the file is {len} bytes; at most {max_bytes} bytes are accepted");
    }
    Ok(std::fs::read(path)?)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
