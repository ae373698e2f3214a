//! The 19 ImageNet-C corruptions (15 of the benchmark and 4 extra), severities 1..5, seeded.
//!
//! This module exists so that Hardy can build ImageNet-C-style test sets (`hardy corrupt`) and
//! evaluate on them without the Python reference code, quickly and reproducibly, at any image
//! size.
//!
//! # Fidelity
//! At 224x224 every corruption follows the maintained port of the reference code (PyPI
//! `imagecorruptions-imaug` 1.1.5, the `imagecorruptions` code of hendrycks/robustness
//! `make_imagenet_c.py` made runnable on current NumPy/scikit-image) with the parameters of
//! the paper (see `shared/reference/robustness.md`). Two choices of the port are kept where it
//! departs from the 2019 original: `elastic_transform` uses the port's scheme (no random affine;
//! alpha `250 * [0.05, 0.065, 0.085, 0.1, 0.12]`, sigma `0.01 * size`), and motion blur (snow,
//! motion_blur) is the port's shifted-copies kernel instead of ImageMagick's. Frost draws one of
//! the six textures of the `imagecorruptions` wheel, scaled by 1.1 (cubic), at a random crop.
//! Outputs are clipped to `[0, 1]`, scaled by 255 and truncated, as `np.uint8` does.
//! Deterministic corruptions match the port to >= 35 dB PSNR; random ones match its
//! statistics (tests in `fidelity.rs` against data made by `scripts/corruption_reference.py`;
//! figures in `benches/CORRUPT.md`).
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

