//! `hardy eval` (robustness of one model: clean, corruptions, perturbations, ImageNet-A/R,
//! FGSM, PGD) and `hardy eval merge` (add up the shards of one evaluation).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
};

use anyhow::{Context, Result, bail};
use engine::{
    artifact::ModelArtifact,
    device::{Device, DevicePolicy},
    runtime::{self, RuntimeOptions},
    session::SessionOptions,
};
use eval::{
    Corruption, Perturbation,
    autoattack::{AttackName, AutoAttackOptions, Norm},
    corrupt::FrostSource,
    dataset::Shard,
    result::EvalResult,
    suite::{EvalOptions, Evaluator, Observer, Suite},
};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `hardy eval`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum EvalCommand {
    /// Add up the output directories of `--shard i/n` runs into one result and report.
    Merge {
        /// Where the merged result and report go.
        #[arg(long)]
        out: PathBuf,
        /// The shard output directories (all n of them).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
}

/// Arguments of an evaluation run.
#[derive(clap::Args)]
pub struct RunArgs {
    /// A model directory (`models/NAME`, highest version), a version directory, or an ONNX file.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Use this version of the model directory instead of the highest.
    #[arg(long)]
    model_version: Option<u64>,
    /// Comma-separated suites: clean, c, p, a, r, fgsm, pgd, autoattack.
    #[arg(long, default_value = "clean", value_delimiter = ',')]
    suite: Vec<String>,
    /// The clean labelled set: an ImageFolder (class or wnid folders), a flat folder of files
    /// whose names end in the label (`imagenet_07_559.jpg`), or an IDX image file.
    #[arg(long)]
    data: Option<PathBuf>,
    /// An ImageNet-C directory (`<corruption>/<severity>/<class>/...`, e.g. made by
    /// `hardy corrupt`); without it suite c corrupts the clean set on the fly.
    #[arg(long)]
    c_data: Option<PathBuf>,
    /// An ImageNet-P directory (`<perturbation>/<wnid>/<video>.mp4`); without it suite p
    /// generates the sequences from the clean set.
    #[arg(long)]
    p_data: Option<PathBuf>,
    /// An ImageNet-A directory (wnid folders).
    #[arg(long)]
    a_data: Option<PathBuf>,
    /// An ImageNet-R directory (wnid folders).
    #[arg(long)]
    r_data: Option<PathBuf>,
    /// Corruptions: `benchmark` (the 15), `all` (19), or comma-separated names.
    #[arg(long, default_value = "benchmark")]
    corruptions: String,
    /// Severities to evaluate.
    #[arg(long, default_value = "1,2,3,4,5", value_delimiter = ',')]
    severities: Vec<u8>,
    /// Perturbations: `benchmark` (the 10), `all` (14), or comma-separated names.
    #[arg(long, default_value = "benchmark")]
    perturbations: String,
    /// Difficulties of the noise perturbations (1..3).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    noise_difficulties: Vec<u8>,
    /// Attack radii in 0..255 pixel units (divided by 255).
    #[arg(long, default_value = "1,2,4,8", value_delimiter = ',')]
    eps: Vec<f32>,
    /// PGD iterations.
    #[arg(long, default_value_t = 10)]
    pgd_steps: usize,
    /// PGD step size in 0..255 units (default 2.5 x eps / steps).
    #[arg(long)]
    pgd_step_size: Option<f32>,
    /// AutoAttack version: `standard` (the reference's fixed attacks and settings, what
    /// RobustBench reports) or `custom` (the --aa-attacks and settings below).
    #[arg(long, default_value = "standard")]
    aa_version: String,
    /// AutoAttack threat model: `linf` or `l2`.
    #[arg(long, default_value = "linf")]
    aa_norm: String,
    /// AutoAttack radii: L-inf in 0..255 pixel units like --eps; L2 in [0, 1] pixel units.
    /// Default: L-inf 8 (4 for inputs of 128 px or more), L2 0.5 (3.0).
    #[arg(long, value_delimiter = ',')]
    aa_eps: Option<Vec<f32>>,
    /// Custom version: the attacks, in order (apgd-ce, apgd-t, fab-t, square).
    #[arg(long, default_value = "apgd-ce,apgd-t,fab-t,square", value_delimiter = ',')]
    aa_attacks: Vec<String>,
    /// Custom version: APGD iterations.
    #[arg(long, default_value_t = 100)]
    aa_iter: usize,
    /// Custom version: APGD-CE restarts.
    #[arg(long, default_value_t = 1)]
    aa_restarts: usize,
    /// Custom version: target classes of APGD-T and FAB-T.
    #[arg(long, default_value_t = 9)]
    aa_targets: usize,
    /// Custom version: FAB-T iterations.
    #[arg(long, default_value_t = 100)]
    aa_fab_iter: usize,
    /// Custom version: Square queries per image.
    #[arg(long, default_value_t = 5000)]
    aa_square_queries: usize,
    /// Write each image AutoAttack fools as an 8-bit PNG of the crop the model sees, under
    /// OUT/adversarial/<norm>__<eps>/.
    #[arg(long)]
    aa_save_adversarial: bool,
    /// Frost textures: a directory of images (default: fetched from PyPI imagecorruptions).
    #[arg(long)]
    frost_dir: Option<PathBuf>,
    /// JPEG quality of on-the-fly corruptions (0 turns the round trip off).
    #[arg(long, default_value_t = 85)]
    jpeg_quality: u8,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Evaluate share i of n (0-based), e.g. 0/4; merge with `hardy eval merge`. Without it,
    /// in a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` set), the share is that index of
    /// `HARDY_SHARDS` and the output goes to `<out>/shard-<index>`; else the whole set.
    #[arg(long)]
    shard: Option<String>,
    /// Only the first N images of each set.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of generated corruptions, sequences and PGD starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: parts, result.json, report.md and plots; rerunning resumes it.
    #[arg(long, default_value = "eval-out")]
    out: PathBuf,
    /// `cpu`, `cuda` (or `gpu`) or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Fail instead of falling back to CPU when the device cannot be used.
    #[arg(long)]
    strict_device: bool,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bars or status lines on stderr (the summary still goes to stdout).
    #[arg(long, short)]
    quiet: bool,
}

impl Args {
    /// The device asked for (to pick the ONNX Runtime flavour).
    pub fn device(&self) -> Device {
        self.run.device
    }

    /// Whether `--quiet` was given (no progress, no info log).
    pub fn quiet(&self) -> bool {
        self.run.quiet
    }
}

/// Parses `benchmark`, `all`, or a comma-separated list of names.
pub fn parse_names<T: std::str::FromStr + Copy>(text: &str, benchmark: &[T], all: &[T]) -> Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match text.trim() {
        "benchmark" => Ok(benchmark.to_vec()),
        "all" => Ok(all.to_vec()),
        list => list
            .split(',')
            .map(|s| s.trim().parse::<T>().map_err(anyhow::Error::from))
            .collect(),
    }
}

