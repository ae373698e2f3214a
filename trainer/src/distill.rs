//! Knowledge distillation and MEAL V2 (Shen & Savvides 2020): a student learns from the
//! averaged soft predictions of frozen teachers, optionally with a discriminator.
//!
//! Teachers are ONNX models run by the engine through ONNX Runtime, so any model the server can
//! serve can teach, whatever framework made it. Per training batch the teachers see exactly
//! the augmented images the student sees (converted from the student's normalisation to each
//! teacher's); the soft target is the mean of their softmax at temperature `T`.
//!
//! - **Loss.** `(1 - w) · T² · H(p_T, softmax(z / T)) + w · H(y, softmax(z))`, with `H` the
//!   soft cross-entropy, `p_T` the teachers' mean, `y` the (smoothed) labels and
//!   `w = label_weight`. MEAL V2 is `w = 0, T = 1` (no hard labels); Hinton's KD (one teacher,
//!   `T > 1`, `0 < w < 1`) is the Assemble-ResNet regulariser.
//! - **Discriminator** (MEAL V2): three linear layers with ReLU, `K -> K/8 -> K/66 -> 2`
//!   (1000 -> 125 -> 15 -> 2 for ImageNet; at least 16 and 4 hidden units for small `K`),
//!   trained with binary cross-entropy to output `[1, 0]` for the student's and `[0, 1]` for
//!   the teachers' probabilities (at temperature `T`). Its loss is added to the student's (both
//!   are minimised through the sum, as in the reference code) and it has its own Adam
//!   optimiser and learning rate (1e-4). Probabilities rather than raw logits are compared,
//!   because a logit vector is only defined up to a constant and the teachers' mean has no
//!   logits of its own; they are bounded, unlike log-probabilities of near-zero classes.
//! - **Cache** (as in FKD / MEAL V2's released soft labels). With `augment_variants = K`,
//!   epoch `e` draws image `i`'s augmentation from seed `(seed, e mod K)`, so the teachers'
//!   output for `(i, variant)` never changes and is stored in the run directory
//!   (`teacher-cache/variant-K.bin`) after the first epoch that needs it; later epochs run no
//!   teacher. A fingerprint of the teachers' files, the temperature, the data size and the
//!   augmentation guards the cache: if any changes, the cache is discarded. With
//!   `augment_variants = 0` every epoch draws fresh augmentations and nothing is cached.
//!   With `top_k = k` a row is stored as the k most probable classes and their
//!   probabilities, the rest of the mass spread evenly over the other classes (FKD).
//!   Mixup mixes images and the cached un-mixed targets with the same weights, so it
//!   combines with the cache (a linear approximation of the teachers on mixed images).
//!
//! This module holds the teachers, their cache and the discriminator; the training step that
//! uses them is [`crate::objective::Distillation`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use engine::artifact::{ModelArtifact, file_fingerprint};
use engine::classify::softmax;
use engine::preprocess::Layout;
use engine::runtime::{self, RuntimeOptions};
use engine::session::{ModelSession, SessionOptions};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::checkpoint::{RunDir, io_err, write_atomic};
use crate::config::TrainConfig;
use crate::data::{Batch, Normalize};

/// Distillation settings (`[train.distill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The teachers: anything `ModelArtifact::open` takes (a model directory with version
    /// subdirectories, a version directory, or an `.onnx` file).
    pub teachers: Vec<PathBuf>,
    /// Softmax temperature of teachers and student (MEAL V2: 1).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Weight of the hard-label loss, 0..1 (MEAL V2: 0).
    #[serde(default)]
    pub label_weight: f64,
    /// MEAL V2's discriminator; absent for plain distillation.
    #[serde(default)]
    pub discriminator: Option<DiscriminatorConfig>,
    /// Augmentation variants per image (see the module comment); 0: fresh every epoch.
    #[serde(default)]
    pub augment_variants: usize,
    /// Store teacher outputs in the run directory when `augment_variants > 0`.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Where the teachers run: `cpu`, `cuda` or `cuda:N` (CPU fallback with a warning).
    #[serde(default)]
    pub device: Option<String>,
    /// Keep only each image's `top_k` most probable classes of the teachers' mean and spread
    /// the rest of the probability evenly over the other classes (FKD's "marginal smoothing"),
    /// so that a cached row is `top_k` (class, probability) pairs, 8 x `top_k` bytes, instead
    /// of 4 bytes per class (ImageNet-1k: 40 bytes at `top_k = 5` instead of 4,000). Applied
    /// to fresh and cached targets alike; off (full rows) when absent or not below the class
    /// count.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Also learn from the split's unlabelled images (`[data]`'s `labelled_per_class` and
    /// `unlabelled_limit`): the teachers label them, so MEAL V2 needs no labels. Needs
    /// `label_weight = 0`.
    #[serde(default)]
    pub unlabelled: bool,
}

