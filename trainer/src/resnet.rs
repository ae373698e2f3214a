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
use crate::assemble::{
    BigLittleSpec, BigLittleStage, BlurPool, DropBlock, DropBlockSpec, SelectiveKernel, sk_param_count,
};
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
    /// Assemble-ResNet: selective-kernel units ([`SelectiveKernel`]) in place of each block's
    /// 3x3 convolution (the first of a basic block, the middle one of a bottleneck).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub selective_kernel: bool,
    /// Assemble-ResNet: anti-aliased downsampling. Strided 3x3 units run at stride 1 and are
    /// followed by a stride-2 [`BlurPool`]; a shortcut without ResNet-D's average pool blurs
    /// before its (then unstrided) 1x1 convolution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_alias: bool,
    /// Assemble-ResNet: Big-Little stages ([`BigLittleStage`]) for every stage but the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub big_little: Option<BigLittleSpec>,
    /// Assemble-ResNet: DropBlock ([`DropBlock`]) after every unit of the blocks of the last
    /// stages, and on their projection shortcuts; off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_block: Option<DropBlockSpec>,
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
            TrainerError::UnknownModel {
                family: "ResNet",
                name: name.to_string(),
                known: format!("{} (add `d` for ResNet-D)", known.join(", ")),
            }
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
            selective_kernel: false,
            anti_alias: false,
            big_little: None,
            drop_block: None,
            in_channels: 3,
            num_classes,
            resolution: 224,
        })
    }

    /// Checks that the spec describes a buildable network.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, why: String| {
            Err(TrainerError::invalid("ResNet", key, value, why))
        };
        if self.layers.is_empty() || self.layers.contains(&0) {
            return bad(
                "layers",
                &format!("{:?}", self.layers),
                "needs at least one stage, each with at least one block".into(),
            );
        }
        if self.base_width == 0 || (self.deep_stem && self.base_width < 2) {
            return bad(
                "base_width",
                &self.base_width,
                "must be > 0 (>= 2 with a deep stem)".into(),
            );
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad("drop_path_rate", &self.drop_path_rate, "must be in [0, 1)".into());
        }
        if self.num_classes == 0 || self.in_channels == 0 {
            return bad(
                "num_classes/in_channels",
                &format!("{}/{}", self.num_classes, self.in_channels),
                "must be > 0".into(),
            );
        }
        if let Some(bl) = &self.big_little {
            let value = format!("alpha {} beta {}", bl.alpha, bl.beta);
            if bl.alpha == 0 || bl.beta == 0 {
                return bad("big_little", &value, "alpha and beta must be >= 1".into());
            }
            if !self.base_width.is_multiple_of(bl.alpha) {
                return bad(
                    "big_little.alpha",
                    &bl.alpha,
                    format!(
                        "must divide base_width {} (the little branch is 1/alpha as wide)",
                        self.base_width
                    ),
                );
            }
            if self.layers.len() < 2 {
                return bad(
                    "big_little",
                    &value,
                    format!(
                        "needs at least two stages (the last one stays plain); `layers` is {:?}",
                        self.layers
                    ),
                );
            }
            let n = self.layers.len() - 1;
            if self.layers[..n].iter().any(|&b| b < 2) {
                return bad(
                    "big_little",
                    &value,
                    format!(
                        "every stage but the last needs at least 2 blocks (big branch + fusion block); `layers` is {:?}",
                        self.layers
                    ),
                );
            }
        }
        if let Some(db) = &self.drop_block {
            if !(0.0..1.0).contains(&db.drop_prob) {
                return bad("drop_block.drop_prob", &db.drop_prob, "must be in [0, 1)".into());
            }
            if db.block_size == 0 {
                return bad("drop_block.block_size", &db.block_size, "must be >= 1".into());
            }
            if db.stages == 0 || db.stages > self.layers.len() {
                return bad(
                    "drop_block.stages",
                    &db.stages,
                    format!("must be between 1 and the number of stages ({})", self.layers.len()),
                );
            }
        }
        if self.anti_alias {
            // Every blur input must be at least 2 pixels (reflection padding) at `resolution`.
            let mut side = self.stem_output_side();
            for (stage, plan) in self.plan().iter().enumerate() {
                for block in plan.blocks() {
                    if block.stride > 1 && side < 2 {
                        return bad(
                            "anti_alias",
                            &self.anti_alias,
                            format!(
                                "stage {stage} blurs a 1-pixel feature map at resolution {}; raise the resolution or drop a stage",
                                self.resolution
                            ),
                        );
                    }
                }
                side = side.div_ceil(plan.stride());
            }
        }
        Ok(())
    }

    /// Side of the stem's output for a `resolution`-pixel input.
    fn stem_output_side(&self) -> usize {
        let r = self.resolution as usize;
        if self.small_input { r } else { r.div_ceil(2).div_ceil(2) }
    }

    /// The blocks of every stage, in order: shapes, strides and where the stage is a Big-Little
    /// one. Both [`ResNetSpec::init`] and [`ResNetSpec::param_count`] follow it.
    fn plan(&self) -> Vec<StagePlan> {
        let w = self.base_width;
        let exp = self.block.expansion();
        let stages = self.layers.len();
        let bl_stages = if self.big_little.is_some() {
            stages.saturating_sub(1)
        } else {
            0
        };
        let drop_from = self
            .drop_block
            .as_ref()
            .map_or(usize::MAX, |d| stages.saturating_sub(d.stages));
        let mut in_ch = w;
        let mut plans = Vec::with_capacity(stages);
        for (stage, &n) in self.layers.iter().enumerate() {
            let width = w << stage;
            let out = width * exp;
            // DropBlock: the full rate in the last stage, a quarter in earlier ones (reference's
            // gamma_scale 0.25 for stage 4).
            let drop_block = match &self.drop_block {
                Some(d) if stage >= drop_from => Some((
                    if stage + 1 == stages {
                        d.drop_prob
                    } else {
                        d.drop_prob / 4.0
                    },
                    d.block_size,
                )),
                _ => None,
            };
            let block = |in_ch, width, stride, relu_out| BlockPlan {
                in_ch,
                width,
                stride,
                relu_out,
                drop_block,
            };
            match &self.big_little {
                Some(bl) if stage < bl_stages => {
                    // bL-Net's strides: each Big-Little stage's fusion block takes the next
                    // stage's stride, the last one's stays 1 (the plain last stage keeps 2).
                    let fusion_stride = if stage + 1 < bl_stages { 2 } else { 1 };
                    let big = (0..n.saturating_sub(1))
                        .map(|i| {
                            block(
                                if i == 0 { in_ch } else { out },
                                width,
                                if i == 0 { 2 } else { 1 },
                                i + 2 < n,
                            )
                        })
                        .collect();
                    let lw = width / bl.alpha.max(1);
                    let lout = lw * exp;
                    let little = (0..bl.little_blocks(n))
                        .map(|i| block(if i == 0 { in_ch } else { lout }, lw, 1, true))
                        .collect();
                    plans.push(StagePlan::BigLittle {
                        big,
                        little,
                        little_out: lout,
                        out,
                        fusion: block(out, width, fusion_stride, true),
                    });
                }
                _ => {
                    let first_stride = if stage > 0 { 2 } else { 1 };
                    let blocks = (0..n)
                        .map(|i| {
                            block(
                                if i == 0 { in_ch } else { out },
                                width,
                                if i == 0 { first_stride } else { 1 },
                                true,
                            )
                        })
                        .collect();
                    plans.push(StagePlan::Plain(blocks));
                }
            }
            in_ch = out;
        }
        plans
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
        let block_params = |b: &BlockPlan| {
            let out = b.width * self.block.expansion();
            // The 3x3 unit: a convolution, or a selective-kernel unit.
            let spatial = |i: usize, o: usize| {
                if self.selective_kernel {
                    sk_param_count(i, o)
                } else {
                    conv_bn(3, i, o)
                }
            };
            let mut p = match self.block {
                BlockKind::Basic => spatial(b.in_ch, b.width) + conv_bn(3, b.width, out),
                BlockKind::Bottleneck => {
                    conv_bn(1, b.in_ch, b.width) + spatial(b.width, b.width) + conv_bn(1, b.width, out)
                }
            };
            if b.stride != 1 || b.in_ch != out {
                p += conv_bn(1, b.in_ch, out);
            }
            p
        };
        let mut last = w;
        for plan in self.plan() {
            match &plan {
                StagePlan::Plain(blocks) => n += blocks.iter().map(block_params).sum::<usize>(),
                StagePlan::BigLittle {
                    big,
                    little,
                    little_out,
                    out,
                    fusion,
                } => {
                    n += big
                        .iter()
                        .chain(little)
                        .chain([fusion])
                        .map(block_params)
                        .sum::<usize>();
                    n += conv_bn(1, *little_out, *out);
                }
            }
            last = plan.out_channels(self.block.expansion());
        }
        n + last * self.num_classes + self.num_classes
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
        let plans = self.plan();
        let total: usize = plans.iter().map(|p| p.blocks().count()).sum();
        let mut index = 0;
        let mut next_block = |b: &BlockPlan| {
            let drop = if total > 1 {
                self.drop_path_rate * index as f64 / (total - 1) as f64
            } else {
                self.drop_path_rate
            };
            index += 1;
            ResBlock::new(self, b, drop, device)
        };
        let mut big_little = Vec::new();
        let mut blocks = Vec::new();
        let mut last = w;
        for plan in &plans {
            match plan {
                StagePlan::Plain(bs) => blocks.extend(bs.iter().map(&mut next_block)),
                StagePlan::BigLittle {
                    big,
                    little,
                    little_out,
                    out,
                    fusion,
                } => big_little.push(BigLittleStage {
                    big: big.iter().map(&mut next_block).collect(),
                    little: little.iter().map(&mut next_block).collect(),
                    little_e: ConvBnAct::new(ConvSpec::new(*little_out, *out, 1, 1), Activation::Identity, bn, device),
                    fusion: next_block(fusion),
                }),
            }
            last = plan.out_channels(self.block.expansion());
        }
        Ok(ResNet {
            stem,
            stem_pool: !self.small_input,
            big_little,
            blocks,
            fc: LinearConfig::new(last, self.num_classes).init(device),
        })
    }
}

