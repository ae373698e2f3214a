//! ONNX export of trained classifiers with Hardy's own writer (burn cannot export ONNX).
//!
//! BatchNorm is folded into the convolution before it, the batch dimension is symbolic, and
//! the file's metadata_props carry the engine's model config (labels and preprocessing) and
//! the architecture, so `hardy classify` and the server use the file with nothing beside it.

use std::collections::HashMap;
use std::path::Path;

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;
use engine::config::{METADATA_KEY, ModelConfig};
use engine::onnx::{Attr, Dim, ElemType, GraphBuilder, ModelProto, write_model};
use engine::preprocess::ColorMode;

use crate::TrainerError;
use crate::assemble::{BigLittleStage, BlurPool, SelectiveKernel};
use crate::efficientnet::{EfficientNet, MbConv};
use crate::layers::{Activation, ConvBnAct, SqueezeExcite};
use crate::model::{Classifier, ModelSpec};
use crate::resnet::{BranchUnit, ResBlock, ResNet};

/// metadata_props key holding the architecture ([`ModelSpec`] as JSON).
pub const SPEC_KEY: &str = "hardy.spec";

/// What to write besides the weights.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Default-domain opset (13 to 21).
    pub opset: i64,
    /// The engine config embedded in the file (labels, preprocessing, names).
    pub config: ModelConfig,
    /// A free-text description (training run, data, accuracy).
    pub doc: String,
}

impl ExportOptions {
    /// Opset 17 and the given config.
    pub fn new(config: ModelConfig) -> Self {
        Self {
            opset: 17,
            config,
            doc: String::new(),
        }
    }
}

/// The graph input's name.
pub const INPUT_NAME: &str = "input";
/// The graph output's name.
pub const OUTPUT_NAME: &str = "logits";

/// Builds the ONNX model of `model` (an eval-mode forward: BatchNorm uses running statistics,
/// dropout and stochastic depth are off).
pub fn to_onnx(model: &Classifier, spec: &ModelSpec, options: &ExportOptions) -> Result<ModelProto, TrainerError> {
    let mut config = options.config.clone();
    config.input_name = Some(INPUT_NAME.to_string());
    config.output_name = Some(OUTPUT_NAME.to_string());
    // The input size and colour are facts of the network, not options.
    config.preprocess.resolution = spec.resolution();
    config.preprocess.crop = None;
    config.preprocess.color = if spec.in_channels() == 1 {
        ColorMode::Gray
    } else {
        ColorMode::Rgb
    };
    let channels = spec.in_channels();
    if config.preprocess.mean.len() != channels || config.preprocess.std.len() != channels {
        return Err(TrainerError::shape(
            "values of the export's preprocess.mean and preprocess.std",
            format!("{channels} each for a {channels}-channel model"),
            format!("{} and {}", config.preprocess.mean.len(), config.preprocess.std.len()),
        ));
    }
    let labels = config.labels.len();
    if labels != 0 && labels != spec.num_classes() {
        return Err(TrainerError::shape(
            "labels given for the export",
            format!("one per class of a model with {} classes", spec.num_classes()),
            format!("{labels} labels"),
        ));
    }
    let res = i64::from(spec.resolution());
    let mut g = Graph::new(GraphBuilder::new("hardy"));
    let input = g.b.input(
        INPUT_NAME,
        ElemType::Float32,
        &Dim::batched(&[spec.in_channels() as i64, res, res]),
    );
    let logits = match model {
        Classifier::EfficientNet(m) => g.efficientnet(m, &input)?,
        Classifier::ResNet(m) => g.resnet(m, &input)?,
    };
    g.b.node("Identity", &[&logits], &[OUTPUT_NAME], vec![]);
    g.b.output(
        OUTPUT_NAME,
        ElemType::Float32,
        &Dim::batched(&[spec.num_classes() as i64]),
    );
    let spec_json = serde_json::to_string(spec).map_err(|e| TrainerError::serialize("the model spec", e))?;
    g.b.metadata(METADATA_KEY, &config.to_toml());
    g.b.metadata(SPEC_KEY, &spec_json);
    g.b.doc_string(if options.doc.is_empty() {
        spec.describe()
    } else {
        options.doc.clone()
    });
    Ok(g.b.build(options.opset)?)
}

