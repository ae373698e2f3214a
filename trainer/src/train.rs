//! The training loop shared by supervised training and Noisy Student: optimisers with
//! parameter groups, a warm-up + cosine schedule, soft-target cross-entropy (label smoothing
//! and pseudo-labels are the same loss), an exponential moving average of the weights,
//! mixed labelled / pseudo-labelled batches, per-epoch metrics and resumable checkpoints.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::ParamGroup;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{
    AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, RmsPropConfig, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::augment::{RandAugment, random_crop_flip};
use crate::autoaugment::AutoAugment;
use crate::data::{AugmentFn, Batch, EpochOrder, ImageSet, Normalize, make_batch};
use crate::distill::{Discriminator, DistillConfig, Teachers, variant_seed};
use crate::model::{Classifier, ModelSpec};

/// Which optimiser updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with (Nesterov) momentum, ResNet's classic recipe.
    Sgd,
    /// RMSprop (decay 0.9, momentum 0.9, epsilon 1e-3), EfficientNet's TPU recipe.
    RmsProp,
    /// AdamW (decoupled weight decay).
    AdamW,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// The algorithm.
    pub kind: OptimizerKind,
    /// Peak learning rate (reached at the end of warm-up).
    pub lr: f64,
    /// Momentum (SGD, RMSprop).
    pub momentum: f64,
    /// Weight decay, applied to convolution and linear weights only: BatchNorm parameters and
    /// biases (all rank-1 tensors) are never decayed.
    pub weight_decay: f32,
    /// Epochs of linear warm-up from 0 to `lr`.
    pub warmup_epochs: f64,
    /// Learning rate at the end of the cosine, as a fraction of `lr`.
    pub min_lr_ratio: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::AdamW,
            lr: 3e-3,
            momentum: 0.9,
            weight_decay: 0.05,
            warmup_epochs: 1.0,
            min_lr_ratio: 0.01,
        }
    }
}

/// Input noise: RandAugment and a random padded crop with flips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// RandAugment operations per image (0: off).
    pub randaugment_ops: usize,
    /// RandAugment magnitude, 0..30.
    pub randaugment_magnitude: f32,
    /// Padding of the random crop in pixels (0: no crop).
    pub crop_pad: u32,
    /// Random horizontal flips.
    pub flip: bool,
    /// AutoAugment's ImageNet policy (instead of RandAugment) after the crop and flip.
    pub autoaugment: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            randaugment_ops: 0,
            randaugment_magnitude: 9.0,
            crop_pad: 2,
            flip: true,
            autoaugment: false,
        }
    }
}

impl AugmentConfig {
    /// The per-image augmentation function, or `None` when everything is off.
    pub fn build(&self) -> Result<Option<Box<AugmentFn>>, TrainerError> {
        if self.autoaugment && self.randaugment_ops > 0 {
            return Err(TrainerError::Config(
                "augment: `autoaugment` and `randaugment_ops` are alternatives; set one".into(),
            ));
        }
        let aa = self.autoaugment.then(AutoAugment::default);
        let ra = if self.randaugment_ops > 0 {
            Some(
                RandAugment::new(self.randaugment_ops, self.randaugment_magnitude)
                    .map_err(|e| TrainerError::Config(format!("augment: {e}")))?,
            )
        } else {
            None
        };
        if ra.is_none() && aa.is_none() && self.crop_pad == 0 && !self.flip {
            return Ok(None);
        }
        let (pad, flip) = (self.crop_pad, self.flip);
        Ok(Some(Box::new(move |img, rng| {
            let img = if pad > 0 || flip {
                random_crop_flip(img, pad, flip, rng)
            } else {
                img.clone()
            };
            match (&ra, &aa) {
                (Some(ra), _) => ra.apply(&img, rng),
                (None, Some(aa)) => aa.apply(&img, rng),
                (None, None) => img,
            }
        })))
    }
}

/// Settings of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the data (over the pseudo-labelled set when there is one).
    pub epochs: usize,
    /// Labelled images per step.
    pub batch_size: usize,
    /// Pseudo-labelled images per step = ratio x `batch_size` (Noisy Student's 1..3).
    pub unlabelled_ratio: usize,
    /// Optimiser and schedule.
    pub optimizer: OptimizerConfig,
    /// Label smoothing of the hard labels.
    pub label_smoothing: f32,
    /// Decay of the exponential moving average of the weights (0: no EMA). Evaluation and
    /// export use the EMA weights when there are some.
    pub ema_decay: f64,
    /// Noise applied to training images.
    pub augment: AugmentConfig,
    /// Seed of initialisation, order and augmentation.
    pub seed: u64,
    /// Mixup (Zhang et al. 2018): each labelled batch is blended with itself reversed, weight
    /// `lambda ~ Beta(alpha, alpha)`, images and targets alike; 0 turns it off.
    pub mixup_alpha: f32,
    /// Start from the weights of this run directory (same architecture) instead of a fresh
    /// initialisation, e.g. the label-trained student that MEAL V2 distils.
    pub init_from: Option<PathBuf>,
    /// Learn from teachers (knowledge distillation, MEAL V2); see [`crate::distill`].
    pub distill: Option<DistillConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            unlabelled_ratio: 1,
            optimizer: OptimizerConfig::default(),
            label_smoothing: 0.1,
            ema_decay: 0.0,
            augment: AugmentConfig::default(),
            seed: 0,
            mixup_alpha: 0.0,
            init_from: None,
            distill: None,
        }
    }
}

