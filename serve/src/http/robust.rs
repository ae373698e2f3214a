//! The single-image robustness endpoints, for applications and demos:
//!
//! - `POST /v1/models/{m}[/versions/{v}]/attack?method=fgsm|pgd&eps=4&steps=10&top_k=5`: the
//!   top-k before and after an FGSM or PGD attack of `eps` 8-bit levels, the L-infinity norm
//!   actually applied, and the adversarial image as base64 PNG.
//! - `POST /v1/corrupt?name=..&severity=1..5[&seed=N][&kind=corruption|perturbation]`: the
//!   image corrupted (an ImageNet-C corruption) or perturbed (an ImageNet-P perturbation), as
//!   PNG.
//! - `POST /v1/models/{m}[/versions/{v}]/robustness?top_k=3`: the top-k of the model's crop of
//!   the image under each of the 19 corruptions at 5 severities.
//!
//! The body is one raw image (`image/*` or `application/octet-stream`). These handlers only
//! parse the query, read the body and wait: the work is [`crate::robust`]'s threads', and every
//! prediction comes from the model's batcher, the path `/classify` takes (the attack's "after"
//! is the classification of the PNG it returns). None of these images is offered to the
//! robustness monitor: they are not live traffic.

use std::{collections::HashMap, str::FromStr, sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use bytes::Bytes;
use engine::classify::{Prediction, top_k};
use eval::Corruption;
use serde::{Serialize, Serializer};

use super::{
    AppState, ErrorBody, ModelPath, Outcome, Timings, classify::finite, media_type, read_body, run_images_unmonitored,
    run_tensor,
};
use crate::{
    ServeError,
    batcher::BatchOutput,
    repository::LoadedModel,
    robust::{
        AttackMethod, AttackRequest, CorruptRequest, Distortion, MAX_EPS_LEVELS, MAX_PGD_STEPS, PROFILE_IMAGES,
        SEVERITIES,
    },
};

const ACCEPTED: &str = "image/* or application/octet-stream (one raw image)";

/// The query string as `name -> value`, refusing names not in `known` and names given twice.
fn query(req: &HttpRequest, known: &[&str]) -> Result<HashMap<String, String>, ServeError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ServeError::Invalid(format!("invalid query string: {e}")))?
        .into_inner();
    let mut out = HashMap::new();
    for (name, value) in pairs {
        if !known.contains(&name.as_str()) {
            return Err(ServeError::Invalid(format!(
                "unknown query parameter {name:?}; this endpoint takes {}",
                known.join(", ")
            )));
        }
        if out.insert(name.clone(), value).is_some() {
            return Err(ServeError::Invalid(format!("query parameter {name} is given twice")));
        }
    }
    Ok(out)
}

/// Parameter `name` as a whole number in `range` (or `None` when absent), else a 400 naming it.
fn number<T>(
    params: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<Option<T>, ServeError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    match text.parse::<T>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(ServeError::Invalid(format!(
            "{name} must be {what}, a whole number in {}..={}; got {text:?}",
            range.start(),
            range.end()
        ))),
    }
}

/// `top_k`, 1 or more (at most the model's classes are returned).
fn top_k_param(params: &HashMap<String, String>, default: usize) -> Result<usize, ServeError> {
    match params.get("top_k") {
        None => Ok(default),
        Some(text) => text.parse::<usize>().ok().filter(|&k| k >= 1).ok_or_else(|| {
            ServeError::Invalid(format!(
                "top_k must be a whole number of classes, 1 or more; got {text:?}"
            ))
        }),
    }
}

/// The body must be one raw image.
fn check_media(req: &HttpRequest) -> Result<(), ServeError> {
    let media = media_type(req);
    if media.starts_with("image/") || media == "application/octet-stream" {
        Ok(())
    } else {
        Err(ServeError::UnsupportedMediaType {
            got: media,
            accepted: ACCEPTED,
        })
    }
}

/// Reads the one image of the body.
async fn read_image(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Bytes, super::BodyGuard), ServeError> {
    let (body, guard) = read_body(state, req, payload).await?;
    if body.is_empty() {
        return Err(ServeError::Invalid("the request body is empty: send one image".into()));
    }
    Ok((body, guard))
}

