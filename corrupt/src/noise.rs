//! Noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise.
//!
//! Each changes every value on its own, so they run on the 8-bit values directly, a chunk at a
//! time: the chunk's random numbers from the generator in one call, then one pass that reads
//! the input byte and writes the output byte, with no floating-point image in between. The
//! output is what the reference's float pipeline gives: clipped to `[0, 1]`, times 255,
//! truncated (`np.uint8`), here computed in units of 1/255 (`x + 255 sigma z` for
//! `x / 255 + sigma z`).

use std::sync::Arc;

use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Poisson};

use crate::Corruption;
use crate::ops;
use crate::simd::multiversion;

/// Standard deviation of gaussian_noise per severity.
pub(super) const GAUSSIAN: [f32; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
/// Photon counts of shot_noise per severity.
pub(super) const SHOT: [f32; 5] = [60.0, 25.0, 12.0, 5.0, 3.0];
/// Amount of impulse_noise per severity.
pub(super) const IMPULSE: [f32; 5] = [0.03, 0.06, 0.09, 0.17, 0.27];
/// Standard deviation of speckle_noise per severity.
pub(super) const SPECKLE: [f32; 5] = [0.15, 0.2, 0.35, 0.45, 0.6];

/// Values per chunk: the random numbers of one chunk stay in L1.
const CHUNK: usize = 4096;

/// Applies one noise corruption at severity index `s` (0..5).
pub(super) fn apply(img: &RgbImage, c: Corruption, s: usize, rng: &mut impl Rng) -> RgbImage {
    let src = img.as_raw();
    let mut out = vec![0u8; src.len()];
    match c {
        Corruption::GaussianNoise => gaussian(src, &mut out, GAUSSIAN[s], false, rng),
        Corruption::ShotNoise => poisson(src, &mut out, SHOT[s], rng),
        Corruption::ImpulseNoise => salt_and_pepper(src, &mut out, IMPULSE[s], rng),
        _ => gaussian(src, &mut out, SPECKLE[s], true, rng),
    }
    RgbImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| img.clone())
}

/// gaussian_noise (`x + N(0, sigma)`) or, `multiplicative`, speckle_noise (`x + x N(0, sigma)`),
/// the normal draws taken from the 65,536-point quantile table of [`ops::normal_table`] by 16
/// random bits each.
fn gaussian(src: &[u8], out: &mut [u8], sigma: f32, multiplicative: bool, rng: &mut impl Rng) {
    let table = ops::normal_table();
    by_chunks(src, out, rng, |s, bits: &[u16], o| {
        if multiplicative {
            speckle_chunk(s, bits, o, table, sigma);
        } else {
            gaussian_chunk(s, bits, o, table, 255.0 * sigma);
        }
    });
}

/// Runs `f` on [`CHUNK`]-value pieces of `src` and `out` with one random number per value,
/// the piece's numbers drawn from `rng` in one call.
fn by_chunks<T: Copy + Default>(
    src: &[u8],
    out: &mut [u8],
    rng: &mut impl Rng,
    mut f: impl FnMut(&[u8], &[T], &mut [u8]),
) where
    [T]: rand::Fill,
{
    let mut bits = [T::default(); CHUNK];
    for (s, o) in src.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let bits = &mut bits[..s.len()];
        rng.fill(bits);
        f(s, bits, o);
    }
}

multiversion! {
/// `out = clip_trunc(x + scale * z)` for the chunk.
fn gaussian_chunk(src: &[u8], bits: &[u16], out: &mut [u8], table: &[f32; 65536], scale: f32) {
    for ((o, &x), &r) in out.iter_mut().zip(src).zip(bits) {
        *o = ops::clip_trunc(f32::from(x) + scale * table[usize::from(r)]);
    }
}
}

multiversion! {
/// `out = clip_trunc(x + x * sigma * z)` for the chunk.
fn speckle_chunk(src: &[u8], bits: &[u16], out: &mut [u8], table: &[f32; 65536], sigma: f32) {
    for ((o, &x), &r) in out.iter_mut().zip(src).zip(bits) {
        let x = f32::from(x);
        *o = ops::clip_trunc(x + x * sigma * table[usize::from(r)]);
    }
}
}

