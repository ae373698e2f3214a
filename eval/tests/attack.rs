//! The input-gradient transform and the attacks, run by ONNX Runtime.
//!
//! - Small graphs built here, which together use every operator with a backward rule
//!   (grouped and strided convolutions, broadcasting arithmetic, pooling, padding, ...):
//!   every coordinate of the gradient against central finite differences.
//! - The shipped Fashion-MNIST EfficientNet, a ResNet written by our trainer's exporter and
//!   torchvision models exported by torch.onnx: directional finite differences, and for the
//!   torch models torch autograd's gradient (reference data made by
//!   `scripts/make_attack_reference.py`).
//! - Unsupported operators are named; FGSM at eps = 0 changes nothing; FGSM and PGD lower
//!   the shipped model's accuracy on real Fashion-MNIST test images.
//! - `HARDY_TEST_DEVICE=cuda` (a build with `--features engine/cuda`) runs every check on
//!   that device, strictly (no CPU fallback), so the same checks hold on a GPU.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use engine::onnx::{Attr, Dim, ElemType, GraphBuilder, ModelProto};
use engine::preprocess::{ColorMode, Interpolation, Layout, PreprocessSpec};
use engine::runtime::{Runtime, RuntimeOptions};
use engine::session::SessionOptions;
use eval::attack::{self, AttackError, Attacker, GradientSpec, Loss, PgdConfig};
use eval::autoattack;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| engine::runtime::init(&RuntimeOptions::default()).expect("ONNX Runtime"))
}

/// Session options for the device named by `HARDY_TEST_DEVICE` (CPU when unset); a device
/// that cannot be used fails the test instead of falling back.
fn options() -> SessionOptions {
    use engine::device::{Device, DevicePolicy};
    match std::env::var("HARDY_TEST_DEVICE") {
        Ok(d) if !d.is_empty() => SessionOptions {
            device: d.parse::<Device>().expect("HARDY_TEST_DEVICE"),
            policy: DevicePolicy::Strict,
            ..SessionOptions::default()
        },
        _ => SessionOptions::default(),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/attack")
        .join(path)
}

fn spec(channels: usize, h: u32, w: u32, layout: Layout) -> PreprocessSpec {
    let (mean, std) = if channels == 3 {
        (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    } else {
        (vec![0.3], vec![0.4])
    };
    PreprocessSpec {
        resize_size: h.min(w),
        crop_height: h,
        crop_width: w,
        interpolation: Interpolation::Bilinear,
        mean,
        std,
        color: if channels == 3 { ColorMode::Rgb } else { ColorMode::Gray },
        layout,
        exif_orientation: true,
    }
}

fn attacker(model: &ModelProto, spec: &PreprocessSpec) -> Attacker {
    Attacker::from_model(runtime(), model, spec, None, None, &options(), Path::new("test.onnx")).unwrap()
}

fn weights(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A conv with random weights and bias.
fn conv(g: &mut GraphBuilder, rng: &mut StdRng, x: &str, cin: i64, cout: i64, k: i64, attrs: Vec<Attr>) -> String {
    let group = attrs
        .iter()
        .find(|a| a.name() == "group")
        .map(|a| a.clone().into_proto().i)
        .unwrap_or(1);
    let n = (cout * cin / group * k * k) as usize;
    let scale = 1.5 / ((cin / group * k * k) as f32).sqrt();
    let w = {
        let name = g.fresh("w");
        g.initializer_f32(&name, &[cout, cin / group, k, k], weights(rng, n, scale))
    };
    let b = {
        let name = g.fresh("b");
        g.initializer_f32(&name, &[cout], weights(rng, cout as usize, 0.2))
    };
    let mut all = vec![Attr::ints("kernel_shape", &[k, k])];
    all.extend(attrs);
    g.op("Conv", &[x, w.as_str(), b.as_str()], all)
}

/// A dense layer `[N, fin] -> [N, fout]` as Gemm with transB (PyTorch's Linear).
fn linear(g: &mut GraphBuilder, rng: &mut StdRng, x: &str, fin: i64, fout: i64) -> String {
    let w = {
        let name = g.fresh("fc_w");
        g.initializer_f32(
            &name,
            &[fout, fin],
            weights(rng, (fin * fout) as usize, 1.0 / (fin as f32).sqrt()),
        )
    };
    let b = {
        let name = g.fresh("fc_b");
        g.initializer_f32(&name, &[fout], weights(rng, fout as usize, 0.1))
    };
    g.op("Gemm", &[x, w.as_str(), b.as_str()], vec![Attr::int("transB", 1)])
}

/// Checks every coordinate of the gradient of `model` against central differences at
/// random pixels, all perturbed images in one batch (per-sample losses are independent).
fn check_all_coordinates(name: &str, model: &ModelProto, spec: &PreprocessSpec, h: f32) {
    check_all_coordinates_within(name, model, spec, h, 2e-2, 2);
}

/// [`check_all_coordinates`] with the tolerance of [`compare`] given.
fn check_all_coordinates_within(
    name: &str,
    model: &ModelProto,
    spec: &PreprocessSpec,
    h: f32,
    rel: f32,
    outliers: usize,
) {
    let mut a = attacker(model, spec);
    let d = a.image_len();
    let batch = 2;
    let mut rng = StdRng::seed_from_u64(7);
    let pixels: Vec<f32> = (0..batch * d).map(|_| rng.random_range(0.05..0.95)).collect();
    let labels: Vec<i64> = (0..batch).map(|i| (i * 3 % a.classes()) as i64).collect();
    let base = a.gradient(&pixels, batch, &labels).unwrap();
    assert!(
        base.loss.iter().all(|l| l.is_finite() && *l > 0.0),
        "{name}: loss {:?}",
        base.loss
    );

    let mut probe = Vec::with_capacity(2 * batch * d * d);
    let mut probe_labels = Vec::new();
    for b in 0..batch {
        for i in 0..d {
            for s in [h, -h] {
                let mut img = pixels[b * d..(b + 1) * d].to_vec();
                img[i] += s;
                probe.extend(img);
                probe_labels.push(labels[b]);
            }
        }
    }
    let out = a.gradient(&probe, 2 * batch * d, &probe_labels).unwrap();
    let fd: Vec<f32> = out.loss.chunks_exact(2).map(|p| (p[0] - p[1]) / (2.0 * h)).collect();
    compare(name, &base.grad, &fd, rel, outliers);
}

/// `grad` against `reference`: relative L2 error below `rel`, and at most `outliers`
/// coordinates off by more than 5% of the largest value (kinks of ReLU/MaxPool crossed by a
/// finite difference).
fn compare(name: &str, grad: &[f32], reference: &[f32], rel: f32, outliers: usize) {
    assert_eq!(grad.len(), reference.len());
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff: Vec<f32> = grad.iter().zip(reference).map(|(a, b)| a - b).collect();
    let scale = norm(reference);
    assert!(scale > 1e-6, "{name}: the reference gradient is zero");
    let err = norm(&diff) / scale;
    let max = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let bad: Vec<usize> = diff
        .iter()
        .enumerate()
        .filter(|(_, d)| d.abs() > 0.05 * max)
        .map(|(i, _)| i)
        .collect();
    eprintln!(
        "{name}: relative error {err:.2e} over {} values, {} outliers",
        grad.len(),
        bad.len()
    );
    assert!(
        bad.len() <= outliers,
        "{name}: {} coordinates off, e.g. {:?}",
        bad.len(),
        bad.iter()
            .take(5)
            .map(|&i| (i, grad[i], reference[i]))
            .collect::<Vec<_>>()
    );
    assert!(err < rel, "{name}: relative error {err} (|ref| {scale})");
}

fn out(g: &mut GraphBuilder, logits: &str, classes: i64) -> ModelProto {
    g.node("Identity", &[logits], &["out"], vec![]);
    g.output("out", ElemType::Float32, &Dim::batched(&[classes]));
    std::mem::take(g).build(17).unwrap()
}

#[test]
fn convolutions_strides_groups_dilations_and_smooth_activations() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = GraphBuilder::new("convs");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 7, 6]));
    let a = conv(&mut g, &mut rng, &x, 3, 4, 3, vec![Attr::ints("pads", &[1, 0, 2, 1])]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    // Grouped, strided, asymmetric pads: odd input sizes leave rows the last window misses.
    let b = conv(
        &mut g,
        &mut rng,
        &a,
        4,
        6,
        3,
        vec![
            Attr::int("group", 2),
            Attr::ints("strides", &[2, 2]),
            Attr::ints("pads", &[1, 1, 0, 1]),
        ],
    );
    let b = g.op("Tanh", &[&b], vec![]);
    // Depthwise with dilation.
    let c = conv(
        &mut g,
        &mut rng,
        &b,
        6,
        6,
        3,
        vec![
            Attr::int("group", 6),
            Attr::ints("dilations", &[2, 2]),
            Attr::ints("pads", &[2, 2, 2, 2]),
        ],
    );
    let c = g.op("HardSwish", &[&c], vec![]);
    // Strided 1x1 without padding, then stride 3 with a kernel larger than the stride.
    let d = conv(&mut g, &mut rng, &c, 6, 5, 1, vec![Attr::ints("strides", &[2, 1])]);
    let d = g.op(
        "HardSigmoid",
        &[&d],
        vec![Attr::float("alpha", 0.3), Attr::float("beta", 0.4)],
    );
    let pooled = g.op("GlobalAveragePool", &[&d], vec![]);
    let flat = g.op("Flatten", &[&pooled], vec![Attr::int("axis", 1)]);
    let w = g.initializer_f32("gemm_w", &[5, 4], weights(&mut rng, 20, 1.5));
    let bias = g.initializer_f32("gemm_b", &[4], weights(&mut rng, 4, 0.1));
    let logits = g.op(
        "Gemm",
        &[flat.as_str(), w.as_str(), bias.as_str()],
        vec![Attr::float("alpha", 2.0), Attr::float("beta", 0.5)],
    );
    let model = out(&mut g, &logits, 4);
    check_all_coordinates("convs", &model, &spec(3, 7, 6, Layout::Nchw), 1e-2);
}

