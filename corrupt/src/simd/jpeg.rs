//! AVX2 kernels of the JPEG round trip and codec (`jpeg.rs`): RGB -> YCbCr with 4:2:0
//! downsampling (libjpeg's integers with `pmaddwd` on byte pairs), the downsampling alone, the
//! horizontal half of the "fancy" chroma upsampling, and the upsampling's vertical half with
//! YCbCr -> RGB in 16-bit lanes.
//!
//! Each kernel is a safe function taking an [`Avx2`] token, which proves the CPU has AVX2 and
//! so justifies calling the `#[target_feature(enable = "avx2")]` body; each does whole groups
//! of pixels and returns how many, leaving the rest to its portable twin in `jpeg.rs`, which
//! computes the same integers (tested).

use std::arch::x86_64::*;

use super::Avx2;

/// `crate::jpeg::convert_row_pair` for whole groups of 16 pixels (of both rows); returns the
/// number of pixels done (a multiple of 16; the caller does the rest).
#[inline(always)]
pub(crate) fn convert_row_pair(
    t: Avx2,
    src: [&[u8]; 2],
    y0: &mut [i16],
    y1: &mut [i16],
    cbd: &mut [i16],
    crd: &mut [i16],
) -> usize {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `convert_row_pair_avx2`
    // is compiled for.
    unsafe { convert_row_pair_avx2(src, y0, y1, cbd, crd) }
}

