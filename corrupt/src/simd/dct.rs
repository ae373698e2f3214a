//! The DCT's AVX2 lanes: [`Avx`], the `jpeg/islow.rs` [`Words`] (sixteen `i16` lanes, row
//! `y` of two 8x8 blocks) in one `__m256i`, so that the generic `islow` transforms run on
//! AVX2 with the same integers as on the portable lanes (tested).
//!
//! Why the intrinsics below are sound to call from methods that are not compiled with
//! `#[target_feature]`: an [`Avx`] is only made by the constructors, which take an [`Avx2`]
//! token, so every value, and every method call on one, comes after detection found AVX2.
//! The methods are `#[inline(always)]`; the dispatch (`multiversion!`'s `lanes` form) calls
//! them from functions compiled with AVX2 (or AVX-512) enabled, so they compile to single
//! instructions.

use std::arch::x86_64::*;

use super::Avx2;
use crate::jpeg::islow::Words;

/// Sixteen `i16` lanes in a `__m256i`: block A's row in the low 128 bits, B's in the high.
/// Made only by the [`Words`] constructors, which take an [`Avx2`] token, so a value proves
/// the CPU has AVX2 (the field is private to this module).
#[derive(Clone, Copy)]
pub(crate) struct Avx(__m256i);

/// 16 `i32` lanes as `pmaddwd` leaves them: lanes 0-3 and 8-11 in the first register,
/// 4-7 and 12-15 in the second.
/// Made only from [`Avx`] lanes, so it proves AVX2 as they do.
#[derive(Clone, Copy)]
pub(crate) struct Wide(__m256i, __m256i);

