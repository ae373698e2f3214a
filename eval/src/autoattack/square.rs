//! The Square attack (Andriushchenko et al. 2020), the score-based member of AutoAttack.
//!
//! AutoAttack runs Square last, on the points the gradient attacks left robust, because it
//! needs no gradient: it catches models whose gradients are masked or useless. This is a port
//! of the reference `SquareAttack` (fra31/auto-attack, `autoattack/square.py`) as the
//! standard version configures it: untargeted, margin loss, one restart, `p_init` 0.8, 5,000
//! queries, `resc_schedule=False` (the schedule of square sizes reads the raw iteration).
//!
//! Both threat models are ported:
//! - L-inf: vertical stripes of `±eps` per image, channel and column to start; then, each
//!   iteration, one random square set to `x ± eps`, one sign per channel.
//! - L2: the reference's grid of `eta` blocks (the "meta pseudo-Gaussian" perturbation) to
//!   start; then each iteration moves the mass of a second random window into a first one,
//!   with a fresh `eta` pattern, and rescales the whole perturbation to norm `eps`.
//!
//! An image's new point is kept when its margin `z_y - max_{i != y} z_i` decreases or the
//! image is misclassified; only the images not fooled yet are queried, and each query of an
//! image is counted as the reference does (one for the start, one per iteration). The model
//! is reached through [`Classifier::logits`] only. The randomness is ours: each image draws
//! from its own stream (`StdRng` from the image's seed), where the reference draws one square
//! per iteration for the whole batch; each image sees the same distribution of squares, and
//! its result no longer depends on which images share its batch (or shard). Results match the
//! reference in distribution, not bit for bit.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::classifier::{Classifier, ImageShape, Norm, argmax};
use crate::attack::AttackError;

/// Square attack settings (the reference's `SquareAttack`; untargeted, margin loss, one
/// restart, `resc_schedule=False`).
#[derive(Debug, Clone, PartialEq)]
pub struct SquareConfig {
    /// Threat model.
    pub norm: Norm,
    /// Radius, in `[0, 1]` pixel units (at most 1 for L-inf).
    pub eps: f32,
    /// Iterations after the initial query, each one query per image still robust (5,000 in
    /// the standard version).
    pub n_queries: usize,
    /// Initial fraction of pixels in a square (0.8).
    pub p_init: f32,
}

impl SquareConfig {
    /// The standard AutoAttack settings: 5,000 queries, `p_init` 0.8.
    pub fn standard(norm: Norm, eps: f32) -> Self {
        Self {
            norm,
            eps,
            n_queries: 5000,
            p_init: 0.8,
        }
    }

    /// Refuses a radius that is negative, not finite or (L-inf) above 1, no queries, or
    /// `p_init` outside `(0, 1]`.
    pub fn validate(&self) -> Result<(), AttackError> {
        if !(self.eps.is_finite() && self.eps >= 0.0 && (self.norm == Norm::L2 || self.eps <= 1.0)) {
            return Err(AttackError::Parameter(format!(
                "Square eps {} must be finite, non-negative (and at most 1 for L-inf)",
                self.eps
            )));
        }
        if self.n_queries == 0 {
            return Err(AttackError::Parameter("Square needs n_queries > 0".into()));
        }
        if !(self.p_init.is_finite() && self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(AttackError::Parameter(format!(
                "Square p_init {} is not in (0, 1]",
                self.p_init
            )));
        }
        Ok(())
    }
}

/// What one Square run found, per image of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareOutcome {
    /// The adversarial pixels of the fooled images and the clean pixels of the others,
    /// `batch * image_len` in the model's layout.
    pub adv: Vec<f32>,
    /// Whether the model misclassifies `adv` and the clean image was classified correctly
    /// (images misclassified from the start are not attacked and count as not fooled here).
    pub fooled: Vec<bool>,
    /// Queries spent on each image, counted as the reference: 1 for the initial point plus 1
    /// per iteration the image was still robust; 0 for images not attacked.
    pub queries: Vec<usize>,
}

