//! Weather layers and their compositing: fog over the plasma fractal, the snow layer and its
//! whitening blend, the spatter (water or mud) layer and its colours.

use rand::Rng;

use super::{
    Border, FloatImage, box_blur, canny, clip_trunc, clipped_zoom, distance_to_edges, equalize_hist, filter_2d, fmin,
    gaussian_blur, motion_blur, normal_layer,
};
use crate::simd::multiversion;

/// Fog compositing: `x = (x + strength * plasma) * max / (max + strength)`, clipped, where
/// `max` is the image's largest value; the plasma map's top-left corner covers the image.
/// `img` may have any channel count; `plasma` has one channel and is at least as large.
pub fn add_fog(img: &mut FloatImage, plasma: &FloatImage, strength: f32) {
    let (w, c) = (img.width, img.channels);
    let max_val = img.data.iter().copied().fold(0.0f32, f32::max);
    let f = max_val / (max_val + strength);
    for (y, row) in img.data.chunks_exact_mut(w * c).enumerate() {
        let prow = &plasma.data[y * plasma.width..y * plasma.width + w];
        for (px, &p) in row.chunks_exact_mut(c).zip(prow) {
            let add = p * strength;
            for v in px {
                *v = ((*v + add) * f).clamp(0.0, 1.0);
            }
        }
    }
}

/// Parameters of the snow layer (the reference's per-severity tuple, lengths in pixels).
#[derive(Debug, Clone, Copy)]
pub struct SnowParams {
    /// Mean of the Gaussian flake field.
    pub loc: f32,
    /// Standard deviation of the flake field.
    pub scale: f32,
    /// Zoom of the field (bigger flakes).
    pub zoom: f32,
    /// Values below this become 0.
    pub threshold: f32,
    /// Motion-blur radius of the flakes (taps = 2 * radius + 1).
    pub blur_radius: usize,
    /// Motion-blur sigma.
    pub blur_sigma: f32,
    /// Weight of the original image in the whitening blend.
    pub blend: f32,
}

/// The snow layer: `N(loc, scale)` field, zoomed, thresholded, clipped, motion-blurred at
/// `angle_deg`, rounded to 8 bits. One channel, `width` x `height`.
pub fn snow_layer(width: usize, height: usize, p: &SnowParams, angle_deg: f32, rng: &mut impl Rng) -> FloatImage {
    let field = normal_layer(width, height, p.loc, p.scale, rng);
    let mut layer = clipped_zoom(&field, p.zoom);
    for v in &mut layer.data {
        if *v < p.threshold {
            *v = 0.0;
        }
        *v = v.clamp(0.0, 1.0);
    }
    let mut layer = motion_blur(&layer, p.blur_radius, p.blur_sigma, angle_deg);
    layer.quantize_round();
    layer
}

multiversion! {
/// Composites a snow layer: `x = blend * x + (1 - blend) * max(x, 1.5 * gray + 0.5)`, then adds
/// the layer and its 180-degree rotation and clips. `img` has 3 channels, `layer` 1 and the
/// same size. The grey (OpenCV `COLOR_RGB2GRAY` weights) and the rotation are read per pixel,
/// not materialised.
pub fn composite_snow(img: &mut FloatImage, layer: &FloatImage, blend: f32) {
    let (px, _) = img.data.as_chunks_mut::<3>();
    for ((p, &l), &r) in px.iter_mut().zip(&layer.data).zip(layer.data.iter().rev()) {
        let g = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) * 1.5 + 0.5;
        let add = l + r;
        for v in p.iter_mut() {
            *v = (blend * *v + (1.0 - blend) * v.max(g) + add).clamp(0.0, 1.0);
        }
    }
}
}

/// Parameters of spatter (the reference's per-severity tuple, lengths in pixels).
#[derive(Debug, Clone, Copy)]
pub struct SpatterParams {
    /// Mean of the liquid field.
    pub loc: f32,
    /// Standard deviation of the liquid field.
    pub scale: f32,
    /// Gaussian sigma smoothing the field.
    pub sigma: f32,
    /// Field values below this are dry.
    pub threshold: f32,
    /// Water: opacity of the drops; mud: sigma of the mask blur.
    pub intensity: f32,
    /// Mud (brown, opaque) instead of water (pale turquoise, additive).
    pub mud: bool,
}

/// The spatter layer `m` (one channel, `width` x `height`): for water, the liquid field shaded
/// by the distance to its Canny edges and scaled so its maximum is `intensity`; for mud, the
/// blurred blob mask (values below 0.8 dropped). Composite it with [`composite_spatter`].
pub fn spatter_layer(width: usize, height: usize, p: &SpatterParams, rng: &mut impl Rng) -> FloatImage {
    let field = normal_layer(width, height, p.loc, p.scale, rng);
    spatter_from_field(&field, p)
}

