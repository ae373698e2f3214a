//! The Assemble-ResNet network tweaks (Lee et al. 2020, clovaai/assembled-cnn) that are new
//! modules rather than options of existing ones: selective-kernel convolutions, blur pooling
//! (anti-aliased downsampling), DropBlock and the Big-Little stage.
//!
//! They live here, apart from `resnet`, so that the plain ResNet stays short and readable;
//! `resnet` switches them on from [`crate::resnet::ResNetSpec`] and `export` writes each with
//! standard ONNX operators only. Where a module differs from the reference implementation the
//! doc comment says so.

use burn::module::{Flag, Module, Param};
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::layers::{Activation, BnSettings, ConvBnAct, ConvSpec};
use crate::resnet::ResBlock;

/// Lower bound of the selective-kernel attention's bottleneck width (`L` in the SK paper).
pub const SK_MIN_ATTENTION: usize = 32;
/// Reduction ratio of the selective-kernel attention (`r` in the SK paper).
pub const SK_REDUCTION: usize = 2;

/// Width of the attention bottleneck of a selective-kernel unit with `width` output channels:
/// `max(width / r, L)`, as the reference computes it.
pub fn sk_attention_width(width: usize) -> usize {
    (width / SK_REDUCTION).max(SK_MIN_ATTENTION)
}

/// Trainable parameters of a [`SelectiveKernel`] unit from `in_ch` to `width` channels.
pub fn sk_param_count(in_ch: usize, width: usize) -> usize {
    let d = sk_attention_width(width);
    // 3x3 conv to both branches + BN, 1x1 squeeze + BN, 1x1 expand (no bias).
    9 * in_ch * 2 * width + 2 * 2 * width + width * d + 2 * d + d * 2 * width
}

/// Selective kernel convolution (Li et al. 2019) in Assemble-ResNet's form: one 3x3
/// convolution with doubled output channels gives two `width`-channel branches (where the SK
/// paper uses a 3x3 and a dilated 3x3 / 5x5 branch), after BatchNorm and ReLU; their sum is
/// pooled globally, squeezed by a 1x1 convolution (BatchNorm, ReLU) to
/// [`sk_attention_width`] channels and expanded by a 1x1 convolution to one logit per branch
/// and channel. A softmax over the two branches weights them, and the weighted sum is the
/// output.
///
/// As in the reference (`network_tweaks/selective_kernel.py`), the squeeze has BatchNorm and
/// no bias and the expand has neither.
#[derive(Module, Debug)]
pub struct SelectiveKernel {
    /// 3x3 convolution to `2 * width` channels (both branches), BatchNorm, ReLU.
    pub conv: ConvBnAct,
    /// The attention's 1x1 squeeze (`width -> d`), BatchNorm, ReLU.
    pub squeeze: ConvBnAct,
    /// The attention's 1x1 expansion (`d -> 2 * width`), no bias.
    pub expand: Conv2d,
    /// Output channels (channels of one branch).
    pub width: usize,
}

impl SelectiveKernel {
    /// A unit from `in_ch` to `width` channels whose 3x3 convolution has stride `stride`.
    pub fn new(in_ch: usize, width: usize, stride: usize, bn: BnSettings, device: &Device) -> Self {
        let d = sk_attention_width(width);
        let std = (2.0 / (2 * width) as f64).sqrt();
        Self {
            conv: ConvBnAct::new(ConvSpec::new(in_ch, 2 * width, 3, stride), Activation::Relu, bn, device),
            squeeze: ConvBnAct::new(ConvSpec::new(width, d, 1, 1), Activation::Relu, bn, device),
            expand: Conv2dConfig::new([d, 2 * width], [1, 1])
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            width,
        }
    }

    /// The two branches `[batch, 2, width, h, w]` and their attention weights
    /// `[batch, 2, width, 1, 1]` (a softmax over dimension 1).
    pub fn branches_and_attention(&self, x: Tensor<4>) -> (Tensor<5>, Tensor<5>) {
        let feats = self.conv.forward(x);
        let [n, _, h, w] = feats.dims();
        let c = self.width;
        let branches = feats.reshape([n, 2, c, h, w]);
        let fused = branches.clone().sum_dim(1).reshape([n, c, h, w]);
        let pooled = fused.mean_dim(3).mean_dim(2);
        let logits = self.expand.forward(self.squeeze.forward(pooled));
        let attention = softmax(logits.reshape([n, 2, c, 1, 1]), 1);
        (branches, attention)
    }

