//! What the transform and the attacks know of the model's input: the normalisation and
//! layout ([`GradientSpec`]) and the `[0, 1]` pixels an attack perturbs ([`pixels`]). Kept
//! apart from the module root so that the transform can use it without a cycle through
//! `mod.rs`.

use engine::preprocess::{Layout, PreprocessSpec};

use super::error::AttackError;

/// What the transform needs to know about the model's input: the normalisation it expects
/// and the tensor layout. Taken from the model's preprocessing config.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientSpec {
    /// Per-channel mean subtracted from `[0, 1]` pixels (one value, or one per channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by (one value, or one per channel).
    pub std: Vec<f32>,
    /// Where the channels are in the input tensor.
    pub layout: Layout,
    /// Number of channels of the input (1 for grey models, 3 for RGB).
    pub channels: usize,
}

impl GradientSpec {
    /// The normalisation, layout and channels of an engine preprocessing spec.
    pub fn from_preprocess(spec: &PreprocessSpec) -> Self {
        Self {
            mean: spec.mean.clone(),
            std: spec.std.clone(),
            layout: spec.layout,
            channels: spec.channels(),
        }
    }

    /// Checks that mean and std have one value or one per channel, and std has no zero.
    pub fn validate(&self) -> Result<(), AttackError> {
        let fits = |v: &[f32]| v.len() == 1 || v.len() == self.channels;
        if self.channels == 0 || !fits(&self.mean) || !fits(&self.std) {
            return Err(AttackError::Shape(format!(
                "normalisation for {} channel(s) needs 1 or {} values, got mean {:?} and std {:?}",
                self.channels, self.channels, self.mean, self.std
            )));
        }
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) || self.std.contains(&0.0) {
            return Err(AttackError::Shape(format!(
                "mean {:?} and std {:?} must be finite, std non-zero",
                self.mean, self.std
            )));
        }
        Ok(())
    }

    /// `values` (mean or std) with one value per channel.
    pub(crate) fn per_channel(&self, values: &[f32]) -> Vec<f32> {
        if values.len() == 1 {
            vec![values[0]; self.channels]
        } else {
            values.to_vec()
        }
    }
}

/// The `[0, 1]` pixel tensor of an already resized and cropped image, in the spec's layout
/// and colour mode (grey models: PIL's `convert("L")` luma, as [`engine::preprocess`] does):
/// the engine's preprocessing without the normalisation. `out` holds `spec.tensor_len()`
/// values.
pub fn pixels(img: &image::RgbImage, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), AttackError> {
    let plain = PreprocessSpec {
        mean: vec![0.0; spec.channels()],
        std: vec![1.0; spec.channels()],
        ..spec.clone()
    };
    engine::preprocess::to_tensor(img, &plain, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::preprocess::ColorMode;

    #[test]
    fn pixels_are_unnormalised_and_follow_the_colour_mode() {
        let mut spec = PreprocessSpec::imagenet(2);
        let img = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([255, (x * 255) as u8, (y * 51) as u8]));
        let mut out = vec![0.0; spec.tensor_len()];
        pixels(&img, &spec, &mut out).unwrap();
        assert_eq!(out[..4], [1.0; 4]);
        assert_eq!(out[4..8], [0.0, 1.0, 0.0, 1.0]);
        assert!((out[10] - 0.2).abs() < 1e-6);

        spec.color = ColorMode::Gray;
        spec.mean = vec![0.5];
        spec.std = vec![0.5];
        let mut grey = vec![0.0; spec.tensor_len()];
        pixels(&img, &spec, &mut grey).unwrap();
        // PIL luma of (255, 0, 0) is 76.
        assert!((grey[0] - 76.0 / 255.0).abs() < 1e-6, "{grey:?}");
        assert!(pixels(&img, &spec, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn spec_validation_names_the_values() {
        let spec = GradientSpec {
            mean: vec![0.5, 0.5],
            std: vec![0.2],
            layout: Layout::Nchw,
            channels: 3,
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("3 channel(s)") && err.contains("[0.5, 0.5]"), "{err}");
        let ok = GradientSpec::from_preprocess(&PreprocessSpec::imagenet(224));
        ok.validate().unwrap();
        assert_eq!(ok.per_channel(&[0.1]), vec![0.1; 3]);
    }
}