/// One residual block of the plan.
#[derive(Debug, Clone, Copy)]
struct BlockPlan {
    in_ch: usize,
    width: usize,
    stride: usize,
    /// Whether the block ends with ReLU (not the last of a Big-Little big branch).
    relu_out: bool,
    /// DropBlock (rate, block side), when on in this stage.
    drop_block: Option<(f64, usize)>,
}

/// One stage of the plan.
enum StagePlan {
    Plain(Vec<BlockPlan>),
    BigLittle {
        big: Vec<BlockPlan>,
        little: Vec<BlockPlan>,
        little_out: usize,
        out: usize,
        fusion: BlockPlan,
    },
}

impl StagePlan {
    /// All blocks of the stage in build order.
    fn blocks(&self) -> Box<dyn Iterator<Item = &BlockPlan> + '_> {
        match self {
            StagePlan::Plain(b) => Box::new(b.iter()),
            StagePlan::BigLittle {
                big, little, fusion, ..
            } => Box::new(big.iter().chain(little.iter()).chain(std::iter::once(fusion))),
        }
    }

    /// Total stride of the stage.
    fn stride(&self) -> usize {
        match self {
            StagePlan::Plain(b) => b.iter().map(|b| b.stride).product(),
            StagePlan::BigLittle { fusion, .. } => fusion.stride,
        }
    }

    fn out_channels(&self, expansion: usize) -> usize {
        match self {
            StagePlan::Plain(b) => b.last().map_or(0, |b| b.width * expansion),
            StagePlan::BigLittle { out, .. } => *out,
        }
    }
}

