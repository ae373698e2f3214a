//! The learner: [`train`] runs an [`Objective`] (supervised, distillation, plus Noisy
//! Student's pseudo-labelled batches) over a run's epochs, owning what every objective shares:
//! the model and its optimiser, the learning-rate schedule, the moving average of the weights,
//! per-epoch evaluation and metrics, and resumable checkpoints in the run directory.
//!
//! The pieces live in their own modules ([`crate::config`], [`crate::objective`],
//! [`crate::schedule`], [`crate::ema`], [`crate::checkpoint`], [`crate::metrics`],
//! [`crate::loss`], [`crate::evaluate`]); this module re-exports the ones the binary, Noisy
//! Student and benches use, so `trainer::train::X` keeps working for them.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;

use crate::TrainerError;
use crate::checkpoint::{self, Start, write_json};
use crate::data::{AugmentFn, ImageSet, Normalize};
use crate::distill::Teachers;
use crate::ema::Ema;
use crate::metrics::{self, EpochProgress};
use crate::model::{Classifier, ModelSpec};
use crate::objective::{Distillation, LabelledStream, Objective, PseudoLabelling, Step, StepLoss, Supervised};
use crate::schedule::LrSchedule;

pub use crate::checkpoint::{RunDir, StageInfo, load_weights, save_weights, write_atomic};
pub use crate::config::{AugmentConfig, OptimizerConfig, OptimizerKind, TrainConfig};
pub use crate::evaluate::{argmax, evaluate, predict_probs};
pub use crate::loss::{mix_with_reversed, sample_beta, smoothed_targets, soft_cross_entropy};
pub use crate::metrics::EpochMetrics;
pub use crate::objective::PseudoLabelled;
pub use crate::schedule::learning_rate;

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

/// Trains `spec` on `data` in `run` on `device` (a backend and processor,
/// [`crate::TrainDevice::device`]), resuming from the run's last completed epoch when the
/// directory holds one for the same spec and config, whichever backend wrote it. Returns the
/// final weights (EMA weights when `ema_decay > 0`) in eval form, on `device`, and the metrics
/// of every epoch.
pub fn train(
    spec: &ModelSpec,
    config: &TrainConfig,
    data: &TrainData<'_>,
    run: &RunDir,
    device: &Device,
) -> Result<(Classifier, Vec<EpochMetrics>), TrainerError> {
    config.validate()?;
    check_data(spec, config, data)?;
    // What export needs to describe the model: architecture, classes, normalisation.
    let info = StageInfo {
        spec: spec.clone(),
        class_names: data.labelled.class_names().to_vec(),
        mean: data.normalize.mean.clone(),
        std: data.normalize.std.clone(),
    };
    write_json(&info, &run.info())?;
    let device = device.clone().autodiff();
    <burn::tensor::Device>::seed(&device, config.seed);
    let Start {
        mut model,
        ema,
        epochs_done,
        mut history,
    } = checkpoint::resume_or_init(spec, config, run, &device)?;
    let mut ema = ema.map(|average| Ema::new(average, config.ema_decay));
    let mut optim = checkpoint::restore_optimizer(&model, &config.optimizer, run, epochs_done > 0)?;
    let augment = config.augment.build()?;
    let mut objective = objective_for(config, data, augment.as_deref(), spec.num_classes(), &device)?;
    if epochs_done > 0 {
        objective.load_checkpoint(run)?;
    }
    let steps_per_epoch = objective.steps_per_epoch().max(1);
    let schedule = LrSchedule::new(&config.optimizer, steps_per_epoch, config.epochs);

    for epoch in epochs_done..config.epochs {
        let mut progress = EpochProgress::start(epoch, config.epochs, steps_per_epoch);
        for step in 0..steps_per_epoch {
            let global = epoch * steps_per_epoch + step;
            let s = Step {
                epoch,
                step,
                global,
                seed: Step::seed_of(config.seed, global),
                lr: schedule.at(global),
                device: &device,
            };
            // Rates that ramp over training (DropBlock) follow the step.
            model = model.at_progress(spec, schedule.progress(global));
            let StepLoss { loss, images } = objective.loss(&model, &s)?;
            let value: f32 = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(TrainerError::Diverged {
                    loss: value,
                    epoch: epoch + 1,
                    step,
                });
            }
            let mut grads = loss.backward();
            let model_grads = GradientsParams::from_module(&mut grads, &model);
            objective.after_backward(&mut grads, &s)?;
            model = optim.step(s.lr, model, model_grads);
            ema = ema.map(|e| e.update(&model, global));
            progress.record(step, value, images, s.lr);
        }
        let seconds = progress.stop();
        let eval_model = ema.as_ref().map_or(&model, Ema::model);
        let eval_top1 = match data.eval {
            Some(set) => Some(evaluate(eval_model, set, data.normalize)?),
            None => None,
        };
        let m = progress.finish(seconds, eval_top1);
        metrics::log_epoch(&m, config.epochs);
        objective.end_epoch(epoch, steps_per_epoch)?;
        // Checkpoint: weights first, then the state that points at them.
        objective.save_checkpoint(run)?;
        checkpoint::save_model(run, &model, eval_model, &optim)?;
        metrics::record_epoch(run, &mut history, m, config.epochs)?;
        checkpoint::save_state(run, epoch + 1, config, spec)?;
    }
    let final_model = ema.map_or(model, Ema::into_model).valid();
    Ok((final_model, history))
}

