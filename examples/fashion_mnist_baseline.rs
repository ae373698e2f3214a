//! Trains the model Hardy ships until the trainer lands: softmax regression on Fashion-MNIST.
//!
//! It is a real model trained on real data (the Debian package `dataset-fashion-mnist`):
//! 784 grey pixels -> 10 classes, mini-batch SGD with momentum on the 60,000 training images,
//! evaluated on the 10,000 test images. The ONNX graph is written with Hardy's own graph
//! builder and carries its config in metadata, so the engine serves it with no config.toml.
//! It also writes the first test image of each class as a PNG sample.
//!
//! Run: `cargo run --release --example fashion_mnist_baseline` (about a minute on 2 cores).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use engine::{
    config::{METADATA_KEY, ModelConfig, PreprocessConfig},
    onnx::{Attr, Dim, ElemType, GraphBuilder, write_model},
    preprocess::ColorMode,
};
use rand::{SeedableRng, seq::SliceRandom};

const DATA: &str = "/usr/share/datasets/fashion-mnist";
/// Fashion-MNIST's class names, in label order (the data crate's one list).
const LABELS: [&str; 10] = data::fetch::FASHION_MNIST_CLASSES;
/// Pixel mean and standard deviation of the Fashion-MNIST training set, in [0, 1] units.
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;
const PIXELS: usize = 28 * 28;
const EPOCHS: usize = 15;
const BATCH: usize = 100;
const WEIGHT_DECAY: f32 = 1e-4;

fn read_idx(name: &str, magic: u32) -> Vec<u8> {
    let path = Path::new(DATA).join(name);
    let file = fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install dataset-fashion-mnist)", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .expect("gzip");
    let got = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    assert_eq!(got, magic, "{name}: bad IDX magic");
    let header = if magic == 2051 { 16 } else { 8 };
    bytes.split_off(header)
}

fn normalise(images: &[u8]) -> Vec<f32> {
    images.iter().map(|&p| (p as f32 / 255.0 - MEAN) / STD).collect()
}

/// logits = x W^T + b for one image; W is [10, 784] row-major (Gemm with transB = 1).
fn logits(w: &[f32], b: &[f32], x: &[f32]) -> [f32; 10] {
    let mut out = [0f32; 10];
    for (c, o) in out.iter_mut().enumerate() {
        *o = b[c]
            + w[c * PIXELS..(c + 1) * PIXELS]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum::<f32>();
    }
    out
}