/// Progress bars for the evaluator's parts (none when quiet).
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    /// No bar yet; `quiet` keeps stderr silent.
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            quiet,
        }
    }
}

impl Observer for Bars {
    fn part_started(&self, key: &str, items: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(items as u64);
        if let Ok(style) = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(key.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }
    fn advanced(&self, n: usize) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(n as u64);
        }
    }
    fn note(&self, text: &str) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
            && let Some(key) = bar.message().split(' ').next()
        {
            bar.set_message(format!("{key} {text}"));
        }
    }
    fn part_finished(&self, key: &str, resumed: bool) {
        if resumed && !self.quiet {
            eprintln!("{key:>24}: already done, kept");
        } else if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish();
        }
    }
}

fn summary(result: &EvalResult, out: &std::path::Path) {
    if let Some(c) = &result.clean {
        println!(
            "clean: {} images, top-1 error {:.2}%, top-5 error {:.2}%",
            c.images,
            100.0 * c.top1_error,
            100.0 * c.top5_error
        );
    }
    if let Some(c) = &result.corruptions {
        let mce = c.mce.map_or_else(
            || {
                if result.model.classes == 1000 {
                    "- (not all 15 at 5 severities)".into()
                } else {
                    "- (AlexNet's baseline needs a 1000-class model)".into()
                }
            },
            |m| format!("{m:.1}"),
        );
        let mean = c
            .mean_error
            .map_or_else(|| "-".into(), |e| format!("{:.2}%", 100.0 * e));
        println!("corruptions: mean error of the benchmark corruptions {mean}, mCE {mce}");
    }
    if let Some(p) = &result.perturbations {
        println!(
            "perturbations: mFR {}, mT5D {}",
            p.mfr.map_or_else(|| "-".into(), |m| format!("{m:.1}")),
            p.mt5d.map_or_else(|| "-".into(), |m| format!("{m:.3}"))
        );
    }
    for (name, rows) in [("FGSM", &result.fgsm), ("PGD", &result.pgd)] {
        for r in rows {
            println!(
                "{name} eps {:.1}/255: accuracy {:.2}%",
                r.eps * 255.0,
                100.0 * r.accuracy
            );
        }
    }
    for r in &result.autoattack {
        let steps: Vec<String> = r
            .after
            .iter()
            .map(|s| format!("{} {:.2}%", s.attack, 100.0 * s.robust_accuracy))
            .collect();
        let eps = match r.norm {
            Norm::Linf => format!("{:.1}/255", r.eps * 255.0),
            Norm::L2 => format!("{:.3}", r.eps),
        };
        println!(
            "AutoAttack {:?} eps {eps}: clean {:.2}%, after {}; robust accuracy {:.2}%{}",
            r.norm,
            100.0 * r.clean_accuracy,
            steps.join(", "),
            100.0 * r.robust_accuracy,
            r.pgd_accuracy
                .map_or_else(String::new, |p| format!(" (PGD {:.2}%)", 100.0 * p))
        );
    }
    if !result.failed_images.is_empty() {
        let parts: Vec<String> = result.failed_images.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let example = result
            .failures
            .iter()
            .find_map(|(_, f)| f.first())
            .map_or_else(String::new, |f| format!("; e.g. {}: {}", f.item, f.reason));
        println!(
            "failed: {} image(s) could not be evaluated and are not counted ({}){example}; see the report",
            result.failed_total(),
            parts.join(", ")
        );
    }
    println!("wrote {}/result.json and {}/report.md", out.display(), out.display());
}

