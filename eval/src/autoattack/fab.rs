//! FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
//! boundary attack"), targeted, as AutoAttack runs it: a port of the reference's
//! `FABAttack.perturb` with `targeted = True` and `attack_single_run` with `is_targeted`
//! (fra31/auto-attack, `fab_base.py`, `fab_pt.py`).
//!
//! AutoAttack's third attack; it looks for the adversarial point nearest to the image rather
//! than the worst loss within eps, which finds points APGD misses on models whose gradients
//! mislead a loss ascent. For each target class (the 2nd, 3rd, ... highest clean logit), each
//! iteration linearises `z_t - z_y` at the current point (one [`Classifier::loss_grad`] with
//! [`Loss::LogitDifference`]), projects both the current point and the clean image onto the
//! linearised decision boundary within the box `[0, 1]` (`fab_projections`), steps to a
//! convex combination of the two projections, overshot by `eta`, and, when that point is
//! adversarial, keeps it if it is the nearest so far and steps back towards the image by
//! `beta`. Only points within eps of the image count as fooled.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

use super::classifier::{Classifier, Loss, Norm, argmax};
use super::fab_projections::{projection_l2, projection_linf};
use crate::attack::AttackError;

/// The reference's "no adversarial point found yet" distance.
const NOT_FOUND: f64 = 1e10;

/// FAB settings (the reference's `FABAttack_PT` with `targeted = True`).
#[derive(Debug, Clone, PartialEq)]
pub struct FabConfig {
    /// Threat model.
    pub norm: Norm,
    /// Radius, in `[0, 1]` pixel units: the bound on what counts as fooled, and the scale of
    /// the random starts (restarts after the first).
    pub eps: f32,
    /// Target classes (the 2nd to the (n+1)-th highest clean logit; 9). Models with fewer
    /// than `n + 1` classes use all the other classes (the reference fails on them).
    pub n_target_classes: usize,
    /// Restarts per target (1 in AutoAttack's FAB-T); the first starts from the image, the
    /// others from a random point at half of eps from it.
    pub n_restarts: usize,
    /// Iterations per restart (100).
    pub n_iter: usize,
    /// Seed of the random starts.
    pub seed: u64,
    /// The largest weight of the clean image's projection in a step (0.1).
    pub alpha_max: f32,
    /// Overshoot of the projections (1.05).
    pub eta: f32,
    /// Backward step towards the clean image after an adversarial point (0.9).
    pub beta: f32,
}

