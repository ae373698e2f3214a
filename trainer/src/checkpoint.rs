//! A run directory and everything written to it so that a run can be exported, inspected and
//! resumed: its layout ([`RunDir`]), atomic writes, weights and optimiser state (burnpack
//! files, matched by parameter id), `model.json` ([`StageInfo`]) and `state.json`, the record
//! of finished epochs that a resumed run starts from. Checkpoints are written weights first,
//! state last, so that an interrupted write leaves the previous epoch's checkpoint usable.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::config::{OptimizerConfig, TrainConfig};
use crate::metrics::{self, EpochMetrics};
use crate::model::{Classifier, ModelSpec};
use crate::optimizer::build_optimizer;

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory (created if missing).
    pub fn new(root: &Path) -> Result<Self, TrainerError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The latest weights (EMA weights when the run keeps an EMA).
    pub fn weights(&self) -> PathBuf {
        self.root.join("model.bpk")
    }

    /// Architecture, classes and normalisation (`model.json`).
    pub fn info(&self) -> PathBuf {
        self.root.join("model.json")
    }

    /// The latest trained weights themselves (not averaged), which a resumed run continues.
    pub fn raw_weights(&self) -> PathBuf {
        self.root.join("model-raw.bpk")
    }

    /// Epochs done, configuration and architecture of the run (`state.json`).
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// The model optimiser's state (moments, by parameter id).
    pub fn optimizer_state(&self) -> PathBuf {
        self.root.join("optimizer.bpk")
    }

    /// MEAL V2's discriminator weights.
    pub fn discriminator_weights(&self) -> PathBuf {
        self.root.join("discriminator.bpk")
    }

    /// The discriminator's optimiser state.
    pub fn discriminator_optimizer(&self) -> PathBuf {
        self.root.join("discriminator-optimizer.bpk")
    }

    /// Per-epoch metrics, one JSON object per line.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// Per-epoch metrics as CSV (rewritten after every epoch).
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    /// The distillation teachers' output cache.
    pub fn teacher_cache(&self) -> PathBuf {
        self.root.join("teacher-cache")
    }
}

/// Maps an I/O error on `path` to [`TrainerError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainerError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes `value` as pretty JSON to `path` (atomically).
pub(crate) fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<(), TrainerError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| TrainerError::serialize(path.display().to_string(), e))?;
    write_atomic(path, &json)
}

/// Everything needed to use a run's weights: written to `model.json` beside them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInfo {
    /// The architecture.
    pub spec: ModelSpec,
    /// Class names, index = logit.
    pub class_names: Vec<String>,
    /// Normalisation mean used in training.
    pub mean: Vec<f32>,
    /// Normalisation standard deviation used in training.
    pub std: Vec<f32>,
}

impl StageInfo {
    /// Reads `model.json` of a run directory.
    pub fn read(dir: &Path) -> Result<Self, TrainerError> {
        let path = dir.join("model.json");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| TrainerError::checkpoint(&path, e))
    }
}

/// Where a run is, saved after every epoch so that an interrupted run resumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub(crate) epochs_done: usize,
    pub(crate) config: TrainConfig,
    pub(crate) spec: ModelSpec,
}

/// Saves weights to a burnpack file (atomically).
pub fn save_weights<M: Module>(model: &M, path: &Path) -> Result<(), TrainerError> {
    let tmp = path.with_extension("bpk.tmp");
    let mut store = BurnpackStore::from_file(&tmp).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| TrainerError::checkpoint(path, format!("saving the weights: {e}")))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Builds `spec` and loads the weights saved at `path`.
pub fn load_weights(spec: &ModelSpec, path: &Path, device: &Device) -> Result<Classifier, TrainerError> {
    load_into(spec.init(device)?, path)
}