/// The `--aa-*` flags as the evaluator's options.
fn autoattack_options(a: &RunArgs) -> Result<AutoAttackOptions> {
    let norm = match a.aa_norm.trim().to_ascii_lowercase().as_str() {
        "linf" | "l-inf" | "inf" => Norm::Linf,
        "l2" => Norm::L2,
        other => bail!("--aa-norm: unknown norm `{other}`; known: linf, l2"),
    };
    let eps = a.aa_eps.as_ref().map(|v| {
        v.iter()
            .map(|&e| if norm == Norm::Linf { e / 255.0 } else { e })
            .collect::<Vec<f32>>()
    });
    if let Some(bad) = eps
        .iter()
        .flatten()
        .find(|e| !(e.is_finite() && **e >= 0.0 && (norm == Norm::L2 || **e <= 1.0)))
    {
        bail!("--aa-eps: {bad} is not a radius (L-inf: 0..255 pixel levels; L2: 0 or more)");
    }
    Ok(AutoAttackOptions {
        version: a.aa_version.parse().context("--aa-version")?,
        norm,
        eps,
        attacks: a
            .aa_attacks
            .iter()
            .map(|s| s.parse::<AttackName>())
            .collect::<Result<_, _>>()
            .context("--aa-attacks")?,
        apgd_iter: a.aa_iter,
        apgd_restarts: a.aa_restarts,
        targets: a.aa_targets,
        fab_iter: a.aa_fab_iter,
        square_queries: a.aa_square_queries,
        save_adversarial: a.aa_save_adversarial,
    })
}