impl TrainConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |f: &str, why: &str| Err(TrainerError::Config(format!("training `{f}`: {why}")));
        if self.epochs == 0 {
            return bad("epochs", "must be > 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0");
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad("optimizer.lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay", "must be in [0, 1)");
        }
        if self.optimizer.warmup_epochs < 0.0 || self.optimizer.warmup_epochs > self.epochs as f64 {
            return bad("optimizer.warmup_epochs", "must be between 0 and `epochs`");
        }
        if !(self.mixup_alpha >= 0.0 && self.mixup_alpha.is_finite()) {
            return bad("mixup_alpha", "must be >= 0 (0: off)");
        }
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        Ok(())
    }
}

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then a cosine from
/// `peak` down to `peak * min_ratio`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Mean soft-target cross-entropy `-sum_k t_k log softmax(z)_k` over the batch.
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    (log_softmax(logits, 1) * targets)
        .sum()
        .neg()
        .div_scalar(n.max(1) as f64)
}

/// Smoothed one-hot targets `(1 - eps) * onehot + eps / K`, row-major `[n, K]`.
pub fn smoothed_targets(labels: &[usize], classes: usize, eps: f32) -> Vec<f32> {
    let mut t = vec![eps / classes as f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        t[i * classes + l.min(classes - 1)] += 1.0 - eps;
    }
    t
}

/// Mixup with the batch reversed (timm's batch mode): row `i` becomes
/// `lambda * row_i + (1 - lambda) * row_{n-1-i}`, for images and targets alike.
pub fn mix_with_reversed(rows: &mut [f32], n: usize, lambda: f32) {
    if n < 2 || !rows.len().is_multiple_of(n) {
        return;
    }
    let len = rows.len() / n;
    let original = rows.to_vec();
    for (i, row) in rows.chunks_exact_mut(len).enumerate() {
        let other = &original[(n - 1 - i) * len..(n - i) * len];
        for (x, &y) in row.iter_mut().zip(other) {
            *x = lambda * *x + (1.0 - lambda) * y;
        }
    }
}

/// A draw of `Beta(alpha, alpha)` from a seed (0.5 for a degenerate `alpha`).
pub fn sample_beta(alpha: f32, seed: u64) -> f32 {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    rand_distr::Beta::new(alpha, alpha).map_or(0.5, |b| b.sample(&mut rng))
}

/// A pseudo-labelled set: images and one probability row per image.
#[derive(Debug, Clone)]
pub struct PseudoLabelled {
    /// The images (labels, if any, are ignored).
    pub images: ImageSet,
    /// `[len, classes]` row-major targets (soft, or one-hot for hard labels).
    pub targets: Vec<f32>,
}

/// What a run trains on.
pub struct TrainData<'a> {
    /// Labelled images.
    pub labelled: &'a ImageSet,
    /// Pseudo-labelled images mixed into every batch (Noisy Student).
    pub pseudo: Option<&'a PseudoLabelled>,
    /// Evaluated after every epoch.
    pub eval: Option<&'a ImageSet>,
    /// Input normalisation.
    pub normalize: &'a Normalize,
    /// The teachers when the config distils ([`TrainConfig::distill`]).
    pub teachers: Option<&'a Teachers>,
}

/// One line of `metrics.jsonl` / `metrics.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Top-1 accuracy on the evaluation set (of the EMA weights when there are some).
    pub eval_top1: Option<f64>,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// Where a run is, saved after every epoch so that an interrupted run resumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    epochs_done: usize,
    config: TrainConfig,
    spec: ModelSpec,
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
        serde_json::from_str(&text).map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))
    }
}

