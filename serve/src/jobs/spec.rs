//! What a client may ask of an evaluation job: the JSON spec of `POST /v1/evaluations`, and
//! its translation into the options of `hardy eval`.
//!
//! The spec mirrors the CLI's flags field for field (same names without dashes, same units:
//! eps in pixel levels, quality 0 turns the JPEG round trip off) and the same defaults, so a
//! job and `hardy eval` given the same settings build identical [`EvalOptions`] and write
//! identical results. Unknown fields and impossible values are refused here, naming the
//! field, before anything is listed or loaded.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use eval::{
    Corruption, Perturbation,
    corrupt::FrostSource,
    suite::{EvalOptions, Suite},
};
use serde::{Deserialize, Serialize};

/// `benchmark`, `all`, or a list of names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Names {
    /// `"benchmark"` or `"all"`.
    Set(String),
    /// Explicit names.
    List(Vec<String>),
}

/// A model version given as a number or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Version {
    /// `3`.
    Number(u64),
    /// `"3"`.
    Text(String),
}

impl Version {
    /// The version as the repository's lookups take it.
    pub fn as_string(&self) -> String {
        match self {
            Version::Number(n) => n.to_string(),
            Version::Text(s) => s.clone(),
        }
    }
}

/// The body of `POST /v1/evaluations`. Every field but `model` is optional; the defaults are
/// `hardy eval`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A loaded model's name.
    pub model: String,
    /// Its version (default: the highest loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Suites: clean, c, p, a, r, fgsm, pgd, autoattack (default: clean). A job runs
    /// AutoAttack's standard version, L-inf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suites: Option<Vec<String>>,
    /// The clean labelled set: a named set (`fashion-mnist:test`, `foolbox:imagenet`) or a
    /// path under the server's data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// An ImageNet-C directory under the data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_data: Option<String>,
    /// An ImageNet-P directory under the data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_data: Option<String>,
    /// An ImageNet-A directory under the data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_data: Option<String>,
    /// An ImageNet-R directory under the data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_data: Option<String>,
    /// Corruptions (default `benchmark`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruptions: Option<Names>,
    /// Severities 1..5 (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severities: Option<Vec<u8>>,
    /// Perturbations (default `benchmark`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbations: Option<Names>,
    /// Difficulties of the noise perturbations (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_difficulties: Option<Vec<u8>>,
    /// Attack radii in pixel levels (default 1, 2, 4, 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<Vec<f32>>,
    /// AutoAttack radii in pixel levels (default 8, or 4 for inputs of 128 px or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aa_eps: Option<Vec<f32>>,
    /// PGD iterations (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgd_steps: Option<usize>,
    /// PGD step size in pixel levels (default 2.5 x eps / steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgd_step_size: Option<f32>,
    /// JPEG quality of generated corruptions, 0 = no round trip (default 85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_quality: Option<u8>,
    /// Images per inference batch (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Seed of generated corruptions, sequences and PGD starts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Only the first N images of each set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A spec field that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The JSON field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field,
        reason: reason.into(),
    }
}

/// The largest batch a job may ask for.
pub const MAX_BATCH: usize = 1024;
/// The most PGD iterations a job may ask for.
pub const MAX_PGD_STEPS: usize = 1000;

fn names<T: std::str::FromStr + Copy>(
    field: &'static str,
    given: &Option<Names>,
    benchmark: &[T],
    all: &[T],
) -> Result<Vec<T>, SpecError>
where
    T::Err: std::fmt::Display,
{
    let list = match given {
        None => return Ok(benchmark.to_vec()),
        Some(Names::Set(s)) if s == "benchmark" => return Ok(benchmark.to_vec()),
        Some(Names::Set(s)) if s == "all" => return Ok(all.to_vec()),
        Some(Names::Set(s)) => s.split(',').map(|n| n.trim().to_string()).collect::<Vec<_>>(),
        Some(Names::List(l)) => l.clone(),
    };
    if list.is_empty() {
        return Err(bad(field, "is empty"));
    }
    list.iter()
        .map(|n| n.parse::<T>().map_err(|e| bad(field, e.to_string())))
        .collect()
}