/// MEAL V2's discriminator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorConfig {
    /// Its Adam learning rate (MEAL V2: 1e-4), constant.
    #[serde(default = "disc_lr")]
    pub lr: f64,
    /// Weight of its loss in the total.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn disc_lr() -> f64 {
    1e-4
}

impl DistillConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(TrainerError::invalid("distill", key, value, why))
        };
        if self.teachers.is_empty() {
            return bad("teachers", &"[]", "needs at least one teacher model");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", &self.temperature, "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.label_weight) {
            return bad("label_weight", &self.label_weight, "must be in [0, 1]");
        }
        if self.top_k == Some(0) {
            return bad("top_k", &0, "must be at least 1");
        }
        if self.unlabelled && self.label_weight > 0.0 {
            return bad(
                "unlabelled",
                &self.unlabelled,
                &format!(
                    "unlabelled images have no hard label, but label_weight is {}: set label_weight = 0",
                    self.label_weight
                ),
            );
        }
        if let Some(d) = &self.discriminator {
            if !(d.lr > 0.0 && d.lr.is_finite()) {
                return bad("discriminator.lr", &d.lr, "must be a positive number");
            }
            if !(d.weight >= 0.0 && d.weight.is_finite()) {
                return bad("discriminator.weight", &d.weight, "must be >= 0");
            }
        }
        if let Some(d) = &self.device {
            parse_device(d)?;
        }
        Ok(())
    }

    /// The augmentation variant of `epoch` (0-based), `None` when variants are off.
    pub fn variant(&self, epoch: usize) -> Option<u64> {
        (self.augment_variants > 0).then(|| (epoch % self.augment_variants) as u64)
    }
}

/// The teachers' device from `distill.device`.
fn parse_device(d: &str) -> Result<engine::device::Device, TrainerError> {
    d.parse::<engine::device::Device>()
        .map_err(|e| TrainerError::invalid("distill", "device", d, e.to_string()))
}

/// The augmentation seed of a variant: independent of the step, so the images repeat.
pub fn variant_seed(seed: u64, variant: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (variant.wrapping_add(1)).wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// One loaded teacher.
struct Teacher {
    name: String,
    session: ModelSession,
    normalize: Normalize,
    /// Image channels the teacher takes (3 for an RGB teacher of grey data).
    channels: usize,
}

/// The frozen teachers of a run and their output cache.
pub struct Teachers {
    teachers: Mutex<Vec<Teacher>>,
    student: Normalize,
    classes: usize,
    temperature: f64,
    /// `Some(k)` with `k < classes`: targets keep the top k classes (see [`DistillConfig::top_k`]).
    top_k: Option<usize>,
    cache: Option<Mutex<TeacherCache>>,
    inferred: AtomicUsize,
}

impl std::fmt::Debug for Teachers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teachers")
            .field("classes", &self.classes)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

/// What the teachers must agree with: the student's data.
#[derive(Debug, Clone)]
pub struct StudentSide<'a> {
    /// Image channels, height, width.
    pub image: [usize; 3],
    /// The student's class names (index = logit).
    pub class_names: &'a [String],
    /// The student's input normalisation.
    pub normalize: &'a Normalize,
    /// Images in the training set (for the cache).
    pub images: usize,
    /// A description of the augmentation and seed, part of the cache's fingerprint.
    pub augmentation: String,
}

