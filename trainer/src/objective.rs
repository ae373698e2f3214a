//! What a training step optimises, as pluggable objectives (in the spirit of burn-train's
//! `TrainStep`): the learner in [`crate::train`] owns the model, optimiser, schedule, EMA and
//! checkpoints, and asks an [`Objective`] for each step's loss.
//!
//! - [`Supervised`]: soft cross-entropy against smoothed labels, with mixup.
//! - [`Distillation`]: the teachers' soft targets on exactly the student's augmented images
//!   (optionally with hard labels), and MEAL V2's discriminator with its own optimiser,
//!   learning rate and checkpoint files; see [`crate::distill`].
//! - [`PseudoLabelling`]: Noisy Student's extra batch of pseudo-labelled images per step (soft
//!   or one-hot targets), whose loss is added to that of a labelled objective.
//!
//! Every objective draws its batches from the step's seed ([`Step::seed`]), so a step's
//! images, augmentations and mixup weights depend on the run's seed and the step only.

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Gradients, Tensor, TensorData};

use crate::TrainerError;
use crate::checkpoint::{RunDir, load_into, load_optimizer_state, save_optimizer, save_weights};
use crate::config::TrainConfig;
use crate::data::{AugmentFn, Batch, EpochOrder, ImageSet, Normalize, make_batch};
use crate::distill::{Discriminator, DistillConfig, Teachers, variant_seed};
use crate::evaluate::batch_tensor;
use crate::loss::{mix_with_reversed, sample_beta, smoothed_targets, soft_cross_entropy};
use crate::model::Classifier;

/// Where the learner is when it calls an [`Objective`].
#[derive(Debug, Clone, Copy)]
pub struct Step<'s> {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based step within the epoch.
    pub step: usize,
    /// 0-based step since the start of the run (`epoch * steps_per_epoch + step`).
    pub global: usize,
    /// The step's seed ([`Step::seed_of`]): augmentation and mixup draws derive from it.
    pub seed: u64,
    /// The model's learning rate at this step.
    pub lr: f64,
    /// The autodiff device the model trains on.
    pub device: &'s Device,
}

impl Step<'_> {
    /// The seed of global step `global` in a run seeded with `run_seed`.
    pub fn seed_of(run_seed: u64, global: usize) -> u64 {
        run_seed.wrapping_mul(1_000_003).wrapping_add(global as u64)
    }
}

/// The loss of one step and how many images it trained on.
#[derive(Debug)]
pub struct StepLoss {
    /// The scalar to minimise (on the autodiff graph of the model and the objective's own
    /// parameters).
    pub loss: Tensor<1>,
    /// Images that went into it (for images per second).
    pub images: usize,
}

/// What a training run optimises. The learner calls, per run: [`Objective::steps_per_epoch`],
/// then [`Objective::load_checkpoint`] when it resumes; per step: [`Objective::loss`], the
/// backward pass, [`Objective::after_backward`], the model's optimiser step; per epoch:
/// [`Objective::end_epoch`] and [`Objective::save_checkpoint`] (before the model's checkpoint
/// and the run state that points at both).
pub trait Objective {
    /// Steps in one epoch: one pass over the set that defines the epoch.
    fn steps_per_epoch(&self) -> usize;

