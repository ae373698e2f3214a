//! APGD (Croce & Hein 2020): PGD with momentum and a step size halved where the loss stops
//! rising, on the cross-entropy (APGD-CE) or the targeted DLR loss (APGD-T).
//!
//! A port of the reference's `APGDAttack.attack_single_run` and `perturb` (L-inf and L2):
//! random start on the eps-sphere's normalised noise, step `2 eps`, momentum 0.75 after the
//! first step, checkpoints after `0.22 n_iter` iterations and then at intervals shrinking by
//! `0.03 n_iter` down to `0.06 n_iter`, where a point's step is halved (and the point sent
//! back to its best iterate) when its loss rose in at most `rho` of the steps since the last
//! checkpoint, or when the step was not halved last time and the best loss did not improve.
//!
//! Every point's trajectory depends only on its own random start, so a point is dropped from
//! the batch once it is misclassified: the set of points fooled is the reference's, at a
//! fraction of its gradient runs on models that are not robust. Each image draws its random
//! start from its own seed, so results do not depend on how images are batched or sharded.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use super::classifier::{Classifier, Loss, Norm, argmax};
use crate::attack::AttackError;
use crate::attack::run::sign;

/// APGD settings (the reference's `APGDAttack` / `APGDAttack_targeted` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ApgdConfig {
    /// Threat model.
    pub norm: Norm,
    /// Radius, in `[0, 1]` pixel units.
    pub eps: f32,
    /// Iterations per run (100).
    pub n_iter: usize,
    /// Restarts (1 in the standard version).
    pub n_restarts: usize,
    /// Step-size decrease threshold `rho` (0.75).
    pub rho: f32,
    /// Target classes of APGD-T: the 2nd to the `(n + 1)`-th highest clean logit (9).
    pub n_target_classes: usize,
}

impl ApgdConfig {
    /// The standard version's settings: 100 iterations, 1 restart, rho 0.75, 9 targets.
    pub fn standard(norm: Norm, eps: f32) -> Self {
        Self {
            norm,
            eps,
            n_iter: 100,
            n_restarts: 1,
            rho: 0.75,
            n_target_classes: 9,
        }
    }

    fn validate(&self) -> Result<(), AttackError> {
        if !(self.eps.is_finite() && self.eps >= 0.0 && (self.norm == Norm::L2 || self.eps <= 1.0)) {
            return Err(AttackError::Parameter(format!(
                "APGD eps {} must be finite, non-negative (and at most 1 for L-inf)",
                self.eps
            )));
        }
        if self.n_iter == 0 || self.n_restarts == 0 {
            return Err(AttackError::Parameter(format!(
                "APGD needs at least one iteration and one restart, got {} and {}",
                self.n_iter, self.n_restarts
            )));
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return Err(AttackError::Parameter(format!(
                "APGD rho {} must be in (0, 1]",
                self.rho
            )));
        }
        Ok(())
    }
}

/// The result of APGD on a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ApgdOutcome {
    /// Adversarial pixels of the images fooled, the clean pixels of the others.
    pub adversarial: Vec<f32>,
    /// Whether each image was fooled.
    pub fooled: Vec<bool>,
    /// Images whose loss gradient was exactly zero at a DLR run's starting point (the
    /// reference's `check_zero_gradients` warning).
    pub zero_gradients: usize,
}

/// APGD-CE: untargeted APGD on the cross-entropy of `labels`. `seeds` holds one seed per
/// image (its random starts); `stop` is asked once per iteration.
pub fn apgd(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &ApgdConfig,
    stop: &dyn Fn() -> bool,
) -> Result<ApgdOutcome, AttackError> {
    config.validate()?;
    let mut state = Batch::new(model, x, labels, seeds)?;
    for restart in 0..config.n_restarts {
        let idx: Vec<usize> = (0..state.n).filter(|&i| !state.fooled[i]).collect();
        if idx.is_empty() {
            break;
        }
        let run = single_run(model, &state, &idx, None, Loss::CrossEntropy, restart, config, stop)?;
        state.take(&idx, run);
    }
    Ok(state.finish())
}

