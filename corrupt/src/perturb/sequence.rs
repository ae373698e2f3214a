//! The photometric sequences (noise, brightness, gaussian blur) on an already cropped image.
//!
//! Each follows its block of `make_imagenet_p.py`: the arithmetic is done in floating point on
//! `x / 255` and converted back with truncation (`np.uint8(255 * x)`, `ToPILImage` of a float
//! tensor), as there.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson, StandardNormal};
use rayon::prelude::*;

/// Frames per photometric sequence: frame 0 and 30 more.
const FRAMES: usize = 31;

/// `np.uint8(255 * v)` for v already in [0, 1]: truncation toward zero.
fn to_u8(v: f64) -> u8 {
    (255.0 * v.clamp(0.0, 1.0)) as u8
}

/// Clean frame, then 30 frames of `clamp(x + sigma * N(0, 1), 0, 1)` (torch `randn_like`, float32).
pub(super) fn gaussian_noise(x: &RgbImage, sigma: f32, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    noisy_frames(
        x,
        |v, rng| {
            let n: f32 = rng.sample(StandardNormal);
            let z = (f32::from(v) / 255.0 + sigma * n).clamp(0.0, 1.0);
            (z * 255.0) as u8
        },
        rng,
    )
}

/// Clean frame, then 30 frames of `Poisson(x * rate) / rate` (the shot-noise photon count).
pub(super) fn shot_noise(x: &RgbImage, rate: f64, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    // One distribution per grey level; level 0 has lambda 0, which always draws 0.
    let dists: Vec<Option<Poisson<f64>>> = (0..=255u8)
        .map(|v| Poisson::new(f64::from(v) / 255.0 * rate).ok())
        .collect();
    noisy_frames(
        x,
        |v, rng| match &dists[usize::from(v)] {
            Some(d) => to_u8(d.sample(rng) / rate),
            None => 0,
        },
        rng,
    )
}

/// Clean frame, then 30 frames of `x + x * N(0, sigma)`.
pub(super) fn speckle_noise(x: &RgbImage, sigma: f64, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    // sigma is one of the fixed positive levels, so the distribution is always valid; fall back
    // to the clean value rather than panic should that ever change.
    let normal = Normal::new(0.0, sigma).ok();
    noisy_frames(
        x,
        |v, rng| {
            let x = f64::from(v) / 255.0;
            match &normal {
                Some(n) => to_u8(x + x * n.sample(rng)),
                None => v,
            }
        },
        rng,
    )
}

/// The clean image then 30 frames with `noise` applied to every channel value independently.
fn noisy_frames(x: &RgbImage, mut noise: impl FnMut(u8, &mut ChaCha8Rng) -> u8, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    let mut frames = Vec::with_capacity(FRAMES);
    frames.push(x.clone());
    for _ in 1..FRAMES {
        let mut z = x.clone();
        for v in z.iter_mut() {
            *v = noise(*v, rng);
        }
        frames.push(z);
    }
    frames
}

/// 31 frames with the HSV value shifted by `(i - 15) * 0.02`, i = 0..=30 (skimage's
/// `rgb2hsv`/`hsv2rgb`).
pub(super) fn brightness(x: &RgbImage) -> Vec<RgbImage> {
    let hsv: Vec<[f64; 3]> = x
        .pixels()
        .map(|p| rgb_to_hsv([p[0], p[1], p[2]].map(|c| f64::from(c) / 255.0)))
        .collect();
    (0..FRAMES)
        .into_par_iter()
        .map(|i| {
            let c = (i as f64 - 15.0) * 2.0 / 100.0;
            let mut z = x.clone();
            for (p, &[h, s, v]) in z.pixels_mut().zip(&hsv) {
                let rgb = hsv_to_rgb([h, s, (v + c).clamp(0.0, 1.0)]);
                p.0 = rgb.map(to_u8);
            }
            z
        })
        .collect()
}

