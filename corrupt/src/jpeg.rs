//! The lossy half of a baseline JPEG round trip, without the (lossless) entropy coding.
//!
//! `jpeg_compression` only needs what a JPEG encoder followed by a decoder does to the pixels:
//! colour conversion, 4:2:0 chroma subsampling, 8x8 DCT, quantisation with the IJG tables scaled
//! by the quality, and the inverse steps. Huffman coding changes nothing, so skipping it gives
//! the same pixels several times faster than encoding and decoding a file. Each step is
//! libjpeg-turbo's as Pillow uses it (`save(quality=q)` then `open`): JFIF YCbCr with rounding,
//! `h2v2_downsample` with alternating bias, the `islow` integer DCT pair with reciprocal
//! quantisation ([`islow`]), "fancy" triangular upsampling, and 8-bit range limiting; every
//! step is integer arithmetic, so the pixels are exactly Pillow's (tested against the port's
//! output at every severity).
//!
//! Speed: colour conversion and 4:2:0 downsampling run together, two image rows at a time,
//! without full-width chroma rows, into 16-bit planes kept in a per-thread buffer between
//! calls; the transforms take two blocks per 16-lane vector ([`islow`]). Upsampling forms the
//! horizontal 3:1 sums once per chroma row, then `3 near + far` per output row inside the
//! YCbCr -> RGB conversion (libjpeg sums columns first: the same integers). The same forward
//! half writes files ([`encode`]). The colour conversions (RGB -> YCbCr in libjpeg's
//! integers with `pmaddwd` on byte pairs; YCbCr -> RGB in 16-bit lanes), downsampling and
//! upsampling have AVX2 versions written with `std::arch` (`crate::simd::jpeg`), used when the
//! CPU has AVX2; the portable versions here compute the same integer formulas, so the output
//! does not depend on the machine (tested).
//!
//! Why hand-written: `corrupt_speed` (`benches/corrupt_speed.sh`) times this round trip against
//! encoding and decoding a file, and jpeg_compression is the slowest corruption against the
//! Python port even so. Files are decoded by libjpeg-turbo through `engine::decode` (Hardy's
//! one decode path); the test `roundtrip_is_libjpeg_turbos_decoding_of_our_file` pins this
//! round trip to libjpeg-turbo's decoding of the file [`jpeg_encode`] writes.

/// The IJG luminance quantisation table (natural order).
const LUMA_Q: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// The IJG chrominance quantisation table (natural order).
const CHROMA_Q: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99,
];

mod encode;
pub(crate) mod islow;

pub use encode::{HuffmanTables, jpeg_encode};
use islow::{Divisors, roundtrip_plane};

use crate::simd::{self, multiversion};

/// libjpeg's `jpeg_quality_scaling` + `jpeg_add_quant_table` (baseline: at most 255).
fn scaled_table(base: &[u16; 64], quality: u8) -> [u16; 64] {
    let q = i32::from(quality.clamp(1, 100));
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    base.map(|b| ((i32::from(b) * scale + 50) / 100).clamp(1, 255) as u16)
}

/// The horizontal half of libjpeg's "fancy" h2v2 upsampling (`h2v2_fancy_upsample`) of one
/// chroma row `v`: `out[2x] = 3 v[x] + v[x - 1]`, `out[2x + 1] = 3 v[x] + v[x + 1]`, the edge
/// values repeated. libjpeg sums columns first (`colsum = 3 near + far`) and then weighs them
/// 3:1 across; both orders give the same integer sums, `3 h(near) + h(far)`
/// ([`upsample_vertical`]).
fn horizontal_sums(v: &[i16], out: &mut [i16]) {
    let rw = v.len();
    #[cfg(target_arch = "x86_64")]
    let n = simd::avx2().map_or(0, |t| simd::jpeg::horizontal_sums(t, v, out));
    #[cfg(not(target_arch = "x86_64"))]
    let n = 0;
    // values of 8-bit samples: the sums fit 16 bits
    for x in std::iter::once(0).chain(1 + 8 * n..rw) {
        let m3 = 3 * v[x];
        out[2 * x] = m3 + v[x.saturating_sub(1)];
        out[2 * x + 1] = m3 + v[(x + 1).min(rw - 1)];
    }
}