/// APGD-T: APGD on the targeted DLR loss, for each target class in turn (the 2nd, 3rd, ...
/// highest logit of the image) on the images not yet fooled.
pub fn apgd_targeted(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &ApgdConfig,
    stop: &dyn Fn() -> bool,
) -> Result<ApgdOutcome, AttackError> {
    config.validate()?;
    let classes = model.classes();
    if config.n_target_classes == 0 || config.n_target_classes >= classes {
        return Err(AttackError::Parameter(format!(
            "APGD-T with {} target classes needs more than that many classes; the model has {classes}",
            config.n_target_classes
        )));
    }
    let mut state = Batch::new(model, x, labels, seeds)?;
    for target_rank in 1..=config.n_target_classes {
        for restart in 0..config.n_restarts {
            let idx: Vec<usize> = (0..state.n).filter(|&i| !state.fooled[i]).collect();
            if idx.is_empty() {
                break;
            }
            // The target: the class of the (target_rank + 1)-th highest clean logit.
            let targets: Vec<i64> = idx
                .iter()
                .map(|&i| ranked(&state.clean_logits[i * classes..(i + 1) * classes], target_rank) as i64)
                .collect();
            let pass = target_rank * config.n_restarts + restart;
            let run = single_run(
                model,
                &state,
                &idx,
                Some(&targets),
                Loss::DlrTargeted,
                pass,
                config,
                stop,
            )?;
            state.take(&idx, run);
        }
    }
    Ok(state.finish())
}

/// The class with the `rank`-th highest value (0: the argmax; ties broken by lower index).
fn ranked(row: &[f32], rank: usize) -> usize {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.get(rank).copied().unwrap_or(0)
}

/// The images of one APGD call and what has been found so far.
struct Batch<'a> {
    x: &'a [f32],
    labels: &'a [i64],
    seeds: &'a [u64],
    n: usize,
    len: usize,
    clean_logits: Vec<f32>,
    fooled: Vec<bool>,
    adversarial: Vec<f32>,
    zero_gradients: usize,
}

impl<'a> Batch<'a> {
    fn new(model: &mut dyn Classifier, x: &'a [f32], labels: &'a [i64], seeds: &'a [u64]) -> Result<Self, AttackError> {
        let len = model.shape().len();
        let n = labels.len();
        if len == 0 || x.len() != n * len || seeds.len() != n {
            return Err(AttackError::Shape(format!(
                "APGD got {} pixel values, {} labels and {} seeds for images of {len} values",
                x.len(),
                n,
                seeds.len()
            )));
        }
        let classes = model.classes();
        let clean_logits = if n == 0 { Vec::new() } else { model.logits(x, n)? };
        // Points the model already gets wrong count as fooled (the reference's `acc`).
        let fooled = (0..n)
            .map(|i| argmax(&clean_logits[i * classes..(i + 1) * classes]) as i64 != labels[i])
            .collect();
        Ok(Self {
            x,
            labels,
            seeds,
            n,
            len,
            clean_logits,
            fooled,
            adversarial: x.to_vec(),
            zero_gradients: 0,
        })
    }

    fn take(&mut self, idx: &[usize], run: Run) {
        for (j, &i) in idx.iter().enumerate() {
            if run.fooled[j] {
                self.fooled[i] = true;
                self.adversarial[i * self.len..(i + 1) * self.len]
                    .copy_from_slice(&run.adversarial[j * self.len..(j + 1) * self.len]);
            }
        }
        self.zero_gradients += run.zero_gradients;
    }

    fn finish(self) -> ApgdOutcome {
        ApgdOutcome {
            adversarial: self.adversarial,
            fooled: self.fooled,
            zero_gradients: self.zero_gradients,
        }
    }
}

