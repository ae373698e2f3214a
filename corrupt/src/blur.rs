//! Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur.
//!
//! One file per family of the paper's table, so that each corruption's per-severity parameters
//! sit beside the code that applies them; the filters themselves are in [`crate::ops`].

use rand::Rng;

use crate::Corruption;
use crate::ops::{self, FloatImage};
use crate::simd::{self, Avx2};

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
pub(super) fn apply(img: &image::RgbImage, c: Corruption, s: usize, scale: f32, rng: &mut impl Rng) -> image::RgbImage {
    let x = || FloatImage::from_rgb8(img);
    match c {
        Corruption::DefocusBlur => {
            let (r, alias) = DEFOCUS[s];
            ops::disk_blur(&x(), r * scale, alias).to_rgb8()
        }
        Corruption::GlassBlur => {
            let (sigma, delta, iterations) = GLASS[s];
            let delta = ((delta as f32 * scale).round() as usize).max(1);
            glass_blur(img, sigma * scale, delta, iterations, rng)
        }
        Corruption::MotionBlur => {
            let (r, sigma) = MOTION[s];
            let angle: f32 = rng.random_range(-45.0..45.0);
            let r = ((r as f32 * scale).round() as usize).max(1);
            // The reference blurs the 8-bit image; the result is truncated like the others.
            ops::motion_blur(&x(), r, sigma * scale, angle).to_rgb8()
        }
        Corruption::ZoomBlur => {
            let (step, count) = ZOOM[s];
            zoom_blur(&x(), (0..count).map(|i| 1.0 + i as f32 * step)).to_rgb8()
        }
        _ => {
            let sigma = GAUSSIAN[s] * scale;
            gaussian_blur_fixed(img, sigma).unwrap_or_else(|| ops::gaussian_blur(&x(), sigma).to_rgb8())
        }
    }
}

/// Glass blur: Gaussian blur, 8-bit truncation, `iterations` sweeps (bottom-right to top-left)
/// in which each pixel takes the value of a random one at most `delta` away (offsets in
/// `-delta..delta`, as the reference's `randint`), Gaussian blur again.
///
/// The reference writes a swap, `x[h, w], x[h', w'] = x[h', w'], x[h, w]`, but on NumPy pixel
/// views that copies `x[h', w']` into `x[h, w]` and leaves `x[h', w']` unchanged; ImageNet-C was
/// made that way, so this does the same.
///
/// Both blurs run in fixed point on bytes ([`gaussian_blur_fixed`]) when the kernel allows,
/// with the sweeps on byte pixels in between; otherwise in `f32`.
pub(super) fn glass_blur(
    img: &image::RgbImage,
    sigma: f32,
    delta: usize,
    iterations: usize,
    rng: &mut impl Rng,
) -> image::RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if let Some(mut b) = gaussian_blur_fixed(img, sigma) {
        let (px, _) = b.as_mut().as_chunks_mut::<3>();
        sweep(px, w, h, delta, iterations, rng);
        if let Some(out) = gaussian_blur_fixed(&b, sigma) {
            return out;
        }
    }
    let mut b = ops::gaussian_blur(&FloatImage::from_rgb8(img), sigma);
    b.quantize_trunc();
    let (px, _) = b.data.as_chunks_mut::<3>();
    sweep(px, w, h, delta, iterations, rng);
    ops::gaussian_blur(&b, sigma).to_rgb8()
}

