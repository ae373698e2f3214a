//! EfficientNet (Tan & Le 2019) and EfficientNet-Lite, with the family defined as data.
//!
//! A model is B0's stage table scaled by a width and a depth multiplier (compound scaling).
//! The published variants are rows of [`VARIANTS`]; any `phi` gives a new one through
//! [`EfficientNetSpec::compound`]; small configurations for tests and Fashion-MNIST are the
//! same code with smaller multipliers or fewer stages.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainerError;
use crate::layers::{Activation, BnSettings, ConvBnAct, ConvSpec, DropPath, SqueezeExcite, global_avg_pool};

/// One stage of MBConv blocks, in B0 units (before scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Expansion ratio of the inverted bottleneck (1: no expansion convolution).
    pub expand: usize,
    /// Depthwise kernel side.
    pub kernel: usize,
    /// Stride of the first block of the stage.
    pub stride: usize,
    /// Output channels.
    pub channels: usize,
    /// Number of blocks.
    pub repeats: usize,
}

const fn stage(expand: usize, kernel: usize, stride: usize, channels: usize, repeats: usize) -> StageSpec {
    StageSpec {
        expand,
        kernel,
        stride,
        channels,
        repeats,
    }
}

/// B0's stages: (expand, kernel, stride, channels, repeats).
pub const B0_STAGES: [StageSpec; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];

/// B0's stem and head widths.
pub const B0_STEM: usize = 32;
/// See [`B0_STEM`].
pub const B0_HEAD: usize = 1280;

/// The compound-scaling coefficients found by grid search on B0: depth, width, resolution.
pub const ALPHA: f64 = 1.2;
/// See [`ALPHA`].
pub const BETA: f64 = 1.1;
/// See [`ALPHA`].
pub const GAMMA: f64 = 1.15;

/// A published variant: name, width, depth, resolution, dropout, whether it is a Lite model.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// timm-style name (`efficientnet_b0`, `efficientnet_lite0`, ...).
    pub name: &'static str,
    /// Width multiplier.
    pub width: f64,
    /// Depth multiplier.
    pub depth: f64,
    /// Training and evaluation resolution.
    pub resolution: u32,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Lite: ReLU6, no squeeze-excite, stem/head and first/last stage depths not scaled.
    pub lite: bool,
}

const fn variant(name: &'static str, width: f64, depth: f64, resolution: u32, dropout: f64, lite: bool) -> Variant {
    Variant {
        name,
        width,
        depth,
        resolution,
        dropout,
        lite,
    }
}

/// The published family (EfficientNet paper table; Lite from the TensorFlow TPU repository).
pub const VARIANTS: [Variant; 14] = [
    variant("efficientnet_b0", 1.0, 1.0, 224, 0.2, false),
    variant("efficientnet_b1", 1.0, 1.1, 240, 0.2, false),
    variant("efficientnet_b2", 1.1, 1.2, 260, 0.3, false),
    variant("efficientnet_b3", 1.2, 1.4, 300, 0.3, false),
    variant("efficientnet_b4", 1.4, 1.8, 380, 0.4, false),
    variant("efficientnet_b5", 1.6, 2.2, 456, 0.4, false),
    variant("efficientnet_b6", 1.8, 2.6, 528, 0.5, false),
    variant("efficientnet_b7", 2.0, 3.1, 600, 0.5, false),
    variant("efficientnet_l2", 4.3, 5.3, 800, 0.5, false),
    variant("efficientnet_lite0", 1.0, 1.0, 224, 0.2, true),
    variant("efficientnet_lite1", 1.0, 1.1, 240, 0.2, true),
    variant("efficientnet_lite2", 1.1, 1.2, 260, 0.3, true),
    variant("efficientnet_lite3", 1.2, 1.4, 280, 0.3, true),
    variant("efficientnet_lite4", 1.4, 1.8, 300, 0.3, true),
];