/// Channels in multiples of 16 and static spatial sizes, where the rules write their
/// backward in the operators ONNX Runtime keeps in its blocked layout: `Relu` and `Clip`
/// masks as a depthwise `Conv` and a `HardSigmoid`, `1 - sigmoid(x)` as `Sigmoid(-x)`, a
/// squeeze-excite gate spread by a nearest `Resize` (forward and backward), its gradient and
/// `GlobalAveragePool`'s through `GlobalAveragePool`, a depthwise `Conv` and `Resize`.
#[test]
fn blocked_layout_forms_relu_clip_swish_and_squeeze_excite() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = GraphBuilder::new("blocked");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 6, 6]));
    let a = conv(&mut g, &mut rng, &x, 3, 16, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Relu", &[&a], vec![]);
    let b = conv(
        &mut g,
        &mut rng,
        &a,
        16,
        16,
        3,
        vec![Attr::int("group", 16), Attr::ints("pads", &[1, 1, 1, 1])],
    );
    let lo = g.initializer_f32("clip_lo", &[], vec![0.0]);
    let hi = g.initializer_f32("clip_hi", &[], vec![0.6]);
    let b = g.op("Clip", &[b.as_str(), &lo, &hi], vec![]);
    let c = conv(&mut g, &mut rng, &b, 16, 32, 1, vec![]);
    let s = g.op("Sigmoid", &[&c], vec![]);
    let c = g.op("Mul", &[c.as_str(), &s], vec![]);
    // Squeeze-excite: [N, 32, 6, 6] times a [N, 32, 1, 1] gate.
    let pooled = g.op("GlobalAveragePool", &[&c], vec![]);
    let reduced = conv(&mut g, &mut rng, &pooled, 32, 16, 1, vec![]);
    let reduced = g.op("Relu", &[&reduced], vec![]);
    let gate = conv(&mut g, &mut rng, &reduced, 16, 32, 1, vec![]);
    let gate = g.op("Sigmoid", &[&gate], vec![]);
    let d = g.op("Mul", &[c.as_str(), &gate], vec![]);
    let pooled = g.op("GlobalAveragePool", &[&d], vec![]);
    let flat = g.op("Flatten", &[&pooled], vec![Attr::int("axis", 1)]);
    let logits = linear(&mut g, &mut rng, &flat, 32, 5);
    let model = out(&mut g, &logits, 5);

    let spec = spec(3, 6, 6, Layout::Nchw);
    let grad = attack::add_input_gradient(&model, &GradientSpec::from_preprocess(&spec)).unwrap();
    let ops: Vec<&str> = grad.graph.node.iter().map(|n| n.op_type.as_str()).collect();
    let count = |op: &str| ops.iter().filter(|o| **o == op).count();
    // Relu twice, Clip's two bounds: four masks; the gate spread once (shared by the
    // forward and the backward) and the two pools' gradients spread: three Resizes.
    assert_eq!(count("HardSigmoid"), 4, "{ops:?}");
    assert_eq!(count("Resize"), 3, "{ops:?}");
    // No comparison masks, no Expand (the losses have ReduceSums of their own).
    assert_eq!(count("Greater") + count("Less") + count("Expand"), 0, "{ops:?}");
    // Small steps: ReLU and Clip have kinks that larger ones cross.
    check_all_coordinates("blocked", &model, &spec, 3e-3);
}

