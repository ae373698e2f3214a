//! Building blocks shared by the model families: convolution + BatchNorm (+ activation),
//! squeeze-excite and stochastic depth.
//!
//! Both EfficientNet and ResNet are stacks of "conv, BatchNorm, activation"; keeping that unit
//! in one place keeps the families short, and gives the ONNX exporter one place where
//! BatchNorm is folded into the convolution before it.

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid, silu};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// An elementwise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x * sigmoid(x)` (SiLU), EfficientNet's activation.
    #[default]
    Swish,
    /// `max(x, 0)`, ResNet's.
    Relu,
    /// `min(max(x, 0), 6)`, EfficientNet-Lite's (quantisation friendly).
    Relu6,
    /// No activation.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Swish => silu(x),
            Activation::Relu => relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Identity => x,
        }
    }
}

/// BatchNorm hyper-parameters. TensorFlow's momentum 0.99 is PyTorch's (and burn's) 0.01.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BnSettings {
    /// Weight of the new batch statistic in the running average (PyTorch convention).
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl BnSettings {
    /// TensorFlow's EfficientNet settings: decay 0.99, epsilon 1e-3.
    pub const TF: BnSettings = BnSettings {
        momentum: 0.01,
        epsilon: 1e-3,
    };
    /// PyTorch's defaults, used by ResNet: momentum 0.1, epsilon 1e-5.
    pub const TORCH: BnSettings = BnSettings {
        momentum: 0.1,
        epsilon: 1e-5,
    };
}

/// How a [`ConvBnAct`] is shaped.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Zero padding (top, left, bottom, right); symmetric `kernel / 2` unless set by
    /// [`ConvSpec::tf_same`].
    pub pad: [usize; 4],
}

impl ConvSpec {
    /// A dense convolution.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups: 1,
            pad: [kernel / 2; 4],
        }
    }

    /// A depthwise convolution (one filter per channel).
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            in_channels: channels,
            out_channels: channels,
            kernel,
            stride,
            groups: channels,
            pad: [kernel / 2; 4],
        }
    }

    /// TensorFlow's "SAME" padding for an input `size` pixels square: the total padding that
    /// makes the output `ceil(size / stride)`, with the odd pixel at the bottom and right. It
    /// differs from symmetric padding for strided convolutions on even sizes, which is what
    /// weights trained in TensorFlow expect.
    pub fn tf_same(mut self, size: usize) -> Self {
        let out = size.div_ceil(self.stride);
        let total = ((out.saturating_sub(1)) * self.stride + self.kernel).saturating_sub(size);
        let (before, after) = (total / 2, total - total / 2);
        self.pad = [before, before, after, after];
        self
    }

    /// Output side for an input `size` pixels square.
    pub fn output_size(&self, size: usize) -> usize {
        (size + self.pad[0] + self.pad[2]).saturating_sub(self.kernel) / self.stride + 1
    }
}

/// Convolution without bias, BatchNorm, then an activation. Padding is symmetric
/// (`kernel / 2`), as in timm's PyTorch-native models, or TensorFlow's "SAME".
#[derive(Module, Debug)]
pub struct ConvBnAct {
    /// The convolution (no bias: the BatchNorm shift replaces it).
    pub conv: Conv2d,
    /// The normalisation after it.
    pub bn: BatchNorm,
    /// Applied after the BatchNorm.
    #[module(skip)]
    pub act: Activation,
}

impl ConvBnAct {
    /// A new unit with He (fan-out) initialisation, as timm initialises convolutions.
    pub fn new(spec: ConvSpec, act: Activation, bn: BnSettings, device: &Device) -> Self {
        let [top, left, bottom, right] = spec.pad;
        let fan_out = spec.kernel * spec.kernel * spec.out_channels / spec.groups.max(1);
        let std = (2.0 / fan_out.max(1) as f64).sqrt();
        let conv = Conv2dConfig::new([spec.in_channels, spec.out_channels], [spec.kernel, spec.kernel])
            .with_stride([spec.stride, spec.stride])
            .with_groups(spec.groups)
            .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
            .with_bias(false)
            .with_initializer(Initializer::Normal { mean: 0.0, std })
            .init(device);
        let bn = BatchNormConfig::new(spec.out_channels)
            .with_momentum(bn.momentum)
            .with_epsilon(bn.epsilon)
            .init(device);
        Self { conv, bn, act }
    }

    /// Sets the BatchNorm scale to zero, so that a residual branch ending here starts as the
    /// identity ("zero-gamma" initialisation).
    pub fn zero_gamma(mut self) -> Self {
        self.bn.gamma = self.bn.gamma.map(|g| g.zeros_like());
        self
    }

    /// conv -> bn -> act.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act.forward(self.bn.forward(self.conv.forward(x)))
    }
}

/// Squeeze-and-excitation (Hu et al. 2018): global average pool, a 1x1 reduce convolution, the
/// activation, a 1x1 expand convolution and a sigmoid gate multiplied into the input.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// `channels -> reduced`, with bias.
    pub conv_reduce: Conv2d,
    /// `reduced -> channels`, with bias.
    pub conv_expand: Conv2d,
    /// Between the two convolutions.
    #[module(skip)]
    pub act: Activation,
}

impl SqueezeExcite {
    /// A gate over `channels` with a `reduced`-wide bottleneck.
    pub fn new(channels: usize, reduced: usize, act: Activation, device: &Device) -> Self {
        let conv = |i, o| Conv2dConfig::new([i, o], [1, 1]).with_bias(true).init(device);
        Self {
            conv_reduce: conv(channels, reduced),
            conv_expand: conv(reduced, channels),
            act,
        }
    }

    /// `x * sigmoid(expand(act(reduce(mean(x)))))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = x.clone().mean_dim(3).mean_dim(2);
        let s = self.conv_expand.forward(self.act.forward(self.conv_reduce.forward(s)));
        x * sigmoid(s)
    }
}

/// Stochastic depth (Huang et al. 2016): in training, each sample's residual branch is dropped
/// with probability `drop_prob` and kept branches are scaled by `1 / (1 - drop_prob)`; at
/// evaluation the branch always runs. Training is when the tensor is on an autodiff device
/// and the module has not been switched off with [`Module::valid`] or `freeze`.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch for one sample.
    pub drop_prob: f64,
    /// Whether training behaviour is on.
    pub training: Param<Flag>,
}

impl DropPath {
    /// A drop-path with the given probability (0 disables it).
    pub fn new(drop_prob: f64) -> Self {
        Self {
            drop_prob,
            training: Param::from_bool(true),
        }
    }

    /// Masks whole samples of the residual branch `x` (`[batch, ...]`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.drop_prob <= 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.drop_prob;
        let [n, _, _, _] = x.dims();
        let mask = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}

/// Global average pooling to `[batch, channels]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([n, c])
}
