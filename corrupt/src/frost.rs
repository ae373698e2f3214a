//! Frost: the image dimmed and a random crop of a frost texture added.
//!
//! The textures are the reference's: `make_imagenet_c.py` (and `imagecorruptions` 1.1.2, the
//! wheel [`FROST_WHEEL`] that ships them) lists frost1.png .. frost6.jpg and draws
//! `np.random.randint(5)`, so only the first five are ever used (frost6, the darkest, never
//! appears in the released set); [`load_dir`] keeps the first five in name order, and a call
//! draws one of them uniformly, then the crop offsets, in the reference's order.
//!
//! The reference reads and resizes the texture on every call. Here a texture is decoded once
//! per [`crate::Corruptor`], and once a resized size has been asked for twice (as it is for every
//! image of a dataset of one size) the whole resized texture is kept, so that later calls only
//! crop and blend; until then, and for resized textures over [`ResizeCache::MAX_BYTES`], only
//! the crop is resized. Both give the same bytes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use rand::Rng;

use crate::CorruptError;
use crate::simd::multiversion;

/// (image weight, frost weight) of frost.
pub(crate) const FROST: [(f32, f32); 5] = [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)];

/// How many textures the reference draws from: `np.random.randint(5)` over its list of six.
pub(crate) const REFERENCE_TEXTURES: usize = 5;

/// The PyPI wheel that ships the reference's frost textures (`imagecorruptions/frost/frost1.png`
/// .. `frost6.jpg`): what to fetch and how to unpack it, for whoever fetches it (Hardy's
/// evaluator, `eval::corrupt::provision_frost`; this crate downloads nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrostWheel {
    /// PyPI project name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
}

impl FrostWheel {
    /// The name of the directory, under Hardy's cache, that holds the unpacked textures.
    pub fn cache_dir_name(&self) -> String {
        format!("{}-{}-frost", self.name, self.version)
    }

    /// Where a member of the wheel goes in that directory: a texture
    /// (`imagecorruptions/frost/frost*`) under its file name, `None` for everything else.
    pub fn member_path(member: &str) -> Option<PathBuf> {
        let file = member.strip_prefix("imagecorruptions/frost/")?;
        (file.starts_with("frost") && !file.contains('/')).then(|| PathBuf::from(file))
    }
}

/// The frost textures' wheel, pinned: PyPI `imagecorruptions` 1.1.2.
pub const FROST_WHEEL: FrostWheel = FrostWheel {
    name: "imagecorruptions",
    version: "1.1.2",
};

/// A decoded frost texture (8-bit RGB values kept as `f32`; alpha, if any, dropped as OpenCV's
/// `imread` does).
#[derive(Debug, Clone)]
pub(crate) struct Texture {
    width: usize,
    height: usize,
    rgb: Vec<f32>,
    /// Whole resized textures, shared by the clones of a corruptor.
    resized: Arc<Mutex<ResizeCache>>,
}

/// Resized sizes seen once, and the last [`ResizeCache::KEEP`] resized textures built.
#[derive(Debug, Default)]
struct ResizeCache {
    seen: Vec<Size>,
    built: Vec<(Size, Arc<Vec<u8>>)>,
}

/// A resized texture's (width, height).
type Size = (usize, usize);

impl ResizeCache {
    /// Resized textures kept per texture (the most recently built).
    const KEEP: usize = 2;
    /// Largest resized texture kept (bytes): 224x224 images need 0.5-2 MB per texture, 512x512
    /// ones up to 10 MB; the five textures keep at most `5 * KEEP * MAX_BYTES`.
    const MAX_BYTES: usize = 12 << 20;
    /// Sizes remembered as seen once.
    const SEEN: usize = 16;
}

impl Texture {
    /// The whole texture resized to `nw` x `nh` (8-bit RGB), if that size was asked for before;
    /// `None` the first time.
    fn resized(&self, nw: usize, nh: usize) -> Option<Arc<Vec<u8>>> {
        let key = (nw, nh);
        if nw * nh * 3 > ResizeCache::MAX_BYTES {
            return None;
        }
        {
            let mut cache = self.resized.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, t)) = cache.built.iter().find(|(k, _)| *k == key) {
                return Some(t.clone());
            }
            if !cache.seen.contains(&key) {
                if cache.seen.len() == ResizeCache::SEEN {
                    cache.seen.remove(0);
                }
                cache.seen.push(key);
                return None;
            }
        }
        // Built outside the lock: two threads may both build it; either copy is the same.
        let xs = cubic_axis(self.width, nw, 0, nw);
        let ys = cubic_axis(self.height, nh, 0, nh);
        let full = Arc::new(resize(self, &xs, &ys, 0, self.width));
        let mut cache = self.resized.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.built.iter().any(|(k, _)| *k == key) {
            if cache.built.len() == ResizeCache::KEEP {
                cache.built.remove(0);
            }
            cache.built.push((key, full.clone()));
        }
        Some(full)
    }
}

