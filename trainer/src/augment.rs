//! RandAugment (Cubuk et al., 2020), the input noise that Noisy Student puts on the student.
//!
//! Noisy Student trains the student on augmented images while the teacher labels clean ones; the
//! augmentation is RandAugment: `N` operations drawn uniformly (with replacement) from a fixed list
//! of 14, all at one global magnitude `M`. This module is a dependency-free port of the reference
//! implementation most results are reproduced with, `timm`'s `auto_augment.py` running on PIL, so
//! that a magnitude means the same thing here as in the papers:
//!
//! * **Magnitude scale.** `M` runs from 0 to [`MAX_MAGNITUDE`] = 30 (the scale Noisy Student and the
//!   RandAugment paper quote, e.g. `N = 2, M = 27`), not timm's 0..10. Every op maps it to a level
//!   `level = M / 30` in `0..=1` and then uses timm's formulas with `level` in place of
//!   `M / _LEVEL_DENOM`. Signed ops (rotate, shear, translate and the four enhance ops) negate their
//!   argument with probability 1/2, drawing the sign even at `M = 0` so that the random stream does
//!   not depend on the magnitude.
//! * **Op arguments** (timm's "increasing" variants, where a larger `M` is always a stronger
//!   change): rotate by `±30·level` degrees; shear by `±0.3·level`; translate by `±0.45·level` of
//!   the width or height (timm `translate_pct`); Color/Contrast/Brightness/Sharpness enhance factor
//!   `max(0.1, 1 ± 0.9·level)`; Solarize threshold `256 − ⌊256·level⌋`; Posterize keeps
//!   `8 − ⌊4·level⌋` bits, i.e. the AutoAugment paper's 4..8-bit range run so that severity grows
//!   with `M` (timm's `PosterizeIncreasing` keeps 4..0 bits, which blanks the image at high `M`;
//!   the truncation `⌊·⌋` is timm's `int()`).
//! * **Pixel semantics** follow PIL exactly (checked against Pillow's C sources): `ImageOps`
//!   autocontrast, equalize, solarize and posterize per channel; `ImageEnhance` blends computed in
//!   `f32` and truncated; greyscale by PIL's `L` conversion `(19595 R + 38470 G + 7471 B + 2^15) >> 16`
//!   (the ITU-R 601 weights 0.299/0.587/0.114, rounded); Sharpness's smoothing kernel
//!   `[[1,1,1],[1,5,1],[1,1,1]] / 13` leaves the one-pixel border unchanged.
//! * **Geometry** uses PIL's affine transform with **bilinear** sampling (timm picks bilinear or
//!   bicubic at random unless told; bilinear is its default and is used here always), pixel
//!   centres at `+0.5`, edge-clamped neighbours, and a fill colour for output pixels whose source
//!   lies outside the image: [`DEFAULT_FILL`], grey 128 (timm's `_FILL`, the `img_mean` it uses when
//!   no dataset mean is given). Shears are about the top-left corner and rotations about the centre,
//!   as in timm; positive degrees turn counter-clockwise.
//!
//! The ops work on [`RgbImage`](image::RgbImage) and on [`GrayImage`] (any [`AugmentPixel`]); on a
//! grey image every op gives exactly what it gives on the same image expanded to RGB, as in PIL's
//! `L` mode. Everything is deterministic given the random number generator. [`random_crop_flip`] is
//! the usual CIFAR-style base augmentation applied before RandAugment.

use image::{GrayImage, ImageBuffer, Luma, Pixel, Rgb};
use rand::Rng;

/// The top of the magnitude scale: `M = 30` is the strongest setting, `level = M / 30 = 1`.
pub const MAX_MAGNITUDE: f32 = 30.0;

/// Fill colour for pixels that geometric ops move in from outside the image (timm's `_FILL`).
pub const DEFAULT_FILL: [u8; 3] = [128, 128, 128];

/// Why a RandAugment configuration was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// `N` is outside `1..=14`.
    #[error("RandAugment needs 1 to {max} operations per image (N), got {got}")]
    NumOps {
        /// The requested `N`.
        got: usize,
        /// The largest accepted `N`.
        max: usize,
    },
    /// `M` is not a number in `0..=30`.
    #[error("RandAugment magnitude M must be a number from 0 to 30, got {0}")]
    Magnitude(f32),
    /// The magnitude's standard deviation is negative or not a number.
    #[error("RandAugment magnitude_std must be 0 (fixed), positive or infinite (uniform), got {0}")]
    MagnitudeStd(f32),
    /// The per-op probability is outside `0..=1`.
    #[error("RandAugment probability must be in 0..=1, got {0}")]
    Probability(f32),
    /// The list of ops to choose from is empty.
    #[error("RandAugment needs at least one operation to choose from")]
    NoOps,
}

/// One RandAugment operation, the paper's list of 14.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AugmentOp {
    /// Leaves the image unchanged.
    Identity,
    /// Stretches each channel so that its darkest value becomes 0 and its brightest 255.
    AutoContrast,
    /// Equalizes each channel's histogram (PIL `ImageOps.equalize`).
    Equalize,
    /// Rotates about the centre by up to ±30 degrees.
    Rotate,
    /// Inverts every value at or above a threshold that falls from 256 to 0 as `M` grows.
    Solarize,
    /// Blends with the greyscale image (factor `1 ± 0.9·level`; 0 would be grey).
    Color,
    /// Keeps only the top `8 − ⌊4·level⌋` bits of each value.
    Posterize,
    /// Blends with the mean grey level (factor `1 ± 0.9·level`).
    Contrast,
    /// Blends with black (factor `1 ± 0.9·level`).
    Brightness,
    /// Blends with a smoothed copy (factor `1 ± 0.9·level`; above 1 sharpens).
    Sharpness,
    /// Shears horizontally by up to ±0.3.
    ShearX,
    /// Shears vertically by up to ±0.3.
    ShearY,
    /// Shifts horizontally by up to ±45% of the width.
    TranslateX,
    /// Shifts vertically by up to ±45% of the height.
    TranslateY,
}

