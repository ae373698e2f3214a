//! `--monitor`: what label-free robustness monitoring costs live traffic.
//!
//! Three `hardy serve` processes on the same model and settings, started together in this
//! run and differing only in `--monitor-rate` (0 = off, 0.01, 0.1), take turns under the same
//! interactive load: `--monitor-clients` closed-loop clients, each sending one JPEG (a
//! foolbox ImageNet photo, 512x512) per `POST /v1/models/{m}/classify`. Every round measures
//! each server once, in an order that rotates from round to round, so that a machine whose
//! speed drifts disturbs all three alike; only the measured server gets requests, the others
//! sleep. After each turn the benchmark waits until that server is idle again (its monitor
//! has worked off its queue), so no backlog spills into the next server's turn.
//!
//! Printed: images/s, p50 and p99 request latency for each rate, their ratios against
//! monitoring off (per round for throughput, to show the spread), the monitor thread's CPU
//! share, and how many live images each server sampled, re-classified and dropped. Written
//! to `target/bench-serve-monitor.json`.

use super::*;

/// The rates compared; the first is the baseline.
const RATES: [f64; 3] = [0.0, 0.01, 0.1];
/// The perturbation labels the monitor exports.
const PERTURBATIONS: [&str; 3] = ["gaussian_noise", "brightness", "translate"];

/// One server of the comparison and what was measured on it.
struct Arm {
    rate: f64,
    server: Server,
    runs: Vec<PhaseRun>,
}

/// The monitor's counters on one server, summed over its versions.
#[derive(Debug, Clone, Default)]
struct MonitorCounters {
    /// Live images run through the model.
    live: f64,
    /// Sampled images re-classified.
    monitored: f64,
    /// Sampled images dropped for want of room.
    dropped: f64,
    /// (trials, flips) per perturbation.
    flips: Vec<(f64, f64)>,
}

impl MonitorCounters {
    fn read(server: &Server) -> Res<Self> {
        let text = server.get("/metrics")?;
        let sum = |name: &str, needle: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(needle))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Ok(Self {
            live: sum("hardy_inference_images_total", ""),
            monitored: sum("hardy_monitor_images_total", ""),
            dropped: sum("hardy_monitor_dropped_total", ""),
            flips: PERTURBATIONS
                .iter()
                .map(|p| {
                    let label = format!("perturbation=\"{p}\"");
                    (
                        sum("hardy_monitor_trials_total", &label),
                        sum("hardy_monitor_flips_total", &label),
                    )
                })
                .collect(),
        })
    }
}

/// The photo every request sends.
pub(super) fn photo() -> Res<(Vec<u8>, String)> {
    let dir = engine::provision::foolbox_imagenet_samples()?;
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    let path = photos
        .first()
        .ok_or_else(|| format!("no photos in {}", dir.display()))?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok((std::fs::read(path)?, name))
}

/// One client: a keep-alive connection posting `image` to `/classify` in a loop.
pub(super) fn classify_client(
    server: &Server,
    model: &str,
    image: &Arc<Vec<u8>>,
) -> impl FnMut() -> Result<Sample, String> + Send {
    let agent = agent();
    let url = format!("{}/v1/models/{model}/classify?top_k=1", server.base);
    let image = Arc::clone(image);
    move || {
        let mut r = agent
            .post(&url)
            .header("Content-Type", "image/jpeg")
            .send(&image[..])
            .map_err(|e| format!("POST {url}: {e}"))?;
        let times = ServerTimes::from_headers(|name| r.headers().get(name).and_then(|v| v.to_str().ok()));
        let status = r.status();
        let body = r.body_mut().read_to_vec().map_err(|e| format!("POST {url}: {e}"))?;
        if status != 200 {
            return Err(format!("POST {url}: HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(Sample {
            images: 1,
            server: Some(times),
        })
    }
}

/// Waits until `server` is idle: no CPU time and no monitor progress over half a second.
fn wait_idle(server: &Server) -> Res<Duration> {
    let t0 = Instant::now();
    let pid = server.child.id().to_string();
    let mut last = (process_ticks(&pid), MonitorCounters::read(server)?);
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = (process_ticks(&pid), MonitorCounters::read(server)?);
        let busy = now.0.saturating_sub(last.0) > 2;
        let progressed = now.1.monitored + now.1.dropped != last.1.monitored + last.1.dropped;
        if !busy && !progressed {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            println!("  WARNING: the server was still busy 120 s after its turn");
            return Ok(t0.elapsed());
        }
        last = now;
    }
}