impl Teachers {
    /// Loads every teacher, checking that each takes the student's image size (NCHW, same
    /// channels, or 3 channels for grey data) and predicts the same classes. `cache_dir`
    /// enables the output cache (used only when `augment_variants > 0`).
    pub fn load(
        config: &DistillConfig,
        student: &StudentSide<'_>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, TrainerError> {
        config.validate()?;
        let rt = runtime::init(&RuntimeOptions::default()).map_err(|e| TrainerError::OnnxRuntime(e.to_string()))?;
        let device = match &config.device {
            Some(d) => parse_device(d)?,
            None => engine::device::Device::Cpu,
        };
        let options = SessionOptions {
            device,
            ..SessionOptions::default()
        };
        let [c, h, w] = student.image;
        let classes = student.class_names.len();
        let mut teachers = Vec::new();
        let top_k = config.top_k.filter(|&k| k < classes);
        let mut fingerprint = format!(
            "T={} images={} classes={classes} top_k={top_k:?} image={c}x{h}x{w} aug={}",
            config.temperature, student.images, student.augmentation
        );
        for path in &config.teachers {
            let artifact = ModelArtifact::open(path, None).map_err(|e| TrainerError::teacher(path.display(), e))?;
            let name = artifact.display_name();
            let pre = &artifact.config.preprocess;
            if pre.layout != Layout::Nchw {
                return Err(TrainerError::teacher(
                    &name,
                    format!("takes {:?} input; only NCHW teachers are supported", pre.layout),
                ));
            }
            let session = ModelSession::load(&rt, &artifact, &options).map_err(|e| TrainerError::teacher(&name, e))?;
            let dims = session.signature().image_dims;
            let tc = dims[0];
            if dims[1..] != [h, w] || !(tc == c || (c == 1 && tc == 3)) {
                return Err(TrainerError::teacher(
                    &name,
                    format!("takes images of {dims:?} (C, H, W); the student's data is [{c}, {h}, {w}]"),
                ));
            }
            if session.classes() != classes {
                return Err(TrainerError::teacher(
                    &name,
                    format!("predicts {} classes; the student has {classes}", session.classes()),
                ));
            }
            let labels = &artifact.config.labels;
            if !labels.is_empty() && labels.as_slice() != student.class_names {
                return Err(TrainerError::teacher(
                    &name,
                    format!(
                        "its labels {:?} differ from the student's {:?}",
                        &labels[..labels.len().min(4)],
                        &student.class_names[..classes.min(4)]
                    ),
                ));
            }
            let normalize =
                Normalize::new(pre.mean.clone(), pre.std.clone()).map_err(|e| TrainerError::teacher(&name, e))?;
            let file = file_fingerprint(&artifact.model_path).map_err(io_err(&artifact.model_path))?;
            fingerprint.push_str(&format!(" {name}:{file}"));
            tracing::info!(teacher = %name, device = %session.device(), "distillation teacher loaded");
            teachers.push(Teacher {
                name,
                session,
                normalize,
                channels: tc,
            });
        }
        let cache = match cache_dir {
            Some(dir) if config.cache && config.augment_variants > 0 => Some(Mutex::new(TeacherCache::open(
                dir,
                &fingerprint,
                student.images,
                classes,
                top_k,
            )?)),
            _ => None,
        };
        Ok(Self {
            teachers: Mutex::new(teachers),
            student: student.normalize.clone(),
            classes,
            temperature: config.temperature,
            top_k,
            cache,
            inferred: AtomicUsize::new(0),
        })
    }

    /// Images the teachers have run on so far (each teacher counts once per image).
    pub fn inferred_images(&self) -> usize {
        self.inferred.load(Ordering::Relaxed)
    }

    /// The teachers' mean softmax at the temperature for every image of `batch`
    /// (`[n, classes]`), from the cache where `variant` has the image already.
    pub fn targets(&self, batch: &Batch, variant: Option<u64>) -> Result<Vec<f32>, TrainerError> {
        let k = self.classes;
        let mut out = vec![0f32; batch.n * k];
        let missing: Vec<usize> = match (&self.cache, variant) {
            (Some(cache), Some(v)) => {
                let cache = cache.lock().map_err(|_| poisoned())?;
                (0..batch.n)
                    .filter(|&j| !cache.get(v, batch.indices[j], &mut out[j * k..(j + 1) * k]))
                    .collect()
            }
            _ => (0..batch.n).collect(),
        };
        if missing.is_empty() {
            return Ok(out);
        }
        let mut rows = self.run(batch, &missing)?;
        if let Some(top) = self.top_k {
            for row in rows.chunks_exact_mut(k) {
                let kept = top_classes(row, top);
                expand_top(&kept, row);
            }
        }
        for (r, &j) in missing.iter().enumerate() {
            out[j * k..(j + 1) * k].copy_from_slice(&rows[r * k..(r + 1) * k]);
        }
        if let (Some(cache), Some(v)) = (&self.cache, variant) {
            let mut cache = cache.lock().map_err(|_| poisoned())?;
            for (r, &j) in missing.iter().enumerate() {
                cache.put(v, batch.indices[j], &rows[r * k..(r + 1) * k]);
            }
        }
        Ok(out)
    }

    /// Writes cached outputs not yet on disk (called at the end of every epoch).
    pub fn flush(&self) -> Result<(), TrainerError> {
        match &self.cache {
            Some(cache) => cache.lock().map_err(|_| poisoned())?.flush(),
            None => Ok(()),
        }
    }

