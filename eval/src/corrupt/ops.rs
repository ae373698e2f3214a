//! Parameterised building blocks of the corruptions, public so that ImageNet-P sequences (and
//! anything else) can reuse them with their own parameters.
//!
//! Pixel convention: a [`FloatImage`] is `f32`, row-major, channels interleaved (HWC), values
//! nominally in `[0, 1]` (intermediate results may leave that range; callers clip). Single
//! layers (snow, liquid, plasma) are `FloatImage`s with one channel. Lengths (radii, sigmas) are
//! in pixels of the image they are applied to; [`super`] scales them for sizes other than 224.
//! Every random primitive takes the caller's RNG, so a seeded RNG makes it reproducible.

use rand::Rng;

pub use super::blur::zoom_blur;
pub use super::digital::elastic as elastic_transform;
pub use super::jpeg::{jpeg_roundtrip, jpeg_roundtrip_image};

/// An image or layer: `f32` values, HWC interleaved, nominally in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel (3 for colour images, 1 for layers).
    pub channels: usize,
    /// `height * width * channels` values.
    pub data: Vec<f32>,
}

impl FloatImage {
    /// A zero-filled image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        FloatImage {
            width,
            height,
            channels,
            data: vec![0.0; width * height * channels],
        }
    }

    /// Converts 8-bit RGB to `[0, 1]` (value / 255).
    pub fn from_rgb8(img: &image::RgbImage) -> Self {
        FloatImage {
            width: img.width() as usize,
            height: img.height() as usize,
            channels: 3,
            data: bytes_to_unit(img.as_raw()),
        }
    }

    /// Converts a 3-channel image back to 8-bit RGB as the reference code does: clip to `[0, 1]`,
    /// times 255, truncated (`np.uint8`). A 1-channel image is broadcast to grey RGB; other
    /// channel counts keep their first three channels.
    pub fn to_rgb8(&self) -> image::RgbImage {
        let out: Vec<u8> = match self.channels {
            3 => unit_to_bytes(&self.data),
            c => self
                .data
                .chunks_exact(c.max(1))
                .flat_map(|px| (0..3).map(move |k| to_u8_trunc(px[k.min(px.len() - 1)])))
                .collect(),
        };
        image::RgbImage::from_raw(self.width as u32, self.height as u32, out)
            .unwrap_or_else(|| image::RgbImage::new(self.width as u32, self.height as u32))
    }

    /// Row `y` as a slice of `width * channels` values.
    pub fn row(&self, y: usize) -> &[f32] {
        let n = self.width * self.channels;
        &self.data[y * n..(y + 1) * n]
    }

    /// Clips every value to `[0, 1]` in place.
    pub fn clip01(&mut self) {
        for v in &mut self.data {
            *v = v.clamp(0.0, 1.0);
        }
    }

    /// Rounds every value to the nearest multiple of 1/255 after clipping (an 8-bit round trip).
    pub fn quantize_round(&mut self) {
        for v in &mut self.data {
            // + 0.5 and truncation round (the value is >= 0); faster than `round`
            *v = ((v.clamp(0.0, 1.0) * 255.0 + 0.5) as i32) as f32 * (1.0 / 255.0);
        }
    }

    /// Truncates every value to a multiple of 1/255 after clipping (`np.uint8(x * 255) / 255`).
    pub fn quantize_trunc(&mut self) {
        for v in &mut self.data {
            *v = f32::from(to_u8_trunc(*v)) * (1.0 / 255.0);
        }
    }
}

multiversion! {
    /// `v / 255` for every byte.
    fn bytes_to_unit(bytes: &[u8]) -> Vec<f32> {
        bytes.iter().map(|&v| f32::from(v) / 255.0).collect()
    }
}

multiversion! {
    /// [`to_u8_trunc`] of every value.
    fn unit_to_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().map(|&v| to_u8_trunc(v)).collect()
    }
}

/// `np.uint8(clip(v, 0, 1) * 255)`: clip, scale, truncate.
#[inline(always)]
pub fn to_u8_trunc(v: f32) -> u8 {
    // `max` first maps NaN to 0; a hair of slack keeps values that are exactly k/255 in real
    // arithmetic at k.
    #[allow(clippy::manual_clamp)] // deliberately not clamp: NaN must become 0, not stay NaN
    let x = v.max(0.0).min(1.0) * 255.0 + 1e-4;
    // SAFETY: x is finite and in [0, 255.0001], so it fits an i32; the unchecked conversion
    // (unlike `as`, which must handle NaN and overflow) lets the compiler vectorise it.
    (unsafe { x.to_int_unchecked::<i32>() }) as u8
}

// ---------------------------------------------------------------------------------------------
// Separable filtering

/// The normalised 1-D Gaussian of scipy / scikit-image: radius `int(truncate * sigma + 0.5)`.
pub fn gaussian_kernel(sigma: f32, truncate: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let radius = (truncate * sigma + 0.5) as i64;
    let mut k: Vec<f32> = (-radius..=radius)
        .map(|x| (-0.5 * (x as f32 / sigma).powi(2)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// How a filter reads outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Repeat the edge pixel (`aaa|abcd|ddd`; scipy "nearest", OpenCV REPLICATE).
    Nearest,
    /// Mirror including the edge (`cba|abcd|dcb`... scipy "reflect" is `ba|abcd|dc`).
    Reflect,
    /// Mirror about the edge pixel (`dcb|abcd|cba`; OpenCV REFLECT_101, scipy "mirror").
    Reflect101,
}

/// Maps an out-of-range index into `0..n` by `border`.
#[inline]
pub fn border_index(i: isize, n: usize, border: Border) -> usize {
    let n = n as isize;
    if (0..n).contains(&i) {
        return i as usize;
    }
    if n == 1 {
        return 0;
    }
    match border {
        Border::Nearest => i.clamp(0, n - 1) as usize,
        Border::Reflect => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - 1 - m }) as usize
        }
        Border::Reflect101 => {
            let period = 2 * n - 2;
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - m }) as usize
        }
    }
}

/// Correlates every row and then every column with the centred odd-length `kernel` (separable
/// filtering, per channel). `kernel` has odd length.
pub fn separable_filter(img: &FloatImage, kx: &[f32], ky: &[f32], border: Border) -> FloatImage {
    let tmp = filter_rows(img, kx, border);
    filter_cols(&tmp, ky, border)
}

multiversion! {
/// Correlates each row with `k` (odd length), per channel.
pub fn filter_rows(img: &FloatImage, k: &[f32], border: Border) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let r = k.len() / 2;
    let mut out = FloatImage::zeros(w, h, c);
    let mut ext = vec![0.0f32; (w + 2 * r) * c];
    for y in 0..h {
        let row = img.row(y);
        ext[r * c..(r + w) * c].copy_from_slice(row);
        for xe in (0..r).chain(r + w..w + 2 * r) {
            let xs = border_index(xe as isize - r as isize, w, border);
            ext[xe * c..xe * c + c].copy_from_slice(&row[xs * c..xs * c + c]);
        }
        let o = &mut out.data[y * w * c..(y + 1) * w * c];
        // 32 outputs at a time accumulate in registers over all taps (same order of additions
        // as tap by tap over the whole row, so the same bits)
        let n = w * c;
        let mut i = 0;
        while i + 32 <= n {
            let mut acc = [0.0f32; 32];
            for (t, &kv) in k.iter().enumerate() {
                let src = &ext[t * c + i..t * c + i + 32];
                for (a, &sv) in acc.iter_mut().zip(src) {
                    *a += kv * sv;
                }
            }
            o[i..i + 32].copy_from_slice(&acc);
            i += 32;
        }
        for (t, &kv) in k.iter().enumerate() {
            let src = &ext[t * c + i..t * c + n];
            for (ov, sv) in o[i..].iter_mut().zip(src) {
                *ov += kv * sv;
            }
        }
    }
    out
}
}

