//! Robustness evaluation as a service: jobs that run `hardy eval` inside the server.
//!
//! A job is the CLI's runner ([`eval::suite::Evaluator`]) with the CLI's output directory
//! as its checkpoint, so a job and `hardy eval` on the same settings write the same
//! `result.json`, `hardy eval merge` reads job outputs, and a job interrupted anywhere
//! (even by SIGKILL) resumes where its stored parts end: a part's file appears only once the
//! part is finished, so none is lost or counted twice.
//!
//! [`Jobs`] is an actor: a cheap handle over a table of jobs and `--max-jobs` runner
//! threads. Runners never compete with interactive traffic on equal terms: they run at a
//! lower CPU priority (nice 10), each job's ONNX Runtime session has `--job-threads`
//! intra-op threads, and decoding runs on a rayon pool of `--job-threads` threads.
//!
//! The model version rule: a job pins the version it was submitted against, by path and
//! SHA-256. It builds its own session from that file, so unloading, reloading or adding
//! versions in the repository does not change a running job's figures; when the job
//! (re)starts, the file must still have the same SHA-256, or the job fails instead of
//! mixing figures of two models (version directories are meant to be immutable).

mod record;
pub mod spec;

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use engine::{
    artifact::ModelArtifact,
    runtime::Runtime,
    session::{SessionOptions, StopSignal},
};
use eval::{
    EvalError,
    store::{read_json, write_json},
    suite::{Evaluator, Observer, PlannedPart},
};
use record::Progress;
pub use record::{JobRecord, JobState, JobStatus, Links, PartProgress, PinnedModel, ProgressView, links};
use sha2::{Digest, Sha256};
pub use spec::{JobSpec, SpecError};

use crate::{metrics::Metrics, repository::LoadedModel};

/// How jobs run.
#[derive(Clone)]
pub struct JobsConfig {
    /// Where jobs live.
    pub dir: PathBuf,
    /// The canonical data root, if any.
    pub data_root: Option<PathBuf>,
    /// Jobs running at once.
    pub max_jobs: usize,
    /// Threads per job.
    pub job_threads: usize,
    /// Jobs that may wait.
    pub max_queued: usize,
    /// Units of work one job may plan.
    pub max_units: usize,
    /// The started ONNX Runtime.
    pub runtime: Runtime,
    /// Device and fallback policy (intra-op threads are replaced by `job_threads`).
    pub session: SessionOptions,
}

/// Why a job request failed (mapped to HTTP in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has that id.
    #[error("no evaluation job {0:?}")]
    NotFound(String),
    /// The job cannot do that in its state.
    #[error("evaluation job {id} is {state}: {what}")]
    Conflict {
        /// The job.
        id: String,
        /// Its state.
        state: &'static str,
        /// What cannot be done.
        what: &'static str,
    },
    /// A spec field cannot be used.
    #[error("invalid evaluation spec: {0}")]
    Spec(#[from] SpecError),
    /// The job plans more work than one job may.
    #[error(
        "the job plans {units} images (or sequences); one job may plan at most {limit} (--max-job-images): lower `limit` or split it"
    )]
    TooLarge {
        /// Units planned.
        units: usize,
        /// The limit.
        limit: usize,
    },
    /// The queue is full.
    #[error("{queued} evaluation jobs are waiting, the limit (--max-queued-jobs); retry later")]
    QueueFull {
        /// Jobs waiting.
        queued: usize,
    },
    /// The evaluator refused the options or failed while planning.
    #[error("{0}")]
    Eval(#[from] EvalError),
    /// The jobs directory could not be used.
    #[error("jobs directory: {0}")]
    Storage(String),
}

/// A job and what only memory holds about it.
struct Entry {
    record: JobRecord,
    progress: Progress,
    cancel: Arc<AtomicBool>,
    /// While it runs: stops its ONNX Runtime runs at once (cancel, shutdown).
    stop: Option<StopSignal>,
}

#[derive(Default)]
struct Table {
    jobs: BTreeMap<String, Entry>,
    /// The server is stopping: runners leave their jobs `running` on disk, to be resumed.
    stopping: bool,
}