/// What one run found for its images.
struct Run {
    fooled: Vec<bool>,
    adversarial: Vec<f32>,
    zero_gradients: usize,
}

/// `attack_single_run` on the images `idx` of `batch`; `pass` tells the runs of one image
/// apart in its random stream.
#[allow(clippy::too_many_arguments)]
fn single_run(
    model: &mut dyn Classifier,
    batch: &Batch,
    idx: &[usize],
    targets: Option<&[i64]>,
    loss: Loss,
    pass: usize,
    config: &ApgdConfig,
    stop: &dyn Fn() -> bool,
) -> Result<Run, AttackError> {
    let len = batch.len;
    let classes = model.classes();
    let m = idx.len();
    let eps = config.eps;
    let n_iter = config.n_iter;
    let n_iter_2 = ((0.22 * n_iter as f64) as usize).max(1);
    let n_iter_min = ((0.06 * n_iter as f64) as usize).max(1);
    let size_decr = ((0.03 * n_iter as f64) as usize).max(1);

    let x0: Vec<f32> = idx
        .iter()
        .flat_map(|&i| batch.x[i * len..(i + 1) * len].iter().copied())
        .collect();
    let y: Vec<i64> = idx.iter().map(|&i| batch.labels[i]).collect();

    // Random start: x + eps * t / ||t||, t uniform in [-1, 1] (L-inf) or Gaussian (L2).
    let mut x_adv = vec![0.0f32; m * len];
    for (j, &i) in idx.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(mix(batch.seeds[i], pass as u64));
        let t: Vec<f32> = match config.norm {
            Norm::Linf => (0..len).map(|_| 2.0 * rng.random::<f32>() - 1.0).collect(),
            Norm::L2 => (0..len).map(|_| StandardNormal.sample(&mut rng)).collect(),
        };
        let scale = eps / (norm_of(&t, config.norm) + 1e-12);
        for ((o, &xv), &tv) in x_adv[j * len..(j + 1) * len].iter_mut().zip(&x0[j * len..]).zip(&t) {
            *o = (xv + scale * tv).clamp(0.0, 1.0);
        }
    }

    // The points still iterating (not yet fooled), as positions in 0..m.
    let mut live: Vec<usize> = (0..m).collect();
    let mut fooled = vec![false; m];
    let mut x_best_adv = x_adv.clone();
    let mut x_best = x_adv.clone();
    let eval = |model: &mut dyn Classifier, live: &[usize], x_adv: &[f32]| {
        let xs: Vec<f32> = live
            .iter()
            .flat_map(|&j| x_adv[j * len..(j + 1) * len].iter().copied())
            .collect();
        let ys: Vec<i64> = live.iter().map(|&j| y[j]).collect();
        let ts: Option<Vec<i64>> = targets.map(|t| live.iter().map(|&j| t[j]).collect());
        model.loss_grad(&xs, live.len(), &ys, ts.as_deref(), loss)
    };
    let first = eval(model, &live, &x_adv)?;
    let mut grad = first.grad;
    let mut zero_gradients = 0;
    if matches!(loss, Loss::Dlr | Loss::DlrTargeted) {
        zero_gradients = grad.chunks_exact(len).filter(|g| g.iter().all(|&v| v == 0.0)).count();
    }
    let mut grad_best = grad.clone();
    let mut loss_best = first.loss.clone();
    for j in 0..m {
        if argmax(&first.logits[j * classes..(j + 1) * classes]) as i64 != y[j] {
            fooled[j] = true;
        }
    }
    // Per point: step size, loss history, checkpoint state.
    let mut step = vec![2.0 * eps; m];
    let mut loss_steps = vec![vec![0.0f32; n_iter]; m];
    let mut loss_best_last_check = loss_best.clone();
    let mut reduced_last_check = vec![true; m];
    let mut x_adv_old = x_adv.clone();
    let mut counter3 = 0;
    let mut k = n_iter_2;
    // Gradients are indexed by live position; keep them per point.
    let mut grad_of: Vec<Vec<f32>> = (0..m).map(|j| grad[j * len..(j + 1) * len].to_vec()).collect();
    grad.clear();
    let mut grad_best_of: Vec<Vec<f32>> = (0..m).map(|j| grad_best[j * len..(j + 1) * len].to_vec()).collect();
    grad_best.clear();
    live.retain(|&j| !fooled[j]);

    for i in 0..n_iter {
        if live.is_empty() {
            break;
        }
        if stop() {
            return Err(AttackError::Stopped);
        }
        let a = if i > 0 { 0.75 } else { 1.0 };
        for &j in &live {
            let r = j * len..(j + 1) * len;
            let (xa, xo, xc) = (&mut x_adv[r.clone()], &mut x_adv_old[r.clone()], &x0[r.clone()]);
            let g = &grad_of[j];
            let momentum: Vec<f32> = xa.iter().zip(xo.iter()).map(|(a, o)| a - o).collect();
            xo.copy_from_slice(xa);
            match config.norm {
                Norm::Linf => {
                    for p in 0..len {
                        let lo = xc[p] - eps;
                        let hi = xc[p] + eps;
                        let z = (xa[p] + step[j] * sign(g[p])).max(lo).min(hi).clamp(0.0, 1.0);
                        xa[p] = (xa[p] + (z - xa[p]) * a + momentum[p] * (1.0 - a))
                            .max(lo)
                            .min(hi)
                            .clamp(0.0, 1.0);
                    }
                }
                Norm::L2 => {
                    let gn = norm_of(g, Norm::L2) + 1e-12;
                    let z: Vec<f32> = xa.iter().zip(g).map(|(&v, &gv)| v + step[j] * gv / gn).collect();
                    let z = project_l2(&z, xc, eps);
                    let w: Vec<f32> = (0..len)
                        .map(|p| xa[p] + (z[p] - xa[p]) * a + momentum[p] * (1.0 - a))
                        .collect();
                    xa.copy_from_slice(&project_l2(&w, xc, eps));
                }
            }
        }
        let out = eval(model, &live, &x_adv)?;
        for (q, &j) in live.iter().enumerate() {
            let logits = &out.logits[q * classes..(q + 1) * classes];
            let r = j * len..(j + 1) * len;
            grad_of[j].copy_from_slice(&out.grad[q * len..(q + 1) * len]);
            if argmax(logits) as i64 != y[j] {
                fooled[j] = true;
                x_best_adv[r.clone()].copy_from_slice(&x_adv[r.clone()]);
            }
            let l = out.loss[q];
            loss_steps[j][i] = l;
            if l > loss_best[j] {
                x_best[r.clone()].copy_from_slice(&x_adv[r]);
                grad_best_of[j].copy_from_slice(&grad_of[j]);
                loss_best[j] = l;
            }
        }
        counter3 += 1;
        if counter3 == k {
            if matches!(config.norm, Norm::Linf | Norm::L2) {
                for &j in &live {
                    // Rises of the loss over the last k steps (the reference reads
                    // loss_steps[-1], the last row, still zero, for the step before the first).
                    let rises = (0..k)
                        .filter(|&c| {
                            let now = loss_steps[j][i - c];
                            let before = if i > c {
                                loss_steps[j][i - c - 1]
                            } else {
                                loss_steps[j][n_iter - 1]
                            };
                            now > before
                        })
                        .count();
                    let oscillating = rises as f32 <= k as f32 * config.rho;
                    let no_improvement = !reduced_last_check[j] && loss_best_last_check[j] >= loss_best[j];
                    let reduce = oscillating || no_improvement;
                    reduced_last_check[j] = reduce;
                    loss_best_last_check[j] = loss_best[j];
                    if reduce {
                        step[j] /= 2.0;
                        let r = j * len..(j + 1) * len;
                        x_adv[r.clone()].copy_from_slice(&x_best[r]);
                        grad_of[j].copy_from_slice(&grad_best_of[j]);
                    }
                }
                k = k.saturating_sub(size_decr).max(n_iter_min);
            }
            counter3 = 0;
        }
        live.retain(|&j| !fooled[j]);
    }
    Ok(Run {
        fooled,
        adversarial: x_best_adv,
        zero_gradients,
    })
}

