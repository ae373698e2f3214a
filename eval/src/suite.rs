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

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use engine::{
    artifact::ModelArtifact,
    classify::softmax,
    preprocess::{Exif, ImageLimits, PreprocessSpec, resize_crop, to_tensor},
    runtime::Runtime,
    session::{ModelSession, SessionOptions},
};
use image::RgbImage;

use crate::{
    Corruption, EvalError, Perturbation,
    attack::{Attacker, PgdConfig},
    corrupt::{Corruptor, FrostSource, ops::jpeg_roundtrip_image},
    dataset::{self, ClassMap, Item, ItemSource, Shard},
    metrics, perturb, report,
    result::{EvalResult, ModelSummary, Tally, summarise},
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
            other => {
                return Err(EvalError::Option {
                    option: "--suite",
                    reason: format!("unknown suite `{other}`; known: clean, c, p, a, r, fgsm, pgd"),
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
            frost: None,
            jpeg_quality: Some(85),
            batch: 32,
            shard: Shard { index: 0, count: 1 },
            seed: 0,
            limit: None,
            out,
        }
    }
}

/// Receives progress; the CLI draws bars with it, tests ignore it.
pub trait Observer: Sync {
    /// A part starts with `items` units of work (images or sequences).
    fn part_started(&self, _key: &str, _items: usize) {}
    /// `n` more units are done.
    fn advanced(&self, _n: usize) {}
    /// A part is finished (`resumed`: it was already stored and was skipped).
    fn part_finished(&self, _key: &str, _resumed: bool) {}
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
}

struct Part {
    key: String,
    work: Work,
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

/// Turns items into model input; shared by the decoding threads.
struct Inputs {
    spec: PreprocessSpec,
    limits: ImageLimits,
    corruptor: Option<Corruptor>,
    seed: u64,
    jpeg_quality: Option<u8>,
}

impl Inputs {
    /// The item's image, resized and cropped as the model's preprocessing says (and corrupted
    /// when asked), before normalisation.
    fn image(&self, item: &Item, prepare: &Prepare) -> Result<RgbImage, EvalError> {
        let img = item.load(&self.limits, Exif::from_flag(self.spec.exif_orientation))?;
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
    fn tensor(&self, item: &Item, prepare: &Prepare) -> Result<Vec<f32>, EvalError> {
        let img = self.image(item, prepare)?;
        self.normalise(&img)
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
    fn frames(&self, item: &Item, frames: &Frames) -> Result<Vec<Vec<f32>>, EvalError> {
        let images = match (frames, &item.source) {
            (Frames::Video, ItemSource::File(path)) => perturb::read_video(path)?,
            (Frames::Video, _) => return Err(EvalError::Internal("a video item that is not a file")),
            (Frames::Generate(p, d), _) => {
                let img = item.load(&self.limits, Exif::from_flag(self.spec.exif_orientation))?;
                // The sequences start from the resized (uncropped) image, as ImageNet-P's
                // generator starts from the 256-pixel image.
                let (w, h) = self.spec.resized_size(img.width(), img.height());
                let mut whole = self.spec.clone();
                whole.crop_width = w;
                whole.crop_height = h;
                let resized = resize_crop(&img, &whole)?;
                let crop = self.spec.crop_width.min(self.spec.crop_height);
                let seed = seed_for(self.seed, &[item.key.as_bytes(), p.name().as_bytes(), &[*d]]);
                perturb::sequence(&resized, *p, *d, seed, crop)?
            }
        };
        images.iter().map(|f| self.normalise(f)).collect()
    }

    /// The [0, 1] pixel tensor an attack starts from.
    fn pixels(&self, item: &Item) -> Result<Vec<f32>, EvalError> {
        let img = self.image(item, &Prepare::Clean)?;
        let mut out = vec![0.0f32; self.spec.tensor_len()];
        crate::attack::pixels(&img, &self.spec, &mut out)?;
        Ok(out)
    }
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
        let corruptor = if options.suites.contains(&Suite::C) && options.c_data.is_none() {
            Some(Corruptor::new(options.frost.clone())?)
        } else {
            None
        };
        let inputs = Inputs {
            spec: artifact.config.preprocess_spec(),
            limits: ImageLimits::default(),
            corruptor,
            seed: options.seed,
            jpeg_quality: options.jpeg_quality,
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
        let items = self.select(DataSource::resolve(path)?.items(&self.classes)?);
        *cache = Some(items.clone());
        Ok(items)
    }

    /// Every part the options ask for, and where each suite's data comes from.
    fn plan(&self) -> Result<(Vec<Part>, BTreeMap<String, String>), EvalError> {
        let o = &self.options;
        let mut parts = Vec::new();
        let mut data = BTreeMap::new();
        let mut clean: Option<Vec<Item>> = None;
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
                        });
                    }
                }
            }
        }
        Ok((parts, data))
    }

    /// Runs every part that is not stored yet, then writes `result.json` and the report.
    pub fn run(&mut self, observer: &dyn Observer) -> Result<EvalResult, EvalError> {
        let (parts, data) = self.plan()?;
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
            let count = match &part.work {
                Work::Accuracy { items, .. } | Work::Flips { items, .. } | Work::Attack { items, .. } => items.len(),
            };
            observer.part_started(&part.key, count);
            let tally = match &part.work {
                Work::Accuracy {
                    items,
                    prepare,
                    subset,
                    calibration,
                } => self.accuracy_part(items, prepare, subset.as_ref(), *calibration, observer)?,
                Work::Flips {
                    items,
                    frames,
                    noise,
                    step,
                } => self.flips_part(items, frames, *noise, *step, observer)?,
                Work::Attack { items, eps, pgd } => self.attack_part(items, *eps, *pgd, observer)?,
            };
            store.save(&part.key, tally)?;
            observer.part_finished(&part.key, false);
        }
        finish(&store)
    }

    fn ensure_session(&mut self) -> Result<(), EvalError> {
        if self.session.is_none() {
            self.session = Some(ModelSession::load(self.runtime, self.artifact, &self.session_options)?);
        }
        Ok(())
    }

    /// The model's logits for `items` (one row per item, in order) on the clean suite's input:
    /// each file decoded, resized and cropped by the engine exactly as `hardy serve` does.
    /// For checking that an evaluation measures the pixels the server classifies, and for
    /// scripts that want the raw outputs.
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
        for batch in dataset::batches(items, options.batch, move |item| Ok(work.tensor(item, &Prepare::Clean))) {
            let mut positions = Vec::with_capacity(batch.len());
            let mut input = Vec::with_capacity(batch.len() * inputs.spec.tensor_len());
            for (position, prepared) in batch {
                input.extend_from_slice(&prepared??);
                positions.push(position);
            }
            let logits = session.infer(&input, positions.len())?;
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
        observer: &dyn Observer,
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
        let work = (Arc::clone(inputs), prepare.clone());
        for batch in dataset::batches(items, options.batch, move |item| Ok(work.0.tensor(item, &work.1))) {
            let (input, labels) = gather(items, batch, inputs.spec.tensor_len())?;
            let logits = session.infer(&input, labels.len())?;
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
            observer.advanced(labels.len());
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
        observer: &dyn Observer,
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
        let work = (Arc::clone(inputs), frames.clone());
        for batch in dataset::batches(items, per_batch, move |item| Ok(work.0.frames(item, &work.1))) {
            let n = batch.len();
            for (_, prepared) in batch {
                let frames = prepared??;
                let count = frames.len();
                if count < 2 {
                    continue;
                }
                let input: Vec<f32> = frames.concat();
                let mut logits: Vec<Vec<f32>> = Vec::with_capacity(count);
                for chunk in input.chunks(options.batch.max(1) * inputs.spec.tensor_len()) {
                    let out = session.infer(chunk, chunk.len() / inputs.spec.tensor_len())?;
                    logits.extend(out.rows().map(<[f32]>::to_vec));
                }
                let top1: Vec<usize> = logits.iter().map(|l| metrics::top1(l).unwrap_or(0)).collect();
                flip_sum += metrics::flip_probability(&[top1], noise, step);
                t5d_sum += metrics::sequence_top5_distance(&[logits], noise, step);
                videos += 1;
            }
            observer.advanced(n);
        }
        Ok(Tally::Flips {
            videos,
            flip_sum,
            t5d_sum,
        })
    }

    fn attack_part(
        &mut self,
        items: &[Item],
        eps: f32,
        pgd: bool,
        observer: &dyn Observer,
    ) -> Result<Tally, EvalError> {
        if self.attacker.is_none() {
            self.attacker = Some(Attacker::load(self.runtime, self.artifact, &self.session_options)?);
        }
        let Evaluator {
            inputs,
            attacker,
            options,
            ..
        } = self;
        let attacker = attacker.as_mut().ok_or(EvalError::Internal("no attacker"))?;
        let mut accuracy = metrics::Accuracy::default();
        let work = Arc::clone(inputs);
        for (batch_index, batch) in
            dataset::batches(items, options.batch, move |item| Ok(work.pixels(item))).enumerate()
        {
            let (pixels, labels) = gather(items, batch, inputs.spec.tensor_len())?;
            let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let n = labels.len();
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
                attacker.pgd(&pixels, n, Some(&labels), &config)?
            } else {
                attacker.fgsm(&pixels, n, Some(&labels), eps)?
            };
            for (row, &label) in outcome.adversarial_logits.chunks(outcome.classes).zip(&labels) {
                accuracy.add(row, label as usize);
            }
            observer.advanced(n);
        }
        Ok(Tally::Accuracy {
            accuracy,
            confidences: Vec::new(),
            correct: Vec::new(),
        })
    }
}

/// One decoded batch as a contiguous input buffer (`len` values per item) and the items'
/// labels; the first item that failed to load, or has no label, is the error.
fn gather(
    items: &[Item],
    batch: dataset::Batch<Result<Vec<f32>, EvalError>>,
    len: usize,
) -> Result<(Vec<f32>, Vec<usize>), EvalError> {
    let mut input = Vec::with_capacity(batch.len() * len);
    let mut labels = Vec::with_capacity(batch.len());
    for (position, prepared) in batch {
        let item = &items[position];
        input.extend_from_slice(&prepared??);
        labels.push(
            item.label
                .ok_or_else(|| EvalError::Unlabelled { key: item.key.clone() })?,
        );
    }
    Ok((input, labels))
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
    let mut merged: BTreeMap<String, Tally> = BTreeMap::new();
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
        for (key, tally) in parts {
            match merged.get_mut(&key) {
                Some(sum) => sum.merge(&tally).map_err(|reason| EvalError::Mismatch {
                    path: dir.clone(),
                    reason: format!("part {key}: {reason}"),
                })?,
                None => {
                    merged.insert(key, tally);
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
    for (key, tally) in merged {
        store.save(&key, tally)?;
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