impl Words for Avx {
    type Token = Avx2;
    type Wide = Wide;
    #[inline(always)]
    fn from_fn(t: Avx2, f: impl Fn(usize) -> i16) -> Self {
        let _ = t;
        let v: [i16; 16] = std::array::from_fn(f);
        // SAFETY: `v` holds 16 i16s; unaligned load; `t` proves the CPU has AVX2.
        Avx(unsafe { _mm256_loadu_si256(v.as_ptr().cast()) })
    }
    #[inline(always)]
    fn splat(t: Avx2, v: i16) -> Self {
        let _ = t;
        // SAFETY: `t` proves the CPU has AVX2; no memory access.
        Avx(unsafe { _mm256_set1_epi16(v) })
    }
    #[inline(always)]
    fn load(t: Avx2, a: &[i16], b: &[i16]) -> Self {
        let _ = t;
        let (a, b) = (&a[..8], &b[..8]);
        // SAFETY: `a` and `b` hold 8 i16s each (bounds-checked above); unaligned loads
        // (one when they are adjacent); `t` proves the CPU has AVX2.
        Avx(unsafe {
            if std::ptr::eq(a.as_ptr().wrapping_add(8), b.as_ptr()) {
                _mm256_loadu_si256(a.as_ptr().cast())
            } else {
                _mm256_loadu2_m128i(b.as_ptr().cast(), a.as_ptr().cast())
            }
        })
    }
    #[inline(always)]
    fn store(self, a: &mut [i16], b: &mut [i16]) {
        let (a, b) = (&mut a[..8], &mut b[..8]);
        // SAFETY: `a` and `b` hold 8 i16s each (bounds-checked above); unaligned stores
        // (one when they are adjacent); these lanes exist, so the CPU has AVX2 (see [`Avx`]).
        unsafe {
            if std::ptr::eq(a.as_ptr().wrapping_add(8), b.as_ptr()) {
                _mm256_storeu_si256(a.as_mut_ptr().cast(), self.0)
            } else {
                _mm256_storeu2_m128i(b.as_mut_ptr().cast(), a.as_mut_ptr().cast(), self.0)
            }
        }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_add_epi16(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_sub_epi16(self.0, o.0) })
    }
    #[inline(always)]
    fn shl2(self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_slli_epi16::<2>(self.0) })
    }
    #[inline(always)]
    fn round_shift<const N: i32>(self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_srai_epi16::<N>(_mm256_add_epi16(self.0, _mm256_set1_epi16(1 << (N - 1)))) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_or_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn madd(a: Self, b: Self, k: (i16, i16)) -> Wide {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        unsafe {
            let k = _mm256_set1_epi32(i32::from(k.0 as u16) | (i32::from(k.1) << 16));
            Wide(
                _mm256_madd_epi16(_mm256_unpacklo_epi16(a.0, b.0), k),
                _mm256_madd_epi16(_mm256_unpackhi_epi16(a.0, b.0), k),
            )
        }
    }
    #[inline(always)]
    fn widen13(self) -> Wide {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access. A word
        // placed in a dword's upper half, shifted right by 3: `x << 13`, sign-extended.
        unsafe {
            let z = _mm256_setzero_si256();
            Wide(
                _mm256_srai_epi32::<3>(_mm256_unpacklo_epi16(z, self.0)),
                _mm256_srai_epi32::<3>(_mm256_unpackhi_epi16(z, self.0)),
            )
        }
    }
    #[inline(always)]
    fn wadd(a: Wide, b: Wide) -> Wide {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        unsafe { Wide(_mm256_add_epi32(a.0, b.0), _mm256_add_epi32(a.1, b.1)) }
    }
    #[inline(always)]
    fn wsub(a: Wide, b: Wide) -> Wide {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        unsafe { Wide(_mm256_sub_epi32(a.0, b.0), _mm256_sub_epi32(a.1, b.1)) }
    }
    #[inline(always)]
    fn descale<const N: i32>(w: Wide) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access. `packs`
        // interleaves per 128-bit half, which puts the lanes back in order.
        Avx(unsafe {
            let r = _mm256_set1_epi32(1 << (N - 1));
            _mm256_packs_epi32(
                _mm256_srai_epi32::<N>(_mm256_add_epi32(w.0, r)),
                _mm256_srai_epi32::<N>(_mm256_add_epi32(w.1, r)),
            )
        })
    }
    #[inline(always)]
    fn quantise(self, recip: Self, corr: Self, scale: Self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access. As in
        // libjpeg-turbo's `jquanti-avx2`.
        Avx(unsafe {
            let t = _mm256_add_epi16(_mm256_abs_epi16(self.0), corr.0);
            let t = _mm256_mulhi_epu16(_mm256_mulhi_epu16(t, recip.0), scale.0);
            _mm256_sign_epi16(t, self.0)
        })
    }
    #[inline(always)]
    fn mullo(self, o: Self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_mullo_epi16(self.0, o.0) })
    }
    #[inline(always)]
    fn to_sample(self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe {
            let v = _mm256_adds_epi16(self.0, _mm256_set1_epi16(128));
            _mm256_min_epi16(_mm256_max_epi16(v, _mm256_setzero_si256()), _mm256_set1_epi16(255))
        })
    }
    #[inline(always)]
    fn is_zero(self) -> bool {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        unsafe { _mm256_testz_si256(self.0, self.0) == 1 }
    }
    #[inline(always)]
    fn right_zero(self) -> bool {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        unsafe {
            let right = _mm256_setr_epi64x(0, -1, 0, -1);
            _mm256_testz_si256(self.0, right) == 1
        }
    }
    #[inline(always)]
    fn clear_dc(self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe { _mm256_blend_epi16::<1>(self.0, _mm256_setzero_si256()) })
    }
    #[inline(always)]
    fn spread_dc(self) -> Self {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        Avx(unsafe {
            let t = _mm256_shufflelo_epi16::<0>(self.0);
            _mm256_unpacklo_epi64(t, t)
        })
    }
    #[inline(always)]
    fn transpose(m: [Self; 8]) -> [Self; 8] {
        // SAFETY: these lanes exist, so the CPU has AVX2 (see [`Avx`]); no memory access.
        // Within each 128-bit half: words, then dwords, then qwords interleaved.
        unsafe {
            let a0 = _mm256_unpacklo_epi16(m[0].0, m[1].0);
            let a1 = _mm256_unpackhi_epi16(m[0].0, m[1].0);
            let a2 = _mm256_unpacklo_epi16(m[2].0, m[3].0);
            let a3 = _mm256_unpackhi_epi16(m[2].0, m[3].0);
            let a4 = _mm256_unpacklo_epi16(m[4].0, m[5].0);
            let a5 = _mm256_unpackhi_epi16(m[4].0, m[5].0);
            let a6 = _mm256_unpacklo_epi16(m[6].0, m[7].0);
            let a7 = _mm256_unpackhi_epi16(m[6].0, m[7].0);
            let b0 = _mm256_unpacklo_epi32(a0, a2);
            let b1 = _mm256_unpackhi_epi32(a0, a2);
            let b2 = _mm256_unpacklo_epi32(a1, a3);
            let b3 = _mm256_unpackhi_epi32(a1, a3);
            let b4 = _mm256_unpacklo_epi32(a4, a6);
            let b5 = _mm256_unpackhi_epi32(a4, a6);
            let b6 = _mm256_unpacklo_epi32(a5, a7);
            let b7 = _mm256_unpackhi_epi32(a5, a7);
            [
                Avx(_mm256_unpacklo_epi64(b0, b4)),
                Avx(_mm256_unpackhi_epi64(b0, b4)),
                Avx(_mm256_unpacklo_epi64(b1, b5)),
                Avx(_mm256_unpackhi_epi64(b1, b5)),
                Avx(_mm256_unpacklo_epi64(b2, b6)),
                Avx(_mm256_unpackhi_epi64(b2, b6)),
                Avx(_mm256_unpacklo_epi64(b3, b7)),
                Avx(_mm256_unpackhi_epi64(b3, b7)),
            ]
        }
    }
}