struct Shared {
    config: JobsConfig,
    metrics: Arc<Metrics>,
    table: Mutex<Table>,
    /// Signalled whenever a job is queued or changes state.
    changed: Condvar,
    /// Held for the server's lifetime: one server per jobs directory.
    _lock: fs::File,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.config.dir.join(id)
    }

    fn persist(&self, record: &JobRecord) {
        if let Err(e) = write_json(&self.job_dir(&record.id).join("job.json"), record) {
            tracing::error!(job = %record.id, "cannot write job.json: {e}");
        }
    }

    /// A job's session options: the server's device and policy, `--job-threads` threads.
    fn session_options(&self) -> SessionOptions {
        SessionOptions {
            intra_threads: self.config.job_threads,
            ..self.config.session.clone()
        }
    }

    fn count_states(&self, table: &Table) {
        for state in JobState::ALL {
            let n = table.jobs.values().filter(|e| e.record.state == state).count();
            self.metrics.jobs.with_label_values(&[state.name()]).set(n as i64);
        }
    }
}

/// The jobs handle: see the module comment. Dropping it stops the runners (running jobs stay
/// `running` on disk and resume at the next start).
pub struct Jobs {
    shared: Arc<Shared>,
    runners: Vec<JoinHandle<()>>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new job id: milliseconds since the epoch and 32 random bits, in hex (sortable by time).
fn new_id() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{ms:012x}{:08x}", rand::random::<u32>())
}

/// Whether `id` could be a job id (checked before it touches a path).
pub fn valid_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// SHA-256 of a file, hex.
fn sha256_file(path: &Path) -> Result<String, JobError> {
    let mut file = fs::File::open(path).map_err(|e| JobError::Storage(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| JobError::Storage(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Lowers the calling thread's CPU priority (on Linux, nice is per thread, and threads it
/// starts inherit it).
fn lower_priority() {
    // SAFETY: setpriority only changes the scheduling priority of the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        tracing::debug!("cannot lower the priority of a job thread");
    }
}

/// Takes an exclusive lock on `<dir>/.lock`, so two servers never run one directory's jobs.
fn lock_dir(dir: &Path) -> Result<fs::File, JobError> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(dir).map_err(|e| JobError::Storage(format!("{}: {e}", dir.display())))?;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JobError::Storage(format!("{}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor this function owns; the lock lives as long as the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(JobError::Storage(format!(
            "{} is locked: another server uses this jobs directory",
            path.display()
        )));
    }
    Ok(file)
}

impl Jobs {
    /// Opens the jobs directory, resumes its queued and running jobs, and starts the runners.
    pub fn start(config: JobsConfig, metrics: Arc<Metrics>) -> Result<Self, JobError> {
        let lock = lock_dir(&config.dir)?;
        // Decoding for jobs (eval's streaming runs on rayon's global pool): job_threads
        // threads at the jobs' priority. Only jobs and the robustness endpoints use rayon here.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.job_threads)
            .thread_name(|i| format!("job-decode-{i}"))
            .start_handler(|_| lower_priority())
            .build_global();
        if let Err(e) = pool {
            tracing::warn!("job decoding threads: {e}");
        }
        let mut table = Table::default();
        let entries =
            fs::read_dir(&config.dir).map_err(|e| JobError::Storage(format!("{}: {e}", config.dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&name) {
                continue;
            }
            let path = entry.path().join("job.json");
            match read_json::<JobRecord>(&path) {
                Ok(mut record) if record.id == name => {
                    if matches!(record.state, JobState::Running) {
                        tracing::info!(job = %name, "resuming evaluation job");
                        record.state = JobState::Queued;
                    }
                    table.jobs.insert(
                        name,
                        Entry {
                            record,
                            progress: Progress::default(),
                            cancel: Arc::default(),
                            stop: None,
                        },
                    );
                }
                Ok(_) => tracing::warn!("{}: the id does not match its directory; ignored", path.display()),
                Err(e) => tracing::warn!("{}: {e}; ignored", path.display()),
            }
        }
        let shared = Arc::new(Shared {
            config,
            metrics,
            table: Mutex::new(table),
            changed: Condvar::new(),
            _lock: lock,
        });
        {
            let table = shared.lock();
            for entry in table.jobs.values().filter(|e| e.record.state == JobState::Queued) {
                shared.persist(&entry.record);
            }
            shared.count_states(&table);
        }
        let mut runners = Vec::new();
        for i in 0..shared.config.max_jobs {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("job-runner-{i}"))
                .spawn(move || runner(&s))
                .map_err(|e| JobError::Storage(format!("cannot start a job runner: {e}")))?;
            runners.push(handle);
        }
        Ok(Self { shared, runners })
    }

