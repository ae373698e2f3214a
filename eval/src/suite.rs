//! The evaluation runner behind `hardy eval`: plans the parts a suite needs, runs each through
//! the engine (decoding in parallel, inference in batches), stores each finished part, and
//! turns the stored parts into a [`crate::result::EvalResult`] and a report.
//!
//! Suites and their data:
//! - `clean`: the labelled data set (`--data`).
//! - `c`: an ImageNet-C directory (`--c-data`, `<corruption>/<severity>/<class>/...`); without
//!   one, the clean set is corrupted on the fly (resize and crop as the model's preprocessing
//!   says, corrupt at the crop size, JPEG round trip at quality 85 like the released set).
//! - `p`: an ImageNet-P directory of videos (`--p-data`); without one, sequences are generated
//!   from the clean set.
//! - `a`, `r`: ImageNet-A / ImageNet-R folders, scored on their 200 classes (1000-class models).
//! - `fgsm`, `pgd`: attacks on the clean set at each `--eps`.
//!
//! A part is one unit of work (`clean`, `c/fog/3`, `p/rotate/1`, `fgsm/0.0314`, ...); it is
//! stored when finished, so an interrupted run resumes where it stopped, and `--shard i/n`
//! splits every part's items across machines (`hardy eval merge` adds the counts back up).
//!
//! A file of a data set that cannot be used (malformed, truncated, unreadable, or outside the
//! data root) fails that item alone: it is left out of the part's counts, counted as failed
//! with its reason, and reported. Anything that is not about one item (the model, the session,
//! the options, an item without a label) fails the run.
//!
//! With [`EvalOptions::data_root`] set (the server's `--data-root`), every data path of the
//! options must resolve under that root, and so must every file listed from them, symlinks
//! followed; the named sets Hardy fetches into its cache are exempt.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use engine::{
    artifact::ModelArtifact,
    classify::softmax,
    preprocess::{Exif, ImageLimits, PreprocessSpec, resize_crop, to_tensor},
    runtime::Runtime,
    session::{ModelSession, SessionOptions, StopSignal},
};
use image::RgbImage;

use crate::{
    Corruption, EvalError, Perturbation,
    attack::{Attacker, PgdConfig},
    autoattack::{
        AttackName, AutoAttackConfig, AutoAttackOptions, ModelChecks, RobustSample, argmax, check_model, run_attack,
        write_png,
    },
    corrupt::{Corruptor, FrostSource, ops::jpeg_roundtrip_image},
    dataset::{self, ClassMap, Item, ItemSource, Shard},
    metrics, perturb, report,
    result::{EvalResult, Failures, ModelSummary, PartRecord, Tally, summarise},
    store::{PartStore, RunInfo, fingerprint, load_parts, read_json, write_json},
    subsets::{self, ClassSubset},
};

/// One suite of `--suite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suite {
    /// The clean set: top-1/top-5 error and calibration.
    Clean,
    /// Corruptions (ImageNet-C).
    C,
    /// Perturbation sequences (ImageNet-P).
    P,
    /// ImageNet-A.
    A,
    /// ImageNet-R.
    R,
    /// FGSM.
    Fgsm,
    /// PGD.
    Pgd,
    /// AutoAttack (APGD-CE, APGD-T, FAB-T, Square; the per-image worst case).
    AutoAttack,
}

impl FromStr for Suite {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "clean" => Suite::Clean,
            "c" => Suite::C,
            "p" => Suite::P,
            "a" => Suite::A,
            "r" => Suite::R,
            "fgsm" => Suite::Fgsm,
            "pgd" => Suite::Pgd,
            "autoattack" => Suite::AutoAttack,
            other => {
                return Err(EvalError::Option {
                    option: "--suite",
                    reason: format!("unknown suite `{other}`; known: clean, c, p, a, r, fgsm, pgd, autoattack"),
                });
            }
        })
    }
}

/// Where a labelled image set comes from: the data set grammar `hardy train` shares (named
/// sets such as `fashion-mnist:test`, IDX files, ImageFolder trees, labelled files).
pub use data::DataSource;

/// What to evaluate and where to write it.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The suites to run.
    pub suites: BTreeSet<Suite>,
    /// The clean labelled set (clean, generated c/p, attacks).
    pub data: Option<PathBuf>,
    /// An ImageNet-C layout directory.
    pub c_data: Option<PathBuf>,
    /// An ImageNet-P layout directory.
    pub p_data: Option<PathBuf>,
    /// An ImageNet-A directory.
    pub a_data: Option<PathBuf>,
    /// An ImageNet-R directory.
    pub r_data: Option<PathBuf>,
    /// Corruptions to evaluate.
    pub corruptions: Vec<Corruption>,
    /// Severities to evaluate.
    pub severities: Vec<u8>,
    /// Perturbations to evaluate.
    pub perturbations: Vec<Perturbation>,
    /// Difficulties of the noise perturbations (the others have one level).
    pub noise_difficulties: Vec<u8>,
    /// Attack strengths, in [0, 1] pixel units.
    pub eps: Vec<f32>,
    /// PGD iterations.
    pub pgd_steps: usize,
    /// PGD step size; default 2.5 x eps / steps.
    pub pgd_step_size: Option<f32>,
    /// The `autoattack` suite's version, norm, radii and settings.
    pub autoattack: AutoAttackOptions,
    /// Frost textures for generated corruptions.
    pub frost: Option<FrostSource>,
    /// JPEG quality of the round trip applied to generated corruptions (the released
    /// ImageNet-C used 85); `None` skips it.
    pub jpeg_quality: Option<u8>,
    /// Images per inference batch.
    pub batch: usize,
    /// Which share of every part's items this run evaluates.
    pub shard: Shard,
    /// Base seed of the generated corruptions, sequences and PGD starts.
    pub seed: u64,
    /// Use only the first N items of each data set.
    pub limit: Option<usize>,
    /// Output directory (resumed when it exists).
    pub out: PathBuf,
    /// Confines the data to this directory: the data paths above (named sets such as
    /// `fashion-mnist:test` excepted) must resolve under it, or [`Evaluator::new`] refuses them,
    /// and each file listed from them must too, or that item fails (a symlink pointing out of
    /// the set). `None` (the CLI): anywhere.
    pub data_root: Option<PathBuf>,
}

impl EvalOptions {
    /// The defaults: the benchmark's corruptions at all severities, the 10 benchmark
    /// perturbations at difficulty 1, eps 1, 2, 4, 8 /255, PGD 10 steps, batch 32.
    pub fn new(out: PathBuf) -> Self {
        Self {
            suites: BTreeSet::from([Suite::Clean]),
            data: None,
            c_data: None,
            p_data: None,
            a_data: None,
            r_data: None,
            corruptions: Corruption::BENCHMARK.to_vec(),
            severities: vec![1, 2, 3, 4, 5],
            perturbations: Perturbation::BENCHMARK.to_vec(),
            noise_difficulties: vec![1],
            eps: vec![1.0 / 255.0, 2.0 / 255.0, 4.0 / 255.0, 8.0 / 255.0],
            pgd_steps: 10,
            pgd_step_size: None,
            autoattack: AutoAttackOptions::default(),
            frost: None,
            jpeg_quality: Some(85),
            batch: 32,
            shard: Shard { index: 0, count: 1 },
            seed: 0,
            limit: None,
            out,
            data_root: None,
        }
    }
}

/// One part of a run's plan, as [`Observer::planned`] and [`Evaluator::plan_parts`] list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPart {
    /// The part's key (`clean`, `c/fog/3`, `fgsm/0.015686`, ...).
    pub key: String,
    /// Its units of work (images, or sequences for suite p).
    pub items: usize,
}