impl AugmentOp {
    /// All 14 operations, in the paper's order; RandAugment's default list.
    pub const ALL: [AugmentOp; 14] = [
        AugmentOp::Identity,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
        AugmentOp::Rotate,
        AugmentOp::Solarize,
        AugmentOp::Color,
        AugmentOp::Posterize,
        AugmentOp::Contrast,
        AugmentOp::Brightness,
        AugmentOp::Sharpness,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
    ];

    /// The op's name as the paper and timm spell it (`"ShearX"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AugmentOp::Identity => "Identity",
            AugmentOp::AutoContrast => "AutoContrast",
            AugmentOp::Equalize => "Equalize",
            AugmentOp::Rotate => "Rotate",
            AugmentOp::Solarize => "Solarize",
            AugmentOp::Color => "Color",
            AugmentOp::Posterize => "Posterize",
            AugmentOp::Contrast => "Contrast",
            AugmentOp::Brightness => "Brightness",
            AugmentOp::Sharpness => "Sharpness",
            AugmentOp::ShearX => "ShearX",
            AugmentOp::ShearY => "ShearY",
            AugmentOp::TranslateX => "TranslateX",
            AugmentOp::TranslateY => "TranslateY",
        }
    }

    /// Whether the op's argument gets a random sign (and so draws one value from the generator).
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            AugmentOp::Rotate
                | AugmentOp::Color
                | AugmentOp::Contrast
                | AugmentOp::Brightness
                | AugmentOp::Sharpness
                | AugmentOp::ShearX
                | AugmentOp::ShearY
                | AugmentOp::TranslateX
                | AugmentOp::TranslateY
        )
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for image::Rgb<u8> {}
    impl Sealed for image::Luma<u8> {}
}

/// The pixel types the ops accept: 8-bit RGB ([`RgbImage`](image::RgbImage)) and 8-bit grey
/// ([`GrayImage`]).
pub trait AugmentPixel: Pixel<Subpixel = u8> + sealed::Sealed {}
impl AugmentPixel for Rgb<u8> {}
impl AugmentPixel for Luma<u8> {}

/// RandAugment's settings: apply `num_ops` ops drawn uniformly with replacement from `ops`, each at
/// `magnitude` (0..=30), optionally jittered by `magnitude_std`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// `N`, the number of ops applied to each image.
    pub num_ops: usize,
    /// `M`, the magnitude on the 0..=30 scale; values outside are clamped when applied.
    pub magnitude: f32,
    /// Per-op jitter of `M` as in timm's `mstd`: 0 keeps `M` fixed, a positive value draws
    /// `M' ~ Normal(M, std)`, infinity draws `M' ~ Uniform(0, M)`; `M'` is clamped to 0..=30.
    pub magnitude_std: f32,
    /// Probability that each drawn op is actually applied. The paper and [`RandAugment::new`] use
    /// 1; timm's `rand-m9` applies each op with probability 0.5.
    pub prob: f32,
    /// Colour of pixels that geometric ops move in from outside the image ([`DEFAULT_FILL`]); grey
    /// images use its PIL luma.
    pub fill: [u8; 3],
    /// The ops to draw from ([`AugmentOp::ALL`] by default).
    pub ops: Vec<AugmentOp>,
}

impl RandAugment {
    /// RandAugment with `N = num_ops` (1..=14) ops per image at magnitude `M = magnitude` (0..=30),
    /// the paper's 14 ops, no magnitude jitter, every drawn op applied, fill [`DEFAULT_FILL`].
    pub fn new(num_ops: usize, magnitude: f32) -> Result<Self, AugmentError> {
        let ra = RandAugment {
            num_ops,
            magnitude,
            magnitude_std: 0.0,
            prob: 1.0,
            fill: DEFAULT_FILL,
            ops: AugmentOp::ALL.to_vec(),
        };
        ra.validate()?;
        Ok(ra)
    }

    /// The same settings with magnitude jitter `std` (see [`RandAugment::magnitude_std`]).
    pub fn with_magnitude_std(mut self, std: f32) -> Result<Self, AugmentError> {
        self.magnitude_std = std;
        self.validate()?;
        Ok(self)
    }

    /// The same settings with per-op probability `prob` (see [`RandAugment::prob`]).
    pub fn with_prob(mut self, prob: f32) -> Result<Self, AugmentError> {
        self.prob = prob;
        self.validate()?;
        Ok(self)
    }

    /// Checks the public fields: `N` in 1..=14, `M` in 0..=30, `magnitude_std >= 0`,
    /// `prob` in 0..=1 and a non-empty op list.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let max = AugmentOp::ALL.len();
        if self.num_ops == 0 || self.num_ops > max {
            return Err(AugmentError::NumOps { got: self.num_ops, max });
        }
        if !(0.0..=MAX_MAGNITUDE).contains(&self.magnitude) {
            return Err(AugmentError::Magnitude(self.magnitude));
        }
        if self.magnitude_std.is_nan() || self.magnitude_std < 0.0 {
            return Err(AugmentError::MagnitudeStd(self.magnitude_std));
        }
        if !(0.0..=1.0).contains(&self.prob) {
            return Err(AugmentError::Probability(self.prob));
        }
        if self.ops.is_empty() {
            return Err(AugmentError::NoOps);
        }
        Ok(())
    }

    /// Augments one image: `N` times, draw an op uniformly from [`RandAugment::ops`], skip it with
    /// probability `1 − prob`, draw its magnitude and apply it. The generator is used in exactly
    /// that order (op index, then a skip draw only if `prob < 1`, then a magnitude draw only if
    /// `magnitude_std > 0`, then the op's sign if it is signed), so the result is a function of the
    /// generator's state. Settings that [`RandAugment::validate`] rejects do not panic: an empty op
    /// list leaves the image unchanged and magnitudes are clamped to 0..=30.
    pub fn apply<P: AugmentPixel>(&self, img: &ImageBuffer<P, Vec<u8>>, rng: &mut impl Rng) -> ImageBuffer<P, Vec<u8>> {
        let mut out = img.clone();
        if self.ops.is_empty() {
            return out;
        }
        for _ in 0..self.num_ops {
            let op = self.ops[rng.random_range(0..self.ops.len())];
            if self.prob < 1.0 && rng.random::<f32>() > self.prob {
                continue;
            }
            let magnitude = self.sample_magnitude(rng);
            out = apply_op_with_fill(op, &out, magnitude, self.fill, rng);
        }
        out
    }

    /// [`RandAugment::apply`] for a grey image (Fashion-MNIST, MNIST), spelled out for readers who
    /// look for it; identical to applying the ops to the image expanded to RGB.
    pub fn apply_gray(&self, img: &GrayImage, rng: &mut impl Rng) -> GrayImage {
        self.apply(img, rng)
    }

    fn sample_magnitude(&self, rng: &mut impl Rng) -> f32 {
        let m = clamp_magnitude(self.magnitude);
        let std = self.magnitude_std;
        let jittered = if std == f32::INFINITY {
            m * rng.random::<f32>()
        } else if std > 0.0 {
            m + std * standard_normal(rng)
        } else {
            m
        };
        clamp_magnitude(jittered)
    }
}

