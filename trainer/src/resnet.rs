//! ResNet (He et al. 2016) 18/34/50/101/152 and the ResNet-D tweak (He et al. 2019, "Bag of
//! Tricks"): a deep 3x3 stem and an average-pooled downsampling shortcut.
//!
//! Blocks, shortcut and stem are separate modules so that the Assemble-ResNet tweaks
//! (selective kernel, anti-aliasing, ...) can be added as new variants without touching the
//! rest.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::layers::{Activation, BnSettings, ConvBnAct, ConvSpec, DropPath, global_avg_pool};

/// The residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1, 3x3, 1x1 with 4x expansion (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of stage width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The published depths: name, block, blocks per stage.
pub const DEPTHS: [(&str, BlockKind, [usize; 4]); 5] = [
    ("resnet18", BlockKind::Basic, [2, 2, 2, 2]),
    ("resnet34", BlockKind::Basic, [3, 4, 6, 3]),
    ("resnet50", BlockKind::Bottleneck, [3, 4, 6, 3]),
    ("resnet101", BlockKind::Bottleneck, [3, 4, 23, 3]),
    ("resnet152", BlockKind::Bottleneck, [3, 8, 36, 3]),
];

/// Everything that defines a ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetSpec {
    /// Residual block type.
    pub block: BlockKind,
    /// Blocks in each stage.
    pub layers: Vec<usize>,
    /// Width of the first stage (64 in the paper); each later stage doubles it.
    pub base_width: usize,
    /// ResNet-D: three 3x3 stem convolutions (widths stem/2, stem/2, stem) instead of one 7x7.
    pub deep_stem: bool,
    /// ResNet-D: 2x2 average pooling before the 1x1 convolution of downsampling shortcuts.
    pub avg_down: bool,
    /// Small inputs (28-32 px): a 3x3 stride-1 stem and no max pool.
    pub small_input: bool,
    /// Zero-initialise the last BatchNorm scale of each block.
    pub zero_init_last: bool,
    /// Stochastic depth: drop probability of the last block (linear from 0 at the first).
    pub drop_path_rate: f64,
    /// Input image channels.
    pub in_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Training and evaluation resolution (informative).
    pub resolution: u32,
}

impl ResNetSpec {
    /// A published depth by name: `resnet18`..`resnet152`, with a `d` suffix for ResNet-D
    /// (`resnet50d`).
    pub fn named(name: &str, num_classes: usize) -> Result<Self, TrainerError> {
        let (base, d) = match name.strip_suffix('d') {
            Some(base) => (base, true),
            None => (name, false),
        };
        let (_, block, layers) = DEPTHS.iter().find(|(n, _, _)| *n == base).ok_or_else(|| {
            let known: Vec<&str> = DEPTHS.iter().map(|d| d.0).collect();
            TrainerError::Config(format!(
                "unknown ResNet `{name}`; known: {} (add `d` for ResNet-D)",
                known.join(", ")
            ))
        })?;
        Ok(Self {
            block: *block,
            layers: layers.to_vec(),
            base_width: 64,
            deep_stem: d,
            avg_down: d,
            small_input: false,
            zero_init_last: true,
            drop_path_rate: 0.0,
            in_channels: 3,
            num_classes,
            resolution: 224,
        })
    }