/// Runs Square on a batch (one label and one seed per image); returns the adversarial pixels
/// of the images it fooled and the clean pixels of the others.
pub fn square(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &SquareConfig,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<f32>, AttackError> {
    Ok(square_run(model, x, labels, seeds, config, stop)?.adv)
}

/// [`square`], with which images were fooled and the queries each took.
pub fn square_run(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &SquareConfig,
    stop: &dyn Fn() -> bool,
) -> Result<SquareOutcome, AttackError> {
    run(model, x, labels, seeds, config, stop, &mut |_| {})
}

/// The reference's `p_selection` with `resc_schedule=False`: the fraction of pixels in the
/// square at iteration `it` (0-based).
fn p_selection(p_init: f64, it: usize) -> f64 {
    let divisor = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / divisor
}

/// The side of the square at fraction `p` of an image's pixels: Python's
/// `int(round(sqrt(p * n_features / c)))` (ties to even), at least `min_side`.
fn square_side(p: f64, pixels_per_channel: usize, min_side: usize) -> usize {
    let side = (p * pixels_per_channel as f64).sqrt().round_ties_even();
    (side as usize).max(min_side)
}

/// The reference's `random_int(0, n)`: `floor(n * U[0, 1))`, so `0..n` (never `n`), and 0
/// when `n` is 0.
fn random_start(rng: &mut StdRng, n: usize) -> usize {
    if n == 0 { 0 } else { rng.random_range(0..n) }
}

/// The reference's `random_choice`: `-1` or `1` with equal odds.
fn random_sign(rng: &mut StdRng) -> f32 {
    if rng.random_bool(0.5) { 1.0 } else { -1.0 }
}

/// Margins `z_y - max_{i != y} z_i` of a batch of logits (the reference's `margin_and_loss`
/// with `loss='margin'`, whose loss is the margin itself).
fn margins(logits: &[f32], classes: usize, labels: &[usize]) -> Vec<f32> {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .map(|(z, &y)| {
            let other = z
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != y)
                .map(|(_, &v)| v)
                .fold(f32::NEG_INFINITY, f32::max);
            z[y] - other
        })
        .collect()
}

/// The first index of the largest logit of each row (torch's `max(1)[1]`).
fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits.chunks_exact(classes).map(argmax).collect()
}

/// Checked logits of `batch` images.
fn query(model: &mut dyn Classifier, pixels: &[f32], batch: usize, classes: usize) -> Result<Vec<f32>, AttackError> {
    let logits = model.logits(pixels, batch)?;
    if logits.len() != batch * classes {
        return Err(AttackError::Shape(format!(
            "the model returned {} logits for {batch} images of {classes} classes",
            logits.len()
        )));
    }
    Ok(logits)
}

/// The reference's `eta_rectangles(rows, cols)` for L2: nested rectangles around the centre
/// with weight `1 / (k + 1)^2` each, scaled to unit L2 norm; row-major `rows * cols`.
fn eta_rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut delta = vec![0.0f64; rows * cols];
    let (centre_row, centre_col) = (rows / 2 + 1, cols / 2 + 1);
    // Top-left corner of ring `k`: the centre minus `k + 1`, may go below zero.
    for k in 0..centre_row.max(centre_col) {
        let top = centre_row as isize - 1 - k as isize;
        let left = centre_col as isize - 1 - k as isize;
        let bottom = ((top + 2 * k as isize + 1).max(0) as usize).min(rows);
        let right = ((left + 2 * k as isize + 1).max(0) as usize).min(cols);
        let weight = 1.0 / ((k + 1) as f64).powi(2);
        for r in top.max(0) as usize..bottom {
            for c in left.max(0) as usize..right {
                delta[r * cols + c] += weight;
            }
        }
    }
    let norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
    delta.iter().map(|v| (v / norm) as f32).collect()
}

/// The reference's `eta(s)` for L2: an `s x s` pattern, positive rectangles on the top half
/// and negative on the bottom, unit L2 norm, transposed with probability 1/2; row-major.
fn eta(s: usize, rng: &mut StdRng) -> Vec<f32> {
    let half = s / 2;
    let mut delta = eta_rectangles(half, s);
    delta.extend(eta_rectangles(s - half, s).into_iter().map(|v| -v));
    let norm = delta.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    for v in &mut delta {
        *v = (f64::from(*v) / norm) as f32;
    }
    if rng.random::<f32>() > 0.5 {
        let mut transposed = vec![0.0f32; s * s];
        for r in 0..s {
            for c in 0..s {
                transposed[c * s + r] = delta[r * s + c];
            }
        }
        delta = transposed;
    }
    delta
}