/// The ResNet forms of the blocked layout: an `AveragePool` whose windows tile a blocked
/// input (the MEAL ResNet's downsampling shortcut) as a depthwise `Conv` and a nearest
/// `Resize`, not the general single-channel `ConvTranspose`; an ungrouped strided `Conv` as
/// a `ConvTranspose`, a depthwise strided one as a stride-1 `Conv` over a zero-filled map.
#[test]
fn blocked_layout_forms_tiled_pool_and_strided_convs() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut g = GraphBuilder::new("tiled");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 8, 8]));
    let a = conv(&mut g, &mut rng, &x, 3, 16, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    let pooled = g.op(
        "AveragePool",
        &[&a],
        vec![Attr::ints("kernel_shape", &[2, 2]), Attr::ints("strides", &[2, 2])],
    );
    let shortcut = conv(&mut g, &mut rng, &pooled, 16, 16, 1, vec![]);
    let dense = conv(
        &mut g,
        &mut rng,
        &a,
        16,
        16,
        3,
        vec![Attr::ints("strides", &[2, 2]), Attr::ints("pads", &[1, 1, 1, 1])],
    );
    let depthwise = conv(
        &mut g,
        &mut rng,
        &a,
        16,
        16,
        3,
        vec![
            Attr::int("group", 16),
            Attr::ints("strides", &[2, 2]),
            Attr::ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let sum = g.op("Add", &[shortcut.as_str(), &dense], vec![]);
    let sum = g.op("Add", &[sum.as_str(), &depthwise], vec![]);
    let sum = g.op("Tanh", &[&sum], vec![]);
    let pooled = g.op("GlobalAveragePool", &[&sum], vec![]);
    let flat = g.op("Flatten", &[&pooled], vec![Attr::int("axis", 1)]);
    let logits = linear(&mut g, &mut rng, &flat, 16, 5);
    let model = out(&mut g, &logits, 5);

    let spec = spec(3, 8, 8, Layout::Nchw);
    let grad = attack::add_input_gradient(&model, &GradientSpec::from_preprocess(&spec)).unwrap();
    let ops: Vec<&str> = grad.graph.node.iter().map(|n| n.op_type.as_str()).collect();
    let count = |op: &str| ops.iter().filter(|o| **o == op).count();
    // The dense strided Conv only.
    assert_eq!(count("ConvTranspose"), 1, "{ops:?}");
    // The pool's repeat, the depthwise Conv's zero filling, GlobalAveragePool's spread.
    assert_eq!(count("Resize"), 3, "{ops:?}");
    check_all_coordinates("tiled", &model, &spec, 1e-2);
}

#[test]
fn pooling_batchnorm_clip_reshape_concat_matmul() {
    let model = pools_model(2);
    // Small steps: ReLU, MaxPool and Clip have kinks that larger ones cross.
    check_all_coordinates("pools", &model, &spec(3, 9, 9, Layout::Nchw), 2e-4);
}

/// BatchNormalization, Relu, MaxPool (ResNet's stem: overlapping 3x3, stride 2, pad 1),
/// Clip with min/max inputs, AveragePool three ways (our exporter's ceil mode without padding
/// counted; padding counted; padding not counted), Reshape, Flatten, Concat, MatMul, Add.
fn pools_model(seed: u64) -> ModelProto {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = GraphBuilder::new("pools");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 9, 9]));
    let a = conv(&mut g, &mut rng, &x, 3, 4, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let scale = g.initializer_f32("bn_scale", &[4], vec![1.5, 0.7, -1.2, 2.0]);
    let bias = g.initializer_f32("bn_bias", &[4], vec![0.1, -0.2, 0.3, 0.0]);
    let mean = g.initializer_f32("bn_mean", &[4], vec![0.05, -0.1, 0.2, 0.3]);
    let var = g.initializer_f32("bn_var", &[4], vec![0.5, 1.5, 0.8, 2.0]);
    let a = g.op(
        "BatchNormalization",
        &[a.as_str(), &scale, &bias, &mean, &var],
        vec![Attr::float("epsilon", 1e-3)],
    );
    let a = g.op("Relu", &[&a], vec![]);
    let a = g.op(
        "MaxPool",
        &[&a],
        vec![
            Attr::ints("kernel_shape", &[3, 3]),
            Attr::ints("strides", &[2, 2]),
            Attr::ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let lo = g.initializer_f32("clip_lo", &[], vec![0.1]);
    let hi = g.initializer_f32("clip_hi", &[], vec![0.9]);
    let a = g.op("Clip", &[a.as_str(), &lo, &hi], vec![]);
    let p = g.op(
        "AveragePool",
        &[&a],
        vec![
            Attr::ints("kernel_shape", &[2, 2]),
            Attr::ints("strides", &[2, 2]),
            Attr::int("ceil_mode", 1),
            Attr::int("count_include_pad", 0),
        ],
    );
    let q = g.op(
        "AveragePool",
        &[&a],
        vec![
            Attr::ints("kernel_shape", &[3, 3]),
            Attr::ints("strides", &[2, 2]),
            Attr::ints("pads", &[1, 1, 1, 1]),
            Attr::int("count_include_pad", 1),
        ],
    );
    let r = g.op(
        "AveragePool",
        &[&a],
        vec![
            Attr::ints("kernel_shape", &[2, 2]),
            Attr::ints("strides", &[1, 1]),
            Attr::ints("pads", &[0, 0, 1, 1]),
        ],
    );
    // a: [N, 4, 5, 5]; p: [N, 4, 3, 3]; q: [N, 4, 3, 3]; r: [N, 4, 5, 5].
    let shape = g.initializer_i64("flat_shape", &[2], vec![0, -1]);
    let pf = g.op("Reshape", &[p.as_str(), &shape], vec![]);
    let qf = g.op("Reshape", &[q.as_str(), &shape], vec![]);
    let rf = g.op("Flatten", &[&r], vec![]);
    let all = g.op("Concat", &[&pf, &qf, &rf], vec![Attr::int("axis", 1)]);
    let w = g.initializer_f32("mm_w", &[36 + 36 + 100, 5], weights(&mut rng, 172 * 5, 0.4));
    let mm = g.op("MatMul", &[all.as_str(), &w], vec![]);
    let bias = g.initializer_f32("mm_b", &[5], weights(&mut rng, 5, 0.1));
    let logits = g.op("Add", &[mm.as_str(), &bias], vec![]);
    out(&mut g, &logits, 5)
}

#[test]
fn broadcasting_arithmetic_squeeze_excite_pad_and_a_final_softmax() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut g = GraphBuilder::new("broadcast");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 5, 5]));
    let a = conv(&mut g, &mut rng, &x, 3, 4, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    // Squeeze-excite: x * sigmoid(conv(gap(x))), gate [N, 4, 1, 1] broadcast over H, W.
    let pooled = g.op("GlobalAveragePool", &[&a], vec![]);
    let e = conv(&mut g, &mut rng, &pooled, 4, 4, 1, vec![]);
    let gate = g.op("HardSigmoid", &[&e], vec![]);
    let a = g.op("Mul", &[a.as_str(), &gate], vec![]);
    // Active + active with different shapes; constants of lower rank on either side.
    let a = g.op("Add", &[pooled.as_str(), &a], vec![]);
    let c = g.initializer_f32("per_channel", &[4, 1, 1], vec![0.1, -0.3, 0.2, 0.5]);
    let a = g.op("Sub", &[c.as_str(), &a], vec![]);
    let row = g.initializer_f32("per_column", &[5], vec![1.0, 0.5, -0.7, 1.2, 0.9]);
    let a = g.op("Mul", &[a.as_str(), &row], vec![]);
    // Division by an active, broadcast denominator (kept away from zero).
    let den = g.op("Sigmoid", &[&pooled], vec![]);
    let one = g.initializer_f32("one", &[], vec![1.0]);
    let den = g.op("Add", &[den.as_str(), &one], vec![]);
    let a = g.op("Div", &[a.as_str(), &den], vec![]);
    let two = g.initializer_f32("two", &[1], vec![2.0]);
    let b = g.op("Div", &[two.as_str(), &den], vec![]);
    let b = g.op("Mul", &[b.as_str(), &a], vec![]);
    // Concat on channels, constant padding (pads as an input), mean over H and W.
    let cat = g.op("Concat", &[&a, &b], vec![Attr::int("axis", 1)]);
    let pads = g.initializer_i64("pads", &[8], vec![0, 0, 1, 2, 0, 0, 2, 0]);
    let value = g.initializer_f32("pad_value", &[], vec![0.25]);
    let padded = g.op(
        "Pad",
        &[cat.as_str(), &pads, &value],
        vec![Attr::string("mode", "constant")],
    );
    let axes = g.initializer_i64("axes", &[2], vec![2, 3]);
    let mean = g.op("ReduceSum", &[padded.as_str(), &axes], vec![Attr::int("keepdims", 0)]);
    let mean = g.op("Tanh", &[&mean], vec![]);
    // Gemm with transA on a transposed input.
    let t = g.op("Transpose", &[&mean], vec![Attr::ints("perm", &[1, 0])]);
    let w = g.initializer_f32("w", &[8, 6], weights(&mut rng, 48, 1.0));
    let logits = g.op("Gemm", &[t.as_str(), &w], vec![Attr::int("transA", 1)]);
    let probs = g.op("Softmax", &[&logits], vec![Attr::int("axis", -1)]);
    let model = out(&mut g, &probs, 6);
    check_all_coordinates("broadcast", &model, &spec(3, 5, 5, Layout::Nchw), 1e-2);

    // The graph ends in Softmax: its input is taken as the logits.
    let mut a = attacker(&model, &spec(3, 5, 5, Layout::Nchw));
    let pixels = vec![0.5; 2 * a.image_len()];
    let got = a.gradient(&pixels, 2, &[0, 1]).unwrap();
    assert!(
        got.logits.iter().any(|&l| !(0.0..=1.0).contains(&l)),
        "{:?}",
        got.logits
    );
}

#[test]
fn channels_last_grey_input_with_a_shape_subgraph() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut g = GraphBuilder::new("nhwc");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[6, 5, 1]));
    let a = g.op("Transpose", &[&x], vec![Attr::ints("perm", &[0, 3, 1, 2])]);
    let a = conv(&mut g, &mut rng, &a, 1, 3, 3, vec![Attr::ints("strides", &[1, 2])]);
    let a = g.op("LeakyRelu", &[&a], vec![Attr::float("alpha", 0.2)]);
    let a = g.op("Softmax", &[&a], vec![Attr::int("axis", 1)]);
    // torch.onnx's flatten: Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])).
    let shape = g.op("Shape", &[&a], vec![]);
    let zero = g.initializer_i64("zero", &[], vec![0]);
    let n = g.op("Gather", &[shape.as_str(), &zero], vec![Attr::int("axis", 0)]);
    let ax0 = g.initializer_i64("ax0", &[1], vec![0]);
    let n = g.op("Unsqueeze", &[n.as_str(), &ax0], vec![]);
    let minus = g.initializer_i64("minus_one", &[1], vec![-1]);
    let target = g.op("Concat", &[n.as_str(), &minus], vec![Attr::int("axis", 0)]);
    let flat = g.op("Reshape", &[a.as_str(), &target], vec![]);
    let u = g.op("Unsqueeze", &[flat.as_str(), &ax0], vec![]);
    let s = g.op("Squeeze", &[u.as_str(), &ax0], vec![]);
    let logits = linear(&mut g, &mut rng, &s, 3 * 4 * 2, 3);
    let logits = g.op("Identity", &[&logits], vec![]);
    let model = out(&mut g, &logits, 3);
    check_all_coordinates("nhwc", &model, &spec(1, 6, 5, Layout::Nhwc), 1e-3);
}

#[test]
fn unsupported_operators_are_named() {
    let build = |op: &str, on_path: bool| {
        let mut g = GraphBuilder::new("unsupported");
        let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 2, 2]));
        let odd = g.op(op, &[&x], vec![]);
        let src = if on_path { odd.as_str() } else { x.as_str() };
        let flat = g.op("Flatten", &[src], vec![]);
        let logits = g.op("Relu", &[&flat], vec![]);
        out(&mut g, &logits, 4)
    };
    let spec = GradientSpec::from_preprocess(&spec(1, 2, 2, Layout::Nchw));
    match attack::add_input_gradient(&build("Elu", true), &spec) {
        Err(AttackError::Unsupported { op, node, .. }) => {
            assert_eq!(op, "Elu");
            assert_eq!(node, "elu_0");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let msg = attack::add_input_gradient(&build("Elu", true), &spec)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Elu") && msg.contains("elu_0"), "{msg}");
    // Off the path to the logits, it does not matter.
    attack::add_input_gradient(&build("Elu", false), &spec).unwrap();

    // An attribute the rule does not handle is named too.
    let mut g = GraphBuilder::new("same");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 4, 4]));
    let w = g.initializer_f32("w", &[2, 1, 3, 3], vec![0.1; 18]);
    let c = g.op("Conv", &[x.as_str(), &w], vec![Attr::string("auto_pad", "SAME_UPPER")]);
    let f = g.op("Flatten", &[&c], vec![]);
    let model = out(&mut g, &f, 32);
    let msg = attack::add_input_gradient(&model, &GradientSpec::from_preprocess(&spec_for(1, 4)))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Conv") && msg.contains("SAME_UPPER"), "{msg}");

    // Logits that are not [batch, classes].
    let mut g = GraphBuilder::new("rank4");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 4, 4]));
    let p = g.op("GlobalAveragePool", &[&x], vec![]);
    g.output(&p, ElemType::Float32, &Dim::batched(&[1, 1, 1]));
    let msg = attack::add_input_gradient(&g.build(17).unwrap(), &GradientSpec::from_preprocess(&spec_for(1, 4)))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[batch, classes]"), "{msg}");

    // A spec whose channels do not match the model's input.
    let err = attack::add_input_gradient(&model, &GradientSpec::from_preprocess(&spec_for(3, 4))).unwrap_err();
    assert!(matches!(err, AttackError::Shape(_)), "{err:?}");
}

