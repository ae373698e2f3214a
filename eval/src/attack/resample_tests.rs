//! The reflect-`Pad` and nearest-`Resize` rules, run by ONNX Runtime: every coordinate of
//! the pixel gradient of small graphs against central finite differences (the tolerance of
//! the integration tests in `eval/tests/attack.rs`: relative L2 error below 2e-2, no
//! coordinate off by more than 5% of the largest), and the variants the rules refuse.

use std::path::Path;
use std::sync::OnceLock;

use engine::onnx::{Attr, Dim, ElemType, GraphBuilder, ModelProto};
use engine::preprocess::{ColorMode, Interpolation, Layout, PreprocessSpec};
use engine::runtime::{Runtime, RuntimeOptions};
use engine::session::SessionOptions;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::attack::{AttackError, Attacker, GradientSpec, add_input_gradient};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| engine::runtime::init(&RuntimeOptions::default()).expect("ONNX Runtime"))
}

/// RGB, NCHW, `h x w`.
fn spec(h: u32, w: u32) -> PreprocessSpec {
    PreprocessSpec {
        resize_size: h.min(w),
        crop_height: h,
        crop_width: w,
        interpolation: Interpolation::Bilinear,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        color: ColorMode::Rgb,
        layout: Layout::Nchw,
    }
}

fn weights(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A conv `k x k` with random weights and bias; `group = cin = cout` makes it depthwise.
fn conv(g: &mut GraphBuilder, rng: &mut StdRng, x: &str, cin: i64, cout: i64, k: i64, attrs: Vec<Attr>) -> String {
    let group = attrs
        .iter()
        .find(|a| a.name() == "group")
        .map(|a| a.clone().into_proto().i)
        .unwrap_or(1);
    let fan_in = cin / group * k * k;
    let w = g.fresh("w");
    let w = g.initializer_f32(
        &w,
        &[cout, cin / group, k, k],
        weights(rng, (cout * fan_in) as usize, 1.5 / (fan_in as f32).sqrt()),
    );
    let b = g.fresh("b");
    let b = g.initializer_f32(&b, &[cout], weights(rng, cout as usize, 0.2));
    let mut all = vec![Attr::ints("kernel_shape", &[k, k])];
    all.extend(attrs);
    g.op("Conv", &[x, w.as_str(), b.as_str()], all)
}

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

/// Every coordinate of the gradient of `model` at random pixels against central
/// differences with step `h`, all perturbed images in one batch; prints the relative L2
/// error and the largest absolute difference.
fn check_all_coordinates(name: &str, model: &ModelProto, spec: &PreprocessSpec, h: f32) {
    let mut a = Attacker::from_model(
        runtime(),
        model,
        spec,
        None,
        None,
        &SessionOptions::default(),
        Path::new("test.onnx"),
    )
    .unwrap();
    let d = a.image_len();
    let batch = 2;
    let mut rng = StdRng::seed_from_u64(7);
    let pixels: Vec<f32> = (0..batch * d).map(|_| rng.random_range(0.05..0.95)).collect();
    let labels: Vec<i64> = (0..batch).map(|i| (i * 3 % a.classes()) as i64).collect();
    let base = a.gradient(&pixels, batch, &labels).unwrap();
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
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff: Vec<f32> = base.grad.iter().zip(&fd).map(|(a, b)| a - b).collect();
    let scale = norm(&fd);
    assert!(scale > 1e-6, "{name}: the finite-difference gradient is zero");
    let rel = norm(&diff) / scale;
    let max_diff = diff.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_ref = fd.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "{name}: {} coordinates, relative L2 error {rel:.2e}, max |analytic - finite difference| {max_diff:.2e} (max |gradient| {max_ref:.2e})",
        fd.len()
    );
    assert!(rel < 2e-2, "{name}: relative error {rel}");
    assert!(
        max_diff <= 0.05 * max_ref,
        "{name}: max difference {max_diff} of {max_ref}"
    );
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
    check_all_coordinates("reflect pad", &blur_model(), &spec(5, 6), 1e-2);
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
    check_all_coordinates("nearest resize", &big_little_model(), &spec(7, 5), 1e-2);
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
    check_all_coordinates("nearest resize (sizes)", &model, &spec(4, 4), 1e-2);
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
    let spec = GradientSpec::from_preprocess(&spec(4, 4));
    match add_input_gradient(model, &spec) {
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
    add_input_gradient(&ok, &GradientSpec::from_preprocess(&spec(4, 4))).unwrap();

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
    add_input_gradient(&constant, &GradientSpec::from_preprocess(&spec(4, 4))).unwrap();
}
