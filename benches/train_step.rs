//! Training-step time of a small EfficientNet in burn on one backend (`flex`, or `tch` in a
//! build with the `tch` feature), the Rust half of `benches/train_step.sh`, which runs the same
//! network, batch and optimiser in PyTorch eager and prints the ratios. Prints one JSON line:
//! the architecture (for the PyTorch side to rebuild), its parameter count and the median step
//! time.
//!
//! `cargo bench --bench train_step -- [BATCH] [STEPS] [flex|tch] [cpu|cuda[:N]]`

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor, TensorData};
use trainer::ModelSpec;
use trainer::train::{smoothed_targets, soft_cross_entropy};

/// The teacher of `trainer/experiments/fashion-mnist-noisy-student.toml`.
const CONFIG: &str = include_str!("../trainer/experiments/fashion-mnist-noisy-student.toml");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let batch: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let chosen = trainer::TrainDevice {
        backend: args.get(2).map_or(Ok(trainer::Backend::Flex), |s| s.parse())?,
        processor: args.get(3).map_or(Ok(trainer::Processor::Cpu), |s| s.parse())?,
    };
    let config = trainer::noisy_student::NoisyStudentConfig::from_toml(CONFIG, "experiment config")?;
    let spec = config.teacher.model;
    let ModelSpec::EfficientNet(e) = &spec else {
        return Err("the benchmark expects an EfficientNet".into());
    };
    let blocks: Vec<[usize; 5]> = e
        .blocks()
        .iter()
        .map(|b| [b.in_channels, b.out_channels, b.expand, b.kernel, b.stride])
        .collect();
    let device = chosen.device()?.autodiff();
    let mut model = spec.init(&device)?;
    // Same optimiser as the experiment; weight decay on everything is enough for timing.
    let mut optim = AdamWConfig::new().with_weight_decay(0.05).init();
    let res = spec.resolution() as usize;
    let x = Tensor::<4>::random([batch, 1, res, res], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let y = Tensor::<2>::from_data(
        TensorData::new(smoothed_targets(&labels, 10, 0.1), [batch, 10]),
        &device,
    );
    let mut times = Vec::new();
    for step in 0..steps + 2 {
        let t = Instant::now();
        let loss = soft_cross_entropy(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = loss.into_scalar::<f32>();
        if step >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "framework": match chosen.backend {
                trainer::Backend::Flex => format!("burn 0.22.1 flex ({})", chosen.processor),
                trainer::Backend::Tch => format!("burn 0.22.1 tch, LibTorch 2.9.0 ({})", chosen.processor),
            },
            "device": chosen.processor.to_string(),
            "batch": batch,
            "resolution": res,
            "stem": [e.stem_out(), e.stem_stride],
            "head": e.head_out(),
            "se_ratio": e.se_ratio,
            "blocks": blocks,
            "params": e.param_count(),
            "built_params": model.num_params(),
            "median_ms": median,
        })
    );
    Ok(())
}
