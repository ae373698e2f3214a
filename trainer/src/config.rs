//! The settings of a training run as they appear in a config file (`[train]`,
//! `[train.optimizer]`, `[train.augment]`), with the checks that name the field at fault.
//! Kept apart from the loop that uses them so that the binary, Noisy Student and tests can
//! build and validate a configuration without pulling in the training machinery.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::augment::{RandAugment, random_crop_flip};
use crate::autoaugment::AutoAugment;
use crate::data::AugmentFn;
use crate::distill::DistillConfig;

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
            return Err(TrainerError::invalid(
                "augment",
                "autoaugment",
                true,
                format!(
                    "`autoaugment` and `randaugment_ops` (= {}) are alternatives; set one",
                    self.randaugment_ops
                ),
            ));
        }
        let aa = self.autoaugment.then(AutoAugment::default);
        let ra = if self.randaugment_ops > 0 {
            Some(RandAugment::new(self.randaugment_ops, self.randaugment_magnitude)?)
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
        let bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(TrainerError::invalid("training", key, value, why))
        };
        let o = &self.optimizer;
        if self.epochs == 0 {
            return bad("epochs", &self.epochs, "must be > 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", &self.batch_size, "must be > 0");
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return bad("optimizer.lr", &o.lr, "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", &self.label_smoothing, "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay", &self.ema_decay, "must be in [0, 1)");
        }
        if o.warmup_epochs < 0.0 || o.warmup_epochs > self.epochs as f64 {
            return bad(
                "optimizer.warmup_epochs",
                &o.warmup_epochs,
                &format!("must be between 0 and `epochs` ({})", self.epochs),
            );
        }
        if !(self.mixup_alpha >= 0.0 && self.mixup_alpha.is_finite()) {
            return bad("mixup_alpha", &self.mixup_alpha, "must be >= 0 (0: off)");
        }
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
