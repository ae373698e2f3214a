//! What an evaluation measures, in two forms.
//!
//! - [`PartRecord`]: the raw, mergeable counts of one unit of work (the clean set, one
//!   corruption at one severity, one perturbation at one difficulty, one attack strength). A
//!   run writes one file per finished part, which is what makes it resumable, and shards of one
//!   evaluation merge by adding their counts (`hardy eval merge`).
//! - [`EvalResult`]: the figures a reader wants (errors, CE/mCE, flip rates, attack accuracy),
//!   computed from the merged records with [`crate::metrics`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::autoattack::{AttackName, ModelChecks, Norm, RobustSample, square_beat_white_box};
use crate::{Corruption, Perturbation, metrics};

/// The raw counts of one part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tally {
    /// Classification over a set of images.
    Accuracy {
        /// Top-1/top-5 counts.
        accuracy: metrics::Accuracy,
        /// Softmax confidence of the top-1 class per image (kept for the clean set, where the
        /// calibration error is reported).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        confidences: Vec<f32>,
        /// Whether each of those images was classified correctly.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        correct: Vec<bool>,
    },
    /// Prediction stability over perturbation sequences.
    Flips {
        /// Sequences seen.
        videos: u64,
        /// Sum over sequences of each sequence's flip probability.
        flip_sum: f64,
        /// Sum over sequences of each sequence's mean top-5 distance.
        t5d_sum: f64,
    },
    /// Per-image outcomes after one attack of an AutoAttack sequence (every image of the
    /// part, including those fooled or misclassified before).
    Robust {
        /// One record per image.
        samples: Vec<RobustSample>,
        /// Images with an exactly zero gradient at an APGD-T start (the reference's warning).
        #[serde(default)]
        zero_gradients: u64,
        /// The reference's model checks (measured on the first batch of the first attack).
        #[serde(default)]
        checks: ModelChecks,
    },
}

impl Tally {
    /// An empty accuracy tally.
    pub fn accuracy() -> Self {
        Tally::Accuracy {
            accuracy: metrics::Accuracy::default(),
            confidences: Vec::new(),
            correct: Vec::new(),
        }
    }

    /// An empty flip tally.
    pub fn flips() -> Self {
        Tally::Flips {
            videos: 0,
            flip_sum: 0.0,
            t5d_sum: 0.0,
        }
    }

    /// Adds `other` (the same part measured on another shard) to `self`.
    pub fn merge(&mut self, other: &Tally) -> Result<(), String> {
        match (self, other) {
            (
                Tally::Accuracy {
                    accuracy,
                    confidences,
                    correct,
                },
                Tally::Accuracy {
                    accuracy: a2,
                    confidences: c2,
                    correct: k2,
                },
            ) => {
                accuracy.merge(a2);
                confidences.extend_from_slice(c2);
                correct.extend_from_slice(k2);
                Ok(())
            }
            (
                Tally::Flips {
                    videos,
                    flip_sum,
                    t5d_sum,
                },
                Tally::Flips {
                    videos: v2,
                    flip_sum: f2,
                    t5d_sum: t2,
                },
            ) => {
                *videos += v2;
                *flip_sum += f2;
                *t5d_sum += t2;
                Ok(())
            }
            (
                Tally::Robust {
                    samples,
                    zero_gradients,
                    checks,
                },
                Tally::Robust {
                    samples: s2,
                    zero_gradients: z2,
                    checks: c2,
                },
            ) => {
                samples.extend_from_slice(s2);
                *zero_gradients += z2;
                checks.randomized |= c2.randomized;
                checks.probabilities |= c2.probabilities;
                Ok(())
            }
            _ => Err("tallies of different kinds cannot be merged".into()),
        }
    }

    /// Images (or sequences) counted.
    pub fn count(&self) -> u64 {
        match self {
            Tally::Accuracy { accuracy, .. } => accuracy.count(),
            Tally::Flips { videos, .. } => *videos,
            Tally::Robust { samples, .. } => samples.len() as u64,
        }
    }
}