/// A standard normal draw by the Box–Muller transform (two uniform draws).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1], so the logarithm is finite
    let u2 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Clamps to 0..=30, mapping NaN to 0.
fn clamp_magnitude(m: f32) -> f32 {
    if m.is_nan() { 0.0 } else { m.clamp(0.0, MAX_MAGNITUDE) }
}

/// Applies one op at magnitude `magnitude` (0..=30, clamped) with fill [`DEFAULT_FILL`]; draws the
/// op's random sign from `rng` if it has one. Public so that each op can be tested and shown alone.
pub fn apply_op<P: AugmentPixel>(
    op: AugmentOp,
    img: &ImageBuffer<P, Vec<u8>>,
    magnitude: f32,
    rng: &mut impl Rng,
) -> ImageBuffer<P, Vec<u8>> {
    apply_op_with_fill(op, img, magnitude, DEFAULT_FILL, rng)
}

/// [`apply_op`] with an explicit fill colour for the geometric ops.
pub fn apply_op_with_fill<P: AugmentPixel>(
    op: AugmentOp,
    img: &ImageBuffer<P, Vec<u8>>,
    magnitude: f32,
    fill: [u8; 3],
    rng: &mut impl Rng,
) -> ImageBuffer<P, Vec<u8>> {
    let level = f64::from(clamp_magnitude(magnitude)) / f64::from(MAX_MAGNITUDE);
    // timm's `_randomly_negate`: `-v if random.random() > 0.5 else v`.
    let sign = if op.is_signed() && rng.random::<f64>() > 0.5 {
        -1.0
    } else {
        1.0
    };
    apply_resolved(op, img, op_argument(op, level, sign, img.width(), img.height()), fill)
}

/// The PIL-level argument of `op` at `level` (0..=1) with sign `sign` (±1): degrees for Rotate,
/// the blend factor for the enhance ops, the threshold for Solarize, the bits kept for Posterize,
/// the shear factor for shears and the shift in pixels for translations; 0 for the rest.
pub(crate) fn op_argument(op: AugmentOp, level: f64, sign: f64, width: u32, height: u32) -> f64 {
    match op {
        AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => 0.0,
        AugmentOp::Rotate => sign * 30.0 * level,
        AugmentOp::Solarize => 256.0 - ((level * 256.0) as i64).min(256) as f64,
        AugmentOp::Posterize => 8.0 - ((level * 4.0) as i64).clamp(0, 4) as f64,
        AugmentOp::Color | AugmentOp::Contrast | AugmentOp::Brightness | AugmentOp::Sharpness => {
            (1.0 + sign * 0.9 * level).max(0.1)
        }
        AugmentOp::ShearX | AugmentOp::ShearY => sign * 0.3 * level,
        AugmentOp::TranslateX => sign * 0.45 * level * f64::from(width),
        AugmentOp::TranslateY => sign * 0.45 * level * f64::from(height),
    }
}

/// Applies `op` with its PIL-level argument (see [`op_argument`]).
pub(crate) fn apply_resolved<P: AugmentPixel>(
    op: AugmentOp,
    img: &ImageBuffer<P, Vec<u8>>,
    arg: f64,
    fill: [u8; 3],
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let c = usize::from(P::CHANNEL_COUNT);
    // `ImageBuffer::from_raw` accepts longer buffers; only the first `w·h·c` bytes are the image.
    let n = w * h * c;
    let src: &[u8] = &img.as_raw()[..n];
    let mut out = img.clone();
    if n == 0 {
        return out;
    }
    let dst: &mut [u8] = &mut (*out)[..n];
    match op {
        AugmentOp::Identity => {}
        AugmentOp::AutoContrast => apply_luts(dst, c, autocontrast_lut),
        AugmentOp::Equalize => apply_luts(dst, c, equalize_lut),
        AugmentOp::Solarize => {
            let threshold = arg.clamp(0.0, 256.0) as usize;
            let lut: [u8; 256] = std::array::from_fn(|i| if i < threshold { i as u8 } else { 255 - i as u8 });
            dst.iter_mut().for_each(|v| *v = lut[usize::from(*v)]);
        }
        AugmentOp::Posterize => {
            let bits = arg.clamp(0.0, 8.0) as u32;
            let mask = !((1u16 << (8 - bits)) - 1) as u8;
            dst.iter_mut().for_each(|v| *v &= mask);
        }
        AugmentOp::Color => {
            let degenerate: Vec<u8> = if c == 1 {
                src.to_vec()
            } else {
                src.chunks_exact(c)
                    .flat_map(|px| std::iter::repeat_n(luma(px), c))
                    .collect()
            };
            blend(&degenerate, src, arg as f32, dst);
        }
        AugmentOp::Contrast => {
            let total: u64 = src.chunks_exact(c).map(|px| u64::from(luma(px))).sum();
            let mean = (total as f64 / (w * h) as f64 + 0.5) as u8;
            blend(&vec![mean; src.len()], src, arg as f32, dst);
        }
        AugmentOp::Brightness => blend(&vec![0; src.len()], src, arg as f32, dst),
        AugmentOp::Sharpness => blend(&smooth(src, w, h, c), src, arg as f32, dst),
        AugmentOp::Rotate => rotate(src, dst, w, h, c, arg, &fill_for(c, fill)),
        AugmentOp::ShearX => affine(src, dst, w, h, c, [1.0, arg, 0.0, 0.0, 1.0, 0.0], &fill_for(c, fill)),
        AugmentOp::ShearY => affine(src, dst, w, h, c, [1.0, 0.0, 0.0, arg, 1.0, 0.0], &fill_for(c, fill)),
        AugmentOp::TranslateX => affine(src, dst, w, h, c, [1.0, 0.0, arg, 0.0, 1.0, 0.0], &fill_for(c, fill)),
        AugmentOp::TranslateY => affine(src, dst, w, h, c, [1.0, 0.0, 0.0, 0.0, 1.0, arg], &fill_for(c, fill)),
    }
    out
}