/// Defines `fn` twice: as written, and compiled for AVX2 (chosen at run time when the CPU has
/// it), so that the auto-vectorised loops use 8 lanes instead of SSE2's 4. Only lane width
/// changes: no fused multiply-add and no reassociation, so both give bit-identical results
/// and corrupted images do not depend on the machine.
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
                fn avx512vl($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU supports AVX-512VL and BW, checked just above.
                    return unsafe { avx512vl($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

mod blur;
mod digital;
mod frost;
mod jpeg;
pub use jpeg::{HuffmanTables, jpeg_decode, jpeg_encode};
mod noise;
pub mod ops;
mod weather;

use std::path::{Path, PathBuf};

use engine::provision::{ProvisionError, WheelSpec, cache_root, ensure_unpacked};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::Corruption;
use ops::FloatImage;

/// The wheel whose `imagecorruptions/frost/` holds the six frost textures.
pub const FROST_WHEEL: WheelSpec = WheelSpec {
    name: "imagecorruptions",
    version: "1.1.2",
    platform: None,
};

/// Why a corruption could not be applied or the corruptor not built.
#[derive(Debug, thiserror::Error)]
pub enum CorruptError {
    /// Severity outside 1..=5.
    #[error("severity {severity} is out of range: corruption severities are 1 to 5")]
    BadSeverity {
        /// The severity given.
        severity: u8,
    },
    /// The image has no pixels.
    #[error("cannot corrupt an empty image ({width}x{height})")]
    EmptyImage {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// Frost was asked for but the corruptor was built without textures.
    #[error(
        "frost needs the frost texture images: build the corruptor with FrostSource::Dir(a directory of \
         frost*.png/jpg images) or FrostSource::Provisioned (fetches the six textures of PyPI \
         imagecorruptions=={} into Hardy's cache; the CLI does this unless --frost-dir DIR is given)",
        FROST_WHEEL.version
    )]
    NoFrostTextures,
    /// The frost directory could not be listed.
    #[error("cannot read the frost texture directory {dir}: {source}")]
    FrostDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The frost directory holds no `frost*` image.
    #[error("no frost texture (frost*.png / frost*.jpg) in {dir}")]
    NoFrostInDir {
        /// The directory.
        dir: PathBuf,
    },
    /// A frost texture could not be decoded.
    #[error("cannot read frost texture {path}: {source}")]
    FrostTexture {
        /// The file.
        path: PathBuf,
        /// Why.
        source: image::ImageError,
    },
    /// Fetching the textures failed.
    #[error("cannot provision the frost textures: {0}")]
    Provision(#[from] ProvisionError),
}

/// Where the frost textures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrostSource {
    /// A directory of `frost*.png` / `frost*.jpg` images (e.g. the reference's frost1..frost6).
    Dir(PathBuf),
    /// The six textures of the `imagecorruptions` wheel, fetched by [`provision_frost`].
    Provisioned,
}

/// Applies corruptions. Holds the decoded frost textures; `Send + Sync`, share it by reference
/// across threads.
#[derive(Debug, Clone)]
pub struct Corruptor {
    frost: Option<Vec<frost::Texture>>,
}

impl Corruptor {
    /// Builds a corruptor, loading the frost textures if a source is given.
    /// frost: `None` => applying Frost returns a clear error saying how to provide textures.
    pub fn new(frost: Option<FrostSource>) -> Result<Self, CorruptError> {
        let frost = match frost {
            None => None,
            Some(FrostSource::Dir(dir)) => Some(frost::load_dir(&dir)?),
            Some(FrostSource::Provisioned) => Some(frost::load_dir(&provision_frost()?)?),
        };
        Ok(Corruptor { frost })
    }

    /// Whether frost textures are loaded.
    pub fn has_frost(&self) -> bool {
        self.frost.is_some()
    }

    /// Corrupts `img` with `corruption` at `severity` (1..=5), drawing random numbers from
    /// `seed`. The output has the input's size; the same arguments give the same output.
    ///
    /// A grey image (R = G = B everywhere, like Fashion-MNIST stored as RGB) comes back grey:
    /// the first channel of the RGB result is kept, which is what the port gives for a
    /// single-channel image (noise drawn once per pixel, no colour tint from saturate).
    pub fn apply(
        &self,
        img: &image::RgbImage,
        corruption: Corruption,
        severity: u8,
        seed: u64,
    ) -> Result<image::RgbImage, CorruptError> {
        let mut out = self.apply_rgb(img, corruption, severity, seed)?;
        if img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]) {
            for p in out.pixels_mut() {
                *p = image::Rgb([p[0]; 3]);
            }
        }
        Ok(out)
    }

    fn apply_rgb(
        &self,
        img: &image::RgbImage,
        corruption: Corruption,
        severity: u8,
        seed: u64,
    ) -> Result<image::RgbImage, CorruptError> {
        if !(1..=5).contains(&severity) {
            return Err(CorruptError::BadSeverity { severity });
        }
        if img.width() == 0 || img.height() == 0 {
            return Err(CorruptError::EmptyImage {
                width: img.width(),
                height: img.height(),
            });
        }
        let s = usize::from(severity - 1);
        let mut seeder = ChaCha8Rng::seed_from_u64(seed);
        seeder.set_stream((corruption as u64) * 8 + u64::from(severity));
        let mut rng = Xoshiro256PlusPlus::from_rng(&mut seeder);
        let scale = img.width().min(img.height()) as f32 / 224.0;
        use Corruption::*;
        let x = || FloatImage::from_rgb8(img);
        Ok(match corruption {
            GaussianNoise | ShotNoise | ImpulseNoise | SpeckleNoise => noise::apply(img, corruption, s, &mut rng),
            DefocusBlur | GlassBlur | MotionBlur | ZoomBlur | GaussianBlur => {
                blur::apply(img, corruption, s, scale, &mut rng)
            }
            Snow => weather::snow(x(), s, &mut rng).to_rgb8(),
            Spatter => weather::spatter(img, s, &mut rng),
            Fog => weather::fog(img, s, &mut rng),
            Frost => {
                let textures = self.frost.as_deref().ok_or(CorruptError::NoFrostTextures)?;
                frost::apply(img, textures, s, scale, &mut rng)
            }
            Contrast => digital::contrast(img, s),
            Brightness | Saturate | ElasticTransform => digital::apply(x(), corruption, s, &mut rng).to_rgb8(),
            Pixelate => digital::pixelate(img, s),
            JpegCompression => digital::jpeg(img, s),
        })
    }
}

/// Fetches the six frost textures of the PyPI `imagecorruptions` wheel ([`FROST_WHEEL`]) into
/// Hardy's cache (once) and returns their directory.
pub fn provision_frost() -> Result<PathBuf, ProvisionError> {
    let dest = cache_root().join(format!("imagecorruptions-{}-frost", FROST_WHEEL.version));
    ensure_unpacked(&FROST_WHEEL, &dest, |name| {
        let file = name.strip_prefix("imagecorruptions/frost/")?;
        (file.starts_with("frost") && !file.contains('/')).then(|| Path::new(file).to_path_buf())
    })
}

#[cfg(test)]
mod fidelity;
#[cfg(test)]
mod tests;