#[target_feature(enable = "avx2")]
fn convert_row_pair_avx2(src: [&[u8]; 2], y0: &mut [i16], y1: &mut [i16], cbd: &mut [i16], crd: &mut [i16]) -> usize {
    let w = (src[0].len() / 3)
        .min(src[1].len() / 3)
        .min(y0.len())
        .min(y1.len())
        .min(2 * cbd.len())
        .min(2 * crd.len());
    // 8 pixels (24 bytes) from pixel `px` of `s`, loaded 32 bytes at a time where `s` is
    // long enough, else through a copy
    let load = |s: &[u8], px: usize| {
        let b = &s[3 * px..3 * px + 24];
        if s.len() >= 3 * px + 32 {
            let b = &s[3 * px..3 * px + 32];
            // SAFETY: `b` holds 32 bytes (bounds-checked above); unaligned load.
            unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
        } else {
            let mut t = [0u8; 32];
            t[..24].copy_from_slice(b);
            // SAFETY: `t` holds 32 bytes; unaligned load.
            unsafe { _mm256_loadu_si256(t.as_ptr().cast()) }
        }
    };
    // dwords 0-2 (pixels 0-3) to the low half, dwords 3-5 (pixels 4-7) to the high half
    let spread = _mm256_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0);
    // Per 128-bit half, pixel p's bytes are 3p, 3p + 1, 3p + 2; `pair(a, b)` puts bytes
    // a and b of each pixel as two 16-bit words in its 32-bit lane, for `pmaddwd`.
    let z = -128i8;
    let pair = |a: i8, b: i8| {
        _mm256_setr_epi8(
            a,
            z,
            b,
            z,
            a + 3,
            z,
            b + 3,
            z,
            a + 6,
            z,
            b + 6,
            z,
            a + 9,
            z,
            b + 9,
            z,
            a,
            z,
            b,
            z,
            a + 3,
            z,
            b + 3,
            z,
            a + 6,
            z,
            b + 6,
            z,
            a + 9,
            z,
            b + 9,
            z,
        )
    };
    let (prg, pgb, pbb, prr) = (pair(0, 1), pair(1, 2), pair(2, 2), pair(0, 0));
    // libjpeg's integer formula exactly: coefficients over 32767 split into two words
    // (38470 g = 19235 g + 19235 g, 32768 x = 16384 x + 16384 x)
    let k = |a: i16, b: i16| _mm256_set1_epi32(i32::from(a as u16) | (i32::from(b) << 16));
    let (ky_rg, ky_gb) = (k(19595, 19235), k(19235, 7471));
    let (kb_rg, k_xx) = (k(-11059, -21709), k(16384, 16384));
    let kr_gb = k(-27439, -5329);
    let (half, chroma_k) = (_mm256_set1_epi32(32768), _mm256_set1_epi32((128 << 16) + 32767));
    let convert = |v: __m256i| {
        let v = _mm256_permutevar8x32_epi32(v, spread);
        let (rg, gb) = (_mm256_shuffle_epi8(v, prg), _mm256_shuffle_epi8(v, pgb));
        let (bb, rr) = (_mm256_shuffle_epi8(v, pbb), _mm256_shuffle_epi8(v, prr));
        let lin = |a, ka, b, kb, k| {
            _mm256_srai_epi32::<16>(_mm256_add_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(a, ka), _mm256_madd_epi16(b, kb)),
                k,
            ))
        };
        (
            lin(rg, ky_rg, gb, ky_gb, half),
            lin(rg, kb_rg, bb, k_xx, chroma_k),
            lin(rr, k_xx, gb, kr_gb, chroma_k),
        )
    };
    // 8 + 8 dwords (samples: no saturation) as 16 words in order
    let pack = |a: __m256i, b: __m256i| _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
    let store = |d: &mut [i16], v: __m256i| {
        let d = &mut d[..16];
        // SAFETY: `d` holds 16 i16s (bounds-checked above); unaligned store.
        unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
    };
    let bias = _mm256_setr_epi32(1, 2, 1, 2, 1, 2, 1, 2);
    // the 4:2:0 sums of 8 pixel pairs in order, plus the bias, over 4
    let down = |a: __m256i, b: __m256i| {
        // pair sums a01 a23 b01 b23 | a45 a67 b45 b67, put in order
        let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(a, b));
        _mm256_srai_epi32::<2>(_mm256_add_epi32(p, bias))
    };
    for k in 0..w / 16 {
        let x = 16 * k;
        let (ya0, cba0, cra0) = convert(load(src[0], x));
        let (yb0, cbb0, crb0) = convert(load(src[0], x + 8));
        let (ya1, cba1, cra1) = convert(load(src[1], x));
        let (yb1, cbb1, crb1) = convert(load(src[1], x + 8));
        store(&mut y0[x..], pack(ya0, yb0));
        store(&mut y1[x..], pack(ya1, yb1));
        let cb = down(_mm256_add_epi32(cba0, cba1), _mm256_add_epi32(cbb0, cbb1));
        let cr = down(_mm256_add_epi32(cra0, cra1), _mm256_add_epi32(crb0, crb1));
        // cb 0-7 in the low half, cr 0-7 in the high half
        let (c, d) = (pack(cb, cr), (&mut cbd[x / 2..x / 2 + 8], &mut crd[x / 2..x / 2 + 8]));
        // SAFETY: both destinations hold 8 i16s (bounds-checked above); unaligned stores.
        unsafe { _mm256_storeu2_m128i(d.1.as_mut_ptr().cast(), d.0.as_mut_ptr().cast(), c) };
    }
    w / 16 * 16
}

/// `crate::jpeg::horizontal_sums` for `x` in `1..1 + 8 n` (whole groups of 8 with both
/// neighbours inside); returns `n`.
#[inline(always)]
pub(crate) fn horizontal_sums(t: Avx2, v: &[i16], out: &mut [i16]) -> usize {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `horizontal_sums_avx2` is compiled for.
    unsafe { horizontal_sums_avx2(v, out) }
}