/// A point's projection onto the L2 ball of radius `eps` around `center`, then onto
/// `[0, 1]` (the reference's order: scale the difference, then clamp).
fn project_l2(point: &[f32], center: &[f32], eps: f32) -> Vec<f32> {
    let diff: Vec<f32> = point.iter().zip(center).map(|(p, c)| p - c).collect();
    let n = norm_of(&diff, Norm::L2);
    let scale = n.min(eps) / (n + 1e-12);
    center
        .iter()
        .zip(&diff)
        .map(|(c, d)| (c + d * scale).clamp(0.0, 1.0))
        .collect()
}

/// `max |v|` or `sqrt(sum v^2)`.
pub(crate) fn norm_of(v: &[f32], norm: Norm) -> f32 {
    match norm {
        Norm::Linf => v.iter().fold(0.0f32, |m, x| m.max(x.abs())),
        Norm::L2 => v.iter().map(|x| x * x).sum::<f32>().sqrt(),
    }
}

/// A seed for one run of one image (splitmix64 of the image's seed and the run).
pub(crate) fn mix(seed: u64, pass: u64) -> u64 {
    let mut z = seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoattack::classifier::{ImageShape, toy::Linear};
    use engine::preprocess::Layout;

    fn shape() -> ImageShape {
        ImageShape {
            layout: Layout::Nchw,
            channels: 1,
            height: 4,
            width: 4,
        }
    }

    /// A model, points it classifies correctly, and their labels.
    fn setup(hidden: usize, n: usize, seed: u64) -> (Linear, Vec<f32>, Vec<i64>) {
        let mut m = Linear::new(shape(), 5, hidden, seed);
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let x: Vec<f32> = (0..n * 16).map(|_| rng.random::<f32>()).collect();
        let logits = m.logits(&x, n).unwrap();
        let y = logits.chunks_exact(5).map(|r| argmax(r) as i64).collect();
        (m, x, y)
    }

    fn check_bounds(x: &[f32], adv: &[f32], eps: f32, norm: Norm) {
        for (a, b) in adv.chunks_exact(16).zip(x.chunks_exact(16)) {
            let d: Vec<f32> = a.iter().zip(b).map(|(p, q)| p - q).collect();
            assert!(
                norm_of(&d, norm) <= eps * (1.0 + 1e-5) + 1e-6,
                "{norm:?} {} > {eps}",
                norm_of(&d, norm)
            );
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn apgd_fools_within_the_ball_and_reports_truthfully() {
        for norm in [Norm::Linf, Norm::L2] {
            let (mut m, x, y) = setup(8, 12, 3);
            let eps = if norm == Norm::Linf { 0.15 } else { 0.6 };
            let seeds: Vec<u64> = (0..12).collect();
            let out = apgd(&mut m, &x, &y, &seeds, &ApgdConfig::standard(norm, eps), &|| false).unwrap();
            check_bounds(&x, &out.adversarial, eps, norm);
            let logits = m.logits(&out.adversarial, 12).unwrap();
            for i in 0..12 {
                let wrong = argmax(&logits[i * 5..(i + 1) * 5]) as i64 != y[i];
                assert_eq!(wrong, out.fooled[i], "{norm:?} image {i}");
                if !out.fooled[i] {
                    assert_eq!(&out.adversarial[i * 16..(i + 1) * 16], &x[i * 16..(i + 1) * 16]);
                }
            }
            assert!(out.fooled.iter().any(|&f| f), "{norm:?}: nothing fooled at eps {eps}");
            // eps 0 fools nothing the model gets right.
            let none = apgd(&mut m, &x, &y, &seeds, &ApgdConfig::standard(norm, 0.0), &|| false).unwrap();
            assert!(none.fooled.iter().all(|&f| !f));
        }
    }

    /// On a linear model the worst case in the L-inf ball is known: the image is fooled iff
    /// some class c has `margin_c <= eps * ||w_y - w_c||_1` (the box permitting).
    #[test]
    fn apgd_targeted_finds_the_linear_worst_case() {
        let (mut m, x, y) = setup(0, 20, 9);
        let eps = 0.04;
        let seeds: Vec<u64> = (100..120).collect();
        let out = apgd_targeted(
            &mut m,
            &x,
            &y,
            &seeds,
            &ApgdConfig {
                n_target_classes: 4,
                ..ApgdConfig::standard(Norm::Linf, eps)
            },
            &|| false,
        )
        .unwrap();
        check_bounds(&x, &out.adversarial, eps, Norm::Linf);
        for i in 0..20 {
            let xi = &x[i * 16..(i + 1) * 16];
            let yi = y[i] as usize;
            // The best achievable margin reduction per class, honouring [0, 1].
            let z = m.logits(xi, 1).unwrap();
            let breakable = (0..5).filter(|&c| c != yi).any(|c| {
                let gain: f32 = (0..16)
                    .map(|p| {
                        let w = m.w[c * 16 + p] - m.w[yi * 16 + p];
                        let room = if w > 0.0 {
                            (1.0 - xi[p]).min(eps)
                        } else {
                            xi[p].min(eps)
                        };
                        w.abs() * room
                    })
                    .sum();
                z[yi] - z[c] < gain - 1e-4
            });
            let clearly_safe = (0..5).filter(|&c| c != yi).all(|c| {
                let gain: f32 = (0..16).map(|p| (m.w[c * 16 + p] - m.w[yi * 16 + p]).abs() * eps).sum();
                z[yi] - z[c] > gain + 1e-4
            });
            if clearly_safe {
                assert!(!out.fooled[i], "image {i} cannot be fooled");
            }
            if breakable {
                assert!(out.fooled[i], "image {i} can be fooled, APGD-T missed it");
            }
        }
        assert!(out.fooled.iter().any(|&f| f) && out.fooled.iter().any(|&f| !f));
    }

    #[test]
    fn results_do_not_depend_on_batching_and_stop_is_honoured() {
        let (mut m, x, y) = setup(8, 6, 5);
        let seeds: Vec<u64> = (0..6).map(|i| 1000 + i).collect();
        let c = ApgdConfig::standard(Norm::Linf, 0.08);
        let all = apgd(&mut m, &x, &y, &seeds, &c, &|| false).unwrap();
        let first = apgd(&mut m, &x[..3 * 16], &y[..3], &seeds[..3], &c, &|| false).unwrap();
        let rest = apgd(&mut m, &x[3 * 16..], &y[3..], &seeds[3..], &c, &|| false).unwrap();
        assert_eq!(all.fooled, [first.fooled, rest.fooled].concat());
        assert_eq!(all.adversarial, [first.adversarial, rest.adversarial].concat());
        let err = apgd(&mut m, &x, &y, &seeds, &c, &|| true).unwrap_err();
        assert!(matches!(err, AttackError::Stopped) || all.fooled.iter().all(|&f| f));
        for bad in [
            ApgdConfig {
                eps: f32::NAN,
                ..c.clone()
            },
            ApgdConfig { n_iter: 0, ..c.clone() },
            ApgdConfig { rho: 0.0, ..c.clone() },
        ] {
            assert!(matches!(
                apgd(&mut m, &x, &y, &seeds, &bad, &|| false),
                Err(AttackError::Parameter(_))
            ));
        }
        let too_many = ApgdConfig {
            n_target_classes: 5,
            ..c.clone()
        };
        assert!(apgd_targeted(&mut m, &x, &y, &seeds, &too_many, &|| false).is_err());
    }
}
