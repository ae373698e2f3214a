//! The AutoAttack sequence: each attack runs on the images every previous one left robust,
//! and an image counts as robust only if all of them failed (the per-sample worst case), as
//! the reference's `run_standard_evaluation` does; plus the reference's sanity checks, as
//! flags rather than printed warnings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::apgd::{ApgdConfig, apgd, apgd_targeted, mix};
use super::classifier::{Classifier, Norm, argmax};
use super::fab::{FabConfig, fab_targeted};
use super::square::{SquareConfig, square};
use crate::attack::AttackError;

/// One attack of AutoAttack, by the reference's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AttackName {
    /// APGD on the cross-entropy.
    #[serde(rename = "apgd-ce")]
    ApgdCe,
    /// APGD on the targeted DLR loss.
    #[serde(rename = "apgd-t")]
    ApgdT,
    /// Targeted FAB.
    #[serde(rename = "fab-t")]
    FabT,
    /// The Square attack (scores only).
    #[serde(rename = "square")]
    Square,
}

impl AttackName {
    /// The standard version's attacks, in its order.
    pub const STANDARD: [AttackName; 4] = [
        AttackName::ApgdCe,
        AttackName::ApgdT,
        AttackName::FabT,
        AttackName::Square,
    ];

    /// The reference's name (`apgd-ce`, `apgd-t`, `fab-t`, `square`).
    pub fn name(self) -> &'static str {
        match self {
            AttackName::ApgdCe => "apgd-ce",
            AttackName::ApgdT => "apgd-t",
            AttackName::FabT => "fab-t",
            AttackName::Square => "square",
        }
    }

    /// Whether the attack uses gradients (Square queries scores only).
    pub fn white_box(self) -> bool {
        self != AttackName::Square
    }

    fn stream(self) -> u64 {
        match self {
            AttackName::ApgdCe => 1,
            AttackName::ApgdT => 2,
            AttackName::FabT => 3,
            AttackName::Square => 4,
        }
    }
}

impl fmt::Display for AttackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttackName {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttackName::STANDARD
            .into_iter()
            .find(|a| a.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                AttackError::Parameter(format!("unknown attack `{s}`; known: apgd-ce, apgd-t, fab-t, square"))
            })
    }
}

/// Settings of a whole AutoAttack evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAttackConfig {
    /// Threat model.
    pub norm: Norm,
    /// Radius, in `[0, 1]` pixel units.
    pub eps: f32,
    /// The attacks, in order (the standard version: [`AttackName::STANDARD`]).
    pub attacks: Vec<AttackName>,
    /// APGD-CE and APGD-T.
    pub apgd: ApgdConfig,
    /// FAB-T.
    pub fab: FabConfig,
    /// Square.
    pub square: SquareConfig,
}

impl AutoAttackConfig {
    /// The reference's "standard" version for `norm` and `eps`.
    pub fn standard(norm: Norm, eps: f32) -> Self {
        Self {
            norm,
            eps,
            attacks: AttackName::STANDARD.to_vec(),
            apgd: ApgdConfig::standard(norm, eps),
            fab: FabConfig::standard(norm, eps, 0),
            square: SquareConfig::standard(norm, eps),
        }
    }
}

/// What one attack did to a batch of images.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackRun {
    /// The attack's output pixels (adversarial where it succeeded, clean elsewhere).
    pub adversarial: Vec<f32>,
    /// The model's prediction on [`AttackRun::adversarial`], per image.
    pub predictions: Vec<usize>,
    /// Whether each image is misclassified by that prediction (the reference re-classifies
    /// the attack's output, as here).
    pub fooled: Vec<bool>,
    /// Images with an exactly zero gradient at a DLR starting point.
    pub zero_gradients: usize,
}

/// Runs `attack` on images (all of them: pass only those still robust). `seeds` holds one
/// seed per image; each attack draws from its own stream of it, so an image's result does not
/// depend on the other images of the batch.
pub fn run_attack(
    model: &mut dyn Classifier,
    attack: AttackName,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &AutoAttackConfig,
    stop: &dyn Fn() -> bool,
) -> Result<AttackRun, AttackError> {
    let n = labels.len();
    let len = model.shape().len();
    if x.len() != n * len || seeds.len() != n {
        return Err(AttackError::Shape(format!(
            "{attack}: {} pixel values, {n} labels and {} seeds for images of {len} values",
            x.len(),
            seeds.len()
        )));
    }
    if n == 0 {
        return Ok(AttackRun {
            adversarial: Vec::new(),
            predictions: Vec::new(),
            fooled: Vec::new(),
            zero_gradients: 0,
        });
    }
    let seeds: Vec<u64> = seeds.iter().map(|&s| mix(s, attack.stream())).collect();
    let mut zero_gradients = 0;
    let adversarial = match attack {
        AttackName::ApgdCe => apgd(model, x, labels, &seeds, &config.apgd, stop)?.adversarial,
        AttackName::ApgdT => {
            let out = apgd_targeted(model, x, labels, &seeds, &config.apgd, stop)?;
            zero_gradients = out.zero_gradients;
            out.adversarial
        }
        AttackName::FabT => fab_targeted(model, x, n, labels, &config.fab, stop)?,
        AttackName::Square => square(model, x, labels, &seeds, &config.square, stop)?,
    };
    let classes = model.classes();
    let logits = model.logits(&adversarial, n)?;
    let predictions: Vec<usize> = logits.chunks_exact(classes.max(1)).map(argmax).collect();
    let fooled = predictions.iter().zip(labels).map(|(&p, &y)| p as i64 != y).collect();
    Ok(AttackRun {
        adversarial,
        predictions,
        fooled,
        zero_gradients,
    })
}

