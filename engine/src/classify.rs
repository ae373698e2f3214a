//! Turning logits into answers: softmax and the top-k classes with their labels.

use serde::Serialize;

/// One ranked class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index (logit position).
    pub index: usize,
    /// Class name, when the model has labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Softmax probability.
    pub score: f32,
}

/// Numerically stable softmax. NaN logits give NaN probabilities, never a panic.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` highest-scoring classes of one image's logits, best first, ties broken by index.
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| Prediction {
            index,
            label: labels.get(index).cloned(),
            score: probs[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1001.0, 999.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let e = [1.0f32, (1.0f32).exp(), (-1.0f32).exp()];
        let s: f32 = e.iter().sum();
        for (a, b) in p.iter().zip(e.iter().map(|x| x / s)) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn top_k_ranks_and_labels() {
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        let t = top_k(&[0.1, 3.0, 2.0], 2, &labels);
        assert_eq!(t.iter().map(|p| p.index).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(t[0].label.as_deref(), Some("b"));
        assert_eq!(top_k(&[0.0, 0.0], 5, &[]).len(), 2);
        assert!(top_k(&[f32::NAN, 1.0], 2, &[]).len() == 2);
    }
}