/// PIL's `RGB` → `L` conversion of one pixel (the pixel itself if it is already grey).
fn luma(px: &[u8]) -> u8 {
    match *px {
        [r, g, b] => ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8,
        [v, ..] => v,
        [] => 0,
    }
}

/// The fill colour as `c` channel values.
fn fill_for(c: usize, fill: [u8; 3]) -> Vec<u8> {
    if c == 3 { fill.to_vec() } else { vec![luma(&fill); c] }
}

/// Builds one lookup table per channel from that channel's histogram and applies it in place.
fn apply_luts(buf: &mut [u8], c: usize, make_lut: impl Fn(&[u64; 256]) -> [u8; 256]) {
    let mut hists = vec![[0u64; 256]; c];
    for px in buf.chunks_exact(c) {
        for (hist, &v) in hists.iter_mut().zip(px) {
            hist[usize::from(v)] += 1;
        }
    }
    let luts: Vec<[u8; 256]> = hists.iter().map(make_lut).collect();
    for px in buf.chunks_exact_mut(c) {
        for (lut, v) in luts.iter().zip(px) {
            *v = lut[usize::from(*v)];
        }
    }
}

/// PIL `ImageOps.autocontrast` (cutoff 0) for one channel.
fn autocontrast_lut(hist: &[u64; 256]) -> [u8; 256] {
    let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
    let (Some(lo), Some(hi)) = (hist.iter().position(|&n| n > 0), hist.iter().rposition(|&n| n > 0)) else {
        return identity;
    };
    if hi <= lo {
        return identity;
    }
    let scale = 255.0 / (hi - lo) as f64;
    let offset = -(lo as f64) * scale;
    // Python's int() truncates toward zero, as `as i64` does.
    std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
}

/// PIL `ImageOps.equalize` for one channel: `step = (sum − h[last nonzero]) // 255`,
/// `n = step // 2`, `lut[i] = n // step` then `n += h[i]`; the identity if fewer than two values
/// occur or `step` is 0. Values above 255 are clipped, as PIL's `point` does.
fn equalize_lut(hist: &[u64; 256]) -> [u8; 256] {
    let identity: [u8; 256] = std::array::from_fn(|i| i as u8);
    let nonzero: Vec<u64> = hist.iter().copied().filter(|&n| n > 0).collect();
    let (Some(&last), true) = (nonzero.last(), nonzero.len() > 1) else {
        return identity;
    };
    let step = (nonzero.iter().sum::<u64>() - last) / 255;
    if step == 0 {
        return identity;
    }
    let mut n = step / 2;
    let mut lut = [0u8; 256];
    for (entry, &count) in lut.iter_mut().zip(hist) {
        *entry = (n / step).min(255) as u8;
        n += count;
    }
    lut
}

/// PIL `Image.blend(degenerate, image, alpha)`: `d + alpha·(i − d)` in `f32`, clipped to 0..=255
/// and truncated (Rust's saturating float-to-int cast does both).
fn blend(degenerate: &[u8], image: &[u8], alpha: f32, out: &mut [u8]) {
    for ((o, &d), &i) in out.iter_mut().zip(degenerate).zip(image) {
        let (d, i) = (f32::from(d), f32::from(i));
        *o = (d + alpha * (i - d)) as u8;
    }
}

/// PIL's `ImageFilter.SMOOTH` (3×3 kernel `[[1,1,1],[1,5,1],[1,1,1]] / 13`, `f32` sums rounded
/// half up, one-pixel border copied); images smaller than 3×3 are copied unchanged.
fn smooth(src: &[u8], w: usize, h: usize, c: usize) -> Vec<u8> {
    let mut out = src.to_vec();
    if w < 3 || h < 3 {
        return out;
    }
    let k = [1.0f32 / 13.0, 5.0f32 / 13.0];
    let row = w * c;
    for y in 1..h - 1 {
        let (above, here, below) = (
            &src[(y - 1) * row..y * row],
            &src[y * row..(y + 1) * row],
            &src[(y + 1) * row..],
        );
        for x in 1..w - 1 {
            for ch in 0..c {
                let i = x * c + ch;
                let three = |line: &[u8], centre: f32| {
                    f32::from(line[i - c]) * k[0] + f32::from(line[i]) * centre + f32::from(line[i + c]) * k[0]
                };
                // Pillow sums the row below, the row itself, then the row above.
                let mut ss = 0.5f32;
                ss += three(below, k[0]);
                ss += three(here, k[1]);
                ss += three(above, k[0]);
                out[y * row + i] = ss as u8;
            }
        }
    }
    out
}

/// Python's `round(x, 15)`: Rust's fixed-precision formatting is correctly rounded, like CPython's.
fn round15(x: f64) -> f64 {
    format!("{x:.15}").parse().unwrap_or(x)
}

/// PIL `Image.rotate(degrees, BILINEAR, fillcolor=fill)` without expansion: exact transposes for
/// multiples of 90 degrees that keep the size, else the affine transform about the centre.
fn rotate(src: &[u8], dst: &mut [u8], w: usize, h: usize, c: usize, degrees: f64, fill: &[u8]) {
    let angle = degrees.rem_euclid(360.0);
    if !angle.is_finite() || angle == 0.0 {
        return; // `dst` already holds the image
    }
    // Source pixel of output (x, y) for the exact transposes, given (x, y, w, h).
    type Turn = fn(usize, usize, usize, usize) -> (usize, usize);
    let turn: Option<Turn> = if angle == 180.0 {
        Some(|x, y, w, h| (w - 1 - x, h - 1 - y))
    } else if w == h && angle == 90.0 {
        Some(|x, y, w, _| (w - 1 - y, x))
    } else if w == h && angle == 270.0 {
        Some(|x, y, _, h| (y, h - 1 - x))
    } else {
        None
    };
    if let Some(map) = turn {
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = map(x, y, w, h);
                let (o, s) = ((y * w + x) * c, (sy * w + sx) * c);
                dst[o..o + c].copy_from_slice(&src[s..s + c]);
            }
        }
        return;
    }
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let theta = -angle.to_radians();
    let (a, b, d, e) = (
        round15(theta.cos()),
        round15(theta.sin()),
        round15(-theta.sin()),
        round15(theta.cos()),
    );
    let matrix = [a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy];
    affine(src, dst, w, h, c, matrix, fill);
}