    /// Runs every teacher on the images `which` of `batch`; mean softmax rows.
    fn run(&self, batch: &Batch, which: &[usize]) -> Result<Vec<f32>, TrainerError> {
        let (c, plane) = (batch.c, batch.h * batch.w);
        let per_image = c * plane;
        let k = self.classes;
        let mut mean = vec![0f32; which.len() * k];
        let mut teachers = self.teachers.lock().map_err(|_| poisoned())?;
        let count = teachers.len();
        for t in teachers.iter_mut() {
            let tc = t.normalize.mean.len().max(1);
            let out_c = t.channels;
            // Student-normalised values back to pixels, then to the teacher's normalisation.
            let mut input = Vec::with_capacity(which.len() * out_c * plane);
            for &j in which {
                let img = &batch.images[j * per_image..(j + 1) * per_image];
                for oc in 0..out_c {
                    let sc = if c == 1 { 0 } else { oc };
                    let (sm, ss) = (
                        self.student.mean[sc % self.student.mean.len()],
                        self.student.std[sc % self.student.std.len()],
                    );
                    let (tm, ts) = (t.normalize.mean[oc % tc], t.normalize.std[oc % tc]);
                    input.extend(
                        img[sc * plane..(sc + 1) * plane]
                            .iter()
                            .map(|&x| (x * ss + sm - tm) / ts),
                    );
                }
            }
            let logits = t
                .session
                .infer(&input, which.len())
                .map_err(|e| TrainerError::teacher(&t.name, e))?;
            let t_inv = (1.0 / self.temperature) as f32;
            for (r, row) in logits.rows().enumerate() {
                let probs = softmax(&row.iter().map(|v| v * t_inv).collect::<Vec<_>>());
                for (m, p) in mean[r * k..(r + 1) * k].iter_mut().zip(probs) {
                    *m += p / count as f32;
                }
            }
            self.inferred.fetch_add(which.len(), Ordering::Relaxed);
        }
        Ok(mean)
    }
}

fn poisoned() -> TrainerError {
    TrainerError::Poisoned {
        what: "distillation state",
    }
}

/// The `k` largest probabilities of `row` with their classes, largest first (ties: lower class).
pub fn top_classes(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|c| (c as u32, row[c])).collect()
}

/// FKD's marginal smoothing: `row` becomes the kept probabilities at their classes and the
/// rest of the mass, `1 - sum(kept)`, spread evenly over the other classes.
pub fn expand_top(kept: &[(u32, f32)], row: &mut [f32]) {
    let others = row.len().saturating_sub(kept.len());
    let rest = (1.0 - kept.iter().map(|&(_, p)| p).sum::<f32>()).max(0.0);
    row.fill(if others > 0 { rest / others as f32 } else { 0.0 });
    for &(c, p) in kept {
        if let Some(x) = row.get_mut(c as usize) {
            *x = p;
        }
    }
}

/// Teacher outputs per augmentation variant: `width` values per image (the full row, or the
/// top k probabilities with their classes in `classes`) and which images are filled.
struct VariantRows {
    values: Vec<f32>,
    classes: Vec<u32>,
    filled: Vec<bool>,
    dirty: bool,
}

/// The on-disk cache of teacher outputs (see the module comment).
struct TeacherCache {
    dir: PathBuf,
    images: usize,
    classes: usize,
    /// `Some(k)`: rows are stored as the top k (class, probability) pairs.
    top_k: Option<usize>,
    variants: HashMap<u64, VariantRows>,
}

const CACHE_MAGIC: &[u8; 8] = b"HRDYTC02";