/// How many failed items a part keeps, with their reasons, as examples (all are counted).
pub const FAILURE_EXAMPLES: usize = 10;

/// One item of a data set that could not be evaluated (a malformed, truncated or unreadable
/// file, or one outside the data root), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailure {
    /// The item's key (its path relative to the data set's root, `idx:<n>` for IDX images).
    pub item: String,
    /// Why it failed, e.g. `cannot decode JPEG image: ...` or `outside the data root`.
    pub reason: String,
}

/// The items of one part that could not be evaluated: all counted, the first
/// [`FAILURE_EXAMPLES`] kept with their reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// How many items failed.
    pub failed: u64,
    /// The first few of them.
    pub examples: Vec<ItemFailure>,
}

impl Failures {
    /// Counts one failed item.
    pub fn add(&mut self, item: &str, reason: String) {
        self.failed += 1;
        if self.examples.len() < FAILURE_EXAMPLES {
            self.examples.push(ItemFailure {
                item: item.to_string(),
                reason,
            });
        }
    }

    /// Adds the failures of the same part on another shard.
    pub fn merge(&mut self, failed: u64, examples: &[ItemFailure]) {
        self.failed += failed;
        let room = FAILURE_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(examples.iter().take(room).cloned());
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One finished part, as stored in `parts/<key>.json` of an output directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRecord {
    /// `clean`, `c/<corruption>/<severity>`, `p/<perturbation>/<difficulty>`, `a`, `r`,
    /// `fgsm/<eps>`, `pgd/<eps>`.
    pub key: String,
    /// Fingerprint of the model file the counts were measured on.
    pub model: String,
    /// Which shard(s) the counts cover, `i/n`, or `merged:n` after `hardy eval merge`.
    pub shard: String,
    /// The counts (of the items that were evaluated).
    pub tally: Tally,
    /// Items that could not be evaluated and are not in the counts (images, or sequences for
    /// suite p); absent when none (and in part files written before it existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// The first [`FAILURE_EXAMPLES`] of them, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ItemFailure>,
}

impl PartRecord {
    /// A part's record with nothing failed (the store fills in the model and shard).
    pub fn new(key: String, tally: Tally) -> Self {
        Self {
            key,
            model: String::new(),
            shard: String::new(),
            tally,
            failed: 0,
            failures: Vec::new(),
        }
    }

    /// Adds `other` (the same part measured on another shard): counts and failures.
    pub fn merge(&mut self, other: &PartRecord) -> Result<(), String> {
        self.tally.merge(&other.tally)?;
        let mut failures = self.failures();
        failures.merge(other.failed, &other.failures);
        self.failed = failures.failed;
        self.failures = failures.examples;
        Ok(())
    }

    /// The part's failures.
    pub fn failures(&self) -> Failures {
        Failures {
            failed: self.failed,
            examples: self.failures.clone(),
        }
    }
}

/// The model an evaluation ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Name (and version) as the engine resolved it.
    pub name: String,
    /// The ONNX file.
    pub path: String,
    /// Fingerprint of the file (FNV-1a 64 of its bytes, hex, and its length).
    pub fingerprint: String,
    /// Output classes.
    pub classes: usize,
}

/// Accuracy figures of one image set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracySummary {
    /// Images evaluated.
    pub images: u64,
    /// Top-1 error in [0, 1].
    pub top1_error: f64,
    /// Top-5 error in [0, 1] (top-k with k = classes when there are fewer than 5).
    pub top5_error: f64,
    /// Expected calibration error (15 equal-width bins), where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ece: Option<f64>,
}

