//! AVX2 kernels of the image operations: the fixed-point Gaussian blur's block of taps
//! (`blur.rs`), Canny's non-maximum suppression (`ops/edges.rs`) and pixelate's row expansion
//! by byte shuffles (`digital.rs`).
//!
//! Each kernel is a safe function taking an [`Avx2`] token, which proves the CPU has AVX2 and
//! so justifies calling the `#[target_feature(enable = "avx2")]` body; each has a portable twin
//! in its module that gives the same result (tested).

use std::arch::x86_64::*;

use super::Avx2;
use crate::blur::FIXED_BLOCK;

/// `bias + sum over taps t of mulhi(src[starts[t] + j], q[t])` for `j < FIXED_BLOCK`, with four
/// accumulators in AVX2 registers: `crate::blur::taps_block` on AVX2.
#[inline(always)]
pub(crate) fn taps_block(t: Avx2, src: &[i16], starts: &[usize], q: &[i16], bias: i16) -> [i16; FIXED_BLOCK] {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `taps_block_avx2` is compiled for.
    unsafe { taps_block_avx2(src, starts, q, bias) }
}

#[target_feature(enable = "avx2")]
fn taps_block_avx2(src: &[i16], starts: &[usize], q: &[i16], bias: i16) -> [i16; FIXED_BLOCK] {
    let mut acc = [_mm256_set1_epi16(bias); 4];
    for (&s, &qt) in starts.iter().zip(q) {
        let v = &src[s..s + FIXED_BLOCK];
        let w = _mm256_set1_epi16(qt);
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `v` holds 64 values (bounds-checked above); lane group k reads its 16
            // values at 16 k, unaligned.
            let x = unsafe { _mm256_loadu_si256(v.as_ptr().add(16 * k).cast()) };
            *a = _mm256_add_epi16(*a, _mm256_mulhi_epi16(x, w));
        }
    }
    let mut out = [0i16; FIXED_BLOCK];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds 64 values; group k writes 16 at 16 k, unaligned.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(16 * k).cast(), *a) };
    }
    out
}

/// The non-maximum suppression of `crate::ops::canny` for one row, 8 pixels at a time with
/// AVX2 compares and blends (the same comparisons as the scalar code, so the same result):
/// `rows` are the padded magnitude rows above, at and below (`w + 2` each), `gx`, `gy` and
/// `st` the row's `w` values. Returns the number of pixels done (a multiple of 8; the caller
/// does the rest).
#[inline(always)]
pub(crate) fn canny_nms_row(
    t: Avx2,
    rows: [&[f32]; 3],
    gx: &[f32],
    gy: &[f32],
    st: &mut [u8],
    low: f32,
    high: f32,
) -> usize {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `canny_nms_row_avx2` is compiled for.
    unsafe { canny_nms_row_avx2(rows, gx, gy, st, low, high) }
}

#[target_feature(enable = "avx2")]
fn canny_nms_row_avx2(rows: [&[f32]; 3], gx: &[f32], gy: &[f32], st: &mut [u8], low: f32, high: f32) -> usize {
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

/// Expands one row of pixelate's small image by `plan` (`crate::digital::expand_plan`):
/// output bytes `16 c..16 c + 16` are a byte shuffle of the 16 source bytes from chunk `c`'s
/// offset. `row` needs 16 bytes after each offset, `dst` `16 plan.len()` bytes.
#[inline(always)]
pub(crate) fn expand_row(t: Avx2, row: &[u8], plan: &[(usize, [i8; 16])], dst: &mut [u8]) {
    let _ = t;
    // SAFETY: `t` proves the CPU has AVX2, the only feature `expand_row_avx2` is compiled for.
    unsafe { expand_row_avx2(row, plan, dst) }
}

#[target_feature(enable = "avx2")]
fn expand_row_avx2(row: &[u8], plan: &[(usize, [i8; 16])], dst: &mut [u8]) {
    for ((off, mask), d) in plan.iter().zip(dst.chunks_exact_mut(16)) {
        let src = &row[*off..*off + 16];
        // SAFETY: `src`, `mask` and `d` are 16 bytes each (bounds-checked above); unaligned
        // loads and store; SSSE3's shuffle is part of AVX2, which this function is compiled for.
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().cast());
            let m = _mm_loadu_si128(mask.as_ptr().cast());
            _mm_storeu_si128(d.as_mut_ptr().cast(), _mm_shuffle_epi8(v, m));
        }
    }
}
