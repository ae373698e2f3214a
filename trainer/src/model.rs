//! One type for "any classifier the trainer can build", so that training, checkpoints and
//! export do not care which family a model belongs to.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::efficientnet::{EfficientNet, EfficientNetSpec};
use crate::resnet::{ResNet, ResNetSpec};

/// The architecture of a model, saved beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum ModelSpec {
    /// An EfficientNet or EfficientNet-Lite.
    EfficientNet(EfficientNetSpec),
    /// A ResNet or ResNet-D.
    ResNet(ResNetSpec),
}

impl ModelSpec {
    /// A published architecture by name: `efficientnet_b0`..`efficientnet_l2`,
    /// `efficientnet_lite0`..`lite4`, `resnet18`..`resnet152`, `resnet50d`, ...
    pub fn named(name: &str, num_classes: usize) -> Result<Self, TrainerError> {
        if name.starts_with("resnet") {
            ResNetSpec::named(name, num_classes).map(ModelSpec::ResNet)
        } else {
            EfficientNetSpec::named(name, num_classes).map(ModelSpec::EfficientNet)
        }
    }

    /// Builds the network with fresh weights.
    pub fn init(&self, device: &Device) -> Result<Classifier, TrainerError> {
        Ok(match self {
            ModelSpec::EfficientNet(s) => Classifier::EfficientNet(s.init(device)?),
            ModelSpec::ResNet(s) => Classifier::ResNet(s.init(device)?),
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        match self {
            ModelSpec::EfficientNet(s) => s.num_classes,
            ModelSpec::ResNet(s) => s.num_classes,
        }
    }

    /// Input image channels.
    pub fn in_channels(&self) -> usize {
        match self {
            ModelSpec::EfficientNet(s) => s.in_channels,
            ModelSpec::ResNet(s) => s.in_channels,
        }
    }

    /// Training and evaluation resolution.
    pub fn resolution(&self) -> u32 {
        match self {
            ModelSpec::EfficientNet(s) => s.resolution,
            ModelSpec::ResNet(s) => s.resolution,
        }
    }

    /// A short description for logs and ONNX doc strings.
    pub fn describe(&self) -> String {
        match self {
            ModelSpec::EfficientNet(s) => format!(
                "EfficientNet{} width {} depth {} ({} stages, {} blocks)",
                if s.lite { "-Lite" } else { "" },
                s.width,
                s.depth,
                s.stages.len(),
                s.blocks().len()
            ),
            ModelSpec::ResNet(s) => {
                let mut tweaks = Vec::new();
                if s.selective_kernel {
                    tweaks.push("selective kernel".to_string());
                }
                if s.anti_alias {
                    tweaks.push("anti-aliased".to_string());
                }
                if let Some(bl) = &s.big_little {
                    tweaks.push(format!("big-little alpha {} beta {}", bl.alpha, bl.beta));
                }
                if let Some(db) = &s.drop_block {
                    tweaks.push(format!("DropBlock {} block {}", db.drop_prob, db.block_size));
                }
                format!(
                    "ResNet{} {:?} {:?} base width {}{}",
                    if s.deep_stem || s.avg_down { "-D" } else { "" },
                    s.block,
                    s.layers,
                    s.base_width,
                    if tweaks.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", tweaks.join(", "))
                    }
                )
            }
        }
    }
}

/// Any classifier the trainer builds.
// One value per model, moved rarely: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Classifier {
    /// See [`EfficientNet`].
    EfficientNet(EfficientNet),
    /// See [`ResNet`].
    ResNet(ResNet),
}

impl Classifier {
    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Classifier::EfficientNet(m) => m.forward(x),
            Classifier::ResNet(m) => m.forward(x),
        }
    }

    /// The model at training progress `progress` (0 at the first step, 1 at the last): a
    /// ResNet whose DropBlock ramps (`drop_block.ramp`) gets `progress` times its rate; any
    /// other model is returned as it is.
    pub fn at_progress(self, spec: &ModelSpec, progress: f64) -> Self {
        match (self, spec) {
            (Classifier::ResNet(m), ModelSpec::ResNet(s)) if s.drop_block.as_ref().is_some_and(|d| d.ramp) => {
                Classifier::ResNet(m.with_drop_block_factor(s, progress))
            }
            (model, _) => model,
        }
    }
}