/// `[Unsqueeze(Gather(shape, i))]` for each `i`, concatenated with the constants `tail`: a
/// target shape as torch.onnx writes `x.view(x.size(0), ...)` under a dynamic batch.
fn computed_shape(g: &mut GraphBuilder, shape: &str, dims: &[i64], tail: &[i64]) -> String {
    let mut parts = Vec::new();
    for &i in dims {
        let at = g.fresh("at");
        let at = g.initializer_i64(&at, &[], vec![i]);
        let d = g.op("Gather", &[shape, at.as_str()], vec![Attr::int("axis", 0)]);
        let ax = ints(g, "ax", &[0]);
        parts.push(g.op("Unsqueeze", &[d.as_str(), &ax], vec![]));
    }
    if !tail.is_empty() {
        parts.push(ints(g, "tail", tail));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    g.op("Concat", &refs, vec![Attr::int("axis", 0)])
}

/// A dynamic-batch model with the transformer and ShuffleNet parts torchvision's exports
/// have: a channel shuffle through shapes computed at run time (`Shape` -> `Gather` -> `Div`
/// -> `Concat` -> `Reshape`), then `chunk` as a `Slice` (which needs the rank those shapes
/// give), `LayerNormalization` over the last axis, GELU as `Erf`, a class token `Expand`ed
/// to the batch and `Concat`enated, `Gather`s of a token and of repeated tokens, and a
/// `Slice` with steps 2 and 3.
fn transformer_and_shuffle_model(seed: u64) -> ModelProto {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = GraphBuilder::new("shuffle_tokens");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 4, 4]));
    let a = conv(&mut g, &mut rng, &x, 1, 4, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    // Channel shuffle, groups of 2, from the run-time shape.
    let shape = g.op("Shape", &[&a], vec![]);
    let c = g.initializer_i64("c_at", &[], vec![1]);
    let c = g.op("Gather", &[shape.as_str(), &c], vec![Attr::int("axis", 0)]);
    let two = g.initializer_i64("two_groups", &[], vec![2]);
    let per = g.op("Div", &[c.as_str(), &two], vec![]);
    let ax = ints(&mut g, "ax", &[0]);
    let per = g.op("Unsqueeze", &[per.as_str(), &ax], vec![]);
    let n = computed_shape(&mut g, &shape, &[0], &[]);
    let groups = ints(&mut g, "groups", &[2]);
    let hw = ints(&mut g, "hw", &[4, 4]);
    let target = g.op("Concat", &[n.as_str(), &groups, &per, &hw], vec![Attr::int("axis", 0)]);
    let r = g.op("Reshape", &[a.as_str(), &target], vec![]);
    let t = g.op("Transpose", &[&r], vec![Attr::ints("perm", &[0, 2, 1, 3, 4])]);
    let back = computed_shape(&mut g, &shape, &[0, 1, 2, 3], &[]);
    let shuffled = g.op("Reshape", &[t.as_str(), &back], vec![]);
    // chunk(2, dim=1)[1] as a Slice with a negative axis.
    let (s, e, sa) = (
        ints(&mut g, "s", &[2]),
        ints(&mut g, "e", &[4]),
        ints(&mut g, "sa", &[-3]),
    );
    let half = g.op("Slice", &[shuffled.as_str(), &s, &e, &sa], vec![]);
    // Tokens [N, 16, 2], layer norm over the channels, GELU.
    let tokens = computed_shape(&mut g, &shape, &[0], &[2, 16]);
    let tokens = g.op("Reshape", &[half.as_str(), &tokens], vec![]);
    let tokens = g.op("Transpose", &[&tokens], vec![Attr::ints("perm", &[0, 2, 1])]);
    let scale = g.initializer_f32("ln_scale", &[2], vec![1.3, 0.7]);
    let bias = g.initializer_f32("ln_bias", &[2], vec![0.1, -0.2]);
    let ln = g.op(
        "LayerNormalization",
        &[tokens.as_str(), &scale, &bias],
        vec![Attr::int("axis", -1), Attr::float("epsilon", 1e-5)],
    );
    let root2 = g.initializer_f32("root2", &[], vec![std::f32::consts::SQRT_2]);
    let halfc = g.initializer_f32("halfc", &[], vec![0.5]);
    let onec = g.initializer_f32("onec", &[], vec![1.0]);
    let u = g.op("Div", &[ln.as_str(), &root2], vec![]);
    let u = g.op("Erf", &[&u], vec![]);
    let u = g.op("Add", &[u.as_str(), &onec], vec![]);
    let u = g.op("Mul", &[&u, &ln], vec![]);
    let gelu = g.op("Mul", &[u.as_str(), &halfc], vec![]);
    // A class token expanded to the batch, in front.
    let cls = g.initializer_f32("cls", &[1, 1, 2], vec![0.3, -0.4]);
    let cls_shape = computed_shape(&mut g, &shape, &[0], &[1, 2]);
    let cls = g.op("Expand", &[cls.as_str(), &cls_shape], vec![]);
    let seq = g.op("Concat", &[&cls, &gelu], vec![Attr::int("axis", 1)]);
    // Token 0 (a scalar index) and tokens 3, 5, 5, -1 (repeated, negative).
    let zero = g.initializer_i64("token0", &[], vec![0]);
    let first = g.op("Gather", &[seq.as_str(), &zero], vec![Attr::int("axis", 1)]);
    let picks = ints(&mut g, "picks", &[3, 5, 5, -1]);
    let picked = g.op("Gather", &[seq.as_str(), &picks], vec![Attr::int("axis", 1)]);
    let picked = g.op("Flatten", &[&picked], vec![]);
    // Patch merging's strided slices, x[:, :, 1::2, ::3], of the shuffled map.
    let (s2, e2, a2, k2) = (
        ints(&mut g, "s2", &[1, 0]),
        ints(&mut g, "e2", &[i64::MAX, 4]),
        ints(&mut g, "a2", &[2, 3]),
        ints(&mut g, "k2", &[2, 3]),
    );
    let strided = g.op("Slice", &[shuffled.as_str(), &s2, &e2, &a2, &k2], vec![]);
    let strided = g.op("Flatten", &[&strided], vec![]);
    let feats = g.op("Concat", &[&first, &picked, &strided], vec![Attr::int("axis", 1)]);
    let feats = g.op("Tanh", &[&feats], vec![]);
    let logits = linear(&mut g, &mut rng, &feats, 2 + 4 * 2 + 4 * 2 * 2, 3);
    out(&mut g, &logits, 3)
}

#[test]
fn layer_norm_gelu_tokens_and_a_shape_computed_channel_shuffle() {
    let model = transformer_and_shuffle_model(11);
    check_all_coordinates("shuffle_tokens", &model, &spec(1, 4, 4, Layout::Nchw), 1e-3);
}

