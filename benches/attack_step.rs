//! What one attack step costs against a forward pass of the same model and batch, the Rust
//! half of `benches/attack_step.sh` (which then times PyTorch CPU autograd on the same
//! networks, converted by onnx2torch, and prints the ratios).
//!
//! For each model and batch size, in one process and with the same ONNX Runtime settings
//! (Hardy's session builder, `--threads` intra-op threads, not spinning): the engine's forward
//! pass (`ModelSession::infer`) and one attack step (`Attacker::gradient`: forward and
//! backward through the gradient graph, host copies included), alternated, medians after
//! warm-up.
//! Prints a table to stderr and one JSON line per case to stdout (what the Python side needs
//! to rebuild the model's input: file, shape, normalisation).
//!
//! `--profile DIR` instead runs each case under ONNX Runtime's profiler, the plain model and
//! the gradient graph in their own sessions, and prints where the time goes by operator
//! type and by node (gradient-graph nodes written by the transform are named `grad/...`).
//!
//! `cargo bench --bench attack_step -- [--threads N] [--reps R] [--models a,b] [--scratch DIR]
//! [--profile DIR]`; models: `effnet` (models/fashion-mnist-effnet, latest version), `meal`
//! (models/fashion-mnist-resnet-meal), `lite0` (EfficientNet-Lite0 at 224 px, imported into
//! the scratch directory by `hardy import lite0` unless already there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use engine::artifact::ModelArtifact;
use engine::onnx::proto::{ValueInfoProto, type_proto};
use engine::onnx::{Dim, dims_of};
use engine::preprocess::Layout;
use engine::runtime::{self, Flavor, Runtime, RuntimeOptions};
use engine::session::{ModelSession, SessionOptions};
use eval::attack::{Attacker, GradientSpec, PIXELS_INPUT};
use ort::value::TensorRef;
use rand::{Rng, SeedableRng, rngs::StdRng};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const HARDY: &str = env!("CARGO_BIN_EXE_hardy");

/// One model of the benchmark: its short name, where it is and the batch sizes to time.
struct Case {
    name: &'static str,
    dir: PathBuf,
    batches: Vec<usize>,
}

struct Settings {
    threads: usize,
    reps: usize,
    models: Vec<String>,
    scratch: PathBuf,
    profile: Option<PathBuf>,
    batches: Option<Vec<usize>>,
}