    /// The loss of `step` for `model` (in training mode, on the autodiff device).
    fn loss(&mut self, model: &Classifier, step: &Step<'_>) -> Result<StepLoss, TrainerError>;

    /// After the backward pass, with the model's gradients already taken out of `grads`:
    /// updates the objective's own parameters (MEAL V2's discriminator).
    fn after_backward(&mut self, _grads: &mut Gradients, _step: &Step<'_>) -> Result<(), TrainerError> {
        Ok(())
    }

    /// At the end of epoch `epoch` (0-based) of `steps` steps: flush caches, log the
    /// objective's own metrics.
    fn end_epoch(&mut self, _epoch: usize, _steps: usize) -> Result<(), TrainerError> {
        Ok(())
    }

    /// Writes the objective's own state into `run`'s checkpoint.
    fn save_checkpoint(&self, _run: &RunDir) -> Result<(), TrainerError> {
        Ok(())
    }

    /// Restores the objective's own state from `run`'s checkpoint when the run resumes.
    fn load_checkpoint(&mut self, _run: &RunDir) -> Result<(), TrainerError> {
        Ok(())
    }
}

/// A pseudo-labelled set: images and one probability row per image.
#[derive(Debug, Clone)]
pub struct PseudoLabelled {
    /// The images (labels, if any, are ignored).
    pub images: ImageSet,
    /// `[len, classes]` row-major targets (soft, or one-hot for hard labels).
    pub targets: Vec<f32>,
}

/// The labelled batches of a run: a fresh shuffle per pass (the set cycles when an epoch is
/// longer than one pass), augmented, with smoothed one-hot targets and optional mixup.
pub struct LabelledStream<'r> {
    set: &'r ImageSet,
    normalize: &'r Normalize,
    augment: Option<&'r AugmentFn>,
    order: EpochOrder,
    classes: usize,
    label_smoothing: f32,
    mixup_alpha: f32,
}

/// One labelled batch and its targets (`[n, classes]`, row-major).
#[derive(Debug, Clone)]
pub struct LabelledBatch {
    /// The augmented, normalised images.
    pub batch: Batch,
    /// Smoothed one-hot targets, mixed like the images.
    pub targets: Vec<f32>,
}

impl LabelledBatch {
    /// Mixes images and targets with the batch reversed, weight `lambda`.
    pub fn mix(&mut self, lambda: f32) {
        mix_with_reversed(&mut self.batch.images, self.batch.n, lambda);
        mix_with_reversed(&mut self.targets, self.batch.n, lambda);
    }
}

impl<'r> LabelledStream<'r> {
    /// Batches of `config.batch_size` (at most the whole set) of `set` for `classes` classes,
    /// with `config`'s seed, label smoothing and mixup.
    pub fn new(
        set: &'r ImageSet,
        normalize: &'r Normalize,
        augment: Option<&'r AugmentFn>,
        config: &TrainConfig,
        classes: usize,
    ) -> Result<Self, TrainerError> {
        let order = EpochOrder::new(set.len(), config.batch_size.min(set.len()), config.seed, true)?;
        Ok(Self {
            set,
            normalize,
            augment,
            order,
            classes,
            label_smoothing: config.label_smoothing,
            mixup_alpha: config.mixup_alpha,
        })
    }

    /// Batches in one pass over the set.
    pub fn num_batches(&self) -> usize {
        self.order.num_batches()
    }

    /// Classes of the targets.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The batch of global step `global`, augmented from `augment_seed`.
    pub fn draw(&self, global: usize, augment_seed: u64) -> Result<LabelledBatch, TrainerError> {
        let cycle = global / self.order.num_batches().max(1);
        let batches = self.order.batches(cycle as u64);
        let idx = &batches[global % batches.len().max(1)];
        let batch = make_batch(self.set, idx, self.augment, self.normalize, augment_seed)?;
        let labels: Vec<usize> = idx.iter().map(|&i| self.set.label(i).unwrap_or(0)).collect();
        let targets = smoothed_targets(&labels, self.classes, self.label_smoothing);
        Ok(LabelledBatch { batch, targets })
    }

    /// The mixup weight of the step seeded `step_seed`, `None` when mixup is off.
    pub fn mixup(&self, step_seed: u64) -> Option<f32> {
        (self.mixup_alpha > 0.0).then(|| sample_beta(self.mixup_alpha, step_seed ^ 0x6d69_7875_7000))
    }
}

/// `rows` (`[n, classes]`, row-major) as a tensor on `device`.
fn targets_tensor(rows: Vec<f32>, classes: usize, device: &Device) -> Tensor<2> {
    let n = rows.len() / classes.max(1);
    Tensor::from_data(TensorData::new(rows, [n, classes]), device)
}

