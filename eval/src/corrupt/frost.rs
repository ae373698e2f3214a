//! Frost: the image dimmed and a random crop of a frost texture added.

use std::path::Path;

use rand::Rng;

use super::CorruptError;
use super::ops::FloatImage;

/// (image weight, frost weight) of frost.
pub(super) const FROST: [(f32, f32); 5] = [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)];

/// A decoded frost texture (8-bit RGB values kept as `f32`; alpha, if any, dropped as OpenCV's
/// `imread` does).
#[derive(Debug, Clone)]
pub(super) struct Texture {
    width: usize,
    height: usize,
    rgb: Vec<f32>,
}

/// Loads every `frost*.png` / `frost*.jpg` / `frost*.jpeg` of `dir`, sorted by name.
pub(super) fn load_dir(dir: &Path) -> Result<Vec<Texture>, CorruptError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CorruptError::FrostDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            name.starts_with("frost") && (name.ends_with(".png") || name.ends_with(".jpg") || name.ends_with(".jpeg"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(CorruptError::NoFrostInDir { dir: dir.to_path_buf() });
    }
    paths
        .into_iter()
        .map(|path| {
            let img = image::open(&path)
                .map_err(|source| CorruptError::FrostTexture {
                    path: path.clone(),
                    source,
                })?
                .to_rgb8();
            Ok(Texture {
                width: img.width() as usize,
                height: img.height() as usize,
                rgb: img.into_raw().into_iter().map(f32::from).collect(),
            })
        })
        .collect()
}

/// OpenCV's bicubic weights (a = -0.75) for fractional offset `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// Taps and weights of a bicubic resize from `n_in` to `n_out` for outputs `start..start + len`.
fn cubic_axis(n_in: usize, n_out: usize, start: usize, len: usize) -> Vec<([usize; 4], [f32; 4])> {
    let inv = n_in as f32 / n_out as f32;
    (start..start + len)
        .map(|o| {
            let f = (o as f32 + 0.5) * inv - 0.5;
            let base = f.floor();
            let w = cubic_weights(f - base);
            let b = base as isize;
            let idx = [-1isize, 0, 1, 2].map(|d| (b + d).clamp(0, n_in as isize - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// Applies frost at severity index `s` with lengths scaled by `scale`.
pub(super) fn apply(mut x: FloatImage, textures: &[Texture], s: usize, scale: f32, rng: &mut impl Rng) -> FloatImage {
    let (c0, c1) = FROST[s];
    let t = &textures[rng.random_range(0..textures.len())];
    let (w, h) = (x.width, x.height);
    // The reference scales by 1.1 (and first up to the image if the texture is smaller).
    let fit = (h as f32 / t.height as f32).max(w as f32 / t.width as f32);
    let factor = scale.max(fit) * 1.1;
    let nw = ((t.width as f32 * factor).ceil() as usize).max(w + 1);
    let nh = ((t.height as f32 * factor).ceil() as usize).max(h + 1);
    let y0 = rng.random_range(0..nh - h);
    let x0 = rng.random_range(0..nw - w);
    let xs = cubic_axis(t.width, nw, x0, w);
    let ys = cubic_axis(t.height, nh, y0, h);
    // Vertical pass first over the texture columns the crop needs (contiguous, vectorisable),
    // then the horizontal pass.
    let (cmin, cmax) = xs
        .iter()
        .flat_map(|(i, _)| i.iter().copied())
        .fold((usize::MAX, 0), |(a, b), v| (a.min(v), b.max(v)));
    blend(&mut x, t, &xs, &ys, cmin, cmax - cmin + 1, (c0, c1));
    x
}

multiversion! {
/// The resize of [`apply`] (texture columns `cmin..cmin + cols` are the ones `xs` reads) and the
/// blend `c0 x + c1 frost`, clipped.
fn blend(
    x: &mut FloatImage,
    t: &Texture,
    xs: &[([usize; 4], [f32; 4])],
    ys: &[([usize; 4], [f32; 4])],
    cmin: usize,
    cols: usize,
    c: (f32, f32),
) {
    let (c0, c1) = c;
    let w = x.width;
    let mut tmp = vec![0.0f32; cols * 3];
    for (oy, (idx, wt)) in ys.iter().enumerate() {
        tmp.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..4 {
            let start = (idx[j] * t.width + cmin) * 3;
            for (o, &v) in tmp.iter_mut().zip(&t.rgb[start..start + cols * 3]) {
                *o += wt[j] * v;
            }
        }
        let row = &mut x.data[oy * w * 3..(oy + 1) * w * 3];
        for (px, (idx, wt)) in row.chunks_exact_mut(3).zip(xs) {
            for (k, p) in px.iter_mut().enumerate() {
                let mut v = 0.0f32;
                for j in 0..4 {
                    v += wt[j] * tmp[(idx[j] - cmin) * 3 + k];
                }
                // 8-bit texture after the resize, as OpenCV returns it (round half up)
                let frost = ((v + 0.5).clamp(0.0, 255.0) as i32) as f32 * (1.0 / 255.0);
                *p = (c0 * *p + c1 * frost).clamp(0.0, 1.0);
            }
        }
    }
}
}