    /// Checks that the spec describes a buildable network.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |field: &str, why: &str| Err(TrainerError::Config(format!("ResNet `{field}`: {why}")));
        if self.layers.is_empty() || self.layers.contains(&0) {
            return bad("layers", "needs at least one stage, each with at least one block");
        }
        if self.base_width == 0 || (self.deep_stem && self.base_width < 2) {
            return bad("base_width", "must be > 0 (>= 2 with a deep stem)");
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad("drop_path_rate", "must be in [0, 1)");
        }
        if self.num_classes == 0 || self.in_channels == 0 {
            return bad("num_classes/in_channels", "must be > 0");
        }
        Ok(())
    }

    /// Trainable parameters (BatchNorm running statistics excluded, as timm counts), computed
    /// from the spec without building the network.
    pub fn param_count(&self) -> usize {
        let conv_bn = |k: usize, i: usize, o: usize| k * k * i * o + 2 * o;
        let w = self.base_width;
        let mut n = if self.small_input {
            conv_bn(3, self.in_channels, w)
        } else if self.deep_stem {
            conv_bn(3, self.in_channels, w / 2) + conv_bn(3, w / 2, w / 2) + conv_bn(3, w / 2, w)
        } else {
            conv_bn(7, self.in_channels, w)
        };
        let mut in_ch = w;
        for (stage, &blocks) in self.layers.iter().enumerate() {
            let width = w << stage;
            let out = width * self.block.expansion();
            for i in 0..blocks {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                n += match self.block {
                    BlockKind::Basic => conv_bn(3, in_ch, width) + conv_bn(3, width, out),
                    BlockKind::Bottleneck => {
                        conv_bn(1, in_ch, width) + conv_bn(3, width, width) + conv_bn(1, width, out)
                    }
                };
                if stride != 1 || in_ch != out {
                    n += conv_bn(1, in_ch, out);
                }
                in_ch = out;
            }
        }
        n + in_ch * self.num_classes + self.num_classes
    }

    /// Builds the network with fresh weights.
    pub fn init(&self, device: &Device) -> Result<ResNet, TrainerError> {
        self.validate()?;
        let act = Activation::Relu;
        let bn = BnSettings::TORCH;
        let w = self.base_width;
        let stem = if self.small_input {
            vec![ConvBnAct::new(
                ConvSpec::new(self.in_channels, w, 3, 1),
                act,
                bn,
                device,
            )]
        } else if self.deep_stem {
            let half = w / 2;
            vec![
                ConvBnAct::new(ConvSpec::new(self.in_channels, half, 3, 2), act, bn, device),
                ConvBnAct::new(ConvSpec::new(half, half, 3, 1), act, bn, device),
                ConvBnAct::new(ConvSpec::new(half, w, 3, 1), act, bn, device),
            ]
        } else {
            vec![ConvBnAct::new(
                ConvSpec::new(self.in_channels, w, 7, 2),
                act,
                bn,
                device,
            )]
        };
        let total: usize = self.layers.iter().sum();
        let mut index = 0;
        let mut in_ch = w;
        let mut blocks = Vec::with_capacity(total);
        for (stage, &n) in self.layers.iter().enumerate() {
            let width = w << stage;
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let drop = if total > 1 {
                    self.drop_path_rate * index as f64 / (total - 1) as f64
                } else {
                    self.drop_path_rate
                };
                let block = ResBlock::new(self, in_ch, width, stride, drop, device);
                in_ch = width * self.block.expansion();
                blocks.push(block);
                index += 1;
            }
        }
        Ok(ResNet {
            stem,
            stem_pool: !self.small_input,
            blocks,
            fc: LinearConfig::new(in_ch, self.num_classes).init(device),
        })
    }
}

/// The shortcut of a block that changes shape: optional 2x2 average pool (ResNet-D), then a
/// 1x1 convolution and BatchNorm.
#[derive(Module, Debug)]
pub struct Downsample {
    /// Stride of the average pool before the convolution (ResNet-D); 0 when absent.
    pub pool_stride: usize,
    /// The 1x1 convolution (strided unless pooled) and its BatchNorm.
    pub conv: ConvBnAct,
}

