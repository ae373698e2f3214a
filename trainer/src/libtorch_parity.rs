//! The two backends agree (tests, `tch` feature): the same weights give the same logits on flex
//! and on LibTorch for every architecture, one optimiser step of each gives the same weights,
//! a short real training run on LibTorch learns as well as on flex, and its checkpoints resume
//! and export the same way.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::TrainDevice;
use crate::checkpoint::{RunDir, load_weights, save_weights};
use crate::config::{OptimizerConfig, OptimizerKind};
use crate::data::Normalize;
use crate::evaluate::evaluate;
use crate::export::tests::{config_for, small_specs, tweak_specs};
use crate::export::{ExportOptions, to_onnx};
use crate::loss::soft_cross_entropy;
use crate::model::{Classifier, ModelSpec};
use crate::optimizer::build_optimizer;
use crate::train::tests::{fashion, interrupt_after_first_epoch, quick_config, tiny_spec};
use crate::train::{TrainData, train};

fn flex() -> Device {
    crate::default_device()
}

fn tch() -> Device {
    TrainDevice::TCH_CPU
        .device()
        .expect("the tch feature gives LibTorch on the CPU")
}

/// Every architecture of the export tests: EfficientNet (swish, squeeze-excite), Lite (ReLU6,
/// TensorFlow padding), ResNet basic / D / small-input, and each Assemble-ResNet tweak.
fn architectures() -> Vec<(String, ModelSpec)> {
    small_specs()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .chain(tweak_specs())
        .collect()
}

/// The same spec with every random rate at zero (dropout, drop path, DropBlock), so that a
/// training-mode step is deterministic on both backends. DropBlock has no parameters.
fn without_noise(spec: &ModelSpec) -> ModelSpec {
    let mut s = spec.clone();
    match &mut s {
        ModelSpec::EfficientNet(e) => {
            e.dropout = 0.0;
            e.drop_path_rate = 0.0;
        }
        ModelSpec::ResNet(r) => {
            r.drop_path_rate = 0.0;
            r.drop_block = None;
        }
    }
    s
}

/// Replaces every parameter with values from its own seeded generator (burn's random streams
/// are process-wide and shared with the tests running beside these): kernels and matrices
/// N(0, 1/fan_in), vectors (BatchNorm scale, shift and statistics, biases) in [0.5, 1.5), so
/// that the comparisons are the same on every run.
struct Seeded(StdRng);

impl ModuleMapper for Seeded {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = if D == 1 {
                (0..n).map(|_| self.0.random_range(0.5..1.5)).collect()
            } else {
                let fan_in = (n / dims[0].max(1)).max(1) as f32;
                (0..n)
                    .map(|_| self.0.sample::<f32, _>(StandardNormal) / fan_in.sqrt())
                    .collect()
            };
            Tensor::from_data(TensorData::new(values, dims), &t.device())
        })
    }
}

/// `spec` built on flex with seeded weights.
fn seeded_model(spec: &ModelSpec) -> Classifier {
    spec.init(&flex()).unwrap().map(&mut Seeded(StdRng::seed_from_u64(7)))
}

/// Every float tensor of the module (parameters and BatchNorm statistics), flattened, in
/// visiting order, with its dimensions.
struct Values(Vec<(Vec<usize>, Vec<f32>)>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let values = tensor.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.0.push((dims, values));
    }
}