/// The reference's checks on a model, as flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelChecks {
    /// Two forward passes of the same images differ (a randomised defence: the standard
    /// version's verdict is then not reliable).
    pub randomized: bool,
    /// The outputs look like probabilities (in [0, 1], rows summing to 1): the attacks need
    /// logits.
    pub probabilities: bool,
}

/// Runs the reference's `check_randomized` (two passes instead of five) and
/// `check_range_output` on a batch.
pub fn check_model(model: &mut dyn Classifier, x: &[f32], batch: usize) -> Result<ModelChecks, AttackError> {
    if batch == 0 {
        return Ok(ModelChecks::default());
    }
    let classes = model.classes().max(1);
    let first = model.logits(x, batch)?;
    let second = model.logits(x, batch)?;
    // The reference compares L2-normalised outputs with tolerance 1e-4.
    let randomized = first
        .chunks_exact(classes)
        .zip(second.chunks_exact(classes))
        .any(|(a, b)| {
            let na = a.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-10;
            let nb = b.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-10;
            a.iter()
                .zip(b)
                .map(|(p, q)| (p / na - q / nb).powi(2))
                .sum::<f32>()
                .sqrt()
                > 1e-4
        });
    let alpha = 1e-5;
    let probabilities = first.iter().all(|&v| v < 1.0 + alpha && v > -alpha)
        && first
            .chunks_exact(classes)
            .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < alpha);
    Ok(ModelChecks {
        randomized,
        probabilities,
    })
}

/// The whole sequence on a set of images, for library users and tests (the `autoattack`
/// suite of `hardy eval` runs the same steps, one attack per stored part).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAttackResult {
    /// The clean prediction per image.
    pub clean_predictions: Vec<usize>,
    /// The prediction on each image's worst case (the clean image where every attack failed).
    pub predictions: Vec<usize>,
    /// The attack that fooled each image first (`None`: robust, or misclassified clean).
    pub fooled_by: Vec<Option<AttackName>>,
    /// Images still robust after each attack, in the order run.
    pub robust_after: Vec<(AttackName, usize)>,
    /// Images classified correctly before any attack.
    pub clean_correct: usize,
    /// The worst-case pixels per image.
    pub adversarial: Vec<f32>,
    /// The model checks.
    pub checks: ModelChecks,
    /// Images with a zero gradient at an APGD-T start.
    pub zero_gradients: usize,
}

/// Runs AutoAttack on `x` (batches of at most `batch` images per attack call).
pub fn evaluate(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &AutoAttackConfig,
    batch: usize,
    stop: &dyn Fn() -> bool,
) -> Result<AutoAttackResult, AttackError> {
    let n = labels.len();
    let len = model.shape().len();
    if x.len() != n * len || seeds.len() != n {
        return Err(AttackError::Shape(format!(
            "AutoAttack: {} pixel values, {n} labels and {} seeds for images of {len} values",
            x.len(),
            seeds.len()
        )));
    }
    let batch = batch.max(1);
    let classes = model.classes().max(1);
    let mut clean_predictions = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let m = batch.min(n - start);
        let logits = model.logits(&x[start * len..(start + m) * len], m)?;
        clean_predictions.extend(logits.chunks_exact(classes).map(argmax));
    }
    let checks = check_model(model, &x[..batch.min(n) * len], batch.min(n))?;
    let mut robust: Vec<bool> = clean_predictions
        .iter()
        .zip(labels)
        .map(|(&p, &y)| p as i64 == y)
        .collect();
    let clean_correct = robust.iter().filter(|&&r| r).count();
    let mut predictions = clean_predictions.clone();
    let mut fooled_by = vec![None; n];
    let mut adversarial = x.to_vec();
    let mut robust_after = Vec::new();
    let mut zero_gradients = 0;
    for &attack in &config.attacks {
        let idx: Vec<usize> = (0..n).filter(|&i| robust[i]).collect();
        for chunk in idx.chunks(batch) {
            let xs: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| x[i * len..(i + 1) * len].iter().copied())
                .collect();
            let ys: Vec<i64> = chunk.iter().map(|&i| labels[i]).collect();
            let ss: Vec<u64> = chunk.iter().map(|&i| seeds[i]).collect();
            let run = run_attack(model, attack, &xs, &ys, &ss, config, stop)?;
            zero_gradients += run.zero_gradients;
            for (j, &i) in chunk.iter().enumerate() {
                if run.fooled[j] {
                    robust[i] = false;
                    fooled_by[i] = Some(attack);
                    predictions[i] = run.predictions[j];
                    adversarial[i * len..(i + 1) * len].copy_from_slice(&run.adversarial[j * len..(j + 1) * len]);
                }
            }
        }
        robust_after.push((attack, robust.iter().filter(|&&r| r).count()));
    }
    Ok(AutoAttackResult {
        clean_predictions,
        predictions,
        fooled_by,
        robust_after,
        clean_correct,
        adversarial,
        checks,
        zero_gradients,
    })
}

/// Whether Square fooled more than 0.2 % of the images the white-box attacks before it left
/// robust (the reference's `check_square_sr`: the white-box attacks are then suspect).
pub fn square_beat_white_box(robust_after: &[(AttackName, usize)], images: usize) -> bool {
    let white = robust_after
        .iter()
        .filter(|(a, _)| a.white_box())
        .map(|(_, r)| *r)
        .min();
    let square = robust_after
        .iter()
        .find(|(a, _)| *a == AttackName::Square)
        .map(|(_, r)| *r);
    match (white, square) {
        (Some(w), Some(s)) if images > 0 => (s as f64) / (images as f64) < (w as f64) / (images as f64) - 0.002,
        _ => false,
    }
}