#[test]
fn declared_value_info_shapes_fill_what_inference_cannot() {
    // A Reshape to a shape computed through float arithmetic (not followed), then a Slice
    // with run-time bounds, which needs the rank: only the file's value_info gives it.
    let build = |declare: bool| {
        let mut rng = StdRng::seed_from_u64(12);
        let mut g = GraphBuilder::new("declared");
        let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 4, 4]));
        let a = conv(&mut g, &mut rng, &x, 1, 2, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
        let shape = g.op("Shape", &[&a], vec![]);
        let f = g.op("Cast", &[&shape], vec![Attr::int("to", 1)]);
        let shape = g.op("Cast", &[&f], vec![Attr::int("to", 7)]);
        let r = g.op("Reshape", &[a.as_str(), &shape], vec![]);
        let three = ints(&mut g, "three", &[3]);
        let four = ints(&mut g, "four", &[4]);
        let hw = g.op("Slice", &[shape.as_str(), &three, &four], vec![]);
        let (s, ax) = (ints(&mut g, "s", &[1]), ints(&mut g, "ax", &[3]));
        let sliced = g.op("Slice", &[r.as_str(), &s, &hw, &ax], vec![]);
        let flat = g.op("Flatten", &[&sliced], vec![]);
        let logits = linear(&mut g, &mut rng, &flat, 2 * 4 * 3, 3);
        g.node("Identity", &[&logits], &["out"], vec![]);
        g.output("out", ElemType::Float32, &Dim::batched(&[3]));
        if declare {
            g.output(&r, ElemType::Float32, &Dim::batched(&[2, 4, 4]));
        }
        let mut model = std::mem::take(&mut g).build(17).unwrap();
        if declare {
            let graph = model.graph.as_mut().unwrap();
            let info = graph.output.pop().unwrap();
            graph.value_info.push(info);
        }
        model
    };
    let spec = spec(1, 4, 4, Layout::Nchw);
    let msg = attack::add_input_gradient(&build(false), &GradientSpec::from_preprocess(&spec))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Slice") && msg.contains("rank is unknown"), "{msg}");
    check_all_coordinates("declared", &build(true), &spec, 1e-3);
}

fn spec_for(channels: usize, size: u32) -> PreprocessSpec {
    spec(channels, size, size, Layout::Nchw)
}

// ----- real models -----

fn shipped() -> engine::artifact::ModelArtifact {
    engine::artifact::ModelArtifact::open(&repo().join("models/fashion-mnist-effnet"), Some(3)).unwrap()
}

/// Reads `n` Fashion-MNIST test images (as 28x28 RGB, grey replicated) and their labels.
fn fashion_mnist_test(n: usize) -> (Vec<image::RgbImage>, Vec<i64>) {
    // One provisioning per process: parallel tests would unpack into the same directory.
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| data::fetch::fashion_mnist().unwrap());
    let read = |name: &str| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(name)).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let images = read("t10k-images-idx3-ubyte.gz");
    let labels = read("t10k-labels-idx1-ubyte.gz");
    assert_eq!(u32::from_be_bytes(images[..4].try_into().unwrap()), 0x803);
    assert_eq!(u32::from_be_bytes(labels[..4].try_into().unwrap()), 0x801);
    let imgs = (0..n)
        .map(|i| {
            let px = &images[16 + i * 784..16 + (i + 1) * 784];
            image::RgbImage::from_fn(28, 28, |x, y| {
                let v = px[(y * 28 + x) as usize];
                image::Rgb([v, v, v])
            })
        })
        .collect();
    (imgs, labels[8..8 + n].iter().map(|&l| i64::from(l)).collect())
}

fn shipped_pixels(n: usize) -> (Attacker, Vec<f32>, Vec<i64>) {
    let artifact = shipped();
    let spec = artifact.config.preprocess_spec();
    let a = Attacker::load(runtime(), &artifact, &options()).unwrap();
    assert_eq!(a.device(), options().device, "the attacker runs where it was asked to");
    let (imgs, labels) = fashion_mnist_test(n);
    let mut pixels = vec![0.0; n * a.image_len()];
    for (img, out) in imgs.iter().zip(pixels.chunks_exact_mut(a.image_len())) {
        let img = engine::preprocess::resize_crop(img, &spec).unwrap();
        attack::pixels(&img, &spec, out).unwrap();
    }
    (a, pixels, labels)
}

/// Directional derivatives of the summed cross-entropy along `dirs`, by central differences
/// with step `h`, against `grad . dir`.
fn check_directions(name: &str, a: &mut Attacker, pixels: &[f32], labels: &[i64], h: f32) {
    check_loss_directions(name, a, pixels, labels, None, Loss::CrossEntropy, h);
}

/// [`check_directions`] for any loss.
fn check_loss_directions(
    name: &str,
    a: &mut Attacker,
    pixels: &[f32],
    labels: &[i64],
    targets: Option<&[i64]>,
    loss: Loss,
    h: f32,
) {
    let batch = labels.len();
    let g = a.loss_gradient(pixels, batch, labels, targets, loss).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let norm = g.grad.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut dirs: Vec<Vec<f32>> = vec![g.grad.iter().map(|v| v / norm).collect()];
    for _ in 0..3 {
        let d: Vec<f32> = (0..pixels.len()).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        dirs.push(d.iter().map(|v| v / n).collect());
    }
    for (k, d) in dirs.iter().enumerate() {
        let analytic: f32 = g.grad.iter().zip(d).map(|(a, b)| a * b).sum();
        let mut moved = |s: f32| -> f32 {
            let x: Vec<f32> = pixels.iter().zip(d).map(|(p, v)| p + s * v).collect();
            a.loss_gradient(&x, batch, labels, targets, loss)
                .unwrap()
                .loss
                .iter()
                .sum()
        };
        let fd = (moved(h) - moved(-h)) / (2.0 * h);
        eprintln!("{name} direction {k}: analytic {analytic:.5}, finite difference {fd:.5}");
        assert!(
            (analytic - fd).abs() <= 0.03 * analytic.abs().max(0.05 * norm),
            "{name} direction {k}: analytic {analytic}, finite difference {fd}"
        );
    }
}

#[test]
fn shipped_efficientnet_gradient_matches_finite_differences_and_engine_logits() {
    let (mut a, pixels, labels) = shipped_pixels(8);
    assert_eq!((a.image_len(), a.classes()), (784, 10));
    let forward = engine::onnx::read_model(&shipped().model_path).unwrap();
    let spec = GradientSpec::from_preprocess(&shipped().config.preprocess_spec());
    let with_grad = attack::add_input_gradient(&forward, &spec).unwrap();
    eprintln!(
        "fashion-mnist-effnet:3: {} nodes forward, {} with the gradient",
        forward.graph.node.len(),
        with_grad.graph.node.len()
    );
    let names: Vec<&str> = with_grad.graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["logits", "loss", "pixels_grad"]);
    check_directions("fashion-mnist-effnet:3", &mut a, &pixels, &labels, 1e-2);

    // The logits are those the engine computes from the normalised image.
    let artifact = shipped();
    let spec = artifact.config.preprocess_spec();
    let mut session = engine::session::ModelSession::load(runtime(), &artifact, &options()).unwrap();
    let (imgs, _) = fashion_mnist_test(8);
    let mut normalised = vec![0.0; pixels.len()];
    for (img, out) in imgs.iter().zip(normalised.chunks_exact_mut(784)) {
        engine::preprocess::to_tensor(&engine::preprocess::resize_crop(img, &spec).unwrap(), &spec, out).unwrap();
    }
    let want = session.infer(&normalised, 8).unwrap();
    let got = a.gradient(&pixels, 8, &labels).unwrap();
    for (g, w) in got.logits.iter().zip(&want.data) {
        assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{g} vs {w}");
    }
}

/// The AutoAttack losses of the gradient graph: values equal to the host definition
/// (`autoattack::loss_and_dz`) at the graph's logits, gradients matching finite differences,
/// and the forward-only logits equal to the gradient graph's.
#[test]
fn autoattack_losses_match_their_definition_and_finite_differences() {
    let (mut a, pixels, labels) = shipped_pixels(6);
    let targets: Vec<i64> = labels.iter().map(|&l| (l + 3) % 10).collect();
    let logits = a.logits(&pixels, 6).unwrap();
    for loss in [Loss::CrossEntropy, Loss::Dlr, Loss::DlrTargeted, Loss::LogitDifference] {
        let g = a.loss_gradient(&pixels, 6, &labels, Some(&targets), loss).unwrap();
        for (i, row) in g.logits.chunks_exact(10).enumerate() {
            let (want, _) = autoattack::loss_and_dz(row, labels[i] as usize, targets[i] as usize, loss);
            assert!(
                (g.loss[i] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{loss:?} image {i}: graph {} vs host {want}",
                g.loss[i]
            );
        }
        for (x, y) in g.logits.iter().zip(&logits) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "forward-only logits {y} vs {x}"
            );
        }
        check_loss_directions(
            &format!("{loss:?}"),
            &mut a,
            &pixels,
            &labels,
            Some(&targets),
            loss,
            1e-2,
        );
    }
    // A targeted loss without targets, and a class out of range, are refused.
    assert!(a.loss_gradient(&pixels, 6, &labels, None, Loss::DlrTargeted).is_err());
    let bad = vec![10i64; 6];
    assert!(
        a.loss_gradient(&pixels, 6, &labels, Some(&bad), Loss::LogitDifference)
            .is_err()
    );
}