multiversion! {
/// The deterministic rest of [`spatter_layer`] from the random field.
fn spatter_from_field(field: &FloatImage, p: &SpatterParams) -> FloatImage {
    let (w, h) = (field.width, field.height);
    let mut liquid = gaussian_blur(field, p.sigma);
    for v in &mut liquid.data {
        if *v < p.threshold {
            *v = 0.0;
        }
    }
    let layer = |data: Vec<f32>| FloatImage {
        width: w,
        height: h,
        channels: 1,
        data,
    };
    if p.mud {
        let mask = layer(
            liquid
                .data
                .iter()
                .map(|&v| if v > p.threshold { 1.0 } else { 0.0 })
                .collect(),
        );
        let mut m = gaussian_blur(&mask, p.intensity);
        for v in &mut m.data {
            if *v < 0.8 {
                *v = 0.0;
            }
        }
        return m;
    }
    let l8 = scaled_to_u8(&liquid.data, 255.0);
    let edges = canny(&l8, w, h, 50.0, 150.0);
    // distance to the nearest edge, truncated at 20, 3x3 mean, 8 bits
    let dist = distance_to_edges(&edges, w, h);
    let dist = box_blur(&layer(dist.iter().map(|&d| fmin(d, 20.0)).collect()), 3, 3);
    let d8 = scaled_to_u8(&dist.data, 1.0);
    let eq = equalize_hist(&d8);
    #[rustfmt::skip]
    let ker = [-2.0, -1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 2.0];
    let emb = filter_2d(
        &layer(eq.iter().map(|&v| f32::from(v)).collect()),
        &ker,
        3,
        3,
        Border::Reflect101,
    );
    let emb = layer(round_to_levels(&emb.data));
    let dist = box_blur(&emb, 3, 3);
    let (mut m, mx) = product_and_max(&l8, &dist.data);
    let scale = if mx > 0.0 { p.intensity / mx } else { 0.0 };
    m.iter_mut().for_each(|v| *v *= scale);
    layer(m)
}
}

multiversion! {
/// `trunc(clamp(v * scale, 0, 255))` of every value, as bytes.
fn scaled_to_u8(values: &[f32], scale: f32) -> Vec<u8> {
    values.iter().map(|&v| clip_trunc(v * scale)).collect()
}
}

multiversion! {
/// `round(clamp(v, 0, 255))` of every value (halves up).
fn round_to_levels(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&v| {
            #[allow(clippy::manual_clamp)]
            let x = v.max(0.0).min(255.0) + 0.5;
            // SAFETY: x is in [0.5, 255.5], so it fits an i32 (see `clip_trunc`).
            (unsafe { x.to_int_unchecked::<i32>() }) as f32
        })
        .collect()
}
}

multiversion! {
/// `a[i] * b[i]` for all `i`, and their maximum (at least 0; the products are not NaN).
fn product_and_max(a: &[u8], b: &[f32]) -> (Vec<f32>, f32) {
    let m: Vec<f32> = a.iter().zip(b).map(|(&a, &b)| f32::from(a) * b).collect();
    // eight running maxima, so the comparisons do not form one chain
    let mut mx = [0.0f32; 8];
    let mut chunks = m.chunks_exact(8);
    for c in &mut chunks {
        for (x, &v) in mx.iter_mut().zip(c) {
            *x = if v > *x { v } else { *x };
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |x, &v| if v > x { v } else { x });
    let mx = mx.iter().fold(tail, |x, &v| if v > x { v } else { x });
    (m, mx)
}
}

/// Composites a spatter layer onto a 3-channel image and clips: water adds `m` times pale
/// turquoise (175, 238, 238)/255 to R, G, B; mud blends towards brown (63, 42, 20)/255 with
/// weight `m`.
pub fn composite_spatter(img: &mut FloatImage, m: &FloatImage, mud: bool) {
    for (px, &mv) in img.data.chunks_exact_mut(3).zip(&m.data) {
        for (k, v) in px.iter_mut().enumerate() {
            *v = spatter_mix(*v, mv, k, mud);
        }
    }
}

/// One value of [`composite_spatter`]: channel `k` of a pixel under layer value `mv`.
#[inline(always)]
pub fn spatter_mix(v: f32, mv: f32, k: usize, mud: bool) -> f32 {
    const WATER: [f32; 3] = [175.0 / 255.0, 238.0 / 255.0, 238.0 / 255.0];
    const BROWN: [f32; 3] = [63.0 / 255.0, 42.0 / 255.0, 20.0 / 255.0];
    if mud {
        v * (1.0 - mv) + BROWN[k] * mv
    } else {
        v + mv * WATER[k]
    }
    .clamp(0.0, 1.0)
}
