//! The output directory of an evaluation, which is also its checkpoint.
//!
//! ```text
//! OUT/run.json            the model, shard and data sources (checked on resume)
//! OUT/parts/<key>.json    one finished part each (raw counts)
//! OUT/progress/<key>.jsonl what a long part has finished so far (AutoAttack), one line per batch
//! OUT/result.json         every figure, recomputed from the parts
//! OUT/report.md + *.png   the report
//! ```
//! A part's file appears only once the part is finished (written to a temporary name, then
//! renamed), so an interrupted run resumes by skipping the parts that have files. Parts that
//! take hours (AutoAttack on ImageNet) also append each finished batch to a progress log,
//! read back when the part starts again, so an interruption costs at most one batch; the log
//! goes once the part's file is written. A line cut short by a crash is ignored.

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
        write_json(&self.part_path(key), &record)?;
        match fs::remove_file(self.progress_path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EvalError::Io {
                path: self.progress_path(key),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn progress_path(&self, key: &str) -> PathBuf {
        self.root
            .join("progress")
            .join(format!("{}.jsonl", key.replace('/', "__")))
    }

    /// Appends one batch's record to `key`'s progress log (flushed to disk before returning).
    pub fn append_progress<T: Serialize>(&self, key: &str, record: &T) -> Result<(), EvalError> {
        use std::io::Write;
        let path = self.progress_path(key);
        let io = |source| EvalError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|source| EvalError::Json {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// The records of `key`'s progress log, in order: the batches an interrupted run of the
    /// part finished. Stops at the first line that does not parse (a write cut short), and
    /// cuts the log there, so that the records appended next follow whole lines.
    pub fn progress<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Vec<T>, EvalError> {
        let path = self.progress_path(key);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(EvalError::Io { path, source }),
        };
        let mut records = Vec::new();
        let mut whole = 0;
        for line in text.split_inclusive('\n') {
            match serde_json::from_str(line.trim_end()) {
                Ok(record) if line.ends_with('\n') => {
                    records.push(record);
                    whole += line.len();
                }
                _ => break,
            }
        }
        if whole < text.len() {
            write_atomic(&path, &text.as_bytes()[..whole])?;
        }
        Ok(records)
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

    /// An accuracy tally of one correctly classified image.
    fn one_image_tally() -> Tally {
        let mut accuracy = metrics::Accuracy::default();
        accuracy.add(&[1.0, 0.0], 0);
        Tally::Accuracy {
            accuracy,
            confidences: Vec::new(),
            correct: Vec::new(),
        }
    }

    /// A part's failures are stored with it and read back; a part without failures is
    /// stored without the fields.
    #[test]
    fn parts_keep_their_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path(), info()).unwrap();
        let tally = one_image_tally();
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

    /// A progress log reads back in order, stops at a line cut short, and goes once the part
    /// is saved.
    #[test]
    fn progress_logs_survive_a_torn_write_and_go_with_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::open(dir.path(), info()).unwrap();
        let key = "autoattack/Linf/0.031373/apgd-ce";
        assert!(store.progress::<Vec<u32>>(key).unwrap().is_empty());
        store.append_progress(key, &vec![1u32, 2]).unwrap();
        store.append_progress(key, &vec![3u32]).unwrap();
        let path = dir.path().join("progress/autoattack__Linf__0.031373__apgd-ce.jsonl");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("[4, 5");
        fs::write(&path, text).unwrap();
        assert_eq!(store.progress::<Vec<u32>>(key).unwrap(), vec![vec![1, 2], vec![3]]);
        // The torn tail is cut, so what comes next is read.
        store.append_progress(key, &vec![6u32]).unwrap();
        assert_eq!(
            store.progress::<Vec<u32>>(key).unwrap(),
            vec![vec![1, 2], vec![3], vec![6]]
        );
        let tally = one_image_tally();
        store.save(key, tally, Failures::default()).unwrap();
        assert!(!path.exists());
        assert!(store.has(key));
    }
}
