//! Triton's statistics extension: `GET /v2/models/stats`, `/v2/models/{m}/stats` and
//! `/v2/models/{m}/versions/{v}/stats`, what `tritonclient`'s `get_inference_statistics`
//! reads. Per model version, cumulative counts and nanoseconds since the version loaded.
//!
//! Why beside the Prometheus metrics: Triton users read these figures through the protocol,
//! without a Prometheus server. The same exit points feed both: the batcher after each
//! session run, and [`crate::http::Outcome`] once per request, through the handle the
//! version's batcher holds ([`crate::batcher::Batcher::stats`]).
//!
//! What each figure holds (Triton's names): `inference_count` images and `execution_count`
//! session runs; in `inference_stats`, per request, `success` and `fail` (count and total
//! time; a client that went away counts as a failure), `queue` (waiting for a batch),
//! `compute_input` (decoding and preprocessing, or tensor conversion), `compute_infer` (the
//! session runs that carried its images) and `compute_output` (from the logits' arrival to
//! the response being built); `batch_stats`, per batch size formed, the session runs of that
//! size (`compute_infer`). There is no response cache, so `cache_hit` and `cache_miss` stay 0.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

/// A count and the total time of what it counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cumulative {
    /// How many.
    pub count: u64,
    /// Their total duration, nanoseconds.
    pub ns: u64,
}

impl Cumulative {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self.ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    fn json(&self) -> Value {
        json!({ "count": self.count, "ns": self.ns })
    }
}

/// Where a successful request's time went, for [`VersionStats::request`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestParts {
    /// Waiting for a batch.
    pub queue: Duration,
    /// Decoding and preprocessing.
    pub input: Duration,
    /// Session runs.
    pub infer: Duration,
    /// From the logits' arrival to the response.
    pub output: Duration,
}

/// One model version's figures.
#[derive(Debug, Default)]
pub struct VersionStats {
    /// When the last session run ended, milliseconds since the Unix epoch (0: never).
    pub last_inference_ms: u64,
    /// Images run.
    pub inference_count: u64,
    /// Session runs.
    pub execution_count: u64,
    /// Requests answered.
    pub success: Cumulative,
    /// Requests failed (any reason, including a client that went away).
    pub fail: Cumulative,
    /// Per successful request: waiting for a batch.
    pub queue: Cumulative,
    /// Per successful request: decoding and preprocessing.
    pub compute_input: Cumulative,
    /// Per successful request: session runs.
    pub compute_infer: Cumulative,
    /// Per successful request: building the response from the logits.
    pub compute_output: Cumulative,
    /// Per batch size formed: its session runs.
    pub batches: BTreeMap<usize, Cumulative>,
}

impl VersionStats {
    /// Records one session run of `images` images that took `infer`.
    pub fn executed(&mut self, images: usize, infer: Duration) {
        self.inference_count += images as u64;
        self.execution_count += 1;
        self.batches.entry(images).or_default().add(infer);
        self.last_inference_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    /// Records one request: answered (with where its time went) or failed.
    pub fn request(&mut self, total: Duration, parts: Result<RequestParts, ()>) {
        match parts {
            Ok(p) => {
                self.success.add(total);
                self.queue.add(p.queue);
                self.compute_input.add(p.input);
                self.compute_infer.add(p.infer);
                self.compute_output.add(p.output);
            }
            Err(()) => self.fail.add(total),
        }
    }

    /// Triton's JSON for this version.
    pub fn json(&self, name: &str, version: &str) -> Value {
        let none = Cumulative::default().json();
        let batch_stats: Vec<Value> = self
            .batches
            .iter()
            .map(|(size, c)| json!({ "batch_size": size, "compute_infer": c.json() }))
            .collect();
        json!({
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": none,
                "cache_miss": none,
            },
            "batch_stats": batch_stats,
            "memory_usage": [],
        })
    }
}

/// A version's figures, made with its batcher (so a reload starts from zero) and shared with
/// the HTTP layer through the loaded version.
pub type VersionHandle = Arc<Mutex<VersionStats>>;

/// Locks figures; a poisoned lock (a panic elsewhere) still holds usable counts.
pub fn lock(h: &VersionHandle) -> std::sync::MutexGuard<'_, VersionStats> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_accumulate_in_tritons_shape() {
        let ms = Duration::from_millis;
        let h = VersionHandle::default();
        lock(&h).executed(3, ms(4));
        lock(&h).executed(3, ms(6));
        lock(&h).executed(1, ms(1));
        let parts = RequestParts {
            queue: ms(1),
            input: ms(2),
            infer: ms(4),
            output: ms(0),
        };
        lock(&h).request(ms(10), Ok(parts));
        lock(&h).request(ms(5), Err(()));
        let j = lock(&h).json("m", "2");
        assert_eq!(j["name"], "m");
        assert_eq!(j["version"], "2");
        assert_eq!(j["inference_count"], 7);
        assert_eq!(j["execution_count"], 3);
        let s = &j["inference_stats"];
        assert_eq!(s["success"], json!({ "count": 1, "ns": 10_000_000 }));
        assert_eq!(s["fail"], json!({ "count": 1, "ns": 5_000_000 }));
        assert_eq!(s["queue"]["ns"], 1_000_000);
        assert_eq!(s["compute_input"]["ns"], 2_000_000);
        assert_eq!(s["compute_infer"]["ns"], 4_000_000);
        assert_eq!(s["cache_hit"]["count"], 0);
        assert_eq!(
            j["batch_stats"],
            json!([
                { "batch_size": 1, "compute_infer": { "count": 1, "ns": 1_000_000 } },
                { "batch_size": 3, "compute_infer": { "count": 2, "ns": 10_000_000 } },
            ])
        );
        assert!(j["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
        // a version that has served nothing reads as zeros
        let fresh = VersionStats::default().json("m", "3");
        assert_eq!(fresh["execution_count"], 0);
        assert_eq!(fresh["inference_stats"]["fail"]["count"], 0);
    }
}
