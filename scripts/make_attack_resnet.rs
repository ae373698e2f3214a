//! Writes eval/tests/data/attack/trainer-resnet-d.onnx: a small ResNet-D exported by Hardy's
//! own trainer (`trainer::export`), with random weights and random BatchNorm statistics
//! folded in, for eval's attack tests (eval must not depend on the trainer).
//!
//! Run through `scripts/make_attack_resnet.sh`, which builds it as an example of the root
//! package (the only package that depends on the trainer) and removes it again.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Distribution, Tensor};
use engine::config::ModelConfig;
use trainer::ModelSpec;
use trainer::export::{ExportOptions, export};
use trainer::resnet::{BlockKind, ResNetSpec};

/// Every vector (BatchNorm scale, shift, running statistics, biases) to values in
/// [0.5, 1.5), so that folding has real statistics to fold.
struct RandomVectors;

impl ModuleMapper for RandomVectors {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D == 1 {
            param.map(|t| t.random_like(Distribution::Uniform(0.5, 1.5)))
        } else {
            param
        }
    }
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: make_attack_resnet OUT.onnx");
    // ResNet-D (deep stem, average-pool shortcut: AveragePool with ceil_mode and
    // count_include_pad=0), basic blocks, one channel, 30 px so feature maps are odd.
    let mut s = ResNetSpec::named("resnet18d", 10).unwrap();
    s.block = BlockKind::Basic;
    s.layers = vec![1, 1, 1];
    s.base_width = 4;
    s.in_channels = 1;
    s.resolution = 30;
    let spec = ModelSpec::ResNet(s);
    let device = trainer::default_device();
    let model = spec.init(&device).unwrap().map(&mut RandomVectors);
    let mut config = ModelConfig::default();
    config.preprocess.mean = vec![0.286];
    config.preprocess.std = vec![0.353];
    let mut options = ExportOptions::new(config);
    options.doc = "random-weight ResNet-D for eval's attack tests (scripts/make_attack_resnet.sh)".into();
    export(&model, &spec, &options, std::path::Path::new(&out)).unwrap();
    println!("wrote {out}");
}