    /// The attention-weighted sum of the branches, `[batch, width, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (branches, attention) = self.branches_and_attention(x);
        let [n, _, c, h, w] = branches.dims();
        (branches * attention).sum_dim(1).reshape([n, c, h, w])
    }
}

/// Taps of the blur filter: the binomial `[1, 2, 1]` (filter size 3, as Assemble-ResNet's
/// `anti_alias_filter_size=3`).
pub const BLUR_TAPS: [f32; 3] = [1.0, 2.0, 1.0];

/// The normalised 3x3 blur kernel, row-major.
pub fn blur_kernel() -> [f32; 9] {
    let sum: f32 = BLUR_TAPS.iter().sum::<f32>().powi(2);
    let mut k = [0.0f32; 9];
    for (i, a) in BLUR_TAPS.iter().enumerate() {
        for (j, b) in BLUR_TAPS.iter().enumerate() {
            k[i * 3 + j] = a * b / sum;
        }
    }
    k
}

/// Anti-aliased downsampling (Zhang 2019, adobe/antialiased-cnns `BlurPool`): reflection
/// padding by one pixel, then a fixed depthwise 3x3 binomial blur with stride `stride`. It has
/// no trainable parameters. The output side is `ceil(side / stride)` for stride 2, the same
/// as the strided 3x3 convolution it follows.
///
/// Reflection needs at least two pixels per side; on a one-pixel feature map (which
/// `ResNetSpec::validate` rules out at the spec's resolution) burn's forward falls back to
/// edge padding, which gives the same result there as the blur of a constant.
#[derive(Module, Debug)]
pub struct BlurPool {
    /// Channels (the depthwise filter is repeated per channel).
    pub channels: usize,
    /// Stride of the blur.
    pub stride: usize,
}

impl BlurPool {
    /// A blur pool over `channels` channels with stride `stride`.
    pub fn new(channels: usize, stride: usize) -> Self {
        Self { channels, stride }
    }

    /// The depthwise kernel `[channels, 1, 3, 3]` as a flat vector.
    pub fn weight(&self) -> Vec<f32> {
        let k = blur_kernel();
        (0..self.channels).flat_map(|_| k).collect()
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        let mode = if h >= 2 && w >= 2 {
            PadMode::Reflect
        } else {
            PadMode::Edge
        };
        let padded = x.pad((1, 1, 1, 1), mode);
        let device = padded.device();
        let weight = Tensor::<4>::from_data(TensorData::new(self.weight(), [c, 1, 3, 3]), &device);
        let s = self.stride.max(1);
        conv2d(padded, weight, None, ConvOptions::new([s, s], [0, 0], [1, 1], c))
    }
}

/// DropBlock settings (Ghiasi et al. 2018) of a ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropBlockSpec {
    /// Fraction of units dropped in the last stage (`1 - keep_prob`). Earlier DropBlock stages get
    /// a quarter of that, as the reference's `gamma_scale = 0.25` for stage 4. With `ramp`, the
    /// rate is reached at the end of training.
    pub drop_prob: f64,
    /// Raise the rate linearly from 0 to `drop_prob` over the training steps, as the paper and
    /// the reference (`keep_prob_decay`) do; `false` keeps it fixed from the first step.
    #[serde(default = "DropBlockSpec::default_ramp")]
    pub ramp: bool,
    /// Side of the dropped squares (7 in the paper); clamped to the feature map.
    #[serde(default = "DropBlockSpec::default_block_size")]
    pub block_size: usize,
    /// How many of the last stages use DropBlock (2 in the paper and in Assemble-ResNet).
    #[serde(default = "DropBlockSpec::default_stages")]
    pub stages: usize,
}

impl DropBlockSpec {
    fn default_block_size() -> usize {
        7
    }

    fn default_stages() -> usize {
        2
    }

    fn default_ramp() -> bool {
        true
    }
}

