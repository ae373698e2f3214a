//! Building the model's optimiser from [`OptimizerConfig`]: the algorithm and its constants,
//! and the parameter groups that keep weight decay off BatchNorm parameters and biases. The
//! optimiser's state is saved and restored by [`crate::checkpoint`].

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{
    AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig,
};
use burn::tensor::Tensor;

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::model::Classifier;

/// Rank-1 parameters (BatchNorm scale and shift, biases): excluded from weight decay.
pub(crate) struct VectorIds(pub(crate) Vec<ParamId>);

impl ModuleVisitor for VectorIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 1 {
            self.0.push(param.id);
        }
    }
}

/// A fresh optimiser for `model`: `c.kind` with `c.weight_decay` on the matrices and
/// convolution kernels, and a second group without decay for every rank-1 parameter.
pub fn build_optimizer(model: &Classifier, c: &OptimizerConfig) -> ModuleOptimizer {
    let mut vectors = VectorIds(Vec::new());
    model.visit(&mut vectors);
    let no_decay = ParamGroup::from_ids(vectors.0);
    match c.kind {
        OptimizerKind::Sgd => {
            let make = |wd: f32| {
                SgdConfig::new()
                    .with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(c.momentum)
                            .with_dampening(0.0)
                            .with_nesterov(true),
                    ))
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                    .build()
            };
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
        OptimizerKind::RmsProp => {
            let make = |wd: f32| {
                RmsPropConfig::new()
                    .with_alpha(0.9)
                    .with_momentum(c.momentum as f32)
                    .with_epsilon(1e-3)
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                    .build()
            };
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
        OptimizerKind::AdamW => {
            let make = |wd: f32| AdamWConfig::new().with_weight_decay(wd).build();
            ModuleOptimizer::from(make(c.weight_decay)).with_group(no_decay, make(0.0), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::tiny_spec;

    #[test]
    fn weight_decay_skips_batchnorm_and_biases() {
        let model = tiny_spec().init(&crate::default_device()).unwrap();
        let mut v = VectorIds(Vec::new());
        model.visit(&mut v);
        // Every BatchNorm has 4 vectors (scale, shift, running mean and variance); SE and the
        // classifier have biases. Nothing of rank > 1 is in the group.
        let Classifier::EfficientNet(m) = &model else {
            unreachable!()
        };
        let bns = 2 + m
            .blocks
            .iter()
            .map(|b| 2 + usize::from(b.conv_pw.is_some()))
            .sum::<usize>();
        let ses = m.blocks.iter().filter(|b| b.se.is_some()).count();
        assert_eq!(v.0.len(), 4 * bns + 2 * ses + 1);
    }
}