/// Receives progress and may stop a run; the CLI draws bars with it, the server's jobs
/// publish it, tests ignore it.
pub trait Observer: Sync {
    /// Every part the run will go through, in order (stored ones included), before any runs.
    fn planned(&self, _parts: &[PlannedPart]) {}
    /// A part starts with `items` units of work (images or sequences).
    fn part_started(&self, _key: &str, _items: usize) {}
    /// `n` more units are done.
    fn advanced(&self, _n: usize) {}
    /// A part is finished (`resumed`: it was already stored and was skipped).
    fn part_finished(&self, _key: &str, _resumed: bool) {}
    /// A line of status for the part in progress (an AutoAttack part's robust count so far).
    fn note(&self, _text: &str) {}
    /// Whether the run should stop. Asked before every part and after every batch; a run
    /// told to stop returns [`EvalError::Cancelled`], keeping the parts stored before (the
    /// part in progress is dropped whole, so nothing is counted twice on resume).
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// How a part's items are turned into model input.
#[derive(Debug, Clone)]
enum Prepare {
    /// The model's own preprocessing.
    Clean,
    /// Already at the crop size (released ImageNet-C files): only cropped if they are not.
    Precropped,
    /// Preprocess, then corrupt.
    Corrupt(Corruption, u8),
}

/// How sequences are obtained.
#[derive(Debug, Clone)]
enum Frames {
    /// Decode the item's video.
    Video,
    /// Generate from the item's image.
    Generate(Perturbation, u8),
}

#[derive(Debug, Clone)]
enum Work {
    Accuracy {
        items: Vec<Item>,
        prepare: Prepare,
        subset: Option<ClassSubset>,
        calibration: bool,
    },
    Flips {
        items: Vec<Item>,
        frames: Frames,
        noise: bool,
        step: usize,
    },
    Attack {
        items: Vec<Item>,
        eps: f32,
        pgd: bool,
    },
    /// One attack of an AutoAttack sequence, on the items the part `previous` left robust
    /// (all items for the first).
    AutoAttack {
        items: Vec<Item>,
        attack: AttackName,
        previous: Option<String>,
        config: Box<AutoAttackConfig>,
    },
}

struct Part {
    key: String,
    work: Work,
    /// Whether the items come from a path (confined to the data root when there is one) rather
    /// than from a named set in Hardy's cache.
    confined: bool,
}

impl Part {
    /// Units of work: images, or sequences.
    fn items(&self) -> usize {
        match &self.work {
            Work::Accuracy { items, .. }
            | Work::Flips { items, .. }
            | Work::Attack { items, .. }
            | Work::AutoAttack { items, .. } => items.len(),
        }
    }

    fn planned(&self) -> PlannedPart {
        PlannedPart {
            key: self.key.clone(),
            items: self.items(),
        }
    }
}

/// Deterministic per-item seeds: FNV-1a over the parts of the name. `hardy corrupt` and the
/// on-the-fly corruptions of `hardy eval` use the same seeds (the same draws at the same size).
pub(crate) fn seed_for(base: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for p in parts {
        for b in p.iter().chain(b"/") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Formats an eps for a part key with enough digits to tell 1/255 from 2/255.
fn eps_key(eps: f32) -> String {
    format!("{eps:.6}")
}

/// Why an item could not be made into model input.
enum ItemError {
    /// The item itself cannot be used (an unreadable, malformed or truncated file, one outside
    /// the data root): it fails alone.
    Failed {
        /// Why, without the file's absolute path (`cannot decode JPEG image: ...`).
        reason: String,
        /// The error itself.
        error: Box<EvalError>,
    },
    /// Something that is not about this one item (the preprocessing settings, the corruptor):
    /// the run fails.
    Run(EvalError),
}

impl From<EvalError> for ItemError {
    fn from(error: EvalError) -> Self {
        ItemError::Run(error)
    }
}

impl ItemError {
    /// A failure of the item `key`, whose file is at `paths` (as listed, as resolved): the
    /// reason names it by its key.
    fn failed(key: &str, paths: &[Option<&Path>], error: EvalError) -> Self {
        let mut reason = error.to_string();
        let mut paths: Vec<String> = paths.iter().flatten().map(|p| p.display().to_string()).collect();
        // the longer first: a resolved path may contain the listed one
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in paths.iter().filter(|p| !p.is_empty()) {
            reason = reason.replace(path.as_str(), key);
        }
        let reason = reason
            .strip_prefix(&format!("{key}: "))
            .map_or_else(|| reason.clone(), str::to_string);
        ItemError::Failed {
            reason,
            error: Box::new(error),
        }
    }

    fn into_error(self) -> EvalError {
        match self {
            ItemError::Failed { error, .. } => *error,
            ItemError::Run(error) => error,
        }
    }
}

/// Sorts one streamed item: its value, `None` when it failed alone (counted in `failures`), or
/// the run's error.
fn settle<T>(
    item: &Item,
    prepared: Result<Result<T, ItemError>, data::DatasetError>,
    failures: &mut Failures,
) -> Result<Option<T>, EvalError> {
    match prepared? {
        Ok(value) => Ok(Some(value)),
        Err(ItemError::Failed { reason, .. }) => {
            failures.add(&item.key, reason);
            Ok(None)
        }
        Err(ItemError::Run(error)) => Err(error),
    }
}

/// `path` canonicalised, which must be under `root` (canonical), else [`EvalError::Option`]
/// naming `option`.
fn confine(root: &Path, option: &'static str, path: &Path) -> Result<PathBuf, EvalError> {
    let canonical = path.canonicalize().map_err(|e| EvalError::Option {
        option,
        reason: format!("{}: {e}", path.display()),
    })?;
    if canonical.starts_with(root) {
        Ok(canonical)
    } else {
        Err(EvalError::Option {
            option,
            reason: format!("{} is outside the data root", path.display()),
        })
    }
}

/// Whether `--data` names a set Hardy fetches into its cache (`fashion-mnist:test`, ...) rather
/// than a path; as [`DataSource::resolve`] tells them apart.
fn is_named_set(path: &Path) -> bool {
    path.to_str().is_some_and(|p| data::source::NAMED_SETS.contains(&p))
}

/// Turns items into model input; shared by the decoding threads.
struct Inputs {
    spec: PreprocessSpec,
    limits: ImageLimits,
    corruptor: Option<Corruptor>,
    seed: u64,
    jpeg_quality: Option<u8>,
    /// The canonical data root confined items must resolve under; `None`: anywhere.
    data_root: Option<PathBuf>,
}

impl Inputs {
    /// The item to read: itself, or, when `confined` and the run has a data root, the item
    /// with its file's canonical path, which must be under the root (one `canonicalize` per
    /// file; the canonical path is what is opened, so a symlink cannot be swapped in between).
    fn resolve<'i>(&self, item: &'i Item, confined: bool) -> Result<Cow<'i, Item>, ItemError> {
        let (Some(root), true, ItemSource::File(path)) = (&self.data_root, confined, &item.source) else {
            return Ok(Cow::Borrowed(item));
        };
        let fail = |error| ItemError::failed(&item.key, &[Some(path)], error);
        let canonical = path.canonicalize().map_err(|source| {
            fail(EvalError::Io {
                path: path.clone(),
                source,
            })
        })?;
        if !canonical.starts_with(root) {
            return Err(fail(EvalError::OutsideDataRoot { path: path.clone() }));
        }
        Ok(Cow::Owned(Item {
            key: item.key.clone(),
            label: item.label,
            source: ItemSource::File(canonical),
        }))
    }

    /// The item's decoded pixels; any error is the item's own.
    fn load(&self, item: &Item, confined: bool) -> Result<RgbImage, ItemError> {
        let source = self.resolve(item, confined)?;
        source
            .load(&self.limits, Exif::from_flag(self.spec.exif_orientation))
            .map_err(|e| ItemError::failed(&item.key, &[item.path(), source.path()], e.into()))
    }

    /// The item's image, resized and cropped as the model's preprocessing says (and corrupted
    /// when asked), before normalisation.
    fn image(&self, item: &Item, prepare: &Prepare, confined: bool) -> Result<RgbImage, ItemError> {
        let img = self.load(item, confined)?;
        Ok(self.prepare(img, item, prepare)?)
    }

    fn prepare(&self, img: RgbImage, item: &Item, prepare: &Prepare) -> Result<RgbImage, EvalError> {
        Ok(match prepare {
            Prepare::Precropped if img.dimensions() == (self.spec.crop_width, self.spec.crop_height) => img,
            Prepare::Clean | Prepare::Precropped => resize_crop(&img, &self.spec)?,
            Prepare::Corrupt(c, s) => {
                let cropped = resize_crop(&img, &self.spec)?;
                let corruptor = self.corruptor.as_ref().ok_or(EvalError::Internal("no corruptor"))?;
                let seed = seed_for(self.seed, &[item.key.as_bytes(), c.name().as_bytes(), &[*s]]);
                let corrupted = corruptor.apply(&cropped, *c, *s, seed)?;
                match self.jpeg_quality {
                    // stored and read as the released files were
                    Some(q) => jpeg_roundtrip_image(&corrupted, q),
                    None => corrupted,
                }
            }
        })
    }

    /// The normalised tensor of one item.
    fn tensor(&self, item: &Item, prepare: &Prepare, confined: bool) -> Result<Vec<f32>, ItemError> {
        let img = self.image(item, prepare, confined)?;
        Ok(self.normalise(&img)?)
    }

    fn normalise(&self, img: &RgbImage) -> Result<Vec<f32>, EvalError> {
        let img = if img.dimensions() == (self.spec.crop_width, self.spec.crop_height) {
            std::borrow::Cow::Borrowed(img)
        } else {
            std::borrow::Cow::Owned(resize_crop(img, &self.spec)?)
        };
        let mut out = vec![0.0f32; self.spec.tensor_len()];
        to_tensor(&img, &self.spec, &mut out)?;
        Ok(out)
    }

    /// The normalised frames of one sequence.
    fn frames(&self, item: &Item, frames: &Frames, confined: bool) -> Result<Vec<Vec<f32>>, ItemError> {
        let images = match frames {
            Frames::Video => {
                let source = self.resolve(item, confined)?;
                let Some(path) = source.path() else {
                    return Err(EvalError::Internal("a video item that is not a file").into());
                };
                perturb::read_video(path)
                    .map_err(|e| ItemError::failed(&item.key, &[item.path(), Some(path)], e.into()))?
            }
            Frames::Generate(p, d) => {
                let img = self.load(item, confined)?;
                self.sequence(&img, item, *p, *d)?
            }
        };
        Ok(images.iter().map(|f| self.normalise(f)).collect::<Result<_, _>>()?)
    }

    /// A generated sequence of `img`. The sequences start from the resized (uncropped) image,
    /// as ImageNet-P's generator starts from the 256-pixel image.
    fn sequence(&self, img: &RgbImage, item: &Item, p: Perturbation, d: u8) -> Result<Vec<RgbImage>, EvalError> {
        let (w, h) = self.spec.resized_size(img.width(), img.height());
        let mut whole = self.spec.clone();
        whole.crop_width = w;
        whole.crop_height = h;
        let resized = resize_crop(img, &whole)?;
        let crop = self.spec.crop_width.min(self.spec.crop_height);
        let seed = seed_for(self.seed, &[item.key.as_bytes(), p.name().as_bytes(), &[d]]);
        Ok(perturb::sequence(&resized, p, d, seed, crop)?)
    }

    /// The [0, 1] pixel tensor an attack starts from.
    fn pixels(&self, item: &Item, confined: bool) -> Result<Vec<f32>, ItemError> {
        let img = self.image(item, &Prepare::Clean, confined)?;
        let mut out = vec![0.0f32; self.spec.tensor_len()];
        crate::attack::pixels(&img, &self.spec, &mut out).map_err(EvalError::from)?;
        Ok(out)
    }
}

/// What a part's loop needs besides its work.
struct PartRun<'o> {
    /// Whether its items are confined to the data root.
    confined: bool,
    /// Its items that failed alone.
    failures: Failures,
    /// Who watches (and may cancel).
    observer: &'o dyn Observer,
}

