//! `POST /v1/models/{model}[/versions/{v}]/classify`: classification for applications.
//!
//! The body is one raw image (`image/*` or `application/octet-stream`), a
//! `multipart/form-data` form with one or more images (a text field `top_k` may set the
//! count), or JSON `{"images": ["<base64>", ...], "top_k": 5}` (`"image"` for one; data URLs
//! are accepted). `?top_k=N` works with every form. The answer lists, per image in order,
//! the top-k classes with softmax scores, plus the model, version and device.

use std::{borrow::Cow, sync::Arc};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use bytes::Bytes;
use engine::classify::{Prediction, top_k};
use serde::{Deserialize, Serialize};

use super::{AppState, ErrorBody, ModelPath, Outcome, media_type, read_body, run_images};
use crate::ServeError;

const ACCEPTED: &str =
    "image/* or application/octet-stream (one raw image), multipart/form-data, or application/json with base64 images";
const DEFAULT_TOP_K: usize = 5;

/// The query string: `?top_k=N`.
#[derive(Deserialize)]
pub struct Query {
    top_k: Option<usize>,
}

/// The JSON form of a classify request. The strings borrow from the body (no copy).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonBody<'a> {
    /// Base64 images (standard alphabet, padding optional), or `data:` URLs.
    #[serde(default, borrow)]
    #[schema(value_type = Vec<String>)]
    images: Vec<Cow<'a, str>>,
    /// One more image, the same way.
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    image: Option<Cow<'a, str>>,
    /// Classes per image (default 5).
    #[schema(minimum = 1)]
    top_k: Option<usize>,
}

/// One ranked class (the schema of `engine::classify::Prediction`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PredictionSchema {
    /// Class index (logit position).
    index: usize,
    /// Class name, when the model has labels.
    #[schema(required = false)]
    label: Option<String>,
    /// Softmax probability.
    score: f32,
}

/// The classes of one image.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImageResult {
    /// The form field's file name, for multipart uploads.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    name: Option<String>,
    #[schema(value_type = Vec<PredictionSchema>)]
    predictions: Vec<Prediction>,
}

/// A classify response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Response {
    model_name: String,
    model_version: String,
    device: String,
    /// One per image, in order.
    results: Vec<ImageResult>,
}

/// Top-k classes for one or more images.
#[utoipa::path(post, path = "/v1/models/{model}/classify", tag = "classify",
    params(
        ("model" = String, Path, description = "The model's name"),
        ("top_k" = Option<u32>, Query, minimum = 1, description = "Classes per image (default 5)"),
    ),
    request_body(content(
        (Vec<u8> = "image/png"),
        (Vec<u8> = "image/jpeg"),
        (Vec<u8> = "application/octet-stream"),
        (JsonBody = "application/json"),
        (Object = "multipart/form-data"),
    )),
    responses(
        (status = 200, body = Response),
        (status = 400, description = "Malformed body or query, undecodable image", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body or image count over the limits", body = ErrorBody),
        (status = 415, description = "A content type this endpoint does not read", body = ErrorBody),
        (status = 503, description = "Queue or body budget full, or models loading (Retry-After)", body = ErrorBody),
    ))]
pub async fn classify(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "classify", super::traceparent(&req));
    let result = async {
        let query = web::Query::<Query>::from_query(req.query_string())
            .map_err(|e| ServeError::Invalid(format!("invalid query string: {e}")))?;
        let model = state.model(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        // The body is read once the model has room for it (see `crate::batcher`).
        let mut ticket = model.batcher.ticket().await?;
        let (body, body_guard) = ticket.hold_while(read_body(&state, &req, payload)).await?;
        let content_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let media = media_type(&req);
        // JSON, base64 and multipart parsing can take a while on a big body: off the async
        // threads, like decoding. A request of more images than the model takes in one is
        // refused before they are decoded.
        let m = Arc::clone(&model);
        let (images, names, body_top_k) = state
            .prep
            .run(move || {
                let _counted = body_guard;
                parse(&media, &content_type, body, &|n| m.batcher.check_size(n).map(drop))
            })
            .await?;
        let k = query.top_k.or(body_top_k).unwrap_or(DEFAULT_TOP_K);
        if k == 0 {
            return Err(ServeError::Invalid("top_k must be at least 1".into()));
        }
        let (out, timings) = run_images(&state, &model, ticket, images, model.batcher.default_policy()).await?;
        let classes = out.classes.max(1);
        let results = out
            .logits
            .chunks_exact(classes)
            .zip(names)
            .enumerate()
            .map(|(index, (row, name))| {
                finite(row, index)?;
                Ok(ImageResult {
                    name,
                    predictions: top_k(row, k, model.labels()),
                })
            })
            .collect::<Result<_, ServeError>>()?;
        let mut response = HttpResponse::Ok();
        outcome.ran(&timings, &mut response);
        Ok(response.json(Response {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            device: model.device().to_string(),
            results,
        }))
    }
    .await;
    outcome.finish(result)
}

