//! Noisy Student (Xie et al. 2020), driven by one config file: train a teacher on the
//! labelled images, let the un-noised teacher label the unlabelled ones, keep the confident
//! ones and balance the classes, train a noised student on both, and let the student teach
//! the next iteration. Every stage writes its artefacts under the run directory and a
//! `done.json`; a rerun skips finished stages and resumes the unfinished one.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::checkpoint::{RunDir, load_weights, write_atomic, write_json};
use crate::config::TrainConfig;
use crate::data::{self, DataError, ImageSet, LabelledSize, Normalize};
use crate::evaluate::{argmax, evaluate, predict_probs};
use crate::model::{Classifier, ModelSpec};
use crate::objective::PseudoLabelled;
use crate::train::{TrainData, train};

/// Where the images come from: the `[data.source]` table of a config (`format = ...`).
///
/// Every form names data sets in Hardy's one data set grammar ([`::data::DataSource`], what
/// `hardy eval --data` takes), through [`DataSource::sets`], and is read by
/// [`data::read_source`]: `fashion-mnist`, an IDX file or an ImageFolder tree are the same
/// images, in the same order, in training and in evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSource {
    /// Fashion-MNIST from Debian's `dataset-fashion-mnist`: the installed copy, or the package
    /// fetched into Hardy's cache (see `data::fetch::fashion_mnist`); the sets
    /// `fashion-mnist:train` and `fashion-mnist:test`.
    FashionMnist,
    /// MNIST-style IDX files (optionally gzipped).
    Idx {
        /// Training images.
        train_images: PathBuf,
        /// Training labels.
        train_labels: PathBuf,
        /// Test images.
        test_images: PathBuf,
        /// Test labels.
        test_labels: PathBuf,
        /// Class names (default "0".."9").
        #[serde(default)]
        class_names: Vec<String>,
    },
    /// ImageFolder trees (`root/<class>/<image>`), resized to `size`.
    Folder {
        /// Labelled training images.
        train: PathBuf,
        /// Labelled test images.
        test: PathBuf,
        /// Extra unlabelled images (a flat folder), if any.
        #[serde(default)]
        unlabelled: Option<PathBuf>,
        /// Square side images are resized to.
        size: u32,
        /// 1 (grey) or 3 (RGB).
        channels: usize,
    },
    /// Data sets written as `hardy eval --data` takes them: a named set
    /// (`fashion-mnist:train`), an IDX image file (its label file found beside it), an
    /// ImageFolder tree or a flat folder of labelled files (`imagenet_07_559.jpg`).
    Sets {
        /// The labelled training set.
        train: PathBuf,
        /// The labelled test set.
        test: PathBuf,
        /// Extra unlabelled images (a folder, read recursively), if any.
        #[serde(default)]
        unlabelled: Option<PathBuf>,
        /// Square side folder images are resized to (IDX images keep their size).
        #[serde(default)]
        size: Option<u32>,
        /// 1 (grey) or 3 (RGB) for folder images (IDX images are grey).
        #[serde(default)]
        channels: Option<usize>,
        /// Class names of IDX files and labelled files (default: the named set's, else "0",
        /// "1", ...); folders name their own classes.
        #[serde(default)]
        class_names: Vec<String>,
    },
}

/// The data sets a [`DataSource`] names, in Hardy's data set grammar, and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sets {
    /// The labelled training set.
    pub train: ::data::DataSource,
    /// The labelled test set.
    pub test: ::data::DataSource,
    /// Extra unlabelled images (a folder), if any.
    pub unlabelled: Option<PathBuf>,
    /// Square side folder images are resized to.
    pub size: Option<u32>,
    /// Channels folder images are read with.
    pub channels: Option<usize>,
    /// Class names of IDX files and labelled files; empty: "0", "1", ...
    pub class_names: Vec<String>,
}

/// [`::data::DataSource::resolve`], a failed download reported as one.
fn resolve(path: &Path) -> Result<::data::DataSource, TrainerError> {
    ::data::DataSource::resolve(path).map_err(|e| match e {
        ::data::DatasetError::Provision(e) => TrainerError::Provision(e),
        other => DataError::from(other).into(),
    })
}