#[test]
fn fgsm_at_eps_zero_changes_nothing() {
    let (mut a, pixels, labels) = shipped_pixels(16);
    let out = a.fgsm(&pixels, 16, Some(&labels), 0.0).unwrap();
    assert_eq!(out.adversarial, pixels);
    assert_eq!(out.clean_predictions(), out.adversarial_predictions());
    let out = a.fgsm(&pixels, 16, None, 0.0).unwrap();
    assert_eq!(out.clean_predictions(), out.adversarial_predictions());
    assert!(matches!(a.fgsm(&pixels, 16, None, 1.5), Err(AttackError::Parameter(_))));
    assert!(matches!(
        a.fgsm(&pixels[1..], 16, None, 0.1),
        Err(AttackError::Shape(_))
    ));
    assert!(matches!(
        a.fgsm(&pixels, 16, Some(&[10; 16]), 0.1),
        Err(AttackError::Label { .. })
    ));
}

#[test]
fn fgsm_and_pgd_lower_accuracy_on_fashion_mnist() {
    let n = 48;
    let (mut a, pixels, labels) = shipped_pixels(n);
    let accuracy =
        |pred: &[usize]| pred.iter().zip(&labels).filter(|(p, l)| **p as i64 == **l).count() as f32 / n as f32;
    let eps = 0.05;
    let start = std::time::Instant::now();
    let fgsm = a.fgsm(&pixels, n, Some(&labels), eps).unwrap();
    let fgsm_time = start.elapsed();
    let clean = accuracy(&fgsm.clean_predictions());
    let after_fgsm = accuracy(&fgsm.adversarial_predictions());
    let config = PgdConfig::standard(eps, 10, 0);
    let start = std::time::Instant::now();
    let pgd = a.pgd(&pixels, n, Some(&labels), &config).unwrap();
    eprintln!("FGSM on {n} images: {fgsm_time:?}; PGD-10: {:?} (CPU)", start.elapsed());
    let after_pgd = accuracy(&pgd.adversarial_predictions());
    eprintln!("accuracy on {n} test images: clean {clean:.3}, FGSM(eps {eps}) {after_fgsm:.3}, PGD-10 {after_pgd:.3}");
    assert!(clean >= 0.8, "clean accuracy {clean}");
    assert!(after_fgsm < clean - 0.2, "FGSM: {after_fgsm} vs clean {clean}");
    assert!(after_pgd <= after_fgsm, "PGD {after_pgd} vs FGSM {after_fgsm}");
    for (adv, x) in [&fgsm.adversarial, &pgd.adversarial]
        .into_iter()
        .flat_map(|v| v.iter().zip(&pixels))
    {
        assert!((0.0..=1.0).contains(adv) && (adv - x).abs() <= eps + 1e-6);
    }
    // Seeded: the same run again gives the same images.
    assert_eq!(
        a.pgd(&pixels, n, Some(&labels), &config).unwrap().adversarial,
        pgd.adversarial
    );
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// torchvision's ResNet, MobileNetV2/V3 and EfficientNet (width-reduced, random weights,
/// 32x32) as torch.onnx exports them, dynamo and TorchScript: logits and the pixel gradient
/// against torch's forward and autograd (scripts/make_attack_reference.py).
#[test]
fn torch_onnx_exports_match_torch_autograd() {
    let dir = data("torch");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let models = manifest["models"].as_array().unwrap();
    assert!(models.len() >= 6);
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let mut preprocess = spec(3, 32, 32, Layout::Nchw);
    preprocess.mean = floats(&manifest["mean"]);
    preprocess.std = floats(&manifest["std"]);
    for m in models {
        let name = m["name"].as_str().unwrap();
        let model = engine::onnx::read_model(&dir.join(format!("{name}.onnx"))).unwrap();
        let mut a = attacker(&model, &preprocess);
        let labels: Vec<i64> = m["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_i64().unwrap())
            .collect();
        let pixels = read_f32(&dir.join(format!("{name}.pixels.bin")));
        let got = a.gradient(&pixels, labels.len(), &labels).unwrap();
        let logits = read_f32(&dir.join(format!("{name}.logits.bin")));
        for (g, w) in got.logits.iter().zip(&logits) {
            assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{name}: logit {g} vs torch {w}");
        }
        compare(
            name,
            &got.grad,
            &read_f32(&dir.join(format!("{name}.grad.bin"))),
            1e-4,
            0,
        );
    }
}

#[test]
fn where_max_min_pow_slice_split_and_global_max_pool() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = GraphBuilder::new("extra");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 6, 6]));
    let a = conv(&mut g, &mut rng, &x, 3, 6, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    // Split channels 2 + 4; the first part is used twice, the second through a slice.
    let split = g.initializer_i64("split", &[2], vec![2, 4]);
    let parts = g.op_multi("Split", &[a.as_str(), &split], 2, vec![Attr::int("axis", 1)]);
    let starts = g.initializer_i64("starts", &[2], vec![1, -5]);
    let ends = g.initializer_i64("ends", &[2], vec![3, 100]);
    let axes = g.initializer_i64("slice_axes", &[2], vec![1, 3]);
    let s = g.op("Slice", &[parts[1].as_str(), &starts, &ends, &axes], vec![]);
    // s: [N, 2, 6, 5]; p: parts[0] cut to the same shape.
    let s0 = g.initializer_i64("s0", &[1], vec![0]);
    let e0 = g.initializer_i64("e0", &[1], vec![5]);
    let ax3 = g.initializer_i64("ax3", &[1], vec![3]);
    let p = g.op("Slice", &[parts[0].as_str(), &s0, &e0, &ax3], vec![]);
    let hi = g.op("Max", &[&p, &s], vec![]);
    let lo = g.op("Min", &[&p, &s], vec![]);
    let half = g.initializer_f32("half", &[], vec![0.5]);
    let cond = g.op("Greater", &[p.as_str(), &half], vec![]);
    let w = g.op("Where", &[&cond, &hi, &lo], vec![]);
    let three = g.initializer_f32("three", &[], vec![3.0]);
    let cubed = g.op("Pow", &[w.as_str(), &three], vec![]);
    let both = g.op("Add", &[&cubed, &p], vec![]);
    // A global max per channel, broadcast back.
    let gmax = g.op("GlobalMaxPool", &[&s], vec![]);
    let both = g.op("Add", &[&both, &gmax], vec![]);
    let flat = g.op("Flatten", &[&both], vec![]);
    let logits = linear(&mut g, &mut rng, &flat, 2 * 6 * 5, 4);
    let model = out(&mut g, &logits, 4);
    // Small steps: a max over 30 values has near-ties that larger ones cross.
    check_all_coordinates("extra", &model, &spec(3, 6, 6, Layout::Nchw), 3e-4);
}

/// A ResNet-D written by our trainer's exporter (BatchNorm folded into Conv, deep stem,
/// stem MaxPool, AveragePool shortcuts in ceil mode, Gemm head, `logits` output name):
/// made by scripts/make_attack_resnet.sh.
#[test]
fn trainer_exported_resnet_gradient_matches_finite_differences() {
    let artifact = engine::artifact::ModelArtifact::open(&data("trainer-resnet-d.onnx"), None).unwrap();
    assert!(artifact.self_described);
    let spec = artifact.config.preprocess_spec();
    assert_eq!((spec.channels(), spec.crop_height), (1, 30));
    let model = engine::onnx::read_model(&artifact.model_path).unwrap();
    let ops = engine::onnx::ModelInfo::from_model(&model).op_counts;
    for op in [
        "Conv",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Gemm",
        "Add",
        "Relu",
    ] {
        assert!(ops.contains_key(op), "{op} missing from {ops:?}");
    }
    // A random-weight ReLU network has many kinks and small per-pixel gradients (float32
    // noise of the differences is a few percent of them): a wider per-coordinate tolerance,
    // and the directional derivatives below, which average the noise away.
    check_all_coordinates_within("trainer-resnet-d", &model, &spec, 1e-3, 5e-2, 6);
    let mut a = Attacker::load(runtime(), &artifact, &options()).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let pixels: Vec<f32> = (0..4 * a.image_len()).map(|_| rng.random_range(0.0..1.0)).collect();
    check_directions("trainer-resnet-d", &mut a, &pixels, &[1, 2, 3, 4], 1e-3);
}

