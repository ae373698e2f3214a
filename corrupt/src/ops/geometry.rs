//! Geometry: resampling an image or layer at other coordinates: the reference's clipped
//! zoom (zoom_blur, snow), bilinear remapping by a displacement field (elastic_transform), and
//! resizing a layer drawn at the reference scale to the image.

use super::{Border, FloatImage, border_index};
use crate::simd::multiversion;

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
