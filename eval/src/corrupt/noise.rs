//! Noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise.

use rand::Rng;

use super::ops::{self, FloatImage};
use crate::Corruption;

/// Standard deviation of gaussian_noise per severity.
pub(super) const GAUSSIAN: [f32; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
/// Photon counts of shot_noise per severity.
pub(super) const SHOT: [f32; 5] = [60.0, 25.0, 12.0, 5.0, 3.0];
/// Amount of impulse_noise per severity.
pub(super) const IMPULSE: [f32; 5] = [0.03, 0.06, 0.09, 0.17, 0.27];
/// Standard deviation of speckle_noise per severity.
pub(super) const SPECKLE: [f32; 5] = [0.15, 0.2, 0.35, 0.45, 0.6];

/// Applies one noise corruption at severity index `s` (0..5).
pub(super) fn apply(mut x: FloatImage, c: Corruption, s: usize, rng: &mut impl Rng) -> FloatImage {
    match c {
        Corruption::GaussianNoise => ops::add_gaussian_noise(&mut x, GAUSSIAN[s], rng),
        Corruption::ShotNoise => ops::poisson_noise(&mut x, SHOT[s], rng),
        Corruption::ImpulseNoise => ops::salt_and_pepper(&mut x, IMPULSE[s], rng),
        _ => ops::add_speckle_noise(&mut x, SPECKLE[s], rng),
    }
    x
}