/// The top-k of each row of a batch's logits.
fn ranked(out: &BatchOutput, k: usize, model: &LoadedModel) -> Result<Vec<Vec<Prediction>>, ServeError> {
    out.logits
        .chunks_exact(out.classes.max(1))
        .enumerate()
        .map(|(index, row)| {
            finite(row, index)?;
            Ok(top_k(row, k, model.labels()))
        })
        .collect()
}

/// The time of several runs of one request, added up.
fn add(a: Timings, b: Timings) -> Timings {
    Timings {
        preprocess: a.preprocess + b.preprocess,
        queue: a.queue + b.queue,
        inference: a.inference + b.inference,
        outputs_at: b.outputs_at.or(a.outputs_at),
        queued_at: a.queued_at.or(b.queued_at),
        batch_images: b.batch_images,
        runs: a.runs + b.runs,
        run: b.run,
    }
}

/// An attack response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttackResponse {
    model_name: String,
    model_version: String,
    /// `fgsm` or `pgd`.
    method: &'static str,
    /// The radius asked for, in 8-bit levels.
    eps: u8,
    /// PGD steps (as asked; FGSM takes one step).
    steps: usize,
    /// The top-k of the uploaded image (what `/classify` answers for it).
    #[schema(value_type = Vec<super::classify::PredictionSchema>)]
    before: Vec<Prediction>,
    /// The top-k of the returned image (what `/classify` answers for it).
    #[schema(value_type = Vec<super::classify::PredictionSchema>)]
    after: Vec<Prediction>,
    /// The largest change of a pixel value of the model's crop, in 8-bit levels, as applied
    /// to the returned image (at most `eps`).
    linf: u8,
    /// Width of the returned image (the upload resized as the model resizes it).
    width: u32,
    /// Height of the returned image.
    height: u32,
    /// The adversarial image, PNG, base64.
    image: String,
}

/// FGSM or PGD on one image: the predictions before and after, and the adversarial image.
#[utoipa::path(post, path = "/v1/models/{model}/attack", tag = "robustness",
    params(
        ("model" = String, Path, description = "The model's name"),
        ("method" = Option<String>, Query, description = "`fgsm` (default) or `pgd`"),
        ("eps" = Option<u32>, Query, minimum = 1, maximum = 64, description = "L-infinity radius in 8-bit levels (default 4)"),
        ("steps" = Option<u32>, Query, minimum = 1, maximum = 100, description = "PGD steps (default 10; FGSM ignores it)"),
        ("top_k" = Option<u32>, Query, minimum = 1, description = "Classes per image (default 5)"),
    ),
    request_body(content(
        (Vec<u8> = "image/png"),
        (Vec<u8> = "image/jpeg"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, body = AttackResponse),
        (status = 400, description = "Malformed query or undecodable image", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body or image over the limits", body = ErrorBody),
        (status = 415, description = "Not a raw image", body = ErrorBody),
        (status = 501, description = "The model's graph cannot be differentiated", body = ErrorBody),
        (status = 503, description = "Too many robustness requests, queue or body budget full, or models loading (Retry-After)", body = ErrorBody),
    ))]
