//! Noise: standard normal draws from a quantile table, Gaussian layers, and the plasma
//! fractal (fog's random layer).

use rand::Rng;

use super::FloatImage;
use crate::simd::multiversion;

/// Quantiles of the standard normal at `(i + 0.5) / 65536`, `i < 65536` (Acklam's rational
/// approximation refined by one Halley step; error far below f32 precision).
pub(crate) fn normal_table() -> &'static [f32; 65536] {
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