impl Downsample {
    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pool_stride > 1 {
            avg_pool_2x2(x, self.pool_stride)
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// PyTorch's `AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)`, as timm's
/// ResNet-D shortcut uses.
pub fn avg_pool_2x2(x: Tensor<4>, stride: usize) -> Tensor<4> {
    let mut opts = AvgPoolOptions::new([2, 2]);
    opts.stride = [stride, stride];
    opts.ceil_mode = true;
    opts.count_include_pad = false;
    avg_pool2d(x, opts)
}

/// The stem's 3x3 stride-2 max pool with padding 1.
pub fn stem_max_pool(x: Tensor<4>) -> Tensor<4> {
    let mut opts = MaxPoolOptions::new([3, 3]);
    opts.stride = [2, 2];
    opts.padding = [(1, 1), (1, 1)];
    max_pool2d(x, opts)
}

/// A residual block: a branch of [`ConvBnAct`] units (the last without activation), an
/// optional [`Downsample`] shortcut, addition and ReLU.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// The residual branch, in order.
    pub convs: Vec<ConvBnAct>,
    /// The shortcut when the shape changes.
    pub downsample: Option<Downsample>,
    /// Stochastic depth on the branch.
    pub drop_path: DropPath,
}

impl ResBlock {
    fn new(spec: &ResNetSpec, in_ch: usize, width: usize, stride: usize, drop: f64, device: &Device) -> Self {
        let act = Activation::Relu;
        let bn = BnSettings::TORCH;
        let out = width * spec.block.expansion();
        let mut convs = match spec.block {
            BlockKind::Basic => vec![
                ConvBnAct::new(ConvSpec::new(in_ch, width, 3, stride), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, out, 3, 1), Activation::Identity, bn, device),
            ],
            BlockKind::Bottleneck => vec![
                ConvBnAct::new(ConvSpec::new(in_ch, width, 1, 1), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, width, 3, stride), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, out, 1, 1), Activation::Identity, bn, device),
            ],
        };
        if spec.zero_init_last
            && let Some(last) = convs.pop()
        {
            convs.push(last.zero_gamma());
        }
        let downsample = (stride != 1 || in_ch != out).then(|| {
            let pooled = spec.avg_down && stride > 1;
            Downsample {
                pool_stride: if pooled { stride } else { 0 },
                conv: ConvBnAct::new(
                    ConvSpec::new(in_ch, out, 1, if pooled { 1 } else { stride }),
                    Activation::Identity,
                    bn,
                    device,
                ),
            }
        });
        Self {
            convs,
            downsample,
            drop_path: DropPath::new(drop),
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let mut h = x;
        for conv in &self.convs {
            h = conv.forward(h);
        }
        Activation::Relu.forward(self.drop_path.forward(h) + shortcut)
    }
}

/// A ResNet classifier.
#[derive(Module, Debug)]
pub struct ResNet {
    /// One 7x7 unit, three 3x3 units (deep stem), or one 3x3 unit (small inputs).
    pub stem: Vec<ConvBnAct>,
    /// Whether the 3x3 stride-2 max pool follows the stem.
    pub stem_pool: bool,
    /// All residual blocks, stage after stage.
    pub blocks: Vec<ResBlock>,
    /// The classifier.
    pub fc: Linear,
}

impl ResNet {
    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for unit in &self.stem {
            h = unit.forward(h);
        }
        if self.stem_pool {
            h = stem_max_pool(h);
        }
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.fc.forward(global_avg_pool(h))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;

    use super::*;

    /// timm's parameter counts with 1000 classes.
    const TIMM_COUNTS: [(&str, usize); 6] = [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("resnet50d", 25_576_264),
    ];

    #[test]
    fn parameter_counts_match_timm() {
        for (name, expected) in TIMM_COUNTS {
            let spec = ResNetSpec::named(name, 1000).unwrap();
            assert_eq!(spec.param_count(), expected, "{name}");
        }
    }

    #[test]
    fn built_network_has_the_counted_parameters() {
        let device = crate::default_device();
        for name in ["resnet18", "resnet50d"] {
            let spec = ResNetSpec::named(name, 1000).unwrap();
            let model = spec.init(&device).unwrap();
            let trainable = model.num_params();
            // num_params also counts BatchNorm running statistics: two per BN channel, the same
            // as the BN's own two trainable vectors.
            let bn: usize = bn_params(&model);
            assert_eq!(trainable - bn, spec.param_count(), "{name}");
        }
    }

    fn bn_params(m: &ResNet) -> usize {
        let unit = |u: &crate::layers::ConvBnAct| 2 * u.bn.gamma.dims()[0];
        m.stem.iter().map(unit).sum::<usize>()
            + m.blocks
                .iter()
                .map(|b| b.convs.iter().map(unit).sum::<usize>() + b.downsample.as_ref().map_or(0, |d| unit(&d.conv)))
                .sum::<usize>()
    }

    #[test]
    fn unknown_depth_names_the_known_ones() {
        let err = ResNetSpec::named("resnet42", 10).unwrap_err().to_string();
        assert!(err.contains("resnet42") && err.contains("resnet152"), "{err}");
    }
}