/// Writes `model` to `path` as ONNX (atomically), creating its directory.
pub fn export(model: &Classifier, spec: &ModelSpec, options: &ExportOptions, path: &Path) -> Result<(), TrainerError> {
    let proto = to_onnx(model, spec, options)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TrainerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_model(&proto, path)?;
    Ok(())
}

fn read<const D: usize>(t: Tensor<D>, name: &str) -> Result<Vec<f32>, TrainerError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| TrainerError::Tensor {
            name: name.to_string(),
            reason: format!("{e:?}"),
        })
}

fn dims_i64(dims: &[usize]) -> Vec<i64> {
    dims.iter().map(|&d| d as i64).collect()
}

/// The graph being written, with shared constants.
struct Graph {
    b: GraphBuilder,
    relu6: Option<(String, String)>,
    int_consts: HashMap<Vec<i64>, String>,
}

impl Graph {
    fn new(b: GraphBuilder) -> Self {
        Self {
            b,
            relu6: None,
            int_consts: HashMap::new(),
        }
    }

    fn activation(&mut self, act: Activation, x: &str) -> String {
        match act {
            Activation::Identity => x.to_string(),
            Activation::Relu => self.b.op("Relu", &[x], vec![]),
            Activation::Swish => {
                let s = self.b.op("Sigmoid", &[x], vec![]);
                self.b.op("Mul", &[x, s.as_str()], vec![])
            }
            Activation::Relu6 => {
                let (lo, hi) = match &self.relu6 {
                    Some(bounds) => bounds.clone(),
                    None => {
                        let lo = self.b.initializer_f32("relu6_min", &[], vec![0.0]);
                        let hi = self.b.initializer_f32("relu6_max", &[], vec![6.0]);
                        self.relu6 = Some((lo.clone(), hi.clone()));
                        (lo, hi)
                    }
                };
                self.b.op("Clip", &[x, lo.as_str(), hi.as_str()], vec![])
            }
        }
    }

    /// A convolution with explicit weights and bias.
    fn conv(&mut self, name: &str, x: &str, conv: &Conv2d, weight: Vec<f32>, bias: Vec<f32>) -> String {
        let dims = conv.weight.dims();
        let w = self
            .b
            .initializer_f32(&format!("{name}.weight"), &dims_i64(&dims), weight);
        let b = self.b.initializer_f32(&format!("{name}.bias"), &[dims[0] as i64], bias);
        let [kh, kw] = conv.kernel_size;
        let (ph, pw) = match conv.padding {
            burn::nn::PaddingConfig2d::Explicit(t, l, b, r) => ([t, b], [l, r]),
            burn::nn::PaddingConfig2d::Valid => ([0, 0], [0, 0]),
            burn::nn::PaddingConfig2d::Same => ([kh / 2, kh / 2], [kw / 2, kw / 2]),
        };
        self.b.op(
            "Conv",
            &[x, w.as_str(), b.as_str()],
            vec![
                Attr::ints("kernel_shape", &[kh as i64, kw as i64]),
                Attr::ints("strides", &dims_i64(&conv.stride)),
                Attr::ints("pads", &[ph[0] as i64, pw[0] as i64, ph[1] as i64, pw[1] as i64]),
                Attr::ints("dilations", &dims_i64(&conv.dilation)),
                Attr::int("group", conv.groups as i64),
            ],
        )
    }

    /// A convolution with its bias as it is.
    fn plain_conv(&mut self, name: &str, x: &str, conv: &Conv2d) -> Result<String, TrainerError> {
        let out = conv.weight.dims()[0];
        let weight = read(conv.weight.val(), name)?;
        let bias = match &conv.bias {
            Some(b) => read(b.val(), name)?,
            None => vec![0.0; out],
        };
        Ok(self.conv(name, x, conv, weight, bias))
    }

