//! libjpeg's `islow` DCT pair and its quantisation, as libjpeg-turbo runs them: the forward
//! transform of `jfdctint.c`, the reciprocal quantisation of `jcdctmgr.c` (`compute_reciprocal`
//! and `quantize`), dequantisation and the inverse transform of `jidctint.c`, in 16-bit lanes
//! with 32-bit products, the way its SIMD code (`jfdctint-avx2`, `jquanti-avx2`,
//! `jidctint-avx2`) does them.
//!
//! Why its own module: Pillow, which the reference port calls, encodes and decodes with these
//! integer transforms (`islow` is libjpeg's default method), so following them exactly makes
//! the round trip pixel-exact against Pillow. Every product and sum is an integer, so
//! regrouping `MULTIPLY(a + b, k1) + MULTIPLY(a, k2)` into `a (k1 + k2) + b k1` (one `pmaddwd`)
//! changes no value; values kept in 16 bits between steps are kept where libjpeg-turbo's SIMD
//! code keeps them.
//!
//! Two blocks are transformed at once: each [`Words`] value holds row `y` of both (lanes 0-7
//! and 8-15), so an AVX2 register carries two 8x8 blocks through every step. The generic code
//! runs on portable lanes ([`Portable`]) or AVX2 (`crate::simd::dct::Avx`, made only with an
//! AVX2 token: [`Words::Token`]); both give identical results (tested), and the portable one
//! is checked against a plain transcription of the C code.

#[cfg(target_arch = "x86_64")]
use crate::simd::dct::Avx;
use crate::simd::multiversion;

/// libjpeg's `islow` constants: `FIX(x) = round(x * 2^13)`.
const F0298: i32 = 2446;
const F0390: i32 = 3196;
const F0541: i32 = 4433;
const F0765: i32 = 6270;
const F0899: i32 = 7373;
const F1175: i32 = 9633;
const F1501: i32 = 12299;
const F1847: i32 = 15137;
const F1961: i32 = 16069;
const F2053: i32 = 16819;
const F2562: i32 = 20995;
const F3072: i32 = 25172;

/// The pairs of constants each `pmaddwd` uses, `a k0 + b k1` (all fit 16 bits).
const EVEN_2: (i16, i16) = ((F0541 + F0765) as i16, F0541 as i16);
const EVEN_6: (i16, i16) = (F0541 as i16, (F0541 - F1847) as i16);
const ODD_Z3: (i16, i16) = ((F1175 - F1961) as i16, F1175 as i16);
const ODD_Z4: (i16, i16) = (F1175 as i16, (F1175 - F0390) as i16);
const ODD_A: (i16, i16) = ((F0298 - F0899) as i16, -F0899 as i16);
const ODD_B: (i16, i16) = (-F0899 as i16, (F1501 - F0899) as i16);
const ODD_C: (i16, i16) = ((F2053 - F2562) as i16, -F2562 as i16);
const ODD_D: (i16, i16) = (-F2562 as i16, (F3072 - F2562) as i16);

/// [`idct_pass_low`]'s pairs: the same sums with `c4..c7` zero, so `tmp0 = tmp1 = c0 << 13`,
/// `z3 = c3`, `z4 = c1`, and each output's terms regrouped on `(c2, c0)` or `(c3, c1)`.
const LOW_10: (i16, i16) = ((F0541 + F0765) as i16, 8192);
const LOW_13: (i16, i16) = (-(F0541 + F0765) as i16, 8192);
const LOW_11: (i16, i16) = (F0541 as i16, 8192);
const LOW_12: (i16, i16) = (-F0541 as i16, 8192);
const LOW_T0: (i16, i16) = ((F1175 - F1961) as i16, (F1175 - F0899) as i16);
const LOW_T1: (i16, i16) = ((F1175 - F2562) as i16, (F1175 - F0390) as i16);
const LOW_T2: (i16, i16) = ((F3072 - F2562 + F1175 - F1961) as i16, F1175 as i16);
const LOW_T3: (i16, i16) = (F1175 as i16, (F1501 - F0899 + F1175 - F0390) as i16);

/// One quantisation table in the form libjpeg-turbo's encoder and decoder use it (natural
/// order): the reciprocal, correction and scale of `compute_reciprocal` for the divisor
/// `8 q` (the forward transform's output is 8 times the coefficient), and `q` itself for
/// dequantisation.
pub(crate) struct Divisors {
    recip: [u16; 64],
    corr: [u16; 64],
    scale: [u16; 64],
    q: [i16; 64],
}

