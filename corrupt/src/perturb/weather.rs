//! The sequences built on ImageNet-C's primitives (`crate::ops`): motion_blur, snow and
//! spatter, on an already cropped image.
//!
//! They follow `make_imagenet_p.py` with the primitives the corruptions use for the
//! corresponding corruptions (the motion blur is the maintained port's shifted-copies kernel,
//! not ImageMagick's, as there). Sizes follow the corruptions too: motion blur lengths scale
//! with `crop / 224`; the snow and liquid layers are drawn and animated at the reference size
//! 224 and resized to the crop, so flakes and drops keep their relative size.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ops::{self, FloatImage};

/// Frames per sequence.
const FRAMES: usize = 31;
/// The size at which the snow and liquid layers are drawn (the reference's crop).
const LAYER: usize = 224;

/// 31 frames motion-blurred with radius 10 and sigma 3 (times `scale`, radius at least 1) at
/// angles `(i - 30) * 4` degrees, i = 0..=30.
pub(super) fn motion_blur(x: &RgbImage, scale: f64) -> Vec<RgbImage> {
    let img = FloatImage::from_rgb8(x);
    let radius = ((10.0 * scale).round() as usize).max(1);
    let sigma = (3.0 * scale) as f32;
    (0..FRAMES)
        .into_par_iter()
        .map(|i| ops::motion_blur(&img, radius, sigma, (i as f32 - 30.0) * 4.0).to_rgb8())
        .collect()
}

/// 31 frames of one snow layer moving with the angle: a `N(0.05, 0.3)` field zoomed by 3,
/// values below 0.5 dropped, stored as 8 bits; frame i motion-blurs it (radius 14, sigma 4) at
/// `i * 4 - 150` degrees and composites it (blend 0.85) as ImageNet-C's snow does.
pub(super) fn snow(x: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    let field = ops::normal_layer(LAYER, LAYER, 0.05, 0.3, rng);
    let mut layer = ops::clipped_zoom(&field, 3.0);
    for v in &mut layer.data {
        if *v < 0.5 {
            *v = 0.0;
        }
    }
    // `(np.clip(layer, 0, 1) * 255).astype(np.uint8)`, saved as PNG for ImageMagick.
    layer.quantize_trunc();
    let (w, h) = (x.width() as usize, x.height() as usize);
    let img = FloatImage::from_rgb8(x);
    (0..FRAMES)
        .into_par_iter()
        .map(|i| {
            let mut moving = ops::motion_blur(&layer, 14, 4.0, i as f32 * 4.0 - 150.0);
            moving.quantize_round();
            let moving = ops::resize_layer(moving, w, h);
            let mut z = img.clone();
            ops::composite_snow(&mut z, &moving, 0.85);
            z.to_rgb8()
        })
        .collect()
}

/// 31 frames of water drops running down: a `N(0.65, 0.27)` liquid field smoothed with sigma
/// 3.7, values below 0.69 dry; frame i shades the field by the distance to its Canny edges
/// (ImageNet-C's water spatter, opacity 0.6), then the field flows down by convolving every
/// column with `[0.05, 0.1, 0.15, 0.7]` (`np.convolve(mode='same')`).
pub(super) fn spatter(x: &RgbImage, rng: &mut ChaCha8Rng) -> Vec<RgbImage> {
    let field = ops::normal_layer(LAYER, LAYER, 0.65, 0.27, rng);
    let mut liquid = ops::gaussian_blur(&field, 3.7);
    for v in &mut liquid.data {
        if *v < 0.69 {
            *v = 0.0;
        }
    }
    let mut states = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let next = flow_down(&liquid);
        states.push(std::mem::replace(&mut liquid, next));
    }
    let (w, h) = (x.width() as usize, x.height() as usize);
    let img = FloatImage::from_rgb8(x);
    states
        .par_iter()
        .map(|liquid| {
            let m = ops::resize_layer(water_layer(liquid, 0.6), w, h);
            let mut z = img.clone();
            ops::composite_spatter(&mut z, &m, false);
            z.to_rgb8()
        })
        .collect()
}

/// One step of the liquid's flow: `out[y] = 0.05 l[y+1] + 0.1 l[y] + 0.15 l[y-1] + 0.7 l[y-2]`
/// down every column, zero beyond the edges.
fn flow_down(l: &FloatImage) -> FloatImage {
    let (w, h) = (l.width, l.height);
    let at = |y: isize, x: usize| {
        if y >= 0 && (y as usize) < h {
            l.data[y as usize * w + x]
        } else {
            0.0
        }
    };
    let mut out = FloatImage::zeros(w, h, 1);
    for y in 0..h {
        let yi = y as isize;
        for x in 0..w {
            out.data[y * w + x] = 0.05 * at(yi + 1, x) + 0.1 * at(yi, x) + 0.15 * at(yi - 1, x) + 0.7 * at(yi - 2, x);
        }
    }
    out
}

/// The water spatter layer of a given liquid field (ImageNet-C's steps, composed from
/// `crate::ops`): 8-bit field, distance to its Canny edges truncated at 20 and
/// 3x3-averaged, equalised, embossed, 3x3-averaged again, times the field, scaled to a maximum
/// of `intensity`.
fn water_layer(liquid: &FloatImage, intensity: f32) -> FloatImage {
    let (w, h) = (liquid.width, liquid.height);
    let layer = |data: Vec<f32>| FloatImage {
        width: w,
        height: h,
        channels: 1,
        data,
    };
    let l8: Vec<u8> = liquid
        .data
        .iter()
        .map(|&v| (v * 255.0).clamp(0.0, 255.0) as u8)
        .collect();
    let edges = ops::canny(&l8, w, h, 50.0, 150.0);
    let dist = ops::distance_to_edges(&edges, w, h);
    let dist = ops::box_blur(&layer(dist.iter().map(|&d| d.min(20.0)).collect()), 3, 3);
    let d8: Vec<u8> = dist.data.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect();
    let eq = ops::equalize_hist(&d8);
    let emboss = [-2.0, -1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 2.0];
    let embossed = ops::filter_2d(
        &layer(eq.iter().map(|&v| f32::from(v)).collect()),
        &emboss,
        3,
        3,
        ops::Border::Reflect101,
    );
    let embossed = layer(embossed.data.iter().map(|&v| v.round().clamp(0.0, 255.0)).collect());
    let dist = ops::box_blur(&embossed, 3, 3);
    let m: Vec<f32> = l8.iter().zip(&dist.data).map(|(&a, b)| f32::from(a) * b).collect();
    let max = m.iter().copied().fold(0.0f32, f32::max);
    let k = if max > 0.0 { intensity / max } else { 0.0 };
    layer(m.iter().map(|v| v * k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_moves_drops_down_two_rows() {
        let mut l = FloatImage::zeros(3, 8, 1);
        l.data[2 * 3 + 1] = 1.0; // (x 1, y 2)
        let out = flow_down(&l);
        let col: Vec<f32> = (0..8).map(|y| out.data[y * 3 + 1]).collect();
        assert_eq!(col, vec![0.0, 0.05, 0.1, 0.15, 0.7, 0.0, 0.0, 0.0]);
        assert!(out.data.iter().enumerate().all(|(i, &v)| i % 3 == 1 || v == 0.0));
    }
}
