//! The exponential moving average of the weights (Polyak averaging, as timm's `ModelEmaV2`):
//! evaluation, checkpoints and export use the average when a run keeps one. Its own module
//! because it is matched to the model by parameter id, which is easy to break (a reloaded
//! model must keep the ids), and because it is tested on its own.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// An exponential moving average of a model's float tensors (weights and BatchNorm
/// statistics), kept off the autodiff graph.
#[derive(Debug)]
pub struct Ema<M> {
    average: M,
    decay: f64,
}

impl<M: Module> Ema<M> {
    /// An average that starts at `average` (an eval copy of the model, with the model's
    /// parameter ids) and moves with `decay` per step.
    pub fn new(average: M, decay: f64) -> Self {
        Self { average, decay }
    }

    /// The average after global step `step` (0-based) of `model`:
    /// `ema = d * ema + (1 - d) * model` with `d = min(decay, (1 + step) / (10 + step))`, the
    /// timm-style warm-up that keeps the random initialisation from dominating early on.
    pub fn update(self, model: &M, step: usize) -> Self {
        let mut snap = Snapshot(HashMap::new());
        model.visit(&mut snap);
        let decay = self.decay.min((1.0 + step as f64) / (10.0 + step as f64));
        Self {
            average: self.average.map(&mut EmaUpdate { model: snap.0, decay }),
            decay: self.decay,
        }
    }

    /// The averaged model.
    pub fn model(&self) -> &M {
        &self.average
    }

    /// The averaged model, by value.
    pub fn into_model(self) -> M {
        self.average
    }
}

/// Flattened values of every float tensor (weights and BatchNorm statistics), by id.
pub(crate) struct Snapshot(pub(crate) HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Off the autodiff graph: the average must not keep every step's graph alive.
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// `ema = decay * ema + (1 - decay) * model`, tensor by tensor (matched by parameter id).
pub(crate) struct EmaUpdate {
    pub(crate) model: HashMap<ParamId, Tensor<1>>,
    pub(crate) decay: f64,
}

impl ModuleMapper for EmaUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(new) = self.model.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|e| {
            let shape = e.shape();
            let new = new.to_device(&e.device()).reshape(shape);
            e.mul_scalar(decay) + new.mul_scalar(1.0 - decay)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Classifier;
    use crate::train::tests::tiny_spec;

    struct Shift(f64);

    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let s = self.0;
            param.map(|t| t.add_scalar(s))
        }
    }

    fn classifier_bias(m: &Classifier) -> Tensor<1> {
        let Classifier::EfficientNet(m) = m else { unreachable!() };
        m.classifier.bias.as_ref().unwrap().val()
    }

    #[test]
    fn ema_moves_towards_the_model() {
        let device = crate::default_device();
        let spec = tiny_spec();
        let model = spec.init(&device).unwrap();
        let ema = spec.init(&device).unwrap();
        // Same ids, different values: make the EMA a copy of the model shifted by one.
        let shifted = model.clone().map(&mut Shift(1.0));
        let mut snap = Snapshot(HashMap::new());
        model.visit(&mut snap);
        let updated = shifted.map(&mut EmaUpdate {
            model: snap.0,
            decay: 0.9,
        });
        let Classifier::EfficientNet(a) = &updated else {
            unreachable!()
        };
        let Classifier::EfficientNet(b) = &model else {
            unreachable!()
        };
        let diff: Vec<f32> = (a.classifier.bias.as_ref().unwrap().val() - b.classifier.bias.as_ref().unwrap().val())
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(diff.iter().all(|d| (d - 0.9).abs() < 1e-5), "{diff:?}");
        drop(ema);
    }

    /// [`Ema::update`] warms its decay up: at step 0 it is 1/10, so the average moves 9/10 of
    /// the way to the model; later steps use the configured decay.
    #[test]
    fn the_decay_warms_up() {
        let model = tiny_spec().init(&crate::default_device()).unwrap();
        let ema = Ema::new(model.clone().map(&mut Shift(1.0)), 0.5).update(&model, 0);
        let diff: Vec<f32> = (classifier_bias(ema.model()) - classifier_bias(&model))
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(diff.iter().all(|d| (d - 0.1).abs() < 1e-5), "{diff:?}");
        let ema = ema.update(&model, 1000);
        let diff: Vec<f32> = (classifier_bias(&ema.into_model()) - classifier_bias(&model))
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(diff.iter().all(|d| (d - 0.05).abs() < 1e-5), "{diff:?}");
    }
}
