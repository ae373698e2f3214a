//! Hardy's image corruptions (ImageNet-C) and perturbation sequences (ImageNet-P), seeded.
//!
//! This crate exists so that Hardy can build ImageNet-C- and ImageNet-P-style test sets and
//! evaluate on them without the Python reference code, quickly and reproducibly, at any image
//! size; it is its own crate because none of it needs ONNX Runtime or a model, only pixels.
//! `hardy-eval` re-exports it as `eval::corrupt`, `eval::perturb` and `eval::names`, adding
//! what needs the engine: fetching the reference's frost textures and reading the released
//! videos.
//!
//! - [`Corruptor`]: the 19 ImageNet-C corruptions (15 of the benchmark and 4 extra),
//!   severities 1..5; [`ops`]: their building blocks, with their own parameters.
//! - [`perturb`]: ImageNet-P perturbation sequences.
//! - [`names`]: the corruptions and perturbations, named as in the released datasets.
//! - [`jpeg_encode`]: baseline JPEG files as Pillow writes them (the released ImageNet-C files
//!   are JPEGs; jpeg_compression is their lossy half, [`ops::jpeg_roundtrip`]). Files are read
//!   back by libjpeg-turbo, through `engine::decode`.
//!
//! The hot loops pick the widest vector instructions the CPU has at run time (module `simd`:
//! one dispatch point, and zero-sized "CPU feature detected" tokens that the `unsafe`
//! intrinsics require); results are the same bytes on every machine.
//!
//! # Fidelity
//! At 224x224 every corruption follows the maintained port of the reference code (PyPI
//! `imagecorruptions-imaug` 1.1.5, the `imagecorruptions` code of hendrycks/robustness
//! `make_imagenet_c.py` made runnable on current NumPy/scikit-image) with the parameters of
//! the paper (see `shared/reference/robustness.md`). Two choices of the port are kept where it
//! departs from the 2019 original: `elastic_transform` uses the port's scheme (no random affine;
//! alpha `250 * [0.05, 0.065, 0.085, 0.1, 0.12]`, sigma `0.01 * size`), and motion blur (snow,
//! motion_blur) is the port's shifted-copies kernel instead of ImageMagick's. Frost draws one of
//! the first five textures of the `imagecorruptions` wheel (frost1..frost5: the reference's
//! `np.random.randint(5)` never picks the sixth, the darkest), scaled by 1.1 (cubic), at a
//! random crop.
//! Outputs are clipped to `[0, 1]`, scaled by 255 and truncated, as `np.uint8` does.
//! Deterministic corruptions match the port to >= 35 dB PSNR; random ones match its
//! statistics (tests in `fidelity.rs` against data made by `scripts/corruption_reference.py`;
//! figures in `benches/CORRUPT.md`).
//!
//! # Grey images
//! The reference reads every image with PIL's `convert('RGB')`, so a grey photo is corrupted
//! as an RGB image whose three channels are equal: the noises draw per channel and saturate
//! tints, and the result is in colour. [`Corruptor::apply`] takes 8-bit RGB and does the same;
//! decode grey images to RGB (as `image`'s `to_rgb8` does), corrupt, and leave any conversion
//! back to grey to the model's own preprocessing.
//!
//! # Other sizes
//! The reference is written for 224x224. For an image whose shorter side is `m`, let
//! `s = m / 224`. Lengths that describe the scene (not the pixel grid) are multiplied by `s`,
//! so that corrupting then resizing is close to resizing then corrupting:
//! - defocus_blur: disk radius `r * s` (the anti-aliasing sigma, a pixel-grid quantity, is kept);
//! - glass_blur: sigma `* s`, maximum pixel displacement `max(1, round(delta * s))`;
//! - motion_blur: kernel radius `max(1, round(r * s))`, sigma `* s`;
//! - gaussian_blur: sigma `* s`;
//! - snow, spatter and elastic_transform: the random layer (or displacement field, whose
//!   values are then scaled by the same factor) is drawn at the reference scale (short side
//!   224) and resized (triangle filter) to the image, so flakes, drops and warps keep their
//!   relative size (the port's elastic parameters, relative to the size, would leave a 28x28
//!   field unsmoothed and scramble pixels);
//! - frost: the texture is scaled by `1.1 * s` (at least enough to cover the image) before the
//!   random crop, so the frost pattern keeps its relative size;
//! - fog: the plasma map is the next power of two of the longer side (as in the port);
//! - zoom_blur, pixelate: already relative to the size in the reference.
//!
//! Noise, colour and JPEG corruptions act per pixel and have no size parameter. At 28x28 the
//! blurs of severities 1-2 are sub-pixel and change little, exactly as a 224 image blurred and
//! shrunk to 28 would; this is deliberate.
//!
//! # Randomness
//! Each call seeds a ChaCha8 generator from `seed`, on a stream chosen by corruption and
//! severity, and draws from it the state of a xoshiro256++ generator (`rand_xoshiro`), which
//! makes the call's numbers: ChaCha8 keeps the streams of different corruptions with one seed
//! independent, xoshiro256++ produces the hundreds of kilobytes of random bits a noise
//! corruption needs about twice as fast (speckle_noise's 300 KB: 0.03 ms against 0.06). So a
//! (image, corruption, severity, seed) always gives the same bytes on every platform and thread
//! count.
//! The draws are Hardy's own, not NumPy's: the same seed does not give the port's image, only
//! the same distribution. Gaussian draws come from a 65,536-point quantile table (cut at
//! +-4.17 sigma) and Poisson draws from per-level alias tables of the output bytes; see
//! `ops::normal_table` and `noise.rs`.

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod blur;
mod corruptor;
mod digital;
mod frost;
mod jpeg;
pub mod names;
mod noise;
pub mod ops;
pub mod perturb;
mod simd;
mod weather;

pub use corruptor::{CorruptError, Corruptor, FrostTextures};
pub use frost::{FROST_WHEEL, FrostWheel};
pub use jpeg::{HuffmanTables, jpeg_encode};
pub use names::{Corruption, CorruptionGroup, Perturbation};

#[cfg(test)]
mod fidelity;
#[cfg(test)]
mod tests;