/// Supervised learning: soft cross-entropy of the model's logits against the (smoothed,
/// mixed) labels of a labelled batch.
pub struct Supervised<'r> {
    labelled: LabelledStream<'r>,
}

impl<'r> Supervised<'r> {
    /// Learns from the batches of `labelled`.
    pub fn new(labelled: LabelledStream<'r>) -> Self {
        Self { labelled }
    }
}

impl Objective for Supervised<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.labelled.num_batches()
    }

    fn loss(&mut self, model: &Classifier, step: &Step<'_>) -> Result<StepLoss, TrainerError> {
        let mut lb = self.labelled.draw(step.global, step.seed)?;
        if let Some(lambda) = self.labelled.mixup(step.seed) {
            lb.mix(lambda);
        }
        let logits = model.forward(batch_tensor(&lb.batch, step.device));
        let hard = targets_tensor(lb.targets, self.labelled.classes(), step.device);
        Ok(StepLoss {
            loss: soft_cross_entropy(logits, hard),
            images: lb.batch.n,
        })
    }
}

/// Noisy Student's pseudo-labelled part: every step adds the mean soft cross-entropy of a
/// batch of pseudo-labelled images (soft or one-hot targets, as the teacher made them) to the
/// loss of a labelled objective. An epoch is a pass over the pseudo-labelled set; the labelled
/// set cycles.
pub struct PseudoLabelling<'r> {
    labelled: Box<dyn Objective + 'r>,
    set: &'r PseudoLabelled,
    order: EpochOrder,
    augment: Option<&'r AugmentFn>,
    normalize: &'r Normalize,
    classes: usize,
}

impl<'r> PseudoLabelling<'r> {
    /// Adds batches of `batch_size` (at most the whole set) of `set`, shuffled from `seed`, to
    /// `labelled`'s loss. Fails if `set` does not hold one `classes`-wide target row per image.
    pub fn new(
        labelled: Box<dyn Objective + 'r>,
        set: &'r PseudoLabelled,
        batch_size: usize,
        seed: u64,
        augment: Option<&'r AugmentFn>,
        normalize: &'r Normalize,
        classes: usize,
    ) -> Result<Self, TrainerError> {
        if set.targets.len() != set.images.len() * classes {
            return Err(TrainerError::shape(
                "pseudo-label targets",
                format!("{} x {classes} values (one row per image)", set.images.len()),
                set.targets.len(),
            ));
        }
        let order = EpochOrder::new(set.images.len(), batch_size.min(set.images.len()), seed, true)?;
        Ok(Self {
            labelled,
            set,
            order,
            augment,
            normalize,
            classes,
        })
    }
}

impl Objective for PseudoLabelling<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.order.num_batches()
    }

    fn loss(&mut self, model: &Classifier, step: &Step<'_>) -> Result<StepLoss, TrainerError> {
        let mut out = self.labelled.loss(model, step)?;
        let batches = self.order.batches(step.epoch as u64);
        let idx = &batches[step.step % batches.len().max(1)];
        let pb = make_batch(&self.set.images, idx, self.augment, self.normalize, step.seed ^ 0xa5a5)?;
        let k = self.classes;
        let mut t = Vec::with_capacity(idx.len() * k);
        for &i in idx {
            t.extend_from_slice(&self.set.targets[i * k..(i + 1) * k]);
        }
        let logits = model.forward(batch_tensor(&pb, step.device));
        out.loss = out.loss + soft_cross_entropy(logits, targets_tensor(t, k, step.device));
        out.images += pb.n;
        Ok(out)
    }

    fn after_backward(&mut self, grads: &mut Gradients, step: &Step<'_>) -> Result<(), TrainerError> {
        self.labelled.after_backward(grads, step)
    }

    fn end_epoch(&mut self, epoch: usize, steps: usize) -> Result<(), TrainerError> {
        self.labelled.end_epoch(epoch, steps)
    }

    fn save_checkpoint(&self, run: &RunDir) -> Result<(), TrainerError> {
        self.labelled.save_checkpoint(run)
    }

    fn load_checkpoint(&mut self, run: &RunDir) -> Result<(), TrainerError> {
        self.labelled.load_checkpoint(run)
    }
}

