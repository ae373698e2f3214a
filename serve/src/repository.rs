//! The model repository: which model versions are loaded, loading and unloading them, and
//! finding the one a request names.
//!
//! Every model directory under the root is loaded at start. A (re)load builds the new
//! versions completely, inference workers started and warmed up with a full batch, before
//! it swaps them in; if anything fails, the versions already serving stay and the error is
//! reported (and kept for the repository index). Requests hold an `Arc` of the version they
//! run on, so an unload or a swap never cuts a request short: the old version's batcher
//! finishes what it admitted, then stops its workers.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use engine::{
    artifact::{self, ModelArtifact},
    device::Device,
    pool::InferencePool,
    preprocess::PreprocessSpec,
    runtime::Runtime,
    session::{SessionOptions, Signature},
};
use serde::Serialize;

use crate::{ServeError, batcher::Batcher, config::VersionPolicy, metrics::Metrics};

/// How models are loaded.
#[derive(Clone)]
pub struct LoadOptions {
    /// The started ONNX Runtime.
    pub runtime: Runtime,
    /// Device, fallback policy and intra-op threads.
    pub session: SessionOptions,
    /// Inference threads (sessions) per version.
    pub instances: usize,
    /// Which versions to load.
    pub versions: VersionPolicy,
    /// The server's config layer beneath each model's own (batching defaults).
    pub defaults: toml::Table,
}

/// One loaded, warmed-up model version.
pub struct LoadedModel {
    /// The model's name (its directory).
    pub name: String,
    /// The version (its subdirectory).
    pub version: u64,
    /// Files and merged settings.
    pub artifact: ModelArtifact,
    /// Inputs, outputs and device as the sessions checked them.
    pub signature: Signature,
    /// The preprocessing for encoded images.
    pub spec: Arc<PreprocessSpec>,
    /// The largest batch one session run takes.
    pub max_batch: usize,
    /// The batcher in front of the inference workers.
    pub batcher: Batcher,
}

impl LoadedModel {
    fn load(dir: &Path, name: &str, version: u64, options: &LoadOptions, metrics: &Metrics) -> Result<Self, String> {
        let t0 = Instant::now();
        let artifact =
            ModelArtifact::open_with_defaults(dir, Some(version), Some((&options.defaults, "server defaults")))
                .map_err(|e| e.to_string())?;
        let pool = InferencePool::start(&options.runtime, &artifact, &options.session, options.instances)
            .map_err(|e| e.to_string())?;
        let max_batch = pool.max_batch();
        // Warm up every worker with a full batch before the version reports ready.
        let warmups: Vec<_> = (0..pool.workers())
            .map(|_| pool.submit(vec![0.0; max_batch * pool.image_len()], max_batch))
            .collect();
        for rx in warmups {
            rx.recv()
                .map_err(|_| "inference workers stopped during warm-up".to_string())?
                .map_err(|e| format!("warm-up with a batch of {max_batch} failed: {e}"))?;
        }
        let signature = pool.signature().clone();
        let version_label = version.to_string();
        let batcher = Batcher::start(pool, &artifact.config.batching, metrics, (name, &version_label));
        tracing::info!(
            model = name,
            version,
            device = %signature.device,
            max_batch,
            instances = options.instances,
            "loaded and warmed up in {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(Self {
            name: name.to_string(),
            version,
            spec: Arc::new(artifact.config.preprocess_spec()),
            artifact,
            signature,
            max_batch,
            batcher,
        })
    }

    /// The device inference runs on.
    pub fn device(&self) -> Device {
        self.signature.device
    }

    /// Class names (may be empty).
    pub fn labels(&self) -> &[String] {
        &self.artifact.config.labels
    }
}

/// The state reason of a model unloaded through the API.
const UNLOADED: &str = "unloaded";

#[derive(Default)]
struct Slot {
    versions: BTreeMap<u64, Arc<LoadedModel>>,
    error: Option<String>,
    /// Whether any version of it has loaded since the server started.
    served: bool,
}