/// DropBlock (Ghiasi et al. 2018): in training, zeroes contiguous `block_size` x `block_size`
/// squares of each channel so that about `drop_prob` of the units are dropped, and rescales
/// the rest by `units / kept units`; at evaluation (and in ONNX export) it is the identity.
/// Training is detected as in [`crate::layers::DropPath`]: an autodiff device and a module not
/// switched off with [`Module::valid`].
///
/// Block centres are sampled with probability
/// `gamma = drop_prob / block^2 * (h * w) / ((h - block + 1) * (w - block + 1))` on the
/// positions where a whole block fits, as in the paper and the reference; the block side is
/// clamped to the feature map so small inputs work.
#[derive(Module, Debug)]
pub struct DropBlock {
    /// Target fraction of dropped units.
    pub drop_prob: f64,
    /// Side of the dropped squares before clamping.
    pub block_size: usize,
    /// Whether training behaviour is on.
    pub training: Param<Flag>,
}

impl DropBlock {
    /// A DropBlock with the given rate and block side.
    pub fn new(drop_prob: f64, block_size: usize) -> Self {
        Self {
            drop_prob,
            block_size,
            training: Param::from_bool(true),
        }
    }

    /// The same module with another rate (for a linear ramp of the rate over training).
    pub fn with_drop_prob(mut self, drop_prob: f64) -> Self {
        self.drop_prob = drop_prob;
        self
    }

    /// The block side used on an `h` x `w` feature map.
    pub fn effective_block(&self, h: usize, w: usize) -> usize {
        self.block_size.max(1).min(h).min(w).max(1)
    }

    /// The seed probability `gamma` on an `h` x `w` feature map.
    pub fn gamma(&self, h: usize, w: usize) -> f64 {
        let b = self.effective_block(h, w);
        let valid = ((h - b + 1) * (w - b + 1)) as f64;
        (self.drop_prob / (b * b) as f64 * (h * w) as f64 / valid).clamp(0.0, 1.0)
    }

    /// A keep mask (1 kept, 0 dropped) of shape `dims`, sampled as in training.
    pub fn keep_mask(&self, dims: [usize; 4], device: &Device) -> Tensor<4> {
        let [n, c, h, w] = dims;
        let b = self.effective_block(h, w);
        let seeds = Tensor::<4>::random(
            [n, c, h - b + 1, w - b + 1],
            Distribution::Bernoulli(self.gamma(h, w)),
            device,
        );
        // A seed at (i, j) drops [i, i + b) x [j, j + b): pad by b - 1 on every side and take
        // the maximum over b x b windows.
        let padded = seeds.pad((b - 1, b - 1, b - 1, b - 1), PadMode::Constant(0.0));
        let mut window = MaxPoolOptions::new([b, b]);
        window.stride = [1, 1];
        let dropped = max_pool2d(padded, window);
        dropped.neg().add_scalar(1.0)
    }

    /// Forward pass: the identity unless training with `drop_prob > 0`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.drop_prob <= 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let dims = x.dims();
        let keep = self.keep_mask(dims, &x.device());
        let units = dims.iter().product::<usize>() as f64;
        let scale = keep.clone().sum().add_scalar(1e-6).recip().mul_scalar(units);
        x * keep * scale.reshape([1, 1, 1, 1])
    }
}

/// Big-Little settings (Chen et al. 2019, bL-Net) of a ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigLittleSpec {
    /// Width divisor of the little branch (bL-Net's alpha; 2 in bL-Net, 1 in Assemble-ResNet).
    #[serde(default = "BigLittleSpec::default_alpha")]
    pub alpha: usize,
    /// Depth divisor of the little branch (bL-Net's beta: `max(1, blocks / beta - 1)` blocks;
    /// 4 in bL-Net, 2 in Assemble-ResNet).
    #[serde(default = "BigLittleSpec::default_beta")]
    pub beta: usize,
}

impl BigLittleSpec {
    fn default_alpha() -> usize {
        2
    }

    fn default_beta() -> usize {
        4
    }

    /// Blocks of the little branch in a stage of `blocks` blocks.
    pub fn little_blocks(&self, blocks: usize) -> usize {
        (blocks / self.beta.max(1)).saturating_sub(1).max(1)
    }
}

impl Default for BigLittleSpec {
    fn default() -> Self {
        Self {
            alpha: Self::default_alpha(),
            beta: Self::default_beta(),
        }
    }
}