/// The vertical half of the fancy upsampling: from the [`horizontal_sums`] of the nearer
/// chroma row and of its vertical neighbour (the row above for the upper output row, below for
/// the lower), each output is 9/16, 3/16, 3/16, 1/16 of its four nearest inputs, with libjpeg's
/// alternating rounding: `(3 near + far + 8) >> 4` at even, `+ 7` at odd positions `i`.
fn upsample_vertical(near: i16, far: i16, i: usize) -> i16 {
    (3 * near + far + 8 - (i & 1) as i16) >> 4
}

/// libjpeg's fixed-point JFIF RGB -> YCbCr (jccolor.c, 16 fraction bits) of one row of
/// `w` pixels, written to `pw`-wide rows repeating the last pixel.
fn rgb_to_ycc_row(src: &[u8], yr: &mut [i16], cbr: &mut [i32], crr: &mut [i32]) {
    let w = src.len() / 3;
    for (((p, y), cb), cr) in src.chunks_exact(3).zip(&mut *yr).zip(&mut *cbr).zip(&mut *crr) {
        let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
        *y = ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) as i16;
        *cb = (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16;
        *cr = (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16;
    }
    let (ly, lcb, lcr) = (yr[w - 1], cbr[w - 1], crr[w - 1]);
    yr[w..].iter_mut().for_each(|v| *v = ly);
    cbr[w..].iter_mut().for_each(|v| *v = lcb);
    crr[w..].iter_mut().for_each(|v| *v = lcr);
}

/// Two image rows (`src`, `w` pixels each) to YCbCr ([`rgb_to_ycc_row`]; luma to the
/// `pw`-wide `y0`, `y1`, repeating the last pixel), their chroma h2v2-downsampled
/// ([`downsample_row`]) into the `pw / 2`-wide `cbd`, `crd`. `tmp` is scratch of `4 pw`.
fn convert_row_pair(
    src: [&[u8]; 2],
    y0: &mut [i16],
    y1: &mut [i16],
    cbd: &mut [i16],
    crd: &mut [i16],
    tmp: &mut [i32],
) {
    let pw = y0.len();
    #[cfg(target_arch = "x86_64")]
    let done = simd::avx2().map_or(0, |t| simd::jpeg::convert_row_pair(t, src, y0, y1, cbd, crd));
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    if done == pw {
        return;
    }
    // the rest (a multiple of 16 from `done` on, so the bias still starts with 1)
    let n = pw - done;
    let (cb0, rest) = tmp[..4 * n].split_at_mut(n);
    let (cb1, rest) = rest.split_at_mut(n);
    let (cr0, cr1) = rest.split_at_mut(n);
    rgb_to_ycc_row(&src[0][3 * done..], &mut y0[done..], cb0, cr0);
    rgb_to_ycc_row(&src[1][3 * done..], &mut y1[done..], cb1, cr1);
    for (a, b) in [(cb0, &*cb1), (cr0, &*cr1)] {
        for (a, &b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
    downsample_row(&tmp[..n], &mut cbd[done / 2..]);
    downsample_row(&tmp[2 * n..3 * n], &mut crd[done / 2..]);
}

/// The end of libjpeg's `h2v2_downsample`: `d[x]` is the sum `s[2x] + s[2x + 1]` (of two rows'
/// column sums) plus the bias 1, 2, 1, 2, ..., divided by 4.
fn downsample_row(s: &[i32], d: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    let done = simd::avx2().map_or(0, |t| simd::jpeg::downsample(t, s, d));
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (x, (o, a)) in d.iter_mut().zip(s.chunks_exact(2)).enumerate().skip(done) {
        *o = ((a[0] + a[1] + 1 + (x & 1) as i32) >> 2) as i16;
    }
}

/// One output row: the chroma upsampled from the [`horizontal_sums`] of its nearer and farther
/// chroma rows (`cb`, `cr`: `[near, far]`, [`upsample_vertical`]), then libjpeg's fixed-point
/// YCbCr -> RGB (jdcolor.c, 16 fraction bits), range-limited.
fn ycc_to_rgb_row(yrow: &[i16], cb: [&[i16]; 2], cr: [&[i16]; 2], orow: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    let done = simd::avx2().map_or(0, |t| simd::jpeg::ycc_to_rgb(t, yrow, cb, cr, orow));
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (i, (o, &yy)) in orow.chunks_exact_mut(3).zip(yrow).enumerate().skip(done) {
        let cbv = i32::from(upsample_vertical(cb[0][i], cb[1][i], i)) - 128;
        let crv = i32::from(upsample_vertical(cr[0][i], cr[1][i], i)) - 128;
        let yy = i32::from(yy);
        let r = yy + ((91881 * crv + 32768) >> 16);
        let g = yy + ((-22554 * cbv - 46802 * crv + 32768) >> 16);
        let b = yy + ((116130 * cbv + 32768) >> 16);
        o[0] = r.clamp(0, 255) as u8;
        o[1] = g.clamp(0, 255) as u8;
        o[2] = b.clamp(0, 255) as u8;
    }
}

/// The encoder's input planes, as libjpeg prepares them: luma (`pw` x `ph`, the sizes rounded
/// up to whole 16x16 MCUs) followed by Cb and Cr (`pw / 2` x `ph / 2`), in `planes`; returns
/// `(pw, ph)`. Colour conversion and h2v2 downsampling of the chroma (bias 1, 2, 1, 2, ...
/// across each row) go two image rows at a time. Past the image, columns repeat the last
/// pixel; luma rows repeat the last row; chroma rows repeat the last chroma row (libjpeg's
/// `expand_bottom_edge` after downsampling, not a downsampling of repeated image rows). Every
/// value is written, so `planes` needs no zeroing.
fn forward_planes(rgb: &[u8], w: usize, h: usize, planes: &mut Vec<i16>) -> (usize, usize) {
    let pw = w.div_ceil(16) * 16;
    let ph = h.div_ceil(16) * 16;
    let (cw, chh) = (pw / 2, ph / 2);
    planes.resize(pw * ph + 2 * cw * chh, 0);
    let (yp, chroma) = planes.split_at_mut(pw * ph);
    let (cbd, crd) = chroma.split_at_mut(cw * chh);
    let rh = h.div_ceil(2);
    let mut tmp = vec![0i32; 4 * pw];
    for cy in 0..rh {
        // an odd last row is paired with itself
        let src = |y: usize| {
            let y = y.min(h - 1);
            &rgb[y * w * 3..(y + 1) * w * 3]
        };
        let (y0, y1) = yp[2 * cy * pw..(2 * cy + 2) * pw].split_at_mut(pw);
        convert_row_pair(
            [src(2 * cy), src(2 * cy + 1)],
            y0,
            y1,
            &mut cbd[cy * cw..(cy + 1) * cw],
            &mut crd[cy * cw..(cy + 1) * cw],
            &mut tmp,
        );
    }
    for y in 2 * rh..ph {
        yp.copy_within((h - 1) * pw..h * pw, y * pw);
    }
    for c in [cbd, crd] {
        for cy in rh..chh {
            c.copy_within((rh - 1) * cw..rh * cw, cy * cw);
        }
    }
    (pw, ph)
}

multiversion! {
/// JPEG-compresses and decompresses an 8-bit RGB buffer (`w * h * 3`) at `quality` (1..=100)
/// with 4:2:0 subsampling; returns the decoded RGB bytes.
pub fn jpeg_roundtrip(rgb: &[u8], w: usize, h: usize, quality: u8) -> Vec<u8> {
    if w == 0 || h == 0 || rgb.len() < w * h * 3 {
        return rgb.to_vec();
    }
    let lt = Divisors::new(&scaled_table(&LUMA_Q, quality));
    let ct = Divisors::new(&scaled_table(&CHROMA_Q, quality));
    // The planes live in a per-thread buffer kept between calls.
    let mut planes = PLANES.take();
    let (pw, ph) = forward_planes(rgb, w, h, &mut planes);
    let (cw, chh) = (pw / 2, ph / 2);
    let (yp, chroma) = planes.split_at_mut(pw * ph);
    let (cbd, crd) = chroma.split_at_mut(cw * chh);
    roundtrip_plane(yp, pw, ph, &lt);
    roundtrip_plane(cbd, cw, chh, &ct);
    roundtrip_plane(crd, cw, chh, &ct);
    let out = planes_to_rgb(yp, pw, cbd, crd, cw, w, h);
    keep(&PLANES, planes);
    out
}
}

/// [`jpeg_roundtrip`] of an image: the pixels Pillow reads back from the file Pillow writes at
/// `quality`.
pub fn jpeg_roundtrip_image(img: &image::RgbImage, quality: u8) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let out = jpeg_roundtrip(img.as_raw(), w as usize, h as usize, quality);
    image::RgbImage::from_raw(w, h, out).unwrap_or_else(|| img.clone())
}

/// The decoder's last steps for 4:2:0 planes (luma `pw` wide, chroma `cw` wide): fancy
/// upsampling over the chroma's real size, one chroma row (two output rows) at a time, then
/// libjpeg's fixed-point YCbCr -> RGB; returns `w * h * 3` bytes.
fn planes_to_rgb(yp: &[i16], pw: usize, cbd: &[i16], crd: &[i16], cw: usize, w: usize, h: usize) -> Vec<u8> {
    let (rw, rh) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w * h * 3];
    let mut sums = SUMS.take();
    sums.resize(2 * rh * 2 * rw, 0);
    let (hcb, hcr) = sums.split_at_mut(rh * 2 * rw);
    for cy in 0..rh {
        let row = cy * 2 * rw..(cy + 1) * 2 * rw;
        horizontal_sums(&cbd[cy * cw..cy * cw + rw], &mut hcb[row.clone()]);
        horizontal_sums(&crd[cy * cw..cy * cw + rw], &mut hcr[row]);
    }
    for cy in 0..rh {
        for (half, far_y) in [(0usize, cy.saturating_sub(1)), (1, (cy + 1).min(rh - 1))] {
            let y = 2 * cy + half;
            if y >= h {
                break;
            }
            let (near, far) = (cy * 2 * rw..cy * 2 * rw + w, far_y * 2 * rw..far_y * 2 * rw + w);
            ycc_to_rgb_row(
                &yp[y * pw..y * pw + w],
                [&hcb[near.clone()], &hcb[far.clone()]],
                [&hcr[near], &hcr[far]],
                &mut out[y * w * 3..(y + 1) * w * 3],
            );
        }
    }
    keep(&SUMS, sums);
    out
}

/// Keeps a buffer for the thread's next call unless it is over 4 MB (a large photo decoded
/// once should not hold its buffers for the thread's lifetime).
fn keep(slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<i16>>>, buf: Vec<i16>) {
    if buf.capacity() <= 2 << 20 {
        slot.set(buf);
    }
}

thread_local! {
    /// [`jpeg_roundtrip`]'s planes, kept for the thread's next call.
    static PLANES: std::cell::Cell<Vec<i16>> = const { std::cell::Cell::new(Vec::new()) };
    /// The horizontal upsampling sums of [`planes_to_rgb`], kept likewise.
    static SUMS: std::cell::Cell<Vec<i16>> = const { std::cell::Cell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round trip gives exactly the pixels libjpeg-turbo (the engine's decoder, which is
    /// Pillow's) reads back from the file [`jpeg_encode`] writes, for both Huffman table
    /// choices, at qualities from 1 to 100 and at sizes with partial MCUs.
    #[test]
    fn roundtrip_is_libjpeg_turbos_decoding_of_our_file() {
        use engine::decode::{Exif, ImageLimits, decode};
        let mut checked = 0;
        for (w, h) in [(224usize, 224usize), (61, 47), (17, 9), (1, 1), (33, 16)] {
            // A textured picture: gradients, a checkerboard and hashed noise.
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| {
                    let (p, c) = (i / 3, i % 3);
                    let (x, y) = (p % w, p / w);
                    let hash = (p as u32).wrapping_mul(2_654_435_761).rotate_left(c as u32 * 7) >> 26;
                    ((x * 255 / w.max(2) + y * 3 + c * 40 + if (x / 4 + y / 4) % 2 == 0 { 30 } else { 0 }) as u32
                        + hash) as u8
                })
                .collect();
            for quality in [1u8, 5, 15, 30, 50, 75, 85, 90, 95, 100] {
                for tables in [HuffmanTables::Standard, HuffmanTables::Optimal] {
                    let file = jpeg_encode(&rgb, w, h, quality, tables).expect("encodes");
                    let turbo = decode(&file, &ImageLimits::default(), Exif::Ignore).expect("libjpeg-turbo decodes it");
                    let ours = jpeg_roundtrip(&rgb, w, h, quality);
                    assert!(turbo.as_raw() == &ours, "{w}x{h} quality {quality} {tables:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 100);
    }

    /// libjpeg's RGB -> YCbCr of pixel `i` of `src` (the last pixel past the end).
    fn ycc(src: &[u8], i: usize) -> [i32; 3] {
        let p = &src[3 * i.min(src.len() / 3 - 1)..];
        let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
        [
            (19595 * r + 38470 * g + 7471 * b + 32768) >> 16,
            (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16,
            (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16,
        ]
    }

    /// Checks [`convert_row_pair`] on two rows against the formulas.
    fn check_row_pair(src0: &[u8], src1: &[u8]) {
        let w = src0.len() / 3;
        let pw = w.div_ceil(16) * 16;
        let (mut y0, mut y1) = (vec![-1i16; pw], vec![-1i16; pw]);
        let (mut cbd, mut crd) = (vec![-1i16; pw / 2], vec![-1i16; pw / 2]);
        let mut tmp = vec![-1i32; 4 * pw];
        convert_row_pair([src0, src1], &mut y0, &mut y1, &mut cbd, &mut crd, &mut tmp);
        for i in 0..pw {
            assert_eq!(i32::from(y0[i]), ycc(src0, i)[0], "y0 {w} {i}");
            assert_eq!(i32::from(y1[i]), ycc(src1, i)[0], "y1 {w} {i}");
        }
        for x in 0..pw / 2 {
            for (c, d) in [(1, &cbd), (2, &crd)] {
                let sum: i32 = [
                    ycc(src0, 2 * x),
                    ycc(src0, 2 * x + 1),
                    ycc(src1, 2 * x),
                    ycc(src1, 2 * x + 1),
                ]
                .iter()
                .map(|p| p[c])
                .sum();
                assert_eq!(i32::from(d[x]), (sum + 1 + (x % 2) as i32) >> 2, "chroma {c} {w} {x}");
            }
        }
    }

    #[test]
    fn colour_conversions_match_libjpeg_formulas_at_every_width() {
        for w in [1usize, 7, 8, 9, 11, 15, 16, 17, 31, 32, 33, 40, 224] {
            let src: Vec<u8> = (0..w * 3).map(|i| ((i * 97 + 13) % 256) as u8).collect();
            let src1: Vec<u8> = (0..w * 3).map(|i| ((i * 61 + 200) % 256) as u8).collect();
            check_row_pair(&src, &src1);
            let yv: Vec<i16> = (0..w).map(|i| ((i * 37) % 300) as i16 - 20).collect();
            let cbv: Vec<i16> = (0..w).map(|i| ((i * 53) % 256) as i16).collect();
            let crv: Vec<i16> = (0..w).map(|i| ((i * 71 + 5) % 256) as i16).collect();
            let mut out = vec![0u8; 3 * w];
            let (cbs, crs) = (as_sums(&cbv), as_sums(&crv));
            ycc_to_rgb_row(&yv, [&cbs, &cbs], [&crs, &crs], &mut out);
            for i in 0..w {
                let (yy, cbv, crv) = (i32::from(yv[i]), i32::from(cbv[i]) - 128, i32::from(crv[i]) - 128);
                let r = yy + ((91881 * crv + 32768) >> 16);
                let g = yy + ((-22554 * cbv - 46802 * crv + 32768) >> 16);
                let b = yy + ((116130 * cbv + 32768) >> 16);
                let want = [r, g, b].map(|v| v.clamp(0, 255) as u8);
                assert_eq!(out[3 * i..3 * i + 3], want, "rgb {w} {i}");
            }
        }
    }

    #[test]
    fn ycc_to_rgb_is_exact_for_every_chroma_pair() {
        let n = 65536;
        let yv: Vec<i16> = (0..n).map(|i| ((i * 37 + i / 256) % 256) as i16).collect();
        let cbv: Vec<i16> = (0..n).map(|i| (i >> 8) as i16).collect();
        let crv: Vec<i16> = (0..n).map(|i| (i & 255) as i16).collect();
        let mut out = vec![0u8; 3 * n];
        let (cbs, crs) = (as_sums(&cbv), as_sums(&crv));
        ycc_to_rgb_row(&yv, [&cbs, &cbs], [&crs, &crs], &mut out);
        for i in 0..n {
            let (yy, cbv, crv) = (i32::from(yv[i]), i32::from(cbv[i]) - 128, i32::from(crv[i]) - 128);
            let r = yy + ((91881 * crv + 32768) >> 16);
            let g = yy + ((-22554 * cbv - 46802 * crv + 32768) >> 16);
            let b = yy + ((116130 * cbv + 32768) >> 16);
            assert_eq!(out[3 * i..3 * i + 3], [r, g, b].map(|v| v.clamp(0, 255) as u8), "{i}");
        }
    }

    #[test]
    fn downsampling_adds_pairs_with_alternating_bias() {
        for n in [1usize, 7, 8, 9, 17, 112] {
            let src: Vec<i32> = (0..2 * n).map(|i| ((i * 89 + 7) % 1021) as i32).collect();
            let mut d = vec![0i16; n];
            downsample_row(&src, &mut d);
            for x in 0..n {
                assert_eq!(
                    i32::from(d[x]),
                    (src[2 * x] + src[2 * x + 1] + 1 + (x % 2) as i32) >> 2,
                    "{n} {x}"
                );
            }
        }
    }

    #[test]
    fn forward_colour_conversion_is_exact_for_every_colour() {
        let mut src = vec![0u8; 3 * 65536];
        let mut src1 = vec![0u8; 3 * 65536];
        for r in 0..256usize {
            for (i, (p, q)) in src.chunks_exact_mut(3).zip(src1.chunks_exact_mut(3)).enumerate() {
                p.copy_from_slice(&[r as u8, (i >> 8) as u8, i as u8]);
                q.copy_from_slice(&[(255 - r) as u8, i as u8, (i >> 8) as u8]);
            }
            check_row_pair(&src, &src1);
        }
    }

    /// Horizontal sums that upsample to `v` itself: 4 v as both the near and the far sum
    /// gives `(16 v + 8 or 7) >> 4 = v`.
    fn as_sums(v: &[i16]) -> Vec<i16> {
        v.iter().map(|&c| 4 * c).collect()
    }

    #[test]
    fn upsampling_weighs_neighbours_nine_three_three_one() {
        for rw in [1usize, 2, 7, 8, 9, 10, 11, 17, 18, 25, 112] {
            let near: Vec<i16> = (0..rw).map(|i| ((i * 53 + 11) % 256) as i16).collect();
            let far: Vec<i16> = (0..rw).map(|i| ((i * 91 + 3) % 256) as i16).collect();
            let (mut hn, mut hf) = (vec![0i16; 2 * rw], vec![0i16; 2 * rw]);
            horizontal_sums(&near, &mut hn);
            horizontal_sums(&far, &mut hf);
            let out: Vec<i16> = (0..2 * rw).map(|i| upsample_vertical(hn[i], hf[i], i)).collect();
            // libjpeg's order: column sums, then 3:1 across
            let cs = |x: usize| 3 * i32::from(near[x]) + i32::from(far[x]);
            for x in 0..rw {
                let (last, next) = (cs(x.saturating_sub(1)), cs((x + 1).min(rw - 1)));
                assert_eq!(i32::from(out[2 * x]), (3 * cs(x) + last + 8) >> 4, "{rw} {x}");
                assert_eq!(i32::from(out[2 * x + 1]), (3 * cs(x) + next + 7) >> 4, "{rw} {x}");
            }
        }
    }

    /// The output row (AVX2 where present) is the per-pixel upsampling followed by the
    /// conversion, for any sums and widths.
    #[test]
    fn output_rows_upsample_then_convert() {
        for w in [1usize, 15, 16, 17, 33, 224] {
            let sums =
                |seed: usize| -> Vec<i16> { (0..w).map(|i| ((i * 7919 + seed * 104729) % 1021) as i16).collect() };
            let (cbn, cbf, crn, crf) = (sums(1), sums(2), sums(3), sums(4));
            let yv: Vec<i16> = (0..w).map(|i| ((i * 37) % 300) as i16 - 20).collect();
            let mut out = vec![0u8; 3 * w];
            ycc_to_rgb_row(&yv, [&cbn, &cbf], [&crn, &crf], &mut out);
            for i in 0..w {
                let cbv = i32::from(upsample_vertical(cbn[i], cbf[i], i)) - 128;
                let crv = i32::from(upsample_vertical(crn[i], crf[i], i)) - 128;
                let yy = i32::from(yv[i]);
                let r = yy + ((91881 * crv + 32768) >> 16);
                let g = yy + ((-22554 * cbv - 46802 * crv + 32768) >> 16);
                let b = yy + ((116130 * cbv + 32768) >> 16);
                assert_eq!(
                    out[3 * i..3 * i + 3],
                    [r, g, b].map(|v| v.clamp(0, 255) as u8),
                    "{w} {i}"
                );
            }
        }
    }
}
