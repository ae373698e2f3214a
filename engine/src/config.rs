//! A model's settings: labels, input and output names, preprocessing and batching.
//!
//! Settings come from three layers, later ones winning field by field: built-in defaults
//! (ImageNet preprocessing at the model's resolution), the `hardy.config` entry that our
//! exporter writes into the ONNX file's metadata_props (so our models describe themselves),
//! and an optional `config.toml` beside the model file (so a third-party ONNX file works too).
//! Unknown fields and impossible values are rejected, naming the field and the reason.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    device::Device,
    preprocess::{ColorMode, Interpolation, Layout, PreprocessSpec},
};

/// The metadata_props key under which a model carries its own config (TOML text).
pub const METADATA_KEY: &str = "hardy.config";

/// The ImageNet channel means, in [0, 1] pixel units.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The ImageNet channel standard deviations, in [0, 1] pixel units.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A model's complete, validated settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Class names, index = logit position. Empty: classes are reported by index only.
    pub labels: Vec<String>,
    /// A file with one label per line, relative to the config file. Read into `labels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels_file: Option<PathBuf>,
    /// The image input's name; `None` picks the model's only input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_name: Option<String>,
    /// The logits output's name; `None` picks the model's first output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_name: Option<String>,
    /// How images become tensors.
    pub preprocess: PreprocessConfig,
    /// How requests are batched: from `config.toml` and the server's flags, never written
    /// into a model's metadata (how to serve is the operator's choice).
    #[serde(skip_serializing)]
    pub batching: BatchingConfig,
}

/// Preprocessing, in the terms timm and torchvision use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Side of the square crop fed to the model (`[height, width]` via `crop` instead).
    pub resolution: u32,
    /// `[height, width]` of a non-square crop; overrides `resolution`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<[u32; 2]>,
    /// Shorter side after resizing; default `floor(resolution / crop_pct)` (224 -> 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_size: Option<u32>,
    /// Fraction of the resized image kept by the centre crop (timm's `crop_pct`).
    pub crop_pct: f32,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean, in [0, 1] pixel units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in [0, 1] pixel units.
    pub std: Vec<f32>,
    /// `rgb` (3 channels) or `gray` (1 channel).
    pub color: ColorMode,
    /// Tensor layout the model takes: `nchw` or `nhwc`.
    pub layout: Layout,
    /// Whether decoding applies the image's EXIF orientation (default true: a phone photo is
    /// classified upright). PIL's `Image.open`, and so torchvision's `ImageFolder`, ignores
    /// it; set false to reproduce such an evaluation bit for bit on files that carry the tag.
    /// `hardy serve`, `hardy classify` and `hardy eval` all follow this one setting.
    pub exif_orientation: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            resolution: 224,
            crop: None,
            resize_size: None,
            crop_pct: 0.875,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            color: ColorMode::Rgb,
            layout: Layout::Nchw,
            exif_orientation: true,
        }
    }
}

/// The largest batch a session run takes when `max_batch_size` is not set, on CUDA and for
/// small inputs on the CPU.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Input values (floats) a default CPU batch holds at most: 1 Mi, a 4 MiB input tensor.
///
/// Why: on the CPU a batch pays by spreading each operator's fixed cost (dispatch, the
/// intra-op threads' hand-off) over more images. Once one image gives every operator enough
/// work to keep the threads busy, a larger batch adds only memory: EfficientNet-Lite0 at
/// 224 px serves 157-169 req/s at every batch from 1 to 32 while ONNX Runtime's arena grows
/// by 8.2 MB per image of batch; a 28 px model goes from 1,200 to 3,000 req/s between batches
/// of 1 and 32 (benches/README.md, "Serving memory"). The input size stands for that work.
pub const CPU_BATCH_VALUES: usize = 1 << 20;