/// The files of a run directory.
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory (created if missing).
    pub fn new(root: &Path) -> Result<Self, TrainerError> {
        fs::create_dir_all(root).map_err(|source| TrainerError::Io {
            path: root.to_path_buf(),
            source,
        })?;
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

    fn raw_weights(&self) -> PathBuf {
        self.root.join("model-raw.bpk")
    }

    fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn optimizer_state(&self) -> PathBuf {
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

/// Saves weights to a burnpack file (atomically).
pub fn save_weights<M: Module>(model: &M, path: &Path) -> Result<(), TrainerError> {
    let tmp = path.with_extension("bpk.tmp");
    let mut store = BurnpackStore::from_file(&tmp).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| TrainerError::Config(format!("saving {}: {e}", path.display())))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Builds `spec` and loads the weights saved at `path`.
pub fn load_weights(spec: &ModelSpec, path: &Path, device: &Device) -> Result<Classifier, TrainerError> {
    load_into(spec.init(device)?, path)
}

/// Loads the weights saved at `path` into `model` (which keeps its parameter ids), failing if
/// a tensor is missing.
fn load_into<M: Module>(mut model: M, path: &Path) -> Result<M, TrainerError> {
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

/// Flattened values of every float tensor (weights and BatchNorm statistics), by id.
struct Snapshot(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Off the autodiff graph: the average must not keep every step's graph alive.
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// `ema = decay * ema + (1 - decay) * model`, tensor by tensor (matched by parameter id).
struct EmaUpdate {
    model: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(new) = self.model.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|e| {
            let shape = e.shape();
            let new = new.to_device(&e.device()).reshape(shape);
            e.mul_scalar(decay) + new.mul_scalar(1.0 - decay)
        })
    }
}

/// Rank-1 parameters (BatchNorm scale and shift, biases): excluded from weight decay.
struct VectorIds(Vec<ParamId>);

impl ModuleVisitor for VectorIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 1 {
            self.0.push(param.id);
        }
    }
}