/// Sends requests to a monitoring server until its monitor has re-classified one image (so
/// its session is built before anything is measured).
fn warm_monitor(server: &Server, model: &str, image: &Arc<Vec<u8>>) -> Res<()> {
    let mut client = classify_client(server, model, image);
    let deadline = Instant::now() + Duration::from_secs(300);
    while MonitorCounters::read(server)?.monitored < 1.0 {
        for _ in 0..20 {
            client()?;
        }
        if Instant::now() > deadline {
            return Err("the monitor re-classified nothing in 300 s".into());
        }
    }
    Ok(())
}

/// The monitor thread's share of all cores in a phase.
fn monitor_cpu(cpu: &CpuShare) -> f64 {
    cpu.server_threads
        .iter()
        .filter(|(name, _, _)| name == "monitor")
        .map(|(_, user, system)| user + system)
        .sum()
}

/// Runs the comparison and prints it.
pub(super) fn run(settings: &Settings, machine: &Machine, repository: &Path, model: &str, scratch: &Path) -> Res<()> {
    let (image, image_name) = photo()?;
    let image = Arc::new(image);
    let mut arms = Vec::new();
    for rate in RATES {
        let flags = ["--monitor-rate".to_string(), rate.to_string()];
        let log = scratch.join(format!("server-monitor-{rate}.log"));
        let server = Server::start_with(repository, settings, &log, &flags)?;
        println!("server, monitor rate {rate}: {} ({})", server.base, server.command);
        if rate > 0.0 {
            warm_monitor(&server, model, &image)?;
        }
        wait_idle(&server)?;
        arms.push(Arm {
            rate,
            server,
            runs: Vec::new(),
        });
    }
    let before: Vec<MonitorCounters> = arms
        .iter()
        .map(|a| MonitorCounters::read(&a.server))
        .collect::<Res<_>>()?;
    for round in 0..settings.rounds {
        for k in 0..arms.len() {
            let arm = &mut arms[(round + k) % RATES.len()];
            println!(
                "round {}/{}: monitor rate {}, {} clients",
                round + 1,
                settings.rounds,
                arm.rate,
                settings.monitor_clients
            );
            let workers: Vec<_> = (0..settings.monitor_clients)
                .map(|_| classify_client(&arm.server, model, &image))
                .collect();
            let run = run_phase(workers, settings, Some(arm.server.child.id()), None)?;
            let one = std::slice::from_ref(&run);
            println!("  {}", throughput(one)?);
            println!("  {}", latency(one)?);
            let drained = wait_idle(&arm.server)?;
            println!("  idle again after {:.1} s", drained.as_secs_f64());
            arm.runs.push(run);
        }
    }
    let mut rows = Vec::new();
    for (arm, before) in arms.iter().zip(&before) {
        let after = MonitorCounters::read(&arm.server)?;
        rows.push((
            arm.rate,
            throughput(&arm.runs)?,
            latency(&arm.runs)?,
            MonitorCounters {
                live: after.live - before.live,
                monitored: after.monitored - before.monitored,
                dropped: after.dropped - before.dropped,
                flips: after.flips,
            },
        ));
    }
    // The baseline's command line without its `--monitor-rate 0`.
    let command = arms[0].server.command.replace(" --monitor-rate 0", "");
    drop(arms);

    let (_, base_t, base_l, _) = &rows[0];
    println!();
    println!("Interactive /classify throughput and latency with robustness monitoring, same run");
    println!(
        "  machine   {} logical cores, {}, {:.1} GiB",
        machine.cores, machine.cpu, machine.memory_gib
    );
    println!("  model     {model}; image {image_name} (JPEG, 512x512) per request");
    println!(
        "  load      {} closed-loop clients, one image per request; {} rounds of {:.2} s measured per rate after {:.2} s warm-up",
        settings.monitor_clients,
        settings.rounds,
        settings.measured().as_secs_f64(),
        settings.warmup().as_secs_f64()
    );
    println!("  server    {command} --monitor-rate R");
    println!();
    println!(
        "  {:<6} {:>9} {:>7} {:>8} {:>7} {:>8} {:>7} {:>8} {:>9} {:>10} {:>8}   throughput ratio per round",
        "rate",
        "images/s",
        "x off",
        "p50 ms",
        "x off",
        "p99 ms",
        "x off",
        "mon CPU%",
        "sampled",
        "monitored",
        "dropped"
    );
    let mut json_rows = Vec::new();
    for (rate, t, l, c) in &rows {
        let per_round = ratios(&t.per_round, &base_t.per_round);
        let each: Vec<String> = per_round.iter().map(|r| format!("{r:.3}")).collect();
        let sampled = (c.monitored + c.dropped) / c.live.max(1.0);
        println!(
            "  {:<6} {:>9.1} {:>7.3} {:>8.2} {:>7.3} {:>8.2} {:>7.3} {:>8.1} {:>8.2}% {:>10} {:>8}   {}",
            rate,
            t.images_per_s,
            t.images_per_s / base_t.images_per_s,
            l.p50_ms,
            l.p50_ms / base_l.p50_ms,
            l.p99_ms,
            l.p99_ms / base_l.p99_ms,
            monitor_cpu(&t.cpu) * 100.0,
            sampled * 100.0,
            c.monitored,
            c.dropped,
            each.join(" ")
        );
        let flips: Vec<Value> = PERTURBATIONS
            .iter()
            .zip(&c.flips)
            .map(|(p, (trials, flips))| json!({"perturbation": p, "trials": trials, "flips": flips}))
            .collect();
        json_rows.push(json!({
            "monitor_rate": rate,
            "images_per_s": t.images_per_s,
            "per_round_images_per_s": t.per_round,
            "throughput_ratio_vs_off": t.images_per_s / base_t.images_per_s,
            "per_round_throughput_ratio_vs_off": per_round,
            "p50_ms": l.p50_ms,
            "p99_ms": l.p99_ms,
            "p50_ratio_vs_off": l.p50_ms / base_l.p50_ms,
            "p99_ratio_vs_off": l.p99_ms / base_l.p99_ms,
            "requests": l.requests,
            "monitor_thread_cpu_share": monitor_cpu(&t.cpu),
            "cpu_share": t.cpu.json(),
            "live_images": c.live,
            "monitored_images": c.monitored,
            "dropped_images": c.dropped,
            "flips_since_start": flips,
        }));
    }
    for (rate, _, _, c) in rows.iter().skip(1) {
        let probabilities: Vec<String> = PERTURBATIONS
            .iter()
            .zip(&c.flips)
            .map(|(p, (trials, flips))| format!("{p} {:.3} ({flips}/{trials})", flips / trials.max(1.0)))
            .collect();
        println!("  flip probability at rate {rate}: {}", probabilities.join(", "));
    }
    println!();
    let report = json!({
        "benchmark": "serve --monitor",
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "command": std::env::args().collect::<Vec<_>>(),
        "machine": { "logical_cores": machine.cores, "cpu": machine.cpu, "memory_gib": machine.memory_gib },
        "model": model,
        "image": image_name,
        "clients": settings.monitor_clients,
        "rounds": settings.rounds,
        "measured_seconds_per_rate": settings.seconds,
        "server_command": command,
        "rates": json_rows,
    });
    let path = Path::new(HARDY).parent().and_then(Path::parent).map_or_else(
        || PathBuf::from("bench-serve-monitor.json"),
        |t| t.join("bench-serve-monitor.json"),
    );
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