fn values(model: &Classifier) -> Vec<(Vec<usize>, Vec<f32>)> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn logits(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// A seeded N(0, 1) input batch.
fn input(spec: &ModelSpec, batch: usize) -> TensorData {
    let (r, c) = (spec.resolution() as usize, spec.in_channels());
    let mut rng = StdRng::seed_from_u64(11);
    let values: Vec<f32> = (0..batch * c * r * r).map(|_| rng.sample(StandardNormal)).collect();
    TensorData::new(values, [batch, c, r, r])
}

#[test]
fn eval_forward_matches_on_both_backends() {
    for (name, spec) in architectures() {
        let model = seeded_model(&spec);
        let x = input(&spec, 3);
        let on_flex = logits(model.clone().forward(Tensor::from_data(x.clone(), &flex())));
        let on_tch = logits(model.to_device(&tch()).forward(Tensor::from_data(x, &tch())));
        let d = max_diff(&on_flex, &on_tch);
        println!("forward parity {name}: max |logit diff| {d:.2e}");
        assert!(d < 1e-4, "{name}: {d}");
    }
}

/// One training-mode step (BatchNorm on batch statistics, backward, the optimiser with weight
/// decay on its groups) from the same weights on both backends: the loss and every updated
/// parameter agree.
#[test]
fn one_optimiser_step_matches_on_both_backends() {
    let mut cases: Vec<(String, ModelSpec, OptimizerKind)> = architectures()
        .into_iter()
        .map(|(n, s)| (n, without_noise(&s), OptimizerKind::Sgd))
        .collect();
    for kind in [OptimizerKind::RmsProp, OptimizerKind::AdamW] {
        cases.push((format!("tiny-efficientnet {kind:?}"), without_noise(&tiny_spec()), kind));
    }
    for (name, spec, kind) in cases {
        let config = OptimizerConfig {
            kind,
            // Each optimiser at a learning rate it is used with (AdamW: the experiments' 3e-3).
            // Adam's first step is lr * g / (|g| + eps), about lr * sign(g): it scales the
            // rounding of the smallest gradients up to lr, so at lr 0.05 it moves weights by
            // up to 1.65e-4 more on one backend than on the other.
            lr: if kind == OptimizerKind::AdamW { 3e-3 } else { 0.05 },
            weight_decay: 1e-3,
            ..OptimizerConfig::default()
        };
        let start = seeded_model(&spec);
        // Onto each backend the way checkpoints travel: saved once, loaded on its device.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("start.bpk");
        save_weights(&start, &saved).unwrap();
        let x = input(&spec, 4);
        let classes = spec.num_classes();
        let targets: Vec<f32> = (0..4 * classes)
            .map(|i| f32::from(i % classes == (i / classes) % classes))
            .collect();
        let step = |device: Device| {
            let device = device.autodiff();
            let model = load_weights(&spec, &saved, &device).unwrap();
            let out = model.forward(Tensor::from_data(x.clone(), &device));
            let loss = soft_cross_entropy(
                out,
                Tensor::from_data(TensorData::new(targets.clone(), [4, classes]), &device),
            );
            let value: f32 = loss.clone().into_scalar::<f32>();
            let mut grads = loss.backward();
            let grads = GradientsParams::from_module(&mut grads, &model);
            let mut optim = build_optimizer(&model, &config);
            let model = optim.step(config.lr, model, grads);
            (value, values(&model.valid()))
        };
        let (loss_flex, after_flex) = step(flex());
        let (loss_tch, after_tch) = step(tch());
        let diffs: Vec<f32> = after_flex
            .iter()
            .zip(&after_tch)
            .map(|((_, a), (_, b))| max_diff(a, b))
            .collect();
        let worst = diffs.iter().copied().fold(0.0, f32::max);
        // How far the optimiser moved the kernels and matrices (the vectors include BatchNorm
        // statistics, which the forward pass moves by itself).
        let moved = after_flex
            .iter()
            .zip(values(&start))
            .filter(|((dims, _), _)| dims.len() >= 2)
            .map(|((_, a), (_, b))| max_diff(a, &b))
            .fold(0.0, f32::max);
        // ReLU and ReLU6 have kinks: an activation whose input lies within rounding of 0 (or 6)
        // passes its gradient on one backend and not on the other, which changes the step of
        // every layer before it by a small part of the step. A wrong gradient (padding,
        // BatchNorm, a grouped convolution) or optimiser changes it by about the step itself.
        // So the weights agree within 1e-4, or within 1% of the step's largest move where that
        // is more. (Measured: every case within 1.2e-7 to 8.9e-5, except the Lite with
        // TensorFlow padding on an AMD EPYC: one ReLU6 of the first expand convolution, which
        // moved the layers before it by up to 4.0e-4 against a step of 9.0e-2.)
        let over: Vec<String> = after_flex
            .iter()
            .zip(&diffs)
            .enumerate()
            .filter(|(_, (_, d))| **d > 1e-4)
            .map(|(i, ((dims, _), d))| format!("tensor {i} {dims:?}: {d:.2e}"))
            .collect();
        println!(
            "step parity {name}: loss {loss_flex:.6} vs {loss_tch:.6}, max |weight diff| {worst:.2e} \
             ({} tensors; the step moved kernels by up to {moved:.2e}; over 1e-4: {over:?})",
            after_flex.len()
        );
        assert!(
            (loss_flex - loss_tch).abs() < 1e-4,
            "{name}: loss {loss_flex} vs {loss_tch}"
        );
        assert!(moved > 1e-3, "{name}: the step did not move the kernels ({moved})");
        assert!(
            worst < (0.01 * moved).max(1e-4),
            "{name}: {worst} against a step of {moved}: {over:?}"
        );
    }
}

/// The tiny EfficientNet of the training test on 1,000 real Fashion-MNIST images, 3 epochs, on
/// each backend: both learn, to the same accuracy within the noise of different random
/// streams (dropout, drop path). A run interrupted on flex resumes on LibTorch (weights and
/// optimiser state), and the LibTorch-trained weights export to the same graph as the flex
/// ones and load on flex with the same logits.
#[test]
fn training_on_tch_learns_like_flex_and_checkpoints_cross_over() {
    let (labelled, test) = fashion(100, 1000);
    let normalize = Normalize::from_set(&labelled);
    let spec = tiny_spec();
    let config = quick_config();
    let data = TrainData {
        labelled: &labelled,
        pseudo: None,
        eval: Some(&test),
        normalize: &normalize,
        teachers: None,
    };
    let mut top1 = Vec::new();
    let mut runs = Vec::new();
    for device in [flex(), tch()] {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let (model, history) = train(&spec, &config, &data, &run, &device).unwrap();
        assert_eq!(history.len(), 3);
        let acc = evaluate(&model, &test, &normalize).unwrap();
        println!(
            "{device:?}: 3 epochs in {:.1} s, test top-1 {:.1}%",
            started.elapsed().as_secs_f64(),
            acc * 100.0
        );
        top1.push(acc);
        runs.push((dir, run, model));
    }
    assert!(top1.iter().all(|&a| a > 0.3), "{top1:?} (chance is 0.1)");
    assert!((top1[0] - top1[1]).abs() < 0.08, "flex {} vs tch {}", top1[0], top1[1]);

    // The LibTorch weights on flex: same logits, and the same ONNX graph as flex-trained ones.
    let (_, tch_run, tch_model) = &runs[1];
    let on_flex = load_weights(&spec, &tch_run.weights(), &flex()).unwrap();
    let x = input(&spec, 5);
    let d = max_diff(
        &logits(on_flex.forward(Tensor::from_data(x.clone(), &flex()))),
        &logits(tch_model.forward(Tensor::from_data(x, &tch()))),
    );
    assert!(d < 1e-4, "tch weights loaded on flex: {d}");
    let options = ExportOptions::new(config_for(&spec));
    let graph = |m: &Classifier| {
        let g = to_onnx(m, &spec, &options).unwrap().graph.unwrap();
        let nodes: Vec<(String, String)> = g.node.iter().map(|n| (n.op_type.clone(), n.name.clone())).collect();
        let inits: Vec<(String, Vec<i64>)> = g.initializer.iter().map(|t| (t.name.clone(), t.dims.clone())).collect();
        (nodes, inits)
    };
    let flex_model = load_weights(&spec, &runs[0].1.weights(), &flex()).unwrap();
    assert_eq!(
        graph(&on_flex),
        graph(&flex_model),
        "the two backends' weights export differently"
    );

    // Interrupted on flex, resumed on LibTorch.
    let (_, flex_run, _) = &runs[0];
    interrupt_after_first_epoch(flex_run);
    let (resumed, history) = train(&spec, &config, &data, flex_run, &tch()).unwrap();
    assert_eq!(history.iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
    let acc = evaluate(&resumed, &test, &normalize).unwrap();
    println!("flex epoch 1 + tch epochs 2-3: test top-1 {:.1}%", acc * 100.0);
    assert!(acc > 0.3, "{acc}");
}