pub async fn attack(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "attack", super::traceparent(&req));
    let result = async {
        let params = query(&req, &["method", "eps", "steps", "top_k"])?;
        let method = match params.get("method").map(String::as_str) {
            None | Some("fgsm") => AttackMethod::Fgsm,
            Some("pgd") => AttackMethod::Pgd,
            Some(other) => return Err(ServeError::Invalid(format!("method {other:?} is not `fgsm` or `pgd`"))),
        };
        let eps = number(&params, "eps", 1..=MAX_EPS_LEVELS, "the radius in 8-bit levels")?.unwrap_or(4);
        let steps = number(&params, "steps", 1..=MAX_PGD_STEPS, "the number of PGD steps")?.unwrap_or(10);
        let k = top_k_param(&params, 5)?;
        let model = state.model(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        check_media(&req)?;
        let permit = state.robust.admit()?;
        let (body, _guard) = read_image(&state, &req, payload).await?;
        let request = AttackRequest { method, eps, steps };
        // Not offered to the robustness monitor: these images are not live traffic.
        let policy = model.batcher.default_policy();
        let image = body.clone();
        let before = async {
            let ticket = model.batcher.ticket().await?;
            run_images_unmonitored(&state, &model, ticket, vec![image], policy).await
        };
        let attacked = state.robust.attack(&permit, Arc::clone(&model), body, request);
        // Both run to the end (not `try_join`): an answer leaves only once the attack's work is
        // done and its place free, so a client's next request is not refused for it.
        let (before, attacked) = futures_util::future::join(before, attacked).await;
        let (attacked, (before, t_before)) = (attacked?, before?);
        let ticket = model.batcher.ticket().await?;
        let (after, t_after) =
            run_images_unmonitored(&state, &model, ticket, vec![Bytes::from(attacked.png.clone())], policy).await?;
        let (before, after) = (ranked(&before, k, &model)?, ranked(&after, k, &model)?);
        let mut response = HttpResponse::Ok();
        outcome.ran(&add(t_before, t_after), &mut response);
        Ok(response.json(AttackResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            method: method.name(),
            eps,
            steps,
            before: before.into_iter().next().unwrap_or_default(),
            after: after.into_iter().next().unwrap_or_default(),
            linf: attacked.linf,
            width: attacked.width,
            height: attacked.height,
            image: base64::engine::general_purpose::STANDARD.encode(&attacked.png),
        }))
    }
    .await;
    outcome.finish(result)
}