/// Checks that `data` fits `spec` and `config` before anything is written.
fn check_data(spec: &ModelSpec, config: &TrainConfig, data: &TrainData<'_>) -> Result<(), TrainerError> {
    if data.labelled.is_empty() {
        return Err(TrainerError::NoTrainingImages);
    }
    if data.labelled.channels() != spec.in_channels() {
        return Err(TrainerError::shape(
            "image channels of the training data",
            format!("{} (the model's `in_channels`)", spec.in_channels()),
            data.labelled.channels(),
        ));
    }
    match (&config.distill, data.teachers) {
        (Some(_), None) => Err(TrainerError::invalid(
            "training",
            "distill",
            "set",
            "`distill` in the training config and loaded teachers go together: no teachers were loaded \
             (see `distill::teachers_for_run`)",
        )),
        (None, Some(_)) => Err(TrainerError::invalid(
            "training",
            "distill",
            "absent",
            "`distill` in the training config and loaded teachers go together: teachers were given to a run \
             that does not distil",
        )),
        _ => Ok(()),
    }
}

/// The objective of a run: distillation when the config distils, supervised otherwise, with
/// Noisy Student's pseudo-labelled batches added when there are some.
fn objective_for<'r>(
    config: &'r TrainConfig,
    data: &TrainData<'r>,
    augment: Option<&'r AugmentFn>,
    classes: usize,
    device: &Device,
) -> Result<Box<dyn Objective + 'r>, TrainerError> {
    let labelled = LabelledStream::new(data.labelled, data.normalize, augment, config, classes)?;
    let objective: Box<dyn Objective + 'r> = match (&config.distill, data.teachers) {
        (Some(d), Some(teachers)) => Box::new(Distillation::new(labelled, d, teachers, config.seed, device)),
        _ => Box::new(Supervised::new(labelled)),
    };
    let pseudo_batch = config.batch_size * config.unlabelled_ratio;
    Ok(match data.pseudo {
        Some(p) if !p.images.is_empty() && pseudo_batch > 0 => Box::new(PseudoLabelling::new(
            objective,
            p,
            pseudo_batch,
            config.seed ^ 0x5eed,
            augment,
            data.normalize,
            classes,
        )?),
        _ => objective,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;

    use burn::module::{ModuleVisitor, Param, ParamId};
    use burn::tensor::Tensor;

    use super::*;
    use crate::checkpoint::{RunState, restore_optimizer, resume_or_init};
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
        let dir = data::fetch::fashion_mnist().expect("Fashion-MNIST");
        let f = data::fetch::FASHION_MNIST_FILES;
        let train = read_idx(dir.join(f[0]), dir.join(f[1]), None).unwrap();
        let (labelled, _) = train.split_labelled(LabelledSize::PerClass(per_class), 0).unwrap();
        let test_set = read_idx(dir.join(f[2]), dir.join(f[3]), None).unwrap();
        let keep: Vec<usize> = (0..test).collect();
        (labelled, test_set.subset(&keep).unwrap())
    }

    /// Makes a finished run look interrupted after epoch 1: the state says one epoch and the
    /// metrics keep one line (the weights and optimiser state stay those of the last epoch).
    pub(crate) fn interrupt_after_first_epoch(run: &RunDir) {
        let state_path = run.path().join("state.json");
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
    }

    pub(crate) fn quick_config() -> TrainConfig {
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

    /// Ids of the convolution and linear weights.
    struct MatrixIds(Vec<ParamId>);

    impl ModuleVisitor for MatrixIds {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D >= 2 {
                self.0.push(param.id);
            }
        }
    }

    /// Trains a tiny EfficientNet on 1,000 real Fashion-MNIST images, checks that it learns,
    /// that checkpoints and metrics are written, and that an interrupted run resumes.
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
        let (model, history) = train(&spec, &config, &data, &run, &crate::default_device()).unwrap();
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

        interrupt_after_first_epoch(&run);
        // The optimiser's moments come back, keyed by parameter id: the resumed model must
        // carry the ids the state was saved under (those of the trained model).
        let device = crate::default_device().autodiff();
        let Start {
            model: resumed_model,
            epochs_done: start,
            ..
        } = resume_or_init(&spec, &config, &run, &device).unwrap();
        assert_eq!(start, 1);
        let optim = restore_optimizer(&resumed_model, &config.optimizer, &run, true).unwrap();
        assert!(!optim.to_record().is_empty(), "optimizer.bpk restored no state");
        let (mut trained_ids, mut resumed_ids) = (MatrixIds(Vec::new()), MatrixIds(Vec::new()));
        model.visit(&mut trained_ids);
        resumed_model.visit(&mut resumed_ids);
        assert!(!trained_ids.0.is_empty());
        assert_eq!(trained_ids.0, resumed_ids.0, "parameter ids change on resume");
        let (_, resumed) = train(&spec, &config, &data, &run, &crate::default_device()).unwrap();
        assert_eq!(resumed.iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(fs::read_to_string(run.metrics()).unwrap().lines().count(), 3);

        // A finished run with the same settings trains nothing more.
        let (_, again) = train(&spec, &config, &data, &run, &crate::default_device()).unwrap();
        assert_eq!(again.len(), 3);

        // Another configuration in the same directory is refused.
        let mut other = config.clone();
        other.epochs = 4;
        let err = train(&spec, &other, &data, &run, &crate::default_device())
            .unwrap_err()
            .to_string();
        assert!(err.contains("different model or configuration"), "{err}");
    }

    /// Data that does not fit the model or the config is refused before anything is written.
    #[test]
    fn data_that_does_not_fit_is_named() {
        let (labelled, _) = fashion(1, 1);
        let normalize = Normalize::from_set(&labelled);
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path()).unwrap();
        let data = TrainData {
            labelled: &labelled,
            pseudo: None,
            eval: None,
            normalize: &normalize,
            teachers: None,
        };
        let mut rgb = tiny_spec();
        if let ModelSpec::EfficientNet(s) = &mut rgb {
            s.in_channels = 3;
        }
        let err = train(&rgb, &TrainConfig::default(), &data, &run, &crate::default_device()).unwrap_err();
        assert!(matches!(err, TrainerError::ShapeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("channels"), "{err}");
        let distilling = TrainConfig {
            distill: Some(crate::distill::DistillConfig {
                teachers: vec!["t.onnx".into()],
                temperature: 1.0,
                label_weight: 0.0,
                discriminator: None,
                augment_variants: 0,
                cache: false,
                device: None,
                top_k: None,
                unlabelled: false,
            }),
            ..TrainConfig::default()
        };
        let err = train(&tiny_spec(), &distilling, &data, &run, &crate::default_device())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`distill`") && err.contains("teachers"), "{err}");
        assert!(!run.info().exists(), "nothing is written for a refused run");
    }
}