impl DataSource {
    /// The data sets this source names, in the grammar `hardy eval --data` takes; named sets
    /// are fetched (`fashion-mnist`: Debian's package, on first use).
    pub fn sets(&self) -> Result<Sets, TrainerError> {
        Ok(match self {
            DataSource::FashionMnist => Sets {
                train: resolve(Path::new("fashion-mnist:train"))?,
                test: resolve(Path::new("fashion-mnist:test"))?,
                unlabelled: None,
                size: None,
                channels: None,
                class_names: data::FASHION_MNIST_CLASSES.map(String::from).to_vec(),
            },
            DataSource::Idx {
                train_images,
                train_labels,
                test_images,
                test_labels,
                class_names,
            } => Sets {
                train: ::data::DataSource::Idx {
                    images: train_images.clone(),
                    labels: Some(train_labels.clone()),
                },
                test: ::data::DataSource::Idx {
                    images: test_images.clone(),
                    labels: Some(test_labels.clone()),
                },
                unlabelled: None,
                size: None,
                channels: None,
                class_names: class_names.clone(),
            },
            DataSource::Folder {
                train,
                test,
                unlabelled,
                size,
                channels,
            } => Sets {
                train: ::data::DataSource::ImageFolder(train.clone()),
                test: ::data::DataSource::ImageFolder(test.clone()),
                unlabelled: unlabelled.clone(),
                size: Some(*size),
                channels: Some(*channels),
                class_names: Vec::new(),
            },
            DataSource::Sets {
                train,
                test,
                unlabelled,
                size,
                channels,
                class_names,
            } => Sets {
                train: resolve(train)?,
                test: resolve(test)?,
                unlabelled: unlabelled.clone(),
                size: *size,
                channels: *channels,
                class_names: match ::data::source::named_class_names(train) {
                    Some(named) if class_names.is_empty() => named.iter().map(|s| s.to_string()).collect(),
                    _ => class_names.clone(),
                },
            },
        })
    }
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The files.
    pub source: DataSource,
    /// Keep only this many labels per class from the training set; the rest of the
    /// training images become unlabelled data (their labels are dropped). `None` keeps all.
    #[serde(default)]
    pub labelled_per_class: Option<usize>,
    /// Use at most this many unlabelled images (the first ones after the split); for quick
    /// runs and tests.
    #[serde(default)]
    pub unlabelled_limit: Option<usize>,
    /// Seed of the labelled/unlabelled split.
    #[serde(default)]
    pub split_seed: u64,
    /// Per-channel mean in [0, 1] units; default: measured on the labelled images.
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation; default: measured on the labelled images.
    #[serde(default)]
    pub std: Option<Vec<f32>>,
}

/// Labelled, unlabelled and test images, loaded.
pub struct LoadedData {
    /// Labelled training images.
    pub labelled: ImageSet,
    /// Unlabelled images (labels dropped).
    pub unlabelled: ImageSet,
    /// Labelled test images.
    pub test: ImageSet,
    /// Normalisation used for training, evaluation and export.
    pub normalize: Normalize,
}

impl DataConfig {
    /// Reads the images and makes the split.
    pub fn load(&self) -> Result<LoadedData, TrainerError> {
        let sets = self.source.sets()?;
        let names: Vec<&str> = sets.class_names.iter().map(String::as_str).collect();
        let names = (!names.is_empty()).then_some(&names[..]);
        let train_set = data::read_source(&sets.train, sets.size, sets.channels, names)?;
        let test = data::read_source(&sets.test, sets.size, sets.channels, names)?;
        let extra = match &sets.unlabelled {
            Some(dir) => {
                let (Some(size), Some(channels)) = (sets.size, sets.channels) else {
                    return Err(DataError::Invalid(format!(
                        "{}: unlabelled images need an image `size` and `channels` to be read at",
                        dir.display()
                    ))
                    .into());
                };
                Some(data::read_unlabelled_folder(dir, size, channels)?)
            }
            None => None,
        };
        let (labelled, mut unlabelled) = match self.labelled_per_class {
            Some(n) => {
                let (l, u) = train_set.split_labelled(LabelledSize::PerClass(n), self.split_seed)?;
                (l, u.without_labels())
            }
            None => {
                let empty = train_set.subset(&[])?;
                (train_set, empty)
            }
        };
        if let Some(extra) = extra {
            unlabelled = if unlabelled.is_empty() {
                extra
            } else {
                unlabelled.concat(&extra)?
            };
        }
        if let Some(limit) = self.unlabelled_limit
            && unlabelled.len() > limit
        {
            let keep: Vec<usize> = (0..limit).collect();
            unlabelled = unlabelled.subset(&keep)?;
        }
        let measured = Normalize::from_set(&labelled);
        let normalize = Normalize::new(
            self.mean.clone().unwrap_or(measured.mean),
            self.std.clone().unwrap_or(measured.std),
        )?;
        Ok(LoadedData {
            labelled,
            unlabelled,
            test,
            normalize,
        })
    }
}