impl FabConfig {
    /// AutoAttack "standard"'s FAB-T: 9 target classes, 1 restart, 100 iterations,
    /// `alpha_max` 0.1, `eta` 1.05, `beta` 0.9.
    pub fn standard(norm: Norm, eps: f32, seed: u64) -> Self {
        Self {
            norm,
            eps,
            n_target_classes: 9,
            n_restarts: 1,
            n_iter: 100,
            seed,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }

    /// Refuses settings the attack cannot run with.
    fn validate(&self) -> Result<(), AttackError> {
        let bad = |what: String| Err(AttackError::Parameter(format!("FAB-T: {what}")));
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps {} must be finite and >= 0", self.eps));
        }
        if self.n_target_classes == 0 || self.n_restarts == 0 || self.n_iter == 0 {
            return bad(format!(
                "target classes ({}), restarts ({}) and iterations ({}) must be at least 1",
                self.n_target_classes, self.n_restarts, self.n_iter
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha_max) {
            return bad(format!("alpha_max {} must be in [0, 1]", self.alpha_max));
        }
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return bad(format!("eta {} must be finite and > 0", self.eta));
        }
        if !(0.0..=1.0).contains(&self.beta) {
            return bad(format!("beta {} must be in [0, 1]", self.beta));
        }
        Ok(())
    }
}

/// Runs FAB-T on a batch; returns the adversarial pixels of the images it fooled (within
/// `eps`) and the clean pixels of the others. Images the model misclassifies already are
/// returned clean, as in the reference (which attacks only correctly classified points).
pub fn fab_targeted(
    model: &mut dyn Classifier,
    x: &[f32],
    batch: usize,
    labels: &[i64],
    config: &FabConfig,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<f32>, AttackError> {
    config.validate()?;
    let image_len = model.shape().len();
    let classes = model.classes();
    if classes < 2 {
        return Err(AttackError::Parameter(format!(
            "FAB-T needs 2 classes or more, the model has {classes}"
        )));
    }
    if image_len == 0 || batch.checked_mul(image_len) != Some(x.len()) {
        return Err(AttackError::Shape(format!(
            "{} pixel values for a batch of {batch} images of {image_len}",
            x.len()
        )));
    }
    if labels.len() != batch {
        return Err(AttackError::Shape(format!(
            "{} labels for a batch of {batch}",
            labels.len()
        )));
    }
    let labels: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(index, &label)| match usize::try_from(label) {
            Ok(l) if l < classes => Ok(l),
            _ => Err(AttackError::Label { index, label, classes }),
        })
        .collect::<Result<_, _>>()?;
    let mut adv = x.to_vec();
    if batch == 0 {
        return Ok(adv);
    }
    let run = Run {
        config,
        image_len,
        classes,
        stop,
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let clean = run.predict(model, x, batch)?;
    let mut robust: Vec<bool> = clean.iter().zip(&labels).map(|(p, l)| p == l).collect();
    let targets = config.n_target_classes.min(classes - 1);
    for target_rank in 2..=targets + 1 {
        for restart in 0..config.n_restarts {
            let to_fool: Vec<usize> = (0..batch).filter(|&i| robust[i]).collect();
            if to_fool.is_empty() {
                return Ok(adv);
            }
            let xs = gather(x, image_len, &to_fool);
            let ys: Vec<usize> = to_fool.iter().map(|&i| labels[i]).collect();
            let found = run.single(model, &xs, &ys, target_rank, restart > 0, &mut rng)?;
            let preds = run.predict(model, &found, ys.len())?;
            for (k, &i) in to_fool.iter().enumerate() {
                let span = k * image_len..(k + 1) * image_len;
                let distance = run.distance(&found[span.clone()], &xs[span.clone()]);
                // The reference's `acc_curr = max(pred == y, res > eps)`, negated.
                if preds[k] != ys[k] && distance <= f64::from(config.eps) {
                    robust[i] = false;
                    adv[i * image_len..(i + 1) * image_len].copy_from_slice(&found[span]);
                }
            }
        }
    }
    Ok(adv)
}

/// What every step of one call reads.
struct Run<'a> {
    config: &'a FabConfig,
    image_len: usize,
    classes: usize,
    stop: &'a dyn Fn() -> bool,
}

impl Run<'_> {
    /// The logits of a batch, checked for size.
    fn logits(&self, model: &mut dyn Classifier, x: &[f32], batch: usize) -> Result<Vec<f32>, AttackError> {
        let logits = model.logits(x, batch)?;
        if logits.len() != batch * self.classes {
            return Err(AttackError::Shape(format!(
                "the model returned {} logits for {batch} images of {} classes",
                logits.len(),
                self.classes
            )));
        }
        Ok(logits)
    }

    /// The predicted class of each image.
    fn predict(&self, model: &mut dyn Classifier, x: &[f32], batch: usize) -> Result<Vec<usize>, AttackError> {
        Ok(self
            .logits(model, x, batch)?
            .chunks_exact(self.classes)
            .map(argmax)
            .collect())
    }

    /// `||a - b||` in the threat model's norm (differences in `f32`, as the reference).
    fn distance(&self, a: &[f32], b: &[f32]) -> f64 {
        let diffs = a.iter().zip(b).map(|(&p, &q)| f64::from(p - q));
        match self.config.norm {
            Norm::Linf => diffs.fold(0.0, |m, v| m.max(v.abs())),
            Norm::L2 => diffs.map(|v| v * v).sum::<f64>().sqrt(),
        }
    }