/// Runs `hardy eval` or `hardy eval merge`.
pub fn run(args: Args, runtime_options: &RuntimeOptions) -> Result<ExitCode> {
    if let Some(EvalCommand::Merge { out, shards }) = args.command {
        let result = eval::suite::merge(&shards, &out)?;
        summary(&result, &out);
        return Ok(ExitCode::SUCCESS);
    }
    let a = args.run;
    let Some(model) = &a.model else {
        bail!("--model is required (a model directory, version directory or ONNX file)");
    };
    let suites: BTreeSet<Suite> = a.suite.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let (shard, out) = shard_and_out(a.shard.as_deref(), &a.out, |name| std::env::var(name).ok())?;
    let mut options = EvalOptions::new(out.clone());
    options.suites = suites;
    options.data = a.data.clone();
    options.c_data = a.c_data.clone();
    options.p_data = a.p_data.clone();
    options.a_data = a.a_data.clone();
    options.r_data = a.r_data.clone();
    options.corruptions =
        parse_names(&a.corruptions, &Corruption::BENCHMARK, &Corruption::ALL).context("--corruptions")?;
    options.severities = a.severities.clone();
    options.perturbations =
        parse_names(&a.perturbations, &Perturbation::BENCHMARK, &Perturbation::ALL).context("--perturbations")?;
    options.noise_difficulties = a.noise_difficulties.clone();
    options.eps = a.eps.iter().map(|e| e / 255.0).collect();
    options.pgd_steps = a.pgd_steps;
    options.pgd_step_size = a.pgd_step_size.map(|s| s / 255.0);
    options.autoattack = autoattack_options(&a)?;
    options.frost = Some(match &a.frost_dir {
        Some(dir) => FrostSource::Dir(dir.clone()),
        None => FrostSource::Provisioned,
    });
    options.jpeg_quality = (a.jpeg_quality > 0).then_some(a.jpeg_quality);
    options.batch = a.batch_size;
    options.shard = shard;
    options.seed = a.seed;
    options.limit = a.limit;

    let artifact = ModelArtifact::open(model, a.model_version)?;
    let rt = runtime::init(runtime_options)?;
    let session_options = SessionOptions {
        device: a.device,
        policy: if a.strict_device {
            DevicePolicy::Strict
        } else {
            DevicePolicy::FallBackToCpu
        },
        intra_threads: a.threads,
        ..SessionOptions::default()
    };
    if !a.quiet {
        eprintln!(
            "evaluating {} ({}) into {}",
            artifact.display_name(),
            artifact.model_path.display(),
            out.display()
        );
    }
    let mut evaluator = Evaluator::new(&rt, &artifact, session_options, options)?;
    let result = evaluator.run(&Bars::new(a.quiet))?;
    summary(&result, &out);
    Ok(ExitCode::SUCCESS)
}

/// The share of the data set to evaluate and where its output goes: `--shard` as given into
/// `--out`; else, in a Kubernetes Indexed Job, the pod's `JOB_COMPLETION_INDEX` of
/// `HARDY_SHARDS` (the manifest copies the job's `completions` into it; Kubernetes does not
/// pass the count) into `<out>/shard-<index>`, so that every index has its own directory and
/// an index run twice resumes its own; else the whole set into `--out`. `env` reads a
/// variable (a parameter, so that tests need not change the process environment).
fn shard_and_out(shard: Option<&str>, out: &Path, env: impl Fn(&str) -> Option<String>) -> Result<(Shard, PathBuf)> {
    if let Some(text) = shard {
        return Ok((text.parse::<Shard>().context("--shard")?, out.to_path_buf()));
    }
    let Some(index) = env("JOB_COMPLETION_INDEX").filter(|v| !v.is_empty()) else {
        return Ok((Shard::ALL, out.to_path_buf()));
    };
    let count = env("HARDY_SHARDS").filter(|v| !v.is_empty()).with_context(|| {
        format!(
            "JOB_COMPLETION_INDEX is {index:?} (a Kubernetes Indexed Job) but HARDY_SHARDS is not set: \
             set it to the job's completions, or pass --shard INDEX/COUNT"
        )
    })?;
    let shard = format!("{index}/{count}")
        .parse::<Shard>()
        .context("JOB_COMPLETION_INDEX / HARDY_SHARDS")?;
    Ok((shard, out.join(format!("shard-{}", shard.index))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    /// An Indexed Job's pod takes its index and writes to its own directory; `--shard` wins
    /// over the environment; outside a job, the whole set.
    #[test]
    fn indexed_job_shards_come_from_the_environment() {
        let out = Path::new("/data/eval");
        let job = [("JOB_COMPLETION_INDEX", "2"), ("HARDY_SHARDS", "4")];
        let (shard, dir) = shard_and_out(None, out, env(&job)).expect("job shard");
        assert_eq!((shard.index, shard.count), (2, 4));
        assert_eq!(dir, out.join("shard-2"));

        let (shard, dir) = shard_and_out(Some("1/3"), out, env(&job)).expect("--shard");
        assert_eq!((shard.index, shard.count, dir.as_path()), (1, 3, out));

        let (shard, dir) = shard_and_out(None, out, env(&[])).expect("no job");
        assert_eq!((shard.index, shard.count, dir.as_path()), (0, 1, out));

        let missing = shard_and_out(None, out, env(&[("JOB_COMPLETION_INDEX", "0")]));
        let message = format!("{:#}", missing.expect_err("no count"));
        assert!(message.contains("HARDY_SHARDS"), "{message}");

        let outside = shard_and_out(None, out, env(&[("JOB_COMPLETION_INDEX", "4"), ("HARDY_SHARDS", "4")]));
        let message = format!("{:#}", outside.expect_err("index = count"));
        assert!(message.contains("not below"), "{message}");
    }
}