    /// Conv + BatchNorm folded into one Conv, then the activation.
    fn conv_bn_act(&mut self, name: &str, x: &str, unit: &ConvBnAct) -> Result<String, TrainerError> {
        let (weight, bias) = fold_batchnorm(&unit.conv, &unit.bn, name)?;
        let y = self.conv(name, x, &unit.conv, weight, bias);
        Ok(self.activation(unit.act, &y))
    }

    fn squeeze_excite(&mut self, name: &str, x: &str, se: &SqueezeExcite) -> Result<String, TrainerError> {
        let pooled = self.b.op("GlobalAveragePool", &[x], vec![]);
        let r = self.plain_conv(&format!("{name}.conv_reduce"), &pooled, &se.conv_reduce)?;
        let r = self.activation(se.act, &r);
        let e = self.plain_conv(&format!("{name}.conv_expand"), &r, &se.conv_expand)?;
        let gate = self.b.op("Sigmoid", &[e], vec![]);
        Ok(self.b.op("Mul", &[x, gate.as_str()], vec![]))
    }

    fn mbconv(&mut self, name: &str, x: &str, block: &MbConv) -> Result<String, TrainerError> {
        let mut h = x.to_string();
        if let Some(pw) = &block.conv_pw {
            h = self.conv_bn_act(&format!("{name}.conv_pw"), &h, pw)?;
        }
        h = self.conv_bn_act(&format!("{name}.conv_dw"), &h, &block.conv_dw)?;
        if let Some(se) = &block.se {
            h = self.squeeze_excite(&format!("{name}.se"), &h, se)?;
        }
        h = self.conv_bn_act(&format!("{name}.conv_pwl"), &h, &block.conv_pwl)?;
        Ok(if block.has_skip {
            self.b.op("Add", &[h.as_str(), x], vec![])
        } else {
            h
        })
    }

    fn linear_head(&mut self, name: &str, features: &str, linear: &Linear) -> Result<String, TrainerError> {
        let flat = self.b.op("Flatten", &[features], vec![Attr::int("axis", 1)]);
        let dims = linear.weight.dims();
        let w = read(linear.weight.val(), name)?;
        let w = self.b.initializer_f32(&format!("{name}.weight"), &dims_i64(&dims), w);
        let b = match &linear.bias {
            Some(b) => read(b.val(), name)?,
            None => vec![0.0; dims[1]],
        };
        let b = self.b.initializer_f32(&format!("{name}.bias"), &[dims[1] as i64], b);
        // burn stores Linear weights as [in, out]: no transpose.
        Ok(self.b.op("Gemm", &[flat.as_str(), w.as_str(), b.as_str()], vec![]))
    }

    fn efficientnet(&mut self, m: &EfficientNet, x: &str) -> Result<String, TrainerError> {
        let mut h = self.conv_bn_act("stem", x, &m.stem)?;
        for (i, block) in m.blocks.iter().enumerate() {
            h = self.mbconv(&format!("blocks.{i}"), &h, block)?;
        }
        h = self.conv_bn_act("head", &h, &m.head)?;
        let pooled = self.b.op("GlobalAveragePool", &[h], vec![]);
        self.linear_head("classifier", &pooled, &m.classifier)
    }