/// The evaluation of one model: see the module comment.
pub struct Evaluator<'a> {
    runtime: &'a Runtime,
    artifact: &'a ModelArtifact,
    session_options: SessionOptions,
    options: EvalOptions,
    classes: ClassMap,
    inputs: Arc<Inputs>,
    session: Option<ModelSession>,
    attacker: Option<Attacker>,
    /// Attached to the sessions this evaluator builds (see [`Evaluator::set_stop`]).
    stop: Option<StopSignal>,
}

impl<'a> Evaluator<'a> {
    /// Prepares an evaluation of `artifact` (nothing runs yet).
    pub fn new(
        runtime: &'a Runtime,
        artifact: &'a ModelArtifact,
        session_options: SessionOptions,
        options: EvalOptions,
    ) -> Result<Self, EvalError> {
        if options.batch == 0 {
            return Err(EvalError::Option {
                option: "--batch",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(bad) = options.eps.iter().find(|e| !(0.0..=1.0).contains(*e)) {
            return Err(EvalError::Option {
                option: "--eps",
                reason: format!(
                    "{}/255 is outside [0, 255]/255: eps counts pixel levels, 8 means 8/255",
                    bad * 255.0
                ),
            });
        }
        if let Some(bad) = options.pgd_step_size.filter(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(EvalError::Option {
                option: "--pgd-step-size",
                reason: format!("{}/255 is not a step size (finite, 0 or more)", bad * 255.0),
            });
        }
        if let Some(bad) = options.severities.iter().find(|s| !(1..=5).contains(*s)) {
            return Err(EvalError::Option {
                option: "--severities",
                reason: format!("{bad} is not a severity (1..5)"),
            });
        }
        let data_root = match &options.data_root {
            None => None,
            Some(root) => {
                let root = root.canonicalize().map_err(|e| EvalError::Option {
                    option: "data_root",
                    reason: format!("{}: {e}", root.display()),
                })?;
                let paths = [
                    ("data", options.data.as_deref().filter(|p| !is_named_set(p))),
                    ("c_data", options.c_data.as_deref()),
                    ("p_data", options.p_data.as_deref()),
                    ("a_data", options.a_data.as_deref()),
                    ("r_data", options.r_data.as_deref()),
                ];
                for (option, path) in paths {
                    if let Some(path) = path {
                        confine(&root, option, path)?;
                    }
                }
                Some(root)
            }
        };
        let corruptor = if options.suites.contains(&Suite::C) && options.c_data.is_none() {
            Some(Corruptor::for_corruptions(options.frost.clone(), &options.corruptions)?)
        } else {
            None
        };
        let inputs = Inputs {
            spec: artifact.config.preprocess_spec(),
            limits: ImageLimits::default(),
            corruptor,
            seed: options.seed,
            jpeg_quality: options.jpeg_quality,
            data_root,
        };
        Ok(Self {
            runtime,
            artifact,
            session_options,
            classes: ClassMap::for_model(&artifact.config.labels),
            options,
            inputs: Arc::new(inputs),
            session: None,
            attacker: None,
            stop: None,
        })
    }

    fn model_summary(&self) -> Result<ModelSummary, EvalError> {
        Ok(ModelSummary {
            name: self.artifact.display_name(),
            path: self.artifact.model_path.display().to_string(),
            fingerprint: fingerprint(&self.artifact.model_path)?,
            classes: self.artifact.config.labels.len(),
        })
    }

    /// Limit, then shard: the items this run evaluates, in a fixed order.
    fn select(&self, mut items: Vec<Item>) -> Vec<Item> {
        if let Some(limit) = self.options.limit {
            items.truncate(limit);
        }
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.options.shard.contains(*i))
            .map(|(_, item)| item)
            .collect()
    }

    fn clean_items(&self, cache: &mut Option<Vec<Item>>, suite: &'static str) -> Result<Vec<Item>, EvalError> {
        if let Some(items) = cache {
            return Ok(items.clone());
        }
        let Some(path) = &self.options.data else {
            return Err(EvalError::NoData {
                suite,
                option: "--data",
            });
        };
        let source = DataSource::resolve(path)?;
        // An IDX file's labels are read from beside it: confined like the images.
        if let (
            Some(root),
            DataSource::Idx {
                labels: Some(labels), ..
            },
        ) = (&self.inputs.data_root, &source)
            && !is_named_set(path)
        {
            confine(root, "data", labels)?;
        }
        let items = self.select(source.items(&self.classes)?);
        *cache = Some(items.clone());
        Ok(items)
    }

    /// Every part the options ask for, and where each suite's data comes from.
    fn plan(&self) -> Result<(Vec<Part>, BTreeMap<String, String>), EvalError> {
        let o = &self.options;
        let mut parts = Vec::new();
        let mut data = BTreeMap::new();
        let mut clean: Option<Vec<Item>> = None;
        // Items listed from a path are confined to the data root; a named set's are not.
        let clean_confined = o.data.as_deref().is_some_and(|p| !is_named_set(p));
        if let Some(p) = &o.data {
            data.insert("clean".to_string(), p.display().to_string());
        }
        for suite in &o.suites {
            match suite {
                Suite::Clean => parts.push(Part {
                    key: "clean".into(),
                    work: Work::Accuracy {
                        items: self.clean_items(&mut clean, "clean")?,
                        prepare: Prepare::Clean,
                        subset: None,
                        calibration: true,
                    },
                    confined: clean_confined,
                }),
                Suite::C => {
                    if let Some(root) = &o.c_data {
                        data.insert("c".into(), root.display().to_string());
                        for (c, s, dir) in dataset::imagenet_c(root)? {
                            if !o.corruptions.contains(&c) || !o.severities.contains(&s) {
                                continue;
                            }
                            parts.push(Part {
                                key: format!("c/{c}/{s}"),
                                work: Work::Accuracy {
                                    items: self.select(dataset::image_folder(&dir, &self.classes)?),
                                    prepare: Prepare::Precropped,
                                    subset: None,
                                    calibration: false,
                                },
                                confined: true,
                            });
                        }
                    } else {
                        let jpeg = match o.jpeg_quality {
                            Some(q) => format!(", JPEG quality {q}"),
                            None => String::new(),
                        };
                        data.insert(
                            "c".into(),
                            format!("generated from the clean set (seed {}{jpeg})", o.seed),
                        );
                        let items = self.clean_items(&mut clean, "c")?;
                        for &c in &o.corruptions {
                            for &s in &o.severities {
                                parts.push(Part {
                                    key: format!("c/{c}/{s}"),
                                    work: Work::Accuracy {
                                        items: items.clone(),
                                        prepare: Prepare::Corrupt(c, s),
                                        subset: None,
                                        calibration: false,
                                    },
                                    confined: clean_confined,
                                });
                            }
                        }
                    }
                }
                Suite::P => {
                    if let Some(root) = &o.p_data {
                        data.insert("p".into(), root.display().to_string());
                        for (p, difficulty, dir) in dataset::imagenet_p(root)? {
                            if !o.perturbations.contains(&p) {
                                continue;
                            }
                            let d = difficulty.unwrap_or(1);
                            parts.push(Part {
                                key: format!("p/{p}/{d}"),
                                work: Work::Flips {
                                    items: self.select(dataset::videos(&dir, &self.classes)?),
                                    frames: Frames::Video,
                                    noise: p.is_noise(),
                                    step: if p.is_noise() { 1 } else { usize::from(d) },
                                },
                                confined: true,
                            });
                        }
                    } else {
                        data.insert("p".into(), format!("generated from the clean set (seed {})", o.seed));
                        let items = self.clean_items(&mut clean, "p")?;
                        for &p in &o.perturbations {
                            let levels = if p.is_noise() {
                                o.noise_difficulties.clone()
                            } else {
                                vec![1]
                            };
                            for d in levels {
                                if !perturb::difficulties(p).contains(&d) {
                                    return Err(EvalError::Option {
                                        option: "--noise-difficulties",
                                        reason: format!("{p} has no difficulty {d}"),
                                    });
                                }
                                parts.push(Part {
                                    key: format!("p/{p}/{d}"),
                                    work: Work::Flips {
                                        items: items.clone(),
                                        frames: Frames::Generate(p, d),
                                        noise: p.is_noise(),
                                        step: 1,
                                    },
                                    confined: clean_confined,
                                });
                            }
                        }
                    }
                }
                Suite::A | Suite::R => {
                    let (key, path, option, subset) = match suite {
                        Suite::A => ("a", &o.a_data, "--a-data", subsets::imagenet_a()),
                        _ => ("r", &o.r_data, "--r-data", subsets::imagenet_r()),
                    };
                    let Some(root) = path else {
                        return Err(EvalError::NoData { suite: key, option });
                    };
                    if self.artifact.config.labels.len() != 1000 {
                        return Err(EvalError::Option {
                            option: "--suite",
                            reason: format!(
                                "suite {key} scores 200 of the 1000 ImageNet classes; this model has {} classes",
                                self.artifact.config.labels.len()
                            ),
                        });
                    }
                    data.insert(key.into(), root.display().to_string());
                    parts.push(Part {
                        key: key.into(),
                        work: Work::Accuracy {
                            items: self.select(dataset::image_folder(root, &ClassMap::with_subset(&subset))?),
                            prepare: Prepare::Clean,
                            subset: Some(subset),
                            calibration: false,
                        },
                        confined: true,
                    });
                }
                Suite::Fgsm | Suite::Pgd => {
                    let name = if *suite == Suite::Fgsm { "fgsm" } else { "pgd" };
                    let items = self.clean_items(&mut clean, name)?;
                    for &eps in &o.eps {
                        parts.push(Part {
                            key: format!("{name}/{}", eps_key(eps)),
                            work: Work::Attack {
                                items: items.clone(),
                                eps,
                                pgd: *suite == Suite::Pgd,
                            },
                            confined: clean_confined,
                        });
                    }
                }
                Suite::AutoAttack => {
                    let items = self.clean_items(&mut clean, "autoattack")?;
                    let aa = &o.autoattack;
                    let side = self.inputs.spec.crop_width.min(self.inputs.spec.crop_height);
                    // Checked again with the model's own class count when the part runs.
                    let classes = self.artifact.config.labels.len().max(10);
                    for eps in aa.radii(side) {
                        let config = aa.config(eps, classes).map_err(|e| EvalError::Option {
                            option: "--aa-*",
                            reason: e.to_string(),
                        })?;
                        let norm = serde_json::to_value(aa.norm)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        let mut previous: Option<String> = None;
                        for &attack in &config.attacks {
                            let key = format!("autoattack/{norm}/{}/{attack}", eps_key(eps));
                            parts.push(Part {
                                key: key.clone(),
                                work: Work::AutoAttack {
                                    items: items.clone(),
                                    attack,
                                    previous: previous.replace(key),
                                    config: Box::new(config.clone()),
                                },
                                confined: clean_confined,
                            });
                        }
                    }
                }
            }
        }
        Ok((parts, data))
    }

    /// The parts the options ask for and their units of work, without running anything (it
    /// lists the data sets): for checking a job's size before accepting it.
    pub fn plan_parts(&self) -> Result<Vec<PlannedPart>, EvalError> {
        Ok(self.plan()?.0.iter().map(Part::planned).collect())
    }

    /// Runs every part that is not stored yet, then writes `result.json` and the report.
    pub fn run(&mut self, observer: &dyn Observer) -> Result<EvalResult, EvalError> {
        let (parts, data) = self.plan()?;
        observer.planned(&parts.iter().map(Part::planned).collect::<Vec<_>>());
        let store = PartStore::open(
            &self.options.out,
            RunInfo {
                model: self.model_summary()?,
                shard: self.options.shard.to_string(),
                data,
            },
        )?;
        for part in parts {
            if store.has(&part.key) {
                observer.part_finished(&part.key, true);
                continue;
            }
            if observer.cancelled() {
                return Err(EvalError::Cancelled);
            }
            observer.part_started(&part.key, part.items());
            let mut run = PartRun {
                confined: part.confined,
                failures: Failures::default(),
                observer,
            };
            let tally = match &part.work {
                Work::Accuracy {
                    items,
                    prepare,
                    subset,
                    calibration,
                } => self.accuracy_part(items, prepare, subset.as_ref(), *calibration, &mut run),
                Work::Flips {
                    items,
                    frames,
                    noise,
                    step,
                } => self.flips_part(items, frames, *noise, *step, &mut run),
                Work::Attack { items, eps, pgd } => self.attack_part(items, *eps, *pgd, &mut run),
                Work::AutoAttack {
                    items,
                    attack,
                    previous,
                    config,
                } => {
                    let previous = match previous {
                        Some(key) => store.load_all()?.remove(key).map(|r| r.tally),
                        None => None,
                    };
                    let progress = Progress {
                        store: &store,
                        key: &part.key,
                    };
                    self.autoattack_part(items, *attack, previous, config, &mut run, progress)
                }
            };
            // A run stopped through the stop signal fails inside ONNX Runtime: that is the
            // cancellation, not an error of the evaluation.
            let tally = tally.map_err(|e| if observer.cancelled() { EvalError::Cancelled } else { e })?;
            let failures = run.failures;
            if failures.failed > 0 {
                tracing::warn!(
                    part = %part.key,
                    failed = failures.failed,
                    "{} item(s) could not be evaluated, e.g. {}",
                    failures.failed,
                    failures
                        .examples
                        .first()
                        .map_or_else(String::new, |f| format!("{}: {}", f.item, f.reason))
                );
            }
            store.save(&part.key, tally, failures)?;
            observer.part_finished(&part.key, false);
        }
        finish(&store)
    }

    /// Attaches `stop` to every session this evaluator builds: raising it (from any thread)
    /// makes the ONNX Runtime run in progress fail at once, so a cancelled run stops within
    /// one operator rather than one batch. The run then returns [`EvalError::Cancelled`] if
    /// its observer says it was cancelled.
    pub fn set_stop(&mut self, stop: StopSignal) {
        self.stop = Some(stop);
    }

    fn ensure_session(&mut self) -> Result<(), EvalError> {
        if self.session.is_none() {
            let session = ModelSession::load(self.runtime, self.artifact, &self.session_options)?;
            self.session = Some(match &self.stop {
                Some(stop) => session.with_stop(stop.clone()),
                None => session,
            });
        }
        Ok(())
    }

    /// The model's logits for `items` (one row per item, in order) on the clean suite's input:
    /// each file decoded, resized and cropped by the engine exactly as `hardy serve` does.
    /// For checking that an evaluation measures the pixels the server classifies, and for
    /// scripts that want the raw outputs. Any item that fails is the error (with a data root,
    /// its files must resolve under it).
    pub fn clean_logits(&mut self, items: &[Item]) -> Result<Vec<Vec<f32>>, EvalError> {
        self.ensure_session()?;
        let Evaluator {
            inputs,
            session,
            options,
            ..
        } = self;
        let session = session.as_mut().ok_or(EvalError::Internal("no session"))?;
        let mut rows: Vec<Vec<f32>> = vec![Vec::new(); items.len()];
        let work = Arc::clone(inputs);
        for batch in dataset::batches(items, options.batch, move |item| {
            Ok(work.tensor(item, &Prepare::Clean, true))
        }) {
            let mut positions = Vec::with_capacity(batch.len());
            let mut input = Vec::with_capacity(batch.len() * inputs.spec.tensor_len());
            for (position, prepared) in batch {
                input.extend_from_slice(&prepared?.map_err(ItemError::into_error)?);
                positions.push(position);
            }
            let logits = session.infer_any(&input, positions.len())?;
            for (row, position) in logits.rows().zip(positions) {
                rows[position] = row.to_vec();
            }
        }
        Ok(rows)
    }

    fn accuracy_part(
        &mut self,
        items: &[Item],
        prepare: &Prepare,
        subset: Option<&ClassSubset>,
        calibration: bool,
        run: &mut PartRun<'_>,
    ) -> Result<Tally, EvalError> {
        self.ensure_session()?;
        let Evaluator {
            inputs,
            session,
            options,
            ..
        } = self;
        let session = session.as_mut().ok_or(EvalError::Internal("no session"))?;
        let mut accuracy = metrics::Accuracy::default();
        let mut confidences = Vec::new();
        let mut correct = Vec::new();
        let work = (Arc::clone(inputs), prepare.clone(), run.confined);
        for batch in dataset::batches(items, options.batch, move |item| {
            Ok(work.0.tensor(item, &work.1, work.2))
        }) {
            let n = batch.len();
            let (input, labels) = gather(items, batch, inputs.spec.tensor_len(), &mut run.failures)?;
            if !labels.is_empty() {
                let logits = session.infer_any(&input, labels.len())?;
                for (row, &label) in logits.rows().zip(&labels) {
                    match subset {
                        // Only the subset's logits compete; labels are positions in the subset.
                        Some(subset) => accuracy.add(&subset.restrict(row), label),
                        None => {
                            accuracy.add(row, label);
                            if calibration {
                                let best = metrics::top1(row).unwrap_or(0);
                                confidences.push(softmax(row)[best]);
                                correct.push(best == label);
                            }
                        }
                    }
                }
            }
            run.observer.advanced(n);
            if run.observer.cancelled() {
                return Err(EvalError::Cancelled);
            }
        }
        Ok(Tally::Accuracy {
            accuracy,
            confidences,
            correct,
        })
    }

    fn flips_part(
        &mut self,
        items: &[Item],
        frames: &Frames,
        noise: bool,
        step: usize,
        run: &mut PartRun<'_>,
    ) -> Result<Tally, EvalError> {
        self.ensure_session()?;
        let Evaluator {
            inputs,
            session,
            options,
            ..
        } = self;
        let session = session.as_mut().ok_or(EvalError::Internal("no session"))?;
        let (mut videos, mut flip_sum, mut t5d_sum) = (0u64, 0.0f64, 0.0f64);
        // A sequence is one inference batch of its frames; decode a few sequences at a time.
        let per_batch = (options.batch / 16).max(1);
        let work = (Arc::clone(inputs), frames.clone(), run.confined);
        for batch in dataset::batches(items, per_batch, move |item| Ok(work.0.frames(item, &work.1, work.2))) {
            let n = batch.len();
            for (position, prepared) in batch {
                let item = items
                    .get(position)
                    .ok_or(EvalError::Internal("a batch position past the items"))?;
                let Some(frames) = settle(item, prepared, &mut run.failures)? else {
                    continue;
                };
                let count = frames.len();
                if count < 2 {
                    continue;
                }
                let input: Vec<f32> = frames.concat();
                let mut logits: Vec<Vec<f32>> = Vec::with_capacity(count);
                for chunk in input.chunks(options.batch.max(1) * inputs.spec.tensor_len()) {
                    let out = session.infer_any(chunk, chunk.len() / inputs.spec.tensor_len())?;
                    logits.extend(out.rows().map(<[f32]>::to_vec));
                }
                let top1: Vec<usize> = logits.iter().map(|l| metrics::top1(l).unwrap_or(0)).collect();
                flip_sum += metrics::flip_probability(&[top1], noise, step);
                t5d_sum += metrics::sequence_top5_distance(&[logits], noise, step);
                videos += 1;
            }
            run.observer.advanced(n);
            if run.observer.cancelled() {
                return Err(EvalError::Cancelled);
            }
        }
        Ok(Tally::Flips {
            videos,
            flip_sum,
            t5d_sum,
        })
    }

    fn ensure_attacker(&mut self) -> Result<(), EvalError> {
        if self.attacker.is_none() {
            let attacker = Attacker::load(self.runtime, self.artifact, &self.session_options)?;
            self.attacker = Some(match &self.stop {
                Some(stop) => attacker.with_stop(stop.clone()),
                None => attacker,
            });
        }
        Ok(())
    }

    fn attack_part(&mut self, items: &[Item], eps: f32, pgd: bool, run: &mut PartRun<'_>) -> Result<Tally, EvalError> {
        self.ensure_attacker()?;
        let Evaluator {
            inputs,
            attacker,
            options,
            ..
        } = self;
        let attacker = attacker.as_mut().ok_or(EvalError::Internal("no attacker"))?;
        let mut accuracy = metrics::Accuracy::default();
        let work = (Arc::clone(inputs), run.confined);
        for (batch_index, batch) in
            dataset::batches(items, options.batch, move |item| Ok(work.0.pixels(item, work.1))).enumerate()
        {
            let size = batch.len();
            let (pixels, labels) = gather(items, batch, inputs.spec.tensor_len(), &mut run.failures)?;
            let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let n = labels.len();
            if n > 0 {
                let outcome = if pgd {
                    let config = PgdConfig {
                        eps,
                        step_size: options
                            .pgd_step_size
                            .unwrap_or(2.5 * eps / options.pgd_steps.max(1) as f32),
                        steps: options.pgd_steps,
                        random_start: true,
                        seed: seed_for(options.seed, &[b"pgd", &(batch_index as u64).to_le_bytes()]),
                    };
                    attacker
                        .pgd_until(&pixels, n, Some(&labels), &config, &|| run.observer.cancelled())
                        .map_err(|e| match e {
                            crate::attack::AttackError::Stopped => EvalError::Cancelled,
                            e => e.into(),
                        })?
                } else {
                    attacker.fgsm(&pixels, n, Some(&labels), eps)?
                };
                for (row, &label) in outcome.adversarial_logits.chunks(outcome.classes).zip(&labels) {
                    accuracy.add(row, label as usize);
                }
            }
            run.observer.advanced(size);
            if run.observer.cancelled() {
                return Err(EvalError::Cancelled);
            }
        }
        Ok(Tally::Accuracy {
            accuracy,
            confidences: Vec::new(),
            correct: Vec::new(),
        })
    }
}

/// Where a long part logs its finished batches (see [`PartStore::append_progress`]).
struct Progress<'a> {
    store: &'a PartStore,
    key: &'a str,
}

/// One finished batch of an AutoAttack part, as its progress log holds it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AutoAttackBatch {
    /// The batch's images after the attack.
    samples: Vec<RobustSample>,
    /// Zero gradients seen in the batch.
    zero_gradients: u64,
    /// The model checks, on the batch that ran them (the first attack's first batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checks: Option<ModelChecks>,
}