multiversion! {
/// Correlates each column with `k` (odd length), per channel: in strips of 32 values, each
/// strip top to bottom, so that the rows of a strip that the taps read stay in L1 from one
/// output row to the next; the 32 outputs accumulate in registers over all taps.
pub fn filter_cols(img: &FloatImage, k: &[f32], border: Border) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let r = k.len() / 2;
    let n = w * c;
    let mut out = FloatImage::zeros(w, h, c);
    let rows: Vec<usize> = (0..h + 2 * r)
        .map(|ye| border_index(ye as isize - r as isize, h, border) * n)
        .collect();
    const B: usize = 32;
    let full = n / B * B;
    for i in (0..full).step_by(B) {
        for y in 0..h {
            let mut acc = [0.0f32; B];
            for (&kv, &start) in k.iter().zip(&rows[y..y + k.len()]) {
                let src = &img.data[start + i..start + i + B];
                for (a, &sv) in acc.iter_mut().zip(src) {
                    *a += kv * sv;
                }
            }
            out.data[y * n + i..y * n + i + B].copy_from_slice(&acc);
        }
    }
    for y in 0..h {
        let o = &mut out.data[y * n + full..(y + 1) * n];
        for (&kv, &start) in k.iter().zip(&rows[y..y + k.len()]) {
            for (ov, sv) in o.iter_mut().zip(&img.data[start + full..start + n]) {
                *ov += kv * sv;
            }
        }
    }
    out
}
}

/// Gaussian blur with standard deviation `sigma` pixels on each axis, per channel, as
/// scikit-image's `gaussian` (truncate 4, "nearest" border).
pub fn gaussian_blur(img: &FloatImage, sigma: f32) -> FloatImage {
    gaussian_blur_with(img, sigma, 4.0, Border::Nearest)
}

/// Gaussian blur with an explicit truncation (in sigmas) and border.
pub fn gaussian_blur_with(img: &FloatImage, sigma: f32, truncate: f32, border: Border) -> FloatImage {
    let k = gaussian_kernel(sigma, truncate);
    separable_filter(img, &k, &k, border)
}

/// Box blur of size `kw` x `kh` (OpenCV `blur`, REFLECT_101 border), per channel.
pub fn box_blur(img: &FloatImage, kw: usize, kh: usize) -> FloatImage {
    let kx = vec![1.0 / kw as f32; kw.max(1)];
    let ky = vec![1.0 / kh as f32; kh.max(1)];
    separable_filter(img, &kx, &ky, Border::Reflect101)
}

multiversion! {
/// Correlates with a dense 2-D kernel (`kh` rows of `kw`, both odd), per channel, skipping zero
/// taps (OpenCV `filter2D`).
pub fn filter_2d(img: &FloatImage, kernel: &[f32], kw: usize, kh: usize, border: Border) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let (rx, ry) = (kw / 2, kh / 2);
    // Pad horizontally once per source row.
    let ew = w + 2 * rx;
    let mut ext = vec![0.0f32; h * ew * c];
    for y in 0..h {
        let row = img.row(y);
        let dst = &mut ext[y * ew * c..(y + 1) * ew * c];
        dst[rx * c..(rx + w) * c].copy_from_slice(row);
        for xe in (0..rx).chain(rx + w..ew) {
            let xs = border_index(xe as isize - rx as isize, w, border);
            dst[xe * c..xe * c + c].copy_from_slice(&row[xs * c..xs * c + c]);
        }
    }
    let mut out = FloatImage::zeros(w, h, c);
    for y in 0..h {
        let o = &mut out.data[y * w * c..(y + 1) * w * c];
        for ty in 0..kh {
            let ys = border_index(y as isize + ty as isize - ry as isize, h, border);
            let src_row = &ext[ys * ew * c..(ys + 1) * ew * c];
            for tx in 0..kw {
                let kv = kernel[ty * kw + tx];
                if kv == 0.0 {
                    continue;
                }
                let src = &src_row[tx * c..tx * c + w * c];
                for (ov, sv) in o.iter_mut().zip(src) {
                    *ov += kv * sv;
                }
            }
        }
    }
    out
}
}

/// The anti-aliased disk kernel of the reference `disk(radius, alias_blur)`: the indicator of
/// `x^2 + y^2 <= radius^2` on a grid of half-size `max(8, ceil(radius))` (8 as in the reference
/// for radii up to 8), normalised, then Gaussian-blurred (3x3 kernel up to radius 8, 5x5
/// beyond, REFLECT_101, as OpenCV `GaussianBlur`). Returns (kernel, side).
pub fn disk_kernel(radius: f32, alias_sigma: f32) -> (Vec<f32>, usize) {
    let half = if radius <= 8.0 { 8 } else { radius.ceil() as usize };
    let side = 2 * half + 1;
    let mut k = vec![0.0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (x as f32 - half as f32, y as f32 - half as f32);
            if dx * dx + dy * dy <= radius * radius {
                k[y * side + x] = 1.0;
            }
        }
    }
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum.max(f32::MIN_POSITIVE));
    let ksize = if radius <= 8.0 { 3 } else { 5 };
    let g = opencv_gaussian_kernel(ksize, alias_sigma);
    let img = FloatImage {
        width: side,
        height: side,
        channels: 1,
        data: k,
    };
    (separable_filter(&img, &g, &g, Border::Reflect101).data, side)
}

