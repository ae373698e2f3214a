//! Model artifacts: where a model's ONNX file and settings live, and how they are resolved.
//!
//! The model repository is `<repo>/<name>/<version>/model.onnx` with an optional
//! `config.toml` beside the ONNX file; versions are positive integers and the highest is used
//! unless one is named. A path may also name a version directory or an `.onnx` file directly.
//! The config is layered (see [`crate::config`]): defaults, then the model's own
//! `hardy.config` metadata, then `config.toml`.

use std::{
    fs,
    io::BufReader,
    path::{Path, PathBuf},
};

use protobuf::{CodedInputStream, Message};

use crate::{
    Error, Result,
    config::{self, ConfigError, ModelConfig},
    onnx::OnnxError,
};

/// The ONNX file name inside a version directory.
pub const MODEL_FILE: &str = "model.onnx";
/// The optional settings file beside the ONNX file.
pub const CONFIG_FILE: &str = "config.toml";

/// A resolved model: its files and validated settings.
#[derive(Debug, Clone)]
pub struct ModelArtifact {
    /// The model's name: its directory in the repository, or the ONNX file's stem.
    pub name: String,
    /// The version directory used, if the model lives in a versioned layout.
    pub version: Option<u64>,
    /// The ONNX file.
    pub model_path: PathBuf,
    /// The `config.toml` that was applied, if any.
    pub config_path: Option<PathBuf>,
    /// Whether the ONNX file carried its own `hardy.config` metadata.
    pub self_described: bool,
    /// The merged, validated settings.
    pub config: ModelConfig,
}

impl ModelArtifact {
    /// Resolves `path` (a model directory with version subdirectories, a version directory, or
    /// an `.onnx` file) and loads its settings. `version` picks a version in a model directory.
    pub fn open(path: &Path, version: Option<u64>) -> Result<Self> {
        Self::open_with_defaults(path, version, None)
    }

    /// Like [`ModelArtifact::open`], with `defaults` (a TOML table and its source name, e.g. a
    /// server's `[batching]` flags) layered between the ONNX metadata and `config.toml`: the
    /// operator's defaults beat what the exporter embedded, and a model's `config.toml` beats
    /// both. A `[batching]` table in the metadata (older exporters wrote one) is ignored:
    /// serving settings come from the server and `config.toml` only.
    pub fn open_with_defaults(
        path: &Path,
        version: Option<u64>,
        defaults: Option<(&toml::Table, &str)>,
    ) -> Result<Self> {
        let (name, version, model_path) = resolve(path, version)?;
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let mut layers = Vec::new();
        let metadata = read_metadata(&model_path)?;
        let self_described =
            if let Some(text) = metadata.iter().find(|(k, _)| k == config::METADATA_KEY).map(|(_, v)| v) {
                let source = format!("{} (metadata {})", model_path.display(), config::METADATA_KEY);
                let mut table = config::parse_table(text, &source)?;
                // How to serve is the operator's choice, not the model's: exporters before
                // 2026-12 wrote their batching defaults here, which then beat the server's.
                if table.remove("batching").is_some() {
                    tracing::debug!(model = %model_path.display(), "ignoring [batching] in the model's metadata");
                }
                layers.push((table, source));
                true
            } else {
                false
            };
        if let Some((table, source)) = defaults {
            layers.push((table.clone(), source.to_string()));
        }
        let config_file = dir.join(CONFIG_FILE);
        let config_path = if config_file.is_file() {
            let text = fs::read_to_string(&config_file).map_err(|source| ConfigError::Io {
                path: config_file.clone(),
                source,
            })?;
            let source = config_file.display().to_string();
            layers.push((config::parse_table(&text, &source)?, source));
            Some(config_file)
        } else {
            None
        };
        let config = ModelConfig::from_layers(&layers, Some(dir))?;
        Ok(Self {
            name,
            version,
            model_path,
            config_path,
            self_described,
            config,
        })
    }

