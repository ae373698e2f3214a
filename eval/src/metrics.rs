//! The benchmark's figures: top-1/top-5 error, CE/mCE, flip probability/rate, top-5 distance and
//! calibration error, computed exactly as the reference code computes them.
//!
//! It exists so that every evaluation (`hardy eval`, the server's robustness jobs, merged shards)
//! turns predictions into the published metrics in one way. The definitions and the AlexNet
//! baselines come from Hendrycks & Dietterich (ICLR 2019) and its repository
//! (`ImageNet-P/test.py`), augmix's `imagenet.py`, google-research/robustness_metrics and
//! clovaai/assembled-cnn; see `shared/reference/robustness.md`.
//!
//! Units: errors, flip probabilities and calibration errors are fractions in `[0, 1]`; the
//! AlexNet-normalised figures (CE, relative CE, mCE, FR, mFR) are percentages, as the paper
//! prints them, so that AlexNet itself scores exactly 100.

use serde::{Deserialize, Serialize};

use crate::{Corruption, Perturbation};

/// AlexNet's clean top-1 error on the ImageNet validation set (google-research/robustness_metrics),
/// the baseline of the relative CE.
pub const ALEXNET_CLEAN_ERROR: f64 = 0.4348;

/// AlexNet's top-1 error per severity 1..5 on the 15 benchmark corruptions (hendrycks/robustness
/// issue #10), in [`Corruption::BENCHMARK`] order.
const ALEXNET_SEVERITY_ERRORS: [[f64; 5]; 15] = [
    [0.69528, 0.82542, 0.93554, 0.98138, 0.99452], // gaussian_noise
    [0.71224, 0.85108, 0.93574, 0.98182, 0.99146], // shot_noise
    [0.78374, 0.89808, 0.94870, 0.98720, 0.99548], // impulse_noise
    [0.65624, 0.73202, 0.85036, 0.91364, 0.94714], // defocus_blur
    [0.64308, 0.75054, 0.88806, 0.91622, 0.93344], // glass_blur
    [0.58430, 0.70048, 0.82108, 0.89750, 0.92638], // motion_blur
    [0.70008, 0.76992, 0.80784, 0.84198, 0.87198], // zoom_blur
    [0.71726, 0.88392, 0.86468, 0.91870, 0.94952], // snow
    [0.61390, 0.79734, 0.88790, 0.89942, 0.93430], // frost
    [0.67474, 0.76050, 0.84378, 0.87260, 0.94500], // fog
    [0.45140, 0.48502, 0.54048, 0.62166, 0.72440], // brightness
    [0.64548, 0.76150, 0.88874, 0.97760, 0.99270], // contrast
    [0.52596, 0.70116, 0.55686, 0.64076, 0.80554], // elastic_transform
    [0.52218, 0.54620, 0.73728, 0.87092, 0.91262], // pixelate
    [0.51002, 0.54718, 0.57294, 0.65458, 0.74778], // jpeg_compression
];

/// AlexNet's error averaged over severities: the 15 benchmark corruptions (augmix `imagenet.py`),
/// then the 4 extra ones (assembled-cnn), in [`Corruption::ALL`] order.
const ALEXNET_MEAN_ERRORS: [f64; 19] = [
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572, 0.819324, 0.564592,
    0.853204, 0.646056, 0.717840, 0.606500, // benchmark
    0.8454, 0.7871, 0.7175, 0.6583, // speckle_noise, gaussian_blur, spatter, saturate
];

/// AlexNet's flip probabilities on ImageNet-P (assembled-cnn), in [`Perturbation::ALL`] order.
const ALEXNET_FLIP_PROBABILITIES: [f64; 14] = [
    0.23653, // gaussian_noise
    0.30062, // shot_noise
    0.09297, // motion_blur
    0.05942, // zoom_blur
    0.11928, // snow
    0.04889, // brightness
    0.11007, // translate
    0.13104, // rotate
    0.07050, // tilt
    0.23531, // scale
    0.18649, // speckle_noise
    0.02775, // gaussian_blur
    0.05053, // spatter
    0.10658, // shear
];

fn corruption_position(c: Corruption) -> usize {
    Corruption::ALL.iter().position(|&x| x == c).unwrap_or(0)
}

fn perturbation_position(p: Perturbation) -> usize {
    Perturbation::ALL.iter().position(|&x| x == p).unwrap_or(0)
}

/// AlexNet's top-1 error per severity 1..5 for the 15 benchmark corruptions; `None` for the 4
/// extra ones, whose published baseline is a mean only.
pub fn alexnet_corruption_errors(c: Corruption) -> Option<[f64; 5]> {
    Corruption::BENCHMARK
        .iter()
        .position(|&x| x == c)
        .map(|i| ALEXNET_SEVERITY_ERRORS[i])
}

/// AlexNet's top-1 error averaged over the 5 severities, for all 19 corruptions.
pub fn alexnet_corruption_mean_error(c: Corruption) -> f64 {
    ALEXNET_MEAN_ERRORS[corruption_position(c)]
}

