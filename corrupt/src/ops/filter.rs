//! Filtering: correlation with separable, dense 2-D, disk and motion kernels, per channel,
//! with the border rules of scipy and OpenCV ([`Border`]). The blurs of the corruptions and of
//! the perturbation sequences are built from these.

use super::FloatImage;
use crate::simd::multiversion;

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
