//! What the attacks need of a model: logits and loss gradients on `[0, 1]` pixels.
//!
//! A trait, so the attacks are tested on small models written in Rust as well as on ONNX
//! models through [`crate::attack::Attacker`].

use engine::preprocess::Layout;

use crate::attack::AttackError;
pub use crate::attack::Loss;

/// One loss-gradient evaluation of a batch: logits, the loss per image and the gradient of
/// their sum (the attack module's [`crate::attack::Gradient`]).
pub use crate::attack::Gradient as LossGrad;

/// The threat model: the norm the perturbation is bounded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Norm {
    /// `max |delta| <= eps`.
    #[serde(rename = "Linf")]
    Linf,
    /// `sqrt(sum delta^2) <= eps`.
    #[serde(rename = "L2")]
    L2,
}

/// Where the values of one image are in its pixel slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// Channel position.
    pub layout: Layout,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the image has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of channel `c`, row `y`, column `x` within one image.
    pub fn index(&self, c: usize, y: usize, x: usize) -> usize {
        match self.layout {
            Layout::Nchw => (c * self.height + y) * self.width + x,
            Layout::Nhwc => (y * self.width + x) * self.channels + c,
        }
    }
}

/// A classifier on `[0, 1]` pixels (normalisation inside), as the attacks see it. Pixel
/// slices hold `batch * shape().len()` values in `shape().layout`.
pub trait Classifier {
    /// The input image's shape.
    fn shape(&self) -> ImageShape;

    /// Logits per image.
    fn classes(&self) -> usize;

    /// Logits of a batch, `batch * classes`.
    fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, AttackError>;

    /// Logits, per-image `loss` and the gradient of its sum over the batch. `labels` holds one
    /// class per image; `targets` one per image for the targeted losses (ignored otherwise).
    fn loss_grad(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: &[i64],
        targets: Option<&[i64]>,
        loss: Loss,
    ) -> Result<LossGrad, AttackError>;
}

/// The index of the largest value of a row of logits (the first of equal ones, as
/// `torch.max`; a NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    crate::metrics::top1(row).unwrap_or(0)
}

/// The losses of one row of logits `z` and their gradients `dL/dz`, computed on the host: the
/// definition the gradient graph's loss nodes follow, used by [`toy::Linear`] and the tests.
pub fn loss_and_dz(z: &[f32], y: usize, t: usize, loss: Loss) -> (f32, Vec<f32>) {
    let k = z.len();
    let mut dz = vec![0.0f32; k];
    // Indices sorted by decreasing logit (ties: the lower index first, as TopK).
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    let at = |r: usize| order.get(r).copied();
    match loss {
        Loss::CrossEntropy => {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = z.iter().map(|&v| (v - m).exp()).sum();
            for (d, &v) in dz.iter_mut().zip(z) {
                *d = (v - m).exp() / sum;
            }
            dz[y] -= 1.0;
            (m + sum.ln() - z[y], dz)
        }
        Loss::Dlr => {
            let (p1, p2, p3) = (at(0).unwrap_or(0), at(1).unwrap_or(0), at(2).unwrap_or(0));
            let other = if p1 == y { p2 } else { p1 };
            let d = z[p1] - z[p3] + 1e-12;
            let u = z[y] - z[other];
            dz[y] -= 1.0 / d;
            dz[other] += 1.0 / d;
            dz[p1] += u / (d * d);
            dz[p3] -= u / (d * d);
            (-u / d, dz)
        }
        Loss::DlrTargeted => {
            let (p1, p3, p4) = (at(0).unwrap_or(0), at(2).unwrap_or(0), at(3).unwrap_or(0));
            let d = z[p1] - 0.5 * (z[p3] + z[p4]) + 1e-12;
            let u = z[y] - z[t];
            dz[y] -= 1.0 / d;
            dz[t] += 1.0 / d;
            dz[p1] += u / (d * d);
            dz[p3] -= 0.5 * u / (d * d);
            dz[p4] -= 0.5 * u / (d * d);
            (-u / d, dz)
        }
        Loss::LogitDifference => {
            dz[t] += 1.0;
            dz[y] -= 1.0;
            (z[t] - z[y], dz)
        }
    }
}

/// Small classifiers written in Rust, for the attacks' unit tests.
#[cfg(test)]
pub(crate) mod toy {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// `z = W x + b`, or `z = W relu(V x)` with a hidden layer: exact gradients, any shape.
    pub struct Linear {
        pub shape: ImageShape,
        pub classes: usize,
        /// `[hidden, len]` when `hidden > 0`.
        pub v: Vec<f32>,
        pub hidden: usize,
        /// `[classes, hidden or len]`.
        pub w: Vec<f32>,
        pub b: Vec<f32>,
        /// Runs so far (forward or gradient), for query counts.
        pub runs: usize,
    }

