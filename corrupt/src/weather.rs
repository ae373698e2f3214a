//! Weather corruptions drawn from random layers: snow, fog, spatter (frost is in `frost.rs`).
//!
//! One file per family of the paper's table, so that each corruption's per-severity parameters
//! sit beside the code that applies them; the layers themselves are in [`crate::ops`].

use rand::Rng;

use crate::ops::{self, FloatImage, SnowParams, SpatterParams};
use crate::simd::multiversion;

/// (loc, scale, zoom, threshold, blur radius, blur sigma, blend) of snow.
pub(super) const SNOW: [(f32, f32, f32, f32, usize, f32, f32); 5] = [
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
];
/// (strength, wibble decay) of fog.
pub(super) const FOG: [(f32, f32); 5] = [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)];
/// (loc, scale, sigma, threshold, intensity, mud) of spatter.
pub(super) const SPATTER: [(f32, f32, f32, f32, f32, bool); 5] = [
    (0.65, 0.3, 4.0, 0.69, 0.6, false),
    (0.65, 0.3, 3.0, 0.68, 0.6, false),
    (0.65, 0.3, 2.0, 0.68, 0.5, false),
    (0.65, 0.3, 1.0, 0.65, 1.5, true),
    (0.67, 0.4, 1.0, 0.65, 1.5, true),
];

/// The size at which a layer for a `w` x `h` image is drawn: the image scaled so that its
/// shorter side is 224 (the reference scale).
pub fn reference_dims(w: usize, h: usize) -> (usize, usize) {
    let m = w.min(h).max(1) as f64;
    let f = 224.0 / m;
    (
        ((w as f64 * f).round() as usize).max(1),
        ((h as f64 * f).round() as usize).max(1),
    )
}

/// Applies snow at severity index `s`.
pub(super) fn snow(mut x: FloatImage, s: usize, rng: &mut impl Rng) -> FloatImage {
    let (w, h) = (x.width, x.height);
    let (loc, scale, zoom, threshold, blur_radius, blur_sigma, blend) = SNOW[s];
    let p = SnowParams {
        loc,
        scale,
        zoom,
        threshold,
        blur_radius,
        blur_sigma,
        blend,
    };
    let angle: f32 = rng.random_range(-135.0..-45.0);
    let (rw, rh) = reference_dims(w, h);
    let layer = ops::snow_layer(rw, rh, &p, angle, rng);
    let layer = ops::resize_layer(layer, w, h);
    ops::composite_snow(&mut x, &layer, blend);
    x
}

/// Spatter at severity index `s`, composited straight from and to 8 bits (the arithmetic of
/// [`ops::composite_spatter`] on `value / 255`).
pub(super) fn spatter(img: &image::RgbImage, s: usize, rng: &mut impl Rng) -> image::RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (loc, scale, sigma, threshold, intensity, mud) = SPATTER[s];
    let p = SpatterParams {
        loc,
        scale,
        sigma,
        threshold,
        intensity,
        mud,
    };
    let (rw, rh) = reference_dims(w, h);
    let m = ops::resize_layer(ops::spatter_layer(rw, rh, &p, rng), w, h);
    let out = spatter_composite(img.as_raw(), &m.data, mud);
    image::RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| img.clone())
}

multiversion! {
/// [`ops::spatter_mix`] of every byte (as `byte / 255`) under its pixel's layer value.
fn spatter_composite(src: &[u8], m: &[f32], mud: bool) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    let (dst, _) = out.as_chunks_mut::<3>();
    let (px, _) = src.as_chunks::<3>();
    for ((o, p), &mv) in dst.iter_mut().zip(px).zip(m) {
        *o = std::array::from_fn(|k| ops::to_u8_trunc(ops::spatter_mix(f32::from(p[k]) / 255.0, mv, k, mud)));
    }
    out
}
}

/// Fog at severity index `s`, straight from and to 8 bits (one pass; the same arithmetic as
/// [`ops::add_fog`] on `value / 255`).
pub(super) fn fog(img: &image::RgbImage, s: usize, rng: &mut impl Rng) -> image::RgbImage {
    let (strength, decay) = FOG[s];
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plasma = ops::plasma_fractal(w.max(h).next_power_of_two(), decay, rng);
    let out = fog_composite(img.as_raw(), w, h, &plasma, strength);
    image::RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| img.clone())
}

multiversion! {
/// The fog arithmetic of [`ops::add_fog`] from 8-bit RGB to 8-bit RGB, a row at a time: the
/// row's plasma terms spread to its bytes, then one flat loop over the bytes.
fn fog_composite(src: &[u8], w: usize, h: usize, plasma: &FloatImage, strength: f32) -> Vec<u8> {
    let max_val = f32::from(src.iter().copied().max().unwrap_or(0)) / 255.0;
    let f = max_val / (max_val + strength);
    let mut out = vec![0u8; src.len()];
    let mut add = vec![0.0f32; w * 3];
    for y in 0..h {
        let prow = &plasma.data[y * plasma.width..y * plasma.width + w];
        for (a, &p) in add.chunks_exact_mut(3).zip(prow) {
            a.fill(p * strength);
        }
        let (srow, orow) = (&src[y * w * 3..(y + 1) * w * 3], &mut out[y * w * 3..(y + 1) * w * 3]);
        for ((o, &x), &a) in orow.iter_mut().zip(srow).zip(&add) {
            *o = ops::to_u8_trunc((f32::from(x) / 255.0 + a) * f);
        }
    }
    out
}
}
