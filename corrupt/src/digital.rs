//! Digital and colour corruptions: brightness, contrast, saturate, elastic_transform, pixelate,
//! jpeg_compression.
//!
//! One file per family of the paper's table, so that each corruption's per-severity parameters
//! sit beside the code that applies them.

use rand::Rng;

use crate::Corruption;
use crate::ops::{self, FloatImage};
use crate::simd::{self, multiversion};

/// HSV value added by brightness.
pub(super) const BRIGHTNESS: [f32; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];
/// Contrast factor.
pub(super) const CONTRAST: [f64; 5] = [0.4, 0.3, 0.2, 0.1, 0.05];
/// (saturation factor, saturation offset) of saturate.
pub(super) const SATURATE: [(f32, f32); 5] = [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)];
/// Displacement gain alpha of elastic_transform (the port's scheme).
pub(super) const ELASTIC_ALPHA: [f32; 5] = [250.0 * 0.05, 250.0 * 0.065, 250.0 * 0.085, 250.0 * 0.1, 250.0 * 0.12];
/// Size factor of pixelate.
pub(super) const PIXELATE: [f32; 5] = [0.6, 0.5, 0.4, 0.3, 0.25];
/// JPEG quality of jpeg_compression.
pub(super) const JPEG: [u8; 5] = [25, 18, 15, 10, 7];

/// Applies brightness, saturate or elastic_transform at severity index `s`.
pub(super) fn apply(mut x: FloatImage, c: Corruption, s: usize, rng: &mut impl Rng) -> FloatImage {
    match c {
        Corruption::Brightness => ops::hsv_adjust(&mut x, BRIGHTNESS[s], 1.0, 0.0),
        Corruption::Saturate => ops::hsv_adjust(&mut x, 0.0, SATURATE[s].0, SATURATE[s].1),
        _ => return elastic(&x, ELASTIC_ALPHA[s], rng),
    }
    x
}

/// contrast: `(x - mean) * c + mean` per channel, clipped, on `x / 255`, as `np.uint8` of the
/// port's result, in its float64 arithmetic. The output byte depends only on the channel and
/// the input byte, so the formula runs once per channel and level (a 768-entry table) instead
/// of once per value; the channel means come from exact integer sums.
pub(super) fn contrast(img: &image::RgbImage, s: usize) -> image::RgbImage {
    let src = img.as_raw();
    let sums = channel_sums(src);
    let n = (src.len() / 3).max(1) as f64;
    let f = CONTRAST[s];
    let mut table = [0u8; 768];
    for (k, lut) in table.chunks_exact_mut(256).enumerate() {
        let mean = sums[k] as f64 / 255.0 / n;
        for (v, o) in lut.iter_mut().enumerate() {
            let x = v as f64 / 255.0;
            // the port's float64 arithmetic; `as` truncates like `np.uint8`
            *o = (((x - mean) * f + mean).clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    let (r, rest) = table.split_at(256);
    let (g, b) = rest.split_at(256);
    let mut out = vec![0u8; src.len()];
    for (o, p) in out.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
        o[0] = r[usize::from(p[0])];
        o[1] = g[usize::from(p[1])];
        o[2] = b[usize::from(p[2])];
    }
    image::RgbImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| img.clone())
}

multiversion! {
/// Sums of the R, G and B bytes of interleaved RGB data: 48 lane sums over blocks of 16 pixels
/// (a vector addition per block), folded by channel at the end.
fn channel_sums(src: &[u8]) -> [u64; 3] {
    let mut lanes = [0u64; 48];
    let mut blocks = src.chunks_exact(48);
    for block in &mut blocks {
        for (l, &v) in lanes.iter_mut().zip(block) {
            *l += u64::from(v);
        }
    }
    let mut sums = [0u64; 3];
    for (j, &l) in lanes.iter().enumerate() {
        sums[j % 3] += l;
    }
    for (j, &v) in blocks.remainder().iter().enumerate() {
        sums[j % 3] += u64::from(v);
    }
    sums
}
}

/// The port's elastic transform: displacement fields `alpha * G(U(-d, d))` with
/// `d = 0.005 * height`, `G` a Gaussian of sigma `0.01 * side` (truncate 3, reflect), bilinear
/// resampling with reflection.
///
/// The fields are drawn at the reference scale (short side 224, where the port's parameters
/// were chosen) and, for other sizes, resized to the image with their displacements scaled by
/// the same factor; drawing them at, say, 28x28 directly would leave them unsmoothed (sigma
/// 0.28 px) and scramble pixels instead of warping the image.
pub fn elastic(x: &FloatImage, alpha: f32, rng: &mut impl Rng) -> FloatImage {
    let (w, h) = (x.width, x.height);
    let (rw, rh) = crate::weather::reference_dims(w, h);
    let max_d = rh as f32 * 0.005;
    let scale = w as f32 / rw as f32;
    let field = |rng: &mut dyn rand::RngCore| {
        // uniform(-max_d, max_d) from 16 random bits each, drawn at once (the field is then
        // smoothed over hundreds of values, so finer steps would not show)
        let mut bits = vec![0u16; rw * rh];
        rng.fill(&mut bits[..]);
        let f = FloatImage {
            width: rw,
            height: rh,
            channels: 1,
            data: bits
                .iter()
                .map(|&r| f32::from(r) * (2.0 * max_d / 65536.0) - max_d)
                .collect(),
        };
        let kx = ops::gaussian_kernel(rw as f32 * 0.01, 3.0);
        let ky = ops::gaussian_kernel(rh as f32 * 0.01, 3.0);
        let mut g = ops::separable_filter(&f, &kx, &ky, ops::Border::Reflect);
        g.data.iter_mut().for_each(|v| *v *= alpha);
        let mut g = ops::resize_layer(g, w, h);
        if (w, h) != (rw, rh) {
            g.data.iter_mut().for_each(|v| *v *= scale);
        }
        g
    };
    let dx = field(rng);
    let dy = field(rng);
    ops::remap_bilinear_reflect(x, &dx.data, &dy.data)
}

/// Pillow's `BOX` downscale along one axis of 8-bit rows (weights 1 for the source pixels whose
/// centres fall in the output pixel's footprint), rounded to 8 bits.
fn box_axis(n_in: usize, n_out: usize) -> Vec<(usize, usize)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let support = 0.5 * scale.max(1.0);
            let lo = ((center - support + 0.5) as isize).max(0) as usize;
            let hi = ((center + support + 0.5) as usize).min(n_in);
            // Pillow keeps x with (x + lo - center + 0.5) / scale in (-0.5, 0.5].
            let mut kept = (lo..hi).filter(|&x| {
                let t = (x as f64 - center + 0.5) / scale.max(1.0);
                t > -0.5 && t <= 0.5
            });
            match kept.next() {
                Some(a) => (a, kept.next_back().unwrap_or(a) + 1),
                None => (lo.min(n_in - 1), lo.min(n_in - 1) + 1),
            }
        })
        .collect()
}