/// The shortcut of a block that changes shape: optional 2x2 average pool (ResNet-D) or blur
/// pool (anti-aliasing without ResNet-D), then a 1x1 convolution and BatchNorm.
#[derive(Module, Debug)]
pub struct Downsample {
    /// Stride of the average pool before the convolution (ResNet-D); 0 when absent.
    pub pool_stride: usize,
    /// Anti-aliasing: the strided blur before the (unstrided) convolution.
    pub blur: Option<BlurPool>,
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
        let x = match &self.blur {
            Some(blur) => blur.forward(x),
            None => x,
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

/// One unit of a block's residual branch, in order (see [`ResBlock::branch`]).
#[derive(Debug, Clone, Copy)]
pub enum BranchUnit<'a> {
    /// Convolution + BatchNorm (+ ReLU); `usize` is its index in [`ResBlock::convs`].
    Conv(usize, &'a ConvBnAct),
    /// The selective-kernel unit in place of the 3x3 convolution.
    SelectiveKernel(&'a SelectiveKernel),
    /// The anti-aliasing blur after the (then unstrided) 3x3 unit.
    Blur(&'a BlurPool),
}

/// A residual block: a branch of [`ConvBnAct`] units (the last without activation; the 3x3
/// one optionally a [`SelectiveKernel`] unit followed by a [`BlurPool`]), an optional
/// [`Downsample`] shortcut, addition and ReLU.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// The convolution units of the residual branch, in order (without the 3x3 one when it is
    /// a selective-kernel unit).
    pub convs: Vec<ConvBnAct>,
    /// Position of the 3x3 unit in the branch (0 in a basic block, 1 in a bottleneck).
    pub spatial: usize,
    /// The selective-kernel unit in place of the 3x3 convolution.
    pub sk: Option<SelectiveKernel>,
    /// Anti-aliasing: the strided blur after the 3x3 unit.
    pub blur: Option<BlurPool>,
    /// The shortcut when the shape changes.
    pub downsample: Option<Downsample>,
    /// DropBlock after every branch unit and on the projection shortcut (training only).
    pub drop_block: Option<DropBlock>,
    /// Stochastic depth on the branch.
    pub drop_path: DropPath,
    /// Whether ReLU follows the addition (not after the last block of a Big-Little big branch).
    pub relu_out: bool,
}

impl ResBlock {
    fn new(spec: &ResNetSpec, plan: &BlockPlan, drop: f64, device: &Device) -> Self {
        let act = Activation::Relu;
        let bn = BnSettings::TORCH;
        let BlockPlan {
            in_ch, width, stride, ..
        } = *plan;
        let out = width * spec.block.expansion();
        let blurred = spec.anti_alias && stride > 1;
        let spatial_stride = if blurred { 1 } else { stride };
        let (spatial, spatial_in) = match spec.block {
            BlockKind::Basic => (0, in_ch),
            BlockKind::Bottleneck => (1, width),
        };
        let mut convs = match spec.block {
            BlockKind::Basic => vec![
                ConvBnAct::new(ConvSpec::new(in_ch, width, 3, spatial_stride), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, out, 3, 1), Activation::Identity, bn, device),
            ],
            BlockKind::Bottleneck => vec![
                ConvBnAct::new(ConvSpec::new(in_ch, width, 1, 1), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, width, 3, spatial_stride), act, bn, device),
                ConvBnAct::new(ConvSpec::new(width, out, 1, 1), Activation::Identity, bn, device),
            ],
        };
        let sk = spec.selective_kernel.then(|| {
            convs.remove(spatial);
            SelectiveKernel::new(spatial_in, width, spatial_stride, bn, device)
        });
        if spec.zero_init_last
            && let Some(last) = convs.pop()
        {
            convs.push(last.zero_gamma());
        }
        let downsample = (stride != 1 || in_ch != out).then(|| {
            let pooled = spec.avg_down && stride > 1;
            let blur = (blurred && !pooled).then(|| BlurPool::new(in_ch, stride));
            Downsample {
                pool_stride: if pooled { stride } else { 0 },
                conv: ConvBnAct::new(
                    ConvSpec::new(in_ch, out, 1, if pooled || blur.is_some() { 1 } else { stride }),
                    Activation::Identity,
                    bn,
                    device,
                ),
                blur,
            }
        });
        Self {
            convs,
            spatial,
            sk,
            blur: blurred.then(|| BlurPool::new(width, stride)),
            downsample,
            drop_block: plan.drop_block.map(|(p, b)| DropBlock::new(p, b)),
            drop_path: DropPath::new(drop),
            relu_out: plan.relu_out,
        }
    }

    /// The residual branch's units in order.
    pub fn branch(&self) -> Vec<BranchUnit<'_>> {
        let mut units: Vec<BranchUnit<'_>> = self
            .convs
            .iter()
            .enumerate()
            .map(|(i, c)| BranchUnit::Conv(i, c))
            .collect();
        // Insert after the 3x3 unit (or in its place) the selective-kernel unit and the blur.
        let mut at = self.spatial.min(units.len());
        if let Some(sk) = &self.sk {
            units.insert(at, BranchUnit::SelectiveKernel(sk));
        }
        at += 1;
        if let Some(blur) = &self.blur {
            units.insert(at.min(units.len()), BranchUnit::Blur(blur));
        }
        units
    }