/// One row of `POST /v2/repository/index`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IndexEntry {
    /// The model.
    pub name: String,
    /// The version, for loaded versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is unavailable (empty when ready).
    pub reason: String,
}

/// The loaded models, shared by every HTTP worker.
pub struct Repository {
    root: PathBuf,
    options: LoadOptions,
    metrics: Arc<Metrics>,
    models: RwLock<BTreeMap<String, Slot>>,
    /// Serialises loads, so two reloads of one model cannot interleave.
    loading: Mutex<()>,
}

impl Repository {
    /// A repository over `root`, with nothing loaded yet.
    pub fn new(root: PathBuf, options: LoadOptions, metrics: Arc<Metrics>) -> Self {
        Self {
            root,
            options,
            metrics,
            models: RwLock::new(BTreeMap::new()),
            loading: Mutex::new(()),
        }
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How its models are loaded.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Model directories under the root that hold at least one version.
    pub fn on_disk(&self) -> Result<Vec<String>, ServeError> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| ServeError::Internal(format!("model repository {}: {e}", self.root.display())))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| valid_name(n) && artifact::versions(&self.root.join(n)).is_ok_and(|v| !v.is_empty()))
            .filter(|n| match self.inside(&self.root.join(n)) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::warn!("model {n:?} skipped: {reason}");
                    false
                }
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Checks that `path` (a model or version directory, or a file in one) resolves to a
    /// place inside the repository: a symbolic link must not bring in files from elsewhere.
    fn inside(&self, path: &Path) -> Result<(), String> {
        let root = self
            .root
            .canonicalize()
            .map_err(|e| format!("model repository {}: {e}", self.root.display()))?;
        let real = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
        if real.starts_with(&root) {
            Ok(())
        } else {
            Err(format!(
                "{} resolves to {}, outside the model repository {}",
                path.display(),
                real.display(),
                root.display()
            ))
        }
    }

    /// Loads every model on disk; the first failure is returned (the others still load).
    pub fn load_all(&self) -> Result<Vec<String>, ServeError> {
        let names = self.on_disk()?;
        let mut first_error = None;
        for name in &names {
            if let Err(e) = self.load(name) {
                tracing::error!("{e}");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(names),
        }
    }

    /// (Re)loads a model's versions and swaps them in; on failure the serving versions stay.
    pub fn load(&self, name: &str) -> Result<Vec<u64>, ServeError> {
        let failed = |reason: String| ServeError::LoadFailed {
            model: name.to_string(),
            reason,
        };
        if !valid_name(name) {
            return Err(ServeError::Invalid(format!(
                "{name:?} is not a model name (a directory name in the repository)"
            )));
        }
        let _serial = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(name);
        let result = (|| {
            if !dir.is_dir() {
                return Err(format!("no directory {} in the repository", dir.display()));
            }
            let available = artifact::versions(&dir).map_err(|e| e.to_string())?;
            let chosen: Vec<u64> = match (self.options.versions, available.last()) {
                (_, None) => {
                    return Err(format!(
                        "{} has no version directories like 1/model.onnx",
                        dir.display()
                    ));
                }
                (VersionPolicy::Latest, Some(&v)) => vec![v],
                (VersionPolicy::All, _) => available.clone(),
            };
            self.inside(&dir)?;
            let mut loaded = BTreeMap::new();
            for v in chosen {
                let version_dir = dir.join(v.to_string());
                for path in [version_dir.clone(), version_dir.join(artifact::MODEL_FILE)] {
                    self.inside(&path).map_err(|e| format!("version {v}: {e}"))?;
                }
                let config = version_dir.join(artifact::CONFIG_FILE);
                if config.exists() {
                    self.inside(&config).map_err(|e| format!("version {v}: {e}"))?;
                }
                let model = LoadedModel::load(&dir, name, v, &self.options, &self.metrics)
                    .map_err(|e| format!("version {v}: {e}"))?;
                loaded.insert(v, Arc::new(model));
            }
            Ok(loaded)
        })();
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        if result.is_err() && !models.contains_key(name) && !dir.is_dir() {
            // A name that is neither loaded nor on disk: nothing to track, and nothing that
            // should keep the server from being ready.
            return Err(failed(result.err().unwrap_or_default()));
        }
        let slot = models.entry(name.to_string()).or_default();
        match result {
            Ok(loaded) => {
                let versions: Vec<u64> = loaded.keys().copied().collect();
                for old in slot.versions.keys().filter(|v| !loaded.contains_key(v)) {
                    let _ = self.metrics.model_ready.remove_label_values(&[name, &old.to_string()]);
                }
                for v in &versions {
                    self.metrics
                        .model_ready
                        .with_label_values(&[name, &v.to_string()])
                        .set(1);
                }
                slot.versions = loaded;
                slot.error = None;
                slot.served = true;
                Ok(versions)
            }
            Err(reason) => {
                self.metrics.load_failures.with_label_values(&[name]).inc();
                slot.error = Some(reason.clone());
                Err(failed(reason))
            }
        }
    }

    /// Stops serving a model. Requests already admitted finish.
    pub fn unload(&self, name: &str) -> Result<(), ServeError> {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        match models.get_mut(name) {
            Some(slot) if !slot.versions.is_empty() => {
                for v in slot.versions.keys() {
                    let _ = self.metrics.model_ready.remove_label_values(&[name, &v.to_string()]);
                }
                slot.versions.clear();
                slot.error = Some(UNLOADED.into());
                tracing::info!(model = name, "unloaded");
                Ok(())
            }
            _ => Err(ServeError::ModelNotFound(name.to_string())),
        }
    }

    /// The version a request names (or the highest loaded one).
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ServeError> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let slot = models
            .get(name)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| ServeError::ModelNotFound(name.to_string()))?;
        let not_found = || ServeError::VersionNotFound {
            model: name.to_string(),
            version: version.unwrap_or_default().to_string(),
            loaded: slot.versions.keys().copied().collect(),
        };
        let model = match version {
            None => slot.versions.values().next_back(),
            Some(v) => v.parse::<u64>().ok().and_then(|v| slot.versions.get(&v)),
        };
        model.cloned().ok_or_else(not_found)
    }

    /// Loaded version numbers of a model, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .get(name)
            .map(|s| s.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every loaded version.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models.values().flat_map(|s| s.versions.values().cloned()).collect()
    }

    /// Whether every model that has served (and was not deliberately unloaded) still has a
    /// version to serve. A load that failed for a model that never served (a name that does
    /// not exist, a broken new model) is reported by the load call and the index, and does
    /// not make the server unready.
    pub fn all_ready(&self) -> bool {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .values()
            .all(|s| !s.served || !s.versions.is_empty() || s.error.as_deref() == Some(UNLOADED))
    }

    /// Every model on disk or loaded, with each loaded version's state.
    pub fn index(&self) -> Vec<IndexEntry> {
        let on_disk = self.on_disk().unwrap_or_default();
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = on_disk.iter().chain(models.keys()).collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            match models.get(name) {
                Some(slot) if !slot.versions.is_empty() => {
                    for v in slot.versions.keys() {
                        out.push(IndexEntry {
                            name: name.clone(),
                            version: Some(v.to_string()),
                            state: "READY",
                            reason: slot
                                .error
                                .clone()
                                .map(|e| format!("last reload failed: {e}"))
                                .unwrap_or_default(),
                        });
                    }
                }
                slot => out.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: slot
                        .and_then(|s| s.error.clone())
                        .unwrap_or_else(|| "not loaded".into()),
                }),
            }
        }
        out
    }
}

/// A model name is one plain directory name: no separators, no `..`, not hidden.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
