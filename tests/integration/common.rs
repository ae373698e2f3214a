//! Shared helpers: the runtime, small models built in code, and a reference CNN in plain Rust.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use engine::{
    config::{METADATA_KEY, ModelConfig},
    onnx::{Attr, Dim, ElemType, GraphBuilder, write_model},
    runtime::{self, Runtime, RuntimeOptions},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ONNX Runtime, provisioned from PyPI into the cache on first use.
pub fn runtime() -> Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| runtime::init(&RuntimeOptions::default()).expect("ONNX Runtime"))
        .clone()
}

/// Rewrites the ONNX file at `path` with the batch dimension of its inputs and outputs fixed
/// to `batch`, as torch.onnx writes an export without dynamic axes.
pub fn fix_batch(path: &Path, batch: i64) {
    use engine::onnx::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto};
    let mut model = engine::onnx::read_model(path).unwrap();
    let graph = model.graph.as_mut().unwrap();
    for info in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        if let Some(type_proto::Value::TensorType(t)) = info.type_.as_mut().and_then(|t| t.value.as_mut())
            && let Some(dim) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
        {
            dim.value = Some(DimValue::DimValue(batch));
        }
    }
    write_model(&model, path).unwrap();
}

/// Runs `scripts/SCRIPT` with `args` in the CPU PyTorch environment (torch, torchvision,
/// torchattacks, onnx2torch) that `scripts/torch-env.sh` installs into the cache on first
/// use; fails the test if either fails, else returns the script's stdout.
pub fn torch_script(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let run = |program: &str, args: &[&std::ffi::OsStr], pythonpath: Option<&str>| {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        if let Some(p) = pythonpath {
            cmd.env("PYTHONPATH", p);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let env = root().join("scripts/torch-env.sh");
    let pythonpath = String::from_utf8(run("bash", &[env.as_os_str()], None)).unwrap();
    let script = root().join("scripts").join(script);
    let mut all = vec![script.as_os_str()];
    all.extend_from_slice(args);
    run("python3", &all, Some(pythonpath.trim()))
}

/// A Python package (pip requirement `spec`) and its dependencies, installed on first use
/// with `pip install --target` into `<cache>/<dir>`; returns that directory, for PYTHONPATH.
pub fn pip_package(dir: &str, spec: &str) -> PathBuf {
    let dir = engine::provision::cache_root().join(dir);
    let marker = dir.join(".complete");
    if !marker.is_file() {
        let _ = std::fs::remove_dir_all(&dir);
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
                "--target",
            ])
            .arg(&dir)
            .arg(spec)
            .status()
            .expect("run python3 -m pip (Python 3 with pip is required, see the README)");
        assert!(status.success(), "pip install {spec} failed");
        std::fs::write(&marker, spec).expect("write marker");
    }
    dir
}

/// Random weights, deterministic per seed, in [-0.5, 0.5).
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
}

/// A tiny CNN: Conv 3x3 (pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm.
pub struct TinyCnn {
    pub cin: usize,
    pub cout: usize,
    pub classes: usize,
    pub size: usize,
    pub conv_w: Vec<f32>,
    pub conv_b: Vec<f32>,
    pub fc_w: Vec<f32>,
    pub fc_b: Vec<f32>,
}

impl TinyCnn {
    pub fn new(cin: usize, cout: usize, classes: usize, size: usize, seed: u64) -> Self {
        Self {
            cin,
            cout,
            classes,
            size,
            conv_w: random(cout * cin * 9, seed),
            conv_b: random(cout, seed + 1),
            fc_w: random(classes * cout, seed + 2),
            fc_b: random(classes, seed + 3),
        }
    }

    /// Writes the network as `dir/model.onnx` (NCHW, or NHWC through a leading Transpose)
    /// with `config` in its metadata, the way our exporter does.
    pub fn write(&self, dir: &Path, nhwc: bool, config: &ModelConfig, opset: i64) -> PathBuf {
        let (c, s) = (self.cin as i64, self.size as i64);
        let mut g = GraphBuilder::new("tiny_cnn");
        let mut x = if nhwc {
            let x = g.input("image", ElemType::Float32, &Dim::batched(&[s, s, c]));
            g.op("Transpose", &[x], vec![Attr::ints("perm", &[0, 3, 1, 2])])
        } else {
            g.input("image", ElemType::Float32, &Dim::batched(&[c, s, s]))
        };
        let w = g.initializer_f32("conv_w", &[self.cout as i64, c, 3, 3], self.conv_w.clone());
        let b = g.initializer_f32("conv_b", &[self.cout as i64], self.conv_b.clone());
        x = g.op(
            "Conv",
            &[x, w, b],
            vec![Attr::ints("kernel_shape", &[3, 3]), Attr::ints("pads", &[1, 1, 1, 1])],
        );
        x = g.op("Relu", &[x], vec![]);
        x = g.op("GlobalAveragePool", &[x], vec![]);
        x = g.op("Flatten", &[x], vec![Attr::int("axis", 1)]);
        let fw = g.initializer_f32("fc_w", &[self.classes as i64, self.cout as i64], self.fc_w.clone());
        let fb = g.initializer_f32("fc_b", &[self.classes as i64], self.fc_b.clone());
        g.node("Gemm", &[x, fw, fb], &["logits"], vec![Attr::int("transB", 1)]);
        g.output("logits", ElemType::Float32, &Dim::batched(&[self.classes as i64]));
        g.metadata(METADATA_KEY, &config.to_toml());
        let model = g.build(opset).expect("valid graph");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("model.onnx");
        write_model(&model, &path).unwrap();
        path
    }

    /// The same network computed directly (NCHW input of one image), in f64.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (s, cin) = (self.size, self.cin);
        let mut pooled = vec![0f64; self.cout];
        for (o, p) in pooled.iter_mut().enumerate() {
            let mut sum = 0f64;
            for y in 0..s {
                for xx in 0..s {
                    let mut acc = self.conv_b[o] as f64;
                    for i in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if iy < 0 || ix < 0 || iy >= s as isize || ix >= s as isize {
                                    continue;
                                }
                                let v = x[i * s * s + iy as usize * s + ix as usize] as f64;
                                acc += v * self.conv_w[((o * cin + i) * 3 + ky) * 3 + kx] as f64;
                            }
                        }
                    }
                    sum += acc.max(0.0);
                }
            }
            *p = sum / (s * s) as f64;
        }
        (0..self.classes)
            .map(|k| {
                let dot: f64 = (0..self.cout)
                    .map(|o| self.fc_w[k * self.cout + o] as f64 * pooled[o])
                    .sum();
                (dot + self.fc_b[k] as f64) as f32
            })
            .collect()
    }
}

/// A config for a `size`x`size` model with `channels` channels and no resizing.
pub fn config_for(size: u32, channels: usize, labels: usize) -> ModelConfig {
    let mut c = ModelConfig {
        labels: (0..labels).map(|i| format!("class{i}")).collect(),
        ..Default::default()
    };
    c.preprocess.resolution = size;
    c.preprocess.crop_pct = 1.0;
    if channels == 1 {
        c.preprocess.color = engine::preprocess::ColorMode::Gray;
        c.preprocess.mean = vec![0.5];
        c.preprocess.std = vec![0.25];
    }
    c
}

/// Max absolute difference between two slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