#[target_feature(enable = "avx2")]
fn horizontal_sums_avx2(v: &[i16], out: &mut [i16]) -> usize {
    let n = v.len().min(out.len() / 2).saturating_sub(2) / 8;
    let load = |i: usize| {
        let s = &v[i..i + 8];
        // SAFETY: `s` holds 8 i16s (bounds-checked above); unaligned load.
        unsafe { _mm256_cvtepi16_epi32(_mm_loadu_si128(s.as_ptr().cast())) }
    };
    // per 128-bit half: e0 e1 e2 e3 o0 o1 o2 o3 (16-bit) -> e0 o0 e1 o1 e2 o2 e3 o3
    let inter = _mm256_setr_epi8(
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
    );
    for k in 0..n {
        let x = 1 + 8 * k;
        let (l, m, r) = (load(x - 1), load(x), load(x + 1));
        let m3 = _mm256_add_epi32(_mm256_add_epi32(m, m), m);
        let (even, odd) = (_mm256_add_epi32(m3, l), _mm256_add_epi32(m3, r));
        // e0-3 o0-3 | e4-7 o4-7, then interleaved: the 16 outputs in order
        let v = _mm256_shuffle_epi8(_mm256_packs_epi32(even, odd), inter);
        let d = &mut out[2 * x..2 * x + 16];
        // SAFETY: `d` holds 16 i16s (bounds-checked above); unaligned store.
        unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) };
    }
    n
}

/// `crate::jpeg::downsample_row` for whole groups of 8 outputs; returns the number done.
#[inline(always)]
pub(crate) fn downsample(t: Avx2, s: &[i32], d: &mut [i16]) -> usize {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `downsample_avx2` is compiled for.
    unsafe { downsample_avx2(s, d) }
}

#[target_feature(enable = "avx2")]
fn downsample_avx2(s: &[i32], d: &mut [i16]) -> usize {
    let n = (s.len() / 2).min(d.len()) / 8;
    let bias = _mm256_setr_epi32(1, 2, 1, 2, 1, 2, 1, 2);
    for k in 0..n {
        let src = &s[16 * k..16 * k + 16];
        // SAFETY: `src` holds 16 i32s (bounds-checked above); unaligned loads.
        let (a, b) = unsafe {
            (
                _mm256_loadu_si256(src.as_ptr().cast()),
                _mm256_loadu_si256(src[8..].as_ptr().cast()),
            )
        };
        // pair sums a01 a23 b01 b23 | a45 a67 b45 b67, put in order
        let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(a, b));
        let v = _mm256_srai_epi32::<2>(_mm256_add_epi32(p, bias));
        // 8 samples (no saturation) in order in the low half
        let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v, v));
        let dst = &mut d[8 * k..8 * k + 8];
        // SAFETY: `dst` holds 8 i16s (bounds-checked above); unaligned store.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm256_castsi256_si128(v)) };
    }
    8 * n
}

/// `crate::jpeg::ycc_to_rgb_row` for whole groups of 16 pixels, in 16-bit lanes; returns the
/// number of pixels done (the caller does the rest). Packing with unsigned saturation is
/// the range limit.
#[inline(always)]
pub(crate) fn ycc_to_rgb(t: Avx2, yrow: &[i16], cb: [&[i16]; 2], cr: [&[i16]; 2], orow: &mut [u8]) -> usize {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `ycc_to_rgb_avx2` is compiled for.
    unsafe { ycc_to_rgb_avx2(yrow, cb, cr, orow) }
}