/// AlexNet's flip probability on ImageNet-P, for all 14 perturbations.
pub fn alexnet_flip_probability(p: Perturbation) -> f64 {
    ALEXNET_FLIP_PROBABILITIES[perturbation_position(p)]
}

/// A metric that cannot be computed from what was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A mean over the benchmark needs every benchmark member.
    #[error("{metric} needs all {needed} benchmark {kind}s; missing: {missing}")]
    Missing {
        /// `mCE` or `mFR`.
        metric: &'static str,
        /// `corruption` or `perturbation`.
        kind: &'static str,
        /// How many the benchmark has.
        needed: usize,
        /// The missing names, comma-separated.
        missing: String,
    },
    /// The same corruption or perturbation was given twice with different values.
    #[error("{metric}: `{name}` given twice, as {first} and {second}")]
    Duplicate {
        /// `mCE` or `mFR`.
        metric: &'static str,
        /// The name given twice.
        name: &'static str,
        /// The first value.
        first: f64,
        /// The second value.
        second: f64,
    },
    /// Inputs whose lengths must agree do not.
    #[error("{what}: {left} vs {right}")]
    LengthMismatch {
        /// What was compared.
        what: &'static str,
        /// The first length.
        left: usize,
        /// The second length.
        right: usize,
    },
    /// An argument is out of range.
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// Top-1 / top-5