/// impulse_noise as scikit-image `random_noise(mode='s&p')`: each value independently becomes
/// 255 or 0 (equally likely) with probability `amount`. 16 random bits per value: 15 decide
/// whether it flips (probability `amount` to 1/32768), one whether to salt or pepper.
fn salt_and_pepper(src: &[u8], out: &mut [u8], amount: f32, rng: &mut impl Rng) {
    let threshold = (f64::from(amount.clamp(0.0, 1.0)) * 32768.0).round() as u16;
    by_chunks(src, out, rng, |s, bits: &[u16], o| {
        salt_and_pepper_chunk(s, bits, o, threshold)
    });
}

multiversion! {
/// Selects without branches: the flip decisions are coin flips no predictor can learn.
fn salt_and_pepper_chunk(src: &[u8], bits: &[u16], out: &mut [u8], threshold: u16) {
    for ((o, &x), &r) in out.iter_mut().zip(src).zip(bits) {
        let flip = 0u8.wrapping_sub(u8::from((r >> 1) < threshold));
        let salt = 0u8.wrapping_sub((r & 1) as u8);
        *o = (x & !flip) | (salt & flip);
    }
}
}

/// shot_noise: `Poisson(x / 255 * photons) / photons`, from per-level alias tables of the output
/// bytes, so a draw costs 32 random bits, one table load and a comparison.
fn poisson(src: &[u8], out: &mut [u8], photons: f32, rng: &mut impl Rng) {
    if !(photons > 0.0 && photons <= 2000.0) {
        // Outside the tables' range (or NaN): draw directly.
        for (o, &x) in out.iter_mut().zip(src) {
            let lambda = f64::from(x) / 255.0 * f64::from(photons);
            *o = match Poisson::new(lambda) {
                Ok(d) => ops::to_u8_trunc(d.sample(rng) as f32 / photons),
                Err(_) => 0,
            };
        }
        return;
    }
    let tables = poisson_tables(photons);
    by_chunks(src, out, rng, |s, bits: &[u32], o| tables.sample(s, bits, o));
}

/// Walker/Vose alias tables of the output byte of `Poisson(level / 255 * photons) / photons`
/// for the 256 8-bit levels, `1 << bits` entries per level (zero-probability entries pad the
/// outcomes to a power of two, so the column is the top bits of a random number). An entry is
/// `threshold << 16 | byte << 8 | alias byte`: the column's own byte is kept when the low 16
/// random bits are below the threshold.
#[derive(Debug)]
struct PoissonTables {
    bits: u32,
    entries: Vec<u32>,
}

impl PoissonTables {
    /// Builds the tables for `photons` in `(0, 2000]`.
    fn new(photons: f32) -> Self {
        let inv = 1.0 / photons;
        let p = f64::from(photons);
        // Per level: (output byte, probability), bytes ascending and distinct.
        let outcomes: Vec<Vec<(u8, f64)>> = (0..256)
            .map(|i| {
                let lambda = i as f64 / 255.0 * p;
                // support wide enough that the tail left out is below 1e-12
                let n = (lambda + 12.0 * lambda.sqrt() + 14.0).ceil() as usize;
                let mut pk = (-lambda).exp();
                let mut merged: Vec<(u8, f64)> = vec![];
                for k in 0..n {
                    let byte = ops::to_u8_trunc(k as f32 * inv);
                    match merged.last_mut() {
                        Some((b, q)) if *b == byte => *q += pk,
                        _ => merged.push((byte, pk)),
                    }
                    pk *= lambda / (k + 1) as f64;
                }
                merged
            })
            .collect();
        let width = outcomes
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .next_power_of_two()
            .max(2);
        let mut entries = Vec::with_capacity(256 * width);
        for merged in &outcomes {
            let total: f64 = merged.iter().map(|o| o.1).sum();
            let byte = |k: usize| merged.get(k).map_or(0, |o| u32::from(o.0));
            // Vose's alias method over `width` columns (columns past the outcomes have
            // probability 0 and always take their alias).
            let mut scaled: Vec<f64> = (0..width)
                .map(|k| merged.get(k).map_or(0.0, |o| o.1 / total * width as f64))
                .collect();
            let mut alias: Vec<usize> = (0..width).collect();
            let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..width).partition(|&k| scaled[k] < 1.0);
            while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
                alias[s] = l;
                scaled[l] -= 1.0 - scaled[s];
                if scaled[l] < 1.0 {
                    large.pop();
                    small.push(l);
                }
            }
            for k in large.into_iter().chain(small) {
                // full columns: their alias is themselves, so the threshold's cap is harmless
                scaled[k] = 1.0;
                alias[k] = k;
            }
            entries.extend((0..width).map(|k| {
                let threshold = (scaled[k] * 65536.0).min(65535.0) as u32;
                threshold << 16 | byte(k) << 8 | byte(alias[k])
            }));
        }
        PoissonTables {
            bits: width.trailing_zeros(),
            entries,
        }
    }

    /// One draw per value of `src`, each from 32 random bits of `bits`, into `out`.
    fn sample(&self, src: &[u8], bits: &[u32], out: &mut [u8]) {
        sample_alias(&self.entries, self.bits, src, bits, out);
    }
}

