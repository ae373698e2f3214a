//! `--job`: what a running evaluation job costs interactive traffic.
//!
//! One `hardy serve` with `--jobs-dir` (so `--max-jobs 1 --job-threads 1`, the defaults)
//! takes the same interactive load in two conditions, alternating from round to round: no
//! job, and an evaluation job running on the same model (suite c, all 19 corruptions at 5
//! severities on the 20 foolbox photos: decoding, corrupting and inference, submitted before
//! the phase and cancelled after it). The load is `--job-clients` (default 1) closed-loop
//! clients, each sending one JPEG (a foolbox ImageNet photo) per `POST /v1/models/{m}/classify`.
//!
//! Printed: p50 and p99 request latency and images/s in both conditions, their ratios (goal:
//! p99 with a job <= 1.5 x without), the job's own progress in images/s, and where the CPU
//! time went. Written to `target/bench-serve-job.json`.

use super::monitor::{classify_client, photo};
use super::*;

/// Goal: p99 latency with a job running / without.
const P99_GOAL: f64 = 1.5;
/// The bearer token of the benchmark's server.
const TOKEN: &str = "bench-token";

/// The job every "with job" phase runs.
fn job_spec(model: &str) -> Value {
    json!({
        "model": model, "suites": ["c"], "data": "foolbox:imagenet", "corruptions": "all",
        "severities": [1, 2, 3, 4, 5], "batch_size": 8
    })
}