/// A Big-Little stage (bL-Net's `bLModule`): the big branch (`blocks - 1` blocks, the first
/// with stride 2, no ReLU after the last) at half the resolution, the little branch
/// (`max(1, blocks / beta - 1)` blocks at `1 / alpha` of the width) at full resolution, a 1x1
/// convolution + BatchNorm bringing the little branch to the stage's channels, the big branch
/// upsampled by 2 (nearest) and cropped to the little one's size, their sum and ReLU, and one
/// fusion block with the stage's stride.
///
/// Differences from bL-Net: the strided shortcut is ResNet-D's (or the plain strided 1x1) and
/// not a 3x3 average pool, the upsampling repeats pixels and crops (bL-Net's `interpolate`
/// resizes; both agree on even sizes) and the bL-Net stem module is not used: the stem stays
/// ResNet's.
#[derive(Module, Debug)]
pub struct BigLittleStage {
    /// The big branch, in order.
    pub big: Vec<ResBlock>,
    /// The little branch, in order.
    pub little: Vec<ResBlock>,
    /// 1x1 convolution + BatchNorm from the little branch's channels to the stage's.
    pub little_e: ConvBnAct,
    /// The block after the merge.
    pub fusion: ResBlock,
}

impl BigLittleStage {
    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut big = x.clone();
        for block in &self.big {
            big = block.forward(big);
        }
        let mut little = x;
        for block in &self.little {
            little = block.forward(little);
        }
        let little = self.little_e.forward(little);
        let [_, _, h, w] = little.dims();
        let merged = Activation::Relu.forward(upsample2_crop(big, h, w) + little);
        self.fusion.forward(merged)
    }
}

