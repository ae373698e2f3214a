//! The names of the benchmark's corruptions and perturbations, in the released order.
//!
//! Directory names in ImageNet-C/-P, keys in result files, baselines and CLI options all use the
//! same snake_case names, so they are defined once here and everything else refers to these
//! enums.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One ImageNet-C corruption (the 15 of the benchmark, then the 4 extra ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// `gaussian_noise`: additive Gaussian noise.
    GaussianNoise,
    /// `shot_noise`: Poisson (photon) noise.
    ShotNoise,
    /// `impulse_noise`: salt-and-pepper noise.
    ImpulseNoise,
    /// `defocus_blur`: an anti-aliased disk blur.
    DefocusBlur,
    /// `glass_blur`: blur, local pixel shuffling, blur.
    GlassBlur,
    /// `motion_blur`: a one-sided blur along a random angle.
    MotionBlur,
    /// `zoom_blur`: the mean of zoomed copies.
    ZoomBlur,
    /// `snow`: motion-blurred flakes over a whitened image.
    Snow,
    /// `frost`: a frost texture blended in.
    Frost,
    /// `fog`: a plasma fractal added.
    Fog,
    /// `brightness`: HSV value raised.
    Brightness,
    /// `contrast`: values pulled towards the channel means.
    Contrast,
    /// `elastic_transform`: a smooth random warp.
    ElasticTransform,
    /// `pixelate`: box-downscaled, nearest-upscaled.
    Pixelate,
    /// `jpeg_compression`: a JPEG round trip at low quality.
    JpegCompression,
    /// `speckle_noise` (extra): multiplicative Gaussian noise.
    SpeckleNoise,
    /// `gaussian_blur` (extra): a Gaussian blur.
    GaussianBlur,
    /// `spatter` (extra): water drops or mud.
    Spatter,
    /// `saturate` (extra): HSV saturation scaled and raised.
    Saturate,
}

/// The family a corruption belongs to in the paper's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionGroup {
    /// gaussian_noise, shot_noise, impulse_noise.
    Noise,
    /// defocus, glass, motion and zoom blur.
    Blur,
    /// snow, frost, fog, brightness.
    Weather,
    /// contrast, elastic_transform, pixelate, jpeg_compression.
    Digital,
    /// The four extra corruptions (not part of mCE).
    Extra,
}

impl Corruption {
    /// All 19, in the released order (benchmark first, then extra).
    pub const ALL: [Corruption; 19] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::DefocusBlur,
        Corruption::GlassBlur,
        Corruption::MotionBlur,
        Corruption::ZoomBlur,
        Corruption::Snow,
        Corruption::Frost,
        Corruption::Fog,
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::ElasticTransform,
        Corruption::Pixelate,
        Corruption::JpegCompression,
        Corruption::SpeckleNoise,
        Corruption::GaussianBlur,
        Corruption::Spatter,
        Corruption::Saturate,
    ];

    /// The 15 corruptions that mCE averages over.
    pub const BENCHMARK: [Corruption; 15] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::DefocusBlur,
        Corruption::GlassBlur,
        Corruption::MotionBlur,
        Corruption::ZoomBlur,
        Corruption::Snow,
        Corruption::Frost,
        Corruption::Fog,
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::ElasticTransform,
        Corruption::Pixelate,
        Corruption::JpegCompression,
    ];

    /// The 4 extra corruptions.
    pub const EXTRA: [Corruption; 4] = [
        Corruption::SpeckleNoise,
        Corruption::GaussianBlur,
        Corruption::Spatter,
        Corruption::Saturate,
    ];

    /// The released directory name, e.g. `gaussian_noise`.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::ImpulseNoise => "impulse_noise",
            Corruption::DefocusBlur => "defocus_blur",
            Corruption::GlassBlur => "glass_blur",
            Corruption::MotionBlur => "motion_blur",
            Corruption::ZoomBlur => "zoom_blur",
            Corruption::Snow => "snow",
            Corruption::Frost => "frost",
            Corruption::Fog => "fog",
            Corruption::Brightness => "brightness",
            Corruption::Contrast => "contrast",
            Corruption::ElasticTransform => "elastic_transform",
            Corruption::Pixelate => "pixelate",
            Corruption::JpegCompression => "jpeg_compression",
            Corruption::SpeckleNoise => "speckle_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::Spatter => "spatter",
            Corruption::Saturate => "saturate",
        }
    }

    /// The paper's group.
    pub fn group(self) -> CorruptionGroup {
        use Corruption::*;
        match self {
            GaussianNoise | ShotNoise | ImpulseNoise => CorruptionGroup::Noise,
            DefocusBlur | GlassBlur | MotionBlur | ZoomBlur => CorruptionGroup::Blur,
            Snow | Frost | Fog | Brightness => CorruptionGroup::Weather,
            Contrast | ElasticTransform | Pixelate | JpegCompression => CorruptionGroup::Digital,
            SpeckleNoise | GaussianBlur | Spatter | Saturate => CorruptionGroup::Extra,
        }
    }

    /// Whether the corruption draws random numbers (so a seed matters).
    pub fn is_random(self) -> bool {
        use Corruption::*;
        matches!(
            self,
            GaussianNoise
                | ShotNoise
                | ImpulseNoise
                | GlassBlur
                | MotionBlur
                | Snow
                | Frost
                | Fog
                | ElasticTransform
                | SpeckleNoise
                | Spatter
        )
    }
}