impl Evaluator<'_> {
    /// One attack of an AutoAttack sequence: on every item for the first attack (which also
    /// records the clean predictions and runs the model checks), else on the items the
    /// `previous` part left robust; the others are carried over as they are. Each image's
    /// random draws come from its own seed (the run's seed and the item's key), so a shard
    /// measures exactly what the whole run measures for its images.
    fn autoattack_part(
        &mut self,
        items: &[Item],
        attack: AttackName,
        previous: Option<Tally>,
        config: &AutoAttackConfig,
        run: &mut PartRun<'_>,
        progress: Progress<'_>,
    ) -> Result<Tally, EvalError> {
        self.ensure_attacker()?;
        let Evaluator {
            inputs,
            attacker,
            options,
            ..
        } = self;
        let attacker = attacker.as_mut().ok_or(EvalError::Internal("no attacker"))?;
        let classes = attacker.classes();
        let mut config = config.clone();
        let targets = config.apgd.n_target_classes.min(classes.saturating_sub(1));
        config.apgd.n_target_classes = targets;
        config.fab.n_target_classes = targets;
        let first = previous.is_none();
        let mut samples: Vec<RobustSample> = Vec::with_capacity(items.len());
        let (mut zero_gradients, mut checks) = (0u64, ModelChecks::default());
        let todo: Vec<Item> = match previous {
            None => items.to_vec(),
            Some(Tally::Robust {
                samples: before,
                zero_gradients: z,
                checks: c,
            }) => {
                zero_gradients = z;
                checks = c;
                let robust: HashSet<&str> = before.iter().filter(|s| s.robust()).map(|s| s.item.as_str()).collect();
                samples.extend(before.iter().filter(|s| !s.robust()).cloned());
                run.observer.advanced(items.len() - robust.len());
                items
                    .iter()
                    .filter(|i| robust.contains(i.key.as_str()))
                    .cloned()
                    .collect()
            }
            Some(_) => return Err(EvalError::Internal("an AutoAttack part follows a part of another kind")),
        };
        // Batches an interrupted run of this part finished.
        let mut checked = !first;
        let mut resumed: HashSet<String> = HashSet::new();
        for batch in progress.store.progress::<AutoAttackBatch>(progress.key)? {
            zero_gradients += batch.zero_gradients;
            if let Some(c) = batch.checks {
                checks = c;
                checked = true;
            }
            for sample in batch.samples {
                if resumed.insert(sample.item.clone()) {
                    samples.push(sample);
                }
            }
        }
        let todo: Vec<Item> = if resumed.is_empty() {
            todo
        } else {
            run.observer.advanced(resumed.len());
            todo.into_iter().filter(|i| !resumed.contains(&i.key)).collect()
        };
        let len = inputs.spec.tensor_len();
        let shape = attacker.image_shape();
        let stop = || run.observer.cancelled();
        let work = (Arc::clone(inputs), run.confined);
        for batch in dataset::batches(&todo, options.batch, move |item| Ok(work.0.pixels(item, work.1))) {
            let size = batch.len();
            let (pixels, kept) = gather_items(&todo, batch, len, &mut run.failures)?;
            let labels: Vec<i64> = kept.iter().map(|i| i.label.unwrap_or(0) as i64).collect();
            let n = kept.len();
            if n > 0 {
                let from = samples.len();
                let mut logged = AutoAttackBatch {
                    samples: Vec::new(),
                    zero_gradients: 0,
                    checks: None,
                };
                let clean: Vec<usize> = if first {
                    if !checked {
                        checks = check_model(attacker, &pixels, n)?;
                        logged.checks = Some(checks.clone());
                        checked = true;
                    }
                    attacker
                        .logits(&pixels, n)?
                        .chunks_exact(classes.max(1))
                        .map(argmax)
                        .collect()
                } else {
                    // Robust so far: the clean prediction was the label.
                    labels.iter().map(|&l| l as usize).collect()
                };
                let robust: Vec<usize> = (0..n).filter(|&j| clean[j] as i64 == labels[j]).collect();
                let xs: Vec<f32> = robust
                    .iter()
                    .flat_map(|&j| pixels[j * len..(j + 1) * len].iter().copied())
                    .collect();
                let ys: Vec<i64> = robust.iter().map(|&j| labels[j]).collect();
                let seeds: Vec<u64> = robust
                    .iter()
                    .map(|&j| seed_for(options.seed, &[b"autoattack", kept[j].key.as_bytes()]))
                    .collect();
                let outcome = run_attack(attacker, attack, &xs, &ys, &seeds, &config, &stop).map_err(|e| match e {
                    crate::attack::AttackError::Stopped => EvalError::Cancelled,
                    e => e.into(),
                })?;
                zero_gradients += outcome.zero_gradients as u64;
                logged.zero_gradients = outcome.zero_gradients as u64;
                let mut fooled = vec![None; n];
                for (q, &j) in robust.iter().enumerate() {
                    if outcome.fooled[q] {
                        fooled[j] = Some(outcome.predictions[q]);
                        if options.autoattack.save_adversarial {
                            let name: String = kept[j]
                                .key
                                .chars()
                                .map(|c| {
                                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                                        c
                                    } else {
                                        '_'
                                    }
                                })
                                .collect();
                            let path = options
                                .out
                                .join("adversarial")
                                .join(format!("{:?}__{}", config.norm, eps_key(config.eps)))
                                .join(format!("{name}.png"));
                            write_png(&outcome.adversarial[q * len..(q + 1) * len], &shape, &path).map_err(
                                |reason| EvalError::Option {
                                    option: "--aa-save-adversarial",
                                    reason,
                                },
                            )?;
                        }
                    }
                }
                for (j, item) in kept.iter().enumerate() {
                    samples.push(RobustSample {
                        item: item.key.clone(),
                        label: labels[j] as usize,
                        clean: clean[j],
                        prediction: fooled[j].unwrap_or(clean[j]),
                        fooled_by: fooled[j].map(|_| attack),
                    });
                }
                logged.samples = samples[from..].to_vec();
                progress.store.append_progress(progress.key, &logged)?;
            }
            run.observer.advanced(size);
            let robust_now = samples.iter().filter(|s| s.robust()).count();
            run.observer.note(&format!("robust {robust_now}/{}", samples.len()));
            if run.observer.cancelled() {
                return Err(EvalError::Cancelled);
            }
        }
        Ok(Tally::Robust {
            samples,
            zero_gradients,
            checks,
        })
    }
}