    /// Shared int64 constants (Reshape shapes, Slice bounds), one initializer per value.
    fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.int_consts.get(values) {
            return name.clone();
        }
        let name = format!("const_i64_{}", self.int_consts.len());
        let name = self.b.initializer_i64(&name, &[values.len() as i64], values.to_vec());
        self.int_consts.insert(values.to_vec(), name.clone());
        name
    }

    /// Channels `start..end` of an NCHW tensor.
    fn channels(&mut self, x: &str, start: usize, end: usize) -> String {
        let starts = self.ints(&[start as i64]);
        let ends = self.ints(&[end as i64]);
        let axes = self.ints(&[1]);
        self.b
            .op("Slice", &[x, starts.as_str(), ends.as_str(), axes.as_str()], vec![])
    }

    /// A selective-kernel unit: the doubled 3x3 convolution, the two halves, their sum pooled,
    /// squeeze and expand, a softmax over the branch axis of `[N, 2, C, 1]`, and the weighted
    /// sum of the halves.
    fn selective_kernel(&mut self, name: &str, x: &str, sk: &SelectiveKernel) -> Result<String, TrainerError> {
        let c = sk.width;
        let feats = self.conv_bn_act(&format!("{name}.conv"), x, &sk.conv)?;
        let f0 = self.channels(&feats, 0, c);
        let f1 = self.channels(&feats, c, 2 * c);
        let fused = self.b.op("Add", &[f0.as_str(), f1.as_str()], vec![]);
        let pooled = self.b.op("GlobalAveragePool", &[fused], vec![]);
        let z = self.conv_bn_act(&format!("{name}.squeeze"), &pooled, &sk.squeeze)?;
        let logits = self.plain_conv(&format!("{name}.expand"), &z, &sk.expand)?;
        let branch_shape = self.ints(&[0, 2, c as i64, 1]);
        let logits = self.b.op("Reshape", &[logits.as_str(), branch_shape.as_str()], vec![]);
        let weights = self.b.op("Softmax", &[logits], vec![Attr::int("axis", 1)]);
        let flat_shape = self.ints(&[0, 2 * c as i64, 1, 1]);
        let weights = self.b.op("Reshape", &[weights.as_str(), flat_shape.as_str()], vec![]);
        let a0 = self.channels(&weights, 0, c);
        let a1 = self.channels(&weights, c, 2 * c);
        let v0 = self.b.op("Mul", &[f0, a0], vec![]);
        let v1 = self.b.op("Mul", &[f1, a1], vec![]);
        Ok(self.b.op("Add", &[v0, v1], vec![]))
    }

    /// Blur pool: reflection Pad by one pixel and a depthwise Conv with the fixed binomial
    /// kernel.
    fn blur_pool(&mut self, name: &str, x: &str, blur: &BlurPool) -> String {
        let pads = self.ints(&[0, 0, 1, 1, 0, 0, 1, 1]);
        let padded = self
            .b
            .op("Pad", &[x, pads.as_str()], vec![Attr::string("mode", "reflect")]);
        let c = blur.channels as i64;
        let w = self
            .b
            .initializer_f32(&format!("{name}.weight"), &[c, 1, 3, 3], blur.weight());
        let s = blur.stride.max(1) as i64;
        self.b.op(
            "Conv",
            &[padded.as_str(), w.as_str()],
            vec![
                Attr::ints("kernel_shape", &[3, 3]),
                Attr::ints("strides", &[s, s]),
                Attr::ints("pads", &[0, 0, 0, 0]),
                Attr::int("group", c),
            ],
        )
    }

    fn resblock(&mut self, name: &str, x: &str, block: &ResBlock) -> Result<String, TrainerError> {
        // DropBlock and stochastic depth are identities at inference: nothing to write.
        let shortcut = match &block.downsample {
            Some(d) => {
                let mut s = x.to_string();
                if d.pool_stride > 1 {
                    let st = d.pool_stride as i64;
                    s = self.b.op(
                        "AveragePool",
                        &[s],
                        vec![
                            Attr::ints("kernel_shape", &[2, 2]),
                            Attr::ints("strides", &[st, st]),
                            Attr::int("ceil_mode", 1),
                            Attr::int("count_include_pad", 0),
                        ],
                    );
                }
                if let Some(blur) = &d.blur {
                    s = self.blur_pool(&format!("{name}.downsample.blur"), &s, blur);
                }
                self.conv_bn_act(&format!("{name}.downsample"), &s, &d.conv)?
            }
            None => x.to_string(),
        };
        let mut h = x.to_string();
        for unit in block.branch() {
            h = match unit {
                BranchUnit::Conv(i, c) => self.conv_bn_act(&format!("{name}.conv{}", i + 1), &h, c)?,
                BranchUnit::SelectiveKernel(sk) => self.selective_kernel(&format!("{name}.sk"), &h, sk)?,
                BranchUnit::Blur(b) => self.blur_pool(&format!("{name}.blur"), &h, b),
            };
        }
        let sum = self.b.op("Add", &[h, shortcut], vec![]);
        Ok(if block.relu_out {
            self.b.op("Relu", &[sum], vec![])
        } else {
            sum
        })
    }

    /// A Big-Little stage: both branches, the big one upsampled (Resize nearest, scale 2,
    /// asymmetric/floor: pixel repetition) and cropped to the little one's spatial shape
    /// (Shape + Slice), their sum, ReLU and the fusion block.
    fn big_little(&mut self, name: &str, x: &str, stage: &BigLittleStage) -> Result<String, TrainerError> {
        let mut big = x.to_string();
        for (i, block) in stage.big.iter().enumerate() {
            big = self.resblock(&format!("{name}.big.{i}"), &big, block)?;
        }
        let mut little = x.to_string();
        for (i, block) in stage.little.iter().enumerate() {
            little = self.resblock(&format!("{name}.little.{i}"), &little, block)?;
        }
        let little = self.conv_bn_act(&format!("{name}.little_e"), &little, &stage.little_e)?;
        let scales = self
            .b
            .initializer_f32(&format!("{name}.upsample_scales"), &[4], vec![1.0, 1.0, 2.0, 2.0]);
        let up = self.b.op(
            "Resize",
            &[big.as_str(), "", scales.as_str()],
            vec![
                Attr::string("mode", "nearest"),
                Attr::string("coordinate_transformation_mode", "asymmetric"),
                Attr::string("nearest_mode", "floor"),
            ],
        );
        let shape = self.b.op("Shape", &[little.as_str()], vec![]);
        let (two, four, zero) = (self.ints(&[2]), self.ints(&[4]), self.ints(&[0]));
        let hw = self.b.op(
            "Slice",
            &[shape.as_str(), two.as_str(), four.as_str(), zero.as_str()],
            vec![],
        );
        let origin = self.ints(&[0, 0]);
        let axes = self.ints(&[2, 3]);
        let cropped = self.b.op(
            "Slice",
            &[up.as_str(), origin.as_str(), hw.as_str(), axes.as_str()],
            vec![],
        );
        let sum = self.b.op("Add", &[cropped, little], vec![]);
        let merged = self.b.op("Relu", &[sum], vec![]);
        self.resblock(&format!("{name}.fusion"), &merged, &stage.fusion)
    }

    fn resnet(&mut self, m: &ResNet, x: &str) -> Result<String, TrainerError> {
        let mut h = x.to_string();
        for (i, unit) in m.stem.iter().enumerate() {
            h = self.conv_bn_act(&format!("stem.{i}"), &h, unit)?;
        }
        if m.stem_pool {
            h = self.b.op(
                "MaxPool",
                &[h],
                vec![
                    Attr::ints("kernel_shape", &[3, 3]),
                    Attr::ints("strides", &[2, 2]),
                    Attr::ints("pads", &[1, 1, 1, 1]),
                ],
            );
        }
        for (i, stage) in m.big_little.iter().enumerate() {
            h = self.big_little(&format!("big_little.{i}"), &h, stage)?;
        }
        for (i, block) in m.blocks.iter().enumerate() {
            h = self.resblock(&format!("blocks.{i}"), &h, block)?;
        }
        let pooled = self.b.op("GlobalAveragePool", &[h], vec![]);
        self.linear_head("fc", &pooled, &m.fc)
    }
}