multiversion! {
/// pixelate: Pillow `BOX` resize to `size * c` (horizontal then vertical pass, each rounded to
/// 8 bits), then `NEAREST` back to the original size.
///
/// The horizontal pass first forms, for every span length `n` in use, the sums of `n`
/// consecutive pixels starting at every pixel (whole-row vector additions), then picks each
/// output's sum from them and divides; the vertical pass adds whole rows.
pub(super) fn pixelate(img: &image::RgbImage, s: usize) -> image::RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plan = PixelatePlan::cached(w, h, s);
    let PixelatePlan {
        sw,
        sh,
        ref ya,
        ref recip,
        max_nx,
        ref pick,
        ref rcp,
        ref xn,
        ref expand,
        ..
    } = *plan;
    let src = img.as_raw();
    // SAFETY: `round` is only given (in its two uses below) a mean of 8-bit values plus 0.5,
    // in [0.5, 255.5], so the value fits an i32 (the unchecked conversion, unlike `as`,
    // vectorises).
    let round = |v: f32| (unsafe { v.to_int_unchecked::<i32>() }) as u8;
    // Horizontal: win[(n - 1) * rw + i] = sum of n values at byte i, i + 3, ...; for output
    // value j, the index of its sum and 1 / n.
    let rw = w * 3;
    // one spare value at the end of each: an output pixel's three sums are moved as four
    let mut win = vec![0u16; max_nx * rw + 1];
    let mut sums = vec![0u16; sw * 3 + 1];
    let mut tmp = Vec::with_capacity(h * sw * 3);
    for y in 0..h {
        let row = &src[y * rw..(y + 1) * rw];
        let (first, rest) = win[..max_nx * rw].split_at_mut(rw);
        for (o, &v) in first.iter_mut().zip(row) {
            *o = u16::from(v);
        }
        let mut prev = &*first;
        for (n, cur) in rest.chunks_exact_mut(rw).enumerate() {
            // sums of n + 2 values: those of n + 1 plus the value 3 (n + 1) bytes on
            let off = 3 * (n + 1);
            for ((o, &p), &v) in cur[..rw - off].iter_mut().zip(prev).zip(&row[off..]) {
                *o = p + u16::from(v);
            }
            prev = cur;
        }
        pick_sums(&win, pick, &mut sums);
        tmp.extend(sums[..sw * 3].iter().zip(rcp).map(|(&v, &r)| round(f32::from(v) * r + 0.5)));
    }
    let mut small = vec![0u8; sh * sw * 3 + 16];
    let mut acc = vec![0u32; sw * 3];
    for (oy, &(a, b)) in ya.iter().enumerate() {
        acc.iter_mut().for_each(|v| *v = 0);
        for y in a..b {
            for (s, &v) in acc.iter_mut().zip(&tmp[y * sw * 3..(y + 1) * sw * 3]) {
                *s += u32::from(v);
            }
        }
        let r = recip[b - a];
        for (o, &s) in small[oy * sw * 3..(oy + 1) * sw * 3].iter_mut().zip(&acc) {
            *o = round(s as f32 * r + 0.5);
        }
    }
    // NEAREST back up: expand each small row once (4-byte copies, each pixel's fourth byte
    // overwritten by the next pixel; or, with AVX2, 16 output bytes per byte shuffle) into a
    // row buffer with spare bytes for the overhang, and append it to every output row that
    // uses it (no zero-filled output).
    let mut line = vec![0u8; w * 3 + 16];
    let mut out = Vec::with_capacity(w * h * 3);
    let mut last: Option<usize> = None;
    for y in 0..h {
        let sy = (((y as f64 + 0.5) * sh as f64 / h as f64) as usize).min(sh - 1);
        if last != Some(sy) {
            let row = &small[sy * sw * 3..];
            expand_row(row, xn, expand.as_deref(), &mut line);
            last = Some(sy);
        }
        out.extend_from_slice(&line[..w * 3]);
    }
    image::RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| img.clone())
}
}