/// A small CNN at `opset` with a fixed or symbolic batch.
fn small_cnn(opset: i64, batch: Dim) -> ModelProto {
    let mut rng = StdRng::seed_from_u64(6);
    let mut g = GraphBuilder::new("small");
    let x = g.input(
        "input",
        ElemType::Float32,
        &[batch.clone(), 3.into(), 6.into(), 6.into()],
    );
    let a = conv(&mut g, &mut rng, &x, 3, 4, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    let a = g.op(
        "MaxPool",
        &[&a],
        vec![Attr::ints("kernel_shape", &[2, 2]), Attr::ints("strides", &[2, 2])],
    );
    let f = g.op("Flatten", &[&a], vec![]);
    let logits = linear(&mut g, &mut rng, &f, 36, 3);
    g.node("Identity", &[&logits], &["out"], vec![]);
    g.output("out", ElemType::Float32, &[batch, 3.into()]);
    g.build(opset).unwrap()
}

#[test]
fn opsets_13_to_21_and_fixed_batch_sizes() {
    let spec = spec(3, 6, 6, Layout::Nchw);
    let mut rng = StdRng::seed_from_u64(8);
    let pixels: Vec<f32> = (0..3 * 108).map(|_| rng.random_range(0.0..1.0)).collect();
    let labels = [0, 1, 2];
    let reference = attacker(&small_cnn(17, Dim::batch()), &spec)
        .gradient(&pixels, 3, &labels)
        .unwrap();
    for opset in [13, 15, 18, 21] {
        // Opsets below 16 are written at 16 (ScatterElements with reduction).
        let graph =
            attack::add_input_gradient(&small_cnn(opset, Dim::batch()), &GradientSpec::from_preprocess(&spec)).unwrap();
        assert_eq!(graph.opset_import[0].version, opset.max(16));
        let got = attacker(&small_cnn(opset, Dim::batch()), &spec)
            .gradient(&pixels, 3, &labels)
            .unwrap();
        assert_eq!(got, reference, "opset {opset}");
    }
    // A model that takes exactly 2 images: 3 are run as 2 + (1 padded to 2).
    let got = attacker(&small_cnn(17, Dim::Fixed(2)), &spec)
        .gradient(&pixels, 3, &labels)
        .unwrap();
    for (a, b) in got
        .grad
        .iter()
        .zip(&reference.grad)
        .chain(got.logits.iter().zip(&reference.logits))
    {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert_eq!(got.grad.len(), reference.grad.len());
}

/// The attacker follows the engine's device policy. This machine has no CUDA (or this build
/// lacks the `cuda` feature): asking for CUDA falls back to CPU, or fails when strict.
#[test]
fn device_policy_is_the_engines() {
    use engine::device::{Device, DevicePolicy};
    if runtime().has_cuda_provider() {
        return;
    }
    let artifact = shipped();
    let options = SessionOptions {
        device: Device::Cuda(0),
        policy: DevicePolicy::FallBackToCpu,
        intra_threads: 1,
        ..SessionOptions::default()
    };
    let a = Attacker::load(runtime(), &artifact, &options).unwrap();
    assert_eq!(a.device(), Device::Cpu);
    let strict = SessionOptions {
        policy: DevicePolicy::Strict,
        ..options
    };
    let err = Attacker::load(runtime(), &artifact, &strict).unwrap_err();
    assert!(err.to_string().contains("cuda:0"), "{err}");
}

// ----- reflect Pad (blur pool) and nearest Resize (Big-Little) -----
// Every coordinate of the pixel gradient against central differences with no outlier
// allowed (no ReLU/MaxPool kinks in these graphs), and the variants the rules refuse.

/// Flatten, a random dense layer to `classes` logits, and the `out` output.
fn head(g: &mut GraphBuilder, rng: &mut StdRng, x: &str, features: i64, classes: i64, batch: Dim) -> ModelProto {
    let flat = g.op("Flatten", &[x], vec![]);
    let w = g.initializer_f32(
        "fc_w",
        &[classes, features],
        weights(rng, (classes * features) as usize, 2.0 / (features as f32).sqrt()),
    );
    let logits = g.op("Gemm", &[flat.as_str(), &w], vec![Attr::int("transB", 1)]);
    g.node("Identity", &[&logits], &["out"], vec![]);
    g.output("out", ElemType::Float32, &[batch, classes.into()]);
    std::mem::take(g).build(17).unwrap()
}

/// The exporter's blur-pool padding: `pads` as an input, reflect mode.
fn reflect_pad(g: &mut GraphBuilder, x: &str, pads: &[i64]) -> String {
    let p = ints(g, "pads", pads);
    g.op("Pad", &[x, p.as_str()], vec![Attr::string("mode", "reflect")])
}

/// Nearest `Resize` by constant `scales` as the exporter writes it (roi input empty).
fn upsample(g: &mut GraphBuilder, x: &str, scales: &[f32]) -> String {
    let s = g.fresh("scales");
    let s = g.initializer_f32(&s, &[scales.len() as i64], scales.to_vec());
    g.op(
        "Resize",
        &[x, "", s.as_str()],
        vec![
            Attr::string("mode", "nearest"),
            Attr::string("coordinate_transformation_mode", "asymmetric"),
            Attr::string("nearest_mode", "floor"),
        ],
    )
}

/// An int64 vector initializer named after `hint`.
fn ints(g: &mut GraphBuilder, hint: &str, values: &[i64]) -> String {
    let name = g.fresh(hint);
    g.initializer_i64(&name, &[values.len() as i64], values.to_vec())
}

/// `x` cropped on H and W to the size of `like` (the exporter's Shape + Slice + Slice).
fn crop_to(g: &mut GraphBuilder, x: &str, like: &str) -> String {
    let shape = g.op("Shape", &[like], vec![]);
    let two = ints(g, "two", &[2]);
    let four = ints(g, "four", &[4]);
    let zero = ints(g, "zero", &[0]);
    let hw = g.op("Slice", &[shape.as_str(), &two, &four, &zero], vec![]);
    let origin = ints(g, "origin", &[0, 0]);
    let axes = ints(g, "axes", &[2, 3]);
    g.op("Slice", &[x, origin.as_str(), &hw, &axes], vec![])
}

/// Blur pool twice: on the input with wide asymmetric widths (up to size - 1, so the
/// mirrored strips overlap), and the exporter's one-pixel form before a strided depthwise
/// conv, between smooth activations.
fn blur_model() -> ModelProto {
    let mut rng = StdRng::seed_from_u64(21);
    let mut g = GraphBuilder::new("reflect");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 5, 6]));
    // H 5 -> 2 + 5 + 3 = 10, W 6 -> 4 + 6 + 1 = 11.
    let p = reflect_pad(&mut g, &x, &[0, 0, 2, 4, 0, 0, 3, 1]);
    let a = conv(
        &mut g,
        &mut rng,
        &p,
        3,
        3,
        3,
        vec![Attr::int("group", 3), Attr::ints("strides", &[2, 2])],
    );
    // [N, 3, 4, 5]
    let a = g.op("Sigmoid", &[&a], vec![]);
    let a = conv(&mut g, &mut rng, &a, 3, 4, 3, vec![Attr::ints("pads", &[1, 1, 1, 1])]);
    let a = g.op("Tanh", &[&a], vec![]);
    let p = reflect_pad(&mut g, &a, &[0, 0, 1, 1, 0, 0, 1, 1]);
    let a = conv(
        &mut g,
        &mut rng,
        &p,
        4,
        4,
        3,
        vec![Attr::int("group", 4), Attr::ints("strides", &[2, 2])],
    );
    // [N, 4, 2, 3]
    let a = g.op("Tanh", &[&a], vec![]);
    head(&mut g, &mut rng, &a, 4 * 2 * 3, 4, Dim::batch())
}

#[test]
fn reflect_pad_and_depthwise_conv_match_finite_differences() {
    check_all_coordinates_within(
        "reflect pad",
        &blur_model(),
        &spec(3, 5, 6, Layout::Nchw),
        1e-2,
        2e-2,
        0,
    );
}

/// The forms of the `Conv` rule's stride-1 `Conv` rewrite at odd sizes: a strided depthwise
/// conv with asymmetric pads, one with a depth multiplier (two outputs per channel),
/// dilation and an end pad that its last window does not reach (the zeros after the last
/// value cropped), and a dense kernel smaller than its stride (input positions no window
/// reads get no gradient).
fn strided_depthwise_model() -> ModelProto {
    let mut rng = StdRng::seed_from_u64(31);
    let mut g = GraphBuilder::new("strided depthwise");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 9, 7]));
    let strided = |pads: &[i64]| {
        vec![
            Attr::int("group", 3),
            Attr::ints("strides", &[2, 2]),
            Attr::ints("pads", pads),
        ]
    };
    // [N, 3, 4, 4]
    let a = conv(&mut g, &mut rng, &x, 3, 3, 3, strided(&[1, 2, 0, 1]));
    let a = g.op("Sigmoid", &[&a], vec![]);
    let mut attrs = strided(&[2, 1, 1, 2]);
    attrs.push(Attr::ints("dilations", &[2, 1]));
    // [N, 6, 2, 3]
    let b = conv(&mut g, &mut rng, &a, 3, 6, 3, attrs);
    let b = g.op("Tanh", &[&b], vec![]);
    let b = g.op("Flatten", &[&b], vec![]);
    // [N, 2, 3, 2]
    let d = conv(&mut g, &mut rng, &x, 3, 2, 2, vec![Attr::ints("strides", &[3, 3])]);
    let d = g.op("Tanh", &[&d], vec![]);
    let d = g.op("Flatten", &[&d], vec![]);
    let features = g.op("Concat", &[&b, &d], vec![Attr::int("axis", 1)]);
    head(&mut g, &mut rng, &features, 36 + 12, 4, Dim::batch())
}