/// PIL `Image.transform(size, AFFINE, matrix, BILINEAR, fillcolor=fill)`: output pixel `(x, y)`
/// samples the input at `(a·x' + b·y' + c, d·x' + e·y' + f)` with `x' = x + 0.5`, `y' = y + 0.5`;
/// samples outside `[0, w) × [0, h)` take the fill colour, others are interpolated from the four
/// nearest pixels (clamped at the edges) in `f64` and truncated, exactly as Pillow's
/// `bilinear_filter32RGB` / `bilinear_filter8`.
fn affine(src: &[u8], dst: &mut [u8], w: usize, h: usize, c: usize, m: [f64; 6], fill: &[u8]) {
    let (wf, hf) = (w as f64, h as f64);
    let clamp_x = |x: i64| x.clamp(0, w as i64 - 1) as usize;
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            let o = (y * w + x) * c;
            if !(xin >= 0.0 && xin < wf && yin >= 0.0 && yin < hf) {
                dst[o..o + c].copy_from_slice(fill);
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (xf, yf) = (xs.floor(), ys.floor());
            let (dx, dy) = (xs - xf, ys - yf);
            let (xi, yi) = (xf as i64, yf as i64);
            let (x0, x1) = (clamp_x(xi), clamp_x(xi + 1));
            let row0 = yi.clamp(0, h as i64 - 1) as usize * w;
            let row1 = (yi + 1 >= 0 && yi + 1 < h as i64).then(|| (yi + 1) as usize * w);
            for ch in 0..c {
                let at = |row: usize, col: usize| f64::from(src[(row + col) * c + ch]);
                let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
                let v1 = lerp(at(row0, x0), at(row0, x1), dx);
                let v2 = row1.map_or(v1, |r| lerp(at(r, x0), at(r, x1), dx));
                dst[o + ch] = lerp(v1, v2, dy) as u8;
            }
        }
    }
}

