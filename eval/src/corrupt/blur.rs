//! Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur.

use rand::Rng;

use super::ops::{self, FloatImage};
use crate::Corruption;

/// (disk radius, anti-alias sigma) of defocus_blur.
pub(super) const DEFOCUS: [(f32, f32); 5] = [(3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)];
/// (sigma, max delta, iterations) of glass_blur.
pub(super) const GLASS: [(f32, usize, usize); 5] = [(0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2)];
/// (radius, sigma) of motion_blur.
pub(super) const MOTION: [(usize, f32); 5] = [(10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0)];
/// zoom_blur factors `1 + i * step` for `i < count`: (step, count), as NumPy's
/// `arange(1, 1.11, 0.01)` etc. produce them (the first includes 1.11).
pub(super) const ZOOM: [(f32, usize); 5] = [(0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11)];
/// Sigma of gaussian_blur.
pub(super) const GAUSSIAN: [f32; 5] = [1.0, 2.0, 3.0, 4.0, 6.0];

/// Applies one blur at severity index `s`, lengths scaled by `scale` (short side / 224).
pub(super) fn apply(x: FloatImage, c: Corruption, s: usize, scale: f32, rng: &mut impl Rng) -> FloatImage {
    match c {
        Corruption::DefocusBlur => {
            let (r, alias) = DEFOCUS[s];
            ops::disk_blur(&x, r * scale, alias)
        }
        Corruption::GlassBlur => {
            let (sigma, delta, iterations) = GLASS[s];
            let delta = ((delta as f32 * scale).round() as usize).max(1);
            glass_blur(&x, sigma * scale, delta, iterations, rng)
        }
        Corruption::MotionBlur => {
            let (r, sigma) = MOTION[s];
            let angle: f32 = rng.random_range(-45.0..45.0);
            let r = ((r as f32 * scale).round() as usize).max(1);
            // The reference blurs the 8-bit image; the result is truncated like the others.
            ops::motion_blur(&x, r, sigma * scale, angle)
        }
        Corruption::ZoomBlur => {
            let (step, count) = ZOOM[s];
            zoom_blur(&x, (0..count).map(|i| 1.0 + i as f32 * step))
        }
        _ => ops::gaussian_blur(&x, GAUSSIAN[s] * scale),
    }
}

/// Glass blur: Gaussian blur, 8-bit truncation, `iterations` sweeps (bottom-right to top-left)
/// in which each pixel takes the value of a random one at most `delta` away (offsets in
/// `-delta..delta`, as the reference's `randint`), Gaussian blur again.
///
/// The reference writes a swap, `x[h, w], x[h', w'] = x[h', w'], x[h, w]`, but on NumPy pixel
/// views that copies `x[h', w']` into `x[h, w]` and leaves `x[h', w']` unchanged; ImageNet-C was
/// made that way, so this does the same.
pub fn glass_blur(x: &FloatImage, sigma: f32, delta: usize, iterations: usize, rng: &mut impl Rng) -> FloatImage {
    let mut b = ops::gaussian_blur(x, sigma);
    b.quantize_trunc();
    let (w, h, c) = (b.width, b.height, b.channels);
    let d = delta as isize;
    // Each offset pair from 32 random bits, a row's worth drawn at once: dx from the low 16
    // bits and dy from the high 16, each `(bits * 2d) >> 16` (exactly uniform when 2d is a
    // power of two, within 1e-4 otherwise).
    let span = 2 * delta as u32;
    let mut bits = vec![0u32; w];
    let offsets = |r: u32| {
        let dx = (((r & 0xffff) * span) >> 16) as isize - d;
        let dy = (((r >> 16) * span) >> 16) as isize - d;
        (dx, dy)
    };
    for _ in 0..iterations {
        let mut yy = h as isize - d;
        while yy > d {
            let count = (w as isize - 2 * d).max(0) as usize;
            let bits = &mut bits[..count];
            rng.fill(bits);
            // pixel index of (yy, xx) and of its random source
            let pair = |k: usize, r: u32| {
                let xx = w as isize - d - k as isize;
                let (dx, dy) = offsets(r);
                (
                    yy as usize * w + xx as usize,
                    (yy + dy) as usize * w + (xx + dx) as usize,
                )
            };
            if c == 3 {
                let (px, _) = b.data.as_chunks_mut::<3>();
                for (k, &r) in bits.iter().enumerate() {
                    let (i, j) = pair(k, r);
                    px[i] = px[j];
                }
            } else {
                for (k, &r) in bits.iter().enumerate() {
                    let (i, j) = pair(k, r);
                    b.data.copy_within(j * c..j * c + c, i * c);
                }
            }
            yy -= 1;
        }
    }
    ops::gaussian_blur(&b, sigma)
}

/// Zoom blur: the mean of `x` and its [`ops::clipped_zoom`]s by each factor.
pub fn zoom_blur(x: &FloatImage, zooms: impl Iterator<Item = f32>) -> FloatImage {
    let mut acc = x.clone();
    let mut n = 1.0f32;
    for z in zooms {
        let layer = ops::clipped_zoom(x, z);
        for (a, v) in acc.data.iter_mut().zip(&layer.data) {
            *a += v;
        }
        n += 1.0;
    }
    acc.data.iter_mut().for_each(|v| *v /= n);
    acc
}