    /// Accepts a job for `model` (the version the request resolved): checks the spec, pins the
    /// model file, plans the work (listing the data sets) and queues it. Blocking.
    pub fn submit(&self, spec: JobSpec, model: &LoadedModel) -> Result<JobStatus, JobError> {
        let shared = &self.shared;
        let id = new_id();
        let dir = shared.job_dir(&id);
        let options = spec.options(dir.join("out"), shared.config.data_root.as_deref())?;
        let path = model.artifact.model_path.clone();
        let pinned = PinnedModel {
            name: model.name.clone(),
            version: model.version,
            sha256: sha256_file(&path)?,
            path,
        };
        let artifact = open_pinned(&pinned)?;
        let session = shared.session_options();
        let units: usize = Evaluator::new(&shared.config.runtime, &artifact, session, options)?
            .plan_parts()?
            .iter()
            .map(|p| p.items)
            .fold(0usize, usize::saturating_add);
        if units > shared.config.max_units {
            return Err(JobError::TooLarge {
                units,
                limit: shared.config.max_units,
            });
        }
        let mut table = shared.lock();
        let queued = table
            .jobs
            .values()
            .filter(|e| e.record.state == JobState::Queued)
            .count();
        if queued >= shared.config.max_queued {
            return Err(JobError::QueueFull { queued });
        }
        let record = JobRecord {
            id: id.clone(),
            state: JobState::Queued,
            spec,
            model: pinned,
            total: units,
            created_at: now(),
            started_at: None,
            finished_at: None,
            error: None,
        };
        write_json(&dir.join("job.json"), &record).map_err(|e| JobError::Storage(e.to_string()))?;
        let status = record.status(&Progress::default());
        table.jobs.insert(
            id,
            Entry {
                record,
                progress: Progress::default(),
                cancel: Arc::default(),
                stop: None,
            },
        );
        shared.count_states(&table);
        shared.changed.notify_all();
        Ok(status)
    }

    /// The status of job `id`.
    pub fn status(&self, id: &str) -> Result<JobStatus, JobError> {
        let table = self.shared.lock();
        let entry = table.jobs.get(id).ok_or_else(|| JobError::NotFound(id.to_string()))?;
        Ok(entry.record.status(&entry.progress))
    }

    /// Jobs, newest first, optionally only those in `state` or of `model`, at most `limit`.
    pub fn list(&self, state: Option<JobState>, model: Option<&str>, limit: usize) -> Vec<JobStatus> {
        let table = self.shared.lock();
        let mut jobs: Vec<&Entry> = table
            .jobs
            .values()
            .filter(|e| state.is_none_or(|s| e.record.state == s))
            .filter(|e| model.is_none_or(|m| e.record.model.name == m))
            .collect();
        jobs.sort_by(|a, b| {
            b.record
                .created_at
                .total_cmp(&a.record.created_at)
                .then_with(|| b.record.id.cmp(&a.record.id))
        });
        jobs.iter().take(limit).map(|e| e.record.status(&e.progress)).collect()
    }