/// How the teacher's outputs become training targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PseudoLabelConfig {
    /// Softmax temperature of soft labels; 0 or less gives hard (one-hot argmax) labels.
    pub temperature: f64,
    /// Images whose top probability is below this are dropped (0.3 in the paper).
    pub confidence_threshold: f32,
    /// Balance classes to this many images each: the most confident are kept, classes with
    /// fewer are filled by duplicating their images. 0: no balancing.
    pub images_per_class: usize,
}

impl Default for PseudoLabelConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            confidence_threshold: 0.3,
            images_per_class: 0,
        }
    }
}

/// A model and how to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The architecture.
    pub model: ModelSpec,
    /// The training run.
    pub train: TrainConfig,
}

/// A whole Noisy Student experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoisyStudentConfig {
    /// Images.
    pub data: DataConfig,
    /// The first teacher (trained on labelled images only, without RandAugment if you follow
    /// the paper's teacher recipe).
    pub teacher: StageConfig,
    /// The student of every iteration (noised: RandAugment, dropout, stochastic depth).
    pub student: StageConfig,
    /// Pseudo-labelling.
    #[serde(default)]
    pub pseudo: PseudoLabelConfig,
    /// Teacher -> student iterations (the student becomes the next teacher).
    #[serde(default = "one")]
    pub iterations: usize,
}

fn one() -> usize {
    1
}

impl NoisyStudentConfig {
    /// Parses and checks a TOML config.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, TrainerError> {
        let c: Self = toml::from_str(text).map_err(|e| TrainerError::ConfigFile {
            file: source.to_string(),
            reason: e.to_string(),
        })?;
        c.teacher.train.validate()?;
        c.student.train.validate()?;
        if c.iterations == 0 {
            return Err(TrainerError::invalid(source, "iterations", 0, "must be > 0"));
        }
        let (teacher, student) = (c.teacher.model.num_classes(), c.student.model.num_classes());
        if teacher != student {
            return Err(TrainerError::invalid(
                source,
                "student.model.num_classes",
                student,
                format!("the teacher has {teacher} classes; teacher and student need the same classes"),
            ));
        }
        Ok(c)
    }
}

/// Filters and balances the teacher's predictions; returns the kept image indices (with
/// repetitions when balancing duplicates) and the per-class counts before balancing.
pub fn select_pseudo_labels(probs: &[f32], classes: usize, config: &PseudoLabelConfig) -> (Vec<usize>, Vec<usize>) {
    let mut per_class: Vec<Vec<(usize, f32)>> = vec![Vec::new(); classes];
    for (i, row) in probs.chunks(classes).enumerate() {
        let c = argmax(row);
        let p = row[c];
        if p >= config.confidence_threshold {
            per_class[c].push((i, p));
        }
    }
    let counts: Vec<usize> = per_class.iter().map(Vec::len).collect();
    let mut kept = Vec::new();
    for mut items in per_class {
        items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let n = config.images_per_class;
        if n == 0 {
            kept.extend(items.iter().map(|x| x.0));
        } else if items.len() >= n {
            kept.extend(items.iter().take(n).map(|x| x.0));
        } else if !items.is_empty() {
            kept.extend((0..n).map(|k| items[k % items.len()].0));
        }
    }
    (kept, counts)
}