impl Divisors {
    /// The divisors of a baseline table (`1..=255` per entry).
    pub(super) fn new(table: &[u16; 64]) -> Self {
        let mut d = Divisors {
            recip: [0; 64],
            corr: [0; 64],
            scale: [0; 64],
            q: [0; 64],
        };
        for (i, &q) in table.iter().enumerate() {
            let q = q.clamp(1, 255);
            let divisor = u32::from(q) << 3;
            // compute_reciprocal: divisor >= 8, so r >= 18 and the SIMD path applies
            let b = 31 - divisor.leading_zeros();
            let mut r = 16 + b;
            let mut fq = (1u32 << r) / divisor;
            let fr = (1u32 << r) % divisor;
            let mut c = divisor / 2;
            if fr == 0 {
                fq >>= 1;
                r -= 1;
            } else if fr <= divisor / 2 {
                c += 1;
            } else {
                fq += 1;
            }
            d.recip[i] = fq as u16;
            d.corr[i] = c as u16;
            d.scale[i] = (1u32 << (32 - r)) as u16;
            d.q[i] = q as i16;
        }
        d
    }

    /// The rows of a natural-order table as lanes for both blocks (a plain loop, not `map` /
    /// `from_fn`: see [`map8`]).
    #[inline(always)]
    fn rows<W: Words>(tok: W::Token, t: &[u16; 64]) -> [W; 8] {
        let mut rows = [W::splat(tok, 0); 8];
        for (v, row) in rows.iter_mut().enumerate() {
            *row = W::from_fn(tok, |l| t[v * 8 + l % 8] as i16);
        }
        rows
    }
}

/// Sixteen `i16` lanes: row `y` of two blocks. Implemented portably ([`Portable`]) and with
/// AVX2 (`crate::simd::dct::Avx`) with identical results: 16-bit sums wrap, products and their
/// sums are 32-bit, narrowing saturates.
///
/// Lanes are only made by the three constructors, which take a [`Words::Token`]: `()` for the
/// portable lanes, an AVX2 token ([`crate::simd::Avx2`]) for the AVX2 ones, so that holding AVX2
/// lanes proves the CPU has AVX2, which is what lets their methods use the intrinsics.
pub(crate) trait Words: Copy {
    /// What making lanes requires: proof that the CPU can run them.
    type Token: Copy;
    /// 16 `i32` lanes, in whatever order the implementation likes.
    type Wide: Copy;
    /// Lane `i` is `f(i)`.
    fn from_fn(t: Self::Token, f: impl Fn(usize) -> i16) -> Self;
    /// Every lane `v`.
    fn splat(t: Self::Token, v: i16) -> Self;
    /// Row `y` of the blocks at `a` and `b` (8 samples each).
    fn load(t: Self::Token, a: &[i16], b: &[i16]) -> Self;
    /// Stores the two halves to `a` and `b`.
    fn store(self, a: &mut [i16], b: &mut [i16]);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn shl2(self) -> Self;
    /// `(self + 2^(N-1)) >> N`, arithmetic, in 16 bits.
    fn round_shift<const N: i32>(self) -> Self;
    /// Bitwise or.
    fn or(self, o: Self) -> Self;
    /// `a k.0 + b k.1`, 32-bit.
    fn madd(a: Self, b: Self, k: (i16, i16)) -> Self::Wide;
    /// `self << 13`, 32-bit.
    fn widen13(self) -> Self::Wide;
    fn wadd(a: Self::Wide, b: Self::Wide) -> Self::Wide;
    fn wsub(a: Self::Wide, b: Self::Wide) -> Self::Wide;
    /// `(w + 2^(N-1)) >> N`, saturated to 16 bits.
    fn descale<const N: i32>(w: Self::Wide) -> Self;
    /// libjpeg-turbo's `quantize`: `sign(x) * (((|x| + corr) * recip >> 16) * scale >> 16)`.
    fn quantise(self, recip: Self, corr: Self, scale: Self) -> Self;
    /// Wrapping 16-bit product.
    fn mullo(self, o: Self) -> Self;
    /// `clamp(self + 128, 0, 255)` (saturating first, like `packsswb` then `+ 128`).
    fn to_sample(self) -> Self;
    /// Whether every lane is zero.
    fn is_zero(self) -> bool;
    /// Whether lanes 4-7 and 12-15 (each block's right half) are zero.
    fn right_zero(self) -> bool;
    /// Lanes 0 and 8 set to zero.
    fn clear_dc(self) -> Self;
    /// Lane 0 copied to lanes 0-7, lane 8 to lanes 8-15.
    fn spread_dc(self) -> Self;
    /// Transposes both 8x8 blocks.
    fn transpose(m: [Self; 8]) -> [Self; 8];
}

/// The portable lanes.
type Portable = [i16; 16];