/// Knowledge distillation and MEAL V2 (see [`crate::distill`]):
/// `(1 - w) T² H(p_T, softmax(z / T)) + w H(y, softmax(z))` plus, with a discriminator, its
/// weighted binary cross-entropy. The discriminator is trained through the same backward pass
/// by its own Adam optimiser at a constant rate, and checkpointed beside the model.
pub struct Distillation<'r> {
    labelled: LabelledStream<'r>,
    config: &'r DistillConfig,
    teachers: &'r Teachers,
    /// The run's seed, from which augmentation variants are seeded.
    seed: u64,
    discriminator: Option<(Discriminator, ModuleOptimizer)>,
    /// Sum of the discriminator's loss over the epoch so far.
    discriminator_loss: f64,
}

impl<'r> Distillation<'r> {
    /// Distils `teachers` into the student on `labelled`'s batches; with
    /// `config.discriminator`, a fresh discriminator on `device`.
    pub fn new(
        labelled: LabelledStream<'r>,
        config: &'r DistillConfig,
        teachers: &'r Teachers,
        seed: u64,
        device: &Device,
    ) -> Self {
        let discriminator = config.discriminator.as_ref().map(|_| {
            (
                Discriminator::new(labelled.classes(), device),
                ModuleOptimizer::from(AdamConfig::new().build()),
            )
        });
        Self {
            labelled,
            config,
            teachers,
            seed,
            discriminator,
            discriminator_loss: 0.0,
        }
    }
}

