//! `hardy train`: supervised training and Noisy Student runs from a config file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use serde::Deserialize;
use trainer::noisy_student::{self, DataConfig, NoisyStudentConfig, StageConfig};
use trainer::train::{RunDir, TrainData, evaluate, train};
use trainer::{Backend, Processor, TrainDevice};

/// `hardy train` arguments.
#[derive(ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// burn backend: flex (pure Rust, CPU) or tch (LibTorch: PyTorch's kernels, CPU and CUDA;
    /// needs a build with `--features tch`). Checkpoints and exports are the same from both.
    #[arg(long, global = true, default_value = "flex")]
    backend: Backend,
    /// Where the backend runs: cpu, cuda or cuda:N (CUDA with --backend tch only).
    #[arg(long, global = true, default_value = "cpu")]
    device: Processor,
}

#[derive(Subcommand)]
enum Mode {
    /// Train one model on labelled images (`[data]`, `[model]`, `[train]` in the config).
    Supervised {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Run directory (checkpoints, metrics); an interrupted run resumes from it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Distillation (MEAL V2 or knowledge distillation): a supervised run whose `[train.distill]`
    /// names ONNX teachers; the student may start from a run (`train.init_from`).
    Distill {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Run directory (checkpoints, metrics, the teacher cache); an interrupted run resumes.
        #[arg(long)]
        out: PathBuf,
    },
    /// Noisy Student: teacher, pseudo-labels, noised student, iterations
    /// (`[data]`, `[teacher]`, `[student]`, `[pseudo]`, `iterations`).
    NoisyStudent {
        /// TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Run directory; finished stages are skipped and the unfinished one resumes.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisedConfig {
    data: DataConfig,
    #[serde(flatten)]
    stage: StageConfig,
}

/// Runs `hardy train`.
pub fn run(args: Args) -> Result<std::process::ExitCode> {
    let distill = matches!(args.mode, Mode::Distill { .. });
    let chosen = TrainDevice {
        backend: args.backend,
        processor: args.device,
    };
    let device = chosen.device()?;
    tracing::info!("training with {chosen}");
    match args.mode {
        Mode::Supervised { config, out } | Mode::Distill { config, out } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let c: SupervisedConfig =
                toml::from_str(&text).with_context(|| format!("invalid config {}", config.display()))?;
            c.stage.train.validate()?;
            if distill != c.stage.train.distill.is_some() {
                anyhow::bail!(
                    "{}: `hardy train distill` needs a [train.distill] section and `hardy train supervised` must not have one",
                    config.display()
                );
            }
            let data = c.data.load()?;
            let run = RunDir::new(&out)?;
            // MEAL V2 on unlabelled images: they join the labelled ones; the loss reads no label.
            let joined;
            let train_set = match &c.stage.train.distill {
                Some(d) if d.unlabelled => {
                    if data.unlabelled.is_empty() {
                        anyhow::bail!(
                            "{}: distill `unlabelled` is set but the split leaves no unlabelled image (set [data] labelled_per_class)",
                            config.display()
                        );
                    }
                    joined = data.labelled.concat(&data.unlabelled)?;
                    &joined
                }
                _ => &data.labelled,
            };
            let teachers = trainer::distill::teachers_for_run(&c.stage.train, train_set, &data.normalize, &run)?;
            let (model, history) = train(
                &c.stage.model,
                &c.stage.train,
                &TrainData {
                    labelled: train_set,
                    pseudo: None,
                    eval: Some(&data.test),
                    normalize: &data.normalize,
                    teachers: teachers.as_ref(),
                },
                &run,
                &device,
            )?;
            let top1 = evaluate(&model, &data.test, &data.normalize)?;
            println!(
                "trained {} epochs; test top-1 {:.2}%; weights in {}",
                history.len(),
                top1 * 100.0,
                run.weights().display()
            );
            if let Some(t) = &teachers {
                println!("teacher inference: {} images", t.inferred_images());
            }
        }
        Mode::NoisyStudent { config, out } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let c = NoisyStudentConfig::from_toml(&text, &config.display().to_string())?;
            let reports = noisy_student::run(&c, &out, &device)?;
            println!(
                "{:<12} {:>10} {:>10} {:>14} {:>10}",
                "stage", "params", "top-1 %", "pseudo images", "minutes"
            );
            for r in &reports {
                println!(
                    "{:<12} {:>10} {:>10.2} {:>14} {:>10.1}",
                    r.stage,
                    r.params,
                    r.test_top1 * 100.0,
                    r.pseudo_images,
                    r.seconds / 60.0
                );
            }
            println!("summary: {}", out.join("summary.json").display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