/// OpenCV's `getGaussianKernel(ksize, sigma)` for sigma > 0.
pub fn opencv_gaussian_kernel(ksize: usize, sigma: f32) -> Vec<f32> {
    let half = (ksize as f32 - 1.0) / 2.0;
    let sigma = sigma.max(1e-3);
    let mut k: Vec<f32> = (0..ksize)
        .map(|i| (-((i as f32 - half).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

multiversion! {
/// Defocus: each channel correlated with [`disk_kernel`] (REFLECT_101 border, as OpenCV
/// `filter2D` does it), computed as a flat disk (one difference of row prefix sums per disk
/// row) followed by the separable anti-aliasing Gaussian, instead of a dense 2-D kernel. The
/// two agree except where the reference's kernel grid cuts the Gaussian tail of the disk
/// (radius 8 and above), a change of well under one 8-bit level.
pub fn disk_blur(img: &FloatImage, radius: f32, alias_sigma: f32) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let radius = radius.max(0.0);
    let ri = radius.floor() as usize;
    let half_widths: Vec<usize> = (0..=2 * ri)
        .map(|j| {
            let dy = j as f32 - ri as f32;
            (radius * radius - dy * dy).max(0.0).sqrt().floor() as usize
        })
        .collect();
    let count: usize = half_widths.iter().map(|a| 2 * a + 1).sum();
    let g = if radius <= 8.0 { 1 } else { 2 };
    let gk = opencv_gaussian_kernel(2 * g + 1, alias_sigma);
    let m = ri + g;
    let (ew, eh) = (w + 2 * m, h + 2 * m);
    // Row prefix sums of the REFLECT_101-extended image: pre[ye][(xe + 1) * c + k].
    let pw = (ew + 1) * c;
    let cols: Vec<usize> = (0..ew)
        .map(|xe| border_index(xe as isize - m as isize, w, Border::Reflect101))
        .collect();
    let mut pre = vec![0.0f32; eh * pw];
    for ye in 0..eh {
        let ys = border_index(ye as isize - m as isize, h, Border::Reflect101);
        let prow = &mut pre[ye * pw..(ye + 1) * pw];
        match c {
            1 => prefix_row::<1>(img.row(ys), &cols, prow),
            3 => prefix_row::<3>(img.row(ys), &cols, prow),
            _ => prefix_row_any(img.row(ys), c, &cols, prow),
        }
    }
    // Flat disk on the image plus a margin of g: d[yd][xd], image coords (yd - g, xd - g), in
    // blocks of 32 values summed over all disk rows in registers.
    let (dw, dh) = (w + 2 * g, h + 2 * g);
    let inv = 1.0 / count.max(1) as f32;
    let mut d = vec![0.0f32; dh * dw * c];
    const B: usize = 32;
    for yd in 0..dh {
        let drow = &mut d[yd * dw * c..(yd + 1) * dw * c];
        // E row: image row (yd - g) + (j - ri) + m = yd + j
        let spans = |j: usize, a: usize| {
            let prow = &pre[(yd + j) * pw..(yd + j + 1) * pw];
            (&prow[(ri + a + 1) * c..(ri + a + 1) * c + dw * c], &prow[(ri - a) * c..(ri - a) * c + dw * c])
        };
        let blocks = drow.len() / B;
        for b in 0..blocks {
            let mut acc = [0.0f32; B];
            for (j, &a) in half_widths.iter().enumerate() {
                let (hi, lo) = spans(j, a);
                for ((o, &p), &q) in acc.iter_mut().zip(&hi[b * B..(b + 1) * B]).zip(&lo[b * B..(b + 1) * B]) {
                    *o += p - q;
                }
            }
            for (o, &v) in drow[b * B..(b + 1) * B].iter_mut().zip(&acc) {
                *o = v * inv;
            }
        }
        let tail = &mut drow[blocks * B..];
        for (j, &a) in half_widths.iter().enumerate() {
            let (hi, lo) = spans(j, a);
            for ((o, &p), &q) in tail.iter_mut().zip(&hi[blocks * B..]).zip(&lo[blocks * B..]) {
                *o += p - q;
            }
        }
        tail.iter_mut().for_each(|v| *v *= inv);
    }
    // Anti-aliasing Gaussian over the margin ("valid" correlation).
    let mut t = vec![0.0f32; dh * w * c];
    for yd in 0..dh {
        let src = &d[yd * dw * c..(yd + 1) * dw * c];
        let trow = &mut t[yd * w * c..(yd + 1) * w * c];
        for (tx, &kv) in gk.iter().enumerate() {
            for (o, &v) in trow.iter_mut().zip(&src[tx * c..tx * c + w * c]) {
                *o += kv * v;
            }
        }
    }
    let mut out = FloatImage::zeros(w, h, c);
    for y in 0..h {
        let orow = &mut out.data[y * w * c..(y + 1) * w * c];
        for (ty, &kv) in gk.iter().enumerate() {
            for (o, &v) in orow.iter_mut().zip(&t[(y + ty) * w * c..(y + ty + 1) * w * c]) {
                *o += kv * v;
            }
        }
    }
    out
}
}

/// `prow[(xe + 1) * C + k]` = sum of `src[cols[x] * C + k]` for `x <= xe` (`prow[..C]` stays 0),
/// channel by channel in order, the sums kept in registers.
#[inline(always)]
fn prefix_row<const C: usize>(src: &[f32], cols: &[usize], prow: &mut [f32]) {
    let mut acc = [0.0f32; C];
    for (&xs, o) in cols.iter().zip(prow[C..].chunks_exact_mut(C)) {
        for (a, &v) in acc.iter_mut().zip(&src[xs * C..xs * C + C]) {
            *a += v;
        }
        o.copy_from_slice(&acc);
    }
}

/// [`prefix_row`] for any channel count.
fn prefix_row_any(src: &[f32], c: usize, cols: &[usize], prow: &mut [f32]) {
    let mut acc = vec![0.0f32; c];
    for (&xs, o) in cols.iter().zip(prow[c..].chunks_exact_mut(c)) {
        for (a, &v) in acc.iter_mut().zip(&src[xs * c..xs * c + c]) {
            *a += v;
        }
        o.copy_from_slice(&acc);
    }
}

// ---------------------------------------------------------------------------------------------
// Geometric

multiversion! {
/// The reference motion blur: a one-sided Gaussian (`sigma`) over `2 * radius + 1` taps, tap
/// `i` reading the image shifted by `i` pixels along `angle_deg` (0 = along +x; edge pixels
/// repeat). Applies to any channel count.
pub fn motion_blur(img: &FloatImage, radius: usize, sigma: f32, angle_deg: f32) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let width = 2 * radius + 1;
    let sigma = sigma.max(1e-3);
    let mut k: Vec<f32> = (0..width)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let (sin, cos) = (
        f64::from(angle_deg).to_radians().sin(),
        f64::from(angle_deg).to_radians().cos(),
    );
    let mut taps = Vec::with_capacity(width);
    for (i, &kv) in k.iter().enumerate() {
        let dy = -((i as f64 * sin) - 0.5).ceil() as isize;
        let dx = -((i as f64 * cos) - 0.5).ceil() as isize;
        if dy.unsigned_abs() >= h || dx.unsigned_abs() >= w {
            break;
        }
        taps.push((dx, dy, kv));
    }
    // Rows padded by the largest shift with their edge pixels, so that every tap is a plain
    // shifted read; 32 outputs accumulate in registers over all taps (in tap order, as a pass
    // per tap would add them).
    let pad = taps.iter().map(|t| t.0.unsigned_abs()).max().unwrap_or(0);
    let (n, pw) = (w * c, (w + 2 * pad) * c);
    let mut padded = vec![0.0f32; h * pw];
    for (y, dst) in padded.chunks_exact_mut(pw).enumerate() {
        let src = img.row(y);
        let (left, rest) = dst.split_at_mut(pad * c);
        let (mid, right) = rest.split_at_mut(n);
        for px in left.chunks_exact_mut(c) {
            px.copy_from_slice(&src[..c]);
        }
        mid.copy_from_slice(src);
        for px in right.chunks_exact_mut(c) {
            px.copy_from_slice(&src[n - c..]);
        }
    }
    let mut out = FloatImage::zeros(w, h, c);
    const B: usize = 32;
    let full = n / B * B;
    let mut starts = vec![0usize; taps.len()];
    for y in 0..h {
        // out[x] reads source row ys, column x - dx: padded offset (x - dx + pad) * c
        for (s, &(dx, dy, _)) in starts.iter_mut().zip(&taps) {
            let ys = (y as isize - dy).clamp(0, h as isize - 1) as usize;
            *s = ys * pw + (pad as isize - dx) as usize * c;
        }
        let o = &mut out.data[y * n..(y + 1) * n];
        for i in (0..full).step_by(B) {
            let mut acc = [0.0f32; B];
            for (&s, &(_, _, kv)) in starts.iter().zip(&taps) {
                for (a, &v) in acc.iter_mut().zip(&padded[s + i..s + i + B]) {
                    *a += kv * v;
                }
            }
            o[i..i + B].copy_from_slice(&acc);
        }
        for (&s, &(_, _, kv)) in starts.iter().zip(&taps) {
            for (ov, &v) in o[full..].iter_mut().zip(&padded[s + full..s + n]) {
                *ov += kv * v;
            }
        }
    }
    out
}
}

/// Linear interpolation weights of scipy `zoom(order=1)` (corner-aligned: output `o` reads
/// input `o * (n_in - 1) / (n_out - 1)`), for an output of length `n_out`.
fn zoom_axis(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    (0..n_out)
        .map(|o| {
            let pos = if n_out > 1 {
                o as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
            } else {
                0.0
            };
            let i0 = (pos.floor() as usize).min(n_in.saturating_sub(1));
            let i1 = (i0 + 1).min(n_in.saturating_sub(1));
            (i0, i1, (pos - i0 as f64) as f32)
        })
        .collect()
}

multiversion! {
/// The reference `clipped_zoom`: crops the centre `ceil(n / zoom)` of each axis, scales it by
/// `zoom` with bilinear interpolation (scipy `zoom(order=1)`, output `round(crop * zoom)`), and
/// keeps the top-left `height` x `width` (regions the zoom does not reach stay 0, as the
/// reference's fallback does).
pub fn clipped_zoom(img: &FloatImage, zoom: f32) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let zoom = f64::from(zoom.max(1e-3));
    let ch = ((h as f64 / zoom).ceil() as usize).clamp(1, h);
    let cw = ((w as f64 / zoom).ceil() as usize).clamp(1, w);
    let top = (h - ch) / 2;
    let left = (w - cw) / 2;
    let oh = ((ch as f64 * zoom).round() as usize).max(1);
    let ow = ((cw as f64 * zoom).round() as usize).max(1);
    let ys = zoom_axis(ch, oh);
    let xs = zoom_axis(cw, ow);
    let (uh, uw) = (oh.min(h), ow.min(w));
    // Horizontal pass over the crop rows, then vertical.
    let mut tmp = vec![0.0f32; ch * uw * c];
    for y in 0..ch {
        let row = &img.data[((top + y) * w + left) * c..((top + y) * w + left + cw) * c];
        let t = &mut tmp[y * uw * c..(y + 1) * uw * c];
        match c {
            1 => lerp_row::<1>(row, &xs, t),
            3 => lerp_row::<3>(row, &xs, t),
            _ => lerp_row_any(row, c, &xs[..uw], t),
        }
    }
    let mut out = FloatImage::zeros(w, h, c);
    for (y, &(i0, i1, f)) in ys.iter().take(uh).enumerate() {
        let a = &tmp[i0 * uw * c..(i0 + 1) * uw * c];
        let b = &tmp[i1 * uw * c..(i1 + 1) * uw * c];
        let o = &mut out.data[y * w * c..y * w * c + uw * c];
        for ((ov, av), bv) in o.iter_mut().zip(a).zip(b) {
            *ov = av + (bv - av) * f;
        }
    }
    out
}
}

/// One row of [`clipped_zoom`]'s horizontal pass: output pixel `x` interpolates source pixels
/// `i0` and `i1` of `xs[x]`, `C` channels handled as arrays (one bounds check per pixel).
#[inline(always)]
fn lerp_row<const C: usize>(row: &[f32], xs: &[(usize, usize, f32)], t: &mut [f32]) {
    let (src, _) = row.as_chunks::<C>();
    let (dst, _) = t.as_chunks_mut::<C>();
    for (o, &(i0, i1, f)) in dst.iter_mut().zip(xs) {
        let (a, b) = (src[i0], src[i1]);
        *o = std::array::from_fn(|k| a[k] + (b[k] - a[k]) * f);
    }
}

/// [`lerp_row`] for any channel count.
fn lerp_row_any(row: &[f32], c: usize, xs: &[(usize, usize, f32)], t: &mut [f32]) {
    for (x, &(i0, i1, f)) in xs.iter().enumerate() {
        for k in 0..c {
            let a = row[i0 * c + k];
            let b = row[i1 * c + k];
            t[x * c + k] = a + (b - a) * f;
        }
    }
}

multiversion! {
/// Samples `img` at real coordinates with bilinear interpolation and scipy "reflect" border
/// (`map_coordinates(order=1, mode='reflect')`): output pixel (x, y) reads
/// (x + dx[y, x], y + dy[y, x]). `dx`, `dy` have `width * height` entries.
pub fn remap_bilinear_reflect(img: &FloatImage, dx: &[f32], dy: &[f32]) -> FloatImage {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut out = FloatImage::zeros(w, h, c);
    // A row's source coordinates first, as whole-row vector loops: integer part and fraction.
    let (mut x0s, mut fxs) = (vec![0i32; w], vec![0.0f32; w]);
    let (mut y0s, mut fys) = (vec![0i32; w], vec![0.0f32; w]);
    for y in 0..h {
        let row = y * w..(y + 1) * w;
        split_coords((0..w).map(|x| x as f32), &dx[row.clone()], &mut x0s, &mut fxs);
        split_coords(std::iter::repeat(y as f32), &dy[row], &mut y0s, &mut fys);
        // both neighbours inside: no reflection needed (the common case)
        let pair = |v: i32, n: usize| {
            let v = v as isize;
            if v >= 0 && v + 1 < n as isize {
                (v as usize, v as usize + 1)
            } else {
                (border_index(v, n, Border::Reflect), border_index(v + 1, n, Border::Reflect))
            }
        };
        let coords = x0s.iter().zip(&fxs).zip(y0s.iter().zip(&fys));
        if c == 3 {
            // whole pixels as arrays: one bounds check each, the channel loop unrolled
            let (src, _) = img.data.as_chunks::<3>();
            let (dst, _) = out.data[y * w * 3..(y + 1) * w * 3].as_chunks_mut::<3>();
            for (o, ((&x0, &fx), (&y0, &fy))) in dst.iter_mut().zip(coords) {
                let ((xa, xb), (ya, yb)) = (pair(x0, w), pair(y0, h));
                *o = lerp4(&src[ya * w + xa], &src[ya * w + xb], &src[yb * w + xa], &src[yb * w + xb], fx, fy);
            }
            continue;
        }
        for (x, ((&x0, &fx), (&y0, &fy))) in coords.enumerate() {
            let i = y * w + x;
            let ((xa, xb), (ya, yb)) = (pair(x0, w), pair(y0, h));
            let (a, b, p, q) = (ya * w + xa, ya * w + xb, yb * w + xa, yb * w + xb);
            let px = |j: usize| &img.data[j * c..j * c + c];
            let (aa, ab, ba, bb) = (px(a), px(b), px(p), px(q));
            for (k, o) in out.data[i * c..i * c + c].iter_mut().enumerate() {
                *o = lerp4(&[aa[k]], &[ab[k]], &[ba[k]], &[bb[k]], fx, fy)[0];
            }
        }
    }
    out
}
}

/// Bilinear interpolation of four pixels (top left, top right, bottom left, bottom right).
#[inline(always)]
fn lerp4<const C: usize>(aa: &[f32; C], ab: &[f32; C], ba: &[f32; C], bb: &[f32; C], fx: f32, fy: f32) -> [f32; C] {
    std::array::from_fn(|k| {
        let top = aa[k] + (ab[k] - aa[k]) * fx;
        let bot = ba[k] + (bb[k] - ba[k]) * fx;
        top + (bot - top) * fy
    })
}

/// For each `base + d`: its floor as an integer and the fraction above it (values limited to
/// +-1e9, far outside any image, so the integer conversion cannot overflow).
#[inline(always)]
fn split_coords(base: impl Iterator<Item = f32>, d: &[f32], whole: &mut [i32], frac: &mut [f32]) {
    for (((b, &d), o), f) in base.zip(d).zip(whole.iter_mut()).zip(frac.iter_mut()) {
        #[allow(clippy::manual_clamp)] // deliberately not clamp: NaN must become -1e9, not stay NaN
        let s = (b + d).max(-1e9).min(1e9);
        let fl = s.floor();
        // SAFETY: fl is an integer in [-1e9, 1e9] (NaN became -1e9), so it fits an i32.
        *o = unsafe { fl.to_int_unchecked::<i32>() };
        *f = s - fl;
    }
}

// ---------------------------------------------------------------------------------------------
// Colour

/// Changes each pixel's HSV value and saturation and converts back, as scikit-image's
/// `rgb2hsv` / `hsv2rgb` round trip: `V' = clip(V + value_add)`, `S' = clip(S * sat_mul +
/// sat_add)` (both clipped to `[0, 1]`), hue unchanged (grey pixels have hue 0, red).
/// `img` must have 3 channels.
pub fn hsv_adjust(img: &mut FloatImage, value_add: f32, sat_mul: f32, sat_add: f32) {
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let mx = r.max(g).max(b);
        let mn = r.min(g).min(b);
        let delta = mx - mn;
        let s = if mx > 0.0 { delta / mx } else { 0.0 };
        let v2 = (mx + value_add).clamp(0.0, 1.0);
        let s2 = (s * sat_mul + sat_add).clamp(0.0, 1.0);
        if delta > 0.0 {
            for ch in p.iter_mut() {
                let t = (mx - *ch) / delta;
                *ch = v2 - v2 * s2 * t;
            }
        } else {
            p[0] = v2;
            p[1] = v2 * (1.0 - s2);
            p[2] = v2 * (1.0 - s2);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Noise

/// Quantiles of the standard normal at `(i + 0.5) / 65536`, `i < 65536` (Acklam's rational
/// approximation refined by one Halley step; error far below f32 precision).
pub(super) fn normal_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0.0f32; 65536]);
        for (i, v) in t.iter_mut().enumerate() {
            *v = inverse_normal_cdf((i as f64 + 0.5) / 65536.0) as f32;
        }
        t
    })
}