/// Everything that defines an EfficientNet. Serialisable: it is saved beside checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetSpec {
    /// Stages in B0 units; scaled by `width` and `depth`.
    pub stages: Vec<StageSpec>,
    /// Channel multiplier.
    pub width: f64,
    /// Repeat multiplier.
    pub depth: f64,
    /// Stem output channels in B0 units.
    pub stem_channels: usize,
    /// Stride of the stem convolution.
    pub stem_stride: usize,
    /// Head (last 1x1 convolution) channels in B0 units.
    pub head_channels: usize,
    /// Lite variant: ReLU6, no squeeze-excite, stem and head widths and the first and last
    /// stages' depths are not scaled.
    pub lite: bool,
    /// Squeeze-excite width as a fraction of the block's input channels (ignored by Lite).
    pub se_ratio: f64,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Stochastic depth: drop probability of the last block (linear from 0 at the first).
    pub drop_path_rate: f64,
    /// Input image channels.
    pub in_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Training and evaluation resolution. With `tf_same_padding` the padding is computed
    /// for it; otherwise the network takes any size.
    pub resolution: u32,
    /// TensorFlow "SAME" padding at `resolution` (timm's `tf_` models), for weights trained in
    /// TensorFlow; otherwise symmetric padding.
    #[serde(default)]
    pub tf_same_padding: bool,
    /// BatchNorm momentum (PyTorch convention). TensorFlow's 0.99 decay is 0.01: right for
    /// long runs; short runs need more (0.1) for the running statistics to settle.
    #[serde(default = "tf_bn_momentum")]
    pub bn_momentum: f64,
}

fn tf_bn_momentum() -> f64 {
    BnSettings::TF.momentum
}

impl EfficientNetSpec {
    /// A published variant by name (`efficientnet_b0`, `b0`, `lite0`, ...).
    pub fn named(name: &str, num_classes: usize) -> Result<Self, TrainerError> {
        let short = name.strip_prefix("efficientnet_").unwrap_or(name);
        let v = VARIANTS
            .iter()
            .find(|v| v.name.strip_prefix("efficientnet_") == Some(short))
            .ok_or_else(|| {
                let known: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
                TrainerError::UnknownModel {
                    family: "EfficientNet",
                    name: name.to_string(),
                    known: known.join(", "),
                }
            })?;
        Ok(Self::from_variant(v, num_classes))
    }

    /// The spec of a row of [`VARIANTS`].
    pub fn from_variant(v: &Variant, num_classes: usize) -> Self {
        Self {
            stages: B0_STAGES.to_vec(),
            width: v.width,
            depth: v.depth,
            stem_channels: B0_STEM,
            stem_stride: 2,
            head_channels: B0_HEAD,
            lite: v.lite,
            se_ratio: 0.25,
            dropout: v.dropout,
            drop_path_rate: 0.2,
            in_channels: 3,
            num_classes,
            resolution: v.resolution,
            tf_same_padding: false,
            bn_momentum: BnSettings::TF.momentum,
        }
    }

    /// Compound scaling of B0 by `phi`: depth `ALPHA^phi`, width `BETA^phi`, resolution
    /// `224 * GAMMA^phi` rounded to a multiple of 8; dropout grows from 0.2 by 0.05 per unit.
    pub fn compound(phi: f64, num_classes: usize) -> Self {
        let resolution = ((224.0 * GAMMA.powf(phi) / 8.0).round() * 8.0) as u32;
        let dropout = (0.2 + 0.05 * phi).clamp(0.0, 0.5);
        let v = variant("compound", BETA.powf(phi), ALPHA.powf(phi), resolution, dropout, false);
        Self::from_variant(&v, num_classes)
    }

