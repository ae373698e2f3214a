//! The `autoattack` suite's options (`--aa-*` of `hardy eval`): the version, the threat
//! model, the radii and, in the custom version, the attacks and their settings; and the
//! per-image records a suite part stores.

use serde::{Deserialize, Serialize};

use super::apgd::ApgdConfig;
use super::classifier::{ImageShape, Norm};
use super::fab::FabConfig;
use super::run::{AttackName, AutoAttackConfig};
use super::square::SquareConfig;
use crate::attack::AttackError;

/// `--aa-version`: the reference's fixed "standard" settings, or the user's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    /// APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries), 100
    /// iterations, 1 restart: what RobustBench reports.
    Standard,
    /// The attacks and settings given.
    Custom,
}

impl std::str::FromStr for Version {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(Version::Standard),
            "custom" => Ok(Version::Custom),
            other => Err(AttackError::Parameter(format!(
                "unknown AutoAttack version `{other}`; known: standard, custom"
            ))),
        }
    }
}

/// What the `autoattack` suite runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAttackOptions {
    /// Standard or custom.
    pub version: Version,
    /// Threat model.
    pub norm: Norm,
    /// Radii in `[0, 1]` pixel units; `None`: [`AutoAttackOptions::default_eps`].
    pub eps: Option<Vec<f32>>,
    /// Custom version: the attacks, in order.
    pub attacks: Vec<AttackName>,
    /// Custom version: APGD iterations (APGD-CE and APGD-T).
    pub apgd_iter: usize,
    /// Custom version: APGD-CE restarts.
    pub apgd_restarts: usize,
    /// Custom version: target classes of APGD-T and FAB-T.
    pub targets: usize,
    /// Custom version: FAB-T iterations.
    pub fab_iter: usize,
    /// Custom version: Square's queries per image.
    pub square_queries: usize,
    /// Write each fooled image's adversarial crop as an 8-bit PNG under `adversarial/`.
    pub save_adversarial: bool,
}

impl Default for AutoAttackOptions {
    fn default() -> Self {
        Self {
            version: Version::Standard,
            norm: Norm::Linf,
            eps: None,
            attacks: AttackName::STANDARD.to_vec(),
            apgd_iter: 100,
            apgd_restarts: 1,
            targets: 9,
            fab_iter: 100,
            square_queries: 5000,
            save_adversarial: false,
        }
    }
}

impl AutoAttackOptions {
    /// RobustBench's radii: L-inf 4/255 for ImageNet-sized inputs (a side of 128 px or
    /// more) and 8/255 for small images (CIFAR, Fashion-MNIST); L2 0.5 for small images and
    /// 3.0 for ImageNet-sized ones.
    pub fn default_eps(&self, side: u32) -> f32 {
        let large = side >= 128;
        match (self.norm, large) {
            (Norm::Linf, true) => 4.0 / 255.0,
            (Norm::Linf, false) => 8.0 / 255.0,
            (Norm::L2, true) => 3.0,
            (Norm::L2, false) => 0.5,
        }
    }

    /// The radii to run for a model whose input's shorter side is `side` pixels.
    pub fn radii(&self, side: u32) -> Vec<f32> {
        self.eps.clone().unwrap_or_else(|| vec![self.default_eps(side)])
    }