    /// The reference's `attack_single_run` with `is_targeted`: FAB towards the class of rank
    /// `target_rank` (2 = the second highest clean logit) on the images `x`. Returns, for each
    /// image the model classifies correctly, the nearest adversarial point found (at any
    /// distance), and the clean pixels for the others.
    fn single(
        &self,
        model: &mut dyn Classifier,
        x: &[f32],
        labels: &[usize],
        target_rank: usize,
        random_start: bool,
        rng: &mut StdRng,
    ) -> Result<Vec<f32>, AttackError> {
        let n = self.image_len;
        let config = self.config;
        let mut adv_all = x.to_vec();
        let logits = self.logits(model, x, labels.len())?;
        // Attack only the correctly classified points; the target is the class at position
        // `-target_rank` of the ascending sort of the clean logits.
        let mut attacked = Vec::new();
        let mut targets = Vec::new();
        for (i, row) in logits.chunks_exact(self.classes).enumerate() {
            if argmax(row) == labels[i] {
                let mut ascending: Vec<usize> = (0..self.classes).collect();
                ascending.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
                attacked.push(i);
                targets.push(ascending[self.classes - target_rank] as i64);
            }
        }
        if attacked.is_empty() {
            return Ok(adv_all);
        }
        let bs = attacked.len();
        let im2 = gather(x, n, &attacked);
        let la2: Vec<usize> = attacked.iter().map(|&i| labels[i]).collect();
        let la2_i64: Vec<i64> = la2.iter().map(|&l| l as i64).collect();
        let mut adv = im2.clone();
        let mut res2 = vec![NOT_FOUND; bs];
        let mut x1 = im2.clone();
        if random_start {
            for (x1_i, im_i) in x1.chunks_exact_mut(n).zip(im2.chunks_exact(n)) {
                // min(res2, eps) is eps: res2 is 1e10 here.
                let t: Vec<f64> = match config.norm {
                    Norm::Linf => (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect(),
                    Norm::L2 => (0..n).map(|_| standard_normal(rng)).collect(),
                };
                let size = match config.norm {
                    Norm::Linf => t.iter().fold(0.0f64, |m, v| m.max(v.abs())),
                    Norm::L2 => t.iter().map(|v| v * v).sum::<f64>().sqrt(),
                };
                let scale = if size > 0.0 {
                    f64::from(config.eps) / size * 0.5
                } else {
                    0.0
                };
                for ((xj, &ij), tj) in x1_i.iter_mut().zip(im_i).zip(&t) {
                    *xj = (f64::from(ij) + scale * tj).clamp(0.0, 1.0) as f32;
                }
            }
        }
        let norm = config.norm;
        let (eta, beta, alpha_max) = (
            f64::from(config.eta),
            f64::from(config.beta),
            f64::from(config.alpha_max),
        );
        for _ in 0..config.n_iter {
            if (self.stop)() {
                return Err(AttackError::Stopped);
            }
            // df = z_t - z_y and its gradient: with one target the reference's choice of the
            // nearest linearised boundary (`dist1.min`) has one candidate.
            let lg = model.loss_grad(&x1, bs, &la2_i64, Some(&targets), Loss::LogitDifference)?;
            if lg.grad.len() != bs * n || lg.loss.len() != bs {
                return Err(AttackError::Shape(format!(
                    "the model returned {} gradient values and {} losses for {bs} images of {n}",
                    lg.grad.len(),
                    lg.loss.len()
                )));
            }
            x1.par_chunks_mut(n)
                .zip(im2.par_chunks(n))
                .zip(lg.grad.par_chunks(n))
                .zip(lg.loss.par_iter())
                .for_each(|(((x1_i, im_i), w), &df)| {
                    // The linearised boundary {z: <w, z> = b}.
                    let b = -f64::from(df)
                        + w.iter()
                            .zip(x1_i.iter())
                            .map(|(&a, &c)| f64::from(a) * f64::from(c))
                            .sum::<f64>();
                    let (d1, d2) = match norm {
                        Norm::Linf => (projection_linf(x1_i, w, b), projection_linf(im_i, w, b)),
                        Norm::L2 => (projection_l2(x1_i, w, b), projection_l2(im_i, w, b)),
                    };
                    let a1 = length(norm, &d1).max(1e-8);
                    let a2 = length(norm, &d2).max(1e-8);
                    let alpha = (a1 / (a1 + a2)).max(0.0).min(alpha_max);
                    for (((xj, &ij), &d1j), &d2j) in x1_i.iter_mut().zip(im_i).zip(&d1).zip(&d2) {
                        let from_current = f64::from(*xj) + eta * f64::from(d1j);
                        let from_clean = f64::from(ij) + eta * f64::from(d2j);
                        *xj = (from_current * (1.0 - alpha) + from_clean * alpha).clamp(0.0, 1.0) as f32;
                    }
                });
            let preds = self.predict(model, &x1, bs)?;
            for i in 0..bs {
                if preds[i] == la2[i] {
                    continue;
                }
                let span = i * n..(i + 1) * n;
                let t = self.distance(&x1[span.clone()], &im2[span.clone()]);
                if t < res2[i] {
                    adv[span.clone()].copy_from_slice(&x1[span.clone()]);
                    res2[i] = t;
                }
                for (xj, &ij) in x1[span.clone()].iter_mut().zip(&im2[span]) {
                    *xj = (f64::from(ij) + (f64::from(*xj) - f64::from(ij)) * beta) as f32;
                }
            }
        }
        for (k, &i) in attacked.iter().enumerate() {
            if res2[k] < NOT_FOUND {
                adv_all[i * n..(i + 1) * n].copy_from_slice(&adv[k * n..(k + 1) * n]);
            }
        }
        Ok(adv_all)
    }
}

/// `||d||` of a projection step.
fn length(norm: Norm, d: &[f32]) -> f64 {
    match norm {
        Norm::Linf => d.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs())),
        Norm::L2 => d.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt(),
    }
}