    /// Checks that the spec describes a buildable network.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(TrainerError::invalid("EfficientNet", key, value, why))
        };
        if self.stages.is_empty() {
            return bad("stages", &"[]", "needs at least one stage");
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.expand == 0 || s.kernel == 0 || s.kernel.is_multiple_of(2) || s.stride == 0 || s.channels == 0 {
                return bad(
                    "stages",
                    &format!("{s:?}"),
                    &format!("stage {i}: expand, stride and channels must be > 0 and the kernel odd"),
                );
            }
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return bad("width", &self.width, "must be a positive number");
        }
        if !(self.depth > 0.0 && self.depth.is_finite()) {
            return bad("depth", &self.depth, "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", &self.dropout, "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad("drop_path_rate", &self.drop_path_rate, "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return bad("bn_momentum", &self.bn_momentum, "must be in [0, 1]");
        }
        if !(self.se_ratio >= 0.0 && self.se_ratio <= 1.0) {
            return bad("se_ratio", &self.se_ratio, "must be in [0, 1]");
        }
        if self.num_classes == 0 || self.in_channels == 0 || self.stem_stride == 0 {
            return bad(
                "num_classes/in_channels/stem_stride",
                &format!("{}/{}/{}", self.num_classes, self.in_channels, self.stem_stride),
                "must be > 0",
            );
        }
        Ok(())
    }

    /// The activation used everywhere in the network.
    pub fn activation(&self) -> Activation {
        if self.lite {
            Activation::Relu6
        } else {
            Activation::Swish
        }
    }

    /// Stem output channels after scaling.
    pub fn stem_out(&self) -> usize {
        if self.lite {
            self.stem_channels
        } else {
            round_channels(self.stem_channels, self.width)
        }
    }

    /// Head channels after scaling.
    pub fn head_out(&self) -> usize {
        if self.lite {
            self.head_channels
        } else {
            round_channels(self.head_channels, self.width)
        }
    }

    /// Every block in order: (input channels, output channels, expand, kernel, stride).
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut blocks = Vec::new();
        let mut in_ch = self.stem_out();
        for (i, s) in self.stages.iter().enumerate() {
            let out = round_channels(s.channels, self.width);
            for r in 0..self.stage_repeats(i) {
                blocks.push(BlockSpec {
                    in_channels: in_ch,
                    out_channels: out,
                    expand: s.expand,
                    kernel: s.kernel,
                    stride: if r == 0 { s.stride } else { 1 },
                });
                in_ch = out;
            }
        }
        blocks
    }

    /// Per-stage (channels, repeats) after scaling, for checking against published tables.
    pub fn scaled_stages(&self) -> Vec<(usize, usize)> {
        (0..self.stages.len())
            .map(|i| {
                (
                    round_channels(self.stages[i].channels, self.width),
                    self.stage_repeats(i),
                )
            })
            .collect()
    }

    /// Blocks in stage `i` after depth scaling (Lite keeps the first and last stages as they are).
    fn stage_repeats(&self, i: usize) -> usize {
        let s = &self.stages[i];
        if self.lite && (i == 0 || i + 1 == self.stages.len()) {
            s.repeats
        } else {
            round_repeats(s.repeats, self.depth)
        }
    }

    /// Trainable parameters (BatchNorm running statistics excluded, as timm counts), computed
    /// from the spec without building the network.
    pub fn param_count(&self) -> usize {
        let conv_bn = |k: usize, i: usize, o: usize, groups: usize| k * k * i / groups * o + 2 * o;
        let mut n = conv_bn(3, self.in_channels, self.stem_out(), 1);
        for b in self.blocks() {
            let mid = b.in_channels * b.expand;
            if b.expand != 1 {
                n += conv_bn(1, b.in_channels, mid, 1);
            }
            n += conv_bn(b.kernel, mid, mid, mid);
            if let Some(r) = self.se_width(&b) {
                n += mid * r + r + r * mid + mid;
            }
            n += conv_bn(1, mid, b.out_channels, 1);
        }
        let last = self.blocks().last().map(|b| b.out_channels).unwrap_or(self.stem_out());
        n += conv_bn(1, last, self.head_out(), 1);
        n + self.head_out() * self.num_classes + self.num_classes
    }

    /// Squeeze-excite bottleneck width of a block: `se_ratio` of its *input* channels.
    fn se_width(&self, b: &BlockSpec) -> Option<usize> {
        if self.lite || self.se_ratio == 0.0 {
            None
        } else {
            Some(((b.in_channels as f64 * self.se_ratio) as usize).max(1))
        }
    }

    /// Builds the network with fresh weights.
    pub fn init(&self, device: &Device) -> Result<EfficientNet, TrainerError> {
        self.validate()?;
        let act = self.activation();
        let bn = BnSettings {
            momentum: self.bn_momentum,
            ..BnSettings::TF
        };
        let mut size = self.resolution as usize;
        let same = self.tf_same_padding;
        // The convolution spec, with TensorFlow padding for the current feature size if asked;
        // advances `size` to the output's.
        let mut pad = |conv: ConvSpec| {
            let conv = if same { conv.tf_same(size) } else { conv };
            size = conv.output_size(size);
            conv
        };
        let stem = ConvBnAct::new(
            pad(ConvSpec::new(self.in_channels, self.stem_out(), 3, self.stem_stride)),
            act,
            bn,
            device,
        );
        let specs = self.blocks();
        let n = specs.len();
        let blocks = specs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                // Survival falls linearly with depth, to 1 - drop_path_rate at the last block.
                let drop = if n > 1 {
                    self.drop_path_rate * i as f64 / (n - 1) as f64
                } else {
                    self.drop_path_rate
                };
                let dw = pad(ConvSpec::depthwise(b.in_channels * b.expand, b.kernel, b.stride));
                MbConv::new(b, dw, self.se_width(b), act, bn, drop, device)
            })
            .collect();
        let last = specs.last().map(|b| b.out_channels).unwrap_or(self.stem_out());
        let head = ConvBnAct::new(ConvSpec::new(last, self.head_out(), 1, 1), act, bn, device);
        Ok(EfficientNet {
            stem,
            blocks,
            head,
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(self.head_out(), self.num_classes).init(device),
        })
    }
}

/// One MBConv block after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Expansion ratio.
    pub expand: usize,
    /// Depthwise kernel.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
}