impl TeacherCache {
    /// Opens (or starts) the cache in `dir`, discarding it if its fingerprint differs.
    fn open(
        dir: &Path,
        fingerprint: &str,
        images: usize,
        classes: usize,
        top_k: Option<usize>,
    ) -> Result<Self, TrainerError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let fp_path = dir.join("fingerprint.txt");
        let same = fs::read_to_string(&fp_path).is_ok_and(|old| old == fingerprint);
        let mut variants = HashMap::new();
        if same {
            for entry in fs::read_dir(dir).map_err(io_err(dir))? {
                let path = entry.map_err(io_err(dir))?.path();
                let Some(v) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("variant-"))
                    .and_then(|n| n.strip_suffix(".bin"))
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                match read_variant(&path, images, classes, top_k) {
                    Ok(rows) => {
                        variants.insert(v, rows);
                    }
                    Err(why) => tracing::warn!("{}: {why}; recomputing that variant", path.display()),
                }
            }
        } else {
            if fp_path.exists() {
                tracing::warn!(
                    "{}: teachers, data or augmentation changed; discarding the teacher cache",
                    dir.display()
                );
            }
            for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with("variant-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
            write_atomic(&fp_path, fingerprint.as_bytes())?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            images,
            classes,
            top_k,
            variants,
        })
    }

    /// Values stored per image.
    fn width(&self) -> usize {
        self.top_k.unwrap_or(self.classes)
    }

    /// Writes image `image`'s row of `variant` into `out` (`classes` values); false if absent.
    fn get(&self, variant: u64, image: usize, out: &mut [f32]) -> bool {
        let Some(v) = self.variants.get(&variant) else {
            return false;
        };
        if !v.filled.get(image).copied().unwrap_or(false) || out.len() != self.classes {
            return false;
        }
        let w = self.width();
        let values = &v.values[image * w..(image + 1) * w];
        match self.top_k {
            None => out.copy_from_slice(values),
            Some(_) => {
                let kept: Vec<(u32, f32)> = v.classes[image * w..(image + 1) * w]
                    .iter()
                    .copied()
                    .zip(values.iter().copied())
                    .collect();
                expand_top(&kept, out);
            }
        }
        true
    }

    /// Stores image `image`'s row (`classes` values) of `variant`.
    fn put(&mut self, variant: u64, image: usize, row: &[f32]) {
        let (n, w, top_k) = (self.images, self.width(), self.top_k);
        if image >= n || row.len() != self.classes {
            return;
        }
        let v = self.variants.entry(variant).or_insert_with(|| VariantRows {
            values: vec![0.0; n * w],
            classes: if top_k.is_some() { vec![0; n * w] } else { Vec::new() },
            filled: vec![false; n],
            dirty: false,
        });
        match top_k {
            None => v.values[image * w..(image + 1) * w].copy_from_slice(row),
            Some(k) => {
                for (slot, (c, p)) in top_classes(row, k).into_iter().enumerate() {
                    v.classes[image * w + slot] = c;
                    v.values[image * w + slot] = p;
                }
            }
        }
        v.filled[image] = true;
        v.dirty = true;
    }

    /// The file: magic, images, classes and stored width (u64 each), one filled byte per image,
    /// the values (f32) and, for top-k rows, their classes (u32), all little-endian.
    fn flush(&mut self) -> Result<(), TrainerError> {
        let width = self.width();
        for (id, v) in self.variants.iter_mut().filter(|(_, v)| v.dirty) {
            let mut bytes = Vec::with_capacity(32 + v.filled.len() + (v.values.len() + v.classes.len()) * 4);
            bytes.extend_from_slice(CACHE_MAGIC);
            for word in [self.images, self.classes, width] {
                bytes.extend_from_slice(&(word as u64).to_le_bytes());
            }
            bytes.extend(v.filled.iter().map(|&f| u8::from(f)));
            for x in &v.values {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            for c in &v.classes {
                bytes.extend_from_slice(&c.to_le_bytes());
            }
            write_atomic(&self.dir.join(format!("variant-{id}.bin")), &bytes)?;
            v.dirty = false;
        }
        Ok(())
    }
}

fn read_variant(path: &Path, images: usize, classes: usize, top_k: Option<usize>) -> Result<VariantRows, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let width = top_k.unwrap_or(classes);
    let stored = images * width;
    let class_words = if top_k.is_some() { stored } else { 0 };
    let expected = 32 + images + (stored + class_words) * 4;
    if bytes.len() != expected || &bytes[..8] != CACHE_MAGIC {
        return Err(format!(
            "{} bytes, expected {expected} with the cache header",
            bytes.len()
        ));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(w) as usize
    };
    if (word(8), word(16), word(24)) != (images, classes, width) {
        return Err(format!(
            "holds {} x {} (width {}), expected {images} x {classes} (width {width})",
            word(8),
            word(16),
            word(24)
        ));
    }
    let filled = bytes[32..32 + images].iter().map(|&b| b != 0).collect();
    let four = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let body = &bytes[32 + images..];
    let values = body[..stored * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(four(c)))
        .collect();
    let stored_classes: Vec<u32> = body[stored * 4..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(four(c)))
        .collect();
    if stored_classes.iter().any(|&c| c as usize >= classes) {
        return Err(format!("names a class outside 0..{classes}"));
    }
    Ok(VariantRows {
        values,
        classes: stored_classes,
        filled,
        dirty: false,
    })
}

/// MEAL V2's discriminator: `K -> h1 -> h2 -> 2` linear layers with ReLU between them.
#[derive(Module, Debug)]
pub struct Discriminator {
    /// The three layers.
    pub layers: Vec<Linear>,
}

/// The hidden widths for `classes` classes: 1000 -> (125, 15) as in MEAL V2, the same
/// ratios otherwise, at least 16 and 4.
pub fn discriminator_widths(classes: usize) -> [usize; 2] {
    [(classes * 125 / 1000).max(16), (classes * 15 / 1000).max(4)]
}

impl Discriminator {
    /// A fresh discriminator for `classes` classes.
    pub fn new(classes: usize, device: &Device) -> Self {
        let [h1, h2] = discriminator_widths(classes);
        Self {
            layers: vec![
                LinearConfig::new(classes, h1).init(device),
                LinearConfig::new(h1, h2).init(device),
                LinearConfig::new(h2, 2).init(device),
            ],
        }
    }