/// glass_blur's sweeps over `w` x `h` pixels: each pixel's offset pair from 32 random bits, a
/// row's worth drawn at once: dx from the low 16 bits and dy from the high 16, each
/// `(bits * 2d) >> 16` (exactly uniform when 2d is a power of two, within 1e-4 otherwise).
fn sweep<T: Copy>(px: &mut [T], w: usize, h: usize, delta: usize, iterations: usize, rng: &mut impl Rng) {
    let d = delta as isize;
    let span = 2 * delta as u64;
    let mut bits = vec![0u32; w];
    for _ in 0..iterations {
        let mut yy = h as isize - d;
        while yy > d {
            let count = (w as isize - 2 * d).max(0) as usize;
            let bits = &mut bits[..count];
            rng.fill(bits);
            for (k, &r) in bits.iter().enumerate() {
                let xx = w as isize - d - k as isize;
                let dx = ((u64::from(r & 0xffff) * span) >> 16) as isize - d;
                let dy = ((u64::from(r >> 16) * span) >> 16) as isize - d;
                px[yy as usize * w + xx as usize] = px[(yy + dy) as usize * w + (xx + dx) as usize];
            }
            yy -= 1;
        }
    }
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

/// gaussian_blur straight from and to 8-bit RGB in 16-bit fixed point, about twice the speed
/// of the `f32` filters (16 lanes per AVX2 instruction instead of 8). Values are levels times
/// 128; weights are the `f32` kernel times 65,536, rounded, summing to exactly 65,536; each
/// product is `(value * weight) >> 16` (one `pmulhw`), floored, so each pass starts from half
/// a unit per tap to centre the flooring. The result is within 0.1 of a level of the exact
/// blur, so it is truncated to the same byte as the `f32` path except for values that close to
/// an integer, which differ by one. `None` when a weight reaches 0.5 (sigma below about 0.8,
/// small images), where the `f32` path is used.
pub(super) fn gaussian_blur_fixed(img: &image::RgbImage, sigma: f32) -> Option<image::RgbImage> {
    let k = ops::gaussian_kernel(sigma, 4.0);
    let mut q: Vec<i32> = k.iter().map(|&v| (f64::from(v) * 65536.0).round() as i32).collect();
    let r = k.len() / 2;
    q[r] += 65536 - q.iter().sum::<i32>();
    if q.iter().any(|&v| !(0..32768).contains(&v)) {
        return None;
    }
    let q: Vec<i16> = q.into_iter().map(|v| v as i16).collect();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rows = fixed_rows(img.as_raw(), w, h, &q);
    let out = fixed_cols(&rows, w, h, &q);
    image::RgbImage::from_raw(w as u32, h as u32, out)
}

/// `(a * b) >> 16`, the high half of a 16-bit product (`pmulhw`).
#[inline(always)]
fn mulhi(a: i16, b: i16) -> i16 {
    ((i32::from(a) * i32::from(b)) >> 16) as i16
}

/// Outputs per block: four AVX2 registers of 16 lanes.
pub(crate) const FIXED_BLOCK: usize = 64;

/// One block of outputs: `bias + sum over taps t of mulhi(src[starts[t] + j], q[t])` for
/// `j < FIXED_BLOCK`, each sum kept in registers over all taps (the AVX2 kernel when `avx2`
/// holds the CPU's token, the same integers either way).
pub(super) fn taps_block(
    src: &[i16],
    starts: &[usize],
    q: &[i16],
    bias: i16,
    avx2: Option<Avx2>,
) -> [i16; FIXED_BLOCK] {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = avx2 {
        return simd::ops::taps_block(t, src, starts, q, bias);
    }
    let _ = avx2;
    let mut acc = [bias; FIXED_BLOCK];
    for (&s, &qt) in starts.iter().zip(q) {
        for (a, &v) in acc.iter_mut().zip(&src[s..s + FIXED_BLOCK]) {
            *a = a.wrapping_add(mulhi(v, qt));
        }
    }
    acc
}

/// The horizontal pass: each row's bytes times 128, extended by the kernel radius with the
/// edge pixels ("nearest"), correlated with `q` per channel.
fn fixed_rows(src: &[u8], w: usize, h: usize, q: &[i16]) -> Vec<i16> {
    let (n, r) = (w * 3, q.len() / 2);
    let bias = (q.len() / 2) as i16;
    let avx2 = simd::avx2();
    let mut out = vec![0i16; n * h];
    let mut ext = vec![0i16; n + 6 * r];
    let mut starts = vec![0usize; q.len()];
    for (row, o) in src.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let (left, rest) = ext.split_at_mut(3 * r);
        let (mid, right) = rest.split_at_mut(n);
        for (e, &v) in mid.iter_mut().zip(row) {
            *e = i16::from(v) << 7;
        }
        for px in left.chunks_exact_mut(3) {
            px.copy_from_slice(&mid[..3]);
        }
        for px in right.chunks_exact_mut(3) {
            px.copy_from_slice(&mid[n - 3..]);
        }
        if n < FIXED_BLOCK {
            for (i, o) in o.iter_mut().enumerate() {
                *o = q
                    .iter()
                    .enumerate()
                    .fold(bias, |a, (t, &qt)| a.wrapping_add(mulhi(ext[i + 3 * t], qt)));
            }
            continue;
        }
        for i in block_starts(n) {
            for (t, s) in starts.iter_mut().enumerate() {
                *s = i + 3 * t;
            }
            o[i..i + FIXED_BLOCK].copy_from_slice(&taps_block(&ext, &starts, q, bias, avx2));
        }
    }
    out
}

/// The vertical pass ("nearest" rows past the edges) in strips of [`FIXED_BLOCK`] values, each
/// top to bottom so the rows its taps read stay in L1, then `>> 7` to a byte.
fn fixed_cols(rows: &[i16], w: usize, h: usize, q: &[i16]) -> Vec<u8> {
    let (n, r) = (w * 3, q.len() / 2);
    let bias = (q.len() / 2) as i16;
    let avx2 = simd::avx2();
    let row_starts: Vec<usize> = (0..h + 2 * r)
        .map(|ye| (ye as isize - r as isize).clamp(0, h as isize - 1) as usize * n)
        .collect();
    let to_byte = |v: i16| (v >> 7).clamp(0, 255) as u8;
    let mut out = vec![0u8; n * h];
    if n < FIXED_BLOCK {
        for y in 0..h {
            for i in 0..n {
                let a = q
                    .iter()
                    .zip(&row_starts[y..y + q.len()])
                    .fold(bias, |a, (&qt, &s)| a.wrapping_add(mulhi(rows[s + i], qt)));
                out[y * n + i] = to_byte(a);
            }
        }
        return out;
    }
    let mut starts = vec![0usize; q.len()];
    for i in block_starts(n) {
        for y in 0..h {
            for (s, &rs) in starts.iter_mut().zip(&row_starts[y..y + q.len()]) {
                *s = rs + i;
            }
            let acc = taps_block(rows, &starts, q, bias, avx2);
            for (o, &a) in out[y * n + i..y * n + i + FIXED_BLOCK].iter_mut().zip(&acc) {
                *o = to_byte(a);
            }
        }
    }
    out
}

/// Starts of the [`FIXED_BLOCK`]-value blocks covering `0..n` (`n >= FIXED_BLOCK`): whole
/// blocks, then one ending at `n` that overlaps the previous (its values are computed twice,
/// the same way).
fn block_starts(n: usize) -> impl Iterator<Item = usize> {
    let full = n / FIXED_BLOCK * FIXED_BLOCK;
    (0..full)
        .step_by(FIXED_BLOCK)
        .chain((full < n).then_some(n - FIXED_BLOCK))
}