/// One ImageNet-P perturbation (the 10 of the benchmark, then the 4 extra ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// `gaussian_noise`: fresh Gaussian noise per frame.
    GaussianNoise,
    /// `shot_noise`: fresh Poisson noise per frame.
    ShotNoise,
    /// `motion_blur`: a blur whose angle turns.
    MotionBlur,
    /// `zoom_blur`: a growing zoom blur.
    ZoomBlur,
    /// `snow`: snow falling at a turning angle.
    Snow,
    /// `brightness`: HSV value rising.
    Brightness,
    /// `translate`: a shift of -20..=20 px.
    Translate,
    /// `rotate`: -15..=15 degrees.
    Rotate,
    /// `tilt`: a perspective tilt.
    Tilt,
    /// `scale`: scaled by 0.4 up to 1.15.
    Scale,
    /// `speckle_noise` (extra): fresh multiplicative noise per frame.
    SpeckleNoise,
    /// `gaussian_blur` (extra): a growing Gaussian blur.
    GaussianBlur,
    /// `spatter` (extra): water drops running down.
    Spatter,
    /// `shear` (extra): an affine shear.
    Shear,
}

impl Perturbation {
    /// All 14, benchmark first.
    pub const ALL: [Perturbation; 14] = [
        Perturbation::GaussianNoise,
        Perturbation::ShotNoise,
        Perturbation::MotionBlur,
        Perturbation::ZoomBlur,
        Perturbation::Snow,
        Perturbation::Brightness,
        Perturbation::Translate,
        Perturbation::Rotate,
        Perturbation::Tilt,
        Perturbation::Scale,
        Perturbation::SpeckleNoise,
        Perturbation::GaussianBlur,
        Perturbation::Spatter,
        Perturbation::Shear,
    ];

    /// The 10 perturbations that mFR and mT5D average over.
    pub const BENCHMARK: [Perturbation; 10] = [
        Perturbation::GaussianNoise,
        Perturbation::ShotNoise,
        Perturbation::MotionBlur,
        Perturbation::ZoomBlur,
        Perturbation::Snow,
        Perturbation::Brightness,
        Perturbation::Translate,
        Perturbation::Rotate,
        Perturbation::Tilt,
        Perturbation::Scale,
    ];

    /// The released directory name, e.g. `gaussian_noise`.
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::GaussianNoise => "gaussian_noise",
            Perturbation::ShotNoise => "shot_noise",
            Perturbation::MotionBlur => "motion_blur",
            Perturbation::ZoomBlur => "zoom_blur",
            Perturbation::Snow => "snow",
            Perturbation::Brightness => "brightness",
            Perturbation::Translate => "translate",
            Perturbation::Rotate => "rotate",
            Perturbation::Tilt => "tilt",
            Perturbation::Scale => "scale",
            Perturbation::SpeckleNoise => "speckle_noise",
            Perturbation::GaussianBlur => "gaussian_blur",
            Perturbation::Spatter => "spatter",
            Perturbation::Shear => "shear",
        }
    }

    /// Noise perturbations compare every frame with the clean first frame (step 1); the others
    /// compare consecutive frames.
    pub fn is_noise(self) -> bool {
        matches!(
            self,
            Perturbation::GaussianNoise | Perturbation::ShotNoise | Perturbation::SpeckleNoise
        )
    }
}

/// A name that is not one of the benchmark's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; known: {known}")]
pub struct UnknownName {
    /// `corruption` or `perturbation`.
    pub kind: &'static str,
    /// What was given.
    pub name: String,
    /// The accepted names, comma-separated.
    pub known: String,
}

impl FromStr for Corruption {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Corruption::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownName {
                kind: "corruption",
                name: s.to_string(),
                known: Corruption::ALL.map(|c| c.name()).join(", "),
            })
    }
}

impl FromStr for Perturbation {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Perturbation::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownName {
                kind: "perturbation",
                name: s.to_string(),
                known: Perturbation::ALL.map(|p| p.name()).join(", "),
            })
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for c in Corruption::ALL {
            assert_eq!(c.name().parse::<Corruption>().unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()));
        }
        for p in Perturbation::ALL {
            assert_eq!(p.name().parse::<Perturbation>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.name()));
        }
        let err = "fogg".parse::<Corruption>().unwrap_err();
        assert!(err.to_string().contains("fogg") && err.to_string().contains("fog"));
    }

    #[test]
    fn benchmark_sets_are_the_papers() {
        assert_eq!(Corruption::BENCHMARK.len(), 15);
        assert!(
            Corruption::BENCHMARK
                .iter()
                .all(|c| c.group() != CorruptionGroup::Extra)
        );
        assert!(Corruption::EXTRA.iter().all(|c| c.group() == CorruptionGroup::Extra));
        assert_eq!(Perturbation::BENCHMARK.iter().filter(|p| p.is_noise()).count(), 2);
    }
}