impl Words for Portable {
    type Token = ();
    type Wide = [i32; 16];
    #[inline(always)]
    fn from_fn((): (), f: impl Fn(usize) -> i16) -> Self {
        std::array::from_fn(f)
    }
    #[inline(always)]
    fn splat((): (), v: i16) -> Self {
        [v; 16]
    }
    #[inline(always)]
    fn load((): (), a: &[i16], b: &[i16]) -> Self {
        std::array::from_fn(|i| if i < 8 { a[i] } else { b[i - 8] })
    }
    #[inline(always)]
    fn store(self, a: &mut [i16], b: &mut [i16]) {
        a[..8].copy_from_slice(&self[..8]);
        b[..8].copy_from_slice(&self[8..]);
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i].wrapping_add(o[i]))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i].wrapping_sub(o[i]))
    }
    #[inline(always)]
    fn shl2(self) -> Self {
        std::array::from_fn(|i| self[i].wrapping_shl(2))
    }
    #[inline(always)]
    fn round_shift<const N: i32>(self) -> Self {
        std::array::from_fn(|i| self[i].wrapping_add(1 << (N - 1)) >> N)
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i] | o[i])
    }
    #[inline(always)]
    fn madd(a: Self, b: Self, k: (i16, i16)) -> Self::Wide {
        std::array::from_fn(|i| i32::from(a[i]) * i32::from(k.0) + i32::from(b[i]) * i32::from(k.1))
    }
    #[inline(always)]
    fn widen13(self) -> Self::Wide {
        std::array::from_fn(|i| i32::from(self[i]) << 13)
    }
    #[inline(always)]
    fn wadd(a: Self::Wide, b: Self::Wide) -> Self::Wide {
        std::array::from_fn(|i| a[i].wrapping_add(b[i]))
    }
    #[inline(always)]
    fn wsub(a: Self::Wide, b: Self::Wide) -> Self::Wide {
        std::array::from_fn(|i| a[i].wrapping_sub(b[i]))
    }
    #[inline(always)]
    fn descale<const N: i32>(w: Self::Wide) -> Self {
        std::array::from_fn(|i| (w[i].wrapping_add(1 << (N - 1)) >> N).clamp(-32768, 32767) as i16)
    }
    #[inline(always)]
    fn quantise(self, recip: Self, corr: Self, scale: Self) -> Self {
        std::array::from_fn(|i| {
            let x = self[i];
            let t = u32::from(x.unsigned_abs().wrapping_add(corr[i] as u16));
            let t = (t * u32::from(recip[i] as u16)) >> 16;
            let t = ((t * u32::from(scale[i] as u16)) >> 16) as i16;
            if x < 0 {
                t.wrapping_neg()
            } else if x == 0 {
                0
            } else {
                t
            }
        })
    }
    #[inline(always)]
    fn mullo(self, o: Self) -> Self {
        std::array::from_fn(|i| self[i].wrapping_mul(o[i]))
    }
    #[inline(always)]
    fn to_sample(self) -> Self {
        std::array::from_fn(|i| self[i].saturating_add(128).clamp(0, 255))
    }
    #[inline(always)]
    fn is_zero(self) -> bool {
        self.iter().all(|&v| v == 0)
    }
    #[inline(always)]
    fn right_zero(self) -> bool {
        self.iter().enumerate().all(|(i, &v)| i % 8 < 4 || v == 0)
    }
    #[inline(always)]
    fn clear_dc(self) -> Self {
        let mut r = self;
        r[0] = 0;
        r[8] = 0;
        r
    }
    #[inline(always)]
    fn spread_dc(self) -> Self {
        std::array::from_fn(|i| self[i / 8 * 8])
    }
    #[inline(always)]
    fn transpose(m: [Self; 8]) -> [Self; 8] {
        std::array::from_fn(|i| std::array::from_fn(|j| m[j % 8][j / 8 * 8 + i]))
    }
}

