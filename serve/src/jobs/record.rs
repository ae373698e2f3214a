//! A job as it is kept: `job.json` in the job's directory (what survives a restart), and
//! the progress held in memory while it runs; plus the status document the API answers.
//!
//! ```text
//! <jobs-dir>/<id>/job.json   this record (written atomically at every change of state)
//! <jobs-dir>/<id>/out/       the `hardy eval` output directory: run.json, parts/, result.json,
//!                            report.md and its plots
//! ```

use std::{path::PathBuf, time::Instant};

use serde::{Deserialize, Serialize};

use super::spec::JobSpec;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, waiting for a runner.
    Queued,
    /// Being evaluated.
    Running,
    /// Finished: its result and report are written.
    Succeeded,
    /// Stopped by an error (see `error`).
    Failed,
    /// Stopped by `DELETE`; the parts finished before are kept.
    Cancelled,
}

impl JobState {
    /// Every state, for the metrics.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|state| state.name() == s)
            .ok_or_else(|| format!("{s:?} is not a job state (queued, running, succeeded, failed, cancelled)"))
    }
}

/// The model version a job evaluates, pinned when it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedModel {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// The ONNX file.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex; checked again whenever the job (re)starts.
    pub sha256: String,
}

/// `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id (its directory's name).
    pub id: String,
    /// Its state.
    pub state: JobState,
    /// What was asked.
    pub spec: JobSpec,
    /// The model version evaluated.
    pub model: PinnedModel,
    /// Units of work planned when it was accepted.
    pub total: usize,
    /// When it was accepted, unix seconds.
    pub created_at: f64,
    /// When it last started running.
    pub started_at: Option<f64>,
    /// When it reached a final state.
    pub finished_at: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One part's progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartProgress {
    /// The part's key (`clean`, `c/fog/3`, ...).
    pub key: String,
    /// Its suite (the key's first segment).
    pub suite: String,
    /// Units done.
    pub done: usize,
    /// Units in the part.
    pub total: usize,
    /// `pending`, `running` or `done`.
    pub state: &'static str,
}

/// A running job's progress, kept in memory (rebuilt from the stored parts on resume).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The plan, part by part, once the runner has made it.
    pub parts: Vec<PartProgress>,
    /// Units done since this run started (resumed parts excluded), and when it started.
    pub since_start: Option<(usize, Instant)>,
}

/// The job's progress as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProgressView {
    /// Units done, over every part.
    pub done: usize,
    /// Units planned.
    pub total: usize,
    /// Units per second since the job (re)started running.
    pub images_per_second: Option<f64>,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
    /// Per part.
    pub parts: Vec<PartProgress>,
}

/// Links of a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Links {
    /// This status.
    #[serde(rename = "self")]
    pub this: String,
    /// `result.json`.
    pub result: String,
    /// The report page.
    pub report: String,
}

/// `GET /v1/evaluations/{id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// queued, running, succeeded, failed or cancelled.
    #[schema(value_type = String)]
    pub state: JobState,
    /// The model's name.
    pub model: String,
    /// The pinned version.
    pub version: u64,
    /// SHA-256 of the pinned ONNX file.
    pub sha256: String,
    /// The spec as submitted.
    #[schema(value_type = Object)]
    pub spec: JobSpec,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds, when it started running.
    pub started_at: Option<f64>,
    /// Unix seconds, when it finished.
    pub finished_at: Option<f64>,
    /// Progress.
    pub progress: ProgressView,
    /// Why it failed.
    pub error: Option<String>,
    /// Where to find it.
    pub links: Links,
}

/// The links of job `id`.
pub fn links(id: &str) -> Links {
    let base = format!("/v1/evaluations/{id}");
    Links {
        result: format!("{base}/result"),
        report: format!("{base}/report"),
        this: base,
    }
}

impl JobRecord {
    /// The API's view of this record with `progress`.
    pub fn status(&self, progress: &Progress) -> JobStatus {
        let (done, total) = if progress.parts.is_empty() {
            let done = if self.state == JobState::Succeeded {
                self.total
            } else {
                0
            };
            (done, self.total)
        } else {
            (
                progress.parts.iter().map(|p| p.done).sum(),
                progress.parts.iter().map(|p| p.total).sum(),
            )
        };
        let rate = match (self.state, progress.since_start) {
            (JobState::Running, Some((n, t0))) if n > 0 => Some(n as f64 / t0.elapsed().as_secs_f64().max(1e-3)),
            _ => None,
        };
        JobStatus {
            id: self.id.clone(),
            state: self.state,
            model: self.model.name.clone(),
            version: self.model.version,
            sha256: self.model.sha256.clone(),
            spec: self.spec.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            progress: ProgressView {
                done,
                total,
                images_per_second: rate,
                eta_seconds: rate.map(|r| total.saturating_sub(done) as f64 / r),
                parts: progress.parts.clone(),
            },
            error: self.error.clone(),
            links: links(&self.id),
        }
    }
}
