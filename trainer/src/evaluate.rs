//! Running a trained model without noise: class probabilities for a whole image set (the
//! un-noised teacher of Noisy Student) and top-1 accuracy (the per-epoch evaluation).

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::TrainerError;
use crate::data::{Batch, ImageSet, Normalize, make_batch};
use crate::model::Classifier;

/// A batch's images as an NCHW tensor on `device`.
pub(crate) fn batch_tensor(batch: &Batch, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.n, batch.c, batch.h, batch.w]),
        device,
    )
}

/// Softmax probabilities (with `temperature`) of an eval-mode model on every image of `set`,
/// row-major `[len, classes]`: the un-noised teacher of Noisy Student.
pub fn predict_probs(
    model: &Classifier,
    set: &ImageSet,
    normalize: &Normalize,
    temperature: f64,
    batch_size: usize,
) -> Result<Vec<f32>, TrainerError> {
    let model = model.valid();
    // Where the model's weights are: the backend that trained it, or the one it was loaded on.
    let device = model.devices().into_iter().next().unwrap_or_else(crate::default_device);
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut out = Vec::new();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = make_batch(set, chunk, None, normalize, 0)?;
        let logits = model.forward(batch_tensor(&batch, &device));
        let probs = softmax(logits.div_scalar(temperature), 1);
        let v: Vec<f32> = probs
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| TrainerError::Tensor {
                name: "probabilities".into(),
                reason: format!("{e:?}"),
            })?;
        out.extend(v);
    }
    Ok(out)
}

/// Top-1 accuracy of an eval-mode model on a labelled set.
pub fn evaluate(model: &Classifier, set: &ImageSet, normalize: &Normalize) -> Result<f64, TrainerError> {
    let classes = model_classes(model);
    let probs = predict_probs(model, set, normalize, 1.0, 256)?;
    let mut correct = 0usize;
    let mut counted = 0usize;
    for (i, row) in probs.chunks(classes).enumerate() {
        if let Some(label) = set.label(i) {
            counted += 1;
            if argmax(row) == label {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / counted.max(1) as f64)
}

fn model_classes(model: &Classifier) -> usize {
    match model {
        Classifier::EfficientNet(m) => m.classifier.weight.dims()[1],
        Classifier::ResNet(m) => m.fc.weight.dims()[1],
    }
}

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[]), 0);
    }
}