    /// Cancels job `id`: a queued job at once; a running one by raising its stop signal,
    /// which terminates its ONNX Runtime run in progress (this waits up to `wait` for the
    /// runner to record it). Its finished parts are kept.
    pub fn cancel(&self, id: &str, wait: Duration) -> Result<JobStatus, JobError> {
        let shared = &self.shared;
        let mut table = shared.lock();
        let entry = table
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        match entry.record.state {
            s if s.is_final() => {
                return Err(JobError::Conflict {
                    id: id.to_string(),
                    state: s.name(),
                    what: "it cannot be cancelled",
                });
            }
            JobState::Queued => {
                entry.record.state = JobState::Cancelled;
                entry.record.finished_at = Some(now());
                shared.persist(&entry.record);
                shared.count_states(&table);
            }
            _ => {
                entry.cancel.store(true, Ordering::Release);
                if let Some(stop) = &entry.stop {
                    stop.stop();
                }
                let deadline = Instant::now() + wait;
                loop {
                    let running = table.jobs.get(id).is_some_and(|e| !e.record.state.is_final());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !running || left.is_zero() {
                        break;
                    }
                    table = shared
                        .changed
                        .wait_timeout(table, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        let entry = table.jobs.get(id).ok_or_else(|| JobError::NotFound(id.to_string()))?;
        Ok(entry.record.status(&entry.progress))
    }

    /// The job's `hardy eval` output directory, once `id` exists.
    pub fn output_dir(&self, id: &str) -> Result<(PathBuf, JobState), JobError> {
        let table = self.shared.lock();
        let entry = table.jobs.get(id).ok_or_else(|| JobError::NotFound(id.to_string()))?;
        Ok((self.shared.job_dir(id).join("out"), entry.record.state))
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        {
            let mut table = self.shared.lock();
            table.stopping = true;
            for stop in table.jobs.values().filter_map(|e| e.stop.as_ref()) {
                stop.stop();
            }
        }
        self.shared.changed.notify_all();
        for runner in self.runners.drain(..) {
            let _ = runner.join();
        }
    }
}

/// The artifact of a pinned model (its version directory's settings).
fn open_pinned(pinned: &PinnedModel) -> Result<ModelArtifact, JobError> {
    let model_dir = pinned
        .path
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| JobError::Storage(format!("{} is not in a model directory", pinned.path.display())))?;
    ModelArtifact::open(model_dir, Some(pinned.version))
        .map_err(|e| JobError::Storage(format!("model {}:{}: {e}", pinned.name, pinned.version)))
}

/// One runner thread: takes the oldest queued job, runs it, records how it ended.
fn runner(shared: &Shared) {
    lower_priority();
    loop {
        let (record, cancel, stop) = {
            let mut table = shared.lock();
            loop {
                if table.stopping {
                    return;
                }
                let next = table
                    .jobs
                    .values()
                    .filter(|e| e.record.state == JobState::Queued)
                    .min_by(|a, b| a.record.created_at.total_cmp(&b.record.created_at))
                    .map(|e| e.record.id.clone());
                if let Some(entry) = next.and_then(|id| table.jobs.get_mut(&id)) {
                    entry.record.state = JobState::Running;
                    entry.record.started_at = Some(now());
                    entry.progress = Progress::default();
                    // Without a stop signal a cancel still stops the job, after its batch.
                    entry.stop = StopSignal::new()
                        .inspect_err(|e| tracing::warn!("job {}: {e}", entry.record.id))
                        .ok();
                    shared.persist(&entry.record);
                    let picked = (entry.record.clone(), Arc::clone(&entry.cancel), entry.stop.clone());
                    shared.count_states(&table);
                    shared.changed.notify_all();
                    break picked;
                }
                table = shared.changed.wait(table).unwrap_or_else(|p| p.into_inner());
            }
        };
        let t0 = Instant::now();
        tracing::info!(job = %record.id, model = %record.model.name, "evaluation job started");
        let observer = JobObserver {
            shared,
            id: &record.id,
            model: &record.model.name,
            cancel: &cancel,
            current: Mutex::new(None),
        };
        let outcome = run_job(shared, &record, &observer, stop);
        let mut table = shared.lock();
        let stopping = table.stopping;
        let Some(entry) = table.jobs.get_mut(&record.id) else {
            continue;
        };
        entry.stop = None;
        let state = match outcome {
            Ok(()) => JobState::Succeeded,
            Err(JobError::Eval(EvalError::Cancelled)) if cancel.load(Ordering::Acquire) => JobState::Cancelled,
            // Stopped by the server's shutdown: stays `running` on disk, resumed at start.
            Err(JobError::Eval(EvalError::Cancelled)) if stopping => {
                tracing::info!(job = %record.id, "evaluation job paused by shutdown; resumes at the next start");
                continue;
            }
            Err(e) => {
                tracing::warn!(job = %record.id, "evaluation job failed: {e}");
                entry.record.error = Some(e.to_string());
                JobState::Failed
            }
        };
        entry.record.state = state;
        entry.record.finished_at = Some(now());
        for part in &mut entry.progress.parts {
            if state == JobState::Succeeded {
                part.state = "done";
            } else if part.state == "running" {
                part.state = "pending";
            }
        }
        shared.persist(&entry.record);
        shared
            .metrics
            .job_duration
            .with_label_values(&[state.name()])
            .observe(t0.elapsed().as_secs_f64());
        tracing::info!(job = %record.id, state = state.name(), "evaluation job finished in {:.1} s", t0.elapsed().as_secs_f64());
        shared.count_states(&table);
        shared.changed.notify_all();
    }
}

/// Runs one job to its end (or its cancellation).
fn run_job(
    shared: &Shared,
    record: &JobRecord,
    observer: &JobObserver<'_>,
    stop: Option<StopSignal>,
) -> Result<(), JobError> {
    let sha = sha256_file(&record.model.path)?;
    if sha != record.model.sha256 {
        return Err(JobError::Storage(format!(
            "model file {} changed since the job was submitted (sha256 {} -> {sha}); a job never mixes two models' figures",
            record.model.path.display(),
            record.model.sha256
        )));
    }
    let artifact = open_pinned(&record.model)?;
    let options = record.spec.options(
        shared.job_dir(&record.id).join("out"),
        shared.config.data_root.as_deref(),
    )?;
    let session = shared.session_options();
    let mut evaluator = Evaluator::new(&shared.config.runtime, &artifact, session, options)?;
    if let Some(stop) = stop {
        evaluator.set_stop(stop);
    }
    evaluator.run(observer)?;
    Ok(())
}

/// Publishes a running job's progress in the table, counts its images, and tells the
/// evaluator to stop when the job is cancelled or the server stops.
struct JobObserver<'a> {
    shared: &'a Shared,
    id: &'a str,
    model: &'a str,
    cancel: &'a AtomicBool,
    /// The part in progress: its index in the plan and its suite.
    current: Mutex<Option<(usize, String)>>,
}

impl JobObserver<'_> {
    fn with_progress(&self, f: impl FnOnce(&mut Progress)) {
        let mut table = self.shared.lock();
        if let Some(entry) = table.jobs.get_mut(self.id) {
            f(&mut entry.progress);
        }
    }
}

impl Observer for JobObserver<'_> {
    fn planned(&self, parts: &[PlannedPart]) {
        self.with_progress(|p| {
            p.parts = parts
                .iter()
                .map(|part| PartProgress {
                    key: part.key.clone(),
                    suite: part.key.split('/').next().unwrap_or_default().to_string(),
                    done: 0,
                    total: part.items,
                    state: "pending",
                })
                .collect();
            p.since_start = Some((0, Instant::now()));
        });
    }