#[test]
fn strided_padded_depthwise_and_multiplier_convs_match_finite_differences() {
    check_all_coordinates_within(
        "strided depthwise",
        &strided_depthwise_model(),
        &spec(3, 9, 7, Layout::Nchw),
        1e-2,
        2e-2,
        0,
    );
}

/// Big-Little: a strided branch upsampled x2 by nearest Resize, cropped to the other
/// branch's size with Shape + Slice and added to it; then a second Resize by 1 x 3.
fn big_little_model() -> ModelProto {
    let mut rng = StdRng::seed_from_u64(22);
    let mut g = GraphBuilder::new("resize");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 7, 5]));
    // big: [N, 4, 4, 3] -> x2 -> [N, 4, 8, 6]; little: [N, 4, 6, 4].
    let big = conv(
        &mut g,
        &mut rng,
        &x,
        3,
        4,
        3,
        vec![Attr::ints("strides", &[2, 2]), Attr::ints("pads", &[1, 1, 1, 1])],
    );
    let big = g.op("Sigmoid", &[&big], vec![]);
    let up = upsample(&mut g, &big, &[1.0, 1.0, 2.0, 2.0]);
    let little = conv(&mut g, &mut rng, &x, 3, 4, 2, vec![]);
    let little = g.op("Tanh", &[&little], vec![]);
    let cropped = crop_to(&mut g, &up, &little);
    let sum = g.op("Add", &[&cropped, &little], vec![]);
    let a = g.op("Tanh", &[&sum], vec![]);
    // [N, 4, 6, 4] -> [N, 4, 6, 12], then a strided conv to [N, 2, 3, 6].
    let a = upsample(&mut g, &a, &[1.0, 1.0, 1.0, 3.0]);
    let a = conv(
        &mut g,
        &mut rng,
        &a,
        4,
        2,
        3,
        vec![Attr::ints("strides", &[2, 2]), Attr::ints("pads", &[1, 1, 1, 1])],
    );
    let a = g.op("Sigmoid", &[&a], vec![]);
    head(&mut g, &mut rng, &a, 2 * 3 * 6, 4, Dim::batch())
}

#[test]
fn nearest_resize_with_shape_slice_crop_matches_finite_differences() {
    check_all_coordinates_within(
        "nearest resize",
        &big_little_model(),
        &spec(3, 7, 5, Layout::Nchw),
        1e-2,
        2e-2,
        0,
    );
}

/// `sizes` that are integer multiples of a static input (fixed batch 2): x3 on H, x2 on W.
#[test]
fn nearest_resize_by_sizes_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut g = GraphBuilder::new("sizes");
    let x = g.input("input", ElemType::Float32, &[2.into(), 3.into(), 4.into(), 4.into()]);
    let a = conv(&mut g, &mut rng, &x, 3, 2, 3, vec![]);
    let a = g.op("Sigmoid", &[&a], vec![]);
    let sizes = g.initializer_i64("sizes", &[4], vec![2, 2, 6, 4]);
    let up = g.op(
        "Resize",
        &[a.as_str(), "", "", sizes.as_str()],
        vec![
            Attr::string("coordinate_transformation_mode", "asymmetric"),
            Attr::string("nearest_mode", "floor"),
        ],
    );
    let a = conv(&mut g, &mut rng, &up, 2, 2, 3, vec![Attr::ints("strides", &[2, 1])]);
    let a = g.op("Tanh", &[&a], vec![]);
    let model = head(&mut g, &mut rng, &a, 2 * 2 * 2, 3, Dim::Fixed(2));
    check_all_coordinates_within(
        "nearest resize (sizes)",
        &model,
        &spec(3, 4, 4, Layout::Nchw),
        1e-2,
        2e-2,
        0,
    );
}

/// A one-node model `op(input)` with `inputs` after the first and `attrs`, then a head.
fn one_op(op: &str, extra: &[(&str, Vec<i64>)], scales: Option<&[f32]>, attrs: Vec<Attr>) -> ModelProto {
    let mut g = GraphBuilder::new("refused");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[3, 4, 4]));
    let mut inputs = vec![x];
    for (name, values) in extra {
        inputs.push(g.initializer_i64(name, &[values.len() as i64], values.clone()));
    }
    if let Some(s) = scales {
        inputs.push(String::new());
        inputs.push(g.initializer_f32("scales", &[s.len() as i64], s.to_vec()));
    }
    let y = g.op(op, &inputs, attrs);
    let flat = g.op("Flatten", &[&y], vec![]);
    g.node("ReduceSum", &[&flat], &["out"], vec![Attr::int("keepdims", 1)]);
    g.output("out", ElemType::Float32, &Dim::batched(&[1]));
    g.build(17).unwrap()
}

/// The error of transforming `model`, which must be `Unsupported` for `op`.
fn refusal(model: &ModelProto, op: &str) -> String {
    let spec = GradientSpec::from_preprocess(&spec(3, 4, 4, Layout::Nchw));
    match attack::add_input_gradient(model, &spec) {
        Err(e @ AttackError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("operator {op}")), "{msg}");
            msg
        }
        other => panic!("expected Unsupported for {op}, got {other:?}"),
    }
}

#[test]
fn unsupported_resize_and_pad_variants_are_refused_by_name() {
    let nearest = |coords: &str, rounding: &str| {
        vec![
            Attr::string("coordinate_transformation_mode", coords),
            Attr::string("nearest_mode", rounding),
        ]
    };
    // The supported form passes (and the checks below differ from it in one thing each).
    let ok = one_op(
        "Resize",
        &[],
        Some(&[1.0, 1.0, 2.0, 2.0]),
        nearest("asymmetric", "floor"),
    );
    attack::add_input_gradient(&ok, &GradientSpec::from_preprocess(&spec(3, 4, 4, Layout::Nchw))).unwrap();

    let mut linear = nearest("asymmetric", "floor");
    linear.push(Attr::string("mode", "linear"));
    let msg = refusal(&one_op("Resize", &[], Some(&[1.0, 1.0, 2.0, 2.0]), linear), "Resize");
    assert!(msg.contains("resize_0") && msg.contains("mode linear"), "{msg}");
    let msg = refusal(
        &one_op(
            "Resize",
            &[],
            Some(&[1.0, 1.0, 2.0, 2.0]),
            nearest("half_pixel", "floor"),
        ),
        "Resize",
    );
    assert!(msg.contains("coordinate_transformation_mode half_pixel"), "{msg}");
    let msg = refusal(
        &one_op(
            "Resize",
            &[],
            Some(&[1.0, 1.0, 2.0, 2.0]),
            nearest("asymmetric", "round_prefer_floor"),
        ),
        "Resize",
    );
    assert!(msg.contains("nearest_mode round_prefer_floor"), "{msg}");
    let msg = refusal(
        &one_op(
            "Resize",
            &[],
            Some(&[1.0, 1.0, 1.5, 2.0]),
            nearest("asymmetric", "floor"),
        ),
        "Resize",
    );
    assert!(msg.contains("scales [1.0, 1.0, 1.5, 2.0]"), "{msg}");
    let msg = refusal(
        &one_op(
            "Resize",
            &[],
            Some(&[1.0, 2.0, 2.0, 2.0]),
            nearest("asymmetric", "floor"),
        ),
        "Resize",
    );
    assert!(msg.contains("scales"), "{msg}");

    // Reflect padding on the channel axis, edge mode, widths not below the size.
    let reflect = || vec![Attr::string("mode", "reflect")];
    let msg = refusal(
        &one_op("Pad", &[("pads", vec![0, 1, 0, 0, 0, 1, 0, 0])], None, reflect()),
        "Pad",
    );
    assert!(
        msg.contains("pad_0") && msg.contains("reflect") && msg.contains("axis 1"),
        "{msg}"
    );
    let msg = refusal(
        &one_op(
            "Pad",
            &[("pads", vec![0, 0, 1, 1, 0, 0, 1, 1])],
            None,
            vec![Attr::string("mode", "edge")],
        ),
        "Pad",
    );
    assert!(msg.contains("mode edge"), "{msg}");
    let msg = refusal(
        &one_op("Pad", &[("pads", vec![0, 0, 4, 0, 0, 0, 0, 0])], None, reflect()),
        "Pad",
    );
    assert!(msg.contains("size 4") && msg.contains("(4, 0)"), "{msg}");
    // The same pads in constant mode are fine.
    let constant = one_op("Pad", &[("pads", vec![0, 1, 4, 0, 0, 1, 0, 0])], None, vec![]);
    attack::add_input_gradient(&constant, &GradientSpec::from_preprocess(&spec(3, 4, 4, Layout::Nchw))).unwrap();
}