/// One corruption's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorruptionRow {
    /// Top-1 error per severity 1..5 (`None` where not evaluated).
    pub errors: [Option<f64>; 5],
    /// Top-5 error per severity.
    pub top5_errors: [Option<f64>; 5],
    /// Images per severity.
    pub images: [u64; 5],
    /// Mean top-1 error over the evaluated severities (the unnormalised CE).
    pub mean_error: f64,
    /// AlexNet-normalised CE (x100), when all five severities were evaluated on a 1000-class
    /// model (AlexNet's errors mean nothing for other label sets).
    pub ce: Option<f64>,
    /// Relative CE (x100), when all five severities and the clean set were evaluated.
    pub relative_ce: Option<f64>,
}

/// The corruption suite's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorruptionSummary {
    /// Per corruption, in the released order.
    pub corruptions: BTreeMap<Corruption, CorruptionRow>,
    /// mCE (x100) over the 15 benchmark corruptions, when all were evaluated.
    pub mce: Option<f64>,
    /// Relative mCE (x100), likewise.
    pub relative_mce: Option<f64>,
    /// Mean top-1 error over the evaluated severities of the 15 benchmark corruptions (the
    /// extra four are left out, as in mCE): the unnormalised figure for data sets without an
    /// AlexNet baseline; `None` when none of the 15 was evaluated.
    pub mean_error: Option<f64>,
}

/// One perturbation's figures at one difficulty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlipRow {
    /// Sequences evaluated.
    pub sequences: u64,
    /// Flip probability.
    pub flip_probability: f64,
    /// Flip rate (x100): flip probability / AlexNet's (1000-class models only).
    pub flip_rate: Option<f64>,
    /// Mean top-5 distance.
    pub top5_distance: f64,
}

/// The perturbation suite's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerturbationSummary {
    /// Per perturbation, then per difficulty.
    pub perturbations: BTreeMap<Perturbation, BTreeMap<u8, FlipRow>>,
    /// mFR (x100) over the 10 benchmark perturbations (difficulties averaged), when all were
    /// evaluated.
    pub mfr: Option<f64>,
    /// Mean top-5 distance over the evaluated benchmark perturbations (unnormalised: no public
    /// AlexNet baseline exists).
    pub mt5d: Option<f64>,
    /// Mean flip probability over the evaluated benchmark perturbations (the unnormalised
    /// figure, for models without an AlexNet baseline).
    pub mean_flip_probability: Option<f64>,
}

/// Accuracy under one attack strength.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackRow {
    /// L-infinity radius in [0, 1] pixel units.
    pub eps: f64,
    /// Images attacked.
    pub images: u64,
    /// Top-1 accuracy on the adversarial images, in [0, 1].
    pub accuracy: f64,
    /// Top-1 error on the adversarial images.
    pub top1_error: f64,
}

/// Robust accuracy after one attack of an AutoAttack sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoAttackStep {
    /// The attack.
    pub attack: AttackName,
    /// Images still classified correctly after it and every attack before, in [0, 1].
    pub robust_accuracy: f64,
    /// How many.
    pub robust: u64,
}

/// AutoAttack at one radius (`autoattack/<norm>/<eps>/<attack>` parts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoAttackRow {
    /// Threat model.
    pub norm: Norm,
    /// Radius in [0, 1] pixel units.
    pub eps: f64,
    /// Images evaluated.
    pub images: u64,
    /// Clean accuracy of those images.
    pub clean_accuracy: f64,
    /// Robust accuracy after each attack, in the order run.
    pub after: Vec<AutoAttackStep>,
    /// Robust accuracy after the last attack run: the per-image worst case.
    pub robust_accuracy: f64,
    /// Whether every attack of the sequence was run (an interrupted or sharded-but-unmerged
    /// run may hold only the first ones).
    pub attacks: Vec<AttackName>,
    /// Two forward passes differed (a randomised model: the verdict is not reliable).
    pub randomized: bool,
    /// The outputs looked like probabilities rather than logits.
    pub probabilities: bool,
    /// Images with a zero gradient at an APGD-T start.
    pub zero_gradients: u64,
    /// Square lowered the robust accuracy by more than 0.2 points after the white-box
    /// attacks (they are then suspect: the reference's warning).
    pub square_beat_white_box: bool,
    /// PGD's accuracy at the same radius, when suite pgd ran too (L-inf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgd_accuracy: Option<f64>,
}