/// One image corrupted or perturbed, as PNG.
#[utoipa::path(post, path = "/v1/corrupt", tag = "robustness",
    params(
        ("name" = String, Query, description = "A corruption (gaussian_noise, ..., saturate: the 19 of ImageNet-C) or a perturbation (translate, rotate, ...: the 14 of ImageNet-P)"),
        ("severity" = u32, Query, minimum = 1, maximum = 5, description = "1 to 5; for a perturbation, how far along its sequence (see the README)"),
        ("seed" = Option<u64>, Query, description = "Seed of the random draws (default 0)"),
        ("kind" = Option<String>, Query, description = "`corruption` or `perturbation`, for a name that is both (default: the corruption)"),
    ),
    request_body(content(
        (Vec<u8> = "image/png"),
        (Vec<u8> = "image/jpeg"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The corrupted image", content_type = "image/png", body = Vec<u8>),
        (status = 400, description = "Malformed query or undecodable image", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body over the limit, or an image of more than 1 Mi pixels", body = ErrorBody),
        (status = 415, description = "Not a raw image", body = ErrorBody),
        (status = 503, description = "Too many robustness requests, the body budget full, or the frost textures unavailable (Retry-After)", body = ErrorBody),
    ))]
pub async fn corrupt(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let outcome = Outcome::start(&state, "corrupt", super::traceparent(&req));
    let result = async {
        let params = query(&req, &["name", "severity", "seed", "kind"])?;
        let name = params
            .get("name")
            .ok_or_else(|| ServeError::Invalid("name is required: a corruption or perturbation".into()))?;
        let distortion =
            Distortion::parse(name, params.get("kind").map(String::as_str)).map_err(ServeError::Invalid)?;
        let severity = number(&params, "severity", SEVERITIES, "the severity")?
            .ok_or_else(|| ServeError::Invalid("severity is required: 1 to 5".into()))?;
        let seed = number(&params, "seed", 0..=u64::MAX, "the seed")?.unwrap_or(0);
        check_media(&req)?;
        let permit = state.robust.admit()?;
        let (body, _guard) = read_image(&state, &req, payload).await?;
        let request = CorruptRequest {
            distortion,
            severity,
            seed,
        };
        let png = state.robust.corrupt(&permit, body, request).await?;
        Ok(HttpResponse::Ok().content_type("image/png").body(png))
    }
    .await;
    outcome.finish(result)
}

/// The top-k under each corruption, in [`Corruption::ALL`] order, one list per severity.
struct Profile(Vec<(&'static str, Vec<Vec<Prediction>>)>);

impl Serialize for Profile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A robustness profile.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RobustnessResponse {
    model_name: String,
    model_version: String,
    /// The top-k of the model's crop of the image.
    #[schema(value_type = Vec<super::classify::PredictionSchema>)]
    clean: Vec<Prediction>,
    /// Per corruption (the 19 of ImageNet-C), the top-k at severities 1 to 5.
    #[schema(value_type = HashMap<String, Vec<Vec<super::classify::PredictionSchema>>>)]
    corruptions: Profile,
    /// The share of the 95 corrupted images whose top-1 class is the clean one's.
    stable_fraction: f64,
}

/// The top-k of one image under each of the 19 corruptions at 5 severities.
#[utoipa::path(post, path = "/v1/models/{model}/robustness", tag = "robustness",
    params(
        ("model" = String, Path, description = "The model's name"),
        ("top_k" = Option<u32>, Query, minimum = 1, description = "Classes per image (default 3)"),
    ),
    request_body(content(
        (Vec<u8> = "image/png"),
        (Vec<u8> = "image/jpeg"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, body = RobustnessResponse),
        (status = 400, description = "Malformed query or undecodable image", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body or image over the limits, or the model's queue too small for 96 images", body = ErrorBody),
        (status = 415, description = "Not a raw image", body = ErrorBody),
        (status = 503, description = "Too many robustness requests, queue or body budget full, models loading, or the frost textures unavailable (Retry-After)", body = ErrorBody),
    ))]
pub async fn robustness(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "robustness", super::traceparent(&req));
    let result = async {
        let params = query(&req, &["top_k"])?;
        let k = top_k_param(&params, 3)?;
        let model = state.model(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        check_media(&req)?;
        let permit = state.robust.admit()?;
        let (body, _guard) = read_image(&state, &req, payload).await?;
        let t = std::time::Instant::now();
        let inputs = state
            .robust
            .profile_inputs(&permit, Arc::clone(&model.spec), body)
            .await?;
        let (rows, timings) = classify_tensors(&state, &model, inputs, t.elapsed()).await?;
        let mut rows = ranked(&rows, k, &model)?.into_iter();
        let clean = rows.next().unwrap_or_default();
        let clean_top = clean.first().map(|p| p.index);
        let mut stable = 0usize;
        let mut profile = Vec::with_capacity(Corruption::ALL.len());
        for c in Corruption::ALL {
            let severities: Vec<Vec<Prediction>> = rows.by_ref().take(SEVERITIES.count()).collect();
            stable += severities
                .iter()
                .filter(|p| p.first().map(|p| p.index) == clean_top)
                .count();
            profile.push((c.name(), severities));
        }
        let corrupted = PROFILE_IMAGES - 1;
        let mut response = HttpResponse::Ok();
        outcome.ran(&timings, &mut response);
        Ok(response.json(RobustnessResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            clean,
            corruptions: Profile(profile),
            stable_fraction: stable as f64 / corrupted as f64,
        }))
    }
    .await;
    outcome.finish(result)
}

/// Classifies preprocessed images through the model's batcher, in one request when the
/// model's queue takes that many at once, else in pieces of a batch.
async fn classify_tensors(
    state: &AppState,
    model: &LoadedModel,
    inputs: Vec<f32>,
    preprocess: Duration,
) -> Result<(BatchOutput, Timings), ServeError> {
    let len = model.spec.tensor_len().max(1);
    let images = inputs.len() / len;
    let piece = if model.batcher.check_size(images).is_ok() {
        images
    } else {
        model.max_batch.max(1)
    };
    let mut all = BatchOutput::default();
    let mut timings = Timings::default();
    for (i, chunk) in inputs.chunks(piece * len).enumerate() {
        let ticket = model.batcher.ticket().await?;
        let permit = model.batcher.admit(ticket, chunk.len() / len)?;
        let spent = if i == 0 { preprocess } else { Duration::ZERO };
        let policy = model.batcher.default_policy();
        let (out, t) = run_tensor(state, model, permit, chunk.to_vec(), spent, policy).await?;
        all.logits.extend_from_slice(&out.logits);
        all.classes = out.classes;
        timings = add(timings, t);
    }
    Ok((all, timings))
}