    /// The attack settings at `eps` for a model of `classes` classes. The standard version
    /// refuses settings other than its own; the target classes are capped at `classes - 1`
    /// (the reference warns and would fail on fewer classes).
    pub fn config(&self, eps: f32, classes: usize) -> Result<AutoAttackConfig, AttackError> {
        if self.version == Version::Standard && (self.attacks != AttackName::STANDARD || !self.default_settings()) {
            return Err(AttackError::Parameter(
                "the standard AutoAttack has fixed attacks and settings; use --aa-version custom to change them".into(),
            ));
        }
        if self.attacks.is_empty() {
            return Err(AttackError::Parameter("no AutoAttack attacks to run".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.attacks.iter().find(|a| !seen.insert(**a)) {
            return Err(AttackError::Parameter(format!("attack {dup} is listed twice")));
        }
        if classes < 2 {
            return Err(AttackError::Parameter(format!(
                "AutoAttack needs 2 classes or more; the model has {classes}"
            )));
        }
        if self.attacks.contains(&AttackName::ApgdT) && classes < 4 {
            return Err(AttackError::Parameter(format!(
                "APGD-T's targeted DLR loss needs 4 classes or more; the model has {classes}"
            )));
        }
        let targets = self.targets.min(classes - 1);
        let mut config = AutoAttackConfig::standard(self.norm, eps);
        config.attacks = self.attacks.clone();
        config.apgd = ApgdConfig {
            n_iter: self.apgd_iter,
            n_restarts: self.apgd_restarts,
            n_target_classes: targets,
            ..ApgdConfig::standard(self.norm, eps)
        };
        config.fab = FabConfig {
            n_iter: self.fab_iter,
            n_target_classes: targets,
            ..FabConfig::standard(self.norm, eps, 0)
        };
        config.square = SquareConfig {
            n_queries: self.square_queries,
            ..SquareConfig::standard(self.norm, eps)
        };
        Ok(config)
    }

    fn default_settings(&self) -> bool {
        let d = AutoAttackOptions::default();
        (
            self.apgd_iter,
            self.apgd_restarts,
            self.targets,
            self.fab_iter,
            self.square_queries,
        ) == (d.apgd_iter, d.apgd_restarts, d.targets, d.fab_iter, d.square_queries)
    }
}

/// One image's state after an attack of the sequence, as a suite part stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobustSample {
    /// The item's key in its data set.
    pub item: String,
    /// The true class.
    pub label: usize,
    /// The prediction on the clean image.
    pub clean: usize,
    /// The prediction on the worst case so far (the clean image while no attack succeeded).
    pub prediction: usize,
    /// The attack that fooled it (`None` while robust, and for images misclassified clean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fooled_by: Option<AttackName>,
}

impl RobustSample {
    /// Classified correctly by every attack so far.
    pub fn robust(&self) -> bool {
        self.clean == self.label && self.fooled_by.is_none()
    }
}

/// Writes a `[0, 1]` image of `shape` as an 8-bit PNG (grey for one channel), each value
/// rounded to the nearest level.
pub fn write_png(pixels: &[f32], shape: &ImageShape, path: &std::path::Path) -> Result<(), String> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let level = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let at = |c: usize, x: u32, y: u32| {
        pixels
            .get(shape.index(c, y as usize, x as usize))
            .copied()
            .unwrap_or(0.0)
    };
    let img = if shape.channels == 1 {
        image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([level(at(0, x, y))])
        }))
    } else {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([level(at(0, x, y)), level(at(1, x, y)), level(at(2, x, y))])
        }))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_is_fixed_custom_is_checked() {
        let o = AutoAttackOptions::default();
        let c = o.config(8.0 / 255.0, 10).unwrap();
        assert_eq!(c.attacks, AttackName::STANDARD);
        assert_eq!(
            (c.apgd.n_iter, c.apgd.n_target_classes, c.fab.n_target_classes),
            (100, 9, 9)
        );
        assert_eq!(c.square.n_queries, 5000);
        // Fewer classes cap the targets.
        assert_eq!(o.config(0.1, 5).unwrap().apgd.n_target_classes, 4);
        assert!(o.config(0.1, 3).is_err(), "APGD-T needs 4 classes");
        let changed = AutoAttackOptions {
            apgd_iter: 10,
            ..o.clone()
        };
        assert!(changed.config(0.1, 10).is_err(), "standard refuses other settings");
        let custom = AutoAttackOptions {
            version: Version::Custom,
            attacks: vec![AttackName::Square, AttackName::ApgdCe],
            ..changed
        };
        let c = custom.config(0.1, 3).unwrap();
        assert_eq!((c.apgd.n_iter, c.attacks.len()), (10, 2));
        let twice = AutoAttackOptions {
            attacks: vec![AttackName::ApgdCe, AttackName::ApgdCe],
            ..custom
        };
        assert!(twice.config(0.1, 10).is_err());
        assert_eq!(o.default_eps(28), 8.0 / 255.0);
        assert_eq!(o.default_eps(224), 4.0 / 255.0);
        assert_eq!("custom".parse::<Version>().unwrap(), Version::Custom);
    }
}