/// Everything one evaluation measured (`result.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    /// The model.
    pub model: ModelSummary,
    /// The shard(s) covered: `0/1` for a whole evaluation.
    pub shard: String,
    /// Where each suite's data came from, e.g. `{"clean": "/data/val", "c": "generated"}`.
    pub data: BTreeMap<String, String>,
    /// The clean set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean: Option<AccuracySummary>,
    /// ImageNet-C style corruptions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corruptions: Option<CorruptionSummary>,
    /// ImageNet-P style perturbation sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perturbations: Option<PerturbationSummary>,
    /// ImageNet-A, restricted to its 200 classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imagenet_a: Option<AccuracySummary>,
    /// ImageNet-R, restricted to its 200 classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imagenet_r: Option<AccuracySummary>,
    /// FGSM, by eps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fgsm: Vec<AttackRow>,
    /// PGD, by eps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pgd: Vec<AttackRow>,
    /// AutoAttack, by norm and eps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub autoattack: Vec<AutoAttackRow>,
    /// Items that could not be evaluated (malformed, truncated or unreadable files, files
    /// outside the data root), per part key (`clean`, `c/fog/1`, ...): images, or sequences for
    /// the `p/...` parts. They are in none of the figures above. Only parts with failures are
    /// listed; absent when nothing failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_images: BTreeMap<String, u64>,
    /// The first failed items of each part in `failed_images`, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, Vec<ItemFailure>>,
}

impl EvalResult {
    /// Items that could not be evaluated, over all parts.
    pub fn failed_total(&self) -> u64 {
        self.failed_images.values().sum()
    }
}

/// The figures of an accuracy tally; `None` for a flip tally or when no image was counted
/// (every one failed): there is no error rate of nothing.
fn accuracy_summary(tally: &Tally) -> Option<AccuracySummary> {
    match tally {
        Tally::Accuracy { accuracy, .. } if accuracy.count() == 0 => None,
        Tally::Accuracy {
            accuracy,
            confidences,
            correct,
        } => Some(AccuracySummary {
            images: accuracy.count(),
            top1_error: accuracy.top1_error(),
            top5_error: accuracy.top5_error(),
            ece: metrics::expected_calibration_error(confidences, correct, 15).ok(),
        }),
        Tally::Flips { .. } | Tally::Robust { .. } => None,
    }
}

/// Parses a part key's trailing number (`fgsm/0.031373` -> 0.031373).
fn key_number(key: &str) -> Option<f64> {
    key.rsplit('/').next()?.parse().ok()
}