/// One 8-point forward pass of `jpeg_fdct_islow` on each lane: the rows pass (`PASS1`,
/// outputs scaled by 4) or the columns pass (the scaling removed).
#[inline(always)]
fn fdct_pass<W: Words, const PASS1: bool>(d: [W; 8]) -> [W; 8] {
    let tmp0 = d[0].add(d[7]);
    let tmp7 = d[0].sub(d[7]);
    let tmp1 = d[1].add(d[6]);
    let tmp6 = d[1].sub(d[6]);
    let tmp2 = d[2].add(d[5]);
    let tmp5 = d[2].sub(d[5]);
    let tmp3 = d[3].add(d[4]);
    let tmp4 = d[3].sub(d[4]);
    let tmp10 = tmp0.add(tmp3);
    let tmp13 = tmp0.sub(tmp3);
    let tmp11 = tmp1.add(tmp2);
    let tmp12 = tmp1.sub(tmp2);
    // CONST_BITS - PASS1_BITS in the rows pass, CONST_BITS + PASS1_BITS in the columns pass
    let descale = |w: W::Wide| {
        if PASS1 {
            W::descale::<11>(w)
        } else {
            W::descale::<15>(w)
        }
    };
    let (o0, o4) = if PASS1 {
        (tmp10.add(tmp11).shl2(), tmp10.sub(tmp11).shl2())
    } else {
        (tmp10.add(tmp11).round_shift::<2>(), tmp10.sub(tmp11).round_shift::<2>())
    };
    let o2 = descale(W::madd(tmp13, tmp12, EVEN_2));
    let o6 = descale(W::madd(tmp13, tmp12, EVEN_6));
    let (z3, z4) = (tmp4.add(tmp6), tmp5.add(tmp7));
    let (z3, z4) = (W::madd(z3, z4, ODD_Z3), W::madd(z3, z4, ODD_Z4));
    let o7 = descale(W::wadd(W::madd(tmp4, tmp7, ODD_A), z3));
    let o1 = descale(W::wadd(W::madd(tmp4, tmp7, ODD_B), z4));
    let o5 = descale(W::wadd(W::madd(tmp5, tmp6, ODD_C), z4));
    let o3 = descale(W::wadd(W::madd(tmp5, tmp6, ODD_D), z3));
    [o0, o1, o2, o3, o4, o5, o6, o7]
}

/// One 8-point inverse pass of `jpeg_idct_islow` on each lane: the columns pass (`PASS1`,
/// results scaled by 4) or the rows pass (the scaling and the factor 8 removed; not yet
/// range-limited).
#[inline(always)]
fn idct_pass<W: Words, const PASS1: bool>(c: [W; 8]) -> [W; 8] {
    // even part
    let tmp3 = W::madd(c[2], c[6], EVEN_2);
    let tmp2 = W::madd(c[2], c[6], EVEN_6);
    let tmp0 = c[0].add(c[4]).widen13();
    let tmp1 = c[0].sub(c[4]).widen13();
    let tmp10 = W::wadd(tmp0, tmp3);
    let tmp13 = W::wsub(tmp0, tmp3);
    let tmp11 = W::wadd(tmp1, tmp2);
    let tmp12 = W::wsub(tmp1, tmp2);
    // odd part: i0..i3 are c7, c5, c3, c1
    let z3 = c[7].add(c[3]);
    let z4 = c[5].add(c[1]);
    let z3w = W::madd(z3, z4, ODD_Z3);
    let z4w = W::madd(z3, z4, ODD_Z4);
    let t0 = W::wadd(W::madd(c[7], c[1], ODD_A), z3w);
    let t3 = W::wadd(W::madd(c[7], c[1], ODD_B), z4w);
    let t1 = W::wadd(W::madd(c[5], c[3], ODD_C), z4w);
    let t2 = W::wadd(W::madd(c[5], c[3], ODD_D), z3w);
    idct_output::<W, PASS1>([tmp10, tmp11, tmp12, tmp13], [t0, t1, t2, t3])
}

/// The four tables of [`Divisors`] as lanes, row by row: reciprocals, corrections, scales and
/// quantisation steps.
type LaneTables<W> = [[W; 8]; 4];

/// The last stage of [`idct_pass`] and [`idct_pass_low`]: the even part's `tmp10..tmp13` and
/// the odd part's `tmp0..tmp3` combined into the 8 outputs, descaled by `CONST_BITS -
/// PASS1_BITS` in the columns pass, `CONST_BITS + PASS1_BITS + 3` in the rows pass.
#[inline(always)]
fn idct_output<W: Words, const PASS1: bool>(even: [W::Wide; 4], odd: [W::Wide; 4]) -> [W; 8] {
    let descale = |w: W::Wide| {
        if PASS1 {
            W::descale::<11>(w)
        } else {
            W::descale::<18>(w)
        }
    };
    let [tmp10, tmp11, tmp12, tmp13] = even;
    let [t0, t1, t2, t3] = odd;
    [
        descale(W::wadd(tmp10, t3)),
        descale(W::wadd(tmp11, t2)),
        descale(W::wadd(tmp12, t1)),
        descale(W::wadd(tmp13, t0)),
        descale(W::wsub(tmp13, t0)),
        descale(W::wsub(tmp12, t1)),
        descale(W::wsub(tmp11, t2)),
        descale(W::wsub(tmp10, t3)),
    ]
}