/// One decoded batch as a contiguous input buffer (`len` values per item) and the items'
/// labels. Items that failed alone are left out and counted in `failures`; an item without a
/// label, or an error that is not about one item, is the run's error.
fn gather(
    items: &[Item],
    batch: dataset::Batch<Result<Vec<f32>, ItemError>>,
    len: usize,
    failures: &mut Failures,
) -> Result<(Vec<f32>, Vec<usize>), EvalError> {
    let (input, kept) = gather_items(items, batch, len, failures)?;
    Ok((input, kept.iter().filter_map(|item| item.label).collect()))
}

/// [`gather`], with the items kept (each has a label) rather than their labels.
fn gather_items<'i>(
    items: &'i [Item],
    batch: dataset::Batch<Result<Vec<f32>, ItemError>>,
    len: usize,
    failures: &mut Failures,
) -> Result<(Vec<f32>, Vec<&'i Item>), EvalError> {
    let mut input = Vec::with_capacity(batch.len() * len);
    let mut kept = Vec::with_capacity(batch.len());
    for (position, prepared) in batch {
        let item = items
            .get(position)
            .ok_or(EvalError::Internal("a batch position past the items"))?;
        if item.label.is_none() {
            return Err(EvalError::Unlabelled { key: item.key.clone() });
        }
        if let Some(values) = settle(item, prepared, failures)? {
            input.extend_from_slice(&values);
            kept.push(item);
        }
    }
    Ok((input, kept))
}