/// Turns teacher probabilities into targets: re-normalised soft rows, or one-hot rows.
fn targets_for(probs: &[f32], classes: usize, kept: &[usize], hard: bool) -> Vec<f32> {
    let mut t = Vec::with_capacity(kept.len() * classes);
    for &i in kept {
        let row = &probs[i * classes..(i + 1) * classes];
        if hard {
            let c = argmax(row);
            t.extend((0..classes).map(|k| if k == c { 1.0 } else { 0.0 }));
        } else {
            t.extend_from_slice(row);
        }
    }
    t
}

/// What a finished stage reports (`done.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    /// `teacher` or `student-N`.
    pub stage: String,
    /// Top-1 on the test images.
    pub test_top1: f64,
    /// Parameters of the model.
    pub params: usize,
    /// Pseudo-labelled images the stage trained on (students).
    pub pseudo_images: usize,
    /// Unlabelled images whose teacher confidence passed the threshold, per class.
    pub confident_per_class: Vec<usize>,
    /// Wall-clock seconds of the stage.
    pub seconds: f64,
}

fn param_count(spec: &ModelSpec) -> usize {
    match spec {
        ModelSpec::EfficientNet(s) => s.param_count(),
        ModelSpec::ResNet(s) => s.param_count(),
    }
}

fn read_report(dir: &Path) -> Option<StageReport> {
    serde_json::from_str(&fs::read_to_string(dir.join("done.json")).ok()?).ok()
}

/// Runs (or resumes) the experiment in `root`; returns every stage's report in order.
pub fn run(config: &NoisyStudentConfig, root: &Path, device: &Device) -> Result<Vec<StageReport>, TrainerError> {
    let run = RunDir::new(root)?;
    let config_text = toml::to_string(config).map_err(|e| TrainerError::serialize("the experiment config", e))?;
    write_atomic(&run.path().join("config.toml"), config_text.as_bytes())?;
    let data = config.data.load()?;
    tracing::info!(
        "data: {} labelled, {} unlabelled, {} test images",
        data.labelled.len(),
        data.unlabelled.len(),
        data.test.len()
    );
    let mut reports = Vec::new();
    let mut teacher_dir = root.join("teacher");
    let mut teacher_spec = config.teacher.model.clone();
    reports.push(stage(
        &teacher_dir,
        "teacher",
        &config.teacher,
        &data,
        None,
        Vec::new(),
        device,
    )?);
    for it in 1..=config.iterations {
        let name = format!("student-{it}");
        let dir = root.join(&name);
        if let Some(r) = read_report(&dir) {
            tracing::info!("{name}: done earlier (test top-1 {:.2}%)", r.test_top1 * 100.0);
            reports.push(r);
        } else {
            let teacher = load_weights(&teacher_spec, &teacher_dir.join("model.bpk"), device)?;
            let classes = teacher_spec.num_classes();
            let t = if config.pseudo.temperature > 0.0 {
                config.pseudo.temperature
            } else {
                1.0
            };
            let probs = predict_probs(&teacher, &data.unlabelled, &data.normalize, t, 512)?;
            let (kept, counts) = select_pseudo_labels(&probs, classes, &config.pseudo);
            tracing::info!(
                "{name}: {} pseudo-labelled images (confident per class {counts:?})",
                kept.len()
            );
            let pseudo = PseudoLabelled {
                images: data.unlabelled.subset(&kept)?,
                targets: targets_for(&probs, classes, &kept, config.pseudo.temperature <= 0.0),
            };
            reports.push(stage(
                &dir,
                &name,
                &config.student,
                &data,
                Some(&pseudo),
                counts,
                device,
            )?);
        }
        teacher_dir = dir;
        teacher_spec = config.student.model.clone();
    }
    write_json(&reports, &root.join("summary.json"))?;
    // Stages finished by an older build may lack their curve: draw it from their metrics.
    for r in &reports {
        let dir = root.join(&r.stage);
        if !dir.join("curve.png").is_file() {
            crate::curve::redraw(&dir)?;
        }
    }
    Ok(reports)
}