    /// `name` or `name:version`, for logs and reports.
    pub fn display_name(&self) -> String {
        match self.version {
            Some(v) => format!("{}:{v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// FNV-1a (64 bit) of a file's bytes and its length, `"<hex>-<len>"`: the identity of a model
/// file in evaluation results and in the trainer's teacher cache.
pub fn file_fingerprint(path: &Path) -> std::io::Result<String> {
    let bytes = fs::read(path)?;
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Ok(format!("{h:016x}-{}", bytes.len()))
}

/// The version numbers present in a model directory, ascending.
pub fn versions(model_dir: &Path) -> Result<Vec<u64>> {
    let entries = fs::read_dir(model_dir).map_err(|source| Error::Io {
        path: model_dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(MODEL_FILE).is_file())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            // Only the number's own spelling: `07` would count as version 7 but is not the
            // directory `7/` that loading version 7 reads.
            match name.parse::<u64>() {
                Ok(v) if v.to_string() == name => Some(v),
                _ => {
                    tracing::warn!(
                        "{}: ignored, a version directory is named by a number without leading zeros",
                        e.path().display()
                    );
                    None
                }
            }
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn resolve(path: &Path, version: Option<u64>) -> Result<(String, Option<u64>, PathBuf)> {
    let missing = |reason: String| {
        Error::from(ConfigError::MissingModel {
            path: path.to_path_buf(),
            reason,
        })
    };
    let stem = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string();
    if path.is_file() {
        if version.is_some() {
            return Err(missing(
                "a version can only be chosen for a model directory, not a file".into(),
            ));
        }
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("model").to_string();
        return Ok((name, None, path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(missing("no such file or directory".into()));
    }
    let direct = path.join(MODEL_FILE);
    if direct.is_file() && version.is_none() {
        // A version directory (models/x/3) or a flat model directory (models/x/model.onnx).
        let parsed = stem(path).parse::<u64>().ok();
        let name = match (parsed, path.parent()) {
            (Some(_), Some(parent)) if parent.file_name().is_some() => stem(parent),
            _ => stem(path),
        };
        return Ok((name, parsed, direct));
    }
    let available = versions(path)?;
    let chosen = match version {
        Some(v) if available.contains(&v) => v,
        Some(v) => return Err(missing(format!("version {v} not found (available: {available:?})"))),
        None => *available.last().ok_or_else(|| {
            missing(format!(
                "expected {MODEL_FILE} or version directories like 1/{MODEL_FILE}"
            ))
        })?,
    };
    Ok((stem(path), Some(chosen), path.join(chosen.to_string()).join(MODEL_FILE)))
}

/// Reads the ONNX file's metadata_props without parsing the graph: only the top-level
/// fields are scanned and the (possibly huge) graph field is skipped.
pub fn read_metadata(model_path: &Path) -> Result<Vec<(String, String)>> {
    const IR_VERSION: u32 = 1;
    const GRAPH: u32 = 7;
    const METADATA_PROPS: u32 = 14;
    let file = fs::File::open(model_path).map_err(|source| Error::Io {
        path: model_path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut input = CodedInputStream::from_buf_read(&mut reader);
    let parse = |reason: String| OnnxError::Parse {
        path: Some(model_path.to_path_buf()),
        reason,
    };
    let (mut props, mut saw_ir, mut saw_graph) = (Vec::new(), false, false);
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|e| parse(e.to_string()))? {
        let (field, wire) = (tag >> 3, tag & 7);
        if field == METADATA_PROPS && wire == 2 {
            let bytes = input.read_bytes().map_err(|e| parse(e.to_string()))?;
            let entry =
                onnx_protobuf::StringStringEntryProto::parse_from_bytes(&bytes).map_err(|e| parse(e.to_string()))?;
            props.push((entry.key, entry.value));
            continue;
        }
        saw_ir |= field == IR_VERSION && wire == 0;
        saw_graph |= field == GRAPH && wire == 2;
        let wire_type = protobuf::rt::WireType::new(wire)
            .ok_or_else(|| parse(format!("invalid protobuf wire type {wire} for field {field}")))?;
        input.skip_field(wire_type).map_err(|e| parse(e.to_string()))?;
    }
    if !saw_ir || !saw_graph {
        let missing = if saw_ir { "graph" } else { "ir_version" };
        return Err(OnnxError::NotAModel {
            path: Some(model_path.to_path_buf()),
            reason: format!("no {missing} field"),
        }
        .into());
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(path: &Path, metadata: &[(&str, &str)]) {
        let mut m = onnx_protobuf::ModelProto::new();
        m.ir_version = 8;
        let mut g = onnx_protobuf::GraphProto::new();
        g.name = "g".into();
        m.graph = protobuf::MessageField::some(g);
        for (k, v) in metadata {
            let mut e = onnx_protobuf::StringStringEntryProto::new();
            e.key = k.to_string();
            e.value = v.to_string();
            m.metadata_props.push(e);
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, m.write_to_bytes().unwrap()).unwrap();
    }

    #[test]
    fn picks_highest_version_or_the_named_one() {
        let repo = tempfile::tempdir().unwrap();
        let m = repo.path().join("net");
        for v in [1, 2, 10] {
            write_model(&m.join(v.to_string()).join(MODEL_FILE), &[]);
        }
        let a = ModelArtifact::open(&m, None).unwrap();
        assert_eq!((a.name.as_str(), a.version), ("net", Some(10)));
        let a = ModelArtifact::open(&m, Some(2)).unwrap();
        assert_eq!(a.version, Some(2));
        let err = ModelArtifact::open(&m, Some(3)).unwrap_err().to_string();
        assert!(
            err.contains("version 3 not found") && err.contains("[1, 2, 10]"),
            "{err}"
        );
        let a = ModelArtifact::open(&m.join("2"), None).unwrap();
        assert_eq!((a.name.as_str(), a.version), ("net", Some(2)));
    }

    #[test]
    fn metadata_config_is_overridden_by_config_toml() {
        let repo = tempfile::tempdir().unwrap();
        let onnx = repo.path().join("net/1/model.onnx");
        write_model(
            &onnx,
            &[
                (
                    config::METADATA_KEY,
                    "labels = [\"a\", \"b\"]\n[preprocess]\nresolution = 32",
                ),
                ("other", "x"),
            ],
        );
        let a = ModelArtifact::open(&onnx, None).unwrap();
        assert!(a.self_described);
        assert_eq!((a.config.labels.len(), a.config.preprocess.resolution), (2, 32));
        fs::write(repo.path().join("net/1/config.toml"), "[preprocess]\nresolution = 48\n").unwrap();
        let a = ModelArtifact::open(&repo.path().join("net"), None).unwrap();
        assert_eq!((a.config.labels.len(), a.config.preprocess.resolution), (2, 48));
        assert!(a.config_path.is_some());
    }

    #[test]
    fn server_defaults_sit_below_config_toml_and_metadata_batching_is_ignored() {
        let repo = tempfile::tempdir().unwrap();
        let onnx = repo.path().join("net/1/model.onnx");
        let embedded = "[batching]\nmax_batch_size = 32\nqueue_capacity = 100\nmax_queue_delay_us = 5";
        write_model(&onnx, &[(config::METADATA_KEY, embedded)]);
        fs::write(
            repo.path().join("net/1/config.toml"),
            "[batching]\nqueue_capacity = 7\n",
        )
        .unwrap();
        let defaults: toml::Table = "[batching]\nmax_batch_size = 8\nqueue_capacity = 9".parse().unwrap();
        let a = ModelArtifact::open_with_defaults(&repo.path().join("net"), None, Some((&defaults, "flags"))).unwrap();
        let b = &a.config.batching;
        // config.toml beats the flags; the flags beat the built-in defaults; the metadata's
        // batching (an older exporter's) counts for nothing.
        assert_eq!(
            (b.max_batch_size, b.queue_capacity, b.max_queue_delay_us),
            (Some(8), 7, 0)
        );
        // Without the flags: config.toml over the built-in defaults, nothing from the metadata.
        let a = ModelArtifact::open(&onnx, None).unwrap();
        let expected = config::BatchingConfig {
            queue_capacity: 7,
            ..Default::default()
        };
        assert_eq!(a.config.batching, expected);
    }

    #[test]
    fn not_a_model_and_missing_model_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.onnx");
        fs::write(&text, "this is not a model\n").unwrap();
        let err = ModelArtifact::open(&text, None).unwrap_err().to_string();
        assert!(err.contains("notes.onnx"), "{err}");
        let err = ModelArtifact::open(&dir.path().join("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        let err = ModelArtifact::open(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("version directories"), "{err}");
    }
}