/// Recomputes `result.json` and the report from what `store` holds.
fn finish(store: &PartStore) -> Result<EvalResult, EvalError> {
    let info = store.info();
    let result = summarise(
        info.model.clone(),
        info.shard.clone(),
        info.data.clone(),
        &store.load_all()?,
    );
    write_json(&store.root().join("result.json"), &result)?;
    report::write(&result, store.root())?;
    Ok(result)
}

/// `hardy eval merge`: adds up the parts of the shard directories `inputs` (all `n` shards of
/// one evaluation of one model) into `out`, then writes its result and report.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<EvalResult, EvalError> {
    let first = inputs.first().ok_or(EvalError::Option {
        option: "merge",
        reason: "no shard directories given".into(),
    })?;
    let first_info: RunInfo = read_json(&first.join("run.json"))?;
    let mut shards = BTreeSet::new();
    let mut count = None;
    let mut merged: BTreeMap<String, PartRecord> = BTreeMap::new();
    let mut keys: Option<BTreeSet<String>> = None;
    let mut data = BTreeMap::new();
    for dir in inputs {
        let run = dir.join("run.json");
        let info: RunInfo = read_json(&run)?;
        if info.model.fingerprint != first_info.model.fingerprint {
            return Err(EvalError::Mismatch {
                path: run,
                reason: format!("model {} differs from {}'s", info.model.path, first.display()),
            });
        }
        let shard: Shard = info.shard.parse()?;
        if *count.get_or_insert(shard.count) != shard.count || !shards.insert(shard.index) {
            return Err(EvalError::Mismatch {
                path: run,
                reason: format!("shard {shard} does not fit the others (duplicate, or another split)"),
            });
        }
        data.extend(info.data);
        let parts = load_parts(dir, &info.model.fingerprint)?;
        let these: BTreeSet<String> = parts.keys().cloned().collect();
        if let Some(keys) = &keys
            && *keys != these
        {
            let missing: Vec<_> = keys.symmetric_difference(&these).cloned().collect();
            return Err(EvalError::Mismatch {
                path: dir.clone(),
                reason: format!(
                    "finished parts differ from the other shards' ({}); finish it first",
                    missing.join(", ")
                ),
            });
        }
        keys = Some(these);
        for (key, record) in parts {
            match merged.get_mut(&key) {
                Some(sum) => sum.merge(&record).map_err(|reason| EvalError::Mismatch {
                    path: dir.clone(),
                    reason: format!("part {key}: {reason}"),
                })?,
                None => {
                    merged.insert(key, record);
                }
            }
        }
    }
    let n = count.unwrap_or(1);
    let missing: Vec<String> = (0..n)
        .filter(|i| !shards.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(EvalError::Option {
            option: "merge",
            reason: format!("shards {} are missing", missing.join(", ")),
        });
    }
    let store = PartStore::open(
        out,
        RunInfo {
            model: first_info.model,
            shard: format!("merged:{n}"),
            data,
        },
    )?;
    for (key, record) in merged {
        let failures = record.failures();
        store.save(&key, record.tally, failures)?;
    }
    finish(&store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_and_bad_names_are_named() {
        assert_eq!("fgsm".parse::<Suite>().unwrap(), Suite::Fgsm);
        assert_eq!(" C ".parse::<Suite>().unwrap(), Suite::C);
        let err = "imagenet-c".parse::<Suite>().unwrap_err().to_string();
        assert!(err.contains("imagenet-c") && err.contains("clean, c, p"), "{err}");
    }

    #[test]
    fn seeds_differ_per_item_and_part() {
        let a = seed_for(0, &[b"x.png", b"fog", &[1]]);
        assert_eq!(a, seed_for(0, &[b"x.png", b"fog", &[1]]));
        assert_ne!(a, seed_for(0, &[b"x.png", b"fog", &[2]]));
        assert_ne!(a, seed_for(1, &[b"x.png", b"fog", &[1]]));
        assert_ne!(seed_for(0, &[b"ab", b"c"]), seed_for(0, &[b"a", b"bc"]));
    }

    #[test]
    fn eps_keys_tell_small_eps_apart() {
        assert_ne!(eps_key(1.0 / 255.0), eps_key(2.0 / 255.0));
        assert_eq!(eps_key(0.0), "0.000000");
    }

    fn inputs(data_root: Option<PathBuf>) -> Inputs {
        Inputs {
            spec: PreprocessSpec::imagenet(32),
            limits: ImageLimits::default(),
            corruptor: None,
            seed: 0,
            jpeg_quality: None,
            data_root,
        }
    }

    fn file_item(key: &str, path: PathBuf) -> Item {
        Item {
            key: key.into(),
            label: Some(1),
            source: ItemSource::File(path),
        }
    }

    fn jpeg_bytes() -> Vec<u8> {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    /// A malformed, truncated, empty or missing file fails its item alone, with a reason that
    /// names no absolute path; the batch keeps the good items and counts the others.
    #[test]
    fn bad_files_fail_alone_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = jpeg_bytes();
        let files: [(&str, &[u8]); 4] = [
            ("good.jpg", &jpeg),
            ("truncated.jpg", &jpeg[..jpeg.len() / 2]),
            ("garbage.png", b"\x89PNG\r\n\x1a\nnot really a png at all"),
            ("empty.png", b""),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let items: Vec<Item> = ["good.jpg", "truncated.jpg", "garbage.png", "empty.png", "missing.png"]
            .iter()
            .map(|n| file_item(&format!("1/{n}"), dir.path().join(n)))
            .collect();
        let inputs = inputs(None);
        let tensors: Vec<Result<Vec<f32>, ItemError>> =
            items.iter().map(|i| inputs.tensor(i, &Prepare::Clean, true)).collect();
        assert_eq!(tensors[0].as_ref().ok().map(Vec::len), Some(3 * 32 * 32));
        let tmp = dir.path().display().to_string();
        for (item, tensor) in items.iter().zip(&tensors).skip(1) {
            match tensor {
                Err(ItemError::Failed { reason, error }) => {
                    assert!(!reason.is_empty() && !reason.contains(&tmp), "{}: {reason}", item.key);
                    assert!(error.to_string().contains(&tmp), "{error}");
                }
                Err(ItemError::Run(e)) => panic!("{}: failed the run: {e}", item.key),
                Ok(_) => panic!("{} was evaluated", item.key),
            }
        }
        let reason = |i: usize| match &tensors[i] {
            Err(ItemError::Failed { reason, .. }) => reason.clone(),
            _ => String::new(),
        };
        assert!(reason(1).contains("truncated"), "{}", reason(1));
        assert!(reason(4).contains("No such file"), "{}", reason(4));

        // gather: the good item goes in, the failed ones are counted with their reasons.
        let batch: dataset::Batch<Result<Vec<f32>, ItemError>> =
            tensors.into_iter().enumerate().map(|(i, t)| (i, Ok(t))).collect();
        let mut failures = Failures::default();
        let (input, labels) = gather(&items, batch, 3 * 32 * 32, &mut failures).unwrap();
        assert_eq!((input.len(), labels), (3 * 32 * 32, vec![1]));
        assert_eq!(failures.failed, 4);
        let failed: Vec<&str> = failures.examples.iter().map(|f| f.item.as_str()).collect();
        assert_eq!(
            failed,
            ["1/truncated.jpg", "1/garbage.png", "1/empty.png", "1/missing.png"]
        );

        // An unlabelled item, or an error that is not about the item, still fails the run.
        let mut unlabelled = items[0].clone();
        unlabelled.label = None;
        let batch = vec![(0, Ok(Ok(vec![0.0; 4])))];
        let err = gather(&[unlabelled], batch, 4, &mut failures).unwrap_err();
        assert!(matches!(err, EvalError::Unlabelled { .. }), "{err}");
        let batch = vec![(0, Ok(Err(ItemError::Run(EvalError::Internal("boom")))))];
        assert!(gather(&items[..1], batch, 4, &mut failures).is_err());
        assert_eq!(failures.failed, 4);
    }

    /// With a data root, an item's file must resolve under it: a symlink pointing out fails
    /// that item; unconfined items (named sets) are read wherever they are.
    #[cfg(unix)]
    #[test]
    fn confined_items_and_paths_stay_under_the_data_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("1")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("1/inside.jpg"), jpeg_bytes()).unwrap();
        std::fs::write(outside.join("secret.jpg"), jpeg_bytes()).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.jpg"), root.join("1/link.jpg")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let canonical = root.canonicalize().unwrap();
        let inputs = inputs(Some(canonical.clone()));

        let inside = file_item("1/inside.jpg", root.join("1/inside.jpg"));
        assert!(inputs.tensor(&inside, &Prepare::Clean, true).is_ok());
        let link = file_item("1/link.jpg", root.join("1/link.jpg"));
        match inputs.tensor(&link, &Prepare::Clean, true) {
            Err(ItemError::Failed { reason, error }) => {
                assert_eq!(reason, "outside the data root");
                assert!(matches!(*error, EvalError::OutsideDataRoot { .. }), "{error}");
            }
            Err(ItemError::Run(e)) => panic!("failed the run: {e}"),
            Ok(_) => panic!("a symlink out of the data root was read"),
        }
        assert!(
            inputs.tensor(&link, &Prepare::Clean, false).is_ok(),
            "unconfined items are not checked"
        );
        assert!(
            self::inputs(None).tensor(&link, &Prepare::Clean, true).is_ok(),
            "no data root: anywhere"
        );

        assert_eq!(
            confine(&canonical, "c_data", &root.join("1")).unwrap(),
            canonical.join("1")
        );
        for (path, needle) in [
            (outside.clone(), "is outside the data root"),
            (root.join("escape"), "is outside the data root"),
            (root.join("1/../../outside"), "is outside the data root"),
            (root.join("nope"), "No such file"),
        ] {
            let err = confine(&canonical, "c_data", &path).unwrap_err().to_string();
            assert!(err.starts_with("c_data: ") && err.contains(needle), "{err}");
        }
        assert!(is_named_set(Path::new("fashion-mnist:test")) && is_named_set(Path::new("foolbox:imagenet")));
        assert!(!is_named_set(Path::new("/data/fashion-mnist:test")) && !is_named_set(&root));
    }

    #[test]
    fn jpeg_round_trip_keeps_size_and_changes_little() {
        let img = RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 128]));
        let out = jpeg_roundtrip_image(&img, 85);
        assert_eq!(out.dimensions(), (32, 24));
        let diff: f64 = img
            .as_raw()
            .iter()
            .zip(out.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / img.as_raw().len() as f64;
        assert!(diff > 0.0 && diff < 6.0, "mean abs difference {diff}");
    }

    /// The round trip gives the pixels Pillow decodes from its own file (reference written by
    /// `scripts/make_jpeg_reference.py`: a 100x70 crop saved at quality 90 and reopened).
    #[test]
    fn jpeg_round_trip_is_pillows() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corrupt/tests/data/corrupt");
        let src = image::open(data.join("input224.png")).unwrap().to_rgb8();
        let crop = image::imageops::crop_imm(&src, 10, 120, 100, 70).to_image();
        let pillow = image::open(data.join("jpeg/roundtrip_q90_100x70.png"))
            .unwrap()
            .to_rgb8();
        assert!(jpeg_roundtrip_image(&crop, 90) == pillow);
    }
}