/// The L2 norm of one image's values, in f64.
fn l2_norm(values: impl Iterator<Item = f32>) -> f64 {
    values.map(|v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

/// `clamp(x + eps * delta / (||delta||_2 + 1e-12), 0, 1)` into `out` (the reference's
/// `normalize` for L2).
fn l2_point(x: &[f32], delta: &[f32], eps: f32, out: &mut [f32]) {
    let scale = f64::from(eps) / (l2_norm(delta.iter().copied()) + 1e-12);
    for ((o, &xv), &d) in out.iter_mut().zip(x).zip(delta) {
        *o = (xv + (f64::from(d) * scale) as f32).clamp(0.0, 1.0);
    }
}

/// A `side x side` window of one image at `(top, left)`: the offsets of channel `c`, row-major.
fn window(shape: &ImageShape, c: usize, top: usize, left: usize, side: usize) -> impl Iterator<Item = usize> + '_ {
    (top..top + side).flat_map(move |r| (left..left + side).map(move |col| shape.index(c, r, col)))
}

/// The L2 initial perturbation of one image (the reference's grid of `eta(h / 5)` blocks with
/// a random sign per block and channel; blocks that would cross the border are cut there,
/// where the reference fails).
fn l2_init(shape: &ImageShape, side: usize, etas: &[Vec<f32>], rng: &mut StdRng, delta: &mut [f32]) {
    let (h, w) = (shape.height, shape.width);
    let start = (h - side * 5) / 2;
    let mut block = 0;
    for by in 0..h / side {
        for bx in 0..w / side {
            let (top, left) = (start + by * side, start + bx * side);
            let pattern = &etas[block];
            block += 1;
            for c in 0..shape.channels {
                let sign = random_sign(rng);
                for r in 0..side {
                    for col in 0..side {
                        let (y, xx) = (top + r, left + col);
                        if y < h && xx < w {
                            delta[shape.index(c, y, xx)] += pattern[r * side + col] * sign;
                        }
                    }
                }
            }
        }
    }
}

/// The attack, calling `observe` with every image's best margin after the start and after
/// each iteration (the tests check it never increases).
fn run(
    model: &mut dyn Classifier,
    x: &[f32],
    labels: &[i64],
    seeds: &[u64],
    config: &SquareConfig,
    stop: &dyn Fn() -> bool,
    observe: &mut dyn FnMut(&[f32]),
) -> Result<SquareOutcome, AttackError> {
    config.validate()?;
    let batch = labels.len();
    if seeds.len() != batch {
        return Err(AttackError::Shape(format!("{} seeds for {batch} images", seeds.len())));
    }
    let shape = model.shape();
    let classes = model.classes();
    let n = shape.len();
    let (c_count, h, w) = (shape.channels, shape.height, shape.width);
    if n == 0 {
        return Err(AttackError::Shape("the model's image has no pixels".into()));
    }
    if classes < 2 {
        return Err(AttackError::Shape(format!(
            "Square needs 2 classes or more, the model has {classes}"
        )));
    }
    if config.norm == Norm::L2 && h < 5 {
        return Err(AttackError::Shape(format!(
            "L2 Square needs images at least 5 pixels high, these are {h}"
        )));
    }
    if batch.checked_mul(n) != Some(x.len()) {
        return Err(AttackError::Shape(format!(
            "{} pixel values for {batch} images of {n}",
            x.len()
        )));
    }
    if labels.len() != batch {
        return Err(AttackError::Shape(format!(
            "{} labels for {batch} images",
            labels.len()
        )));
    }
    let labels: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(index, &label)| match usize::try_from(label) {
            Ok(y) if y < classes => Ok(y),
            _ => Err(AttackError::Label { index, label, classes }),
        })
        .collect::<Result<_, _>>()?;
    let mut outcome = SquareOutcome {
        adv: x.to_vec(),
        fooled: vec![false; batch],
        queries: vec![0; batch],
    };
    if batch == 0 {
        return Ok(outcome);
    }
    if stop() {
        return Err(AttackError::Stopped);
    }
    // perturb(): attack only the images classified correctly.
    let clean = predictions(&query(model, x, batch, classes)?, classes);
    let attacked: Vec<usize> = (0..batch).filter(|&i| clean[i] == labels[i]).collect();
    if attacked.is_empty() {
        return Ok(outcome);
    }
    let count = attacked.len();
    let mut x_att = Vec::with_capacity(count * n);
    for &i in &attacked {
        x_att.extend_from_slice(&x[i * n..(i + 1) * n]);
    }
    let y_att: Vec<usize> = attacked.iter().map(|&i| labels[i]).collect();
    let eps = config.eps;
    let p_init = f64::from(config.p_init);
    let pixels_per_channel = h * w;
    // Each image draws from its own stream, so its result does not depend on the batch.
    let mut rngs: Vec<StdRng> = attacked.iter().map(|&i| StdRng::seed_from_u64(seeds[i])).collect();

    // attack_single_run(): the starting point.
    let mut x_best = vec![0.0f32; count * n];
    match config.norm {
        Norm::Linf => {
            for ((best, xi), rng) in x_best.chunks_exact_mut(n).zip(x_att.chunks_exact(n)).zip(&mut rngs) {
                for c in 0..c_count {
                    for col in 0..w {
                        let step = eps * random_sign(rng);
                        for r in 0..h {
                            let k = shape.index(c, r, col);
                            best[k] = (xi[k] + step).clamp(0.0, 1.0);
                        }
                    }
                }
            }
        }
        Norm::L2 => {
            let side = h / 5;
            // One `eta` per block (the reference draws them once for the batch; here per image).
            let blocks = (h / side) * (w / side);
            let mut delta = vec![0.0f32; n];
            for ((best, xi), rng) in x_best.chunks_exact_mut(n).zip(x_att.chunks_exact(n)).zip(&mut rngs) {
                let etas: Vec<Vec<f32>> = (0..blocks).map(|_| eta(side, rng)).collect();
                delta.fill(0.0);
                l2_init(&shape, side, &etas, rng, &mut delta);
                l2_point(xi, &delta, eps, best);
            }
        }
    }
    let mut margin_min = margins(&query(model, &x_best, count, classes)?, classes, &y_att);
    let mut queries = vec![1usize; count];
    observe(&margin_min);

    if !margin_min.iter().all(|&m| m < 0.0) {
        let mut x_new = Vec::with_capacity(count * n);
        let mut delta = vec![0.0f32; n];
        for it in 0..config.n_queries {
            if stop() {
                return Err(AttackError::Stopped);
            }
            let to_fool: Vec<usize> = (0..count).filter(|&j| margin_min[j] > 0.0).collect();
            if to_fool.is_empty() {
                break;
            }
            let p = p_selection(p_init, it);
            x_new.clear();
            for &j in &to_fool {
                x_new.extend_from_slice(&x_best[j * n..(j + 1) * n]);
            }
            match config.norm {
                Norm::Linf => {
                    let side = square_side(p, pixels_per_channel, 1).min(h.min(w));
                    for (new, &j) in x_new.chunks_exact_mut(n).zip(&to_fool) {
                        let rng = &mut rngs[j];
                        let top = random_start(rng, h - side);
                        let left = random_start(rng, w - side);
                        let signs: Vec<f32> = (0..c_count).map(|_| 2.0 * eps * random_sign(rng)).collect();
                        let xi = &x_att[j * n..(j + 1) * n];
                        for (c, &step) in signs.iter().enumerate() {
                            for k in window(&shape, c, top, left, side) {
                                new[k] = (new[k] + step).max(xi[k] - eps).min(xi[k] + eps).clamp(0.0, 1.0);
                            }
                        }
                    }
                }
                Norm::L2 => {
                    let mut side = square_side(p, pixels_per_channel, 3);
                    if side.is_multiple_of(2) {
                        side += 1;
                    }
                    let side = side.min(h.min(w));
                    let in_window = |t: usize, l: usize, r: usize, col: usize| {
                        (t..t + side).contains(&r) && (l..l + side).contains(&col)
                    };
                    for (new, &j) in x_new.chunks_exact_mut(n).zip(&to_fool) {
                        let rng = &mut rngs[j];
                        let top = random_start(rng, h - side);
                        let left = random_start(rng, w - side);
                        let top2 = random_start(rng, h - side);
                        let left2 = random_start(rng, w - side);
                        let pattern = eta(side, rng);
                        let xi = &x_att[j * n..(j + 1) * n];
                        for ((d, &b), &xv) in delta.iter_mut().zip(&*new).zip(xi) {
                            *d = b - xv;
                        }
                        let norm_image = l2_norm(delta.iter().copied());
                        // The room left in the ball, shared by the channels.
                        let room = (f64::from(eps).powi(2) - norm_image.powi(2)).max(0.0) / c_count as f64;
                        let mut patches = Vec::with_capacity(c_count);
                        for c in 0..c_count {
                            let sign = random_sign(rng);
                            let norm_window_1 = l2_norm(window(&shape, c, top, left, side).map(|k| delta[k]));
                            let norm_windows = l2_norm(
                                (0..h)
                                    .flat_map(|r| (0..w).map(move |col| (r, col)))
                                    .filter(|&(r, col)| in_window(top, left, r, col) || in_window(top2, left2, r, col))
                                    .map(|(r, col)| delta[shape.index(c, r, col)]),
                            );
                            let mut patch: Vec<f64> = window(&shape, c, top, left, side)
                                .zip(&pattern)
                                .map(|(k, &e)| f64::from(e * sign) + f64::from(delta[k]) / (1e-12 + norm_window_1))
                                .collect();
                            let scale = (room + norm_windows.powi(2)).sqrt()
                                / (1e-12 + patch.iter().map(|v| v * v).sum::<f64>().sqrt());
                            for v in &mut patch {
                                *v *= scale;
                            }
                            patches.push(patch);
                        }
                        for (c, patch) in patches.iter().enumerate() {
                            for k in window(&shape, c, top2, left2, side) {
                                delta[k] = 0.0;
                            }
                            for (k, &v) in window(&shape, c, top, left, side).zip(patch) {
                                delta[k] = v as f32;
                            }
                        }
                        l2_point(xi, &delta, eps, new);
                    }
                }
            }
            let y_curr: Vec<usize> = to_fool.iter().map(|&j| y_att[j]).collect();
            let margin = margins(&query(model, &x_new, to_fool.len(), classes)?, classes, &y_curr);
            for ((&j, &m), new) in to_fool.iter().zip(&margin).zip(x_new.chunks_exact(n)) {
                // The loss is the margin: keep a lower one, or any misclassified point.
                if m < margin_min[j] || m <= 0.0 {
                    margin_min[j] = m;
                    x_best[j * n..(j + 1) * n].copy_from_slice(new);
                }
                queries[j] += 1;
            }
            observe(&margin_min);
            if margin_min.iter().all(|&m| m <= 0.0) {
                break;
            }
        }
    }

    // perturb(): keep the points the model now misclassifies.
    let adv_pred = predictions(&query(model, &x_best, count, classes)?, classes);
    for (j, &i) in attacked.iter().enumerate() {
        outcome.queries[i] = queries[j];
        if adv_pred[j] != labels[i] {
            outcome.fooled[i] = true;
            outcome.adv[i * n..(i + 1) * n].copy_from_slice(&x_best[j * n..(j + 1) * n]);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use engine::preprocess::Layout;

    use super::*;
    use crate::autoattack::classifier::toy::Linear;

    fn image(layout: Layout, channels: usize, side: usize) -> ImageShape {
        ImageShape {
            layout,
            channels,
            height: side,
            width: side,
        }
    }

    /// The shapes the tests run on: 1x8x8 and 3x6x6, both layouts.
    fn shapes() -> Vec<ImageShape> {
        let mut out = Vec::new();
        for layout in [Layout::Nchw, Layout::Nhwc] {
            out.push(image(layout, 1, 8));
            out.push(image(layout, 3, 6));
        }
        out
    }

    /// Random pixels in [0, 1] and the model's own predictions as labels (so every image is
    /// attacked).
    fn data(model: &mut Linear, batch: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = model.shape.len();
        let x: Vec<f32> = (0..batch * n).map(|_| rng.random::<f32>()).collect();
        let logits = model.logits(&x, batch).unwrap();
        let labels = predictions(&logits, model.classes).iter().map(|&p| p as i64).collect();
        (x, labels)
    }

    fn config(norm: Norm, eps: f32, n_queries: usize) -> SquareConfig {
        SquareConfig {
            n_queries,
            ..SquareConfig::standard(norm, eps)
        }
    }

    /// One seed per image, from a test's seed.
    fn seeds(batch: usize, seed: u64) -> Vec<u64> {
        (0..batch as u64).map(|i| seed * 1000 + i).collect()
    }

    fn never() -> bool {
        false
    }

    /// The returned points: inside the ball and [0, 1]; the fooled ones misclassified, the
    /// others the clean pixels exactly.
    fn check_outcome(model: &mut Linear, x: &[f32], labels: &[i64], cfg: &SquareConfig, out: &SquareOutcome) {
        let n = model.shape.len();
        let batch = labels.len();
        assert_eq!(out.adv.len(), x.len());
        let preds = predictions(&model.logits(&out.adv, batch).unwrap(), model.classes);
        for i in 0..batch {
            let (a, c) = (&out.adv[i * n..(i + 1) * n], &x[i * n..(i + 1) * n]);
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "image {i} leaves [0, 1]");
            match cfg.norm {
                Norm::Linf => {
                    let dist = a.iter().zip(c).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
                    assert!(
                        dist <= cfg.eps * (1.0 + 1e-5) + 1e-7,
                        "image {i}: L-inf {dist} > {}",
                        cfg.eps
                    );
                }
                Norm::L2 => {
                    let dist = l2_norm(a.iter().zip(c).map(|(p, q)| p - q));
                    assert!(
                        dist <= f64::from(cfg.eps) * (1.0 + 1e-4) + 1e-6,
                        "image {i}: L2 {dist} > {}",
                        cfg.eps
                    );
                }
            }
            if out.fooled[i] {
                assert_ne!(
                    preds[i] as i64, labels[i],
                    "image {i} reported fooled but classified right"
                );
            } else {
                assert_eq!(a, c, "image {i} not fooled but changed");
            }
            assert!(out.queries[i] <= cfg.n_queries + 1);
        }
    }

    #[test]
    fn linf_points_stay_in_the_ball_and_fooled_ones_are_misclassified() {
        for (s, shape) in shapes().into_iter().enumerate() {
            for hidden in [0, 6] {
                let mut model = Linear::new(shape, 5, hidden, 11 + s as u64);
                let (x, labels) = data(&mut model, 12, 3);
                let cfg = config(Norm::Linf, 0.1, 300);
                let out = square_run(&mut model, &x, &labels, &seeds(12, 5), &cfg, &never).unwrap();
                check_outcome(&mut model, &x, &labels, &cfg, &out);
                assert_eq!(
                    square(&mut model, &x, &labels, &seeds(12, 5), &cfg, &never).unwrap(),
                    out.adv
                );
            }
        }
    }

    #[test]
    fn l2_points_stay_in_the_ball_and_fooled_ones_are_misclassified() {
        for (s, shape) in shapes().into_iter().enumerate() {
            for hidden in [0, 6] {
                let mut model = Linear::new(shape, 5, hidden, 21 + s as u64);
                let (x, labels) = data(&mut model, 12, 4);
                let cfg = config(Norm::L2, 0.5, 300);
                let out = square_run(&mut model, &x, &labels, &seeds(12, 6), &cfg, &never).unwrap();
                check_outcome(&mut model, &x, &labels, &cfg, &out);
            }
        }
    }

    /// A large radius fools a linear model almost everywhere; eps 0 fools nothing and
    /// returns the clean pixels.
    #[test]
    fn large_eps_fools_most_and_zero_eps_none() {
        for norm in [Norm::Linf, Norm::L2] {
            for shape in shapes() {
                let mut model = Linear::new(shape, 4, 0, 31);
                let (x, labels) = data(&mut model, 20, 7);
                let big = if norm == Norm::Linf { 0.5 } else { 4.0 };
                let cfg = config(norm, big, 200);
                let out = square_run(&mut model, &x, &labels, &seeds(20, 1), &cfg, &never).unwrap();
                let fooled = out.fooled.iter().filter(|&&f| f).count();
                assert!(fooled >= 16, "{norm:?} {shape:?}: only {fooled}/20 fooled at eps {big}");
                check_outcome(&mut model, &x, &labels, &cfg, &out);

                let cfg = config(norm, 0.0, 50);
                let out = square_run(&mut model, &x, &labels, &seeds(20, 1), &cfg, &never).unwrap();
                assert!(out.fooled.iter().all(|&f| !f));
                assert_eq!(out.adv, x);
                // Nothing moves, so every image is queried every iteration.
                assert!(out.queries.iter().all(|&q| q == 51), "{:?}", out.queries);
            }
        }
    }

    /// The best margin of every image never increases, starts from the initial point's, and
    /// is the margin of the point kept.
    #[test]
    fn margin_never_increases() {
        for norm in [Norm::Linf, Norm::L2] {
            for shape in shapes() {
                let mut model = Linear::new(shape, 6, 8, 41);
                let (x, labels) = data(&mut model, 10, 8);
                let eps = if norm == Norm::Linf { 0.05 } else { 0.3 };
                let cfg = config(norm, eps, 200);
                let mut history: Vec<Vec<f32>> = Vec::new();
                let out = run(&mut model, &x, &labels, &seeds(10, 2), &cfg, &never, &mut |m| {
                    history.push(m.to_vec())
                })
                .unwrap();
                assert!(history.len() >= 2, "no iteration ran");
                let mut decreased = 0;
                for pair in history.windows(2) {
                    for (before, after) in pair[0].iter().zip(&pair[1]) {
                        assert!(after <= before, "margin rose from {before} to {after}");
                        decreased += usize::from(after < before);
                    }
                }
                assert!(decreased > 0, "no margin ever decreased");
                // Fooled images end with a margin <= 0 (all images are attacked here).
                let last = history.last().unwrap();
                for (i, &f) in out.fooled.iter().enumerate() {
                    if f {
                        assert!(last[i] <= 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        for norm in [Norm::Linf, Norm::L2] {
            let shape = image(Layout::Nchw, 3, 6);
            let mut model = Linear::new(shape, 5, 6, 51);
            let (x, labels) = data(&mut model, 8, 9);
            let eps = if norm == Norm::Linf { 0.05 } else { 0.3 };
            let a = square_run(&mut model, &x, &labels, &seeds(8, 3), &config(norm, eps, 100), &never).unwrap();
            let b = square_run(&mut model, &x, &labels, &seeds(8, 3), &config(norm, eps, 100), &never).unwrap();
            assert_eq!(a, b);
            let mut other = a.clone();
            for seed in 4..8 {
                other = square_run(
                    &mut model,
                    &x,
                    &labels,
                    &seeds(8, seed),
                    &config(norm, eps, 100),
                    &never,
                )
                .unwrap();
                if other != a {
                    break;
                }
            }
            assert_ne!(a, other, "{norm:?}: the seed changes nothing");
        }
    }

    /// The same model and images in NCHW and NHWC give the same attack, transposed: the
    /// squares are placed by (channel, row, column), not by offset.
    #[test]
    fn layouts_agree() {
        for norm in [Norm::Linf, Norm::L2] {
            let (nchw, nhwc) = (image(Layout::Nchw, 3, 6), image(Layout::Nhwc, 3, 6));
            let n = nchw.len();
            let classes = 4;
            let mut a = Linear::new(nchw, classes, 0, 61);
            let mut b = Linear::new(nhwc, classes, 0, 61);
            let to_nhwc = |values: &[f32]| {
                let mut out = vec![0.0f32; values.len()];
                for (img, dst) in values.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                    for c in 0..3 {
                        for y in 0..6 {
                            for x in 0..6 {
                                dst[nhwc.index(c, y, x)] = img[nchw.index(c, y, x)];
                            }
                        }
                    }
                }
                out
            };
            b.w = to_nhwc(&a.w);
            b.b = a.b.clone();
            let (x, labels) = data(&mut a, 10, 10);
            let eps = if norm == Norm::Linf { 0.05 } else { 0.4 };
            let cfg = config(norm, eps, 150);
            let out_a = square_run(&mut a, &x, &labels, &seeds(10, 4), &cfg, &never).unwrap();
            let out_b = square_run(&mut b, &to_nhwc(&x), &labels, &seeds(10, 4), &cfg, &never).unwrap();
            assert_eq!(out_a.fooled, out_b.fooled);
            assert_eq!(out_a.queries, out_b.queries);
            let (ta, tb) = (to_nhwc(&out_a.adv), out_b.adv);
            let worst = ta.iter().zip(&tb).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{norm:?}: layouts differ by {worst}");
            assert!(
                out_a.fooled.iter().any(|&f| f) && out_a.fooled.iter().any(|&f| !f),
                "{:?}",
                out_a.fooled
            );
        }
    }

    /// Queries as the reference counts them, and model runs to match: one clean pass, one for
    /// the start, one per iteration, one final check.
    #[test]
    fn queries_are_counted_per_image() {
        let shape = image(Layout::Nhwc, 1, 8);
        let mut model = Linear::new(shape, 5, 0, 71);
        let (x, labels) = data(&mut model, 10, 11);
        let cfg = config(Norm::Linf, 0.08, 120);
        let mut iterations = 0;
        let runs_before = model.runs;
        let out = run(&mut model, &x, &labels, &seeds(10, 5), &cfg, &never, &mut |_| {
            iterations += 1
        })
        .unwrap();
        let iterations = iterations - 1;
        assert_eq!(model.runs - runs_before, iterations + 3);
        for i in 0..10 {
            if out.fooled[i] {
                assert!(out.queries[i] >= 1 && out.queries[i] <= iterations + 1);
            } else {
                assert_eq!(out.queries[i], iterations + 1);
            }
        }
        assert!(
            out.fooled.iter().any(|&f| f) && out.fooled.iter().any(|&f| !f),
            "{:?}",
            out.fooled
        );
    }

    /// Images the model already misclassifies are not attacked: returned clean, 0 queries.
    #[test]
    fn misclassified_images_are_left_alone() {
        let shape = image(Layout::Nchw, 1, 8);
        let mut model = Linear::new(shape, 5, 0, 81);
        let (x, mut labels) = data(&mut model, 6, 12);
        labels[2] = (labels[2] + 1) % 5;
        let out = square_run(
            &mut model,
            &x,
            &labels,
            &seeds(6, 1),
            &config(Norm::Linf, 0.5, 50),
            &never,
        )
        .unwrap();
        assert!(!out.fooled[2]);
        assert_eq!(out.queries[2], 0);
        assert_eq!(out.adv[2 * 64..3 * 64], x[2 * 64..3 * 64]);
        assert!(out.fooled.iter().enumerate().any(|(i, &f)| i != 2 && f));
    }

    #[test]
    fn stop_gives_stopped() {
        let shape = image(Layout::Nchw, 3, 6);
        let mut model = Linear::new(shape, 5, 0, 91);
        let (x, labels) = data(&mut model, 4, 13);
        for norm in [Norm::Linf, Norm::L2] {
            let cfg = config(norm, 0.01, 1000);
            let err = square(&mut model, &x, &labels, &seeds(4, 1), &cfg, &|| true).unwrap_err();
            assert!(matches!(err, AttackError::Stopped), "{err}");
            // Stopping after a few iterations.
            let calls = Cell::new(0);
            let stop = || {
                calls.set(calls.get() + 1);
                calls.get() > 5
            };
            let err = square(&mut model, &x, &labels, &seeds(4, 1), &cfg, &stop).unwrap_err();
            assert!(matches!(err, AttackError::Stopped), "{err}");
            assert_eq!(calls.get(), 6);
        }
    }

    #[test]
    fn invalid_settings_and_inputs_are_refused() {
        let shape = image(Layout::Nchw, 1, 8);
        let mut model = Linear::new(shape, 5, 0, 101);
        let (x, labels) = data(&mut model, 3, 14);
        let good = config(Norm::Linf, 0.1, 10);
        let bad = [
            SquareConfig {
                eps: -0.1,
                ..good.clone()
            },
            SquareConfig {
                eps: 1.5,
                ..good.clone()
            },
            SquareConfig {
                norm: Norm::L2,
                eps: f32::INFINITY,
                ..good.clone()
            },
            SquareConfig {
                eps: f32::NAN,
                ..good.clone()
            },
            SquareConfig {
                n_queries: 0,
                ..good.clone()
            },
            SquareConfig {
                p_init: 0.0,
                ..good.clone()
            },
            SquareConfig {
                p_init: 1.2,
                ..good.clone()
            },
            SquareConfig {
                p_init: f32::NAN,
                ..good.clone()
            },
        ];
        for cfg in &bad {
            let err = square(&mut model, &x, &labels, &seeds(3, 1), cfg, &never).unwrap_err();
            assert!(matches!(err, AttackError::Parameter(_)), "{cfg:?}: {err}");
        }
        let runs = model.runs;
        let err = square(&mut model, &x[1..], &labels, &seeds(3, 1), &good, &never).unwrap_err();
        assert!(matches!(err, AttackError::Shape(_)), "{err}");
        let err = square(&mut model, &x, &labels[..2], &seeds(3, 1), &good, &never).unwrap_err();
        assert!(matches!(err, AttackError::Shape(_)), "{err}");
        for label in [-1, 5] {
            let err = square(&mut model, &x, &[0, label, 0], &seeds(3, 1), &good, &never).unwrap_err();
            assert!(matches!(err, AttackError::Label { index: 1, .. }), "{err}");
        }
        assert_eq!(model.runs, runs, "a refused call queried the model");
        // L2 needs 5 rows for its initial grid.
        let mut tiny = Linear::new(image(Layout::Nchw, 1, 4), 3, 0, 1);
        let err = square(
            &mut tiny,
            &[0.5; 16],
            &[0],
            &seeds(1, 1),
            &config(Norm::L2, 0.1, 10),
            &never,
        )
        .unwrap_err();
        assert!(matches!(err, AttackError::Shape(_)), "{err}");
        assert!(
            square(&mut model, &[], &[], &seeds(0, 10), &good, &never)
                .unwrap()
                .is_empty()
        );
        assert!(SquareConfig::standard(Norm::L2, 0.5).validate().is_ok());
    }

    /// The reference's schedule: `p_init` halved after iterations 10, 50, 200, 500, 1000, 2000,
    /// 4000, 6000 and 8000 (with `resc_schedule=False`).
    #[test]
    fn p_schedule_follows_the_reference() {
        let bounds = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];
        let halvings = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        for (k, &b) in bounds.iter().enumerate() {
            assert_eq!(p_selection(0.8, b), 0.8 / halvings[k], "at {b}");
            assert_eq!(p_selection(0.8, b + 1), 0.8 / halvings[k + 1], "after {b}");
        }
        assert_eq!(p_selection(0.8, 0), 0.8);
        // Python's round: ties to even (sqrt(6.25) = 2.5 -> 2), at least the minimum.
        assert_eq!(square_side(6.25 / 16.0, 16, 1), 2);
        assert_eq!(square_side(0.8, 1024, 1), 29);
        assert_eq!(square_side(1e-4, 64, 1), 1);
        assert_eq!(square_side(1e-4, 64, 3), 3);
    }

    /// `eta`: unit L2 norm, positive on one half, negative on the other (or their transpose).
    #[test]
    fn eta_is_a_unit_pattern() {
        let mut rng = StdRng::seed_from_u64(1);
        for s in [1, 2, 3, 5, 7] {
            for _ in 0..4 {
                let e = eta(s, &mut rng);
                assert_eq!(e.len(), s * s);
                let norm = l2_norm(e.iter().copied());
                assert!((norm - 1.0).abs() < 1e-5, "s {s}: norm {norm}");
                let last_row_negative = e[(s - 1) * s..].iter().all(|&v| v < 0.0);
                let last_col_negative = (0..s).all(|r| e[r * s + s - 1] < 0.0);
                assert!(last_row_negative || last_col_negative, "s {s}: {e:?}");
            }
        }
        let rect = eta_rectangles(3, 3);
        // The centre has the most weight, the corners the least.
        assert!(rect[4] > rect[1] && rect[1] >= rect[0]);
    }
}
