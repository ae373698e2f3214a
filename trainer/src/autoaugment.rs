//! AutoAugment's ImageNet policy (Cubuk et al., CVPR 2019), one of the Assemble-ResNet
//! regularisers.
//!
//! The policy is data: 25 sub-policies of two `(op, probability, magnitude)` steps, copied from
//! timm's `auto_augment_policy_original` (the paper's Table 9). Each image gets one sub-policy
//! drawn uniformly; each step is applied with its probability. Magnitudes are on AutoAugment's
//! 0..10 scale and map to PIL arguments with timm's original (not "increasing") formulas:
//! rotate `±30·m/10` degrees, shear-x `±0.3·m/10`, solarize threshold `⌊256·m/10⌋`, posterize
//! `⌊4·m/10⌋ + 4` bits, and the Color/Contrast/Sharpness factor `1.8·m/10 + 0.1` (unsigned).
//! Invert is solarize at threshold 0. The pixel operations are [`crate::augment`]'s, which match
//! Pillow; the random stream is used in timm's order (sub-policy, then per step the skip draw
//! and, for signed ops, the sign).

use image::ImageBuffer;
use rand::Rng;

use crate::augment::{AugmentOp, AugmentPixel, DEFAULT_FILL, apply_resolved};

/// The operations the ImageNet policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOp {
    /// Keeps `⌊4·m/10⌋ + 4` bits ("PosterizeOriginal").
    Posterize,
    /// Rotates by `±30·m/10` degrees.
    Rotate,
    /// Inverts values at or above `⌊256·m/10⌋`.
    Solarize,
    /// Stretches each channel to 0..255.
    AutoContrast,
    /// Equalizes each channel's histogram.
    Equalize,
    /// Inverts every value.
    Invert,
    /// Colour balance factor `1.8·m/10 + 0.1`.
    Color,
    /// Contrast factor `1.8·m/10 + 0.1`.
    Contrast,
    /// Sharpness factor `1.8·m/10 + 0.1`.
    Sharpness,
    /// Horizontal shear `±0.3·m/10`.
    ShearX,
}

use PolicyOp::*;

/// One step of a sub-policy: the op, the probability of applying it, its magnitude (0..10).
pub type Step = (PolicyOp, f32, u8);

/// AutoAugment's ImageNet policy, as timm's `auto_augment_policy_original`.
pub const IMAGENET_POLICY: [[Step; 2]; 25] = [
    [(Posterize, 0.4, 8), (Rotate, 0.6, 9)],
    [(Solarize, 0.6, 5), (AutoContrast, 0.6, 5)],
    [(Equalize, 0.8, 8), (Equalize, 0.6, 3)],
    [(Posterize, 0.6, 7), (Posterize, 0.6, 6)],
    [(Equalize, 0.4, 7), (Solarize, 0.2, 4)],
    [(Equalize, 0.4, 4), (Rotate, 0.8, 8)],
    [(Solarize, 0.6, 3), (Equalize, 0.6, 7)],
    [(Posterize, 0.8, 5), (Equalize, 1.0, 2)],
    [(Rotate, 0.2, 3), (Solarize, 0.6, 8)],
    [(Equalize, 0.6, 8), (Posterize, 0.4, 6)],
    [(Rotate, 0.8, 8), (Color, 0.4, 0)],
    [(Rotate, 0.4, 9), (Equalize, 0.6, 2)],
    [(Equalize, 0.0, 7), (Equalize, 0.8, 8)],
    [(Invert, 0.6, 4), (Equalize, 1.0, 8)],
    [(Color, 0.6, 4), (Contrast, 1.0, 8)],
    [(Rotate, 0.8, 8), (Color, 1.0, 2)],
    [(Color, 0.8, 8), (Solarize, 0.8, 7)],
    [(Sharpness, 0.4, 7), (Invert, 0.6, 8)],
    [(ShearX, 0.6, 5), (Equalize, 1.0, 9)],
    [(Color, 0.4, 0), (Equalize, 0.6, 3)],
    [(Equalize, 0.4, 7), (Solarize, 0.2, 4)],
    [(Solarize, 0.6, 5), (AutoContrast, 0.6, 5)],
    [(Invert, 0.6, 4), (Equalize, 1.0, 8)],
    [(Color, 0.6, 4), (Contrast, 1.0, 8)],
    [(Equalize, 0.8, 8), (Equalize, 0.6, 3)],
];

/// The pixel op and its PIL-level argument for a step at magnitude `m` (0..10) with sign
/// `sign` (±1, used by the signed ops only).
pub fn resolve(op: PolicyOp, m: u8, sign: f64) -> (AugmentOp, f64) {
    let level = f64::from(m.min(10)) / 10.0;
    let enhance = 1.8 * level + 0.1;
    match op {
        Posterize => (AugmentOp::Posterize, ((level * 4.0) as i64 + 4) as f64),
        Rotate => (AugmentOp::Rotate, sign * 30.0 * level),
        Solarize => (AugmentOp::Solarize, ((level * 256.0) as i64) as f64),
        AutoContrast => (AugmentOp::AutoContrast, 0.0),
        Equalize => (AugmentOp::Equalize, 0.0),
        Invert => (AugmentOp::Solarize, 0.0),
        Color => (AugmentOp::Color, enhance),
        Contrast => (AugmentOp::Contrast, enhance),
        Sharpness => (AugmentOp::Sharpness, enhance),
        ShearX => (AugmentOp::ShearX, sign * 0.3 * level),
    }
}