/// Nearest-neighbour upsampling by 2 (every pixel repeated twice in each direction), cropped to
/// `h` x `w` (top-left kept).
pub fn upsample2_crop(x: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let [n, c, xh, xw] = x.dims();
    let up = x
        .reshape([n, c, xh, 1, xw, 1])
        .repeat_dim(3, 2)
        .repeat_dim(5, 2)
        .reshape([n, c, 2 * xh, 2 * xw]);
    up.narrow(2, 0, h.min(2 * xh)).narrow(3, 0, w.min(2 * xw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn blur_pool_keeps_a_constant_image_constant() {
        let device = crate::default_device();
        for (side, stride) in [(7usize, 2usize), (8, 2), (5, 1), (2, 2)] {
            let pool = BlurPool::new(3, stride);
            let x = Tensor::<4>::ones([2, 3, side, side], &device).mul_scalar(2.5);
            let y = pool.forward(x);
            let [_, c, h, w] = y.dims();
            assert_eq!((c, h, w), (3, side.div_ceil(stride), side.div_ceil(stride)));
            for v in values(y) {
                assert!((v - 2.5).abs() < 1e-6, "{v}");
            }
        }
    }

    #[test]
    fn blur_pool_smooths_a_checkerboard() {
        // Stride-2 subsampling of a checkerboard is constant 1 (aliasing); the blur gives the
        // mean 0.5 away from the border.
        let device = crate::default_device();
        let data: Vec<f32> = (0..64).map(|i| ((i / 8 + i % 8) % 2 == 0) as u8 as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(data, [1, 1, 8, 8]), &device);
        let y = values(BlurPool::new(1, 2).forward(x));
        assert_eq!(y.len(), 16);
        assert!((y[5] - 0.5).abs() < 1e-6, "{y:?}");
    }

    #[test]
    fn sk_attention_sums_to_one_over_branches() {
        let device = crate::default_device();
        let sk = SelectiveKernel::new(3, 5, 2, BnSettings::TORCH, &device);
        let x = Tensor::<4>::random([2, 3, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let (branches, attention) = sk.branches_and_attention(x.clone());
        assert_eq!(branches.dims(), [2, 2, 5, 4, 4]);
        assert_eq!(attention.dims(), [2, 2, 5, 1, 1]);
        for s in values(attention.clone().sum_dim(1)) {
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
        // The attention is not degenerate: both branches get weight.
        assert!(values(attention).iter().all(|&a| a > 0.0 && a < 1.0));
        assert_eq!(sk.forward(x).dims(), [2, 5, 4, 4]);
        assert_eq!(sk.num_params() - 2 * (10 + 32), sk_param_count(3, 5));
    }

    fn training_drop_block(p: f64, block: usize) -> (DropBlock, Device) {
        (DropBlock::new(p, block), crate::default_device().autodiff())
    }

    #[test]
    fn drop_block_is_identity_in_eval() {
        let device = crate::default_device();
        let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Normal(0.0, 1.0), &device);
        // Not an autodiff device: evaluation.
        let out = DropBlock::new(0.3, 3).forward(x.clone());
        assert_eq!(values(out), values(x.clone()));
        // Autodiff device but switched to evaluation with `valid`-style flag off.
        let (mut db, ad) = training_drop_block(0.3, 3);
        db.training = Param::from_bool(false);
        let xa = Tensor::<4>::from_data(x.clone().into_data(), &ad);
        assert_eq!(values(db.forward(xa.clone())), values(x));
        // ... and on in training: something is dropped.
        let (db, _) = training_drop_block(0.3, 3);
        let y = values(db.forward(xa));
        assert!(y.iter().filter(|v| **v == 0.0).count() > 0);
    }

    /// Exact expected fraction of dropped units: a unit is dropped unless none of the seeds
    /// whose block covers it fires.
    fn expected_drop_fraction(gamma: f64, h: usize, w: usize, b: usize) -> f64 {
        let cover = |p: usize, side: usize| {
            let lo = p.saturating_sub(b - 1);
            let hi = p.min(side - b);
            (hi + 1 - lo) as f64
        };
        let mut total = 0.0;
        for y in 0..h {
            for x in 0..w {
                total += 1.0 - (1.0 - gamma).powf(cover(y, h) * cover(x, w));
            }
        }
        total / (h * w) as f64
    }

    #[test]
    fn drop_block_drops_contiguous_blocks_at_the_expected_rate() {
        let (db, device) = training_drop_block(0.15, 3);
        let (n, c, h, w) = (16, 8, 12, 12);
        let keep = values(db.keep_mask([n, c, h, w], &device));
        let dropped = keep.iter().filter(|v| **v == 0.0).count();
        assert!(keep.iter().all(|v| *v == 0.0 || *v == 1.0));
        let rate = dropped as f64 / keep.len() as f64;
        let expected = expected_drop_fraction(db.gamma(h, w), h, w, 3);
        // Close to the target (overlaps make it a little lower) and to the exact expectation.
        assert!((expected - 0.15).abs() < 0.02, "{expected}");
        // Units of one block are dropped together: about 3x the standard deviation of
        // independent units.
        let sd = (expected * (1.0 - expected) / keep.len() as f64).sqrt() * 3.0;
        println!("DropBlock: dropped {rate:.4}, expected {expected:.4}, target 0.15");
        assert!((rate - expected).abs() < 4.0 * sd, "rate {rate}, expected {expected}");
        // Every dropped unit lies in a fully dropped 3x3 square inside the map.
        for plane in keep.chunks(h * w) {
            for y in 0..h {
                for x in 0..w {
                    if plane[y * w + x] != 0.0 {
                        continue;
                    }
                    let in_block = (y.saturating_sub(2)..=y.min(h - 3)).any(|y0| {
                        (x.saturating_sub(2)..=x.min(w - 3))
                            .any(|x0| (0..9).all(|k| plane[(y0 + k / 3) * w + x0 + k % 3] == 0.0))
                    });
                    assert!(in_block, "isolated drop at ({y}, {x})");
                }
            }
        }
        // Forward: dropped units are zero, kept ones scaled by units / kept units.
        let x = Tensor::<4>::ones([n, c, h, w], &device);
        let y = values(db.forward(x));
        let kept = y.iter().filter(|v| **v != 0.0).count();
        let scale = y.len() as f32 / kept as f32;
        assert!(y.iter().all(|v| *v == 0.0 || (v - scale).abs() < 1e-4 * scale));
    }

    #[test]
    fn drop_block_clamps_the_block_to_small_maps() {
        let (db, device) = training_drop_block(0.2, 7);
        assert_eq!(db.effective_block(3, 5), 3);
        let y = db.forward(Tensor::<4>::ones([4, 2, 3, 5], &device));
        assert_eq!(y.dims(), [4, 2, 3, 5]);
        let y = db.forward(Tensor::<4>::ones([4, 2, 1, 1], &device));
        assert_eq!(y.dims(), [4, 2, 1, 1]);
    }

    #[test]
    fn upsampling_repeats_and_crops() {
        let device = crate::default_device();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]), &device);
        let y = upsample2_crop(x, 3, 4);
        assert_eq!(y.dims(), [1, 1, 3, 4]);
        assert_eq!(
            values(y),
            vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
        );
    }
}