    fn part_started(&self, key: &str, _items: usize) {
        let mut found = None;
        self.with_progress(|p| {
            if let Some((i, part)) = p.parts.iter_mut().enumerate().find(|(_, part)| part.key == key) {
                part.state = "running";
                part.done = 0;
                found = Some((i, part.suite.clone()));
            }
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = found;
    }

    fn advanced(&self, n: usize) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((i, suite)) = current else { return };
        self.shared
            .metrics
            .eval_images
            .with_label_values(&[self.model, &suite])
            .inc_by(n as u64);
        self.with_progress(|p| {
            if let Some(part) = p.parts.get_mut(i) {
                part.done = part.done.saturating_add(n).min(part.total);
            }
            if let Some((done, _)) = &mut p.since_start {
                *done = done.saturating_add(n);
            }
        });
    }

    fn part_finished(&self, key: &str, _resumed: bool) {
        self.with_progress(|p| {
            if let Some(part) = p.parts.iter_mut().find(|part| part.key == key) {
                part.state = "done";
                part.done = part.total;
            }
        });
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.shared.lock().stopping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_sort_by_time() {
        let a = new_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_id();
        assert!(valid_id(&a) && valid_id(&b), "{a} {b}");
        assert!(a < b);
        for bad in ["", "../../etc/passwd", "0123456789abcdef012G", "0123456789ABCDEF0123"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_jobs_directory_is_locked_by_one_server() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another server"), "{err}");
        drop(first);
        lock_dir(dir.path()).unwrap();
    }
}