    fn drop_block(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.drop_block {
            Some(d) => d.forward(x),
            None => x,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => self.drop_block(d.forward(x.clone())),
            None => x.clone(),
        };
        let mut h = x;
        for unit in self.branch() {
            h = match unit {
                BranchUnit::Conv(_, c) => self.drop_block(c.forward(h)),
                BranchUnit::SelectiveKernel(sk) => self.drop_block(sk.forward(h)),
                BranchUnit::Blur(b) => b.forward(h),
            };
        }
        let sum = self.drop_path.forward(h) + shortcut;
        if self.relu_out {
            Activation::Relu.forward(sum)
        } else {
            sum
        }
    }
}

/// A ResNet classifier.
#[derive(Module, Debug)]
pub struct ResNet {
    /// One 7x7 unit, three 3x3 units (deep stem), or one 3x3 unit (small inputs).
    pub stem: Vec<ConvBnAct>,
    /// Whether the 3x3 stride-2 max pool follows the stem.
    pub stem_pool: bool,
    /// Big-Little stages (every stage but the last with `big_little`), before `blocks`.
    pub big_little: Vec<BigLittleStage>,
    /// All plain residual blocks, stage after stage.
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
        for stage in &self.big_little {
            h = stage.forward(h);
        }
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.fc.forward(global_avg_pool(h))
    }

    /// Every residual block (Big-Little branches and fusion blocks included), in build order.
    pub fn all_blocks(&self) -> Vec<&ResBlock> {
        let mut all = Vec::new();
        for stage in &self.big_little {
            all.extend(stage.big.iter().chain(&stage.little).chain([&stage.fusion]));
        }
        all.extend(&self.blocks);
        all
    }

    /// The same network with every DropBlock's rate multiplied by `factor` relative to the
    /// spec's (`spec.drop_block`), for a linear ramp of the rate over training as in the
    /// paper: `factor = step / steps`.
    pub fn with_drop_block_factor(mut self, spec: &ResNetSpec, factor: f64) -> Self {
        let plans = spec.plan();
        let rates: Vec<Option<f64>> = plans
            .iter()
            .flat_map(|p| p.blocks().map(|b| b.drop_block.map(|d| d.0)).collect::<Vec<_>>())
            .collect();
        let mut rates = rates.into_iter();
        let mut set = |block: &mut ResBlock| {
            if let (Some(Some(rate)), Some(db)) = (rates.next(), block.drop_block.take()) {
                block.drop_block = Some(db.with_drop_prob(rate * factor.clamp(0.0, 1.0)));
            }
        };
        for stage in &mut self.big_little {
            stage.big.iter_mut().for_each(&mut set);
            stage.little.iter_mut().for_each(&mut set);
            set(&mut stage.fusion);
        }
        self.blocks.iter_mut().for_each(&mut set);
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// A small network for the tweak tests: three stages, 8 channels wide.
    pub(crate) fn small(block: BlockKind, in_channels: usize) -> ResNetSpec {
        let mut s = ResNetSpec::named("resnet18", 5).unwrap();
        s.block = block;
        s.layers = vec![2, 2, 2];
        s.base_width = 8;
        s.small_input = true;
        s.in_channels = in_channels;
        s.resolution = 15;
        s
    }

    /// A change to a spec.
    type Tweak = fn(&mut ResNetSpec);

    /// Every tweak alone and together, on both block types.
    pub(crate) fn tweaked() -> Vec<(String, ResNetSpec)> {
        let mut out = Vec::new();
        for block in [BlockKind::Basic, BlockKind::Bottleneck] {
            let base = small(block, 3);
            let variants: [(&str, Tweak); 6] = [
                ("plain", |_| {}),
                ("sk", |s| s.selective_kernel = true),
                ("anti-alias", |s| s.anti_alias = true),
                ("big-little", |s| s.big_little = Some(BigLittleSpec::default())),
                ("drop-block", |s| {
                    s.drop_block = Some(DropBlockSpec {
                        drop_prob: 0.1,
                        block_size: 3,
                        stages: 2,
                        ramp: true,
                    })
                }),
                ("all", |s| {
                    s.selective_kernel = true;
                    s.anti_alias = true;
                    s.deep_stem = true;
                    s.avg_down = true;
                    s.big_little = Some(BigLittleSpec { alpha: 2, beta: 2 });
                    s.drop_block = Some(DropBlockSpec {
                        drop_prob: 0.1,
                        block_size: 7,
                        stages: 2,
                        ramp: true,
                    });
                }),
            ];
            for (name, f) in variants {
                let mut s = base.clone();
                f(&mut s);
                out.push((format!("{block:?}-{name}"), s));
            }
        }
        out
    }

    #[test]
    fn built_network_has_the_counted_parameters() {
        let device = crate::default_device();
        let mut specs: Vec<(String, ResNetSpec)> = ["resnet18", "resnet50d"]
            .iter()
            .map(|n| (n.to_string(), ResNetSpec::named(n, 1000).unwrap()))
            .collect();
        specs.extend(tweaked());
        // Anti-aliasing without ResNet-D: the shortcut blurs (no parameters) before its 1x1.
        let mut aa = small(BlockKind::Bottleneck, 1);
        aa.anti_alias = true;
        aa.avg_down = false;
        specs.push(("bottleneck-anti-alias-no-avg-down".into(), aa));
        for (name, spec) in specs {
            let model = spec.init(&device).unwrap();
            let trainable = model.num_params();
            // num_params also counts BatchNorm running statistics: two per BN channel, the same
            // as the BN's own two trainable vectors.
            let bn: usize = bn_params(&model);
            assert_eq!(trainable - bn, spec.param_count(), "{name}");
            println!("{name}: {} parameters", spec.param_count());
        }
    }

    fn bn_params(m: &ResNet) -> usize {
        let unit = |u: &crate::layers::ConvBnAct| 2 * u.bn.gamma.dims()[0];
        let block = |b: &ResBlock| {
            b.convs.iter().map(unit).sum::<usize>()
                + b.downsample.as_ref().map_or(0, |d| unit(&d.conv))
                + b.sk.as_ref().map_or(0, |sk| unit(&sk.conv) + unit(&sk.squeeze))
        };
        m.stem.iter().map(unit).sum::<usize>()
            + m.all_blocks().into_iter().map(block).sum::<usize>()
            + m.big_little.iter().map(|s| unit(&s.little_e)).sum::<usize>()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// A tweak that is silently ignored fails here: each changes the parameter count, the
    /// structure, or (with the same weights) the output.
    #[test]
    fn every_tweak_changes_the_network() {
        use burn::tensor::Distribution;
        let device = crate::default_device();
        for block in [BlockKind::Basic, BlockKind::Bottleneck] {
            let base = small(block, 3);
            let x = Tensor::<4>::random([2, 3, 15, 15], Distribution::Normal(0.0, 1.0), &device);
            let plain = base.init(&device).unwrap();
            let mut sk = base.clone();
            sk.selective_kernel = true;
            assert!(sk.param_count() > base.param_count());
            assert!(sk.init(&device).unwrap().blocks.iter().all(|b| b.sk.is_some()));
            let mut bl = base.clone();
            bl.big_little = Some(BigLittleSpec::default());
            assert_ne!(bl.param_count(), base.param_count());
            let bl_net = bl.init(&device).unwrap();
            assert_eq!((bl_net.big_little.len(), bl_net.blocks.len()), (2, 2));
            // bL-Net's depth rule: blocks - 1 big blocks, max(1, blocks / beta - 1) little.
            assert_eq!(
                (bl_net.big_little[0].big.len(), bl_net.big_little[0].little.len()),
                (1, 1)
            );
            assert!(!bl_net.big_little[0].big[0].relu_out);
            // Anti-aliasing adds no parameters: same weights, different output.
            let mut aa = base.clone();
            aa.anti_alias = true;
            assert_eq!(aa.param_count(), base.param_count());
            let aa_net = aa.init(&device).unwrap().load_record(plain.clone().into_record());
            let strided: Vec<_> = aa_net.blocks.iter().filter(|b| b.blur.is_some()).collect();
            assert_eq!(strided.len(), 2);
            let d = max_diff(&values(plain.forward(x.clone())), &values(aa_net.forward(x.clone())));
            assert!(d > 1e-4, "{block:?}: anti-aliasing did not change the output ({d})");
            // DropBlock: on in the last two stages only, and active in training.
            let mut db = base.clone();
            db.drop_block = Some(DropBlockSpec {
                drop_prob: 0.3,
                block_size: 3,
                stages: 2,
                ramp: true,
            });
            let db_net = db.init(&device).unwrap();
            let on: Vec<bool> = db_net.blocks.iter().map(|b| b.drop_block.is_some()).collect();
            assert_eq!(on, vec![false, false, true, true, true, true]);
            let rates: Vec<f64> = db_net
                .blocks
                .iter()
                .filter_map(|b| b.drop_block.as_ref())
                .map(|d| d.drop_prob)
                .collect();
            assert_eq!(rates, vec![0.075, 0.075, 0.3, 0.3]);
            let ramped = db_net.clone().with_drop_block_factor(&db, 0.5);
            assert_eq!(ramped.blocks[5].drop_block.as_ref().unwrap().drop_prob, 0.15);
            // The training loop's ramp: no DropBlock at the start, the full rate at the end;
            // without `ramp` the full rate throughout.
            use crate::model::{Classifier, ModelSpec};
            let rate = |m: Classifier| match m {
                Classifier::ResNet(r) => r.blocks[5].drop_block.as_ref().unwrap().drop_prob,
                Classifier::EfficientNet(_) => unreachable!(),
            };
            let spec = ModelSpec::ResNet(db.clone());
            let model = Classifier::ResNet(db_net.clone());
            assert_eq!(rate(model.at_progress(&spec, 0.0)), 0.0);
            let model = Classifier::ResNet(db_net.clone());
            assert_eq!(rate(model.at_progress(&spec, 1.0)), 0.3);
            let mut fixed = db.clone();
            if let Some(d) = fixed.drop_block.as_mut() {
                d.ramp = false;
            }
            let model = Classifier::ResNet(db_net.clone());
            assert_eq!(rate(model.at_progress(&ModelSpec::ResNet(fixed), 0.0)), 0.3);
            let ad = device.clone().autodiff();
            let train_net = db_net.clone().fork(&ad);
            let plain_train = plain.clone().fork(&ad).load_record(train_net.clone().into_record());
            let xa = Tensor::<4>::from_data(x.clone().into_data(), &ad);
            let d = max_diff(&values(train_net.forward(xa.clone())), &values(plain_train.forward(xa)));
            assert!(d > 1e-4, "{block:?}: DropBlock did nothing in training ({d})");
            let eval = max_diff(
                &values(db_net.forward(x.clone())),
                &values(
                    plain
                        .clone()
                        .load_record(db_net.clone().into_record())
                        .forward(x.clone()),
                ),
            );
            assert!(
                eval < 1e-6,
                "{block:?}: DropBlock is not the identity at evaluation ({eval})"
            );
        }
    }

    /// Zero-gamma: at initialisation every block's residual branch outputs zero, so the block
    /// is ReLU of its shortcut (ReLU of its input when the shape is kept).
    #[test]
    fn zero_gamma_makes_blocks_start_as_the_shortcut() {
        use burn::tensor::Distribution;
        let device = crate::default_device();
        for (name, spec) in tweaked() {
            let mut spec = spec;
            spec.zero_init_last = true;
            let model = spec.init(&device).unwrap();
            for (i, block) in model.all_blocks().into_iter().enumerate() {
                let x = Tensor::<4>::random([2, block_in(block), 9, 9], Distribution::Normal(0.0, 1.0), &device);
                let d = max_diff(&values(block.forward(x.clone())), &values(start_output(block, x)));
                assert!(d < 1e-6, "{name} block {i}: {d}");
            }
            // Without zero-gamma the branch contributes.
            spec.zero_init_last = false;
            let model = spec.init(&device).unwrap();
            let block = model.all_blocks()[0];
            let x = Tensor::<4>::random([2, block_in(block), 9, 9], Distribution::Normal(0.0, 1.0), &device);
            let d = max_diff(&values(block.forward(x.clone())), &values(start_output(block, x)));
            assert!(d > 1e-3, "{name}: {d}");
        }
    }

    /// Input channels of a block.
    fn block_in(block: &ResBlock) -> usize {
        match block.branch()[0] {
            BranchUnit::Conv(_, c) => c.conv.weight.dims()[1],
            BranchUnit::SelectiveKernel(sk) => sk.conv.conv.weight.dims()[1],
            BranchUnit::Blur(b) => b.channels,
        }
    }

    /// What a block outputs when its branch is zero: its shortcut, through ReLU unless it is
    /// the last of a big branch.
    fn start_output(block: &ResBlock, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &block.downsample {
            Some(d) => d.forward(x),
            None => x,
        };
        if block.relu_out {
            Activation::Relu.forward(shortcut)
        } else {
            shortcut
        }
    }

    /// One backward pass through every tweak at once (DropBlock active): gradients reach the
    /// selective-kernel attention, both Big-Little branches and the stem, and are finite.
    #[test]
    fn tweaked_networks_train() {
        use burn::tensor::Distribution;
        let ad = crate::default_device().autodiff();
        for (name, mut spec) in tweaked().into_iter().filter(|(n, _)| n.ends_with("all")) {
            // With zero-gamma the branches' weights get no gradient at the first step.
            spec.zero_init_last = false;
            let model = spec.init(&ad).unwrap();
            let x = Tensor::<4>::random([4, 3, 15, 15], Distribution::Normal(0.0, 1.0), &ad);
            let loss = model.forward(x).powi_scalar(2).mean();
            let grads = loss.backward();
            let bl = &model.big_little[0];
            let sk = |b: &ResBlock| b.sk.as_ref().unwrap().expand.weight.val();
            for (part, w) in [
                ("stem", model.stem[0].conv.weight.val()),
                ("big", sk(&bl.big[0])),
                ("little", sk(&bl.little[0])),
                ("little_e", bl.little_e.conv.weight.val()),
                ("last stage", sk(&model.blocks[1])),
            ] {
                let g = values(
                    w.grad(&grads)
                        .unwrap_or_else(|| panic!("{name}: no gradient for {part}")),
                );
                assert!(g.iter().all(|v| v.is_finite()), "{name} {part}");
                assert!(g.iter().any(|v| *v != 0.0), "{name} {part}: zero gradient");
            }
        }
    }

    #[test]
    fn tweak_settings_are_validated_and_default_off() {
        // An old spec without the new fields still parses, with every tweak off.
        let old = r#"{"block":"basic","layers":[2,2],"base_width":8,"deep_stem":false,"avg_down":false,
            "small_input":true,"zero_init_last":true,"drop_path_rate":0.0,"in_channels":1,
            "num_classes":10,"resolution":28}"#;
        let spec: ResNetSpec = serde_json::from_str(old).unwrap();
        assert!(!spec.selective_kernel && !spec.anti_alias && spec.big_little.is_none() && spec.drop_block.is_none());
        // ... and serialises without them, so older readers still parse it.
        assert!(!serde_json::to_string(&spec).unwrap().contains("anti_alias"));
        // The example of the README's "Assemble-ResNet tweaks" section.
        #[derive(Deserialize)]
        struct Config {
            model: crate::ModelSpec,
        }
        let readme = include_str!("../README.md");
        let example = readme
            .split("```toml\n")
            .find_map(|block| block.split("```").next().filter(|b| b.contains("selective_kernel")))
            .unwrap();
        let toml_spec = toml::from_str::<Config>(example).unwrap().model;
        let crate::ModelSpec::ResNet(r) = &toml_spec else {
            panic!()
        };
        assert_eq!(r.drop_block.as_ref().unwrap().stages, 2);
        assert_eq!(r.big_little.as_ref().unwrap().beta, 4);
        assert!(r.selective_kernel && r.anti_alias && r.zero_init_last);
        r.validate().unwrap();
        let err = |f: fn(&mut ResNetSpec)| {
            let mut s = small(BlockKind::Basic, 1);
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(err(|s| s.big_little = Some(BigLittleSpec { alpha: 3, beta: 4 })).contains("big_little.alpha"));
        assert!(
            err(|s| {
                s.big_little = Some(BigLittleSpec::default());
                s.layers = vec![1, 2];
            })
            .contains("big_little")
        );
        assert!(
            err(|s| s.drop_block = Some(DropBlockSpec {
                drop_prob: 1.0,
                block_size: 3,
                stages: 1,
                ramp: true
            }))
            .contains("drop_block.drop_prob")
        );
        assert!(
            err(|s| s.drop_block = Some(DropBlockSpec {
                drop_prob: 0.1,
                block_size: 0,
                stages: 1,
                ramp: true
            }))
            .contains("drop_block.block_size")
        );
        assert!(
            err(|s| s.drop_block = Some(DropBlockSpec {
                drop_prob: 0.1,
                block_size: 3,
                stages: 4,
                ramp: true
            }))
            .contains("drop_block.stages")
        );
        assert!(
            err(|s| {
                s.anti_alias = true;
                s.resolution = 2;
            })
            .contains("anti_alias")
        );
    }

    #[test]
    fn unknown_depth_names_the_known_ones() {
        let err = ResNetSpec::named("resnet42", 10).unwrap_err().to_string();
        assert!(err.contains("resnet42") && err.contains("resnet152"), "{err}");
    }
}