/// [`idct_pass`] when `c[4..]` are zero: the same integers from fewer products.
#[inline(always)]
fn idct_pass_low<W: Words, const PASS1: bool>(c: [W; 8]) -> [W; 8] {
    let (tmp10, tmp13) = (W::madd(c[2], c[0], LOW_10), W::madd(c[2], c[0], LOW_13));
    let (tmp11, tmp12) = (W::madd(c[2], c[0], LOW_11), W::madd(c[2], c[0], LOW_12));
    let (t0, t1) = (W::madd(c[3], c[1], LOW_T0), W::madd(c[3], c[1], LOW_T1));
    let (t2, t3) = (W::madd(c[3], c[1], LOW_T2), W::madd(c[3], c[1], LOW_T3));
    idct_output::<W, PASS1>([tmp10, tmp11, tmp12, tmp13], [t0, t1, t2, t3])
}

/// `[f(0, a[0]), .., f(7, a[7])]` as a plain loop: unlike `std::array::from_fn`, it is always
/// inlined, so the AVX2 intrinsics in `f` are too (a call to a function compiled without AVX2
/// cannot inline them).
#[inline(always)]
fn map8<W: Copy>(mut a: [W; 8], f: impl Fn(usize, W) -> W) -> [W; 8] {
    for (i, v) in a.iter_mut().enumerate() {
        *v = f(i, *v);
    }
    a
}

/// The encoder's half for two blocks: level shift, forward DCT, quantisation. `rows` are the
/// blocks' sample rows; returns the quantised coefficients, row `v` (vertical frequency) of
/// both blocks per value, in natural order.
#[inline(always)]
fn quantise_pair<W: Words>(tok: W::Token, rows: [W; 8], t: &LaneTables<W>) -> [W; 8] {
    let [recip, corr, scale, _] = t;
    let centre = W::splat(tok, 128);
    let x = map8(rows, |_, r| r.sub(centre));
    // rows first (lanes are rows until the transpose), then columns: natural order out
    let c = fdct_pass::<W, false>(W::transpose(fdct_pass::<W, true>(W::transpose(x))));
    map8(c, |v, c| c.quantise(recip[v], corr[v], scale[v]))
}

/// Encodes and decodes two blocks: level shift, forward DCT, quantisation, dequantisation,
/// inverse DCT, range limit. `rows` are the blocks' sample rows; returns the decoded rows.
#[inline(always)]
fn roundtrip_pair<W: Words>(tok: W::Token, rows: [W; 8], t: &LaneTables<W>) -> [W; 8] {
    reconstruct_pair(quantise_pair(tok, rows, t), &t[3])
}

/// The decoder's half for two blocks: dequantisation by `q`'s rows, inverse DCT, range limit.
/// `k` holds the quantised coefficients as [`quantise_pair`] returns them; returns the
/// blocks' sample rows.
#[inline(always)]
fn reconstruct_pair<W: Words>(k: [W; 8], q: &[W; 8]) -> [W; 8] {
    let deq = map8(k, |v, k| k.mullo(q[v]));
    let (low, high) = (k[1].or(k[2]).or(k[3]), k[4].or(k[5]).or(k[6].or(k[7])));
    if k[0].clear_dc().or(low).or(high).is_zero() {
        // DC only (both blocks): every sample is `(dc + 4) >> 3`, what both passes give
        // (`dc << 2` after the first, `(s + 16) >> 5` in the second)
        return [deq[0].round_shift::<3>().to_sample().spread_dc(); 8];
    }
    // columns first (lanes are columns), then rows (lanes are rows after the transpose)
    // vertical frequencies 4-7 all zero: the first pass may skip them; horizontal ones 4-7
    // all zero: so are the columns 4-7 entering the second pass
    let ws = if high.is_zero() {
        idct_pass_low::<W, true>(deq)
    } else {
        idct_pass::<W, true>(deq)
    };
    let ws = W::transpose(ws);
    let out = if k[0].or(low).or(high).right_zero() {
        idct_pass_low::<W, false>(ws)
    } else {
        idct_pass::<W, false>(ws)
    };
    W::transpose(map8(out, |_, o| o.to_sample()))
}

/// Rows `0..8` of the blocks at sample offsets `a` and `b` of a `w`-wide plane, block A in the
/// low lanes, B in the high.
#[inline(always)]
fn load_blocks<W: Words>(tok: W::Token, plane: &[i16], w: usize, a: usize, b: usize) -> [W; 8] {
    map8([W::splat(tok, 0); 8], |y, _| {
        W::load(tok, &plane[a + y * w..], &plane[b + y * w..])
    })
}