/// The index of the largest logit (the first one on ties, as numpy's and torch's `argmax`);
/// `None` for an empty row. NaNs are never chosen over numbers.
pub fn top1(logits: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        let better = match best {
            None => true,
            Some((_, b)) => v > b || (b.is_nan() && !v.is_nan()),
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Class `class`'s ordinal rank (0-based) in `logits` sorted in decreasing order, ties broken by
/// index: scipy's `rankdata(-logits, method='ordinal') - 1`. Counting stops at `cap`, so the
/// result is `min(rank, cap)`.
fn ordinal_rank(logits: &[f32], class: usize, cap: usize) -> usize {
    let Some(&v) = logits.get(class) else {
        return cap;
    };
    let mut rank = 0;
    for (j, &x) in logits.iter().enumerate() {
        if x > v || (x == v && j < class) {
            rank += 1;
            if rank >= cap {
                return cap;
            }
        }
    }
    rank
}

/// Counts top-1 and top-5 correctness over many images, for any number of classes.
///
/// Top-5 counts the label as found when fewer than 5 classes rank above it (ties broken by
/// index, as `rankdata(..., 'ordinal')`). A label outside the logits counts as wrong for both.
/// Accumulators of shards [`merge`](Accuracy::merge) into the figures of the whole set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Images counted.
    pub count: u64,
    /// Images whose top-1 prediction is the label.
    pub top1_correct: u64,
    /// Images whose label is among the top 5.
    pub top5_correct: u64,
}

impl Accuracy {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one image: its logits (or probabilities) and its label.
    pub fn add(&mut self, logits: &[f32], label: usize) {
        self.count += 1;
        if label < logits.len() {
            let rank = ordinal_rank(logits, label, 5);
            self.top1_correct += u64::from(rank == 0);
            self.top5_correct += u64::from(rank < 5);
        }
    }

    /// Counts a batch: `logits` holds `labels.len()` rows of equal length.
    pub fn add_batch(&mut self, logits: &[f32], labels: &[usize]) -> Result<(), MetricsError> {
        if labels.is_empty() {
            return if logits.is_empty() {
                Ok(())
            } else {
                Err(MetricsError::LengthMismatch {
                    what: "logits values vs labels",
                    left: logits.len(),
                    right: 0,
                })
            };
        }
        if logits.is_empty() || !logits.len().is_multiple_of(labels.len()) {
            return Err(MetricsError::LengthMismatch {
                what: "logits values (not a whole number of rows) vs labels",
                left: logits.len(),
                right: labels.len(),
            });
        }
        let classes = logits.len() / labels.len();
        for (row, &label) in logits.chunks(classes.max(1)).zip(labels) {
            self.add(row, label);
        }
        Ok(())
    }

    /// Adds another accumulator's counts (e.g. another shard's).
    pub fn merge(&mut self, other: &Accuracy) {
        self.count += other.count;
        self.top1_correct += other.top1_correct;
        self.top5_correct += other.top5_correct;
    }

    /// Images counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Fraction of images whose top-1 prediction is wrong; NaN when nothing was counted.
    pub fn top1_error(&self) -> f64 {
        1.0 - self.top1_correct as f64 / self.count as f64
    }

    /// Fraction of images whose label is not among the top 5; NaN when nothing was counted.
    pub fn top5_error(&self) -> f64 {
        1.0 - self.top5_correct as f64 / self.count as f64
    }
}

// ---------------------------------------------------------------------------------------------
// ImageNet-C

/// AlexNet's errors summed over the 5 severities (5 × the mean for the extra corruptions).
fn alexnet_error_sum(c: Corruption) -> f64 {
    match alexnet_corruption_errors(c) {
        Some(e) => e.iter().sum(),
        None => 5.0 * alexnet_corruption_mean_error(c),
    }
}

/// The corruption error CE_c in percent: the model's top-1 errors at severities 1..5 summed,
/// divided by AlexNet's sum (for the 4 extra corruptions, 5 × AlexNet's mean), × 100.
pub fn corruption_error(c: Corruption, errors: &[f64; 5]) -> f64 {
    100.0 * errors.iter().sum::<f64>() / alexnet_error_sum(c)
}

/// The relative corruption error in percent: `Σ_s (E(c,s) − E_clean) / Σ_s (E_AlexNet(c,s) −
/// E_AlexNet_clean)` × 100, with `clean_error` the model's clean top-1 error and AlexNet's
/// 0.4348 ([`ALEXNET_CLEAN_ERROR`]).
pub fn relative_corruption_error(c: Corruption, errors: &[f64; 5], clean_error: f64) -> f64 {
    let model: f64 = errors.iter().map(|e| e - clean_error).sum();
    100.0 * model / (alexnet_error_sum(c) - 5.0 * ALEXNET_CLEAN_ERROR)
}

/// The mean error over the 5 severities, for data sets without an AlexNet baseline (a fraction).
pub fn unnormalised_corruption_error(errors: &[f64; 5]) -> f64 {
    errors.iter().sum::<f64>() / 5.0
}

/// Collects one value per benchmark member, in benchmark order, or names what is missing.
fn benchmark_values<K: Copy + PartialEq>(
    metric: &'static str,
    kind: &'static str,
    benchmark: &[K],
    values: &[(K, f64)],
    name: impl Fn(K) -> &'static str,
) -> Result<Vec<f64>, MetricsError> {
    let mut found: Vec<Option<f64>> = vec![None; benchmark.len()];
    for &(k, v) in values {
        let Some(i) = benchmark.iter().position(|&b| b == k) else {
            continue;
        };
        match found[i] {
            Some(first) if first.to_bits() != v.to_bits() => {
                return Err(MetricsError::Duplicate {
                    metric,
                    name: name(k),
                    first,
                    second: v,
                });
            }
            _ => found[i] = Some(v),
        }
    }
    let missing: Vec<&str> = benchmark
        .iter()
        .zip(&found)
        .filter(|(_, v)| v.is_none())
        .map(|(&k, _)| name(k))
        .collect();
    if !missing.is_empty() {
        return Err(MetricsError::Missing {
            metric,
            kind,
            needed: benchmark.len(),
            missing: missing.join(", "),
        });
    }
    Ok(found.into_iter().flatten().collect())
}

/// The mean corruption error: the mean of the CEs (as [`corruption_error`] or
/// [`relative_corruption_error`] give them) over the 15 benchmark corruptions. Every one must be
/// present (the error names the missing ones); extra corruptions in `ces` are ignored.
pub fn mean_corruption_error(ces: &[(Corruption, f64)]) -> Result<f64, MetricsError> {
    let values = benchmark_values("mCE", "corruption", &Corruption::BENCHMARK, ces, Corruption::name)?;
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

// ---------------------------------------------------------------------------------------------
// ImageNet-P

/// The pairs of frame indices `(reference, frame)` that ImageNet-P compares in a video of `n`
/// frames, as `ImageNet-P/test.py` does: for noise perturbations every frame with frame 0; for
/// the others, for each start `i < step`, the frames `i, i+step, i+2·step, ...` each with the
/// previous one of that chain. `step` 0 is treated as 1.
fn comparisons(n: usize, noise: bool, step: usize) -> Vec<(usize, usize)> {
    if noise {
        return (1..n).map(|j| (0, j)).collect();
    }
    let step = step.max(1);
    let mut pairs = Vec::new();
    for start in 0..step.min(n) {
        let chain: Vec<usize> = (start..n).step_by(step).collect();
        pairs.extend(chain.windows(2).map(|w| (w[0], w[1])));
    }
    pairs
}

/// Averages `per_pair` over one video's compared frame pairs; `None` when the video is too
/// short for any comparison.
fn video_mean<T: ?Sized>(
    frames: &[impl AsRef<T>],
    noise: bool,
    step: usize,
    per_pair: impl Fn(&T, &T) -> f64,
) -> Option<f64> {
    let pairs = comparisons(frames.len(), noise, step);
    if pairs.is_empty() {
        return None;
    }
    let sum: f64 = pairs
        .iter()
        .map(|&(a, b)| per_pair(frames[a].as_ref(), frames[b].as_ref()))
        .sum();
    Some(sum / pairs.len() as f64)
}

/// One video's share of the flip probability: the fraction of its compared frame pairs (see
/// [`flip_probability`]) whose top-1 predictions differ; `None` for a video too short to compare.
pub fn video_flip_fraction(top1_per_frame: &[usize], noise: bool, step: usize) -> Option<f64> {
    let frames: Vec<[usize; 1]> = top1_per_frame.iter().map(|&c| [c]).collect();
    video_mean::<[usize]>(&frames, noise, step, |a, b| f64::from(u8::from(a != b)))
}

/// One video's mean top-5 distance over its compared frame pairs (see
/// [`sequence_top5_distance`]): `frames_logits[frame]` is a frame's logits; `None` for a video
/// too short to compare.
pub fn video_top5_distance<F: AsRef<[f32]>>(frames_logits: &[F], noise: bool, step: usize) -> Option<f64> {
    video_mean::<[f32]>(frames_logits, noise, step, |a, b| top5_distance(a, b) as f64)
}

/// The mean of per-video figures over videos, accumulated video by video (so an ImageNet-P
/// evaluation holds one video's logits at a time) and mergeable across shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VideoMean {
    /// Sum of the per-video figures.
    pub sum: f64,
    /// Videos counted.
    pub videos: u64,
}

impl VideoMean {
    /// Counts one video's figure; `None` (a video too short to compare) is left out.
    pub fn add(&mut self, video: Option<f64>) {
        if let Some(v) = video {
            self.sum += v;
            self.videos += 1;
        }
    }

    /// Adds another accumulator's videos (e.g. another shard's).
    pub fn merge(&mut self, other: &VideoMean) {
        self.sum += other.sum;
        self.videos += other.videos;
    }

    /// The mean over the videos counted; NaN when none was.
    pub fn mean(&self) -> f64 {
        self.sum / self.videos as f64
    }
}

/// The flip probability: for each video, the fraction of compared frame pairs whose top-1
/// predictions differ, averaged over videos (`flip_prob` in `ImageNet-P/test.py`).
///
/// `top1_per_frame` holds each video's top-1 class per frame. `noise` selects the comparison with
/// the first (clean) frame, which noise perturbations use (with `step` ignored); otherwise frames
/// `step` apart are compared, `step` being the difficulty 1..3. Videos with fewer than two
/// comparable frames are left out; NaN when none is left.
pub fn flip_probability(top1_per_frame: &[Vec<usize>], noise: bool, step: usize) -> f64 {
    let mut mean = VideoMean::default();
    for video in top1_per_frame {
        mean.add(video_flip_fraction(video, noise, step));
    }
    mean.mean()
}

/// The top-5 distance between a reference frame's logits and another frame's: with σ the
/// frame's ordinal ranks (1-based, `rankdata(-logits, 'ordinal')`) listed in the order of the
/// reference's ranking, `Σ_{i=1..5} |(i−1) − min(σ_i − 1, 5)|` (`dist(..., 'top5')` in
/// `ImageNet-P/test.py`). 0 when the top 5 agree in order.
///
/// Both rows should hold the same classes; a reference class beyond the frame's row counts as
/// ranked below its top 5.
pub fn top5_distance(reference_logits: &[f32], frame_logits: &[f32]) -> usize {
    // The reference's five best classes, best first, ties broken by index.
    let mut top: Vec<usize> = Vec::with_capacity(6);
    for (j, &v) in reference_logits.iter().enumerate() {
        let pos = top.iter().position(|&t| v > reference_logits[t]).unwrap_or(top.len());
        if pos < 5 {
            top.insert(pos, j);
            top.truncate(5);
        }
    }
    top.iter()
        .enumerate()
        .map(|(i, &class)| i.abs_diff(ordinal_rank(frame_logits, class, 5)))
        .sum()
}

/// The mean top-5 distance over ImageNet-P videos (`ranking_dist(..., mode='top5')` in
/// `ImageNet-P/test.py`): `frames_logits[video][frame]` is a frame's logits; pairs are compared
/// as in [`flip_probability`] (noise: each frame with the first; otherwise frames `step` apart,
/// each with the previous one) and averaged per video, then over videos. NaN when no video has
/// two comparable frames.
pub fn sequence_top5_distance(frames_logits: &[Vec<Vec<f32>>], noise: bool, step: usize) -> f64 {
    let mut mean = VideoMean::default();
    for video in frames_logits {
        mean.add(video_top5_distance(video, noise, step));
    }
    mean.mean()
}

/// The flip rate FR_p in percent: the model's flip probability divided by AlexNet's, × 100.
pub fn flip_rate(p: Perturbation, fp: f64) -> f64 {
    100.0 * fp / alexnet_flip_probability(p)
}

/// The mean flip rate: the mean of the flip rates over the 10 benchmark perturbations. Every one
/// must be present (the error names the missing ones); extra perturbations are ignored.
pub fn mean_flip_rate(frs: &[(Perturbation, f64)]) -> Result<f64, MetricsError> {
    let values = benchmark_values("mFR", "perturbation", &Perturbation::BENCHMARK, frs, Perturbation::name)?;
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

// ---------------------------------------------------------------------------------------------
// Calibration

/// The default number of bins of [`expected_calibration_error`] (Guo et al. 2017 use 15).
pub const ECE_BINS: usize = 15;

/// Confidence histogram for the expected calibration error: per equal-width bin over `[0, 1]`,
/// the images, their summed confidence and how many were right. Accumulated image by image and
/// mergeable across shards.
///
/// Bin `b` of `n` holds confidences in `(b/n, (b+1)/n]` (a confidence of exactly 0 goes to the
/// first bin), as in Guo et al.'s and torchmetrics' implementations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Images per bin.
    pub counts: Vec<u64>,
    /// Summed confidence per bin.
    pub confidence: Vec<f64>,
    /// Correct predictions per bin.
    pub correct: Vec<u64>,
}

impl Default for Calibration {
    /// [`ECE_BINS`] bins.
    fn default() -> Self {
        Calibration {
            counts: vec![0; ECE_BINS],
            confidence: vec![0.0; ECE_BINS],
            correct: vec![0; ECE_BINS],
        }
    }
}

impl Calibration {
    /// An empty histogram of `bins` bins (at least 1).
    pub fn new(bins: usize) -> Result<Self, MetricsError> {
        if bins == 0 {
            return Err(MetricsError::Invalid("calibration error needs at least one bin".into()));
        }
        Ok(Calibration {
            counts: vec![0; bins],
            confidence: vec![0.0; bins],
            correct: vec![0; bins],
        })
    }

    /// Counts one image: the confidence of its top-1 prediction (a probability in `[0, 1]`) and
    /// whether that prediction was right.
    pub fn add(&mut self, confidence: f32, correct: bool) -> Result<(), MetricsError> {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(MetricsError::Invalid(format!(
                "confidence {confidence} is not a probability in [0, 1]"
            )));
        }
        let bins = self.counts.len();
        if bins == 0 || self.confidence.len() != bins || self.correct.len() != bins {
            return Err(MetricsError::Invalid(format!(
                "malformed calibration histogram ({} / {} / {} bins)",
                bins,
                self.confidence.len(),
                self.correct.len()
            )));
        }
        let c = f64::from(confidence);
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        self.counts[b] += 1;
        self.confidence[b] += c;
        self.correct[b] += u64::from(correct);
        Ok(())
    }

    /// Adds another histogram of the same bins (e.g. another shard's).
    pub fn merge(&mut self, other: &Calibration) -> Result<(), MetricsError> {
        if other.counts.len() != self.counts.len()
            || other.confidence.len() != self.confidence.len()
            || other.correct.len() != self.correct.len()
        {
            return Err(MetricsError::LengthMismatch {
                what: "calibration bins",
                left: self.counts.len(),
                right: other.counts.len(),
            });
        }
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        self.confidence
            .iter_mut()
            .zip(&other.confidence)
            .for_each(|(a, b)| *a += b);
        self.correct.iter_mut().zip(&other.correct).for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Images counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `Σ_b (n_b / N) · |accuracy_b − mean confidence_b|`; 0 for no images.
    pub fn expected_calibration_error(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        self.counts
            .iter()
            .zip(&self.confidence)
            .zip(&self.correct)
            .filter(|((count, _), _)| **count > 0)
            .map(|((&count, &conf), &right)| {
                let k = count as f64;
                (k / n) * (right as f64 / k - conf / k).abs()
            })
            .sum()
    }
}

/// The expected calibration error with `bins` equal-width confidence bins over `[0, 1]` (see
/// [`Calibration`]): `confidences[i]` is the top-1 probability of image `i` and `correct[i]`
/// whether that prediction was right. A fraction; 0 for no images.
///
/// Errors: lengths that differ, `bins` = 0, a confidence outside `[0, 1]` or NaN (naming the
/// image).
pub fn expected_calibration_error(confidences: &[f32], correct: &[bool], bins: usize) -> Result<f64, MetricsError> {
    if confidences.len() != correct.len() {
        return Err(MetricsError::LengthMismatch {
            what: "confidences vs correctness flags",
            left: confidences.len(),
            right: correct.len(),
        });
    }
    let mut calibration = Calibration::new(bins)?;
    for (i, (&c, &ok)) in confidences.iter().zip(correct).enumerate() {
        calibration
            .add(c, ok)
            .map_err(|e| MetricsError::Invalid(format!("image {i}: {e}")))?;
    }
    Ok(calibration.expected_calibration_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn baseline_tables_agree_with_each_other() {
        // The augmix means and the per-severity table (two sources) agree to 1e-5.
        for c in Corruption::BENCHMARK {
            let per = alexnet_corruption_errors(c).unwrap();
            let mean = per.iter().sum::<f64>() / 5.0;
            assert!(close(mean, alexnet_corruption_mean_error(c), 1e-5), "{c}: {mean}");
        }
        for c in Corruption::EXTRA {
            assert!(alexnet_corruption_errors(c).is_none());
        }
        assert_eq!(alexnet_corruption_mean_error(Corruption::SpeckleNoise), 0.8454);
        assert_eq!(alexnet_corruption_mean_error(Corruption::Saturate), 0.6583);
        assert_eq!(alexnet_flip_probability(Perturbation::GaussianNoise), 0.23653);
        assert_eq!(alexnet_flip_probability(Perturbation::Shear), 0.10658);
        assert_eq!(alexnet_flip_probability(Perturbation::Snow), 0.11928);
        assert_eq!(alexnet_flip_probability(Perturbation::Spatter), 0.05053);
    }

    #[test]
    fn alexnet_scores_exactly_100() {
        let mut ces = Vec::new();
        let mut rel = Vec::new();
        for c in Corruption::BENCHMARK {
            let e = alexnet_corruption_errors(c).unwrap();
            let ce = corruption_error(c, &e);
            let r = relative_corruption_error(c, &e, ALEXNET_CLEAN_ERROR);
            assert!(close(ce, 100.0, 1e-12) && close(r, 100.0, 1e-12), "{c}: {ce} {r}");
            ces.push((c, ce));
            rel.push((c, r));
        }
        assert!(close(mean_corruption_error(&ces).unwrap(), 100.0, 1e-12));
        assert!(close(mean_corruption_error(&rel).unwrap(), 100.0, 1e-12));
        for c in Corruption::EXTRA {
            let m = alexnet_corruption_mean_error(c);
            assert!(close(corruption_error(c, &[m; 5]), 100.0, 1e-12));
            assert!(close(
                relative_corruption_error(c, &[m; 5], ALEXNET_CLEAN_ERROR),
                100.0,
                1e-12
            ));
        }
        let frs: Vec<_> = Perturbation::ALL
            .iter()
            .map(|&p| (p, flip_rate(p, alexnet_flip_probability(p))))
            .collect();
        assert!(close(mean_flip_rate(&frs).unwrap(), 100.0, 1e-12));
    }

    #[test]
    fn a_resnet50_like_table_gives_its_mce() {
        // A model whose error at every corruption and severity is 0.767 × AlexNet's has
        // CE_c = 76.7 everywhere, so mCE = 76.7 (ResNet-50's published figure).
        let ces: Vec<_> = Corruption::BENCHMARK
            .iter()
            .map(|&c| {
                let e = alexnet_corruption_errors(c).unwrap().map(|x| 0.767 * x);
                (c, corruption_error(c, &e))
            })
            .collect();
        assert!(close(mean_corruption_error(&ces).unwrap(), 76.7, 1e-9));
        // Worked by hand: gaussian_noise at 0.5 everywhere: 2.5 / 4.43214 = 56.406...%.
        let ce = corruption_error(Corruption::GaussianNoise, &[0.5; 5]);
        assert!(close(ce, 100.0 * 2.5 / 4.43214, 1e-12), "{ce}");
        // Relative: (2.5 - 5·0.3) / (4.43214 - 5·0.4348) = 1.0 / 2.25814.
        let r = relative_corruption_error(Corruption::GaussianNoise, &[0.5; 5], 0.3);
        assert!(close(r, 100.0 / 2.25814, 1e-9), "{r}");
        // A mixed table: CE = 50 on the first 5, 100 on the next 5, 60 on the last 5 -> 70.
        let mixed: Vec<_> = Corruption::BENCHMARK
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, [50.0, 100.0, 60.0][i / 5]))
            .chain([(Corruption::Saturate, 1000.0)])
            .collect();
        assert!(close(mean_corruption_error(&mixed).unwrap(), 70.0, 1e-12));
        assert!(close(
            unnormalised_corruption_error(&[0.1, 0.2, 0.3, 0.4, 0.5]),
            0.3,
            1e-12
        ));
    }

    #[test]
    fn means_name_what_is_missing() {
        let some: Vec<_> = Corruption::BENCHMARK[2..].iter().map(|&c| (c, 50.0)).collect();
        let e = mean_corruption_error(&some).unwrap_err().to_string();
        assert!(e.contains("gaussian_noise, shot_noise") && e.contains("15"), "{e}");
        let mut dup: Vec<_> = Corruption::BENCHMARK.iter().map(|&c| (c, 50.0)).collect();
        dup.push((Corruption::Fog, 51.0));
        assert!(mean_corruption_error(&dup).unwrap_err().to_string().contains("fog"));
        dup.pop();
        dup.push((Corruption::Fog, 50.0));
        assert!(close(mean_corruption_error(&dup).unwrap(), 50.0, 1e-12));
        let frs = [(Perturbation::Rotate, 50.0), (Perturbation::Shear, 10.0)];
        let e = mean_flip_rate(&frs).unwrap_err().to_string();
        assert!(
            e.contains("translate") && !e.contains("rotate") && !e.contains("shear"),
            "{e}"
        );
    }

    #[test]
    fn flip_rate_divides_by_alexnet() {
        assert!(close(
            flip_rate(Perturbation::Translate, 0.05),
            100.0 * 0.05 / 0.11007,
            1e-12
        ));
        let frs: Vec<_> = Perturbation::BENCHMARK.iter().map(|&p| (p, 58.0)).collect();
        assert!(close(mean_flip_rate(&frs).unwrap(), 58.0, 1e-12));
    }

    #[test]
    fn accuracy_counts_top1_and_top5() {
        let mut acc = Accuracy::new();
        let row = [0.1, 0.9, 0.3, 0.3, 0.2, 0.25, 0.0];
        acc.add(&row, 1); // top-1
        acc.add(&row, 2); // rank 1 (ties with 3, lower index first)
        acc.add(&row, 3); // rank 2
        acc.add(&row, 4); // rank 4 -> top-5
        acc.add(&row, 0); // rank 5 -> not top-5
        acc.add(&row, 99); // out of range: wrong
        assert_eq!((acc.count(), acc.top1_correct, acc.top5_correct), (6, 1, 4));
        assert!(close(acc.top1_error(), 5.0 / 6.0, 1e-12));
        assert!(close(acc.top5_error(), 2.0 / 6.0, 1e-12));
        let mut other = Accuracy::new();
        other.add_batch(&[1.0, 0.0, 0.0, 1.0], &[0, 0]).unwrap();
        assert_eq!((other.count, other.top1_correct, other.top5_correct), (2, 1, 2));
        acc.merge(&other);
        assert_eq!((acc.count, acc.top1_correct, acc.top5_correct), (8, 2, 6));
        assert!(other.add_batch(&[1.0, 0.0, 0.0], &[0, 0]).is_err());
        assert!(Accuracy::new().top1_error().is_nan());
        let json = serde_json::to_string(&acc).unwrap();
        assert_eq!(serde_json::from_str::<Accuracy>(&json).unwrap(), acc);
        assert_eq!(top1(&[0.0, 2.0, 2.0]), Some(1));
        assert_eq!(top1(&[f32::NAN, 1.0]), Some(1));
        assert_eq!(top1(&[]), None);
    }

    #[test]
    fn flip_probability_follows_the_reference_loops() {
        // Noise: every frame against frame 0. Video 1: frames 1..4 = [0,1,1,0] vs 0 -> 2/4 flip.
        // Video 2: [2,2,2] -> frames 1,2 vs 2: 0 flips.
        let videos = vec![vec![0, 0, 1, 1, 0], vec![2, 2, 2]];
        assert!(close(flip_probability(&videos, true, 3), (0.5 + 0.0) / 2.0, 1e-12));
        // Consecutive (step 1): video 1: 0-0,0-1,1-1,1-0 -> 2/4; video 2: 0/2.
        assert!(close(flip_probability(&videos, false, 1), 0.25, 1e-12));
        // Step 2, video 1 = [0,0,1,1,0]: chains [0,2,4] = preds 0,1,0 -> 2 flips of 2;
        // [1,3] = 0,1 -> 1 of 1; video = 3/3 = 1. Video 2 [2,2,2]: chain [0,2] -> 0 of 1;
        // chain [1] none -> 0. Mean (1 + 0) / 2.
        assert!(close(flip_probability(&videos, false, 2), 0.5, 1e-12));
        // Step 3: video 1: [0,3] 0-1 flip, [1,4] 0-0, [2] -> 1/2; video 2 has no pair: left out.
        assert!(close(flip_probability(&videos, false, 3), 0.5, 1e-12));
        assert!(flip_probability(&[vec![1]], false, 1).is_nan());
        assert!(flip_probability(&[], true, 1).is_nan());
        // Per video, accumulated and merged as shards would.
        assert_eq!(video_flip_fraction(&videos[0], false, 2), Some(1.0));
        assert_eq!(video_flip_fraction(&[4], true, 1), None);
        let (mut a, mut b) = (VideoMean::default(), VideoMean::default());
        a.add(video_flip_fraction(&videos[0], false, 3));
        b.add(video_flip_fraction(&videos[1], false, 3));
        a.merge(&b);
        assert_eq!((a.videos, a.mean()), (1, 0.5));
        assert_eq!(comparisons(5, false, 2), [(0, 2), (2, 4), (1, 3)]);
        assert_eq!(comparisons(3, true, 2), [(0, 1), (0, 2)]);
        assert_eq!(comparisons(3, false, 0), comparisons(3, false, 1));
    }

    /// The reference's formula by brute force: full ordinal ranks, sigma = frame ranks in the
    /// reference's rank order, cum_sum_top5 = [0,1,2,3,4,5,5,...].
    fn reference_dist(reference: &[f32], frame: &[f32]) -> usize {
        let ranks = |l: &[f32]| {
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap().then(a.cmp(&b)));
            let mut r = vec![0usize; l.len()];
            for (pos, &c) in order.iter().enumerate() {
                r[c] = pos + 1;
            }
            r
        };
        let (r1, r2) = (ranks(reference), ranks(frame));
        let mut inv: Vec<usize> = (0..r1.len()).collect();
        inv.sort_by_key(|&c| r1[c]);
        let sigma: Vec<usize> = inv.iter().map(|&c| r2[c]).collect();
        let cum: Vec<usize> = (0..reference.len()).map(|i| i.min(5)).collect();
        (0..5).map(|k| cum[k].abs_diff(cum[sigma[k] - 1])).sum()
    }

    #[test]
    fn top5_distance_hand_worked() {
        let reference = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0];
        assert_eq!(top5_distance(&reference, &reference), 0);
        // Swap the first two: sigma = [2,1,3,4,5,...] -> |0-1| + |1-0| = 2.
        let swapped = [8.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0];
        assert_eq!(top5_distance(&reference, &swapped), 2);
        // Class 0 drops to last: sigma = [8,1,2,3,4] -> |0-5|+|1-0|+|2-1|+|3-2|+|4-3| = 9.
        let dropped = [0.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0];
        assert_eq!(top5_distance(&reference, &dropped), 9);
        // A permutation of the top 5 (a cycle): sigma = [3,1,2,5,4] -> 2+1+1+1+1 = 6.
        let cycled = [7.0, 9.0, 8.0, 5.0, 6.0, 4.0, 3.0, 2.0];
        assert_eq!(top5_distance(&reference, &cycled), 6);
        // Outside the top 5 nothing counts.
        let tail = [9.0, 8.0, 7.0, 6.0, 5.0, 2.0, 3.0, 4.0];
        assert_eq!(top5_distance(&reference, &tail), 0);
        // Ties are broken by index (ordinal): all equal ranks classes 0,1,2,...
        let flat = [1.0; 8];
        assert_eq!(top5_distance(&flat, &reference), 0);
        assert_eq!(top5_distance(&reference, &flat), 0);
        assert_eq!(top5_distance(&reference, &[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0]), 5);
    }

    #[test]
    fn top5_distance_matches_the_reference_formula_on_random_rows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..500 {
            let n = rng.random_range(6..40);
            // Few distinct values, so ties are common.
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(0..8) as f32).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(0..8) as f32).collect();
            assert_eq!(top5_distance(&a, &b), reference_dist(&a, &b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn sequence_top5_distance_averages_like_flip_probability() {
        let r = vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0];
        let s = vec![8.0, 9.0, 7.0, 6.0, 5.0, 4.0];
        // Noise: frames 1, 2 vs frame 0 = r: d(r,s)=2, d(r,r)=0 -> 1.
        let video = vec![r.clone(), s.clone(), r.clone()];
        assert!(close(
            sequence_top5_distance(std::slice::from_ref(&video), true, 1),
            1.0,
            1e-12
        ));
        // Consecutive: d(r,s)=2, d(s,r)=2 -> 2.
        assert!(close(
            sequence_top5_distance(std::slice::from_ref(&video), false, 1),
            2.0,
            1e-12
        ));
        // Per video, with frames as slices too.
        let frames: Vec<&[f32]> = video.iter().map(Vec::as_slice).collect();
        assert_eq!(video_top5_distance(&frames, false, 1), Some(2.0));
        assert_eq!(video_top5_distance(&frames[..1], true, 1), None);
        // Step 2: only (0,2): d(r,r)=0. Second video [s, r]: step 2 gives no pair, left out.
        assert!(close(
            sequence_top5_distance(&[video, vec![s.clone(), r.clone()]], false, 2),
            0.0,
            1e-12
        ));
    }

    #[test]
    fn calibration_error_by_hand() {
        // Bins of 0.5: (0, 0.5] holds 0.2 (right), 0.4 (wrong): acc 0.5, conf 0.3 -> 0.2;
        // (0.5, 1] holds 0.9 (right), 1.0 (right): acc 1, conf 0.95 -> 0.05. ECE = .5·.2+.5·.05.
        let ece = expected_calibration_error(&[0.2, 0.4, 0.9, 1.0], &[true, false, true, true], 2).unwrap();
        assert!(close(ece, 0.125, 1e-7), "{ece}");
        // Perfectly calibrated: confidence 0.75 with 3 of 4 right.
        let ece = expected_calibration_error(&[0.75; 4], &[true, true, false, true], ECE_BINS).unwrap();
        assert!(close(ece, 0.0, 1e-12), "{ece}");
        // A boundary value goes to the lower bin: 0.5 with 2 bins is in (0, 0.5].
        let ece = expected_calibration_error(&[0.5, 1.0], &[false, true], 2).unwrap();
        assert!(close(ece, 0.25, 1e-12), "{ece}");
        // Confidence 0 is in the first bin.
        assert!(close(
            expected_calibration_error(&[0.0], &[true], 15).unwrap(),
            1.0,
            1e-12
        ));
        assert_eq!(expected_calibration_error(&[], &[], 15).unwrap(), 0.0);
        assert!(expected_calibration_error(&[0.5], &[], 15).is_err());
        assert!(expected_calibration_error(&[0.5], &[true], 0).is_err());
        assert!(expected_calibration_error(&[1.5], &[true], 15).is_err());
        assert!(expected_calibration_error(&[f32::NAN], &[true], 15).is_err());
        let e = expected_calibration_error(&[0.5, -0.1], &[true, true], 15)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 1") && e.contains("-0.1"), "{e}");
    }

    #[test]
    fn calibration_histograms_merge_like_one() {
        let conf = [0.2f32, 0.4, 0.9, 1.0, 0.55, 0.61, 0.05];
        let right = [true, false, true, true, false, true, false];
        let whole = expected_calibration_error(&conf, &right, 10).unwrap();
        let (mut a, mut b) = (Calibration::new(10).unwrap(), Calibration::new(10).unwrap());
        for (i, (&c, &r)) in conf.iter().zip(&right).enumerate() {
            if i % 2 == 0 { a.add(c, r) } else { b.add(c, r) }.unwrap();
        }
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 7);
        assert!(close(a.expected_calibration_error(), whole, 1e-12));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Calibration>(&json).unwrap(), a);
        assert!(a.merge(&Calibration::default()).is_err());
        assert_eq!(Calibration::default().counts.len(), ECE_BINS);
        assert!(Calibration::new(0).is_err());
    }
}