/// Dynamic batching settings (used by the server; the CLI batches with `max_batch_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Largest batch one session run takes. Unset: chosen for the device and the input size
    /// by [`BatchingConfig::max_batch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// How long the first request of a batch may wait for others while an inference thread
    /// is free, in microseconds. 0 (the default, as in Triton): a request that finds a free
    /// thread runs at once, and batches form only from requests that waited for a busy one.
    pub max_queue_delay_us: u64,
    /// Requests that may wait; beyond this the server answers 503.
    pub queue_capacity: usize,
    /// Images that may be admitted (being preprocessed or waiting) at once; beyond this the
    /// server answers 503, and a request of more than half of it 413.
    pub max_queue_images: usize,
    /// Bytes of decoded input tensor that may be admitted at once (images x the model's
    /// input size x 4); beyond this 503, and a request of more than half of it 413.
    pub max_queue_bytes: usize,
    /// How long a request may wait in the queue before it is rejected (503), in
    /// microseconds; 0 waits without limit. A request's `timeout` parameter overrides it.
    pub queue_timeout_us: u64,
    /// Priority levels a request may name with its `priority` parameter (1 is the highest,
    /// as in Triton); 0 turns priorities off.
    pub priority_levels: u32,
    /// The level of a request that names none (or names 0); 0 means the lowest level.
    pub default_priority_level: u32,
    /// Waiting this long raises a request one priority level, so no level starves: a request
    /// at level L runs no later than a request of level 1 that arrived (L - 1) x this after
    /// it. In microseconds.
    pub priority_aging_us: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: None,
            max_queue_delay_us: 0,
            queue_capacity: 1024,
            max_queue_images: 4096,
            max_queue_bytes: 512 << 20,
            queue_timeout_us: 0,
            priority_levels: 0,
            default_priority_level: 0,
            priority_aging_us: 1_000_000,
        }
    }
}