/// Writes `rows` back as [`load_blocks`] read them (block B dropped when it is block A again).
#[inline(always)]
fn store_blocks<W: Words>(rows: [W; 8], plane: &mut [i16], w: usize, a: usize, b: usize) {
    for (y, row) in rows.into_iter().enumerate() {
        if a == b {
            let mut spare = [0i16; 8];
            row.store(&mut plane[a + y * w..], &mut spare);
        } else if b == a + 8 {
            let (left, right) = plane[a + y * w..].split_at_mut(8);
            row.store(left, right);
        } else {
            let (head, tail) = plane.split_at_mut(b + y * w);
            row.store(&mut head[a + y * w..], tail);
        }
    }
}

/// The lanes' form of `d`'s four tables.
#[inline(always)]
fn lane_tables<W: Words>(tok: W::Token, d: &Divisors) -> LaneTables<W> {
    let q = d.q.map(|v| v as u16);
    [
        Divisors::rows(tok, &d.recip),
        Divisors::rows(tok, &d.corr),
        Divisors::rows(tok, &d.scale),
        Divisors::rows(tok, &q),
    ]
}

/// The quantised coefficients of the 8x8 blocks of a `w`-wide plane of samples: block `i`
/// (`bw` blocks per row) starts at column `8 (i % bw)`, row `8 (i / bw)`, and its 64
/// coefficients (natural order) go to `out[64 i..64 i + 64]`. Blocks go two at a time.
#[inline(always)]
fn quantise_plane_with<W: Words>(tok: W::Token, plane: &[i16], w: usize, bw: usize, d: &Divisors, out: &mut [i16]) {
    let t = lane_tables::<W>(tok, d);
    let n = out.len() / 64;
    let offset = |i: usize| (i / bw) * 8 * w + (i % bw) * 8;
    for i in (0..n).step_by(2) {
        let j = (i + 1).min(n - 1);
        let (a, b) = (offset(i), offset(j));
        let rows = load_blocks(tok, plane, w, a, b);
        // a block's coefficients are 8 rows of 8
        store_blocks(quantise_pair(tok, rows, &t), out, 8, 64 * i, 64 * j);
    }
}

/// Round trips one plane of `w` x `h` samples (both multiples of 8) through the forward DCT,
/// quantisation, dequantisation and inverse DCT, block by block, in place. Blocks go two at a
/// time, side by side where they can; a last odd one is paired with itself.
#[inline(always)]
fn roundtrip_plane_with<W: Words>(tok: W::Token, plane: &mut [i16], w: usize, h: usize, d: &Divisors) {
    let t = lane_tables::<W>(tok, d);
    let (bw, n) = (w / 8, (w / 8) * (h / 8));
    let offset = |i: usize| (i / bw) * 8 * w + (i % bw) * 8;
    for i in (0..n).step_by(2) {
        let (a, b) = (offset(i), offset((i + 1).min(n - 1)));
        let rows = load_blocks(tok, plane, w, a, b);
        let out = roundtrip_pair(tok, rows, &t);
        store_blocks(out, plane, w, a, b);
    }
}

multiversion! {
    /// [`quantise_plane_with`] on the widest lanes the CPU has.
    pub(crate) fn quantise_plane(plane: &[i16], w: usize, bw: usize, d: &Divisors, out: &mut [i16]) = quantise_plane_with::<Portable, Avx>
}