    /// Two logits per row of `x` (`[batch, classes]`).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut h = x;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h
    }

    /// Binary cross-entropy (mean over rows and both outputs) for telling the student's
    /// probabilities (target `[1, 0]`) from the teachers' (`[0, 1]`).
    pub fn loss(&self, student_probs: Tensor<2>, teacher_probs: Tensor<2>) -> Tensor<1> {
        let device = student_probs.device();
        let [n, _] = student_probs.dims();
        let target = |first: f32| {
            let row = [first, 1.0 - first];
            Tensor::<2>::from_data(burn::tensor::TensorData::new(row.repeat(n), [n, 2]), &device)
        };
        bce_with_logits(self.forward(student_probs), target(1.0))
            + bce_with_logits(self.forward(teacher_probs), target(0.0))
    }
}

/// Mean binary cross-entropy of logits `x` against targets `t`, computed stably:
/// `max(x, 0) - x t + ln(1 + e^{-|x|})`.
pub fn bce_with_logits(x: Tensor<2>, t: Tensor<2>) -> Tensor<1> {
    let stable = x.clone().clamp_min(0.0) - x.clone() * t + x.abs().neg().exp().log1p();
    stable.mean()
}

/// The teachers of a run whose config distils (`None` when it does not), with the cache in
/// the run directory's `teacher-cache/`.
pub fn teachers_for_run(
    config: &TrainConfig,
    labelled: &crate::data::ImageSet,
    normalize: &Normalize,
    run: &RunDir,
) -> Result<Option<Teachers>, TrainerError> {
    let Some(d) = &config.distill else {
        return Ok(None);
    };
    let student = StudentSide {
        image: [labelled.channels(), labelled.height(), labelled.width()],
        class_names: labelled.class_names(),
        normalize,
        images: labelled.len(),
        augmentation: format!("{:?} seed {}", config.augment, config.seed),
    };
    Teachers::load(d, &student, Some(&run.teacher_cache())).map(Some)
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
    use burn::tensor::TensorData;
    use engine::config::ModelConfig;

    use super::*;
    use crate::ModelSpec;
    use crate::data::{ImageSet, make_batch};
    use crate::export::{ExportOptions, export};
    use crate::train::tests::{fashion, tiny_spec};
    use crate::train::{AugmentConfig, OptimizerConfig, RunDir, TrainConfig, TrainData, train};

    /// Exports a freshly initialised `spec` as a teacher for `set`'s classes.
    fn teacher_file(dir: &Path, name: &str, spec: &ModelSpec, set: &ImageSet, normalize: &Normalize) -> PathBuf {
        let model = spec.init(&crate::default_device()).unwrap();
        let mut config = ModelConfig {
            labels: set.class_names()[..spec.num_classes()].to_vec(),
            ..ModelConfig::default()
        };
        config.preprocess.crop_pct = 1.0;
        config.preprocess.mean = normalize.mean.clone();
        config.preprocess.std = normalize.std.clone();
        let path = dir.join(format!("{name}.onnx"));
        export(&model, spec, &ExportOptions::new(config), &path).unwrap();
        path
    }

    fn distill_config(teachers: Vec<PathBuf>, variants: usize) -> TrainConfig {
        TrainConfig {
            epochs: 2,
            batch_size: 50,
            optimizer: OptimizerConfig {
                lr: 3e-3,
                warmup_epochs: 0.0,
                ..OptimizerConfig::default()
            },
            augment: AugmentConfig::default(),
            mixup_alpha: 0.2,
            distill: Some(DistillConfig {
                teachers,
                temperature: 1.0,
                label_weight: 0.0,
                discriminator: Some(DiscriminatorConfig { lr: 1e-4, weight: 1.0 }),
                augment_variants: variants,
                cache: true,
                device: None,
                top_k: None,
                unlabelled: false,
            }),
            ..TrainConfig::default()
        }
    }

    /// MEAL V2 on 200 real images with two teachers: the first epoch runs the teachers on every
    /// image, the second reads the cache and runs none; a resumed or restarted run reads the
    /// cache from disk; changing the temperature discards it. The discriminator is trained and
    /// saved.
    #[test]
    fn cached_epochs_run_no_teacher_inference() {
        let (labelled, _) = fashion(20, 1);
        let normalize = Normalize::from_set(&labelled);
        let dir = tempfile::tempdir().unwrap();
        let a = teacher_file(dir.path(), "a", &tiny_spec(), &labelled, &normalize);
        let b = teacher_file(dir.path(), "b", &tiny_spec(), &labelled, &normalize);
        let config = distill_config(vec![a.clone(), b.clone()], 1);
        let run = RunDir::new(&dir.path().join("run")).unwrap();
        let teachers = teachers_for_run(&config, &labelled, &normalize, &run).unwrap().unwrap();
        let data = TrainData {
            labelled: &labelled,
            pseudo: None,
            eval: None,
            normalize: &normalize,
            teachers: Some(&teachers),
        };
        let (_, history) = train(&tiny_spec(), &config, &data, &run, &crate::default_device()).unwrap();
        assert_eq!(history.len(), 2);
        // Two teachers x 200 images, in epoch 1 only.
        assert_eq!(teachers.inferred_images(), 2 * 200);
        assert!(run.path().join("teacher-cache/variant-0.bin").is_file());
        assert!(run.discriminator_weights().is_file());

        // A new process: the cache comes from disk and matches fresh teacher outputs.
        let reopened = teachers_for_run(&config, &labelled, &normalize, &run).unwrap().unwrap();
        let idx: Vec<usize> = (0..10).collect();
        let augment = config.augment.build().unwrap();
        let batch = make_batch(&labelled, &idx, augment.as_deref(), &normalize, variant_seed(0, 0)).unwrap();
        let cached = reopened.targets(&batch, Some(0)).unwrap();
        assert_eq!(reopened.inferred_images(), 0);
        let fresh = reopened.targets(&batch, None).unwrap();
        assert_eq!(reopened.inferred_images(), 2 * 10);
        let diff = cached
            .iter()
            .zip(&fresh)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "cached and fresh targets differ by {diff}");
        for row in cached.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }

        // Another temperature: the fingerprint differs, the cache is discarded.
        let mut hotter = config.clone();
        if let Some(d) = hotter.distill.as_mut() {
            d.temperature = 2.0;
        }
        let other = teachers_for_run(&hotter, &labelled, &normalize, &run).unwrap().unwrap();
        other.targets(&batch, Some(0)).unwrap();
        assert_eq!(other.inferred_images(), 2 * 10);

        // Two variants over two epochs: every epoch needs the teachers.
        let config2 = distill_config(vec![a], 2);
        let run2 = RunDir::new(&dir.path().join("run2")).unwrap();
        let teachers2 = teachers_for_run(&config2, &labelled, &normalize, &run2)
            .unwrap()
            .unwrap();
        let data2 = TrainData {
            teachers: Some(&teachers2),
            ..data
        };
        train(&tiny_spec(), &config2, &data2, &run2, &crate::default_device()).unwrap();
        assert_eq!(teachers2.inferred_images(), 2 * 200);
    }

    #[test]
    fn teachers_that_do_not_fit_are_refused() {
        let (labelled, _) = fashion(2, 1);
        let normalize = Normalize::from_set(&labelled);
        let dir = tempfile::tempdir().unwrap();
        let mut five = tiny_spec();
        if let ModelSpec::EfficientNet(s) = &mut five {
            s.num_classes = 5;
        }
        let t = teacher_file(dir.path(), "five", &five, &labelled, &normalize);
        let run = RunDir::new(dir.path()).unwrap();
        let err = teachers_for_run(&distill_config(vec![t], 1), &labelled, &normalize, &run)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 classes") && err.contains("five"), "{err}");
        let missing = dir.path().join("nope.onnx");
        let err = teachers_for_run(&distill_config(vec![missing], 1), &labelled, &normalize, &run)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.onnx"), "{err}");
        let err = distill_config(vec![], 1)
            .distill
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("teachers"), "{err}");
    }

    /// The discriminator learns to tell two fixed distributions apart, and its loss sends a
    /// gradient into the student's probabilities.
    #[test]
    fn discriminator_learns_and_pushes_on_the_student() {
        let device = crate::default_device().autodiff();
        <burn::tensor::Device>::seed(&device, 7);
        let n = 32;
        let student: Vec<f32> = (0..n * 10).map(|i| ((i * 7919) % 13) as f32 / 13.0).collect();
        let teacher: Vec<f32> = (0..n * 10)
            .map(|i| if i % 10 == i / 10 % 10 { 3.0 } else { 0.0 })
            .collect();
        let probs = |v: &Vec<f32>| {
            burn::tensor::activation::softmax(Tensor::<2>::from_data(TensorData::new(v.clone(), [n, 10]), &device), 1)
        };
        let mut disc = Discriminator::new(10, &device);
        assert_eq!(discriminator_widths(1000), [125, 15]);
        assert_eq!(discriminator_widths(10), [16, 4]);
        let mut optim = ModuleOptimizer::from(AdamConfig::new().build());
        let first: f32 = disc.loss(probs(&student), probs(&teacher)).into_scalar();
        assert!(
            (first - 2.0 * std::f32::consts::LN_2).abs() < 0.2,
            "initial loss {first}"
        );
        for _ in 0..150 {
            let loss = disc.loss(probs(&student), probs(&teacher));
            let grads = GradientsParams::from_grads(loss.backward(), &disc);
            disc = optim.step(1e-2, disc, grads);
        }
        let last: f32 = disc.loss(probs(&student), probs(&teacher)).into_scalar();
        assert!(last < 0.5, "loss {first} -> {last}");
        // The student's side receives a gradient through the discriminator.
        let s = Tensor::<2>::from_data(TensorData::new(student.clone(), [n, 10]), &device).require_grad();
        let loss = disc.loss(burn::tensor::activation::softmax(s.clone(), 1), probs(&teacher));
        let grads = loss.backward();
        let g = s.grad(&grads).unwrap();
        let norm: f32 = g.abs().sum().into_scalar();
        assert!(norm > 1e-4, "no gradient reaches the student ({norm})");
    }

    #[test]
    fn variants_repeat_and_seeds_differ() {
        let d = distill_config(vec![PathBuf::from("t.onnx")], 3).distill.unwrap();
        assert_eq!(
            (0..7).map(|e| d.variant(e)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0].map(Some)
        );
        let off = DistillConfig {
            augment_variants: 0,
            ..d
        };
        assert_eq!(off.variant(5), None);
        assert_ne!(variant_seed(1, 0), variant_seed(1, 1));
        assert_ne!(variant_seed(1, 0), variant_seed(2, 0));
    }

    #[test]
    fn top_k_keeps_the_largest_and_spreads_the_rest() {
        let row = [0.5, 0.1, 0.3, 0.05, 0.05];
        let kept = top_classes(&row, 2);
        assert_eq!(kept, vec![(0, 0.5), (2, 0.3)]);
        let mut out = [9.0; 5];
        expand_top(&kept, &mut out);
        let rest = 0.2 / 3.0;
        for (got, want) in out.iter().zip([0.5, rest, 0.3, rest, rest]) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
        // Ties go to the lower class; keeping every class changes nothing.
        assert_eq!(top_classes(&[0.25; 4], 1), vec![(0, 0.25)]);
        let mut all = [0.0; 5];
        expand_top(&top_classes(&row, 5), &mut all);
        assert_eq!(all, row);
    }

    /// With `top_k`, the cache stores k (class, probability) pairs per image, and cached and
    /// fresh targets are the same smoothed rows.
    #[test]
    fn top_k_cache_stores_pairs_and_gives_the_fresh_targets() {
        let (labelled, _) = fashion(3, 1);
        let normalize = Normalize::from_set(&labelled);
        let dir = tempfile::tempdir().unwrap();
        let a = teacher_file(dir.path(), "a", &tiny_spec(), &labelled, &normalize);
        let mut config = distill_config(vec![a], 1);
        if let Some(d) = config.distill.as_mut() {
            d.top_k = Some(3);
        }
        let run = RunDir::new(&dir.path().join("run")).unwrap();
        let teachers = teachers_for_run(&config, &labelled, &normalize, &run).unwrap().unwrap();
        let idx: Vec<usize> = (0..labelled.len()).collect();
        let augment = config.augment.build().unwrap();
        let batch = make_batch(&labelled, &idx, augment.as_deref(), &normalize, variant_seed(0, 0)).unwrap();
        let fresh = teachers.targets(&batch, Some(0)).unwrap();
        teachers.flush().unwrap();
        let n = labelled.len();
        let file = run.path().join("teacher-cache/variant-0.bin");
        assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, 32 + n + n * 3 * 8);
        for row in fresh.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            let mut sorted = row.to_vec();
            sorted.sort_by(|x, y| y.total_cmp(x));
            // the 7 classes outside the top 3 share one value
            assert!(sorted[3..].iter().all(|&x| x == sorted[9]), "{row:?}");
        }
        let reopened = teachers_for_run(&config, &labelled, &normalize, &run).unwrap().unwrap();
        let cached = reopened.targets(&batch, Some(0)).unwrap();
        assert_eq!(reopened.inferred_images(), 0);
        assert_eq!(cached, fresh);
    }

    /// Unlabelled images carry no hard label, so only label-free distillation may use them.
    #[test]
    fn unlabelled_images_need_label_weight_zero() {
        let d = distill_config(vec![PathBuf::from("t.onnx")], 3).distill.unwrap();
        let bad = DistillConfig {
            unlabelled: true,
            label_weight: 0.5,
            ..d
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("unlabelled") && err.contains("label_weight"), "{err}");
        DistillConfig {
            label_weight: 0.0,
            ..bad
        }
        .validate()
        .unwrap();
    }
}