/// Loads the `frost*.png` / `frost*.jpg` / `frost*.jpeg` images of `dir` in name order, the
/// first [`REFERENCE_TEXTURES`] of them: the reference's frost1..frost5 of its six (a directory
/// of fewer gives them all).
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Texture>, CorruptError> {
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
    paths.truncate(REFERENCE_TEXTURES);
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
                resized: Default::default(),
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

/// Applies frost at severity index `s` with lengths scaled by `scale`: one of `textures` drawn
/// uniformly (the reference's `np.random.randint(5)` over the five [`load_dir`] keeps), then
/// the crop's row and column offsets.
pub(crate) fn apply(img: &RgbImage, textures: &[Texture], s: usize, scale: f32, rng: &mut impl Rng) -> RgbImage {
    let (c0, c1) = FROST[s];
    let t = &textures[rng.random_range(0..textures.len())];
    let (w, h) = (img.width() as usize, img.height() as usize);
    // The reference scales by 1.1 (and first up to the image if the texture is smaller).
    let fit = (h as f32 / t.height as f32).max(w as f32 / t.width as f32);
    let factor = scale.max(fit) * 1.1;
    let nw = ((t.width as f32 * factor).ceil() as usize).max(w + 1);
    let nh = ((t.height as f32 * factor).ceil() as usize).max(h + 1);
    let y0 = rng.random_range(0..nh - h);
    let x0 = rng.random_range(0..nw - w);
    let out = match t.resized(nw, nh) {
        Some(full) => blend(img.as_raw(), w, &full[(y0 * nw + x0) * 3..], nw * 3, (c0, c1)),
        None => {
            let xs = cubic_axis(t.width, nw, x0, w);
            let ys = cubic_axis(t.height, nh, y0, h);
            // Only the texture columns the crop reads.
            let (cmin, cmax) = xs
                .iter()
                .flat_map(|(i, _)| i.iter().copied())
                .fold((usize::MAX, 0), |(a, b), v| (a.min(v), b.max(v)));
            let crop = resize(t, &xs, &ys, cmin, cmax - cmin + 1);
            blend(img.as_raw(), w, &crop, w * 3, (c0, c1))
        }
    };
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| img.clone())
}

multiversion! {
/// The bicubic resize of `t` at the output rows `ys` and columns `xs` (which read texture
/// columns `cmin..cmin + cols` only), rounded to 8 bits as OpenCV returns it: a vertical pass
/// over those columns (contiguous, vectorisable), then the horizontal pass.
fn resize(t: &Texture, xs: &[([usize; 4], [f32; 4])], ys: &[([usize; 4], [f32; 4])], cmin: usize, cols: usize) -> Vec<u8> {
    let w = xs.len();
    let mut out = vec![0u8; w * ys.len() * 3];
    let mut tmp = vec![0.0f32; cols * 3];
    for (oy, (idx, wt)) in ys.iter().enumerate() {
        tmp.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..4 {
            let start = (idx[j] * t.width + cmin) * 3;
            for (o, &v) in tmp.iter_mut().zip(&t.rgb[start..start + cols * 3]) {
                *o += wt[j] * v;
            }
        }
        let row = &mut out[oy * w * 3..(oy + 1) * w * 3];
        for (px, (idx, wt)) in row.chunks_exact_mut(3).zip(xs) {
            for (k, p) in px.iter_mut().enumerate() {
                let mut v = 0.0f32;
                for j in 0..4 {
                    v += wt[j] * tmp[(idx[j] - cmin) * 3 + k];
                }
                // round half up, saturating
                *p = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}
}

multiversion! {
/// `c0 x + c1 frost` on `x / 255` and `frost / 255`, clipped, as 8 bits; `frost` holds the
/// image's rows `stride` bytes apart.
fn blend(src: &[u8], w: usize, frost: &[u8], stride: usize, c: (f32, f32)) -> Vec<u8> {
    let (c0, c1) = c;
    let mut out = vec![0u8; src.len()];
    for ((orow, srow), frow) in out.chunks_exact_mut(w * 3).zip(src.chunks_exact(w * 3)).zip(frost.chunks(stride)) {
        for ((o, &x), &f) in orow.iter_mut().zip(srow).zip(frow) {
            let v = (c0 * (f32::from(x) / 255.0) + c1 * (f32::from(f) * (1.0 / 255.0))).clamp(0.0, 1.0);
            *o = crate::ops::to_u8_trunc(v);
        }
    }
    out
}
}