/// skimage's `rgb2hsv` for one pixel in [0, 1] (ties: blue over green over red, as there).
pub(super) fn rgb_to_hsv([r, g, b]: [f64; 3]) -> [f64; 3] {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let s = delta / v;
    let h6 = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    [(h6 / 6.0).rem_euclid(1.0), s, v]
}

/// skimage's `hsv2rgb` for one pixel.
pub(super) fn hsv_to_rgb([h, s, v]: [f64; 3]) -> [f64; 3] {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// 31 frames blurred with sigma `(0.25 + 0.035 * i) * scale` (skimage `gaussian`, truncate 6,
/// edge mode "nearest"); `scale` is `crop / 224`.
pub(super) fn gaussian_blur(x: &RgbImage, scale: f64) -> Vec<RgbImage> {
    (0..FRAMES)
        .into_par_iter()
        .map(|i| {
            let sigma = (0.25 + 0.035 * i as f64) * scale;
            let blurred = gaussian_filter(x, sigma);
            let mut z = x.clone();
            for (v, b) in z.iter_mut().zip(blurred) {
                *v = to_u8(b);
            }
            z
        })
        .collect()
}

/// scipy's `gaussian_filter` (truncate 6, mode "nearest") of `x / 255` over the two spatial
/// axes, channels kept apart; returns the interleaved RGB values in [0, 1].
///
/// In `f64`, unlike `crate::ops::gaussian_blur_with` (`f32`): with it a few values
/// truncate to the level below scikit-image's, in `f64` the frames match it exactly.
pub(super) fn gaussian_filter(x: &RgbImage, sigma: f64) -> Vec<f64> {
    let (w, h) = (x.width() as usize, x.height() as usize);
    let radius = (6.0 * sigma + 0.5) as usize;
    let mut kernel: Vec<f64> = (0..=2 * radius)
        .map(|k| {
            let d = k as f64 - radius as f64;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let src: Vec<f64> = x.iter().map(|&v| f64::from(v) / 255.0).collect();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    // Rows (along x), then columns (along y).
    let mut tmp = vec![0.0; src.len()];
    for y in 0..h {
        for xx in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    let sx = clamp(xx as isize + k as isize - radius as isize, w);
                    acc += wgt * src[(y * w + sx) * 3 + c];
                }
                tmp[(y * w + xx) * 3 + c] = acc;
            }
        }
    }
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        for xx in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    let sy = clamp(y as isize + k as isize - radius as isize, h);
                    acc += wgt * tmp[(sy * w + xx) * 3 + c];
                }
                out[(y * w + xx) * 3 + c] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trip_matches_skimage_conventions() {
        for rgb in [
            [0.2, 0.4, 0.6],
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0],
            [0.3, 0.9, 0.1],
        ] {
            let back = hsv_to_rgb(rgb_to_hsv(rgb));
            for (a, b) in rgb.iter().zip(back) {
                assert!((a - b).abs() < 1e-12, "{rgb:?} -> {back:?}");
            }
        }
        // Pure red is hue 0, pure blue is 2/3.
        assert_eq!(rgb_to_hsv([1.0, 0.0, 0.0]), [0.0, 1.0, 1.0]);
        assert!((rgb_to_hsv([0.0, 0.0, 1.0])[0] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn gaussian_filter_keeps_constant_images_and_sums_to_one() {
        let img = RgbImage::from_pixel(9, 7, image::Rgb([10, 128, 250]));
        for v in gaussian_filter(&img, 1.3).chunks(3) {
            assert!((v[0] - 10.0 / 255.0).abs() < 1e-12 && (v[2] - 250.0 / 255.0).abs() < 1e-12);
        }
        // An impulse spreads into a kernel whose mass is 1.
        let mut dot = RgbImage::new(31, 31);
        dot.put_pixel(15, 15, image::Rgb([255, 255, 255]));
        let out = gaussian_filter(&dot, 1.0);
        let mass: f64 = out.iter().step_by(3).sum();
        assert!((mass - 1.0).abs() < 1e-9, "{mass}");
    }
}