multiversion! {
/// The column is the top `col_bits` of `r`, the acceptance test its low 16 bits.
fn sample_alias(entries: &[u32], col_bits: u32, src: &[u8], bits: &[u32], out: &mut [u8]) {
    let shift = 32 - col_bits;
    for ((o, &x), &r) in out.iter_mut().zip(src).zip(bits) {
        let e = entries[(usize::from(x) << col_bits) | (r >> shift) as usize];
        *o = if (r & 0xffff) < (e >> 16) { (e >> 8) as u8 } else { e as u8 };
    }
}
}

/// Tables per photon count, built once per process.
fn poisson_tables(photons: f32) -> Arc<PoissonTables> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<u32, Arc<PoissonTables>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(photons.to_bits())
        .or_insert_with(|| Arc::new(PoissonTables::new(photons)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each level's table gives its output bytes with the Poisson probabilities: exact
    /// probabilities from the entries (every random number once, in effect) against the pmf.
    #[test]
    fn poisson_tables_give_the_poisson_probabilities_of_each_byte() {
        for photons in [3.0f32, 12.0, 60.0, 317.5] {
            let t = PoissonTables::new(photons);
            let width = 1usize << t.bits;
            for level in [0usize, 1, 77, 128, 254, 255] {
                let mut prob = [0.0f64; 256];
                for &e in &t.entries[level * width..(level + 1) * width] {
                    let keep = f64::from(e >> 16) / 65536.0;
                    prob[((e >> 8) & 0xff) as usize] += keep / width as f64;
                    prob[(e & 0xff) as usize] += (1.0 - keep) / width as f64;
                }
                let lambda = level as f64 / 255.0 * f64::from(photons);
                let mut want = [0.0f64; 256];
                let mut pk = (-lambda).exp();
                for k in 0..(lambda * 3.0 + 40.0) as usize {
                    want[ops::to_u8_trunc(k as f32 / photons) as usize] += pk;
                    pk *= lambda / (k + 1) as f64;
                }
                for b in 0..256 {
                    assert!(
                        (prob[b] - want[b]).abs() < 1e-4,
                        "photons {photons} level {level} byte {b}: {} vs {}",
                        prob[b],
                        want[b]
                    );
                }
            }
        }
    }

    /// Salt and pepper flips the right share of values, half each way, and keeps the rest.
    #[test]
    fn salt_and_pepper_flips_the_amount() {
        use rand::SeedableRng;
        let src: Vec<u8> = (0..200_000u32).map(|i| (i % 200 + 30) as u8).collect();
        let mut out = vec![0u8; src.len()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        salt_and_pepper(&src, &mut out, 0.09, &mut rng);
        let (mut salt, mut pepper) = (0, 0);
        for (&o, &x) in out.iter().zip(&src) {
            match o {
                255 => salt += 1,
                0 => pepper += 1,
                _ => assert_eq!(o, x),
            }
        }
        let n = src.len() as f64;
        for share in [salt as f64 / n, pepper as f64 / n] {
            assert!((share - 0.045).abs() < 0.002, "{share}");
        }
    }
}