fn authorised(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Res<Value> {
    let url = format!("{}{path}", server.base);
    let auth = format!("Bearer {TOKEN}");
    let mut response = match (method, body) {
        ("POST", Some(body)) => server
            .agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.to_string()),
        ("DELETE", _) => server.agent.delete(&url).header("Authorization", &auth).call(),
        _ => server.agent.get(&url).header("Authorization", &auth).call(),
    }
    .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{method} {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{method} {url}: HTTP {status}: {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// Submits the job and waits until it has evaluated its first images.
fn start_job(server: &Server, model: &str) -> Res<String> {
    let accepted = authorised(server, "POST", "/v1/evaluations", Some(&job_spec(model)))?;
    let id = accepted["id"].as_str().ok_or("no job id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = authorised(server, "GET", &format!("/v1/evaluations/{id}"), None)?;
        if status["state"] == "running" && status["progress"]["done"].as_u64() > Some(0) {
            return Ok(id);
        }
        if status["state"] != "running" && status["state"] != "queued" {
            return Err(format!("the benchmark's job ended early: {status}").into());
        }
        if Instant::now() > deadline {
            return Err("the benchmark's job made no progress in 300 s".into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Cancels the job; returns its images/s and whether it was still running.
fn stop_job(server: &Server, id: &str) -> Res<(f64, bool)> {
    let status = authorised(server, "GET", &format!("/v1/evaluations/{id}"), None)?;
    let running = status["state"] == "running";
    let rate = status["progress"]["images_per_second"].as_f64().unwrap_or(0.0);
    if running {
        authorised(server, "DELETE", &format!("/v1/evaluations/{id}"), None)?;
    }
    Ok((rate, running))
}

/// Runs the comparison and prints it.
pub(super) fn run(settings: &Settings, machine: &Machine, repository: &Path, model: &str, scratch: &Path) -> Res<()> {
    let (image, image_name) = photo()?;
    let image = Arc::new(image);
    let jobs_dir = scratch.join("jobs");
    let flags = [
        "--jobs-dir".to_string(),
        jobs_dir.display().to_string(),
        "--admin-token".to_string(),
        TOKEN.to_string(),
    ];
    let server = Server::start_with(repository, settings, &scratch.join("server-job.log"), &flags)?;
    println!("server: {} ({})", server.base, server.command);
    // Build the job's sessions and fetch its data once, outside the measurements.
    let warm = start_job(&server, model)?;
    stop_job(&server, &warm)?;

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut job_rates = Vec::new();
    let mut overran = 0;
    for round in 0..settings.rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for job in order {
            println!(
                "round {}/{}: {} clients, {}",
                round + 1,
                settings.rounds,
                settings.job_clients,
                if job { "evaluation job running" } else { "no job" }
            );
            let id = if job { Some(start_job(&server, model)?) } else { None };
            let workers: Vec<_> = (0..settings.job_clients)
                .map(|_| classify_client(&server, model, &image))
                .collect();
            let run = run_phase(workers, settings, Some(server.child.id()), None)?;
            let one = std::slice::from_ref(&run);
            println!("  {}", latency(one)?);
            if let Some(id) = id {
                let (rate, running) = stop_job(&server, &id)?;
                println!("  the job evaluated {rate:.1} images/s");
                job_rates.push(rate);
                if !running {
                    overran += 1;
                    println!("  WARNING: the job finished before the phase ended; run shorter phases");
                }
                with.push(run);
            } else {
                without.push(run);
            }
        }
    }
    let command = server.command.clone();
    drop(server);

    let (t0, l0) = (throughput(&without)?, latency(&without)?);
    let (t1, l1) = (throughput(&with)?, latency(&with)?);
    let p99_ratio = l1.p99_ms / l0.p99_ms;
    let job_rate = job_rates.iter().sum::<f64>() / job_rates.len().max(1) as f64;
    println!();
    println!("Interactive /classify latency with and without an evaluation job, same server, same run");
    println!(
        "  machine   {} logical cores, {}, {:.1} GiB",
        machine.cores, machine.cpu, machine.memory_gib
    );
    println!("  model     {model}; image {image_name} (JPEG) per request");
    println!(
        "  load      {} closed-loop clients, one image per request; {} rounds of {:.2} s measured per condition after {:.2} s warm-up",
        settings.job_clients,
        settings.rounds,
        settings.measured().as_secs_f64(),
        settings.warmup().as_secs_f64()
    );
    println!("  job       {}", job_spec(model));
    println!("  server    {command}");
    println!();
    println!(
        "  {:<12} {:>9} {:>8} {:>8} {:>9}",
        "condition", "images/s", "p50 ms", "p99 ms", "requests"
    );
    for (name, t, l) in [("no job", &t0, &l0), ("job running", &t1, &l1)] {
        println!(
            "  {:<12} {:>9.1} {:>8.2} {:>8.2} {:>9}",
            name, t.images_per_s, l.p50_ms, l.p99_ms, l.requests
        );
    }
    println!(
        "  p99 with / without a job: {p99_ratio:.3} (goal <= {P99_GOAL}) {}; p50 {:.3}; throughput {:.3}; the job ran at {job_rate:.1} images/s",
        if p99_ratio <= P99_GOAL { "met" } else { "NOT met" },
        l1.p50_ms / l0.p50_ms,
        t1.images_per_s / t0.images_per_s
    );
    if overran > 0 {
        println!("  WARNING: in {overran} phases the job finished early: those phases were partly without a job");
    }
    let report = json!({
        "benchmark": "serve --job",
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "command": std::env::args().collect::<Vec<_>>(),
        "machine": { "logical_cores": machine.cores, "cpu": machine.cpu, "memory_gib": machine.memory_gib },
        "model": model,
        "image": image_name,
        "clients": settings.job_clients,
        "rounds": settings.rounds,
        "job": job_spec(model),
        "server_command": command,
        "without_job": { "images_per_s": t0.images_per_s, "p50_ms": l0.p50_ms, "p99_ms": l0.p99_ms, "requests": l0.requests, "cpu_share": t0.cpu.json() },
        "with_job": { "images_per_s": t1.images_per_s, "p50_ms": l1.p50_ms, "p99_ms": l1.p99_ms, "requests": l1.requests, "cpu_share": t1.cpu.json(), "job_images_per_s": job_rate },
        "p99_ratio": p99_ratio,
        "p99_goal": P99_GOAL,
        "phases_where_the_job_finished_early": overran,
    });
    let path = Path::new(HARDY).parent().and_then(Path::parent).map_or_else(
        || PathBuf::from("bench-serve-job.json"),
        |t| t.join("bench-serve-job.json"),
    );
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