impl BatchingConfig {
    /// The largest batch one session run takes on `device` for images of `image_values`
    /// floats each: `max_batch_size` where set; otherwise [`DEFAULT_MAX_BATCH`] on CUDA, and on
    /// the CPU the largest power of two up to it whose batch holds at most
    /// [`CPU_BATCH_VALUES`] values (at least 1): 32 for a 28 px image, 4 at 224 px, 2 at
    /// 299 px, 1 from 512 px.
    pub fn max_batch(&self, device: Device, image_values: usize) -> usize {
        if let Some(n) = self.max_batch_size {
            return n;
        }
        match device {
            Device::Cuda(_) => DEFAULT_MAX_BATCH,
            Device::Cpu => {
                let fits = (CPU_BATCH_VALUES / image_values.max(1)).clamp(1, DEFAULT_MAX_BATCH);
                1 << fits.ilog2()
            }
        }
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse, or has an unknown field or a value of the wrong type.
    #[error("invalid model config {source_name}: {reason}")]
    Syntax {
        /// Where the TOML came from (a file, or the ONNX metadata).
        source_name: String,
        /// The parser's message, which names the field and line.
        reason: String,
    },
    /// A field has an impossible value.
    #[error("invalid model config {source_name}: field `{field}`: {reason}")]
    Invalid {
        /// Where the config came from.
        source_name: String,
        /// The offending field, dotted (e.g. `preprocess.std`).
        field: String,
        /// Why the value cannot be used.
        reason: String,
    },
    /// No model file where one was expected.
    #[error("no model at {}: {reason}", path.display())]
    MissingModel {
        /// The path given.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Class names from a labels file's text: one per line, trimmed, blank lines skipped.
pub fn parse_labels(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

impl ModelConfig {
    /// Parses TOML text and validates it. `source_name` appears in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = parse_table(text, source_name)?;
        Self::from_layers(&[(table, source_name.to_string())], None)
    }

    /// Merges TOML layers (later layers override earlier ones field by field), then
    /// deserialises and validates. `base_dir` resolves `labels_file`.
    pub fn from_layers(layers: &[(toml::Table, String)], base_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut merged = toml::Table::new();
        for (layer, _) in layers {
            merge(&mut merged, layer.clone());
        }
        let source_name = layers.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join(" + ");
        let source_name = if source_name.is_empty() {
            "defaults".to_string()
        } else {
            source_name
        };
        // Going through text (not `Table::try_into`) keeps the key path and line in errors.
        let text = toml::to_string(&merged).unwrap_or_default();
        let mut config: ModelConfig = toml::from_str(&text).map_err(|e: toml::de::Error| ConfigError::Syntax {
            source_name: source_name.clone(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some(file) = config.labels_file.clone() {
            let path = base_dir.map_or(file.clone(), |d| d.join(&file));
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            if !config.labels.is_empty() {
                return Err(invalid(
                    &source_name,
                    "labels_file",
                    "give `labels` or `labels_file`, not both",
                ));
            }
            config.labels = parse_labels(&text);
        }
        config.validate(&source_name)?;
        Ok(config)
    }

    /// Serialises to TOML without the batching settings (what the exporter stores under
    /// [`METADATA_KEY`]).
    pub fn to_toml(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Number of input channels.
    pub fn channels(&self) -> usize {
        match self.preprocess.color {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }

    /// The preprocessing the engine applies, with every size resolved.
    pub fn preprocess_spec(&self) -> PreprocessSpec {
        let p = &self.preprocess;
        let [crop_height, crop_width] = p.crop.unwrap_or([p.resolution, p.resolution]);
        let resize_size = p
            .resize_size
            .unwrap_or_else(|| (crop_height.min(crop_width) as f64 / p.crop_pct as f64).floor() as u32);
        PreprocessSpec {
            resize_size,
            crop_height,
            crop_width,
            interpolation: p.interpolation,
            mean: p.mean.clone(),
            std: p.std.clone(),
            color: p.color,
            layout: p.layout,
            exif_orientation: p.exif_orientation,
        }
    }

    /// The label of class `index`, if labels are known.
    pub fn label(&self, index: usize) -> Option<&str> {
        self.labels.get(index).map(String::as_str)
    }

    fn validate(&self, src: &str) -> Result<(), ConfigError> {
        let p = &self.preprocess;
        let channels = self.channels();
        if p.resolution == 0 || p.resolution > 8192 {
            return Err(invalid(
                src,
                "preprocess.resolution",
                &format!("{} is not in 1..=8192", p.resolution),
            ));
        }
        if let Some([h, w]) = p.crop
            && (h == 0 || w == 0 || h > 8192 || w > 8192)
        {
            return Err(invalid(
                src,
                "preprocess.crop",
                &format!("[{h}, {w}] must be in 1..=8192"),
            ));
        }
        if !(p.crop_pct > 0.0 && p.crop_pct <= 1.0) {
            return Err(invalid(
                src,
                "preprocess.crop_pct",
                &format!("{} is not in (0, 1]", p.crop_pct),
            ));
        }
        let spec = self.preprocess_spec();
        if spec.resize_size < spec.crop_height.min(spec.crop_width) || spec.resize_size > 16384 {
            return Err(invalid(
                src,
                "preprocess.resize_size",
                &format!(
                    "{} must be at least the crop's shorter side and at most 16384",
                    spec.resize_size
                ),
            ));
        }
        for (field, values) in [("preprocess.mean", &p.mean), ("preprocess.std", &p.std)] {
            if values.len() != channels {
                return Err(invalid(
                    src,
                    field,
                    &format!(
                        "has {} values but color {:?} has {channels} channel(s)",
                        values.len(),
                        p.color
                    ),
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(invalid(src, field, "values must be finite"));
            }
        }
        if p.std.iter().any(|&s| s <= 0.0) {
            return Err(invalid(src, "preprocess.std", "values must be > 0"));
        }
        let b = &self.batching;
        if let Some(n) = b.max_batch_size
            && !(1..=4096).contains(&n)
        {
            return Err(invalid(
                src,
                "batching.max_batch_size",
                &format!("{n} is not in 1..=4096"),
            ));
        }
        if b.queue_capacity == 0 {
            return Err(invalid(src, "batching.queue_capacity", "must be at least 1"));
        }
        if b.max_queue_images < 2 {
            return Err(invalid(src, "batching.max_queue_images", "must be at least 2"));
        }
        if b.max_queue_bytes < 1 << 20 {
            return Err(invalid(src, "batching.max_queue_bytes", "must be at least 1 MiB"));
        }
        if b.priority_levels > 1000 {
            return Err(invalid(src, "batching.priority_levels", "must be at most 1000"));
        }
        if b.default_priority_level > b.priority_levels {
            return Err(invalid(
                src,
                "batching.default_priority_level",
                &format!(
                    "{} is above priority_levels ({})",
                    b.default_priority_level, b.priority_levels
                ),
            ));
        }
        if b.priority_aging_us == 0 {
            return Err(invalid(src, "batching.priority_aging_us", "must be at least 1"));
        }
        Ok(())
    }
}

/// Parses TOML text into a table, for use as a layer in [`ModelConfig::from_layers`].
pub fn parse_table(text: &str, source_name: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
        source_name: source_name.to_string(),
        reason: e.to_string().trim().to_string(),
    })
}

fn invalid(src: &str, field: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        source_name: src.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_imagenet_224() {
        let c = ModelConfig::from_toml("", "t").unwrap();
        let s = c.preprocess_spec();
        assert_eq!((s.resize_size, s.crop_height, s.crop_width), (256, 224, 224));
        assert_eq!(s.mean, IMAGENET_MEAN.to_vec());
    }

    #[test]
    fn unset_max_batch_follows_device_and_input_size() {
        let b = BatchingConfig::default();
        // Gray 28 px, RGB 224, 299, 384 and 512 px on the CPU: the largest power of two whose
        // batch holds at most 1 Mi values, never 0, never above 32.
        let cpu: Vec<usize> = [28 * 28, 3 * 224 * 224, 3 * 299 * 299, 3 * 384 * 384, 3 * 512 * 512, 0]
            .iter()
            .map(|&n| b.max_batch(Device::Cpu, n))
            .collect();
        assert_eq!(cpu, [32, 4, 2, 2, 1, 32]);
        assert_eq!(b.max_batch(Device::Cuda(0), 3 * 512 * 512), DEFAULT_MAX_BATCH);
        // A value set in any layer wins on every device.
        let set = ModelConfig::from_toml("[batching]\nmax_batch_size = 12", "t")
            .unwrap()
            .batching;
        assert_eq!(set.max_batch(Device::Cpu, 3 * 224 * 224), 12);
        assert_eq!(set.max_batch(Device::Cuda(1), 28 * 28), 12);
    }

    #[test]
    fn resize_follows_crop_pct_and_resolution() {
        let c = ModelConfig::from_toml("[preprocess]\nresolution = 300\ncrop_pct = 0.9", "t").unwrap();
        assert_eq!(c.preprocess_spec().resize_size, 333);
        let c = ModelConfig::from_toml(
            "[preprocess]\nresolution = 28\ncrop_pct = 1.0\ncolor = \"gray\"\nmean = [0.5]\nstd = [0.5]",
            "t",
        )
        .unwrap();
        let s = c.preprocess_spec();
        assert_eq!((s.resize_size, s.crop_height, s.channels()), (28, 28, 1));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = ModelConfig::from_toml("[preprocess]\nresolutoin = 224", "config.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolutoin") && err.contains("config.toml"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = ModelConfig::from_toml("[batching]\nmax_batch_size = \"many\"", "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_batch_size"), "{err}");
    }

    #[test]
    fn impossible_values_name_field_and_reason() {
        let cases = [
            ("[preprocess]\nstd = [0.2, 0.0, 0.2]", "preprocess.std"),
            ("[preprocess]\nmean = [0.5]", "preprocess.mean"),
            ("[preprocess]\ncrop_pct = 1.5", "preprocess.crop_pct"),
            ("[preprocess]\nresolution = 0", "preprocess.resolution"),
            ("[preprocess]\nresize_size = 100", "preprocess.resize_size"),
            ("[batching]\nmax_batch_size = 0", "batching.max_batch_size"),
        ];
        for (text, field) in cases {
            let err = ModelConfig::from_toml(text, "c").unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
        }
    }

    #[test]
    fn later_layers_override_field_by_field() {
        let meta = parse_table(
            "labels = [\"a\", \"b\"]\n[preprocess]\nresolution = 32\ncrop_pct = 1.0",
            "meta",
        )
        .unwrap();
        let file = parse_table("[preprocess]\nresolution = 64", "file").unwrap();
        let c = ModelConfig::from_layers(&[(meta, "meta".into()), (file, "file".into())], None).unwrap();
        assert_eq!(c.labels, ["a", "b"]);
        assert_eq!(c.preprocess.resolution, 64);
        assert_eq!(c.preprocess.crop_pct, 1.0);
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = ModelConfig {
            labels: vec!["cat".into(), "dog".into()],
            ..Default::default()
        };
        c.preprocess.crop = Some([240, 320]);
        let back = ModelConfig::from_toml(&c.to_toml(), "rt").unwrap();
        assert_eq!(back, c);
        // Serving settings stay out of what a model carries.
        c.batching.max_queue_delay_us = 5000;
        let text = c.to_toml();
        assert!(
            !text.contains("batching") && !text.contains("max_queue_delay_us"),
            "{text}"
        );
        assert_eq!(
            ModelConfig::from_toml(&text, "rt").unwrap().batching,
            BatchingConfig::default()
        );
    }

    #[test]
    fn labels_file_is_read_relative_to_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.txt"), "cat\n\ndog\n").unwrap();
        let t = parse_table("labels_file = \"labels.txt\"", "c").unwrap();
        let c = ModelConfig::from_layers(&[(t, "c".into())], Some(dir.path())).unwrap();
        assert_eq!(c.labels, ["cat", "dog"]);
    }
}