/// Loads the weights saved at `path` into `model` (which keeps its parameter ids), failing if
/// a tensor is missing.
pub(crate) fn load_into<M: Module>(mut model: M, path: &Path) -> Result<M, TrainerError> {
    let mut store = BurnpackStore::from_file(path);
    let result = model.load_from(&mut store).map_err(|e| TrainerError::Import {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        return Err(TrainerError::Import {
            path: path.to_path_buf(),
            reason: format!(
                "{} missing tensors, {} errors (first: {:?})",
                result.missing.len(),
                result.errors.len(),
                result.missing.first()
            ),
        });
    }
    Ok(model)
}

/// Saves an optimiser's state to a burnpack file (atomically).
pub fn save_optimizer(optim: &ModuleOptimizer, path: &Path) -> Result<(), TrainerError> {
    let tmp = path.with_extension("bpk.tmp");
    optim
        .save(&tmp)
        .map_err(|e| TrainerError::checkpoint(&tmp, format!("saving the optimiser state: {e:?}")))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// `optim` with its moments loaded from `path` when the run is `resumed` (a missing file is
/// a warning: the moments restart from zero).
pub fn load_optimizer_state(
    optim: ModuleOptimizer,
    path: &Path,
    resumed: bool,
) -> Result<ModuleOptimizer, TrainerError> {
    if !resumed {
        return Ok(optim);
    }
    if !path.is_file() {
        tracing::warn!("{} is missing: the optimiser restarts from zero state", path.display());
        return Ok(optim);
    }
    optim
        .load(path)
        .map_err(|e| TrainerError::checkpoint(path, format!("cannot restore the optimiser state: {e:?}")))
}

/// The optimiser for `model`; on resume, with its moments restored from the run's checkpoint
/// (matched by parameter id, which the weight files keep).
pub(crate) fn restore_optimizer(
    model: &Classifier,
    c: &OptimizerConfig,
    run: &RunDir,
    resumed: bool,
) -> Result<ModuleOptimizer, TrainerError> {
    load_optimizer_state(build_optimizer(model, c), &run.optimizer_state(), resumed)
}

/// Where a run starts: fresh (or from `init_from`) at epoch 0, or from its last checkpoint.
pub(crate) struct Start {
    /// The model on the autodiff device.
    pub(crate) model: Classifier,
    /// The moving average, off the graph, with the model's parameter ids.
    pub(crate) ema: Option<Classifier>,
    /// Epochs already done.
    pub(crate) epochs_done: usize,
    /// Their metrics.
    pub(crate) history: Vec<EpochMetrics>,
}

/// Resumes the run in `run` when its `state.json` holds the same spec and config, or starts a
/// fresh one (from `config.init_from` when set). A state of another run is an error.
pub(crate) fn resume_or_init(
    spec: &ModelSpec,
    config: &TrainConfig,
    run: &RunDir,
    device: &Device,
) -> Result<Start, TrainerError> {
    let state_path = run.state();
    if let Ok(text) = fs::read_to_string(&state_path) {
        let state: RunState = serde_json::from_str(&text).map_err(|e| TrainerError::checkpoint(&state_path, e))?;
        if &state.spec != spec || &state.config != config {
            return Err(TrainerError::RunMismatch {
                dir: run.path().to_path_buf(),
                differs: run_differences(&state, spec, config),
            });
        }
        let model = load_weights(spec, &run.raw_weights(), device)?;
        // The EMA must share the model's parameter ids (it is matched by id): load its values
        // into an eval copy of the model.
        let ema = if config.ema_decay > 0.0 {
            Some(load_into(model.valid(), &run.weights())?)
        } else {
            None
        };
        let history = metrics::read_history(&run.metrics(), state.epochs_done);
        tracing::info!("resuming {} after epoch {}", run.path().display(), state.epochs_done);
        return Ok(Start {
            model,
            ema,
            epochs_done: state.epochs_done,
            history,
        });
    }
    // A fresh run: drop metrics of an earlier, unfinished attempt.
    let _ = fs::remove_file(run.metrics());
    let model = spec.init(device)?;
    let model = match &config.init_from {
        Some(dir) => {
            let info = StageInfo::read(dir)?;
            if &info.spec != spec {
                return Err(TrainerError::invalid(
                    "training",
                    "init_from",
                    dir.display(),
                    format!(
                        "holds a different architecture ({}) than this run's ({})",
                        info.spec.describe(),
                        spec.describe()
                    ),
                ));
            }
            tracing::info!("starting from the weights in {}", dir.display());
            load_into(model, &dir.join("model.bpk"))?
        }
        None => model,
    };
    // Kept off the autodiff device, with the model's parameter ids.
    let ema = (config.ema_decay > 0.0).then(|| model.valid());
    Ok(Start {
        model,
        ema,
        epochs_done: 0,
        history: Vec::new(),
    })
}

/// Saves the model's part of an epoch's checkpoint: the trained weights, the weights that
/// evaluation and export use (the EMA's when there is one) and the optimiser state.
pub(crate) fn save_model(
    run: &RunDir,
    model: &Classifier,
    eval_model: &Classifier,
    optim: &ModuleOptimizer,
) -> Result<(), TrainerError> {
    save_weights(model, &run.raw_weights())?;
    save_weights(eval_model, &run.weights())?;
    save_optimizer(optim, &run.optimizer_state())
}

/// Records that `epochs_done` epochs of this spec and config are checkpointed: written last,
/// after everything it points at.
pub(crate) fn save_state(
    run: &RunDir,
    epochs_done: usize,
    config: &TrainConfig,
    spec: &ModelSpec,
) -> Result<(), TrainerError> {
    let state = RunState {
        epochs_done,
        config: config.clone(),
        spec: spec.clone(),
    };
    write_json(&state, &run.state())
}

/// What differs between a saved run and the requested one, for the error message: the
/// changed settings as `` `key` old -> new ``, the first few of them.
fn run_differences(state: &RunState, spec: &ModelSpec, config: &TrainConfig) -> String {
    let mut out = Vec::new();
    let value = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or(serde_json::Value::Null);
    differences(
        &value(serde_json::to_value(&state.spec)),
        &value(serde_json::to_value(spec)),
        "model",
        &mut out,
    );
    differences(
        &value(serde_json::to_value(&state.config)),
        &value(serde_json::to_value(config)),
        "",
        &mut out,
    );
    if out.is_empty() {
        return "the settings".into();
    }
    const SHOWN: usize = 3;
    let more = out.len().saturating_sub(SHOWN);
    out.truncate(SHOWN);
    let mut s = out.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// Appends `` `path` old -> new `` to `out` for every leaf where `old` and `new` differ.
fn differences(old: &serde_json::Value, new: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        _ if old != new => out.push(format!("`{path}` {old} -> {new}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use burn::module::ParamId;

    use super::*;
    use crate::ema::Snapshot;
    use crate::train::tests::tiny_spec;

    #[test]
    fn reloaded_weights_keep_the_parameter_ids_the_ema_is_matched_by() {
        let device = crate::default_device().autodiff();
        let model = tiny_spec().init(&device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bpk");
        save_weights(&model, &path).unwrap();
        let loaded = load_into(model.valid(), &path).unwrap();
        let ids = |m: &Classifier| {
            let mut s = Snapshot(HashMap::new());
            m.visit(&mut s);
            let mut v: Vec<ParamId> = s.0.into_keys().collect();
            v.sort_by_key(|id| id.val());
            v
        };
        assert_eq!(ids(&model), ids(&loaded));
        assert!(
            !loaded.devices().iter().any(|d| d.is_autodiff()),
            "the EMA copy stays off the graph"
        );
    }

    #[test]
    fn a_run_of_other_settings_names_what_changed() {
        let config = TrainConfig::default();
        let state = RunState {
            epochs_done: 1,
            config: config.clone(),
            spec: tiny_spec(),
        };
        let mut other = config.clone();
        other.epochs = 4;
        other.optimizer.lr = 0.5;
        let d = run_differences(&state, &tiny_spec(), &other);
        assert!(
            d.contains("`epochs` 10 -> 4") && d.contains("`optimizer.lr` 0.003 -> 0.5"),
            "{d}"
        );
        let mut spec = tiny_spec();
        if let ModelSpec::EfficientNet(s) = &mut spec {
            s.width = 1.0;
        }
        let d = run_differences(&state, &spec, &config);
        assert!(d.contains("`model.width` 0.5 -> 1.0"), "{d}");
    }
}
