//! The training losses and target arithmetic the objectives share: soft-target cross-entropy
//! (label smoothing, pseudo-labels and teachers' soft targets are all the same loss), smoothed
//! one-hot targets and mixup. Plain functions of tensors and vectors, so that benches and
//! tests use exactly what training uses.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// Mean soft-target cross-entropy `-sum_k t_k log softmax(z)_k` over the batch.
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    (log_softmax(logits, 1) * targets)
        .sum()
        .neg()
        .div_scalar(n.max(1) as f64)
}

/// Smoothed one-hot targets `(1 - eps) * onehot + eps / K`, row-major `[n, K]`.
pub fn smoothed_targets(labels: &[usize], classes: usize, eps: f32) -> Vec<f32> {
    let mut t = vec![eps / classes as f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        t[i * classes + l.min(classes - 1)] += 1.0 - eps;
    }
    t
}

/// Mixup with the batch reversed (timm's batch mode): row `i` becomes
/// `lambda * row_i + (1 - lambda) * row_{n-1-i}`, for images and targets alike.
pub fn mix_with_reversed(rows: &mut [f32], n: usize, lambda: f32) {
    if n < 2 || !rows.len().is_multiple_of(n) {
        return;
    }
    let len = rows.len() / n;
    let original = rows.to_vec();
    for (i, row) in rows.chunks_exact_mut(len).enumerate() {
        let other = &original[(n - 1 - i) * len..(n - i) * len];
        for (x, &y) in row.iter_mut().zip(other) {
            *x = lambda * *x + (1.0 - lambda) * y;
        }
    }
}

/// A draw of `Beta(alpha, alpha)` from a seed (0.5 for a degenerate `alpha`).
pub fn sample_beta(alpha: f32, seed: u64) -> f32 {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    rand_distr::Beta::new(alpha, alpha).map_or(0.5, |b| b.sample(&mut rng))
}

#[cfg(test)]
mod tests {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Int, TensorData};

    use super::*;

    #[test]
    fn soft_cross_entropy_with_one_hot_targets_is_cross_entropy() {
        let device = crate::default_device();
        let logits = Tensor::<2>::random([5, 4], burn::tensor::Distribution::Normal(0.0, 2.0), &device);
        let labels = [0usize, 3, 1, 2, 3];
        let t = smoothed_targets(&labels, 4, 0.0);
        let ours: f32 = soft_cross_entropy(logits.clone(), Tensor::from_data(TensorData::new(t, [5, 4]), &device))
            .into_scalar::<f32>();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.map(|l| l as i64).to_vec(), [5]), &device);
        let burn_ce: f32 = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, targets)
            .into_scalar::<f32>();
        assert!((ours - burn_ce).abs() < 1e-5, "{ours} vs {burn_ce}");
        let smooth = smoothed_targets(&labels, 4, 0.1);
        for row in smooth.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().any(|&v| (v - 0.925).abs() < 1e-6));
        }
    }

    #[test]
    fn mixup_blends_each_row_with_its_mirror() {
        let mut rows = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        mix_with_reversed(&mut rows, 3, 0.75);
        assert_eq!(rows, vec![0.875, 0.125, 0.0, 1.0, 0.625, 0.375]);
        for row in rows.chunks(2) {
            assert!(
                (row.iter().sum::<f32>() - 1.0).abs() < 1e-6,
                "targets stay distributions"
            );
        }
        let draws: Vec<f32> = (0..400).map(|s| sample_beta(0.2, s)).collect();
        assert!(draws.iter().all(|l| (0.0..=1.0).contains(l)));
        // Beta(0.2, 0.2) is U-shaped: most draws lie near 0 or 1; its mean is 0.5.
        let extreme = draws.iter().filter(|l| **l < 0.1 || **l > 0.9).count();
        assert!(extreme > 200, "{extreme} of 400 near the ends");
        let mean = draws.iter().sum::<f32>() / 400.0;
        assert!((mean - 0.5).abs() < 0.06, "mean {mean}");
    }
}
