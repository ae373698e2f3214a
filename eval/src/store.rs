//! The output directory of an evaluation, which is also its checkpoint.
//!
//! ```text
//! OUT/run.json            the model, shard and data sources (checked on resume)
//! OUT/parts/<key>.json    one finished part each (raw counts)
//! OUT/result.json         every figure, recomputed from the parts
//! OUT/report.md + *.png   the report
//! ```
//! A part's file appears only once the part is finished (written to a temporary name, then
//! renamed), so an interrupted run resumes by skipping the parts that have files.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    EvalError,
    result::{Failures, ModelSummary, PartRecord, Tally},
};

/// What `run.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The model evaluated.
    pub model: ModelSummary,
    /// The shard evaluated (`i/n`), or `merged:n`.
    pub shard: String,
    /// Where each suite's data came from.
    pub data: BTreeMap<String, String>,
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let text = fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Serialises `value` as pretty JSON into `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EvalError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// An evaluation's output directory.
pub struct PartStore {
    root: PathBuf,
    info: RunInfo,
}

impl PartStore {
    /// Opens (or starts) the directory for `info`. An existing `run.json` must name the same
    /// model file and shard: parts measured on another model are never mixed in.
    pub fn open(root: &Path, info: RunInfo) -> Result<Self, EvalError> {
        let run = root.join("run.json");
        if run.is_file() {
            let old: RunInfo = read_json(&run)?;
            if old.model.fingerprint != info.model.fingerprint {
                return Err(EvalError::Mismatch {
                    path: run,
                    reason: format!(
                        "it holds results of model {} ({}), not {} ({}); use another --out",
                        old.model.path, old.model.fingerprint, info.model.path, info.model.fingerprint
                    ),
                });
            }
            if old.shard != info.shard {
                return Err(EvalError::Mismatch {
                    path: run,
                    reason: format!("it holds shard {}, not {}; use another --out", old.shard, info.shard),
                });
            }
        }
        let mut merged = info;
        if run.is_file() {
            let old: RunInfo = read_json(&run)?;
            for (k, v) in old.data {
                merged.data.entry(k).or_insert(v);
            }
        }
        write_json(&run, &merged)?;
        Ok(Self {
            root: root.to_path_buf(),
            info: merged,
        })
    }

    /// The run's description.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn part_path(&self, key: &str) -> PathBuf {
        self.root.join("parts").join(format!("{}.json", key.replace('/', "__")))
    }

    /// Whether `key` is finished.
    pub fn has(&self, key: &str) -> bool {
        self.part_path(key).is_file()
    }

    /// Stores a finished part: its counts and the items that failed.
    pub fn save(&self, key: &str, tally: Tally, failures: Failures) -> Result<(), EvalError> {
        let record = PartRecord {
            key: key.to_string(),
            model: self.info.model.fingerprint.clone(),
            shard: self.info.shard.clone(),
            tally,
            failed: failures.failed,
            failures: failures.examples,
        };
        write_json(&self.part_path(key), &record)
    }

    /// Every finished part, by key.
    pub fn load_all(&self) -> Result<BTreeMap<String, PartRecord>, EvalError> {
        load_parts(&self.root, &self.info.model.fingerprint)
    }
}

/// Reads `root/parts/*.json`, checking each was measured on the model `fingerprint`.
pub fn load_parts(root: &Path, fingerprint: &str) -> Result<BTreeMap<String, PartRecord>, EvalError> {
    let dir = root.join("parts");
    let mut parts = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parts),
        Err(source) => return Err(EvalError::Io { path: dir, source }),
    };
    for entry in entries {
        let path = entry.map_err(|source| EvalError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = path.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let record: PartRecord = read_json(&path)?;
        if record.model != fingerprint {
            return Err(EvalError::Mismatch {
                path,
                reason: format!("measured on model {}, not {fingerprint}", record.model),
            });
        }
        parts.insert(record.key.clone(), record);
    }
    Ok(parts)
}

/// FNV-1a (64 bit) of a file's bytes and its length: `"<hex>-<len>"`
/// ([`engine::artifact::file_fingerprint`]).
pub fn fingerprint(path: &Path) -> Result<String, EvalError> {
    engine::artifact::file_fingerprint(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

    fn info() -> RunInfo {
        RunInfo {
            model: ModelSummary {
                name: "m".into(),
                path: "m.onnx".into(),
                fingerprint: "abc-1".into(),
                classes: 10,
            },
            shard: "0/1".into(),
            data: BTreeMap::new(),
        }
    }

    /// A part's failures are stored with it and read back; a part without failures is
    /// stored without the fields.
    #[test]
    fn parts_keep_their_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path(), info()).unwrap();
        let mut accuracy = metrics::Accuracy::default();
        accuracy.add(&[1.0, 0.0], 0);
        let tally = Tally::Accuracy {
            accuracy,
            confidences: Vec::new(),
            correct: Vec::new(),
        };
        let mut failures = Failures::default();
        failures.add("3/bad.png", "not a supported image".into());
        store.save("clean", tally.clone(), failures.clone()).unwrap();
        store.save("c/fog/1", tally, Failures::default()).unwrap();
        let parts = store.load_all().unwrap();
        assert_eq!(parts["clean"].failures(), failures);
        assert_eq!(parts["clean"].tally.count(), 1);
        assert_eq!(parts["c/fog/1"].failed, 0);
        let text = fs::read_to_string(dir.path().join("parts/c__fog__1.json")).unwrap();
        assert!(!text.contains("failed") && !text.contains("failures"), "{text}");
        let text = fs::read_to_string(dir.path().join("parts/clean.json")).unwrap();
        assert!(text.contains("\"failed\": 1") && text.contains("3/bad.png"), "{text}");
    }
}