/// The images at `indices` of a batch.
fn gather(x: &[f32], image_len: usize, indices: &[usize]) -> Vec<f32> {
    indices
        .iter()
        .flat_map(|&i| x[i * image_len..(i + 1) * image_len].iter().copied())
        .collect()
}

/// A standard normal draw (Box-Muller), for the L2 random start's `randn`.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoattack::classifier::ImageShape;
    use crate::autoattack::classifier::toy::Linear;
    use engine::preprocess::Layout;
    use std::cell::Cell;

    fn shape(channels: usize, side: usize) -> ImageShape {
        ImageShape {
            layout: Layout::Nchw,
            channels,
            height: side,
            width: side,
        }
    }

    /// Images in `[lo, lo + span]` and their labels: the model's predictions.
    fn images(model: &mut Linear, batch: usize, lo: f32, span: f32, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..batch * model.shape.len())
            .map(|_| lo + span * rng.random::<f32>())
            .collect();
        let logits = model.logits(&x, batch).unwrap();
        let labels = logits.chunks_exact(model.classes).map(|r| argmax(r) as i64).collect();
        (x, labels)
    }

    /// For a linear model away from the box's faces: the distance to the nearest point where
    /// some class reaches the label's logit, `min_t (z_y - z_t) / ||w_t - w_y||` (dual norm:
    /// L1 for L-inf, L2 for L2), and the largest pixel change of the step that reaches it.
    fn closed_form(model: &Linear, x: &[f32], label: usize, norm: Norm) -> (f64, f64) {
        let n = model.shape.len();
        let z: Vec<f64> = (0..model.classes)
            .map(|c| {
                f64::from(model.b[c])
                    + model.w[c * n..(c + 1) * n]
                        .iter()
                        .zip(x)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
            })
            .collect();
        (0..model.classes)
            .filter(|&t| t != label)
            .map(|t| {
                let diff: Vec<f64> = (0..n)
                    .map(|j| f64::from(model.w[t * n + j] - model.w[label * n + j]))
                    .collect();
                let largest = diff.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let (dual, largest_share) = match norm {
                    Norm::Linf => (diff.iter().map(|v| v.abs()).sum::<f64>(), 1.0),
                    Norm::L2 => {
                        let l2 = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
                        (l2, largest / l2)
                    }
                };
                let lambda = (z[label] - z[t]) / dual;
                (lambda, lambda * largest_share)
            })
            .fold((f64::INFINITY, 0.0), |best, c| if c.0 < best.0 { c } else { best })
    }

    fn distance(norm: Norm, a: &[f32], b: &[f32]) -> f64 {
        let config = FabConfig::standard(norm, 0.0, 0);
        let run = Run {
            config: &config,
            image_len: a.len(),
            classes: 2,
            stop: &|| false,
        };
        run.distance(a, b)
    }

    /// On linear models (2 and 10 classes), FAB-T's points are no nearer than the closed-form
    /// minimum (none can be), within 1% of it, fooled when eps is 3% above it and never when
    /// eps is 3% below it.
    fn finds_the_linear_minimum(norm: Norm, classes: usize) {
        let mut model = Linear::new(shape(1, 4), classes, 0, 5 + classes as u64);
        let n = model.shape.len();
        let (x, labels) = images(&mut model, 12, 0.35, 0.3, 9);
        let mut checked = 0;
        for i in 0..labels.len() {
            let xi = &x[i * n..(i + 1) * n];
            let label = labels[i] as usize;
            let (lambda, largest_move) = closed_form(&model, xi, label, norm);
            // Far enough from the box's faces for the closed form to hold.
            if largest_move > 0.3 {
                continue;
            }
            checked += 1;
            let above = FabConfig::standard(norm, (lambda * 1.03) as f32, 1);
            let out = fab_targeted(&mut model, xi, 1, &labels[i..=i], &above, &|| false).unwrap();
            let found = distance(norm, &out, xi);
            let pred = argmax(&model.logits(&out, 1).unwrap());
            assert_ne!(pred, label, "image {i} not fooled at eps 1.03 x {lambda}");
            assert!(
                found >= lambda * (1.0 - 1e-4),
                "image {i}: {found} below the minimum {lambda}"
            );
            assert!(
                found <= lambda * 1.01,
                "image {i}: {found} more than 1% above the minimum {lambda}"
            );
            let below = FabConfig::standard(norm, (lambda * 0.97) as f32, 1);
            let out = fab_targeted(&mut model, xi, 1, &labels[i..=i], &below, &|| false).unwrap();
            assert_eq!(out, xi, "image {i} changed at eps 0.97 x {lambda}");
        }
        assert!(checked >= 6, "only {checked} images away from the box's faces");
    }

    #[test]
    fn linf_finds_the_binary_linear_minimum() {
        finds_the_linear_minimum(Norm::Linf, 2);
    }

    #[test]
    fn linf_finds_the_multiclass_linear_minimum() {
        finds_the_linear_minimum(Norm::Linf, 10);
    }

    #[test]
    fn l2_finds_the_binary_linear_minimum() {
        finds_the_linear_minimum(Norm::L2, 2);
    }

    #[test]
    fn l2_finds_the_multiclass_linear_minimum() {
        finds_the_linear_minimum(Norm::L2, 10);
    }

    /// On a ReLU network: outputs within eps and in [0, 1], fooled images misclassified, the
    /// others (and those misclassified from the start) returned clean; eps 0 fools none.
    #[test]
    fn outputs_are_valid_on_a_relu_network() {
        for (norm, eps) in [(Norm::Linf, 0.08f32), (Norm::L2, 0.6)] {
            let mut model = Linear::new(shape(3, 4), 10, 16, 21);
            let n = model.shape.len();
            let (x, mut labels) = images(&mut model, 16, 0.0, 1.0, 4);
            // Two images labelled wrongly: left alone.
            labels[0] = (labels[0] + 1) % 10;
            labels[1] = (labels[1] + 3) % 10;
            let config = FabConfig::standard(norm, eps, 7);
            let out = fab_targeted(&mut model, &x, 16, &labels, &config, &|| false).unwrap();
            assert_eq!(out.len(), x.len());
            let preds: Vec<usize> = model.logits(&out, 16).unwrap().chunks_exact(10).map(argmax).collect();
            let mut fooled = 0;
            for i in 0..16 {
                let (o, c) = (&out[i * n..(i + 1) * n], &x[i * n..(i + 1) * n]);
                assert!(o.iter().all(|v| (0.0..=1.0).contains(v)), "image {i} left [0, 1]");
                if o != c {
                    fooled += 1;
                    assert!(i >= 2, "misclassified image {i} was attacked");
                    assert!(distance(norm, o, c) <= f64::from(eps), "image {i} beyond eps");
                    assert_ne!(preds[i] as i64, labels[i], "changed image {i} is not misclassified");
                }
            }
            assert!(fooled >= 3, "{norm:?}: only {fooled} of 14 fooled at eps {eps}");
            let zero = FabConfig::standard(norm, 0.0, 7);
            assert_eq!(fab_targeted(&mut model, &x, 16, &labels, &zero, &|| false).unwrap(), x);
        }
    }

    /// Same seed, same points; the random start makes another seed's points differ.
    #[test]
    fn deterministic_for_a_seed() {
        let mut model = Linear::new(shape(1, 5), 10, 8, 3);
        let (x, labels) = images(&mut model, 6, 0.0, 1.0, 2);
        let ys: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        for norm in [Norm::Linf, Norm::L2] {
            let mut config = FabConfig::standard(norm, 0.3, 0);
            config.n_iter = 20;
            let single = |model: &mut Linear, seed: u64| {
                let run = Run {
                    config: &config,
                    image_len: 25,
                    classes: 10,
                    stop: &|| false,
                };
                let mut rng = StdRng::seed_from_u64(seed);
                run.single(model, &x, &ys, 2, true, &mut rng).unwrap()
            };
            let a = single(&mut model, 1);
            assert_ne!(a, x, "nothing found");
            assert_eq!(a, single(&mut model, 1));
            assert_ne!(a, single(&mut model, 2));
            config.n_restarts = 3;
            config.eps = 0.1;
            let full = |model: &mut Linear| fab_targeted(model, &x, 6, &labels, &config, &|| false).unwrap();
            assert_eq!(full(&mut model), full(&mut model));
        }
    }

    #[test]
    fn stop_ends_the_attack() {
        let mut model = Linear::new(shape(1, 4), 10, 0, 1);
        let (x, labels) = images(&mut model, 4, 0.0, 1.0, 1);
        let calls = Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 3
        };
        let config = FabConfig::standard(Norm::Linf, 0.01, 0);
        let result = fab_targeted(&mut model, &x, 4, &labels, &config, &stop);
        assert!(matches!(result, Err(AttackError::Stopped)), "{result:?}");
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut model = Linear::new(shape(1, 2), 3, 0, 1);
        let x = vec![0.5f32; 8];
        let labels = [0i64, 1];
        let base = FabConfig::standard(Norm::Linf, 0.1, 0);
        let changes: [fn(&mut FabConfig); 9] = [
            |c| c.eps = -0.1,
            |c| c.eps = f32::NAN,
            |c| c.n_iter = 0,
            |c| c.n_restarts = 0,
            |c| c.n_target_classes = 0,
            |c| c.alpha_max = 1.5,
            |c| c.eta = 0.0,
            |c| c.beta = -0.5,
            |c| c.beta = 2.0,
        ];
        for change in changes {
            let mut config = base.clone();
            change(&mut config);
            let result = fab_targeted(&mut model, &x, 2, &labels, &config, &|| false);
            assert!(
                matches!(result, Err(AttackError::Parameter(_))),
                "{config:?}: {result:?}"
            );
        }
        let shape_error = fab_targeted(&mut model, &x[..7], 2, &labels, &base, &|| false);
        assert!(matches!(shape_error, Err(AttackError::Shape(_))), "{shape_error:?}");
        let label_count = fab_targeted(&mut model, &x, 2, &labels[..1], &base, &|| false);
        assert!(matches!(label_count, Err(AttackError::Shape(_))), "{label_count:?}");
        for bad in [3i64, -1] {
            let result = fab_targeted(&mut model, &x, 2, &[0, bad], &base, &|| false);
            assert!(matches!(result, Err(AttackError::Label { index: 1, .. })), "{result:?}");
        }
        let mut one_class = Linear::new(shape(1, 2), 1, 0, 1);
        let result = fab_targeted(&mut one_class, &x, 2, &[0, 0], &base, &|| false);
        assert!(matches!(result, Err(AttackError::Parameter(_))), "{result:?}");
        assert_eq!(
            fab_targeted(&mut model, &[], 0, &[], &base, &|| false).unwrap(),
            Vec::<f32>::new()
        );
    }
}