fn build_optimizer(model: &Classifier, c: &OptimizerConfig) -> ModuleOptimizer {
    let mut vectors = VectorIds(Vec::new());
    model.visit(&mut vectors);
    let no_decay = ParamGroup::from_ids(vectors.0);
    match c.kind {
        OptimizerKind::Sgd => {
            let make = |wd: f32| {
                SgdConfig::new()
                    .with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(c.momentum)
                            .with_dampening(0.0)
                            .with_nesterov(true),
                    ))
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                    .build()
            };
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
        OptimizerKind::RmsProp => {
            let make = |wd: f32| {
                RmsPropConfig::new()
                    .with_alpha(0.9)
                    .with_momentum(c.momentum as f32)
                    .with_epsilon(1e-3)
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                    .build()
            };
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
        OptimizerKind::AdamW => {
            let make = |wd: f32| AdamWConfig::new().with_weight_decay(wd).build();
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
    }
}

/// The optimiser for `model`; on resume, with its moments restored from the run's checkpoint
/// (matched by parameter id, which the weight files keep).
fn restore_optimizer(
    model: &Classifier,
    c: &OptimizerConfig,
    run: &RunDir,
    resumed: bool,
) -> Result<ModuleOptimizer, TrainerError> {
    restore_state(build_optimizer(model, c), &run.optimizer_state(), resumed)
}

/// `optim` with its moments loaded from `path` when the run is `resumed` (a missing file is
/// a warning: the moments restart from zero).
fn restore_state(optim: ModuleOptimizer, path: &Path, resumed: bool) -> Result<ModuleOptimizer, TrainerError> {
    if !resumed {
        return Ok(optim);
    }
    if !path.is_file() {
        tracing::warn!("{} is missing: the optimiser restarts from zero state", path.display());
        return Ok(optim);
    }
    optim
        .load(path)
        .map_err(|e| TrainerError::Config(format!("{}: cannot restore the optimiser state: {e:?}", path.display())))
}

fn save_optimizer(optim: &ModuleOptimizer, path: &Path) -> Result<(), TrainerError> {
    let tmp = path.with_extension("bpk.tmp");
    optim
        .save(&tmp)
        .map_err(|e| TrainerError::Config(format!("saving {}: {e:?}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn batch_tensor(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.n, batch.c, batch.h, batch.w]),
        device,
    )
}

/// Softmax probabilities (with `temperature`) of an eval-mode model on every image of `set`,
/// row-major `[len, classes]`: the un-noised teacher of Noisy Student.
pub fn predict_probs(
    model: &Classifier,
    set: &ImageSet,
    normalize: &Normalize,
    temperature: f64,
    batch_size: usize,
) -> Result<Vec<f32>, TrainerError> {
    let model = model.valid();
    let device = crate::default_device();
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut out = Vec::new();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = make_batch(set, chunk, None, normalize, 0).map_err(|e| TrainerError::Config(e.to_string()))?;
        let logits = model.forward(batch_tensor(&batch, &device));
        let probs = softmax(logits.div_scalar(temperature), 1);
        let v: Vec<f32> = probs
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| TrainerError::Tensor {
                name: "probabilities".into(),
                reason: format!("{e:?}"),
            })?;
        out.extend(v);
    }
    Ok(out)
}

/// Top-1 accuracy of an eval-mode model on a labelled set.
pub fn evaluate(model: &Classifier, set: &ImageSet, normalize: &Normalize) -> Result<f64, TrainerError> {
    let classes = model_classes(model);
    let probs = predict_probs(model, set, normalize, 1.0, 256)?;
    let mut correct = 0usize;
    let mut counted = 0usize;
    for (i, row) in probs.chunks(classes).enumerate() {
        if let Some(label) = set.label(i) {
            counted += 1;
            if argmax(row) == label {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / counted.max(1) as f64)
}

fn model_classes(model: &Classifier) -> usize {
    match model {
        Classifier::EfficientNet(m) => m.classifier.weight.dims()[1],
        Classifier::ResNet(m) => m.fc.weight.dims()[1],
    }
}

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

/// Trains `spec` on `data` in `run`, resuming from the run's last completed epoch when the
/// directory holds one for the same spec and config. Returns the final weights (EMA weights
/// when `ema_decay > 0`) in eval form and the metrics of every epoch.
pub fn train(
    spec: &ModelSpec,
    config: &TrainConfig,
    data: &TrainData<'_>,
    run: &RunDir,
) -> Result<(Classifier, Vec<EpochMetrics>), TrainerError> {
    config.validate()?;
    let classes = spec.num_classes();
    if data.labelled.is_empty() {
        return Err(TrainerError::Config("no labelled training images".into()));
    }
    if data.labelled.channels() != spec.in_channels() {
        return Err(TrainerError::Config(format!(
            "the data has {} channel(s), the model takes {}",
            data.labelled.channels(),
            spec.in_channels()
        )));
    }
    // What export needs to describe the model: architecture, classes, normalisation.
    let info = StageInfo {
        spec: spec.clone(),
        class_names: data.labelled.class_names().to_vec(),
        mean: data.normalize.mean.clone(),
        std: data.normalize.std.clone(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| TrainerError::Config(e.to_string()))?;
    write_atomic(&run.info(), &json)?;
    let device = crate::default_device().autodiff();
    <burn::tensor::Device>::seed(&device, config.seed);
    let (mut model, mut ema, start_epoch, mut history) = resume_or_init(spec, config, run, &device)?;
    let mut optim = restore_optimizer(&model, &config.optimizer, run, start_epoch > 0)?;
    let augment = config.augment.build()?;
    if config.distill.is_some() != data.teachers.is_some() {
        return Err(TrainerError::Config(
            "`distill` in the training config and loaded teachers go together".into(),
        ));
    }
    // MEAL V2's discriminator, with its own optimiser and checkpoint files.
    let mut discriminator = match config.distill.as_ref().and_then(|d| d.discriminator.as_ref()) {
        Some(_) => {
            let fresh = Discriminator::new(classes, &device);
            let weights = run.discriminator_weights();
            let resumed = start_epoch > 0 && weights.is_file();
            let disc = if resumed { load_into(fresh, &weights)? } else { fresh };
            let disc_optim = ModuleOptimizer::from(AdamConfig::new().build());
            Some((
                disc,
                restore_state(disc_optim, &run.discriminator_optimizer(), resumed)?,
            ))
        }
        None => None,
    };

    let b = config.batch_size;
    let labelled_order = EpochOrder::new(data.labelled.len(), b.min(data.labelled.len()), config.seed, true)
        .map_err(|e| TrainerError::Config(e.to_string()))?;
    let pseudo_b = b * config.unlabelled_ratio;
    let pseudo_order = match data.pseudo {
        Some(p) if !p.images.is_empty() && pseudo_b > 0 => Some(
            EpochOrder::new(p.images.len(), pseudo_b.min(p.images.len()), config.seed ^ 0x5eed, true)
                .map_err(|e| TrainerError::Config(e.to_string()))?,
        ),
        _ => None,
    };
    // An epoch is a pass over the pseudo-labelled set when there is one (the labelled set
    // cycles), otherwise over the labelled set.
    let steps_per_epoch = pseudo_order
        .as_ref()
        .map_or(labelled_order.num_batches(), |o| o.num_batches())
        .max(1);
    let total = steps_per_epoch * config.epochs;
    let warmup = (config.optimizer.warmup_epochs * steps_per_epoch as f64).round() as usize;

    let metrics_path = run.metrics();
    for epoch in start_epoch..config.epochs {
        let started = Instant::now();
        let bar = ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
        let mut loss_sum = 0.0;
        let mut disc_loss_sum = 0.0;
        let mut images = 0usize;
        let mut lr = 0.0;
        for step in 0..steps_per_epoch {
            let global = epoch * steps_per_epoch + step;
            lr = learning_rate(
                global,
                total,
                warmup,
                config.optimizer.lr,
                config.optimizer.min_lr_ratio,
            );
            // Labelled part. With distillation variants the augmentation depends on the
            // epoch's variant only, so that cached teacher outputs stay valid.
            let cycle = global / labelled_order.num_batches().max(1);
            let l_batches = labelled_order.batches(cycle as u64);
            let l_idx = &l_batches[global % l_batches.len().max(1)];
            let variant = config.distill.as_ref().and_then(|d| d.variant(epoch));
            let seed = config.seed.wrapping_mul(1_000_003).wrapping_add(global as u64);
            let aug_seed = variant.map_or(seed, |v| variant_seed(config.seed, v));
            let mut lb = make_batch(data.labelled, l_idx, augment.as_deref(), data.normalize, aug_seed)
                .map_err(|e| TrainerError::Config(e.to_string()))?;
            let labels: Vec<usize> = l_idx.iter().map(|&i| data.labelled.label(i).unwrap_or(0)).collect();
            let mut l_targets = smoothed_targets(&labels, classes, config.label_smoothing);
            let mut soft = match (&config.distill, data.teachers) {
                (Some(_), Some(t)) => Some(t.targets(&lb, variant)?),
                _ => None,
            };
            if config.mixup_alpha > 0.0 {
                let lambda = sample_beta(config.mixup_alpha, seed ^ 0x6d69_7875_7000);
                mix_with_reversed(&mut lb.images, lb.n, lambda);
                mix_with_reversed(&mut l_targets, lb.n, lambda);
                if let Some(s) = soft.as_mut() {
                    mix_with_reversed(s, lb.n, lambda);
                }
            }
            // Rates that ramp over training (DropBlock) follow the step.
            model = model.at_progress(spec, (global + 1) as f64 / total.max(1) as f64);
            let logits = model.forward(batch_tensor(&lb, &device));
            let hard = Tensor::<2>::from_data(TensorData::new(l_targets, [lb.n, classes]), &device);
            let mut loss = match (&config.distill, soft) {
                (Some(d), Some(soft)) => {
                    let t = d.temperature;
                    let soft = Tensor::<2>::from_data(TensorData::new(soft, [lb.n, classes]), &device);
                    let mut l = soft_cross_entropy(logits.clone().div_scalar(t), soft.clone())
                        .mul_scalar((1.0 - d.label_weight) * t * t);
                    if d.label_weight > 0.0 {
                        l = l + soft_cross_entropy(logits.clone(), hard).mul_scalar(d.label_weight);
                    }
                    if let (Some(dc), Some((disc, _))) = (&d.discriminator, &discriminator) {
                        let dl = disc.loss(softmax(logits.div_scalar(t), 1), soft);
                        disc_loss_sum += f64::from(dl.clone().into_scalar::<f32>());
                        l = l + dl.mul_scalar(dc.weight);
                    }
                    l
                }
                _ => soft_cross_entropy(logits, hard),
            };
            images += lb.n;
            // Pseudo-labelled part (Noisy Student): its own mean loss, added.
            if let (Some(order), Some(p)) = (&pseudo_order, data.pseudo) {
                let batches = order.batches(epoch as u64);
                let p_idx = &batches[step % batches.len().max(1)];
                let pb = make_batch(&p.images, p_idx, augment.as_deref(), data.normalize, seed ^ 0xa5a5)
                    .map_err(|e| TrainerError::Config(e.to_string()))?;
                let mut t = Vec::with_capacity(p_idx.len() * classes);
                for &i in p_idx {
                    t.extend_from_slice(&p.targets[i * classes..(i + 1) * classes]);
                }
                let logits = model.forward(batch_tensor(&pb, &device));
                let targets = Tensor::<2>::from_data(TensorData::new(t, [pb.n, classes]), &device);
                loss = loss + soft_cross_entropy(logits, targets);
                images += pb.n;
            }
            let loss_value: f32 = loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(TrainerError::Config(format!(
                    "the loss became {loss_value} at epoch {} step {step}: lower optimizer.lr",
                    epoch + 1
                )));
            }
            loss_sum += f64::from(loss_value);
            let mut grads = loss.backward();
            let model_grads = GradientsParams::from_module(&mut grads, &model);
            if let Some((disc, mut disc_optim)) = discriminator.take() {
                let disc_grads = GradientsParams::from_module(&mut grads, &disc);
                let disc_lr = config
                    .distill
                    .as_ref()
                    .and_then(|d| d.discriminator.as_ref())
                    .map_or(0.0, |d| d.lr);
                let disc = disc_optim.step(disc_lr, disc, disc_grads);
                discriminator = Some((disc, disc_optim));
            }
            model = optim.step(lr, model, model_grads);
            if let Some(e) = ema.take() {
                let mut snap = Snapshot(HashMap::new());
                model.visit(&mut snap);
                // Early on the average would be dominated by the random initialisation:
                // timm-style warm-up of the decay.
                let decay = config.ema_decay.min((1.0 + global as f64) / (10.0 + global as f64));
                ema = Some(e.map(&mut EmaUpdate { model: snap.0, decay }));
            }
            bar.set_message(format!("loss {:.4} lr {lr:.2e}", loss_sum / (step + 1) as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let eval_model = ema.as_ref().unwrap_or(&model);
        let eval_top1 = match data.eval {
            Some(set) => Some(evaluate(eval_model, set, data.normalize)?),
            None => None,
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / steps_per_epoch as f64,
            lr,
            eval_top1,
            seconds,
            images_per_second: images as f64 / seconds.max(1e-9),
        };
        tracing::info!(
            "epoch {}/{}: loss {:.4}, eval top-1 {}, {:.0} s ({:.0} img/s)",
            m.epoch,
            config.epochs,
            m.train_loss,
            m.eval_top1.map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
            m.seconds,
            m.images_per_second
        );
        if let Some(t) = data.teachers {
            t.flush()?;
        }
        if disc_loss_sum != 0.0 {
            tracing::info!(
                "epoch {}: mean discriminator loss {:.4}",
                epoch + 1,
                disc_loss_sum / steps_per_epoch as f64
            );
        }
        // Checkpoint: weights first, then the state that points at them.
        if let Some((disc, disc_optim)) = &discriminator {
            save_weights(disc, &run.discriminator_weights())?;
            save_optimizer(disc_optim, &run.discriminator_optimizer())?;
        }
        save_weights(&model, &run.raw_weights())?;
        save_weights(eval_model, &run.weights())?;
        save_optimizer(&optim, &run.optimizer_state())?;
        let mut line = serde_json::to_string(&m).map_err(|e| TrainerError::Config(e.to_string()))?;
        line.push('\n');
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(io_err(&metrics_path))?;
        f.write_all(line.as_bytes()).map_err(io_err(&metrics_path))?;
        history.push(m);
        write_csv(&history, &run.root.join("metrics.csv"))?;
        crate::curve::write_run_curve(&run.root, &history, config.epochs)?;
        let state = RunState {
            epochs_done: epoch + 1,
            config: config.clone(),
            spec: spec.clone(),
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| TrainerError::Config(e.to_string()))?;
        write_atomic(&run.state(), &json)?;
    }
    let final_model = ema.unwrap_or(model).valid();
    Ok((final_model, history))
}

type Resumed = (Classifier, Option<Classifier>, usize, Vec<EpochMetrics>);

fn resume_or_init(
    spec: &ModelSpec,
    config: &TrainConfig,
    run: &RunDir,
    device: &Device,
) -> Result<Resumed, TrainerError> {
    let state_path = run.state();
    if let Ok(text) = fs::read_to_string(&state_path) {
        let state: RunState =
            serde_json::from_str(&text).map_err(|e| TrainerError::Config(format!("{}: {e}", state_path.display())))?;
        if &state.spec != spec || &state.config != config {
            return Err(TrainerError::Config(format!(
                "{} holds a run with a different model or configuration; use another directory",
                run.root.display()
            )));
        }
        let model = load_weights(spec, &run.raw_weights(), device)?;
        // The EMA must share the model's parameter ids (it is matched by id): load its values
        // into an eval copy of the model.
        let ema = if config.ema_decay > 0.0 {
            Some(load_into(model.valid(), &run.weights())?)
        } else {
            None
        };
        let history: Vec<EpochMetrics> = fs::read_to_string(run.metrics())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(state.epochs_done)
            .collect();
        tracing::info!("resuming {} after epoch {}", run.root.display(), state.epochs_done);
        return Ok((model, ema, state.epochs_done, history));
    }
    // A fresh run: drop metrics of an earlier, unfinished attempt.
    let _ = fs::remove_file(run.metrics());
    let model = spec.init(device)?;
    let model = match &config.init_from {
        Some(dir) => {
            let info = StageInfo::read(dir)?;
            if &info.spec != spec {
                return Err(TrainerError::Config(format!(
                    "`init_from` {} holds a different architecture ({}) than this run's ({})",
                    dir.display(),
                    info.spec.describe(),
                    spec.describe()
                )));
            }
            tracing::info!("starting from the weights in {}", dir.display());
            load_into(model, &dir.join("model.bpk"))?
        }
        None => model,
    };
    // Kept off the autodiff device, with the model's parameter ids.
    let ema = (config.ema_decay > 0.0).then(|| model.valid());
    Ok((model, ema, 0, Vec::new()))
}

fn write_csv(history: &[EpochMetrics], path: &Path) -> Result<(), TrainerError> {
    let mut s = String::from("epoch,train_loss,lr,eval_top1,seconds,images_per_second\n");
    for m in history {
        s.push_str(&format!(
            "{},{:.6},{:.6e},{},{:.2},{:.1}\n",
            m.epoch,
            m.train_loss,
            m.lr,
            m.eval_top1.map_or(String::new(), |a| format!("{a:.6}")),
            m.seconds,
            m.images_per_second
        ));
    }
    write_atomic(path, s.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::Int;

    use super::*;
    use crate::data::{LabelledSize, read_idx};
    use crate::efficientnet::{EfficientNetSpec, StageSpec};

    /// A tiny EfficientNet for 28x28 grey images (two stages, width 0.25).
    pub(crate) fn tiny_spec() -> ModelSpec {
        let mut s = EfficientNetSpec::named("b0", 10).unwrap();
        s.stages = vec![
            StageSpec {
                expand: 1,
                kernel: 3,
                stride: 2,
                channels: 16,
                repeats: 1,
            },
            StageSpec {
                expand: 4,
                kernel: 3,
                stride: 2,
                channels: 32,
                repeats: 1,
            },
        ];
        s.width = 0.5;
        s.head_channels = 64;
        s.in_channels = 1;
        s.resolution = 28;
        s.drop_path_rate = 0.1;
        s.bn_momentum = 0.1;
        ModelSpec::EfficientNet(s)
    }

    /// Fashion-MNIST (fetched from Debian on first use): `per_class` labelled training images
    /// and the first `test` test images.
    pub(crate) fn fashion(per_class: usize, test: usize) -> (ImageSet, ImageSet) {
        let dir = engine::provision::fashion_mnist().expect("Fashion-MNIST");
        let f = engine::provision::FASHION_MNIST_FILES;
        let train = read_idx(dir.join(f[0]), dir.join(f[1]), None).unwrap();
        let (labelled, _) = train.split_labelled(LabelledSize::PerClass(per_class), 0).unwrap();
        let test_set = read_idx(dir.join(f[2]), dir.join(f[3]), None).unwrap();
        let keep: Vec<usize> = (0..test).collect();
        (labelled, test_set.subset(&keep).unwrap())
    }

    #[test]
    fn schedule_warms_up_then_follows_a_cosine() {
        let lr = |s| learning_rate(s, 100, 10, 1.0, 0.01);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - (0.01 + 0.99 * 0.5)).abs() < 1e-12, "half way down the cosine");
        assert!((lr(100) - 0.01).abs() < 1e-12);
        assert!((10..100).all(|s| lr(s + 1) <= lr(s)));
    }

    #[test]
    fn soft_cross_entropy_with_one_hot_targets_is_cross_entropy() {
        let device = crate::default_device();
        let logits = Tensor::<2>::random([5, 4], burn::tensor::Distribution::Normal(0.0, 2.0), &device);
        let labels = [0usize, 3, 1, 2, 3];
        let t = smoothed_targets(&labels, 4, 0.0);
        let ours: f32 = soft_cross_entropy(logits.clone(), Tensor::from_data(TensorData::new(t, [5, 4]), &device))
            .into_scalar::<f32>();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.map(|l| l as i64).to_vec(), [5]), &device);
        let burn_ce: f32 = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, targets)
            .into_scalar::<f32>();
        assert!((ours - burn_ce).abs() < 1e-5, "{ours} vs {burn_ce}");
        let smooth = smoothed_targets(&labels, 4, 0.1);
        for row in smooth.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().any(|&v| (v - 0.925).abs() < 1e-6));
        }
    }

    #[test]
    fn weight_decay_skips_batchnorm_and_biases() {
        let model = tiny_spec().init(&crate::default_device()).unwrap();
        let mut v = VectorIds(Vec::new());
        model.visit(&mut v);
        // Every BatchNorm has 4 vectors (scale, shift, running mean and variance); SE and the
        // classifier have biases. Nothing of rank > 1 is in the group.
        let Classifier::EfficientNet(m) = &model else {
            unreachable!()
        };
        let bns = 2 + m
            .blocks
            .iter()
            .map(|b| 2 + usize::from(b.conv_pw.is_some()))
            .sum::<usize>();
        let ses = m.blocks.iter().filter(|b| b.se.is_some()).count();
        assert_eq!(v.0.len(), 4 * bns + 2 * ses + 1);
    }

    #[test]
    fn ema_moves_towards_the_model() {
        let device = crate::default_device();
        let spec = tiny_spec();
        let model = spec.init(&device).unwrap();
        let ema = spec.init(&device).unwrap();
        // Same ids, different values: make the EMA a copy of the model shifted by one.
        let shifted = model.clone().map(&mut Shift(1.0));
        let mut snap = Snapshot(HashMap::new());
        model.visit(&mut snap);
        let updated = shifted.map(&mut EmaUpdate {
            model: snap.0,
            decay: 0.9,
        });
        let Classifier::EfficientNet(a) = &updated else {
            unreachable!()
        };
        let Classifier::EfficientNet(b) = &model else {
            unreachable!()
        };
        let diff: Vec<f32> = (a.classifier.bias.as_ref().unwrap().val() - b.classifier.bias.as_ref().unwrap().val())
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(diff.iter().all(|d| (d - 0.9).abs() < 1e-5), "{diff:?}");
        drop(ema);
    }

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

    struct Shift(f64);

    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let s = self.0;
            param.map(|t| t.add_scalar(s))
        }
    }

    fn quick_config() -> TrainConfig {
        TrainConfig {
            epochs: 3,
            batch_size: 50,
            optimizer: OptimizerConfig {
                lr: 5e-3,
                warmup_epochs: 0.2,
                ..OptimizerConfig::default()
            },
            ema_decay: 0.9,
            augment: AugmentConfig {
                randaugment_ops: 1,
                ..AugmentConfig::default()
            },
            ..TrainConfig::default()
        }
    }

    /// Trains a tiny EfficientNet on 1,000 real Fashion-MNIST images, checks that it learns,
    /// that checkpoints and metrics are written, and that an interrupted run resumes.
    /// Ids of the convolution and linear weights.
    struct MatrixIds(Vec<ParamId>);

    impl ModuleVisitor for MatrixIds {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D >= 2 {
                self.0.push(param.id);
            }
        }
    }

    #[test]
    fn trains_on_fashion_mnist_and_resumes() {
        let (labelled, test) = fashion(100, 1000);
        let normalize = Normalize::from_set(&labelled);
        let spec = tiny_spec();
        let config = quick_config();
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path()).unwrap();
        let data = TrainData {
            labelled: &labelled,
            pseudo: None,
            eval: Some(&test),
            normalize: &normalize,
            teachers: None,
        };
        let (model, history) = train(&spec, &config, &data, &run).unwrap();
        assert_eq!(history.len(), 3);
        let top1 = evaluate(&model, &test, &normalize).unwrap();
        println!(
            "tiny EfficientNet, 1,000 images, 3 epochs: test top-1 {:.1}%",
            top1 * 100.0
        );
        assert!(top1 > 0.3, "top-1 {top1} (chance is 0.1)");
        assert!(history[2].train_loss < history[0].train_loss);
        let csv = fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert!(
            image::open(dir.path().join("curve.png")).is_ok(),
            "curve.png is a picture"
        );
        assert_eq!(csv.lines().count(), 4);
        let reloaded = load_weights(&spec, &run.weights(), &crate::default_device()).unwrap();
        assert!((evaluate(&reloaded, &test, &normalize).unwrap() - top1).abs() < 1e-9);

        // Interrupt after epoch 1: the state says one epoch, the metrics keep one line.
        let state_path = dir.path().join("state.json");
        let mut state: RunState = serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
        state.epochs_done = 1;
        fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
        let first = fs::read_to_string(run.metrics())
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        fs::write(run.metrics(), format!("{first}\n")).unwrap();
        // The optimiser's moments come back, keyed by parameter id: the resumed model must
        // carry the ids the state was saved under (those of the trained model).
        let device = crate::default_device().autodiff();
        let (resumed_model, _, start, _) = resume_or_init(&spec, &config, &run, &device).unwrap();
        assert_eq!(start, 1);
        let optim = restore_optimizer(&resumed_model, &config.optimizer, &run, true).unwrap();
        assert!(!optim.to_record().is_empty(), "optimizer.bpk restored no state");
        let (mut trained_ids, mut resumed_ids) = (MatrixIds(Vec::new()), MatrixIds(Vec::new()));
        model.visit(&mut trained_ids);
        resumed_model.visit(&mut resumed_ids);
        assert!(!trained_ids.0.is_empty());
        assert_eq!(trained_ids.0, resumed_ids.0, "parameter ids change on resume");
        let (_, resumed) = train(&spec, &config, &data, &run).unwrap();
        assert_eq!(resumed.iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(fs::read_to_string(run.metrics()).unwrap().lines().count(), 3);

        // A finished run with the same settings trains nothing more.
        let (_, again) = train(&spec, &config, &data, &run).unwrap();
        assert_eq!(again.len(), 3);

        // Another configuration in the same directory is refused.
        let mut other = config.clone();
        other.epochs = 4;
        let err = train(&spec, &other, &data, &run).unwrap_err().to_string();
        assert!(err.contains("different model or configuration"), "{err}");
    }

    #[test]
    fn mixup_blends_each_row_with_its_mirror() {
        let mut rows = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        mix_with_reversed(&mut rows, 3, 0.75);
        assert_eq!(rows, vec![0.875, 0.125, 0.0, 1.0, 0.625, 0.375]);
        for row in rows.chunks(2) {
            assert!(
                (row.iter().sum::<f32>() - 1.0).abs() < 1e-6,
                "targets stay distributions"
            );
        }
        let draws: Vec<f32> = (0..400).map(|s| sample_beta(0.2, s)).collect();
        assert!(draws.iter().all(|l| (0.0..=1.0).contains(l)));
        // Beta(0.2, 0.2) is U-shaped: most draws lie near 0 or 1; its mean is 0.5.
        let extreme = draws.iter().filter(|l| **l < 0.1 || **l > 0.9).count();
        assert!(extreme > 200, "{extreme} of 400 near the ends");
        let mean = draws.iter().sum::<f32>() / 400.0;
        assert!((mean - 0.5).abs() < 0.06, "mean {mean}");
    }

    #[test]
    fn bad_settings_are_named() {
        let c = TrainConfig {
            mixup_alpha: -1.0,
            ..TrainConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("mixup_alpha"));
        let c = TrainConfig {
            augment: AugmentConfig {
                randaugment_ops: 2,
                autoaugment: true,
                ..AugmentConfig::default()
            },
            ..TrainConfig::default()
        };
        assert!(c.augment.build().err().unwrap().to_string().contains("autoaugment"));
        let mut c = TrainConfig::default();
        c.optimizer.lr = -1.0;
        assert!(c.validate().unwrap_err().to_string().contains("optimizer.lr"));
        let c = TrainConfig {
            label_smoothing: 1.0,
            ..TrainConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("label_smoothing"));
    }
}