/// Computes every figure from the (merged) records of one evaluation. Parts without a single
/// counted image (all failed) give no figure; their failures are listed all the same.
pub fn summarise(
    model: ModelSummary,
    shard: String,
    data: BTreeMap<String, String>,
    records: &BTreeMap<String, PartRecord>,
) -> EvalResult {
    let failed = records.iter().filter(|(_, p)| p.failed > 0);
    let failed_images: BTreeMap<String, u64> = failed.clone().map(|(k, p)| (k.clone(), p.failed)).collect();
    let failures: BTreeMap<String, Vec<ItemFailure>> = failed
        .filter(|(_, p)| !p.failures.is_empty())
        .map(|(k, p)| (k.clone(), p.failures.clone()))
        .collect();
    let record = |key: &str| records.get(key).map(|p| &p.tally);
    let clean = record("clean").and_then(accuracy_summary);
    // AlexNet baselines only make sense for ImageNet's 1000 classes.
    let imagenet = model.classes == 1000;

    let mut corruption_rows: BTreeMap<Corruption, CorruptionRow> = BTreeMap::new();
    let mut perturbation_rows: BTreeMap<Perturbation, BTreeMap<u8, FlipRow>> = BTreeMap::new();
    let mut fgsm = Vec::new();
    let mut pgd = Vec::new();
    for (key, PartRecord { tally, .. }) in records {
        let parts: Vec<&str> = key.split('/').collect();
        match (parts.as_slice(), tally) {
            (["c", name, severity], Tally::Accuracy { accuracy, .. }) => {
                let (Ok(c), Ok(s)) = (name.parse::<Corruption>(), severity.parse::<usize>()) else {
                    continue;
                };
                if !(1..=5).contains(&s) || accuracy.count() == 0 {
                    continue;
                }
                let row = corruption_rows.entry(c).or_insert_with(|| CorruptionRow {
                    errors: [None; 5],
                    top5_errors: [None; 5],
                    images: [0; 5],
                    mean_error: 0.0,
                    ce: None,
                    relative_ce: None,
                });
                row.errors[s - 1] = Some(accuracy.top1_error());
                row.top5_errors[s - 1] = Some(accuracy.top5_error());
                row.images[s - 1] = accuracy.count();
            }
            (
                ["p", name, difficulty],
                Tally::Flips {
                    videos,
                    flip_sum,
                    t5d_sum,
                },
            ) => {
                let (Ok(p), Ok(d)) = (name.parse::<Perturbation>(), difficulty.parse::<u8>()) else {
                    continue;
                };
                if *videos == 0 {
                    continue;
                }
                let fp = flip_sum / *videos as f64;
                perturbation_rows.entry(p).or_default().insert(
                    d,
                    FlipRow {
                        sequences: *videos,
                        flip_probability: fp,
                        flip_rate: imagenet.then(|| metrics::flip_rate(p, fp)),
                        top5_distance: t5d_sum / *videos as f64,
                    },
                );
            }
            (["fgsm", _], Tally::Accuracy { accuracy, .. }) | (["pgd", _], Tally::Accuracy { accuracy, .. }) => {
                let Some(eps) = key_number(key) else { continue };
                if accuracy.count() == 0 {
                    continue;
                }
                let row = AttackRow {
                    eps,
                    images: accuracy.count(),
                    accuracy: 1.0 - accuracy.top1_error(),
                    top1_error: accuracy.top1_error(),
                };
                if parts[0] == "fgsm" {
                    fgsm.push(row)
                } else {
                    pgd.push(row)
                }
            }
            _ => {}
        }
    }
    for row in corruption_rows.values_mut() {
        let measured: Vec<f64> = row.errors.iter().flatten().copied().collect();
        row.mean_error = measured.iter().sum::<f64>() / measured.len().max(1) as f64;
    }
    for (c, row) in corruption_rows.iter_mut() {
        if let [Some(a), Some(b), Some(d), Some(e), Some(f)] = row.errors
            && imagenet
        {
            let errors = [a, b, d, e, f];
            row.ce = Some(metrics::corruption_error(*c, &errors));
            row.relative_ce = clean
                .as_ref()
                .map(|clean| metrics::relative_corruption_error(*c, &errors, clean.top1_error));
        }
    }
    let corruptions = (!corruption_rows.is_empty()).then(|| {
        let ces: Vec<(Corruption, f64)> = corruption_rows
            .iter()
            .filter_map(|(c, r)| r.ce.map(|ce| (*c, ce)))
            .collect();
        let rel: Vec<(Corruption, f64)> = corruption_rows
            .iter()
            .filter_map(|(c, r)| r.relative_ce.map(|ce| (*c, ce)))
            .collect();
        let all: Vec<f64> = corruption_rows
            .iter()
            .filter(|(c, _)| Corruption::BENCHMARK.contains(c))
            .flat_map(|(_, r)| r.errors.iter().flatten().copied())
            .collect();
        CorruptionSummary {
            mce: metrics::mean_corruption_error(&ces).ok(),
            relative_mce: metrics::mean_corruption_error(&rel).ok(),
            mean_error: (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64),
            corruptions: corruption_rows,
        }
    });
    let perturbations = (!perturbation_rows.is_empty()).then(|| {
        // A perturbation measured at several difficulties counts with its mean flip probability.
        let mean_fp = |rows: &BTreeMap<u8, FlipRow>| {
            rows.values().map(|r| r.flip_probability).sum::<f64>() / rows.len().max(1) as f64
        };
        let frs: Vec<(Perturbation, f64)> = perturbation_rows
            .iter()
            .map(|(p, rows)| (*p, metrics::flip_rate(*p, mean_fp(rows))))
            .collect();
        let frs = if imagenet { frs } else { Vec::new() };
        let t5d: Vec<f64> = perturbation_rows
            .iter()
            .filter(|(p, _)| Perturbation::BENCHMARK.contains(p))
            .map(|(_, rows)| rows.values().map(|r| r.top5_distance).sum::<f64>() / rows.len().max(1) as f64)
            .collect();
        let fps: Vec<f64> = perturbation_rows
            .iter()
            .filter(|(p, _)| Perturbation::BENCHMARK.contains(p))
            .map(|(_, rows)| mean_fp(rows))
            .collect();
        PerturbationSummary {
            mean_flip_probability: (!fps.is_empty()).then(|| fps.iter().sum::<f64>() / fps.len() as f64),
            mfr: metrics::mean_flip_rate(&frs).ok(),
            mt5d: (!t5d.is_empty()).then(|| t5d.iter().sum::<f64>() / t5d.len() as f64),
            perturbations: perturbation_rows,
        }
    });
    fgsm.sort_by(|a, b| a.eps.total_cmp(&b.eps));
    pgd.sort_by(|a, b| a.eps.total_cmp(&b.eps));
    EvalResult {
        model,
        shard,
        data,
        clean,
        corruptions,
        perturbations,
        imagenet_a: record("a").and_then(accuracy_summary),
        imagenet_r: record("r").and_then(accuracy_summary),
        autoattack: autoattack_rows(records, &pgd),
        fgsm,
        pgd,
        failed_images,
        failures,
    }
}