#[target_feature(enable = "avx2")]
fn ycc_to_rgb_avx2(yrow: &[i16], cb: [&[i16]; 2], cr: [&[i16]; 2], orow: &mut [u8]) -> usize {
    let w = [yrow.len(), cb[0].len(), cb[1].len(), cr[0].len(), cr[1].len()]
        .into_iter()
        .fold(orow.len() / 3, usize::min);
    let z = -128i8;
    // per 128-bit half, from r0-7 g0-7 (`rg`) and b0-7 (`bb`): output bytes 0-15
    // (r0 g0 b0 ... r5) and 16-23 (g5 b5 r6 ... b7)
    let m1 = _mm256_setr_epi8(
        0, 8, z, 1, 9, z, 2, 10, z, 3, 11, z, 4, 12, z, 5, 0, 8, z, 1, 9, z, 2, 10, z, 3, 11, z, 4, 12, z, 5,
    );
    let m2 = _mm256_setr_epi8(
        z, z, 0, z, z, 1, z, z, 2, z, z, 3, z, z, 4, z, z, z, 0, z, z, 1, z, z, 2, z, z, 3, z, z, 4, z,
    );
    let m3 = _mm256_setr_epi8(
        13, z, 6, 14, z, 7, 15, z, z, z, z, z, z, z, z, z, 13, z, 6, 14, z, 7, 15, z, z, z, z, z, z, z, z, z,
    );
    let m4 = _mm256_setr_epi8(
        z, 5, z, z, 6, z, z, 7, z, z, z, z, z, z, z, z, z, 5, z, z, 6, z, z, 7, z, z, z, z, z, z, z, z,
    );
    let c128 = _mm256_set1_epi16(128);
    // `(91881 c + 32768) >> 16` and `(116130 c + 32768) >> 16` for c in -128..=127 are
    // exactly `mulhrs(2c, 22970)` and `mulhrs(2c, 29033)` (checked for every c by the
    // tests); green's two terms round together, so `pmaddwd` on (cb, 2 cr) pairs
    let (kr, kb) = (_mm256_set1_epi16(22970), _mm256_set1_epi16(29033));
    let kg = _mm256_set1_epi32(i32::from(-22554i16 as u16) | (-23401 << 16));
    let half = _mm256_set1_epi32(32768);
    let bias = _mm256_setr_epi16(8, 7, 8, 7, 8, 7, 8, 7, 8, 7, 8, 7, 8, 7, 8, 7);
    let load = |s: &[i16], k: usize| {
        let s = &s[16 * k..16 * k + 16];
        // SAFETY: `s` holds 16 values (bounds-checked above); unaligned load.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    };
    // the vertical half of the upsampling: (3 near + far + 8 or 7) >> 4
    let up = |near: __m256i, far: __m256i| {
        let n3 = _mm256_add_epi16(_mm256_add_epi16(near, near), near);
        _mm256_srai_epi16::<4>(_mm256_add_epi16(_mm256_add_epi16(n3, far), bias))
    };
    for k in 0..w / 16 {
        let y = load(yrow, k);
        let cb = up(load(cb[0], k), load(cb[1], k));
        let cr = up(load(cr[0], k), load(cr[1], k));
        let (cb, cr) = (_mm256_sub_epi16(cb, c128), _mm256_sub_epi16(cr, c128));
        let (cb2, cr2) = (_mm256_add_epi16(cb, cb), _mm256_add_epi16(cr, cr));
        let r = _mm256_add_epi16(y, _mm256_mulhrs_epi16(cr2, kr));
        let b = _mm256_add_epi16(y, _mm256_mulhrs_epi16(cb2, kb));
        let gt = |pairs| _mm256_srai_epi32::<16>(_mm256_add_epi32(_mm256_madd_epi16(pairs, kg), half));
        // pixels 0-3 8-11 and 4-7 12-15 as 32-bit lanes, packed back in order
        let g = _mm256_packs_epi32(gt(_mm256_unpacklo_epi16(cb, cr2)), gt(_mm256_unpackhi_epi16(cb, cr2)));
        let g = _mm256_add_epi16(y, g);
        let (rg, bb) = (_mm256_packus_epi16(r, g), _mm256_packus_epi16(b, b));
        let a = _mm256_or_si256(_mm256_shuffle_epi8(rg, m1), _mm256_shuffle_epi8(bb, m2));
        let t = _mm256_or_si256(_mm256_shuffle_epi8(rg, m3), _mm256_shuffle_epi8(bb, m4));
        let dst = &mut orow[48 * k..48 * k + 48];
        // SAFETY: `dst` holds 48 bytes (bounds-checked above): 16, 8, 16, 8, unaligned.
        unsafe {
            _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm256_castsi256_si128(a));
            _mm_storel_epi64(dst[16..].as_mut_ptr().cast(), _mm256_castsi256_si128(t));
            _mm_storeu_si128(dst[24..].as_mut_ptr().cast(), _mm256_extracti128_si256::<1>(a));
            _mm_storel_epi64(dst[40..].as_mut_ptr().cast(), _mm256_extracti128_si256::<1>(t));
        }
    }
    w / 16 * 16
}