impl Objective for Distillation<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.labelled.num_batches()
    }

    fn loss(&mut self, model: &Classifier, step: &Step<'_>) -> Result<StepLoss, TrainerError> {
        // With augmentation variants the augmentation depends on the epoch's variant only, so
        // that cached teacher outputs stay valid.
        let variant = self.config.variant(step.epoch);
        let augment_seed = variant.map_or(step.seed, |v| variant_seed(self.seed, v));
        let mut lb = self.labelled.draw(step.global, augment_seed)?;
        // The teachers see the un-mixed images; their targets are mixed like the labels.
        let mut soft = self.teachers.targets(&lb.batch, variant)?;
        if let Some(lambda) = self.labelled.mixup(step.seed) {
            lb.mix(lambda);
            mix_with_reversed(&mut soft, lb.batch.n, lambda);
        }
        let k = self.labelled.classes();
        let logits = model.forward(batch_tensor(&lb.batch, step.device));
        let hard = targets_tensor(lb.targets, k, step.device);
        let (t, w) = (self.config.temperature, self.config.label_weight);
        let soft = targets_tensor(soft, k, step.device);
        let mut loss = soft_cross_entropy(logits.clone().div_scalar(t), soft.clone()).mul_scalar((1.0 - w) * t * t);
        if w > 0.0 {
            loss = loss + soft_cross_entropy(logits.clone(), hard).mul_scalar(w);
        }
        if let (Some(dc), Some((disc, _))) = (&self.config.discriminator, &self.discriminator) {
            let dl = disc.loss(softmax(logits.div_scalar(t), 1), soft);
            self.discriminator_loss += f64::from(dl.clone().into_scalar::<f32>());
            loss = loss + dl.mul_scalar(dc.weight);
        }
        Ok(StepLoss {
            loss,
            images: lb.batch.n,
        })
    }

    fn after_backward(&mut self, grads: &mut Gradients, _step: &Step<'_>) -> Result<(), TrainerError> {
        if let Some((disc, mut optim)) = self.discriminator.take() {
            let disc_grads = GradientsParams::from_module(grads, &disc);
            let lr = self.config.discriminator.as_ref().map_or(0.0, |d| d.lr);
            self.discriminator = Some((optim.step(lr, disc, disc_grads), optim));
        }
        Ok(())
    }

    fn end_epoch(&mut self, epoch: usize, steps: usize) -> Result<(), TrainerError> {
        self.teachers.flush()?;
        if self.discriminator_loss != 0.0 {
            tracing::info!(
                "epoch {}: mean discriminator loss {:.4}",
                epoch + 1,
                self.discriminator_loss / steps.max(1) as f64
            );
        }
        self.discriminator_loss = 0.0;
        Ok(())
    }

    fn save_checkpoint(&self, run: &RunDir) -> Result<(), TrainerError> {
        if let Some((disc, optim)) = &self.discriminator {
            save_weights(disc, &run.discriminator_weights())?;
            save_optimizer(optim, &run.discriminator_optimizer())?;
        }
        Ok(())
    }

    fn load_checkpoint(&mut self, run: &RunDir) -> Result<(), TrainerError> {
        let weights = run.discriminator_weights();
        if let Some((disc, optim)) = self.discriminator.take() {
            self.discriminator = Some(if weights.is_file() {
                (
                    load_into(disc, &weights)?,
                    load_optimizer_state(optim, &run.discriminator_optimizer(), true)?,
                )
            } else {
                tracing::warn!(
                    "{} is missing: the discriminator restarts from scratch",
                    weights.display()
                );
                (disc, optim)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::fashion;

    #[test]
    fn labelled_batches_cycle_and_mix() {
        let (set, _) = fashion(3, 1);
        let normalize = Normalize::from_set(&set);
        let config = TrainConfig {
            batch_size: 8,
            label_smoothing: 0.0,
            mixup_alpha: 0.4,
            ..TrainConfig::default()
        };
        let stream = LabelledStream::new(&set, &normalize, None, &config, 10).unwrap();
        assert_eq!(stream.num_batches(), 3);
        let a = stream.draw(1, 0).unwrap();
        assert_eq!(a.batch, stream.draw(1, 0).unwrap().batch, "a step's batch is fixed");
        // The next pass is shuffled anew.
        assert_ne!(a.batch.indices, stream.draw(4, 0).unwrap().batch.indices);
        for (row, &i) in a.targets.chunks(10).zip(&a.batch.indices) {
            assert_eq!(row[set.label(i).unwrap()], 1.0);
        }
        let lambda = stream.mixup(Step::seed_of(0, 1)).unwrap();
        assert_eq!(
            Some(lambda),
            stream.mixup(Step::seed_of(0, 1)),
            "a step's mixup is fixed"
        );
        let mut mixed = a.clone();
        mixed.mix(lambda);
        // Row 0 is blended with the last row, targets like images.
        let n = a.batch.n;
        for (k, &got) in mixed.targets[..10].iter().enumerate() {
            let want = lambda * a.targets[k] + (1.0 - lambda) * a.targets[(n - 1) * 10 + k];
            assert!((got - want).abs() < 1e-6, "class {k}: {got} vs {want}");
        }
        assert!((mixed.targets[..10].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(mixed.batch.n, n);
    }

    #[test]
    fn pseudo_targets_must_fit_the_images() {
        let (set, _) = fashion(1, 1);
        let normalize = Normalize::from_set(&set);
        let config = TrainConfig::default();
        let stream = LabelledStream::new(&set, &normalize, None, &config, 10).unwrap();
        let pseudo = PseudoLabelled {
            images: set.clone(),
            targets: vec![0.1; 10 * set.len() - 1],
        };
        let err = PseudoLabelling::new(Box::new(Supervised::new(stream)), &pseudo, 4, 0, None, &normalize, 10)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("pseudo-label targets") && err.contains("99"), "{err}");
    }
}