/// Whether the op's argument gets a random sign.
fn is_signed(op: PolicyOp) -> bool {
    matches!(op, Rotate | ShearX)
}

/// AutoAugment with a fixed policy ([`IMAGENET_POLICY`] by default).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAugment {
    /// The sub-policies; one is drawn uniformly per image.
    pub policy: Vec<[Step; 2]>,
    /// Colour of pixels that geometric ops move in from outside the image.
    pub fill: [u8; 3],
}

impl Default for AutoAugment {
    fn default() -> Self {
        Self {
            policy: IMAGENET_POLICY.to_vec(),
            fill: DEFAULT_FILL,
        }
    }
}

impl AutoAugment {
    /// Augments one image: draws a sub-policy, then applies each step with its probability.
    /// An empty policy leaves the image unchanged.
    pub fn apply<P: AugmentPixel>(&self, img: &ImageBuffer<P, Vec<u8>>, rng: &mut impl Rng) -> ImageBuffer<P, Vec<u8>> {
        let mut out = img.clone();
        if self.policy.is_empty() {
            return out;
        }
        let sub = &self.policy[rng.random_range(0..self.policy.len())];
        for &(op, prob, m) in sub {
            // timm: `if self.prob < 1.0 and random.random() > self.prob: return img`.
            if prob < 1.0 && rng.random::<f32>() > prob {
                continue;
            }
            let sign = if is_signed(op) && rng.random::<f64>() > 0.5 {
                -1.0
            } else {
                1.0
            };
            let (pixel_op, arg) = resolve(op, m, sign);
            out = apply_resolved(pixel_op, &out, arg, self.fill);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ramp() -> GrayImage {
        GrayImage::from_fn(16, 16, |x, y| Luma([(x * 16 + y) as u8]))
    }

    #[test]
    fn arguments_follow_timm_original_formulas() {
        assert_eq!(resolve(Posterize, 8, 1.0), (AugmentOp::Posterize, 7.0));
        assert_eq!(resolve(Posterize, 0, 1.0), (AugmentOp::Posterize, 4.0));
        assert_eq!(resolve(Solarize, 5, 1.0), (AugmentOp::Solarize, 128.0));
        assert_eq!(resolve(Invert, 4, 1.0), (AugmentOp::Solarize, 0.0));
        let (op, a) = resolve(Rotate, 9, -1.0);
        assert_eq!(op, AugmentOp::Rotate);
        assert!((a + 27.0).abs() < 1e-9);
        let (_, f) = resolve(Color, 0, -1.0);
        assert!((f - 0.1).abs() < 1e-9, "enhance factors are unsigned: {f}");
        let (_, f) = resolve(Contrast, 8, 1.0);
        assert!((f - 1.54).abs() < 1e-9);
    }

    #[test]
    fn invert_inverts_every_value() {
        let img = ramp();
        let (op, arg) = resolve(Invert, 4, 1.0);
        let out = apply_resolved(op, &img, arg, DEFAULT_FILL);
        for (a, b) in img.as_raw().iter().zip(out.as_raw()) {
            assert_eq!(*b, 255 - *a);
        }
    }

    #[test]
    fn policy_is_the_papers_25_sub_policies() {
        assert_eq!(IMAGENET_POLICY.len(), 25);
        for sub in IMAGENET_POLICY {
            for (_, p, m) in sub {
                assert!((0.0..=1.0).contains(&p) && m <= 10);
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_changes_images() {
        let aa = AutoAugment::default();
        // Not full-range and not flat-histogram, so that AutoContrast and Equalize change it.
        let img = GrayImage::from_fn(16, 16, |x, y| Luma([((x * 7 + y * 3) % 150 + 40) as u8]));
        let a = aa.apply(&img, &mut StdRng::seed_from_u64(3));
        let b = aa.apply(&img, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
        let changed = (0..64u64)
            .filter(|&s| aa.apply(&img, &mut StdRng::seed_from_u64(s)) != img)
            .count();
        // Colour steps leave a grey image alone and some steps have low probabilities, but
        // most draws must change the image.
        assert!(changed > 40, "{changed} of 64 changed");
    }

    #[test]
    fn a_zero_probability_step_never_applies() {
        let aa = AutoAugment {
            policy: vec![[(Invert, 0.0, 4), (Invert, 0.0, 4)]],
            fill: DEFAULT_FILL,
        };
        let img = ramp();
        for s in 0..16 {
            assert_eq!(aa.apply(&img, &mut StdRng::seed_from_u64(s)), img);
        }
    }
}