impl Settings {
    fn parse() -> Res<Self> {
        let mut s = Settings {
            threads: 2,
            reps: 11,
            models: vec!["effnet".into(), "meal".into(), "lite0".into()],
            scratch: repo().join("target/attack-step"),
            profile: None,
            batches: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--threads" => s.threads = value()?.parse()?,
                "--reps" => s.reps = value()?.parse()?,
                "--models" => s.models = value()?.split(',').map(str::to_string).collect(),
                "--batches" => s.batches = Some(value()?.split(',').map(str::parse).collect::<Result<_, _>>()?),
                "--scratch" => s.scratch = value()?.into(),
                "--profile" => s.profile = Some(value()?.into()),
                "--bench" => {}
                "--help" | "-h" => {
                    eprintln!(
                        "attack_step [--threads N (2)] [--reps R (11)] [--models effnet,meal,lite0] \
                         [--batches B,B (per model: 32,128 or 8,32)] [--scratch DIR] [--profile DIR]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        if s.reps == 0 || s.threads == 0 {
            return Err("--reps and --threads must be positive".into());
        }
        Ok(s)
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("attack_step benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let settings = Settings::parse()?;
    let rt = runtime::init(&RuntimeOptions {
        library: None,
        flavor: Flavor::Cpu,
    })?;
    eprintln!(
        "ONNX Runtime {}, {} intra-op threads, {} timed runs per case (medians)",
        rt.library().display(),
        settings.threads,
        settings.reps
    );
    let mut cases = Vec::new();
    for m in &settings.models {
        let (dir, batches) = match m.as_str() {
            "effnet" => (repo().join("models/fashion-mnist-effnet"), vec![32, 128]),
            "meal" => (repo().join("models/fashion-mnist-resnet-meal"), vec![32, 128]),
            "lite0" => (import_lite0(&settings.scratch)?, vec![8, 32]),
            other => return Err(format!("unknown model {other:?} (effnet, meal, lite0)").into()),
        };
        let name: &'static str = match m.as_str() {
            "effnet" => "fashion-mnist-effnet",
            "meal" => "fashion-mnist-resnet-meal",
            _ => "efficientnet-lite0",
        };
        cases.push(Case {
            name,
            dir,
            batches: settings.batches.clone().unwrap_or(batches),
        });
    }
    if settings.profile.is_none() {
        eprintln!(
            "{:<28} {:>5} {:>14} {:>14} {:>12}",
            "model", "batch", "forward ms/img", "step ms/img", "step/forward"
        );
    }
    for case in &cases {
        let artifact = ModelArtifact::open(&case.dir, None)?;
        for &batch in &case.batches {
            match &settings.profile {
                Some(dir) => profile(&rt, case, &artifact, batch, &settings, dir)?,
                None => time(&rt, case, &artifact, batch, &settings)?,
            }
        }
    }
    Ok(())
}

/// EfficientNet-Lite0 in `scratch/lite0/1/model.onnx`, imported unless already there.
fn import_lite0(scratch: &Path) -> Res<PathBuf> {
    let dir = scratch.join("lite0");
    let model = dir.join("1/model.onnx");
    if !model.is_file() {
        eprintln!(
            "importing EfficientNet-Lite0: {HARDY} import lite0 --out {}",
            model.display()
        );
        let status = Command::new(HARDY)
            .args(["import", "lite0", "--out"])
            .arg(&model)
            .status()?;
        if !status.success() {
            return Err(format!("`hardy import lite0` failed ({status})").into());
        }
    }
    Ok(dir)
}

/// Random `[0, 1]` pixels, the same normalised for the plain model, and labels.
struct Inputs {
    pixels: Vec<f32>,
    normalised: Vec<f32>,
    labels: Vec<i64>,
}

impl Inputs {
    fn new(artifact: &ModelArtifact, image_len: usize, classes: usize, batch: usize) -> Self {
        let spec = artifact.config.preprocess_spec();
        let c = spec.channels();
        let hw = spec.crop_height as usize * spec.crop_width as usize;
        let per_channel = |v: &[f32], ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
        let mut rng = StdRng::seed_from_u64(5);
        let pixels: Vec<f32> = (0..batch * image_len).map(|_| rng.random_range(0.0..1.0)).collect();
        let normalised = pixels
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let ch = match spec.layout {
                    Layout::Nchw => (i % image_len) / hw,
                    Layout::Nhwc => i % c,
                };
                (p - per_channel(&spec.mean, ch)) / per_channel(&spec.std, ch)
            })
            .collect();
        let labels = (0..batch).map(|i| (i * 7 % classes) as i64).collect();
        Self {
            pixels,
            normalised,
            labels,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times the forward pass and the attack step, alternated, and prints the case.
fn time(rt: &Runtime, case: &Case, artifact: &ModelArtifact, batch: usize, settings: &Settings) -> Res<()> {
    // Not spinning, like the attacker's sessions: the two runs alternate, and a session's
    // spinning threads would take the cores from the other's run that follows.
    let options = SessionOptions {
        intra_threads: settings.threads,
        spin: false,
        ..SessionOptions::default()
    };
    let mut session = ModelSession::load(rt, artifact, &options)?;
    let mut attacker = Attacker::load(rt, artifact, &options)?;
    let inputs = Inputs::new(artifact, attacker.image_len(), attacker.classes(), batch);
    for _ in 0..3 {
        session.infer(&inputs.normalised, batch)?;
        attacker.gradient(&inputs.pixels, batch, &inputs.labels)?;
    }
    let (mut forward, mut step) = (Vec::new(), Vec::new());
    for _ in 0..settings.reps {
        let t = Instant::now();
        session.infer(&inputs.normalised, batch)?;
        forward.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let g = attacker.gradient(&inputs.pixels, batch, &inputs.labels)?;
        step.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(g);
    }
    let (forward, step) = (median(forward), median(step));
    eprintln!(
        "{:<28} {:>5} {:>14.3} {:>14.3} {:>12.2}",
        case.name,
        batch,
        forward / batch as f64,
        step / batch as f64,
        step / forward
    );
    let spec = artifact.config.preprocess_spec();
    let sig = session.signature();
    println!(
        "{}",
        serde_json::json!({
            "model": case.name,
            "onnx": artifact.model_path,
            "version": artifact.version,
            "batch": batch,
            "dims": sig.image_dims,
            "layout": match spec.layout { Layout::Nchw => "nchw", Layout::Nhwc => "nhwc" },
            "mean": spec.mean,
            "std": spec.std,
            "classes": sig.classes,
            "threads": settings.threads,
            "reps": settings.reps,
            "forward_ms": forward,
            "step_ms": step,
        })
    );
    Ok(())
}

/// Runs the plain model and the gradient graph under ONNX Runtime's profiler and prints
/// where the time goes.
fn profile(
    rt: &Runtime,
    case: &Case,
    artifact: &ModelArtifact,
    batch: usize,
    settings: &Settings,
    dir: &Path,
) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let options = SessionOptions {
        intra_threads: settings.threads,
        spin: false,
        ..SessionOptions::default()
    };
    let cfg = &artifact.config;
    let spec = cfg.preprocess_spec();
    let model = engine::onnx::read_model(&artifact.model_path)?;
    let graph = eval::attack::grad::add_input_gradient_named(
        &model,
        &GradientSpec::from_preprocess(&spec),
        cfg.input_name.as_deref(),
        cfg.output_name.as_deref(),
    )?;
    let step_bytes = engine::onnx::model_to_bytes(&graph)?;
    std::fs::write(dir.join(format!("{}-b{batch}-step.onnx", case.name)), &step_bytes)?;
    let plain_bytes = std::fs::read(&artifact.model_path)?;
    let plain_session = ModelSession::load(rt, artifact, &options)?;
    let sig = plain_session.signature();
    drop(plain_session);
    let inputs = Inputs::new(artifact, sig.image_dims.iter().product(), sig.classes, batch);
    let [a, b, c] = sig.image_dims;
    let tag = format!("{}-b{batch}", case.name);

    let mut summaries = Vec::new();
    for (kind, bytes) in [("forward", &plain_bytes), ("step", &step_bytes)] {
        let prefix = dir.join(format!("{tag}-{kind}"));
        let (builder, _) = engine::session::session_builder(rt, &options, &artifact.model_path)?;
        let mut builder = builder.with_profiling(&prefix).map_err(|e| e.to_string())?;
        let mut session = builder.commit_from_memory(bytes)?;
        let mut wall = Vec::new();
        // The gradient graph's other inputs: int64 `[N]` ones get the labels (and the
        // targets, where the graph has them), int64 `[1]` ones 0 (the cross-entropy).
        let zero = [0i64];
        for rep in 0..settings.reps + 2 {
            let t = Instant::now();
            let mut feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::new();
            if kind == "forward" {
                let x = TensorRef::from_array_view(([batch, a, b, c], inputs.normalised.as_slice()))?;
                feeds.push((sig.input_name.clone(), x.into()));
            } else {
                for input in &graph.graph.input {
                    if graph.graph.initializer.iter().any(|t| t.name == input.name) {
                        continue;
                    }
                    let value: ort::session::SessionInputValue<'_> = if input.name == PIXELS_INPUT {
                        TensorRef::from_array_view(([batch, a, b, c], inputs.pixels.as_slice()))?.into()
                    } else if single_value(input) {
                        TensorRef::from_array_view(([1usize], &zero[..]))?.into()
                    } else {
                        TensorRef::from_array_view(([batch], inputs.labels.as_slice()))?.into()
                    };
                    feeds.push((input.name.clone(), value));
                }
            }
            drop(session.run(feeds)?);
            if rep >= 2 {
                wall.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let file = session.end_profiling()?;
        summaries.push((kind, file, median(wall)));
    }
    println!("== {tag}: profile ({} threads)", settings.threads);
    for (kind, file, wall) in &summaries {
        summarise(kind, Path::new(file), *wall, settings.reps + 2)?;
    }
    Ok(())
}

/// Whether a graph input is declared with shape `[1]` (the gradient graph's loss selector).
fn single_value(input: &ValueInfoProto) -> bool {
    match input.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().is_some_and(|s| dims_of(s) == [Dim::Fixed(1)]),
        _ => false,
    }
}

/// Sums the kernel times of an ORT profile by operator type and by node, over the runs
/// after the first two, and prints the largest.
fn summarise(kind: &str, file: &Path, wall_ms: f64, runs: usize) -> Res<()> {
    let text = std::fs::read_to_string(file)?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    // Runs are delimited by the "model_run" session events.
    let mut run_index = 0usize;
    let mut by_op: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut by_node: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let mut total = 0.0;
    for e in &events {
        let name = e["name"].as_str().unwrap_or_default();
        let cat = e["cat"].as_str().unwrap_or_default();
        if cat == "Session" && name == "model_run" {
            run_index += 1;
            continue;
        }
        if cat != "Node" || !name.ends_with("_kernel_time") || run_index >= runs {
            continue;
        }
        // model_run events come after their nodes: nodes of run k are seen with run_index k.
        if run_index < 2 {
            continue;
        }
        let dur = e["dur"].as_f64().unwrap_or(0.0) / 1e3;
        let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
        let node = name.trim_end_matches("_kernel_time").to_string();
        let grad = node.starts_with("grad/");
        let entry = by_op.entry(op.clone()).or_default();
        if grad {
            entry.1 += dur;
        } else {
            entry.0 += dur;
        }
        let n = by_node.entry(node).or_insert((op, 0.0));
        n.1 += dur;
        total += dur;
    }
    let timed = (runs - 2) as f64;
    println!(
        "-- {kind}: wall {wall_ms:.2} ms/run, kernels {:.2} ms/run ({})",
        total / timed,
        file.display()
    );
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| (b.1.0 + b.1.1).total_cmp(&(a.1.0 + a.1.1)));
    println!(
        "   {:<26} {:>10} {:>10} {:>7}",
        "op type", "model ms", "grad/ ms", "share"
    );
    for (op, (f, g)) in ops.iter().take(14) {
        println!(
            "   {:<26} {:>10.3} {:>10.3} {:>6.1}%",
            op,
            f / timed,
            g / timed,
            100.0 * (f + g) / total.max(1e-9)
        );
    }
    let mut nodes: Vec<_> = by_node.into_iter().collect();
    nodes.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    println!("   top nodes:");
    for (node, (op, d)) in nodes.iter().take(12) {
        println!("   {:>10.3} ms  {:<18} {}", d / timed, op, node);
    }
    Ok(())
}