/// The standard normal quantile function.
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Halley step on erfc for full double precision.
    let e = 0.5 * erfc(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7,
/// enough for one refinement step of the quantiles).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Fills `out` with standard normal draws: each 64-bit random number gives four draws from a
/// 65,536-point quantile table (equiprobable points; the tails beyond 4.2 sigma, probability
/// 3e-5, are folded onto the outermost points). Several times faster than a ziggurat, and
/// indistinguishable once the result is clipped and stored in 8 bits.
pub fn fill_standard_normal(out: &mut [f32], rng: &mut impl Rng) {
    let t = normal_table();
    let mut chunks = out.chunks_exact_mut(4);
    for c in &mut chunks {
        let r = rng.next_u64();
        c[0] = t[(r & 0xffff) as usize];
        c[1] = t[((r >> 16) & 0xffff) as usize];
        c[2] = t[((r >> 32) & 0xffff) as usize];
        c[3] = t[(r >> 48) as usize];
    }
    for v in chunks.into_remainder() {
        *v = t[(rng.next_u64() & 0xffff) as usize];
    }
}

/// A one-channel layer of `N(mean, std)` values (draws from [`fill_standard_normal`]).
pub fn normal_layer(width: usize, height: usize, mean: f32, std: f32, rng: &mut impl Rng) -> FloatImage {
    let mut data = vec![0.0f32; width * height];
    fill_standard_normal(&mut data, rng);
    data.iter_mut().for_each(|v| *v = mean + std * *v);
    FloatImage {
        width,
        height,
        channels: 1,
        data,
    }
}

/// The reference plasma fractal (diamond-square with wibble decay), `mapsize` x `mapsize`
/// (a power of two, at least 2), normalised to `[0, 1]`.
pub fn plasma_fractal(mapsize: usize, wibble_decay: f32, rng: &mut impl Rng) -> FloatImage {
    let n = mapsize.max(2).next_power_of_two();
    // All uniform(-1, 1) draws first (n^2 - 1 of them, two per random u64, drawn in one call),
    // then the deterministic diamond-square on them.
    let mut raw = vec![0u64; (n * n - 1).div_ceil(2)];
    rng.fill(&mut raw[..]);
    let uniforms = uniform_pairs(&raw);
    plasma_from_uniforms(n, wibble_decay, &uniforms)
}

multiversion! {
/// Two uniform(-1, 1) values of 24 bits from each random u64 (its top and middle bytes).
fn uniform_pairs(raw: &[u64]) -> Vec<f32> {
    let mut out = vec![0.0f32; 2 * raw.len()];
    for (o, &r) in out.chunks_exact_mut(2).zip(raw) {
        o[0] = (r >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0;
        o[1] = ((r >> 8) & 0xff_ffff) as f32 * (2.0 / 16_777_216.0) - 1.0;
    }
    out
}
}

multiversion! {
/// Diamond-square on an `n` x `n` wrapping grid (`n` a power of two, at least 2), taking its
/// uniform(-1, 1) perturbations in order from `uniforms` (at least `n * n - 1`, as
/// [`plasma_fractal`] draws them): per level, the square centres row by row, then each cell's
/// top and left diamond points, as the reference's array expressions order them.
fn plasma_from_uniforms(n: usize, wibble_decay: f32, uniforms: &[f32]) -> FloatImage {
    let mask = n - 1;
    let mut m = vec![0.0f32; n * n];
    let mut used = 0;
    let mut step = n;
    let mut wibble = 100.0f32;
    while step >= 2 {
        let (half, k, ww) = (step / 2, n / step, wibble * wibble);
        // Squares: centre = mean of the four corners (wrapping) + wibble.
        for i in 0..k {
            let (r0, r1, rc) = (i * step * n, ((i * step + step) & mask) * n, (i * step + half) * n);
            let u = &uniforms[used + i * k..used + (i + 1) * k];
            for (j, &u) in u.iter().enumerate() {
                let (x, x2) = (j * step, (j * step + step) & mask);
                let s = m[r0 + x] + m[r1 + x] + m[r0 + x2] + m[r1 + x2];
                m[rc + x + half] = s / 4.0 + ww * u;
            }
        }
        used += k * k;
        // Diamonds: (y, x + half) and (y + half, x) from their two grid and two centre
        // neighbours; they read only corners and centres, so the order within the pass is free.
        for i in 0..k {
            let y = i * step;
            let (r0, r1, rc) = (y * n, ((y + step) & mask) * n, (y + half) * n);
            let ru = ((y + n - half) & mask) * n;
            let u = &uniforms[used + 2 * i * k..used + 2 * (i + 1) * k];
            for (j, u) in u.chunks_exact(2).enumerate() {
                let (x, x2) = (j * step, (j * step + step) & mask);
                let (xc, xl) = (x + half, (x + n - half) & mask);
                let dr = m[rc + xc];
                let s = dr + m[ru + xc] + m[r0 + x] + m[r0 + x2];
                m[r0 + xc] = s / 4.0 + ww * u[0];
                let s = dr + m[rc + xl] + m[r0 + x] + m[r1 + x];
                m[rc + x] = s / 4.0 + ww * u[1];
            }
        }
        used += 2 * k * k;
        step /= 2;
        wibble /= wibble_decay;
    }
    let mn = m.iter().copied().fold(f32::INFINITY, f32::min);
    let mx = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = if mx > mn { 1.0 / (mx - mn) } else { 1.0 };
    m.iter_mut().for_each(|v| *v = (*v - mn) * inv);
    FloatImage {
        width: n,
        height: n,
        channels: 1,
        data: m,
    }
}
}

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

// ---------------------------------------------------------------------------------------------
// Weather layers

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

/// `clip(v, 0, 255)` truncated to a byte (NaN becomes 0, as `as` would make it).
#[inline(always)]
pub(super) fn clip_trunc(v: f32) -> u8 {
    #[allow(clippy::manual_clamp)] // deliberately not clamp: NaN must become 0, not stay NaN
    let v = v.max(0.0).min(255.0);
    // SAFETY: v is finite and in [0, 255], so it fits an i32; the unchecked conversion (unlike
    // `as`) lets the compiler vectorise the loop.
    (unsafe { v.to_int_unchecked::<i32>() }) as u8
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

/// Resizes a one-channel layer to `width` x `height` (triangle filter, which averages when
/// shrinking). Returns the layer itself when the size already matches.
pub fn resize_layer(layer: FloatImage, width: usize, height: usize) -> FloatImage {
    if layer.width == width && layer.height == height {
        return layer;
    }
    let (lw, lh) = (layer.width as u32, layer.height as u32);
    let Some(buf) = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(lw, lh, layer.data) else {
        return FloatImage::zeros(width, height, 1);
    };
    let out = image::imageops::resize(&buf, width as u32, height as u32, image::imageops::FilterType::Triangle);
    FloatImage {
        width,
        height,
        channels: 1,
        data: out.into_raw(),
    }
}

multiversion! {
/// Canny edges of an 8-bit image (3x3 Sobel, L1 gradient magnitude, non-maximum suppression,
/// hysteresis between `low` and `high`), as OpenCV `Canny` with default options. Returns a
/// mask (true = edge).
pub fn canny(img: &[u8], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
    // Padded copy (REFLECT_101) so the Sobel taps need no bounds checks.
    let (pw, ph) = (w + 2, h + 2);
    let mut p = vec![0.0f32; pw * ph];
    for yp in 0..ph {
        let ys = border_index(yp as isize - 1, h, Border::Reflect101);
        let (src, dst) = (&img[ys * w..(ys + 1) * w], &mut p[yp * pw..(yp + 1) * pw]);
        for (d, &v) in dst[1..=w].iter_mut().zip(src) {
            *d = f32::from(v);
        }
        dst[0] = f32::from(src[border_index(-1, w, Border::Reflect101)]);
        dst[w + 1] = f32::from(src[border_index(w as isize, w, Border::Reflect101)]);
    }
    // Gradients and magnitude on a zero-bordered grid of the same padded size, a row at a time
    // (x here is the padded column minus 1).
    let mut gx = vec![0.0f32; pw * ph];
    let mut gy = vec![0.0f32; pw * ph];
    let mut mag = vec![0.0f32; pw * ph];
    for y in 1..=h {
        let (n, c, s) = (
            &p[(y - 1) * pw..y * pw],
            &p[y * pw..(y + 1) * pw],
            &p[(y + 1) * pw..(y + 2) * pw],
        );
        let r = y * pw + 1..y * pw + 1 + w;
        let (gxr, gyr, mr) = (&mut gx[r.clone()], &mut gy[r.clone()], &mut mag[r]);
        for x in 0..w {
            let dx = (n[x + 2] + 2.0 * c[x + 2] + s[x + 2]) - (n[x] + 2.0 * c[x] + s[x]);
            let dy = (s[x] + 2.0 * s[x + 1] + s[x + 2]) - (n[x] + 2.0 * n[x + 1] + n[x + 2]);
            gxr[x] = dx;
            gyr[x] = dy;
            mr[x] = dx.abs() + dy.abs();
        }
    }
    // Non-maximum suppression, branch-free a row at a time: 0 = none, 1 = weak, 2 = strong.
    let mut state = vec![0u8; pw * ph];
    let tan22 = 0.414_213_57f32;
    for y in 1..=h {
        let (up, mid, dn) = (
            &mag[(y - 1) * pw..y * pw],
            &mag[y * pw..(y + 1) * pw],
            &mag[(y + 1) * pw..(y + 2) * pw],
        );
        let r = y * pw + 1..y * pw + 1 + w;
        let (gxr, gyr, st) = (&gx[r.clone()], &gy[r.clone()], &mut state[r]);
        #[cfg(target_arch = "x86_64")]
        let done = if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { x86::canny_nms_row([up, mid, dn], gxr, gyr, st, low, high) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // neighbours as slices of exactly w (left, centre, right of the row above, this, below)
        let (ul, uc, ur) = (&up[..w], &up[1..w + 1], &up[2..w + 2]);
        let (ml, mc, mr) = (&mid[..w], &mid[1..w + 1], &mid[2..w + 2]);
        let (dl, dc, dr) = (&dn[..w], &dn[1..w + 1], &dn[2..w + 2]);
        for x in done..w {
            let (g, gx, gy) = (mc[x], gxr[x], gyr[x]);
            let (ax, ay) = (gx.abs(), gy.abs());
            let (l, r, u, d, ul, ur, dl, dr) = (ml[x], mr[x], uc[x], dc[x], ul[x], ur[x], dl[x], dr[x]);
            let horiz = ay <= ax * tan22;
            let vert = ay >= ax / tan22;
            let same = (gx > 0.0) == (gy > 0.0);
            let (da, db) = if same { (ul, dr) } else { (ur, dl) };
            let (va, vb) = if vert { (u, d) } else { (da, db) };
            let (a, b) = if horiz { (l, r) } else { (va, vb) };
            let keep = g > low && g > a && g >= b;
            st[x] = u8::from(keep) + u8::from(keep && g > high);
        }
    }
    // The strong pixels' indices, compacted without a branch: each index is written and the
    // end advances only for a strong pixel.
    let mut stack = vec![0usize; state.len()];
    let mut n = 0;
    for (i, &v) in state.iter().enumerate() {
        stack[n] = i;
        n += usize::from(v == 2);
    }
    stack.truncate(n);
    let edges = hysteresis(&state, stack, pw);
    let mut out = Vec::with_capacity(w * h);
    for y in 1..=h {
        out.extend_from_slice(&edges[y * pw + 1..y * pw + 1 + w]);
    }
    out
}
}

/// Canny's hysteresis on a padded grid `pw` wide whose border is 0 in `state` (0 none, 1 weak,
/// 2 strong): the edges are the strong pixels in `strong` and every weak pixel 8-connected to
/// one of them.
fn hysteresis(state: &[u8], strong: Vec<usize>, pw: usize) -> Vec<bool> {
    let mut edges = vec![false; state.len()];
    for &i in &strong {
        edges[i] = true;
    }
    // Every pixel enters the stack at most once (it is marked when it does), so a stack as
    // long as the grid never overflows; neighbours are pushed without a branch (the test is a
    // coin flip a predictor cannot learn) by writing each and advancing the top only when it
    // grows the edge set.
    let mut stack = strong;
    let mut top = stack.len();
    stack.resize(state.len() + 8, 0);
    while top > 0 {
        top -= 1;
        let i = stack[top];
        for j in [
            i - pw - 1,
            i - pw,
            i - pw + 1,
            i - 1,
            i + 1,
            i + pw - 1,
            i + pw,
            i + pw + 1,
        ] {
            let grow = (state[j] >= 1) & !edges[j];
            edges[j] |= grow;
            stack[top] = j;
            top += usize::from(grow);
        }
    }
    edges
}

/// The smaller of two numbers that are not NaN (one `minss`, unlike `f32::min`, which also
/// handles NaN and so costs a compare and a blend more in a dependency chain).
#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `v[x] = min(v[x], v[x - 1] + a)` along `v` (with `before` at `v[-1]`), i.e. `v[x] = min over
/// j <= x of v[j] + (x - j) a`, computed 8 values at a time by doubling steps (1, 2, 4) and
/// a carry, instead of one long dependency chain. In floating point `(v + a) + a` and
/// `v + 2a` may round apart, so this is the same minimum to within an ulp, not bit-identical
/// to the sequential recurrence; it is the same on every machine.
#[inline(always)]
fn scan_min_plus(v: &mut [f32], a: f32, before: f32) {
    let steps: [f32; 8] = std::array::from_fn(|i| (i + 1) as f32 * a);
    let mut carry = before;
    let mut chunks = v.chunks_exact_mut(8);
    for ch in &mut chunks {
        let mut t: [f32; 8] = std::array::from_fn(|i| ch[i]);
        for (k, s) in [(1usize, a), (2, 2.0 * a), (4, 4.0 * a)] {
            let p = t;
            for i in k..8 {
                t[i] = fmin(p[i], p[i - k] + s);
            }
        }
        for (ti, &st) in t.iter_mut().zip(&steps) {
            *ti = fmin(*ti, carry + st);
        }
        carry = t[7];
        ch.copy_from_slice(&t);
    }
    for x in chunks.into_remainder() {
        *x = fmin(*x, carry + a);
        carry = *x;
    }
}

multiversion! {
/// Euclidean distance from every pixel to the nearest edge pixel (two-pass chamfer with the
/// 5x5 mask of OpenCV `distanceTransform(DIST_L2, 5)`: 1, 1.4, 2.1969). Without edges every
/// distance is large (1e6).
pub fn distance_to_edges(edges: &[bool], w: usize, h: usize) -> Vec<f32> {
    const BIG: f32 = 1e6;
    // A margin of 2 filled with BIG removes the bounds checks.
    let (pw, ph) = (w + 4, h + 4);
    let mut d = vec![BIG; pw * ph];
    for (drow, erow) in d[2 * pw..].chunks_exact_mut(pw).zip(edges.chunks_exact(w)) {
        for (dv, &e) in drow[2..w + 2].iter_mut().zip(erow) {
            if e {
                *dv = 0.0;
            }
        }
    }
    let (a, b, c) = (1.0f32, 1.4f32, 2.1969f32);
    // Each pass: the candidates from the two previous rows (in pass order) are independent of
    // the current row, so they are taken for the whole row at once (vectorisable), then a
    // scan along the row adds the left (or right) neighbour ([`scan_min_plus`]).
    let mut from_rows = vec![BIG; pw];
    for pass in 0..2 {
        let rows: Vec<usize> = if pass == 0 {
            (2..h + 2).collect()
        } else {
            (2..h + 2).rev().collect()
        };
        for y in rows {
            let (r1, r2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
            {
                let (u1, u2) = (&d[r1 * pw..(r1 + 1) * pw], &d[r2 * pw..(r2 + 1) * pw]);
                // the candidates as slices of exactly w, shifted by -2..=2 (bounds-check free)
                let s1 = |k: usize| &u1[k..k + w];
                let (u1m2, u1m1, u1c, u1p1, u1p2) = (s1(0), s1(1), s1(2), s1(3), s1(4));
                let (u2m1, u2p1) = (&u2[1..1 + w], &u2[3..3 + w]);
                for (i, f) in from_rows[2..w + 2].iter_mut().enumerate() {
                    let m = fmin(fmin(u1c[i] + a, u1m1[i] + b), fmin(u1p1[i] + b, u1m2[i] + c));
                    *f = fmin(m, fmin(fmin(u1p2[i] + c, u2m1[i] + c), u2p1[i] + c));
                }
            }
            let seg = &mut d[y * pw + 2..y * pw + 2 + w];
            for (r, &f) in seg.iter_mut().zip(&from_rows[2..w + 2]) {
                *r = fmin(*r, f);
            }
            // the margin beyond the row's start is BIG
            if pass == 0 {
                scan_min_plus(seg, a, BIG);
            } else {
                seg.reverse();
                scan_min_plus(seg, a, BIG);
                seg.reverse();
            }
        }
    }
    (0..h)
        .flat_map(|y| d[(y + 2) * pw + 2..(y + 2) * pw + 2 + w].iter().copied())
        .collect()
}
}

/// Histogram equalisation of an 8-bit image (OpenCV `equalizeHist`).
pub fn equalize_hist(img: &[u8]) -> Vec<u8> {
    // four histograms, so that runs of equal values do not serialise on one counter
    let mut hists = [[0usize; 256]; 4];
    let mut chunks = img.chunks_exact(4);
    for c in &mut chunks {
        for (h, &v) in hists.iter_mut().zip(c) {
            h[v as usize] += 1;
        }
    }
    for &v in chunks.remainder() {
        hists[0][v as usize] += 1;
    }
    let hist: [usize; 256] = std::array::from_fn(|i| hists.iter().map(|h| h[i]).sum());
    let total = img.len();
    let Some(first) = hist.iter().position(|&c| c > 0) else {
        return img.to_vec();
    };
    if hist[first] == total {
        return vec![first as u8; total];
    }
    let scale = 255.0 / (total - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0usize;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = (sum as f32 * scale).round().clamp(0.0, 255.0) as u8;
    }
    img.iter().map(|&v| lut[v as usize]).collect()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The non-maximum suppression of [`super::canny`] for one row, 8 pixels at a time with
    /// AVX2 compares and blends (the same comparisons as the scalar code, so the same result):
    /// `rows` are the padded magnitude rows above, at and below (`w + 2` each), `gx`, `gy` and
    /// `st` the row's `w` values. Returns the number of pixels done (a multiple of 8).
    #[target_feature(enable = "avx2")]
    pub(super) fn canny_nms_row(
        rows: [&[f32]; 3],
        gx: &[f32],
        gy: &[f32],
        st: &mut [u8],
        low: f32,
        high: f32,
    ) -> usize {
        let w = gx.len().min(gy.len()).min(st.len());
        if rows.iter().any(|r| r.len() < w + 2) {
            return 0;
        }
        let tan22 = _mm256_set1_ps(0.414_213_57);
        let (lo, hi, zero, sign) = (
            _mm256_set1_ps(low),
            _mm256_set1_ps(high),
            _mm256_setzero_ps(),
            _mm256_set1_ps(-0.0),
        );
        let load = |s: &[f32], i: usize| {
            let s = &s[i..i + 8];
            // SAFETY: `s` holds 8 f32s (bounds-checked above); unaligned load.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        };
        let [up, mid, dn] = rows;
        for x in (0..w / 8).map(|k| 8 * k) {
            let (g, vx, vy) = (load(mid, x + 1), load(gx, x), load(gy, x));
            let (ax, ay) = (_mm256_andnot_ps(sign, vx), _mm256_andnot_ps(sign, vy));
            let horiz = _mm256_cmp_ps::<_CMP_LE_OQ>(ay, _mm256_mul_ps(ax, tan22));
            let vert = _mm256_cmp_ps::<_CMP_GE_OQ>(ay, _mm256_div_ps(ax, tan22));
            let differ = _mm256_xor_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(vx, zero),
                _mm256_cmp_ps::<_CMP_GT_OQ>(vy, zero),
            );
            // blendv(a, b, m) = m ? b : a
            let da = _mm256_blendv_ps(load(up, x), load(up, x + 2), differ);
            let db = _mm256_blendv_ps(load(dn, x + 2), load(dn, x), differ);
            let va = _mm256_blendv_ps(da, load(up, x + 1), vert);
            let vb = _mm256_blendv_ps(db, load(dn, x + 1), vert);
            let a = _mm256_blendv_ps(va, load(mid, x), horiz);
            let b = _mm256_blendv_ps(vb, load(mid, x + 2), horiz);
            let keep = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(g, lo),
                _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(g, a), _mm256_cmp_ps::<_CMP_GE_OQ>(g, b)),
            );
            let strong = _mm256_and_ps(keep, _mm256_cmp_ps::<_CMP_GT_OQ>(g, hi));
            // 1 per set lane of each mask, summed, narrowed to 8 bytes
            let one = _mm256_set1_epi32(1);
            let v = _mm256_add_epi32(
                _mm256_and_si256(_mm256_castps_si256(keep), one),
                _mm256_and_si256(_mm256_castps_si256(strong), one),
            );
            let v = _mm256_packus_epi16(_mm256_packs_epi32(v, v), _mm256_setzero_si256());
            let v = _mm_unpacklo_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let d = &mut st[x..x + 8];
            // SAFETY: `d` holds 8 bytes (bounds-checked above); unaligned 8-byte store.
            unsafe { _mm_storel_epi64(d.as_mut_ptr().cast(), v) };
        }
        w / 8 * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canny as first written (per-pixel branches, a division per pixel): the reference for the
    /// row-wise and AVX2 version, which must give the same edges.
    fn canny_sequential(img: &[u8], w: usize, h: usize, low: f32, high: f32) -> Vec<bool> {
        // Padded copy (REFLECT_101) so the Sobel taps need no bounds checks.
        let (pw, ph) = (w + 2, h + 2);
        let mut p = vec![0.0f32; pw * ph];
        for yp in 0..ph {
            let ys = border_index(yp as isize - 1, h, Border::Reflect101);
            for xp in 0..pw {
                let xs = border_index(xp as isize - 1, w, Border::Reflect101);
                p[yp * pw + xp] = f32::from(img[ys * w + xs]);
            }
        }
        // Gradients and magnitude on a zero-bordered grid of the same padded size.
        let mut gx = vec![0.0f32; pw * ph];
        let mut gy = vec![0.0f32; pw * ph];
        let mut mag = vec![0.0f32; pw * ph];
        for y in 1..=h {
            for x in 1..=w {
                let i = y * pw + x;
                let (n, s) = (i - pw, i + pw);
                let dx = (p[n + 1] + 2.0 * p[i + 1] + p[s + 1]) - (p[n - 1] + 2.0 * p[i - 1] + p[s - 1]);
                let dy = (p[s - 1] + 2.0 * p[s] + p[s + 1]) - (p[n - 1] + 2.0 * p[n] + p[n + 1]);
                gx[i] = dx;
                gy[i] = dy;
                mag[i] = dx.abs() + dy.abs();
            }
        }
        // 0 = none, 1 = weak, 2 = strong
        let mut state = vec![0u8; pw * ph];
        let tan22 = 0.414_213_57f32;
        let mut stack = Vec::new();
        for y in 1..=h {
            for x in 1..=w {
                let i = y * pw + x;
                let g = mag[i];
                if g <= low {
                    continue;
                }
                let (ax, ay) = (gx[i].abs(), gy[i].abs());
                let (a, b) = if ay <= ax * tan22 {
                    (i - 1, i + 1)
                } else if ay >= ax / tan22 {
                    (i - pw, i + pw)
                } else if (gx[i] > 0.0) == (gy[i] > 0.0) {
                    (i - pw - 1, i + pw + 1)
                } else {
                    (i - pw + 1, i + pw - 1)
                };
                if g > mag[a] && g >= mag[b] {
                    state[i] = if g > high { 2 } else { 1 };
                    if g > high {
                        stack.push(i);
                    }
                }
            }
        }
        let edges = hysteresis(&state, stack, pw);
        (0..h)
            .flat_map(|y| edges[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].iter().copied())
            .collect()
    }

    /// The chamfer distance with the sequential row scans, for [`scan_min_plus`].
    fn distance_sequential(edges: &[bool], w: usize, h: usize) -> Vec<f32> {
        const BIG: f32 = 1e6;
        // A margin of 2 filled with BIG removes the bounds checks.
        let (pw, ph) = (w + 4, h + 4);
        let mut d = vec![BIG; pw * ph];
        for y in 0..h {
            for x in 0..w {
                if edges[y * w + x] {
                    d[(y + 2) * pw + x + 2] = 0.0;
                }
            }
        }
        let (a, b, c) = (1.0f32, 1.4f32, 2.1969f32);
        // Each pass: the candidates from the two previous rows (in pass order) are independent of
        // the current row, so they are taken for the whole row at once (vectorisable), then a
        // sequential scan along the row adds the left (or right) neighbour.
        let mut from_rows = vec![BIG; pw];
        for pass in 0..2 {
            let rows: Vec<usize> = if pass == 0 {
                (2..h + 2).collect()
            } else {
                (2..h + 2).rev().collect()
            };
            for y in rows {
                let (r1, r2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
                {
                    let (u1, u2) = (&d[r1 * pw..(r1 + 1) * pw], &d[r2 * pw..(r2 + 1) * pw]);
                    for x in 2..w + 2 {
                        let v = (u1[x] + a)
                            .min(u1[x - 1] + b)
                            .min(u1[x + 1] + b)
                            .min(u1[x - 2] + c)
                            .min(u1[x + 2] + c)
                            .min(u2[x - 1] + c)
                            .min(u2[x + 1] + c);
                        from_rows[x] = v;
                    }
                }
                let row = &mut d[y * pw..(y + 1) * pw];
                if pass == 0 {
                    for x in 2..w + 2 {
                        row[x] = row[x].min(from_rows[x]).min(row[x - 1] + a);
                    }
                } else {
                    for x in (2..w + 2).rev() {
                        row[x] = row[x].min(from_rows[x]).min(row[x + 1] + a);
                    }
                }
            }
        }
        (0..h)
            .flat_map(|y| d[(y + 2) * pw + 2..(y + 2) * pw + 2 + w].iter().copied())
            .collect()
    }

    /// A smooth random-looking 8-bit field with blobs (like the spatter liquid layer).
    fn field(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let v = (x * 0.21).sin() * (y * 0.17).cos() + (x * 0.05 + y * 0.07).sin();
                if v > 0.3 { (v * 120.0).min(255.0) as u8 } else { 0 }
            })
            .collect()
    }

    #[test]
    fn hysteresis_matches_a_plain_flood_fill() {
        let (pw, ph) = (37, 29);
        for seed in 0..20u64 {
            // random none / weak / strong states with a zero border
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let state: Vec<u8> = (0..pw * ph)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (col, row) = (i % pw, i / pw);
                    if col == 0 || row == 0 || col == pw - 1 || row == ph - 1 {
                        0
                    } else {
                        [0, 1, 1, 1, 2][(x % 5) as usize]
                    }
                })
                .collect();
            let strong: Vec<usize> = (0..state.len()).filter(|&i| state[i] == 2).collect();
            // plain breadth-first flood from every strong pixel
            let mut want = vec![false; state.len()];
            let mut queue: std::collections::VecDeque<usize> = strong.iter().copied().collect();
            for &i in &strong {
                want[i] = true;
            }
            while let Some(i) = queue.pop_front() {
                for j in [
                    i - pw - 1,
                    i - pw,
                    i - pw + 1,
                    i - 1,
                    i + 1,
                    i + pw - 1,
                    i + pw,
                    i + pw + 1,
                ] {
                    if state[j] >= 1 && !want[j] {
                        want[j] = true;
                        queue.push_back(j);
                    }
                }
            }
            assert_eq!(hysteresis(&state, strong, pw), want, "seed {seed}");
        }
    }

    #[test]
    fn canny_matches_the_sequential_version() {
        for (w, h) in [(224, 224), (37, 21), (8, 8), (3, 5)] {
            let img = field(w, h);
            let fast = canny(&img, w, h, 50.0, 150.0);
            assert_eq!(fast, canny_sequential(&img, w, h, 50.0, 150.0), "{w}x{h}");
            assert!(
                w < 50 || fast.iter().filter(|&&e| e).count() > 100,
                "{w}x{h}: too few edges to test"
            );
        }
    }

    #[test]
    fn distance_scan_matches_the_sequential_version_within_rounding() {
        for (w, h) in [(224, 224), (37, 21), (5, 9)] {
            let edges = canny(&field(w, h), w, h, 50.0, 150.0);
            let (fast, slow) = (distance_to_edges(&edges, w, h), distance_sequential(&edges, w, h));
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.max(1.0), "{w}x{h} at {i}: {a} vs {b}");
            }
        }
    }
}