fn stage(
    dir: &Path,
    name: &str,
    c: &StageConfig,
    data: &LoadedData,
    pseudo: Option<&PseudoLabelled>,
    counts: Vec<usize>,
    device: &Device,
) -> Result<StageReport, TrainerError> {
    if let Some(r) = read_report(dir) {
        tracing::info!("{name}: done earlier (test top-1 {:.2}%)", r.test_top1 * 100.0);
        return Ok(r);
    }
    let started = std::time::Instant::now();
    let run = RunDir::new(dir)?;
    let (model, _history): (Classifier, _) = train(
        &c.model,
        &c.train,
        &TrainData {
            labelled: &data.labelled,
            pseudo,
            eval: Some(&data.test),
            normalize: &data.normalize,
            teachers: None,
        },
        &run,
        device,
    )?;
    let report = StageReport {
        stage: name.to_string(),
        test_top1: evaluate(&model, &data.test, &data.normalize)?,
        params: param_count(&c.model),
        pseudo_images: pseudo.map_or(0, |p| p.images.len()),
        confident_per_class: counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!("{name}: test top-1 {:.2}%", report.test_top1 * 100.0);
    write_json(&report, &dir.join("done.json"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::tiny_spec;
    use crate::train::{AugmentConfig, OptimizerConfig};

    #[test]
    fn confident_images_are_kept_and_classes_balanced() {
        // 3 classes; rows: (argmax, confidence).
        let rows = [
            [0.9, 0.05, 0.05],  // 0: class 0, 0.9
            [0.5, 0.3, 0.2],    // 1: class 0, 0.5
            [0.7, 0.2, 0.1],    // 2: class 0, 0.7
            [0.1, 0.8, 0.1],    // 3: class 1, 0.8
            [0.34, 0.33, 0.33], // 4: class 0, 0.34
            [0.2, 0.2, 0.6],    // 5: class 2, 0.6
            [0.25, 0.5, 0.25],  // 6: class 1, 0.5
            [0.28, 0.28, 0.44], // 7: class 2, 0.44
        ];
        let probs: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut c = PseudoLabelConfig {
            confidence_threshold: 0.45,
            images_per_class: 0,
            temperature: 1.0,
        };
        let (kept, counts) = select_pseudo_labels(&probs, 3, &c);
        assert_eq!(counts, vec![3, 2, 1]); // 4 (0.34) and 7 (0.44) filtered out
        assert_eq!(kept, vec![0, 2, 1, 3, 6, 5]);
        c.images_per_class = 2;
        let (kept, _) = select_pseudo_labels(&probs, 3, &c);
        // Class 0 keeps its two most confident, class 2 duplicates its only image.
        assert_eq!(kept, vec![0, 2, 3, 6, 5, 5]);
        let t = targets_for(&probs, 3, &[5], true);
        assert_eq!(t, vec![0.0, 0.0, 1.0]);
    }

    /// A whole (tiny) Noisy Student run on real Fashion-MNIST: teacher, pseudo-labels and two
    /// student iterations; a rerun finds every stage done.
    #[test]
    fn a_small_run_goes_through_every_stage_and_resumes() {
        let train = TrainConfig {
            epochs: 1,
            batch_size: 40,
            optimizer: OptimizerConfig {
                lr: 5e-3,
                warmup_epochs: 0.0,
                ..OptimizerConfig::default()
            },
            augment: AugmentConfig {
                randaugment_ops: 2,
                ..AugmentConfig::default()
            },
            ..TrainConfig::default()
        };
        let config = NoisyStudentConfig {
            data: DataConfig {
                source: DataSource::FashionMnist,
                labelled_per_class: Some(40),
                unlabelled_limit: Some(400),
                split_seed: 0,
                mean: None,
                std: None,
            },
            teacher: StageConfig {
                model: tiny_spec(),
                train: train.clone(),
            },
            student: StageConfig {
                model: tiny_spec(),
                train: TrainConfig {
                    unlabelled_ratio: 2,
                    ..train
                },
            },
            pseudo: PseudoLabelConfig {
                temperature: 1.0,
                confidence_threshold: 0.0,
                images_per_class: 30,
            },
            iterations: 2,
        };
        let text = toml::to_string(&config).unwrap();
        assert_eq!(NoisyStudentConfig::from_toml(&text, "test").unwrap(), config);
        let out = tempfile::tempdir().unwrap();
        let reports = run(&config, out.path(), &crate::default_device()).unwrap();
        let stages: Vec<&str> = reports.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(stages, ["teacher", "student-1", "student-2"]);
        // Balanced: 30 images for every class the teacher predicts at all.
        let predicted = reports[1].confident_per_class.iter().filter(|&&n| n > 0).count();
        assert_eq!(reports[1].pseudo_images, 30 * predicted);
        assert_eq!(reports[1].confident_per_class.iter().sum::<usize>(), 400);
        for s in &stages {
            assert!(out.path().join(s).join("model.bpk").is_file());
            assert!(out.path().join(s).join("done.json").is_file());
        }
        assert!(out.path().join("summary.json").is_file());
        fs::remove_file(out.path().join("teacher/curve.png")).unwrap();
        let started = std::time::Instant::now();
        let again = run(&config, out.path(), &crate::default_device()).unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(again[2].test_top1, reports[2].test_top1);
        assert!(
            out.path().join("teacher/curve.png").is_file(),
            "a missing curve is redrawn"
        );
        assert!(
            started.elapsed().as_secs_f64() < 10.0,
            "a finished run must not train again"
        );
    }

    #[test]
    fn the_shipped_experiment_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/fashion-mnist-noisy-student.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let c = NoisyStudentConfig::from_toml(&text, path).unwrap();
        assert_eq!(c.data.source, DataSource::FashionMnist);
        assert_eq!(c.pseudo.confidence_threshold, 0.3);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = NoisyStudentConfig::from_toml("iterations = 0\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
    }

    /// Every `format` names data sets of the shared grammar; `fashion-mnist` is the named sets
    /// `hardy eval --data` takes, with their class names.
    #[test]
    fn every_format_maps_onto_the_shared_grammar() {
        let parse = |text: &str| -> DataSource {
            let c: DataConfig = toml::from_str(text).unwrap();
            c.source
        };
        let named =
            parse("[source]\nformat = \"sets\"\ntrain = \"fashion-mnist:train\"\ntest = \"fashion-mnist:test\"\n");
        let fashion = parse("[source]\nformat = \"fashion-mnist\"\n");
        assert_eq!(fashion, DataSource::FashionMnist);
        let sets = fashion.sets().unwrap();
        assert_eq!(named.sets().unwrap(), sets);
        assert_eq!(sets.class_names[0], "T-shirt/top");
        let ::data::DataSource::Idx { images, labels } = &sets.test else {
            panic!("not IDX: {sets:?}")
        };
        assert!(images.ends_with("t10k-images-idx3-ubyte.gz"));
        assert!(labels.as_ref().unwrap().ends_with("t10k-labels-idx1-ubyte.gz"));

        let folder = parse(
            "[source]\nformat = \"folder\"\ntrain = \"a\"\ntest = \"b\"\nunlabelled = \"c\"\nsize = 32\nchannels = 3\n",
        );
        let sets = folder.sets().unwrap();
        assert_eq!(sets.train, ::data::DataSource::ImageFolder("a".into()));
        assert_eq!(sets.test, ::data::DataSource::ImageFolder("b".into()));
        assert_eq!(
            (sets.unlabelled, sets.size, sets.channels),
            (Some("c".into()), Some(32), Some(3))
        );
        let idx = parse(
            "[source]\nformat = \"idx\"\ntrain_images = \"ti\"\ntrain_labels = \"tl\"\ntest_images = \"si\"\ntest_labels = \"sl\"\n",
        );
        let sets = idx.sets().unwrap();
        assert_eq!(
            sets.train,
            ::data::DataSource::Idx {
                images: "ti".into(),
                labels: Some("tl".into())
            }
        );
        assert!(sets.class_names.is_empty());
        let e = toml::from_str::<DataConfig>("[source]\nformat = \"sets\"\ntrain = \"x\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("test"), "{e}");
    }
}