/// CIFAR-style base augmentation: pad by `pad` pixels of zeros (torchvision `RandomCrop(padding=pad)`,
/// whose default fill is black, which is also Fashion-MNIST's background), crop back to the
/// original size at a uniformly random offset, then mirror left–right with probability 1/2 if
/// `flip`. Draws the vertical offset, the horizontal offset, then (if `flip`) the mirror decision.
pub fn random_crop_flip<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    pad: u32,
    flip: bool,
    rng: &mut impl Rng,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = (img.width(), img.height());
    let span = 2 * u64::from(pad);
    let top = rng.random_range(0..=span) as i64 - i64::from(pad);
    let left = rng.random_range(0..=span) as i64 - i64::from(pad);
    let mirror = flip && rng.random_bool(0.5);
    let mut out = ImageBuffer::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let cx = if mirror {
            i64::from(w) - 1 - i64::from(x)
        } else {
            i64::from(x)
        };
        let (sx, sy) = (cx + left, i64::from(y) + top);
        if (0..i64::from(w)).contains(&sx) && (0..i64::from(h)).contains(&sy) {
            *px = *img.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A deterministic, varied test image.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = x * 31 + y * 17 + (x * y) % 13;
            Rgb([
                (v % 256) as u8,
                ((v * 7 + 50) % 256) as u8,
                ((x * 40 + y * 3) % 256) as u8,
            ])
        })
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn every_op_keeps_the_size() {
        for (w, h) in [(28, 28), (17, 9), (1, 1), (2, 5)] {
            let img = pattern(w, h);
            let grey = image::imageops::grayscale(&img);
            for op in AugmentOp::ALL {
                for m in [0.0, 9.0, 30.0] {
                    let out = apply_op(op, &img, m, &mut rng());
                    assert_eq!(out.dimensions(), (w, h), "{} at {m}", op.name());
                    let out = apply_op(op, &grey, m, &mut rng());
                    assert_eq!(out.dimensions(), (w, h), "{} grey at {m}", op.name());
                }
            }
        }
        let empty = RgbImage::new(0, 0);
        // `from_raw` accepts a buffer longer than the image; the extra bytes are ignored.
        let long = RgbImage::from_raw(4, 4, (0..53).collect()).unwrap();
        for op in AugmentOp::ALL {
            assert_eq!(apply_op(op, &empty, 30.0, &mut rng()).dimensions(), (0, 0));
            let out = apply_op(op, &long, 30.0, &mut rng());
            let exact = apply_op(
                op,
                &RgbImage::from_raw(4, 4, (0..48).collect()).unwrap(),
                30.0,
                &mut rng(),
            );
            assert_eq!(out.as_raw()[..48], exact.as_raw()[..], "{}", op.name());
        }
    }

    #[test]
    fn identity_and_zero_magnitude_change_nothing() {
        let img = pattern(23, 19);
        assert_eq!(apply_op(AugmentOp::Identity, &img, 30.0, &mut rng()), img);
        let zero_is_identity = [
            AugmentOp::Color,
            AugmentOp::Contrast,
            AugmentOp::Brightness,
            AugmentOp::Sharpness,
            AugmentOp::Solarize,
            AugmentOp::Posterize,
            AugmentOp::Rotate,
            AugmentOp::ShearX,
            AugmentOp::ShearY,
            AugmentOp::TranslateX,
            AugmentOp::TranslateY,
        ];
        for op in zero_is_identity {
            for seed in 0..4 {
                let out = apply_op(op, &img, 0.0, &mut StdRng::seed_from_u64(seed));
                assert_eq!(out, img, "{} at M=0", op.name());
            }
        }
    }

    #[test]
    fn solarize_follows_pil() {
        let img = RgbImage::from_fn(16, 16, |x, y| {
            Rgb([(y * 16 + x) as u8, (255 - (y * 16 + x)) as u8, 128])
        });
        // M = 30: threshold 0, every value is inverted.
        let out = apply_op(AugmentOp::Solarize, &img, 30.0, &mut rng());
        for (o, i) in out.as_raw().iter().zip(img.as_raw()) {
            assert_eq!(*o, 255 - *i);
        }
        // M = 15: threshold 256 - int(0.5 * 256) = 128; PIL: `i if i < threshold else 255 - i`.
        let out = apply_op(AugmentOp::Solarize, &img, 15.0, &mut rng());
        for (o, &i) in out.as_raw().iter().zip(img.as_raw()) {
            assert_eq!(*o, if i < 128 { i } else { 255 - i });
        }
    }

    #[test]
    fn posterize_masks_low_bits() {
        let img = RgbImage::from_fn(16, 16, |x, y| Rgb([(y * 16 + x) as u8, 255, 7]));
        // M = 30 keeps 4 bits, M = 15 keeps 8 - int(2.0) = 6.
        for (m, mask) in [(30.0, 0xF0u8), (15.0, 0xFC), (7.4, 0xFF), (7.5, 0xFE)] {
            let out = apply_op(AugmentOp::Posterize, &img, m, &mut rng());
            for (o, i) in out.as_raw().iter().zip(img.as_raw()) {
                assert_eq!(*o, *i & mask, "M={m}");
            }
        }
    }

    #[test]
    fn autocontrast_stretches_two_levels_to_full_range() {
        let img = RgbImage::from_fn(8, 8, |x, _| if x < 4 { Rgb([60, 100, 7]) } else { Rgb([180, 101, 7]) });
        let out = apply_op(AugmentOp::AutoContrast, &img, 0.0, &mut rng());
        for (x, _, px) in out.enumerate_pixels() {
            // Channel 2 is constant and stays put.
            let expected = if x < 4 { [0, 0, 7] } else { [255, 255, 7] };
            assert_eq!(px.0, expected);
        }
        // Three levels: 50, 100, 200 -> scale 255/150 = 1.7, offset -85; int(100*1.7 - 85) = 85.
        let grey = GrayImage::from_fn(3, 1, |x, _| Luma([[50, 100, 200][x as usize]]));
        let out = apply_op(AugmentOp::AutoContrast, &grey, 0.0, &mut rng());
        assert_eq!(out.as_raw(), &[0, 85, 255]);
    }

    #[test]
    fn equalize_matches_pils_algorithm() {
        // 32x32 = 1024 pixels: 256 at 10, 256 at 50, 384 at 100, 128 at 200.
        // step = (1024 - 128) // 255 = 3, n starts at 1:
        // lut[10] = 1 // 3 = 0; n = 257; lut[50] = 85; n = 513; lut[100] = 171; n = 897;
        // lut[200] = 299 -> clipped to 255.
        let grey = GrayImage::from_fn(32, 32, |x, y| {
            let i = y * 32 + x;
            Luma([match i {
                0..256 => 10,
                256..512 => 50,
                512..896 => 100,
                _ => 200,
            }])
        });
        let out = apply_op(AugmentOp::Equalize, &grey, 0.0, &mut rng());
        for (o, i) in out.as_raw().iter().zip(grey.as_raw()) {
            let expected = match i {
                10 => 0,
                50 => 85,
                100 => 171,
                _ => 255,
            };
            assert_eq!(*o, expected);
        }
        // Per channel on RGB: channel 0 as above, channel 1 a single value (identity).
        let rgb = RgbImage::from_fn(32, 32, |x, y| Rgb([grey.get_pixel(x, y).0[0], 77, 0]));
        let out = apply_op(AugmentOp::Equalize, &rgb, 0.0, &mut rng());
        for (o, g) in out.pixels().zip(out_grey_expected(&grey)) {
            assert_eq!(o.0, [g, 77, 0]);
        }
        // Few pixels: step is 0, PIL leaves the image unchanged.
        let small = GrayImage::from_fn(4, 4, |x, _| Luma([x as u8 * 60]));
        assert_eq!(apply_op(AugmentOp::Equalize, &small, 0.0, &mut rng()), small);
    }

    fn out_grey_expected(grey: &GrayImage) -> Vec<u8> {
        grey.as_raw()
            .iter()
            .map(|v| match v {
                10 => 0,
                50 => 85,
                100 => 171,
                _ => 255,
            })
            .collect()
    }

    #[test]
    fn enhance_ops_follow_pil_blend() {
        let img = RgbImage::from_fn(4, 4, |x, y| Rgb([(x * 60) as u8, (y * 70) as u8, 200]));
        // Brightness: blend with black, factor 1 ± 0.9 at M = 30 (0.1 or 1.9).
        let out = apply_op(AugmentOp::Brightness, &img, 30.0, &mut rng());
        let up = out
            .as_raw()
            .iter()
            .zip(img.as_raw())
            .all(|(&o, &i)| o == (1.9f32 * f32::from(i)).min(255.0) as u8);
        let down = out
            .as_raw()
            .iter()
            .zip(img.as_raw())
            .all(|(&o, &i)| o == (0.1f32 * f32::from(i)) as u8);
        assert!(up || down);
        // Contrast at factor 0.5 (direct): blend with the rounded mean luma.
        let grey = GrayImage::from_fn(2, 1, |x, _| Luma([[10, 21][x as usize]]));
        // mean 15.5 -> int(16.0) = 16; 16 + 0.5 * (10 - 16) = 13; 16 + 0.5 * 5 = 18.5 -> 18.
        let out = apply_resolved(AugmentOp::Contrast, &grey, 0.5, DEFAULT_FILL);
        assert_eq!(out.as_raw(), &[13, 18]);
        // Color at factor 0: the PIL greyscale, replicated.
        let px = RgbImage::from_pixel(1, 1, Rgb([200, 100, 50]));
        let out = apply_resolved(AugmentOp::Color, &px, 0.0, DEFAULT_FILL);
        // (200*19595 + 100*38470 + 50*7471 + 32768) >> 16 = 124.
        assert_eq!(out.get_pixel(0, 0).0, [124, 124, 124]);
    }

    #[test]
    fn sharpness_smooths_the_interior_only() {
        // A single bright pixel in the middle of a 5x5 black image.
        let img = GrayImage::from_fn(5, 5, |x, y| Luma([if (x, y) == (2, 2) { 130 } else { 0 }]));
        let out = apply_resolved(AugmentOp::Sharpness, &img, 0.0, DEFAULT_FILL);
        // Centre: 130 * 5/13 + 0.5 = 50.5 -> 50; its 8 neighbours: 130/13 + 0.5 = 10.5 -> 10.
        for (x, y, px) in out.enumerate_pixels() {
            let expected = match (x, y) {
                (2, 2) => 50,
                (1..=3, 1..=3) => 10,
                _ => 0,
            };
            assert_eq!(px.0[0], expected, "({x}, {y})");
        }
        // Factor 2 extrapolates away from the smoothed copy: 2 * 130 - 50 = 210.
        let out = apply_resolved(AugmentOp::Sharpness, &img, 2.0, DEFAULT_FILL);
        assert_eq!(out.get_pixel(2, 2).0[0], 210);
    }

    #[test]
    fn rotate_quarter_turns_are_exact() {
        let img = pattern(12, 12);
        let ccw = image::imageops::rotate270(&img);
        let mut out = img.clone();
        rotate(img.as_raw(), &mut out, 12, 12, 3, 90.0, &DEFAULT_FILL);
        assert_eq!(out, ccw);
        // -270 degrees is 90 after PIL's `angle % 360`.
        let mut out2 = img.clone();
        rotate(img.as_raw(), &mut out2, 12, 12, 3, -270.0, &DEFAULT_FILL);
        assert_eq!(out2, ccw);
        let mut out3 = img.clone();
        rotate(img.as_raw(), &mut out3, 12, 12, 3, 180.0, &DEFAULT_FILL);
        assert_eq!(out3, image::imageops::rotate180(&img));
        // The affine matrix for 90 degrees is exact too (cos rounds to 0 at 15 decimals).
        let mut out4 = img.clone();
        let theta = -90f64.to_radians();
        let (a, b, d, e) = (
            round15(theta.cos()),
            round15(theta.sin()),
            round15(-theta.sin()),
            round15(theta.cos()),
        );
        let m = [a, b, a * -6.0 + b * -6.0 + 6.0, d, e, d * -6.0 + e * -6.0 + 6.0];
        affine(img.as_raw(), &mut out4, 12, 12, 3, m, &DEFAULT_FILL);
        assert_eq!(out4, ccw);
    }

    #[test]
    fn rotating_a_constant_image_keeps_it_constant_inside() {
        let img = RgbImage::from_pixel(20, 20, Rgb([40, 90, 250]));
        let out = apply_op(AugmentOp::Rotate, &img, 30.0, &mut rng());
        let (mut inside, mut filled) = (0, 0);
        for px in out.pixels() {
            match px.0 {
                [40, 90, 250] => inside += 1,
                [128, 128, 128] => filled += 1,
                other => panic!("unexpected pixel {other:?}"),
            }
        }
        assert!(inside > 300 && filled > 0, "inside {inside}, filled {filled}");
        // The centre pixel samples the centre.
        assert_eq!(out.get_pixel(10, 10).0, [40, 90, 250]);
    }

    #[test]
    fn translate_shifts_by_whole_pixels() {
        // Width 20, M = 30: 0.45 * 20 = 9 pixels, sign random.
        let img = pattern(20, 10);
        let out = apply_op(AugmentOp::TranslateX, &img, 30.0, &mut rng());
        let left = (0..20).all(|x| {
            (0..10).all(|y| {
                let expected = if x + 9 < 20 {
                    *img.get_pixel(x + 9, y)
                } else {
                    Rgb(DEFAULT_FILL)
                };
                *out.get_pixel(x, y) == expected
            })
        });
        let right = (0..20).all(|x| {
            (0..10).all(|y| {
                let expected = if x >= 9 {
                    *img.get_pixel(x - 9, y)
                } else {
                    Rgb(DEFAULT_FILL)
                };
                *out.get_pixel(x, y) == expected
            })
        });
        assert!(left ^ right);
        // PIL's matrix (1, 0, 0, 0, 1, 3) samples 3 rows further down: content moves up by 3.
        let out = apply_resolved(AugmentOp::TranslateY, &img, 3.0, [1, 2, 3]);
        for (x, y, px) in out.enumerate_pixels() {
            let expected = if y + 3 < 10 {
                *img.get_pixel(x, y + 3)
            } else {
                Rgb([1, 2, 3])
            };
            assert_eq!(*px, expected);
        }
    }

    #[test]
    fn shear_moves_rows_by_their_height() {
        // Shear 2 (beyond the op's range, chosen so that sampling is exact): output (x, y) samples
        // x + 0.5 + 2 (y + 0.5) = x + 2y + 1.5, i.e. pixel x + 2y + 1 of the same row.
        let img = GrayImage::from_fn(16, 4, |x, y| Luma([(x * 10 + y) as u8]));
        let out = apply_resolved(AugmentOp::ShearX, &img, 2.0, [9, 9, 9]);
        for (x, y, px) in out.enumerate_pixels() {
            let sx = x + 2 * y + 1;
            let expected = if sx < 16 { img.get_pixel(sx, y).0[0] } else { 9 };
            assert_eq!(px.0[0], expected, "({x}, {y})");
        }
    }

    #[test]
    fn grey_matches_rgb() {
        let grey = GrayImage::from_fn(17, 13, |x, y| Luma([((x * 37 + y * 11) % 256) as u8]));
        let rgb = RgbImage::from_fn(17, 13, |x, y| {
            let v = grey.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        });
        for op in AugmentOp::ALL {
            for m in [5.0, 17.0, 30.0] {
                let g = apply_op(op, &grey, m, &mut rng());
                let c = apply_op(op, &rgb, m, &mut rng());
                for (gp, cp) in g.pixels().zip(c.pixels()) {
                    assert_eq!([gp.0[0]; 3], cp.0, "{} at {m}", op.name());
                }
            }
        }
    }

    #[test]
    fn pil_reference_values() {
        // Expected values computed with Pillow 13 on the same 6x5 image:
        // img.rotate(17, BILINEAR, fillcolor=(128,)*3), ImageEnhance.Sharpness(img).enhance(1.7),
        // img.transform(size, AFFINE, (1, 0.23, 0, 0, 1, 0), BILINEAR, fillcolor=(128,)*3).
        let img = pattern(6, 5);
        let rot = apply_resolved(AugmentOp::Rotate, &img, 17.0, DEFAULT_FILL);
        assert_eq!(rot.as_raw(), &PIL_ROTATE_17[..]);
        let sharp = apply_resolved(AugmentOp::Sharpness, &img, 1.7, DEFAULT_FILL);
        assert_eq!(sharp.as_raw(), &PIL_SHARPNESS_1_7[..]);
        let shear = apply_resolved(AugmentOp::ShearX, &img, 0.23, DEFAULT_FILL);
        assert_eq!(shear.as_raw(), &PIL_SHEAR_X_0_23[..]);
    }

    const PIL_ROTATE_17: [u8; 90] = [
        128, 128, 128, 51, 152, 66, 80, 204, 104, 115, 140, 143, 151, 74, 182, 173, 27, 202, 17, 72, 17, 53, 110, 56,
        89, 107, 95, 125, 91, 134, 162, 105, 173, 194, 128, 205, 25, 128, 8, 61, 71, 47, 97, 217, 86, 135, 196, 125,
        173, 141, 164, 202, 198, 203, 37, 58, 6, 68, 77, 38, 106, 130, 77, 144, 116, 116, 179, 119, 155, 210, 140, 194,
        54, 126, 9, 75, 78, 29, 113, 113, 68, 151, 243, 107, 180, 201, 145, 128, 128, 128,
    ];
    const PIL_SHARPNESS_1_7: [u8; 90] = [
        0, 50, 0, 31, 11, 40, 62, 228, 80, 93, 189, 120, 124, 150, 160, 155, 111, 200, 17, 169, 3, 49, 151, 43, 81, 91,
        83, 113, 31, 123, 145, 0, 163, 177, 9, 203, 34, 32, 6, 67, 0, 46, 100, 255, 86, 133, 254, 126, 166, 220, 166,
        199, 163, 206, 51, 151, 9, 85, 147, 49, 119, 101, 89, 153, 60, 129, 189, 38, 169, 208, 226, 209, 68, 14, 12,
        103, 3, 52, 138, 248, 92, 173, 237, 132, 195, 135, 172, 230, 124, 212,
    ];
    const PIL_SHEAR_X_0_23: [u8; 90] = [
        3, 45, 4, 34, 35, 44, 65, 223, 84, 96, 184, 124, 127, 145, 164, 155, 111, 200, 28, 157, 16, 60, 125, 56, 92,
        93, 96, 124, 61, 136, 156, 29, 176, 177, 9, 203, 52, 17, 29, 85, 139, 69, 118, 223, 109, 151, 198, 149, 184,
        173, 189, 128, 128, 128, 78, 136, 41, 112, 118, 81, 146, 100, 121, 180, 82, 161, 203, 197, 201, 128, 128, 128,
        104, 11, 53, 139, 247, 93, 173, 233, 133, 196, 134, 173, 230, 124, 212, 128, 128, 128,
    ];

    #[test]
    fn same_seed_same_result() {
        let img = pattern(28, 28);
        let ra = RandAugment::new(2, 9.0).unwrap().with_magnitude_std(0.5).unwrap();
        let a = ra.apply(&img, &mut StdRng::seed_from_u64(42));
        let b = ra.apply(&img, &mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
        let differs = (0..20).any(|s| ra.apply(&img, &mut StdRng::seed_from_u64(s)) != a);
        assert!(differs);
        let c1 = random_crop_flip(&img, 4, true, &mut StdRng::seed_from_u64(3));
        let c2 = random_crop_flip(&img, 4, true, &mut StdRng::seed_from_u64(3));
        assert_eq!(c1, c2);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert_eq!(RandAugment::new(0, 9.0), Err(AugmentError::NumOps { got: 0, max: 14 }));
        assert_eq!(
            RandAugment::new(15, 9.0),
            Err(AugmentError::NumOps { got: 15, max: 14 })
        );
        assert_eq!(RandAugment::new(2, 31.0), Err(AugmentError::Magnitude(31.0)));
        assert_eq!(RandAugment::new(2, -1.0), Err(AugmentError::Magnitude(-1.0)));
        assert!(matches!(RandAugment::new(2, f32::NAN), Err(AugmentError::Magnitude(_))));
        assert!(
            RandAugment::new(2, 9.0)
                .and_then(|r| r.with_magnitude_std(-1.0))
                .is_err()
        );
        assert!(RandAugment::new(2, 9.0).and_then(|r| r.with_prob(1.5)).is_err());
        assert!(
            RandAugment::new(2, 9.0)
                .and_then(|r| r.with_magnitude_std(f32::INFINITY))
                .is_ok()
        );
        assert!(RandAugment::new(14, 30.0).is_ok() && RandAugment::new(1, 0.0).is_ok());
        // Invalid fields set by hand do not panic.
        let broken = RandAugment {
            ops: Vec::new(),
            magnitude: f32::NAN,
            ..RandAugment::new(2, 9.0).unwrap()
        };
        let img = pattern(5, 5);
        assert_eq!(broken.apply(&img, &mut rng()), img);
    }

    #[test]
    fn crop_flip_pads_with_zeros() {
        let img = RgbImage::from_pixel(8, 8, Rgb([200, 200, 200]));
        let mut saw_border = false;
        for seed in 0..20 {
            let out = random_crop_flip(&img, 2, true, &mut StdRng::seed_from_u64(seed));
            assert_eq!(out.dimensions(), (8, 8));
            let zeros = out.pixels().filter(|p| p.0 == [0, 0, 0]).count();
            let kept = out.pixels().filter(|p| p.0 == [200, 200, 200]).count();
            assert_eq!(zeros + kept, 64);
            assert!(kept >= 36);
            saw_border |= zeros > 0;
        }
        assert!(saw_border);
        // Without padding the crop is the image, possibly mirrored.
        let img = pattern(9, 7);
        let out = random_crop_flip(&img, 0, true, &mut rng());
        assert!(out == img || out == image::imageops::flip_horizontal(&img));
    }
}