type Parsed = (Vec<Bytes>, Vec<Option<String>>, Option<usize>);

/// A row of logits must be finite to rank it: a NaN or infinity comes from an input outside
/// the model's range, and its softmax would be NaN.
pub fn finite(row: &[f32], index: usize) -> Result<(), ServeError> {
    match row.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(class) => Err(ServeError::Invalid(format!(
            "image {index}: the model's output for class {class} is {}, so it cannot be ranked (is the input within the model's range?)",
            row[class]
        ))),
    }
}

/// `check(n)` refuses a request of `n` images before they are decoded.
fn parse(
    media: &str,
    content_type: &str,
    body: Bytes,
    check: &dyn Fn(usize) -> Result<(), ServeError>,
) -> Result<Parsed, ServeError> {
    if media.starts_with("image/") || media == "application/octet-stream" {
        if body.is_empty() {
            return Err(ServeError::Invalid("the request body is empty".into()));
        }
        return Ok((vec![body], vec![None], None));
    }
    match media {
        "multipart/form-data" => {
            let parsed = multipart(content_type, body)?;
            check(parsed.0.len())?;
            Ok(parsed)
        }
        "application/json" => {
            let parsed: JsonBody =
                serde_json::from_slice(&body).map_err(|e| ServeError::Invalid(format!("invalid JSON body: {e}")))?;
            let mut encoded = parsed.images;
            encoded.extend(parsed.image);
            check(encoded.len())?;
            let images = encoded
                .iter()
                .enumerate()
                .map(|(index, text)| decode_base64(text).map_err(|reason| ServeError::BadImage { index, reason }))
                .collect::<Result<Vec<_>, _>>()?;
            let names = vec![None; images.len()];
            Ok((images, names, parsed.top_k))
        }
        _ => Err(ServeError::UnsupportedMediaType {
            got: media.to_string(),
            accepted: ACCEPTED,
        }),
    }
}

/// Base64 (standard alphabet, padding optional), optionally as a `data:` URL.
pub fn decode_base64(text: &str) -> Result<Bytes, String> {
    let payload = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    let cleaned: Cow<str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(payload.chars().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(payload)
    };
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.trim_end_matches('=')))
        .map(Bytes::from)
        .map_err(|e| format!("invalid base64: {e}"))
}

/// A multipart form, parsed from the body already in memory (multer's futures are ready
/// at once over it, so they are run to completion here, on a preprocessing thread).
fn multipart(content_type: &str, body: Bytes) -> Result<Parsed, ServeError> {
    use futures_util::FutureExt;
    let invalid = |e: multer::Error| ServeError::Invalid(format!("invalid multipart body: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(invalid)?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let stalled = || ServeError::Internal("the multipart parser waited on a body already read".into());
    let (mut images, mut names, mut k) = (Vec::new(), Vec::new(), None);
    while let Some(field) = form.next_field().now_or_never().ok_or_else(stalled)?.map_err(invalid)? {
        let file_name = field.file_name().map(String::from);
        let field_name = field.name().map(String::from);
        let data = field.bytes().now_or_never().ok_or_else(stalled)?.map_err(invalid)?;
        if file_name.is_none() && field_name.as_deref() == Some("top_k") {
            let text = std::str::from_utf8(&data).unwrap_or_default().trim();
            k = Some(
                text.parse()
                    .map_err(|_| ServeError::Invalid(format!("top_k field {text:?} is not a count")))?,
            );
            continue;
        }
        if data.is_empty() {
            return Err(ServeError::BadImage {
                index: images.len(),
                reason: format!("form field {:?} is empty", file_name.or(field_name).unwrap_or_default()),
            });
        }
        names.push(file_name.or(field_name));
        images.push(data);
    }
    Ok((images, names, k))
}