fn accuracy(w: &[f32], b: &[f32], x: &[f32], y: &[u8]) -> f64 {
    let correct = y
        .iter()
        .enumerate()
        .filter(|&(i, &label)| {
            let l = logits(w, b, &x[i * PIXELS..(i + 1) * PIXELS]);
            let pred = (0..10).max_by(|&a, &c| l[a].total_cmp(&l[c])).unwrap();
            pred == label as usize
        })
        .count();
    correct as f64 / y.len() as f64
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let train_x = normalise(&read_idx("train-images-idx3-ubyte.gz", 2051));
    let train_y = read_idx("train-labels-idx1-ubyte.gz", 2049);
    let test_raw = read_idx("t10k-images-idx3-ubyte.gz", 2051);
    let test_x = normalise(&test_raw);
    let test_y = read_idx("t10k-labels-idx1-ubyte.gz", 2049);

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (mut w, mut b) = (vec![0f32; 10 * PIXELS], vec![0f32; 10]);
    let (mut vw, mut vb) = (vec![0f32; 10 * PIXELS], vec![0f32; 10]);
    let mut order: Vec<usize> = (0..train_y.len()).collect();
    for epoch in 0..EPOCHS {
        // Cosine-decayed learning rate, momentum 0.9.
        let lr = 0.05 * 0.5 * (1.0 + (std::f32::consts::PI * epoch as f32 / EPOCHS as f32).cos());
        order.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        for batch in order.chunks(BATCH) {
            let (mut gw, mut gb) = (vec![0f32; 10 * PIXELS], [0f32; 10]);
            for &i in batch {
                let x = &train_x[i * PIXELS..(i + 1) * PIXELS];
                let l = logits(&w, &b, x);
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                loss_sum += -((exps[train_y[i] as usize] / sum).ln() as f64);
                for c in 0..10 {
                    let g = exps[c] / sum - if c == train_y[i] as usize { 1.0 } else { 0.0 };
                    gb[c] += g;
                    for (gw, xv) in gw[c * PIXELS..(c + 1) * PIXELS].iter_mut().zip(x) {
                        *gw += g * xv;
                    }
                }
            }
            let n = batch.len() as f32;
            for ((wv, v), g) in w.iter_mut().zip(vw.iter_mut()).zip(&gw) {
                *v = 0.9 * *v + g / n + WEIGHT_DECAY * *wv;
                *wv -= lr * *v;
            }
            for ((bv, v), g) in b.iter_mut().zip(vb.iter_mut()).zip(gb) {
                *v = 0.9 * *v + g / n;
                *bv -= lr * *v;
            }
        }
        println!(
            "epoch {:>2}  lr {lr:.4}  train loss {:.4}  test top-1 {:.2}%",
            epoch + 1,
            loss_sum / train_y.len() as f64,
            100.0 * accuracy(&w, &b, &test_x, &test_y)
        );
    }
    let test_acc = accuracy(&w, &b, &test_x, &test_y);
    let train_acc = accuracy(&w, &b, &train_x, &train_y);

    let config = ModelConfig {
        labels: LABELS.iter().map(|s| s.to_string()).collect(),
        preprocess: PreprocessConfig {
            resolution: 28,
            crop_pct: 1.0,
            color: ColorMode::Gray,
            mean: vec![MEAN],
            std: vec![STD],
            ..Default::default()
        },
        ..Default::default()
    };
    let out_dir = root.join("models/fashion-mnist-linear/1");
    fs::create_dir_all(&out_dir).unwrap();
    export(&w, &b, &config, &out_dir.join("model.onnx"));
    fs::write(
        out_dir.join("training.json"),
        format!(
            "{{\n  \"model\": \"softmax regression 784 -> 10\",\n  \"data\": \"Debian dataset-fashion-mnist (60000 train / 10000 test)\",\n  \"epochs\": {EPOCHS},\n  \"batch_size\": {BATCH},\n  \"optimizer\": \"SGD momentum 0.9, lr 0.05 cosine, weight decay {WEIGHT_DECAY}\",\n  \"seed\": 0,\n  \"train_top1\": {train_acc:.4},\n  \"test_top1\": {test_acc:.4}\n}}\n"
        ),
    )
    .unwrap();

    let samples = root.join("samples/fashion-mnist");
    fs::create_dir_all(&samples).unwrap();
    for class in 0..10u8 {
        let i = test_y.iter().position(|&y| y == class).unwrap();
        let img = image::GrayImage::from_raw(28, 28, test_raw[i * PIXELS..(i + 1) * PIXELS].to_vec()).unwrap();
        let name = format!(
            "test{i:05}-{}.png",
            LABELS[class as usize].to_lowercase().replace([' ', '/'], "-")
        );
        img.save(samples.join(name)).unwrap();
    }
    println!(
        "test top-1 {:.2}%, train top-1 {:.2}%; wrote {}",
        100.0 * test_acc,
        100.0 * train_acc,
        out_dir.display()
    );
}

/// Writes the model as ONNX (opset 17): Flatten -> Gemm, with its config in metadata_props.
fn export(w: &[f32], b: &[f32], config: &ModelConfig, path: &Path) {
    let mut g = GraphBuilder::new("fashion_mnist_linear");
    g.doc_string("Softmax regression on Fashion-MNIST; see training.json beside this file.");
    let x = g.input("input", ElemType::Float32, &Dim::batched(&[1, 28, 28]));
    let flat = g.op("Flatten", &[x], vec![Attr::int("axis", 1)]);
    let weight = g.initializer_f32("weight", &[10, PIXELS as i64], w.to_vec());
    let bias = g.initializer_f32("bias", &[10], b.to_vec());
    g.node("Gemm", &[flat, weight, bias], &["logits"], vec![Attr::int("transB", 1)]);
    g.output("logits", ElemType::Float32, &Dim::batched(&[10]));
    g.metadata(METADATA_KEY, &config.to_toml());
    let model = g.build(17).expect("valid graph");
    write_model(&model, path).expect("write model");
}