/// timm's `round_channels`: `channels * multiplier` to a multiple of 8, at least 8, and never
/// below 90% of the unrounded value.
pub fn round_channels(channels: usize, multiplier: f64) -> usize {
    let divisor = 8.0;
    let v = channels as f64 * multiplier;
    let mut rounded = (((v + divisor / 2.0) / divisor).floor() * divisor).max(divisor);
    if rounded < 0.9 * v {
        rounded += divisor;
    }
    rounded as usize
}

/// Repeats after depth scaling: `ceil(repeats * multiplier)`.
pub fn round_repeats(repeats: usize, multiplier: f64) -> usize {
    (repeats as f64 * multiplier).ceil() as usize
}

/// The inverted-residual block: 1x1 expansion, depthwise convolution, squeeze-excite, 1x1
/// projection without activation, and a stochastic-depth residual when shapes allow.
#[derive(Module, Debug)]
pub struct MbConv {
    /// 1x1 expansion (absent when the expansion ratio is 1).
    pub conv_pw: Option<ConvBnAct>,
    /// Depthwise convolution.
    pub conv_dw: ConvBnAct,
    /// Squeeze-excite on the expanded features.
    pub se: Option<SqueezeExcite>,
    /// 1x1 projection (linear: no activation).
    pub conv_pwl: ConvBnAct,
    /// Stochastic depth on the residual branch.
    pub drop_path: DropPath,
    /// Whether the block adds its input (stride 1 and equal channels).
    pub has_skip: bool,
}

impl MbConv {
    fn new(
        b: &BlockSpec,
        dw: ConvSpec,
        se: Option<usize>,
        act: Activation,
        bn: BnSettings,
        drop: f64,
        device: &Device,
    ) -> Self {
        let mid = b.in_channels * b.expand;
        let conv_pw = (b.expand != 1).then(|| ConvBnAct::new(ConvSpec::new(b.in_channels, mid, 1, 1), act, bn, device));
        Self {
            conv_pw,
            conv_dw: ConvBnAct::new(dw, act, bn, device),
            se: se.map(|r| SqueezeExcite::new(mid, r, act, device)),
            conv_pwl: ConvBnAct::new(
                ConvSpec::new(mid, b.out_channels, 1, 1),
                Activation::Identity,
                bn,
                device,
            ),
            drop_path: DropPath::new(drop),
            has_skip: b.stride == 1 && b.in_channels == b.out_channels,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let mut h = match &self.conv_pw {
            Some(pw) => pw.forward(x),
            None => x,
        };
        h = self.conv_dw.forward(h);
        if let Some(se) = &self.se {
            h = se.forward(h);
        }
        h = self.conv_pwl.forward(h);
        if self.has_skip {
            self.drop_path.forward(h) + shortcut
        } else {
            h
        }
    }
}

/// An EfficientNet classifier.
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// 3x3 stride-2 stem.
    pub stem: ConvBnAct,
    /// All MBConv blocks, stage after stage.
    pub blocks: Vec<MbConv>,
    /// 1x1 head convolution.
    pub head: ConvBnAct,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The classifier.
    pub classifier: Linear,
}