multiversion! {
    /// [`roundtrip_plane_with`] on the widest lanes the CPU has.
    pub(crate) fn roundtrip_plane(plane: &mut [i16], w: usize, h: usize, d: &Divisors) = roundtrip_plane_with::<Portable, Avx>
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::simd::Avx2;

    /// `DESCALE`: divide by `2^n`, rounding.
    fn descale(x: i64, n: u32) -> i64 {
        (x + (1 << (n - 1))) >> n
    }

    /// `jpeg_fdct_islow`, transcribed from the C (64-bit intermediates), on a level-shifted
    /// block in natural order.
    fn c_fdct(d: &mut [i64; 64]) {
        for pass in 0..2 {
            for k in 0..8 {
                // rows in the first pass, columns in the second
                let at = |i: usize| if pass == 0 { k * 8 + i } else { i * 8 + k };
                let v: [i64; 8] = std::array::from_fn(|i| d[at(i)]);
                let (tmp0, tmp7, tmp1, tmp6) = (v[0] + v[7], v[0] - v[7], v[1] + v[6], v[1] - v[6]);
                let (tmp2, tmp5, tmp3, tmp4) = (v[2] + v[5], v[2] - v[5], v[3] + v[4], v[3] - v[4]);
                let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
                let n = if pass == 0 { 11 } else { 15 };
                let (o0, o4) = if pass == 0 {
                    ((tmp10 + tmp11) << 2, (tmp10 - tmp11) << 2)
                } else {
                    (descale(tmp10 + tmp11, 2), descale(tmp10 - tmp11, 2))
                };
                let z1 = (tmp12 + tmp13) * i64::from(F0541);
                let o2 = descale(z1 + tmp13 * i64::from(F0765), n);
                let o6 = descale(z1 - tmp12 * i64::from(F1847), n);
                let (z1, z2, z3, z4) = (tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7);
                let z5 = (z3 + z4) * i64::from(F1175);
                let (tmp4, tmp5) = (tmp4 * i64::from(F0298), tmp5 * i64::from(F2053));
                let (tmp6, tmp7) = (tmp6 * i64::from(F3072), tmp7 * i64::from(F1501));
                let (z1, z2) = (-z1 * i64::from(F0899), -z2 * i64::from(F2562));
                let (z3, z4) = (-z3 * i64::from(F1961) + z5, -z4 * i64::from(F0390) + z5);
                let o7 = descale(tmp4 + z1 + z3, n);
                let o5 = descale(tmp5 + z2 + z4, n);
                let o3 = descale(tmp6 + z2 + z3, n);
                let o1 = descale(tmp7 + z1 + z4, n);
                for (i, o) in [o0, o1, o2, o3, o4, o5, o6, o7].into_iter().enumerate() {
                    d[at(i)] = o;
                }
            }
        }
    }

    /// `jpeg_idct_islow` (with its zero shortcuts), transcribed from the C: dequantised
    /// coefficients in, range-limited samples out.
    fn c_idct(c: &[i64; 64]) -> [i64; 64] {
        let mut ws = [0i64; 64];
        let mut out = [0i64; 64];
        for pass in 0..2 {
            for k in 0..8 {
                // columns in the first pass, rows in the second
                let at = |i: usize| if pass == 0 { i * 8 + k } else { k * 8 + i };
                let src = if pass == 0 { c } else { &ws };
                let v: [i64; 8] = std::array::from_fn(|i| src[at(i)]);
                let n = if pass == 0 { 11 } else { 18 };
                let res: [i64; 8] = if v[1..].iter().all(|&x| x == 0) {
                    [if pass == 0 { v[0] << 2 } else { descale(v[0], 5) }; 8]
                } else {
                    let z1 = (v[2] + v[6]) * i64::from(F0541);
                    let tmp2 = z1 - v[6] * i64::from(F1847);
                    let tmp3 = z1 + v[2] * i64::from(F0765);
                    let (tmp0, tmp1) = ((v[0] + v[4]) << 13, (v[0] - v[4]) << 13);
                    let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
                    let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
                    let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
                    let z5 = (z3 + z4) * i64::from(F1175);
                    let (t0, t1) = (t0 * i64::from(F0298), t1 * i64::from(F2053));
                    let (t2, t3) = (t2 * i64::from(F3072), t3 * i64::from(F1501));
                    let (z1, z2) = (-z1 * i64::from(F0899), -z2 * i64::from(F2562));
                    let (z3, z4) = (-z3 * i64::from(F1961) + z5, -z4 * i64::from(F0390) + z5);
                    let (t0, t1, t2, t3) = (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4);
                    [
                        tmp10 + t3,
                        tmp11 + t2,
                        tmp12 + t1,
                        tmp13 + t0,
                        tmp13 - t0,
                        tmp12 - t1,
                        tmp11 - t2,
                        tmp10 - t3,
                    ]
                    .map(|x| descale(x, n))
                };
                for (i, r) in res.into_iter().enumerate() {
                    if pass == 0 {
                        ws[at(i)] = r;
                    } else {
                        out[at(i)] = (r + 128).clamp(0, 255);
                    }
                }
            }
        }
        out
    }

    /// The C round trip of one plane: level shift, `c_fdct`, quantisation by rounded
    /// division (`temp += qval >> 1; temp /= qval` on the magnitude), dequantisation,
    /// `c_idct`.
    fn c_roundtrip(plane: &mut [i16], w: usize, h: usize, table: &[u16; 64]) {
        for by in (0..h).step_by(8) {
            for bx in (0..w).step_by(8) {
                let o = by * w + bx;
                let mut b: [i64; 64] = std::array::from_fn(|i| i64::from(plane[o + i / 8 * w + i % 8]) - 128);
                c_fdct(&mut b);
                let deq: [i64; 64] = std::array::from_fn(|i| {
                    let qval = i64::from(table[i]) << 3;
                    let k = (b[i].abs() + (qval >> 1)) / qval;
                    b[i].signum() * k * i64::from(table[i])
                });
                for (i, v) in c_idct(&deq).into_iter().enumerate() {
                    plane[o + i / 8 * w + i % 8] = v as i16;
                }
            }
        }
    }

    /// Test planes of `w` x `h`: noise, extremes, flat blocks and gradients, block by block.
    fn test_plane(w: usize, h: usize, seed: u64) -> Vec<i16> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        let mut plane = vec![0i16; w * h];
        for by in (0..h).step_by(8) {
            for bx in (0..w).step_by(8) {
                let kind = next() % 6;
                let base = next() % 256;
                for y in 0..8 {
                    for x in 0..8 {
                        let v = match kind {
                            0 => next() % 256,
                            1 => 255 * (((x + y) % 2) as i64),
                            2 => base,
                            3 => (base + 20 * x as i64 - 13 * y as i64).clamp(0, 255),
                            4 => [0, 255][next() as usize % 2],
                            _ => (base + next() % 21 - 10).clamp(0, 255),
                        };
                        plane[(by + y) * w + bx + x] = v as i16;
                    }
                }
            }
        }
        plane
    }

    const QUALITIES: [u8; 9] = [1, 5, 7, 10, 15, 25, 50, 90, 100];

    #[test]
    fn portable_lanes_follow_the_c_code_exactly() {
        // 5 x 3 blocks: pairs side by side, across block rows and a last block alone
        let (w, h) = (40, 24);
        for seed in 0..40 {
            let plane = test_plane(w, h, seed);
            for quality in QUALITIES {
                for base in [&super::super::LUMA_Q, &super::super::CHROMA_Q] {
                    let table = super::super::scaled_table(base, quality);
                    let mut ours = plane.clone();
                    roundtrip_plane_with::<Portable>((), &mut ours, w, h, &Divisors::new(&table));
                    let mut want = plane.clone();
                    c_roundtrip(&mut want, w, h, &table);
                    assert_eq!(ours, want, "seed {seed}, quality {quality}");
                }
            }
        }
    }

    #[test]
    fn reciprocal_quantisation_is_rounded_division() {
        for q in 1u16..=255 {
            let d = Divisors::new(&[q; 64]);
            let lanes = |t: &[u16; 64]| Portable::from_fn((), |_| t[0] as i16);
            let (recip, corr, scale) = (lanes(&d.recip), lanes(&d.corr), lanes(&d.scale));
            let qval = i32::from(q) << 3;
            // every value the forward transform can give (|x| <= 2^15 - 2^11)
            for x in -30720i32..=30720 {
                let got = Portable::splat((), x as i16).quantise(recip, corr, scale)[0];
                let want = x.signum() * ((x.abs() + (qval >> 1)) / qval);
                assert_eq!(i32::from(got), want, "q {q}, x {x}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_and_portable_lanes_give_identical_planes() {
        #[target_feature(enable = "avx2")]
        fn avx2_roundtrip(t: Avx2, plane: &mut [i16], w: usize, h: usize, d: &Divisors) {
            roundtrip_plane_with::<Avx>(t, plane, w, h, d)
        }
        let Some(t) = crate::simd::avx2() else {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        };
        for (w, h) in [(40, 24), (224, 224), (112, 112), (8, 8), (16, 8), (8, 16)] {
            let plane = test_plane(w, h, (w * h) as u64);
            for quality in QUALITIES {
                let table = super::super::scaled_table(&super::super::LUMA_Q, quality);
                let d = Divisors::new(&table);
                let mut a = plane.clone();
                roundtrip_plane_with::<Portable>((), &mut a, w, h, &d);
                // the dispatched lanes (AVX-512VL where present) and plain AVX2
                let mut b = plane.clone();
                roundtrip_plane(&mut b, w, h, &d);
                assert_eq!(a, b, "{w}x{h}, quality {quality}");
                let mut c = plane.clone();
                // SAFETY: `t` proves the CPU has AVX2, the only feature `avx2_roundtrip` is
                // compiled for.
                unsafe { avx2_roundtrip(t, &mut c, w, h, &d) };
                assert_eq!(a, c, "{w}x{h}, quality {quality}, AVX2");
                let (bw, n) = (w / 8, (w / 8) * (h / 8));
                let (mut qa, mut qb) = (vec![0i16; 64 * n], vec![0i16; 64 * n]);
                quantise_plane_with::<Portable>((), &plane, w, bw, &d, &mut qa);
                quantise_plane(&plane, w, bw, &d, &mut qb);
                assert_eq!(qa, qb, "{w}x{h}, quality {quality}, coefficients");
            }
        }
    }
}
