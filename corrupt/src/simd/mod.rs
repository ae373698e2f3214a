//! CPU tiers: the one place that detects what the CPU has and picks code for it.
//!
//! Why this module exists: the corruptions' hot loops run much faster with wider vector
//! instructions (AVX2, AVX-512) than the x86-64 baseline (SSE2) the crate is compiled for, and
//! running an instruction the CPU lacks is undefined behaviour. So every such instruction is
//! reached through a token: a zero-sized [`Avx2`] or [`Avx512`] value that only run-time
//! detection makes ([`Avx2::detect`], [`Avx512::detect`], gathered by [`tier`]), so that
//! holding one proves the CPU has the features. Code compiled with `#[target_feature]` is
//! `unsafe` to call; each such function is called only where a token is in hand, by a safe
//! function that takes the token as an argument, which is what justifies its `unsafe` call:
//! the compiler, not a comment, keeps a kernel from running without its check.
//!
//! Two ways to use a tier, both through [`tier`]:
//! - [`multiversion!`]: a portable body compiled for each tier (baseline, AVX2, AVX-512) and
//!   the best copy called; the auto-vectoriser uses the wider lanes. Only lane width changes
//!   (no fused multiply-add, no reassociation), so every copy gives the same bits and
//!   corrupted images do not depend on the machine. Its `lanes` form runs a function generic
//!   over the DCT's lane type with the portable or the AVX2 lanes.
//! - hand-written kernels with `std::arch` intrinsics, in the submodules (x86-64 only): the
//!   JPEG colour conversions and chroma resampling ([`jpeg`]), the DCT's AVX2 lanes
//!   ([`dct`]), and the image operations' kernels ([`ops`]: the fixed-point blur's taps,
//!   Canny's non-maximum suppression, pixelate's byte shuffles). Each is a safe function whose
//!   first argument is an [`Avx2`] token, and each has a portable twin that computes the same
//!   integers or bits (tested against each other).

#[cfg(target_arch = "x86_64")]
pub(crate) mod dct;
#[cfg(target_arch = "x86_64")]
pub(crate) mod jpeg;
#[cfg(target_arch = "x86_64")]
pub(crate) mod ops;

/// Proof that the CPU running this process has AVX2. Only [`Avx2::detect`] (and
/// [`Avx512::avx2`]) make one, and only after detection found the feature; zero-sized and
/// `Copy`, so kernels take it by value at no cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU has AVX2 (always `None` off x86-64).
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Avx2(()));
        }
        None
    }
}

/// Proof that the CPU has AVX-512 F, VL and BW, and AVX2; made only by [`Avx512::detect`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// `Some` when the CPU has AVX-512 F, VL and BW, and AVX2 (always `None` off x86-64).
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            return Some(Avx512(()));
        }
        None
    }

    /// The AVX2 token, proven by this one (detection checked AVX2 too).
    #[inline]
    pub(crate) fn avx2(self) -> Avx2 {
        Avx2(())
    }
}

/// The widest tier the CPU has, with the token that proves it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tier {
    /// The baseline the crate is compiled for.
    Portable,
    /// AVX2.
    Avx2(Avx2),
    /// AVX-512 F, VL and BW, and AVX2.
    Avx512(Avx512),
}

impl Tier {
    /// AVX2's token, when the tier includes it.
    #[inline]
    pub(crate) fn avx2(self) -> Option<Avx2> {
        match self {
            Tier::Portable => None,
            Tier::Avx2(t) => Some(t),
            Tier::Avx512(t) => Some(t.avx2()),
        }
    }
}

/// The dispatch point: the widest tier this CPU has. Cheap enough to call per row (the
/// standard library caches detection; this is a few loads and bit tests).
#[inline]
pub(crate) fn tier() -> Tier {
    if let Some(t) = Avx512::detect() {
        return Tier::Avx512(t);
    }
    match Avx2::detect() {
        Some(t) => Tier::Avx2(t),
        None => Tier::Portable,
    }
}

/// AVX2's token if this CPU has it: what the hand-written kernels need.
#[inline]
pub(crate) fn avx2() -> Option<Avx2> {
    tier().avx2()
}

/// Defines a function whose body is compiled for every [`Tier`] and runs the widest copy the
/// CPU has ([`tier`]).
///
/// `multiversion! { /// docs; fn name(args) -> R { body } }`: the body as written, compiled
/// three times: for the baseline, with AVX2, and with AVX-512 F/VL/BW, so that the
/// auto-vectorised loops use 8 or 16 lanes instead of SSE2's 4. Only lane width changes (no
/// fused multiply-add, no reassociation), so every copy gives the same bits.
///
/// `multiversion! { /// docs; fn name(args) = with::<Portable, Avx> }`: runs `with`, a
/// function generic over the DCT's lanes (`fn with<W: Words>(t: W::Token, args)`,
/// `#[inline(always)]` so each copy compiles with its tier's features), on the `Avx` lanes
/// compiled with AVX-512 F/VL enabled (its 32 vector registers hold two blocks' temporaries
/// with fewer spills: 6% faster for the JPEG round trip on Zen 4; with BW enabled too, 2%
/// slower than without), on them compiled for AVX2, or on the `Portable` lanes.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                match $crate::simd::tier() {
                    $crate::simd::Tier::Avx512(_) => {
                        // SAFETY: `Tier::Avx512` holds an `Avx512` token, which only exists
                        // when the CPU has AVX-512 F, VL and BW and AVX2, all `avx512` needs.
                        return unsafe { avx512($($arg),*) };
                    }
                    $crate::simd::Tier::Avx2(_) => {
                        // SAFETY: `Tier::Avx2` holds an `Avx2` token, which only exists when
                        // the CPU has AVX2, all `avx2` needs.
                        return unsafe { avx2($($arg),*) };
                    }
                    $crate::simd::Tier::Portable => {}
                }
            }
            generic($($arg),*)
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $with:ident::<$portable:ty, $avx:ty>) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2(t: $crate::simd::Avx2, $($arg: $ty),*) {
                    $with::<$avx>(t, $($arg),*)
                }
                #[target_feature(enable = "avx2,avx512f,avx512vl")]
                fn avx512(t: $crate::simd::Avx2, $($arg: $ty),*) {
                    $with::<$avx>(t, $($arg),*)
                }
                match $crate::simd::tier() {
                    $crate::simd::Tier::Avx512(t) => {
                        // SAFETY: `t` is an `Avx512` token, which only exists when the CPU has
                        // AVX-512 F, VL and BW and AVX2, all `avx512` needs.
                        return unsafe { avx512(t.avx2(), $($arg),*) };
                    }
                    $crate::simd::Tier::Avx2(t) => {
                        // SAFETY: `t` is an `Avx2` token, which only exists when the CPU has
                        // AVX2, all `avx2` needs.
                        return unsafe { avx2(t, $($arg),*) };
                    }
                    $crate::simd::Tier::Portable => {}
                }
            }
            $with::<$portable>((), $($arg),*)
        }
    };
}

pub(crate) use multiversion;