impl EfficientNet {
    /// Pooled features before dropout and the classifier: `[batch, head channels]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = self.stem.forward(x);
        for block in &self.blocks {
            h = block.forward(h);
        }
        global_avg_pool(self.head.forward(h))
    }

    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classifier.forward(self.dropout.forward(self.features(x)))
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;

    use super::*;

    /// timm's parameter counts with 1000 classes (`sum(p.numel() for p in m.parameters())`).
    const TIMM_COUNTS: [(&str, usize); 9] = [
        ("efficientnet_b0", 5_288_548),
        ("efficientnet_b1", 7_794_184),
        ("efficientnet_b2", 9_109_994),
        ("efficientnet_b3", 12_233_232),
        ("efficientnet_b4", 19_341_616),
        ("efficientnet_b5", 30_389_784),
        ("efficientnet_b6", 43_040_704),
        ("efficientnet_b7", 66_347_960),
        ("efficientnet_lite0", 4_652_008),
    ];

    #[test]
    fn parameter_counts_match_timm() {
        for (name, expected) in TIMM_COUNTS {
            let spec = EfficientNetSpec::named(name, 1000).unwrap();
            assert_eq!(spec.param_count(), expected, "{name}");
        }
    }

    #[test]
    fn built_network_has_the_counted_parameters() {
        // The analytic count is checked against the real burn module, so the timm comparison
        // above is a statement about the network we train, not only about arithmetic.
        let device = crate::default_device();
        for name in ["b0", "lite0"] {
            let spec = EfficientNetSpec::named(name, 1000).unwrap();
            let model = spec.init(&device).unwrap();
            let bn_buffers: usize =
                spec.blocks().iter().map(|b| bn_channels(&spec, b)).sum::<usize>() + spec.stem_out() + spec.head_out();
            assert_eq!(model.num_params(), spec.param_count() + 2 * bn_buffers, "{name}");
        }
    }

    /// BatchNorm channels of a block (each has a running mean and variance).
    fn bn_channels(spec: &EfficientNetSpec, b: &BlockSpec) -> usize {
        let _ = spec;
        let mid = b.in_channels * b.expand;
        let pw = if b.expand != 1 { mid } else { 0 };
        pw + mid + b.out_channels
    }

    #[test]
    fn scaled_stage_tables_match_the_published_ones() {
        let check = |name: &str, stem: usize, stages: [usize; 7], repeats: [usize; 7], head: usize| {
            let spec = EfficientNetSpec::named(name, 1000).unwrap();
            assert_eq!(spec.stem_out(), stem, "{name} stem");
            let got: Vec<(usize, usize)> = spec.scaled_stages();
            let want: Vec<(usize, usize)> = stages.into_iter().zip(repeats).collect();
            assert_eq!(got, want, "{name} stages");
            assert_eq!(spec.head_out(), head, "{name} head");
        };
        check("b0", 32, [16, 24, 40, 80, 112, 192, 320], [1, 2, 2, 3, 3, 4, 1], 1280);
        check("b3", 40, [24, 32, 48, 96, 136, 232, 384], [2, 3, 3, 5, 5, 6, 2], 1536);
        check(
            "b7",
            64,
            [32, 48, 80, 160, 224, 384, 640],
            [4, 7, 7, 10, 10, 13, 4],
            2560,
        );
        check(
            "l2",
            136,
            [72, 104, 176, 344, 480, 824, 1376],
            [6, 11, 11, 16, 16, 22, 6],
            5504,
        );
        // Lite keeps the stem, the head and the first and last stages' depths.
        check(
            "lite4",
            32,
            [24, 32, 56, 112, 160, 272, 448],
            [1, 4, 4, 6, 6, 8, 1],
            1280,
        );
    }

    #[test]
    fn compound_scaling_follows_the_coefficients() {
        let b0 = EfficientNetSpec::compound(0.0, 10);
        assert_eq!((b0.width, b0.depth, b0.resolution), (1.0, 1.0, 224));
        let s = EfficientNetSpec::compound(2.0, 10);
        assert!((s.depth - 1.44).abs() < 1e-12 && (s.width - 1.21).abs() < 1e-12);
        assert_eq!(s.resolution, 296); // 224 * 1.15^2 = 296.24
        // FLOPs grow by about 2^phi: alpha * beta^2 * gamma^2 is close to 2.
        assert!((ALPHA * BETA * BETA * GAMMA * GAMMA - 2.0).abs() < 0.1);
    }

    #[test]
    fn channel_rounding_is_timms() {
        assert_eq!(round_channels(32, 1.1), 32); // 35.2 -> 32 (>= 90%)
        assert_eq!(round_channels(32, 4.3), 136);
        assert_eq!(round_channels(16, 0.25), 8); // never below 8
        assert_eq!(round_channels(40, 1.2), 48);
        assert_eq!(round_repeats(3, 1.1), 4);
    }

    #[test]
    fn bad_specs_are_rejected_with_the_field_named() {
        let mut spec = EfficientNetSpec::named("b0", 10).unwrap();
        spec.stages[2].kernel = 4;
        let err = spec.init(&crate::default_device()).unwrap_err().to_string();
        assert!(err.contains("stages") && err.contains("stage 2"), "{err}");
        let mut spec = EfficientNetSpec::named("b0", 10).unwrap();
        spec.dropout = 1.5;
        assert!(spec.validate().unwrap_err().to_string().contains("dropout"));
        let err = EfficientNetSpec::named("b9", 10).unwrap_err().to_string();
        assert!(err.contains("b9") && err.contains("efficientnet_b0"), "{err}");
    }

    #[test]
    fn drop_path_rate_grows_linearly_to_the_last_block() {
        let spec = EfficientNetSpec::named("b0", 10).unwrap();
        let model = spec.init(&crate::default_device()).unwrap();
        let probs: Vec<f64> = model.blocks.iter().map(|b| b.drop_path.drop_prob).collect();
        assert_eq!(probs[0], 0.0);
        assert!((probs[probs.len() - 1] - 0.2).abs() < 1e-12);
        assert!(probs.windows(2).all(|w| w[1] > w[0]));
    }
}