/// One small row to full width by [`PixelatePlan::xn`], with AVX2 byte shuffles by `plan`
/// where there is one.
fn expand_row(row: &[u8], xn: &[usize], plan: Option<&[(usize, [i8; 16])]>, line: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(plan), Some(t)) = (plan, simd::avx2()) {
        simd::ops::expand_row(t, row, plan, line);
        return;
    }
    let _ = plan;
    for (x, &sx) in xn.iter().enumerate() {
        line[3 * x..3 * x + 4].copy_from_slice(&row[sx..sx + 4]);
    }
}

/// What [`pixelate`] computes from the sizes alone, kept per thread for the last few sizes.
struct PixelatePlan {
    key: (usize, usize, usize),
    /// The small image's size.
    sw: usize,
    sh: usize,
    /// Source row span of each small row.
    ya: Vec<(usize, usize)>,
    /// `1 / n` for span lengths `n` (index 0 unused).
    recip: Vec<f32>,
    /// The longest horizontal span.
    max_nx: usize,
    /// Per small value: the index of its span's sum in the window sums, and `1 / n`.
    pick: Vec<usize>,
    rcp: Vec<f32>,
    /// Per output pixel: the byte offset of its small pixel.
    xn: Vec<usize>,
    /// The byte-shuffle plan of the expansion, if it has one.
    expand: Option<Vec<(usize, [i8; 16])>>,
}

impl PixelatePlan {
    fn new(w: usize, h: usize, s: usize) -> Self {
        let c = PIXELATE[s];
        let sw = ((w as f32 * c) as usize).max(1);
        let sh = ((h as f32 * c) as usize).max(1);
        let xa = box_axis(w, sw);
        let ya = box_axis(h, sh);
        // Rounded mean, as Pillow's fixed-point box filter gives it.
        let max_n = xa.iter().chain(&ya).map(|&(a, b)| b - a).max().unwrap_or(1);
        let recip: Vec<f32> = (0..=max_n).map(|n| 1.0 / n.max(1) as f32).collect();
        let rw = w * 3;
        let max_nx = xa.iter().map(|&(a, b)| b - a).max().unwrap_or(1);
        let pick = xa.iter().map(|&(a, b)| (b - a - 1) * rw + a * 3).collect();
        let rcp = xa.iter().flat_map(|&(a, b)| [recip[b - a]; 3]).collect();
        let xn: Vec<usize> = (0..w)
            .map(|x| 3 * (((x as f64 + 0.5) * sw as f64 / w as f64) as usize).min(sw - 1))
            .collect();
        let expand = expand_plan(&xn, w * 3);
        PixelatePlan {
            key: (w, h, s),
            sw,
            sh,
            ya,
            recip,
            max_nx,
            pick,
            rcp,
            xn,
            expand,
        }
    }