/// Folds an eval-mode BatchNorm into the convolution before it:
/// `w' = w * gamma / sqrt(var + eps)` per output channel and
/// `b' = beta + (b - mean) * gamma / sqrt(var + eps)`.
pub fn fold_batchnorm(conv: &Conv2d, bn: &BatchNorm, name: &str) -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
    let dims = conv.weight.dims();
    let out = dims[0];
    let mut weight = read(conv.weight.val(), name)?;
    let gamma = read(bn.gamma.val(), name)?;
    let beta = read(bn.beta.val(), name)?;
    let mean = read(bn.running_mean.value(), name)?;
    let var = read(bn.running_var.value(), name)?;
    let conv_bias = match &conv.bias {
        Some(b) => read(b.val(), name)?,
        None => vec![0.0; out],
    };
    if [gamma.len(), beta.len(), mean.len(), var.len()]
        .iter()
        .any(|&n| n != out)
    {
        return Err(TrainerError::shape(
            format!("channels of BatchNorm `{name}`"),
            format!("{out} (the convolution's output channels)"),
            format!("{}", gamma.len()),
        ));
    }
    let per_out = weight.len() / out.max(1);
    let mut bias = vec![0.0f32; out];
    for o in 0..out {
        let scale = f64::from(gamma[o]) / (f64::from(var[o]) + bn.epsilon).sqrt();
        for w in &mut weight[o * per_out..(o + 1) * per_out] {
            *w = (f64::from(*w) * scale) as f32;
        }
        bias[o] = (f64::from(beta[o]) + (f64::from(conv_bias[o]) - f64::from(mean[o])) * scale) as f32;
    }
    Ok((weight, bias))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use burn::module::{Module, ModuleMapper, Param};
    use burn::tensor::{Distribution, Tensor, TensorData};
    use engine::artifact::ModelArtifact;
    use engine::runtime::{self, Runtime, RuntimeOptions};
    use engine::session::{ModelSession, SessionOptions};

    use super::*;
    use crate::efficientnet::{EfficientNetSpec, StageSpec};
    use crate::resnet::{BlockKind, ResNetSpec};

    fn runtime() -> Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| runtime::init(&RuntimeOptions::default()).expect("ONNX Runtime"))
            .clone()
    }

    /// Replaces every vector (BatchNorm scale, shift, running mean and variance, biases) with
    /// values in [0.5, 1.5), so that folding has real statistics to fold.
    pub(crate) struct RandomVectors;

    impl ModuleMapper for RandomVectors {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D == 1 {
                param.map(|t| t.random_like(Distribution::Uniform(0.5, 1.5)))
            } else {
                param
            }
        }
    }

    pub(crate) fn small_specs() -> Vec<(&'static str, ModelSpec)> {
        let stages = vec![
            StageSpec {
                expand: 1,
                kernel: 3,
                stride: 1,
                channels: 16,
                repeats: 1,
            },
            StageSpec {
                expand: 6,
                kernel: 3,
                stride: 2,
                channels: 24,
                repeats: 2,
            },
            StageSpec {
                expand: 6,
                kernel: 5,
                stride: 2,
                channels: 40,
                repeats: 2,
            },
        ];
        let effnet = |lite: bool| {
            let mut s = EfficientNetSpec::named(if lite { "lite0" } else { "b0" }, 7).unwrap();
            s.stages = stages.clone();
            s.width = 0.5;
            s.head_channels = 64;
            s.resolution = 32;
            ModelSpec::EfficientNet(s)
        };
        let resnet = |block: BlockKind, d: bool, small: bool| {
            let mut s = ResNetSpec::named(if d { "resnet50d" } else { "resnet18" }, 7).unwrap();
            s.block = block;
            s.layers = vec![1, 2, 1];
            s.base_width = 8;
            s.small_input = small;
            s.resolution = 32;
            ModelSpec::ResNet(s)
        };
        vec![
            ("efficientnet", effnet(false)),
            ("efficientnet-lite", effnet(true)),
            // TensorFlow "SAME" padding (asymmetric for strided convolutions) at an even size.
            ("efficientnet-lite-tf-same", {
                let mut s = effnet(true);
                if let ModelSpec::EfficientNet(e) = &mut s {
                    e.tf_same_padding = true;
                }
                s
            }),
            ("resnet-basic", resnet(BlockKind::Basic, false, false)),
            // 36 px: odd feature maps exercise the ceil-mode average pool of ResNet-D.
            ("resnet-d-bottleneck", {
                let mut s = resnet(BlockKind::Bottleneck, true, false);
                if let ModelSpec::ResNet(r) = &mut s {
                    r.resolution = 36;
                }
                s
            }),
            ("resnet-small-input", resnet(BlockKind::Basic, false, true)),
        ]
    }

    /// The default engine config with one mean/std value per input channel.
    pub(crate) fn config_for(spec: &ModelSpec) -> ModelConfig {
        let mut config = ModelConfig::default();
        let c = spec.in_channels();
        config.preprocess.mean = vec![0.0; c];
        config.preprocess.std = vec![1.0; c];
        config
    }

    /// The Assemble-ResNet tweaks, alone and together: basic blocks on 1-channel 15x15 inputs
    /// with the small-input stem (feature maps 15, 8, 4), bottlenecks on 3-channel 29x29 inputs
    /// with the 7x7 stem and max pool (feature maps 15, 8, 4, 2).
    pub(crate) fn tweak_specs() -> Vec<(String, ModelSpec)> {
        crate::resnet::tests::tweaked()
            .into_iter()
            .filter(|(name, _)| !name.ends_with("plain"))
            .map(|(name, mut s)| {
                if s.block == BlockKind::Bottleneck {
                    s.small_input = false;
                    s.resolution = 29;
                    s.in_channels = 3;
                } else {
                    s.in_channels = 1;
                }
                (format!("resnet-{name}").to_lowercase(), ModelSpec::ResNet(s))
            })
            .collect()
    }

    /// Exports each architecture, runs it in ONNX Runtime through the engine and compares the
    /// logits with burn's eval-mode forward. Prints the measured differences.
    #[test]
    fn export_matches_burn_eval_forward() {
        let device = crate::default_device();
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let specs = small_specs().into_iter().map(|(n, s)| (n.to_string(), s));
        for (name, spec) in specs.chain(tweak_specs()) {
            let model = spec.init(&device).unwrap().map(&mut RandomVectors);
            let (batch, c, r) = (3, spec.in_channels(), spec.resolution() as usize);
            let input = Tensor::<4>::random([batch, c, r, r], Distribution::Normal(0.0, 1.0), &device);
            let expected: Vec<f32> = model.forward(input.clone()).into_data().try_to_vec().unwrap();
            for opset in [13, 17, 21] {
                let path = dir.path().join(format!("{name}-{opset}.onnx"));
                let mut options = ExportOptions::new(config_for(&spec));
                options.opset = opset;
                export(&model, &spec, &options, &path).unwrap();
                let artifact = ModelArtifact::open(&path, None).unwrap();
                assert!(artifact.self_described);
                let mut session = ModelSession::load(&rt, &artifact, &SessionOptions::default()).unwrap();
                let data: Vec<f32> = input.clone().into_data().try_to_vec().unwrap();
                let logits = session.infer(&data, batch).unwrap();
                let got: Vec<f32> = logits.rows().flatten().copied().collect();
                assert_eq!(got.len(), expected.len());
                let max_diff = got
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                let scale = expected.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
                println!(
                    "export parity {name} opset {opset}: max |logit diff| {max_diff:.2e} (max |logit| {scale:.2})"
                );
                assert!(max_diff < 1e-4, "{name} opset {opset}: {max_diff}");
            }
        }
    }

    /// Each tweak shows in the graph as the operators it is written with (and DropBlock as
    /// nothing: it is the identity at inference).
    #[test]
    fn tweaks_are_written_with_standard_operators() {
        let device = crate::default_device();
        let ops_of = |spec: &ModelSpec| -> Vec<String> {
            let model = spec.init(&device).unwrap();
            let proto = to_onnx(&model, spec, &ExportOptions::new(config_for(spec))).unwrap();
            proto.graph.node.iter().map(|n| n.op_type.clone()).collect()
        };
        let specs = tweak_specs();
        let get = |name: &str| &specs.iter().find(|(n, _)| n == name).unwrap().1;
        let mut plain = get("resnet-basic-drop-block").clone();
        if let ModelSpec::ResNet(r) = &mut plain {
            r.drop_block = None;
        }
        let count = |ops: &[String], op: &str| ops.iter().filter(|o| *o == op).count();
        let plain_ops = ops_of(&plain);
        assert_eq!(ops_of(get("resnet-basic-drop-block")), plain_ops);
        // Six selective-kernel units: one Softmax each.
        assert_eq!(count(&ops_of(get("resnet-basic-sk")), "Softmax"), 6);
        assert_eq!(count(&plain_ops, "Softmax"), 0);
        // Two strided blocks, each blurring the branch and (no ResNet-D here) the shortcut.
        let aa = ops_of(get("resnet-basic-anti-alias"));
        assert_eq!(count(&aa, "Pad"), 4);
        // With ResNet-D the shortcut keeps its AveragePool and only the branch blurs.
        let all = ops_of(get("resnet-bottleneck-all"));
        assert!(count(&all, "AveragePool") > 0);
        assert_eq!(count(&all, "Pad"), count(&all, "AveragePool"));
        // Two Big-Little stages, one Resize each.
        assert_eq!(count(&ops_of(get("resnet-bottleneck-big-little")), "Resize"), 2);
        for op in ["Softmax", "Pad", "Resize", "AveragePool"] {
            assert!(count(&all, op) > 0, "{op}");
        }
        assert!(all.iter().all(|o| o != "BatchNormalization" && o != "Dropout"));
    }

    #[test]
    fn metadata_makes_the_file_self_describing() {
        let device = crate::default_device();
        let (_, spec) = small_specs().remove(0);
        let model = spec.init(&device).unwrap();
        let labels: Vec<String> = (0..7).map(|i| format!("class {i}")).collect();
        let mut config = ModelConfig {
            labels: labels.clone(),
            ..ModelConfig::default()
        };
        config.preprocess.resolution = 32;
        let proto = to_onnx(&model, &spec, &ExportOptions::new(config)).unwrap();
        let meta: std::collections::HashMap<_, _> = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let parsed = ModelConfig::from_toml(&meta[METADATA_KEY], "test").unwrap();
        assert_eq!(parsed.labels, labels);
        assert_eq!(parsed.input_name.as_deref(), Some(INPUT_NAME));
        // How to serve it is not the model's to say: no batching settings in the file.
        assert!(!meta[METADATA_KEY].contains("batching"), "{}", meta[METADATA_KEY]);
        let spec_back: ModelSpec = serde_json::from_str(&meta[SPEC_KEY]).unwrap();
        assert_eq!(spec_back, spec);
        // No BatchNormalization left: folded into the convolutions.
        assert!(proto.graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
        // A label count that does not match the classifier is refused.
        let wrong = ModelConfig {
            labels: vec!["a".into()],
            ..ModelConfig::default()
        };
        let err = to_onnx(&model, &spec, &ExportOptions::new(wrong))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 labels") && err.contains("7 classes"), "{err}");
    }

    #[test]
    fn folding_matches_conv_then_batchnorm() {
        let device = crate::default_device();
        let unit = crate::layers::ConvBnAct::new(
            crate::layers::ConvSpec::new(2, 3, 3, 1),
            Activation::Identity,
            crate::layers::BnSettings::TF,
            &device,
        )
        .map(&mut RandomVectors);
        let x = Tensor::<4>::random([1, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let reference: Vec<f32> = unit.forward(x.clone()).into_data().try_to_vec().unwrap();
        let (w, b) = fold_batchnorm(&unit.conv, &unit.bn, "unit").unwrap();
        let w = Tensor::<4>::from_data(TensorData::new(w, [3, 2, 3, 3]), &device);
        let b = Tensor::<1>::from_data(TensorData::new(b, [3]), &device);
        let opts = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let folded: Vec<f32> = burn::tensor::module::conv2d(x, w, Some(b), opts)
            .into_data()
            .try_to_vec()
            .unwrap();
        let diff = reference
            .iter()
            .zip(&folded)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
}
