//! [`Corruptor`], the entry point of the corruptions: it checks the arguments, seeds the
//! call's random numbers and hands the image to the family that implements the corruption
//! (`noise.rs`, `blur.rs`, `weather.rs`, `frost.rs`, `digital.rs`).
//!
//! It exists apart from the families so that the rules every corruption shares (severity
//! range, empty images, the seeding scheme, where frost textures come from) are written once.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::Corruption;
use crate::frost::{self, FROST_WHEEL};
use crate::ops::FloatImage;
use crate::{blur, digital, noise, weather};

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
        "frost needs the frost texture images: build the corruptor with a directory of frost*.png/jpg \
         images (FrostSource::Dir in Hardy's evaluator) or with FrostSource::Provisioned (fetches the \
         textures of PyPI {}=={} into Hardy's cache; the CLI does this unless --frost-dir DIR is given)",
        FROST_WHEEL.name,
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
    /// A [`FrostTextures`] source could not fetch its textures.
    #[error("cannot provision the frost textures: {0}")]
    Provision(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where a [`Corruptor`] finds its frost textures: a directory of `frost*.png` / `frost*.jpg`
/// images, given as a path, or found by a source that may fetch it first (Hardy's evaluator's
/// `FrostSource::Provisioned` downloads the reference's textures, [`FROST_WHEEL`]; this crate
/// downloads nothing).
pub trait FrostTextures {
    /// The directory holding the textures; [`CorruptError::Provision`] when they cannot be
    /// fetched.
    fn frost_dir(self) -> Result<PathBuf, CorruptError>;
}

impl FrostTextures for PathBuf {
    fn frost_dir(self) -> Result<PathBuf, CorruptError> {
        Ok(self)
    }
}

impl FrostTextures for &Path {
    fn frost_dir(self) -> Result<PathBuf, CorruptError> {
        Ok(self.to_path_buf())
    }
}

/// Applies corruptions. Holds the decoded frost textures; `Send + Sync`, share it by reference
/// across threads. [`Default`] is a corruptor without frost textures.
#[derive(Debug, Clone, Default)]
pub struct Corruptor {
    frost: Option<Vec<frost::Texture>>,
}

impl Corruptor {
    /// Builds a corruptor, loading the frost textures if a source is given (the first five in
    /// name order, the ones the reference draws from: see `frost.rs`).
    /// frost: `None` => applying Frost returns [`CorruptError::NoFrostTextures`], which says how
    /// to provide textures.
    pub fn new(frost: Option<impl FrostTextures>) -> Result<Self, CorruptError> {
        let frost = match frost {
            None => None,
            Some(source) => Some(frost::load_dir(&source.frost_dir()?)?),
        };
        Ok(Corruptor { frost })
    }

    /// A corruptor for `corruptions`: the frost textures are loaded (and, for a provisioned
    /// source, fetched) only when [`Corruption::Frost`] is among them.
    pub fn for_corruptions(
        frost: Option<impl FrostTextures>,
        corruptions: &[Corruption],
    ) -> Result<Self, CorruptError> {
        Self::new(frost.filter(|_| corruptions.contains(&Corruption::Frost)))
    }

    /// Whether frost textures are loaded.
    pub fn has_frost(&self) -> bool {
        self.frost.is_some()
    }

    /// Corrupts `img` with `corruption` at `severity` (1..=5), drawing random numbers from
    /// `seed`. The output has the input's size; the same arguments give the same output.
    ///
    /// A grey image (R = G = B everywhere, as `to_rgb8` makes a one-channel image, like PIL's
    /// `convert('RGB')` in the reference) is corrupted like any RGB image: noise is drawn per
    /// channel and saturate tints it, so the output is in colour, as the reference's is.
    pub fn apply(
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