    /// The plan for these sizes: this thread's kept one, or a new one (kept, the oldest of four
    /// dropped).
    fn cached(w: usize, h: usize, s: usize) -> std::rc::Rc<Self> {
        thread_local! {
            static PLANS: std::cell::RefCell<Vec<std::rc::Rc<PixelatePlan>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        PLANS.with_borrow_mut(|plans| {
            if let Some(p) = plans.iter().find(|p| p.key == (w, h, s)) {
                return p.clone();
            }
            let p = std::rc::Rc::new(PixelatePlan::new(w, h, s));
            if plans.len() == 4 {
                plans.remove(0);
            }
            plans.push(p.clone());
            p
        })
    }
}

/// `sums[3 i..3 i + 3] = win[pick[i]..pick[i] + 3]` for every `i` (moved as 4 values, the
/// fourth overwritten by the next; `sums` has one spare value, `win` at least one after each).
#[inline(never)]
fn pick_sums(win: &[u16], pick: &[usize], sums: &mut [u16]) {
    for (ox, &i) in pick.iter().enumerate() {
        sums[3 * ox..3 * ox + 4].copy_from_slice(&win[i..i + 4]);
    }
}

/// For expanding a row by byte shuffles: for each 16 bytes of output (`n` bytes in all, output
/// byte `b` copies source byte `xn[b / 3] + b % 3`), the first source byte and the offsets of
/// all 16 from it (-128 = none, past the end). `None` if some chunk's sources span more than
/// 16 bytes (not when shrinking then enlarging, as pixelate does).
fn expand_plan(xn: &[usize], n: usize) -> Option<Vec<(usize, [i8; 16])>> {
    (0..n.div_ceil(16))
        .map(|c| {
            let off = xn[16 * c / 3];
            let mut mask = [-128i8; 16];
            for (j, m) in mask.iter_mut().enumerate().take(n - 16 * c) {
                let b = 16 * c + j;
                *m = i8::try_from((xn[b / 3] + b % 3).checked_sub(off)?)
                    .ok()
                    .filter(|&d| d < 16)?;
            }
            Some((off, mask))
        })
        .collect()
}

/// jpeg_compression: a JPEG round trip at the severity's quality.
pub(super) fn jpeg(img: &image::RgbImage, s: usize) -> image::RgbImage {
    crate::jpeg::jpeg_roundtrip_image(img, JPEG[s])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pixelate written plainly: box means per axis (horizontal then vertical, each rounded),
    /// nearest back up.
    fn pixelate_plain(img: &image::RgbImage, s: usize) -> image::RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let c = PIXELATE[s];
        let (sw, sh) = (((w as f32 * c) as usize).max(1), ((h as f32 * c) as usize).max(1));
        let (xa, ya) = (box_axis(w, sw), box_axis(h, sh));
        let mean = |sum: u32, n: usize| (sum as f32 * (1.0 / n as f32) + 0.5) as u8;
        let tmp: Vec<Vec<[u8; 3]>> = (0..h)
            .map(|y| {
                xa.iter()
                    .map(|&(a, b)| {
                        std::array::from_fn(|k| {
                            mean(
                                (a..b).map(|x| u32::from(img.get_pixel(x as u32, y as u32)[k])).sum(),
                                b - a,
                            )
                        })
                    })
                    .collect()
            })
            .collect();
        let small: Vec<Vec<[u8; 3]>> = ya
            .iter()
            .map(|&(a, b)| {
                (0..sw)
                    .map(|ox| std::array::from_fn(|k| mean((a..b).map(|y| u32::from(tmp[y][ox][k])).sum(), b - a)))
                    .collect()
            })
            .collect();
        image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let sx = (((x as f64 + 0.5) * sw as f64 / w as f64) as usize).min(sw - 1);
            let sy = (((y as f64 + 0.5) * sh as f64 / h as f64) as usize).min(sh - 1);
            image::Rgb(small[sy][sx])
        })
    }

    #[test]
    fn pixelate_matches_the_plain_computation() {
        for (w, h) in [(224, 224), (40, 30), (28, 28), (7, 3), (301, 97)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 37 + y * 11) as u8,
                    (x * y + 5) as u8,
                    (x ^ y).wrapping_mul(29) as u8,
                ])
            });
            for s in 0..5 {
                assert_eq!(pixelate(&img, s), pixelate_plain(&img, s), "{w}x{h} severity index {s}");
            }
        }
    }
}