/// The AutoAttack rows of `records`: one per norm and radius, its steps in the order run
/// (robust counts only fall along a sequence).
fn autoattack_rows(records: &BTreeMap<String, PartRecord>, pgd: &[AttackRow]) -> Vec<AutoAttackRow> {
    type Steps<'r> = Vec<(AttackName, &'r [RobustSample], u64, &'r ModelChecks)>;
    let mut groups: BTreeMap<(String, String), Steps<'_>> = BTreeMap::new();
    for (key, record) in records {
        let parts: Vec<&str> = key.split('/').collect();
        if let (
            ["autoattack", norm, eps, attack],
            Tally::Robust {
                samples,
                zero_gradients,
                checks,
            },
        ) = (parts.as_slice(), &record.tally)
            && let Ok(attack) = attack.parse::<AttackName>()
        {
            groups.entry((norm.to_string(), eps.to_string())).or_default().push((
                attack,
                samples,
                *zero_gradients,
                checks,
            ));
        }
    }
    let mut rows = Vec::new();
    for ((norm, eps), mut steps) in groups {
        let (Ok(norm), Ok(eps)) = (
            serde_json::from_value::<Norm>(serde_json::Value::String(norm)),
            eps.parse::<f64>(),
        ) else {
            continue;
        };
        let robust = |samples: &[RobustSample]| samples.iter().filter(|s| s.robust()).count() as u64;
        steps.sort_by_key(|(attack, samples, _, _)| (std::cmp::Reverse(robust(samples)), *attack));
        let Some((_, first, _, _)) = steps.first() else {
            continue;
        };
        let images = first.len() as u64;
        if images == 0 {
            continue;
        }
        let clean = first.iter().filter(|s| s.clean == s.label).count() as u64;
        let after: Vec<AutoAttackStep> = steps
            .iter()
            .map(|(attack, samples, _, _)| AutoAttackStep {
                attack: *attack,
                robust: robust(samples),
                robust_accuracy: robust(samples) as f64 / images as f64,
            })
            .collect();
        let counts: Vec<(AttackName, usize)> = after.iter().map(|s| (s.attack, s.robust as usize)).collect();
        let last = after.last().map_or(clean, |s| s.robust);
        rows.push(AutoAttackRow {
            norm,
            eps,
            images,
            clean_accuracy: clean as f64 / images as f64,
            robust_accuracy: last as f64 / images as f64,
            attacks: after.iter().map(|s| s.attack).collect(),
            randomized: steps.iter().any(|(_, _, _, c)| c.randomized),
            probabilities: steps.iter().any(|(_, _, _, c)| c.probabilities),
            zero_gradients: steps.iter().map(|(_, _, z, _)| *z).sum(),
            square_beat_white_box: square_beat_white_box(&counts, images as usize),
            pgd_accuracy: (norm == Norm::Linf)
                .then(|| pgd.iter().find(|r| (r.eps - eps).abs() < 1e-6).map(|r| r.accuracy))
                .flatten(),
            after,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accuracy_tally(n: usize, wrong: usize) -> Tally {
        let mut accuracy = metrics::Accuracy::default();
        for i in 0..n {
            // Two classes; the label is 0, the logits favour class 1 for the first `wrong`.
            let logits = if i < wrong { [0.0f32, 1.0] } else { [1.0, 0.0] };
            accuracy.add(&logits, 0);
        }
        Tally::Accuracy {
            accuracy,
            confidences: Vec::new(),
            correct: Vec::new(),
        }
    }

    fn part(tally: Tally) -> PartRecord {
        PartRecord::new(String::new(), tally)
    }

    fn model() -> ModelSummary {
        ModelSummary {
            name: "m".into(),
            path: "m.onnx".into(),
            fingerprint: "0".into(),
            classes: 1000,
        }
    }

    #[test]
    fn alexnets_own_errors_give_mce_100() {
        let mut records = BTreeMap::new();
        records.insert("clean".to_string(), part(accuracy_tally(10_000, 4348)));
        for c in Corruption::BENCHMARK {
            let errors = metrics::alexnet_corruption_errors(c).unwrap();
            for (s, e) in errors.iter().enumerate() {
                let wrong = (e * 100_000.0).round() as usize;
                records.insert(format!("c/{c}/{}", s + 1), part(accuracy_tally(100_000, wrong)));
            }
        }
        let result = summarise(model(), "0/1".into(), BTreeMap::new(), &records);
        let c = result.corruptions.unwrap();
        assert!((c.mce.unwrap() - 100.0).abs() < 1e-3, "{:?}", c.mce);
        assert!((c.relative_mce.unwrap() - 100.0).abs() < 1e-2, "{:?}", c.relative_mce);
        assert_eq!(c.corruptions.len(), 15);
    }

    #[test]
    fn partial_runs_report_no_mce_and_shards_merge() {
        let mut a = accuracy_tally(10, 3);
        a.merge(&accuracy_tally(10, 1)).unwrap();
        assert_eq!(a.count(), 20);
        let mut records = BTreeMap::new();
        records.insert("c/fog/1".to_string(), part(a));
        records.insert("fgsm/0.5".to_string(), part(accuracy_tally(4, 4)));
        records.insert("fgsm/0.25".to_string(), part(accuracy_tally(4, 2)));
        let result = summarise(model(), "0/1".into(), BTreeMap::new(), &records);
        let c = result.corruptions.unwrap();
        assert_eq!(c.mce, None);
        let fog = &c.corruptions[&Corruption::Fog];
        assert!((fog.errors[0].unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(fog.ce, None);
        assert_eq!(result.fgsm.len(), 2);
        assert_eq!(result.fgsm[0].eps, 0.25);
        assert_eq!(result.fgsm[0].accuracy, 0.5);
        assert_eq!(result.fgsm[1].accuracy, 0.0);
        assert!(accuracy_tally(1, 0).merge(&Tally::flips()).is_err());
    }

    fn failed_part(tally: Tally, items: &[&str]) -> PartRecord {
        let mut failures = Failures::default();
        for item in items {
            failures.add(item, format!("cannot decode {item}"));
        }
        PartRecord {
            failed: failures.failed,
            failures: failures.examples,
            ..part(tally)
        }
    }

    /// Failed items are listed per part; a part whose items all failed gives no figure (no
    /// NaN), and the result still reads back.
    #[test]
    fn failures_are_listed_and_empty_parts_give_no_figures() {
        let mut records = BTreeMap::new();
        records.insert(
            "clean".to_string(),
            failed_part(accuracy_tally(0, 0), &["a.png", "b.png"]),
        );
        records.insert("c/fog/1".to_string(), failed_part(accuracy_tally(10, 2), &["c.png"]));
        records.insert("fgsm/0.5".to_string(), failed_part(accuracy_tally(0, 0), &["a.png"]));
        records.insert("p/translate/1".to_string(), failed_part(Tally::flips(), &["v.mp4"]));
        records.insert("a".to_string(), part(accuracy_tally(0, 0)));
        let result = summarise(model(), "0/1".into(), BTreeMap::new(), &records);
        assert!(result.clean.is_none() && result.imagenet_a.is_none());
        assert!(result.fgsm.is_empty() && result.perturbations.is_none());
        assert_eq!(
            result.corruptions.as_ref().unwrap().corruptions[&Corruption::Fog].images[0],
            10
        );
        let counts: Vec<(&str, u64)> = result.failed_images.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            counts,
            [("c/fog/1", 1), ("clean", 2), ("fgsm/0.5", 1), ("p/translate/1", 1)]
        );
        assert_eq!(result.failed_total(), 5);
        assert_eq!(result.failures["clean"][1].item, "b.png");
        assert_eq!(result.failures["clean"][1].reason, "cannot decode b.png");
        let json = serde_json::to_string(&result).unwrap();
        // (a NaN error would be written as null and fail to read back)
        let back: EvalResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.failed_images, result.failed_images);
        assert_eq!(back.failures, result.failures);
    }

    /// Without failures, part files and results have no failure fields at all (the files of
    /// runs without failures are as before), and part files written before them still load.
    #[test]
    fn without_failures_nothing_is_written_and_old_parts_load() {
        let record = PartRecord {
            model: "f".into(),
            shard: "0/1".into(),
            ..part(accuracy_tally(3, 1))
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("failed") && !json.contains("failures"), "{json}");
        let old = r#"{"key":"clean","model":"f","shard":"0/1","tally":{"kind":"accuracy","accuracy":{"count":3,"top1_correct":2,"top5_correct":3}}}"#;
        let loaded: PartRecord = serde_json::from_str(old).unwrap();
        assert_eq!((loaded.failed, loaded.failures.len(), loaded.tally.count()), (0, 0, 3));
        assert_eq!(serde_json::to_string(&loaded).unwrap(), old);

        let mut records = BTreeMap::new();
        records.insert("clean".to_string(), part(accuracy_tally(3, 1)));
        let result = summarise(model(), "0/1".into(), BTreeMap::new(), &records);
        let json = serde_json::to_string(&result).unwrap();
        assert!(!json.contains("failed_images") && !json.contains("failures"), "{json}");
    }

    /// Shards' failures add up; the examples stay bounded.
    #[test]
    fn failures_merge_across_shards_bounded() {
        let names: Vec<String> = (0..15).map(|i| format!("{i}.png")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut a = failed_part(accuracy_tally(4, 1), &names[..8]);
        let b = failed_part(accuracy_tally(6, 0), &names[8..]);
        assert_eq!((a.failed, b.failed), (8, 7));
        a.merge(&b).unwrap();
        assert_eq!(
            (a.failed, a.failures.len(), a.tally.count()),
            (15, FAILURE_EXAMPLES, 10)
        );
        assert_eq!(a.failures[9].item, "9.png");
        assert!(a.merge(&part(Tally::flips())).is_err());
    }
}