    impl Linear {
        /// Random weights; `hidden` 0 for a linear model.
        pub fn new(shape: ImageShape, classes: usize, hidden: usize, seed: u64) -> Self {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = shape.len();
            let width = if hidden > 0 { hidden } else { n };
            let scale = 1.0 / (width as f32).sqrt();
            Self {
                shape,
                classes,
                v: (0..hidden * n)
                    .map(|_| (rng.random::<f32>() - 0.5) * 4.0 / (n as f32).sqrt())
                    .collect(),
                hidden,
                w: (0..classes * width)
                    .map(|_| (rng.random::<f32>() - 0.5) * 4.0 * scale)
                    .collect(),
                b: (0..classes).map(|_| rng.random::<f32>() - 0.5).collect(),
                runs: 0,
            }
        }

        fn features(&self, x: &[f32]) -> Vec<f32> {
            if self.hidden == 0 {
                return x.to_vec();
            }
            let n = self.shape.len();
            (0..self.hidden)
                .map(|h| {
                    self.v[h * n..(h + 1) * n]
                        .iter()
                        .zip(x)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        .max(0.0)
                })
                .collect()
        }

        fn row(&self, x: &[f32]) -> Vec<f32> {
            let f = self.features(x);
            let width = f.len();
            (0..self.classes)
                .map(|c| {
                    self.b[c]
                        + self.w[c * width..(c + 1) * width]
                            .iter()
                            .zip(&f)
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                })
                .collect()
        }
    }

    impl Classifier for Linear {
        fn shape(&self) -> ImageShape {
            self.shape
        }

        fn classes(&self) -> usize {
            self.classes
        }

        fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, AttackError> {
            self.runs += 1;
            let n = self.shape.len();
            assert_eq!(pixels.len(), batch * n);
            Ok(pixels.chunks_exact(n).flat_map(|x| self.row(x)).collect())
        }

        fn loss_grad(
            &mut self,
            pixels: &[f32],
            batch: usize,
            labels: &[i64],
            targets: Option<&[i64]>,
            loss: Loss,
        ) -> Result<LossGrad, AttackError> {
            self.runs += 1;
            let n = self.shape.len();
            assert_eq!(pixels.len(), batch * n);
            let mut out = LossGrad {
                logits: Vec::new(),
                loss: Vec::new(),
                grad: Vec::new(),
            };
            for (i, x) in pixels.chunks_exact(n).enumerate() {
                let z = self.row(x);
                let t = targets.map_or(0, |t| t[i] as usize);
                let (l, dz) = loss_and_dz(&z, labels[i] as usize, t, loss);
                let f = self.features(x);
                let width = f.len();
                // d/df = W^T dz, then through relu and V.
                let mut df = vec![0.0f32; width];
                for (c, &d) in dz.iter().enumerate() {
                    for (j, g) in df.iter_mut().enumerate() {
                        *g += d * self.w[c * width + j];
                    }
                }
                let dx: Vec<f32> = if self.hidden == 0 {
                    df
                } else {
                    let mut dx = vec![0.0f32; n];
                    for h in 0..self.hidden {
                        if f[h] > 0.0 {
                            for (j, g) in dx.iter_mut().enumerate() {
                                *g += df[h] * self.v[h * n + j];
                            }
                        }
                    }
                    dx
                };
                out.logits.extend(z);
                out.loss.push(l);
                out.grad.extend(dx);
            }
            Ok(out)
        }
    }

    /// Finite-difference check of one loss's gradient at a random point.
    #[test]
    fn toy_gradients_match_finite_differences() {
        let shape = ImageShape {
            layout: Layout::Nchw,
            channels: 1,
            height: 3,
            width: 3,
        };
        let mut m = Linear::new(shape, 6, 5, 7);
        let x: Vec<f32> = (0..9).map(|i| 0.1 + 0.08 * i as f32).collect();
        for loss in [Loss::CrossEntropy, Loss::Dlr, Loss::DlrTargeted, Loss::LogitDifference] {
            let g = m.loss_grad(&x, 1, &[2], Some(&[4]), loss).unwrap();
            for j in 0..9 {
                let h = 1e-3;
                let mut xp = x.clone();
                xp[j] += h;
                let mut xm = x.clone();
                xm[j] -= h;
                let lp = m.loss_grad(&xp, 1, &[2], Some(&[4]), loss).unwrap().loss[0];
                let lm = m.loss_grad(&xm, 1, &[2], Some(&[4]), loss).unwrap().loss[0];
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g.grad[j]).abs() < 2e-2 * (1.0 + fd.abs()),
                    "{loss:?} pixel {j}: {fd} vs {}",
                    g.grad[j]
                );
            }
        }
    }
}