/// Resolves a data field: a named set as it is, a path confined to `root`.
fn data_path(field: &'static str, given: &Option<String>, root: Option<&Path>) -> Result<Option<PathBuf>, SpecError> {
    let Some(text) = given else { return Ok(None) };
    if text.is_empty() || text.len() > 4096 || text.contains('\0') {
        return Err(bad(field, "is not a data set name or path"));
    }
    if data::source::NAMED_SETS.contains(&text.as_str()) {
        return Ok(Some(PathBuf::from(text)));
    }
    let Some(root) = root else {
        return Err(bad(
            field,
            format!(
                "{text:?} is a path, and this server has no --data-root; use a named set ({})",
                data::source::NAMED_SETS.join(", ")
            ),
        ));
    };
    let joined = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        root.join(text)
    };
    let canonical = joined
        .canonicalize()
        .map_err(|e| bad(field, format!("{text:?} does not exist under the data root ({e})")))?;
    if !canonical.starts_with(root) {
        return Err(bad(field, format!("{text:?} leads outside the data root")));
    }
    Ok(Some(canonical))
}

impl JobSpec {
    /// The `hardy eval` options this spec asks for, written into `out`. `root` is the
    /// canonical data root, when the server has one.
    pub fn options(&self, out: PathBuf, root: Option<&Path>) -> Result<EvalOptions, SpecError> {
        let mut o = EvalOptions::new(out);
        if self.model.is_empty() {
            return Err(bad("model", "is empty"));
        }
        if let Some(suites) = &self.suites {
            if suites.is_empty() {
                return Err(bad("suites", "is empty"));
            }
            o.suites = suites
                .iter()
                .map(|s| s.parse::<Suite>().map_err(|e| bad("suites", e.to_string())))
                .collect::<Result<BTreeSet<_>, _>>()?;
        }
        o.data = data_path("data", &self.data, root)?;
        o.c_data = data_path("c_data", &self.c_data, root)?;
        o.p_data = data_path("p_data", &self.p_data, root)?;
        o.a_data = data_path("a_data", &self.a_data, root)?;
        o.r_data = data_path("r_data", &self.r_data, root)?;
        o.corruptions = names(
            "corruptions",
            &self.corruptions,
            &Corruption::BENCHMARK,
            &Corruption::ALL,
        )?;
        o.perturbations = names(
            "perturbations",
            &self.perturbations,
            &Perturbation::BENCHMARK,
            &Perturbation::ALL,
        )?;
        if let Some(s) = &self.severities {
            if s.is_empty() || s.iter().any(|s| !(1..=5).contains(s)) {
                return Err(bad("severities", format!("{s:?}: each must be in 1..5")));
            }
            o.severities = s.clone();
        }
        if let Some(d) = &self.noise_difficulties {
            if d.is_empty() || d.iter().any(|d| !(1..=3).contains(d)) {
                return Err(bad("noise_difficulties", format!("{d:?}: each must be in 1..3")));
            }
            o.noise_difficulties = d.clone();
        }
        if let Some(eps) = &self.eps {
            if eps.is_empty() || eps.iter().any(|e| !(e.is_finite() && *e >= 0.0 && *e <= 255.0)) {
                return Err(bad("eps", format!("{eps:?}: each must be in 0..255 pixel levels")));
            }
            // As the CLI does: levels / 255.
            o.eps = eps.iter().map(|e| e / 255.0).collect();
        }
        if let Some(eps) = &self.aa_eps {
            if eps.is_empty() || eps.iter().any(|e| !(e.is_finite() && *e >= 0.0 && *e <= 255.0)) {
                return Err(bad("aa_eps", format!("{eps:?}: each must be in 0..255 pixel levels")));
            }
            o.autoattack.eps = Some(eps.iter().map(|e| e / 255.0).collect());
        }
        if let Some(steps) = self.pgd_steps {
            if !(1..=MAX_PGD_STEPS).contains(&steps) {
                return Err(bad("pgd_steps", format!("{steps} is not in 1..={MAX_PGD_STEPS}")));
            }
            o.pgd_steps = steps;
        }
        if let Some(step) = self.pgd_step_size {
            if !(step.is_finite() && (0.0..=255.0).contains(&step)) {
                return Err(bad("pgd_step_size", format!("{step} is not in 0..255 pixel levels")));
            }
            o.pgd_step_size = Some(step / 255.0);
        }
        if let Some(q) = self.jpeg_quality {
            if q > 100 {
                return Err(bad("jpeg_quality", format!("{q} is not in 0..=100")));
            }
            o.jpeg_quality = (q > 0).then_some(q);
        }
        if let Some(b) = self.batch_size {
            if !(1..=MAX_BATCH).contains(&b) {
                return Err(bad("batch_size", format!("{b} is not in 1..={MAX_BATCH}")));
            }
            o.batch = b;
        }
        if let Some(limit) = self.limit {
            if limit == 0 {
                return Err(bad("limit", "must be at least 1"));
            }
            o.limit = Some(limit);
        }
        if let Some(seed) = self.seed {
            o.seed = seed;
        }
        o.frost = Some(FrostSource::Provisioned);
        o.data_root = root.map(Path::to_path_buf);
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<JobSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = spec(r#"{"model": "m", "severity": [1]}"#).unwrap_err();
        assert!(err.contains("unknown field `severity`"), "{err}");
        let err = spec(r#"{"suites": ["clean"]}"#).unwrap_err();
        assert!(err.contains("missing field `model`"), "{err}");
    }

    #[test]
    fn impossible_values_name_their_field() {
        let out = PathBuf::from("/tmp/x");
        for (json, field) in [
            (r#"{"model": "m", "severities": [0]}"#, "severities"),
            (r#"{"model": "m", "severities": []}"#, "severities"),
            (r#"{"model": "m", "eps": [300]}"#, "eps"),
            (r#"{"model": "m", "aa_eps": [-1]}"#, "aa_eps"),
            (r#"{"model": "m", "pgd_steps": 0}"#, "pgd_steps"),
            (r#"{"model": "m", "batch_size": 100000}"#, "batch_size"),
            (r#"{"model": "m", "suites": ["imagenet"]}"#, "suites"),
            (r#"{"model": "m", "corruptions": ["smoke"]}"#, "corruptions"),
            (r#"{"model": "m", "jpeg_quality": 101}"#, "jpeg_quality"),
            (r#"{"model": "m", "limit": 0}"#, "limit"),
            (r#"{"model": "m", "data": "/etc"}"#, "data"),
            (r#"{"model": "m", "noise_difficulties": [4]}"#, "noise_difficulties"),
        ] {
            let err = spec(json).unwrap().options(out.clone(), None).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn options_match_the_cli_defaults_and_units() {
        let o = spec(r#"{"model": "m", "suites": ["clean", "fgsm", "autoattack"], "data": "fashion-mnist:test", "eps": [2], "aa_eps": [4], "corruptions": "all"}"#)
            .unwrap()
            .options(PathBuf::from("/tmp/x"), None)
            .unwrap();
        assert_eq!(o.eps, vec![2.0 / 255.0]);
        assert_eq!(o.autoattack.eps, Some(vec![4.0 / 255.0]));
        assert!(o.suites.contains(&Suite::AutoAttack));
        assert_eq!(o.corruptions, Corruption::ALL.to_vec());
        assert_eq!(o.data, Some(PathBuf::from("fashion-mnist:test")));
        assert_eq!((o.batch, o.pgd_steps, o.jpeg_quality, o.seed), (32, 10, Some(85), 0));
    }

    #[test]
    fn paths_are_confined_to_the_data_root() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::fs::create_dir(root_path.join("set")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("escape")).unwrap();
        let ok = data_path("data", &Some("set".into()), Some(&root_path)).unwrap();
        assert_eq!(ok, Some(root_path.join("set")));
        for (text, needle) in [
            ("escape", "outside the data root"),
            ("../", "outside the data root"),
            ("set/../..", "outside the data root"),
            ("missing", "does not exist"),
            ("/etc", "outside the data root"),
        ] {
            let err = data_path("data", &Some(text.into()), Some(&root_path)).unwrap_err();
            assert!(err.reason.contains(needle), "{text}: {err}");
        }
    }
}
