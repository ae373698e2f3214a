//! `POST /v1/models/{model}[/versions/{v}]/classify`: classification for applications.
//!
//! The body is one raw image (`image/*` or `application/octet-stream`), a
//! `multipart/form-data` form with one or more images (a text field `top_k` may set the
//! count), or JSON `{"images": ["<base64>", ...], "top_k": 5}` (`"image"` for one; data URLs
//! are accepted). `?top_k=N` works with every form. The answer lists, per image in order,
//! the top-k classes with softmax scores, plus the model, version and device.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use bytes::Bytes;
use engine::classify::{Prediction, top_k};
use serde::{Deserialize, Serialize};

use super::{AppState, ModelPath, Outcome, Peer, media_type, read_body, run_images};
use crate::ServeError;

const ACCEPTED: &str =
    "image/* or application/octet-stream (one raw image), multipart/form-data, or application/json with base64 images";
const DEFAULT_TOP_K: usize = 5;

#[derive(Deserialize)]
pub struct Query {
    top_k: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBody {
    #[serde(default)]
    images: Vec<String>,
    image: Option<String>,
    top_k: Option<usize>,
}

#[derive(Serialize)]
struct ImageResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    predictions: Vec<Prediction>,
}

#[derive(Serialize)]
struct Response {
    model_name: String,
    model_version: String,
    device: String,
    results: Vec<ImageResult>,
}

/// The handler.
pub async fn classify(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    query: web::Query<Query>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "classify");
    let result = async {
        let model = state.repo.get(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        let body = read_body(&req, payload, state.max_body_bytes).await?;
        let (images, names, body_top_k) = parse(&req, body).await?;
        let k = query.top_k.or(body_top_k).unwrap_or(DEFAULT_TOP_K);
        if k == 0 {
            return Err(ServeError::Invalid("top_k must be at least 1".into()));
        }
        let (out, timings) = run_images(&state, &model, Peer::of(&req).as_ref(), images).await?;
        let classes = out.classes.max(1);
        let results = out
            .logits
            .chunks_exact(classes)
            .zip(names)
            .map(|(row, name)| ImageResult {
                name,
                predictions: top_k(row, k, model.labels()),
            })
            .collect();
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

async fn parse(req: &HttpRequest, body: Bytes) -> Result<Parsed, ServeError> {
    let media = media_type(req);
    if media.starts_with("image/") || media == "application/octet-stream" {
        if body.is_empty() {
            return Err(ServeError::Invalid("the request body is empty".into()));
        }
        return Ok((vec![body], vec![None], None));
    }
    match media.as_str() {
        "multipart/form-data" => multipart(req, body).await,
        "application/json" => {
            let parsed: JsonBody =
                serde_json::from_slice(&body).map_err(|e| ServeError::Invalid(format!("invalid JSON body: {e}")))?;
            let mut encoded = parsed.images;
            encoded.extend(parsed.image);
            let images = encoded
                .iter()
                .enumerate()
                .map(|(index, text)| decode_base64(text).map_err(|reason| ServeError::BadImage { index, reason }))
                .collect::<Result<Vec<_>, _>>()?;
            let names = vec![None; images.len()];
            Ok((images, names, parsed.top_k))
        }
        _ => Err(ServeError::UnsupportedMediaType {
            got: media,
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
    let cleaned: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.trim_end_matches('=')))
        .map(Bytes::from)
        .map_err(|e| format!("invalid base64: {e}"))
}

async fn multipart(req: &HttpRequest, body: Bytes) -> Result<Parsed, ServeError> {
    let invalid = |e: multer::Error| ServeError::Invalid(format!("invalid multipart body: {e}"));
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(invalid)?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut images, mut names, mut k) = (Vec::new(), Vec::new(), None);
    while let Some(field) = form.next_field().await.map_err(invalid)? {
        let file_name = field.file_name().map(String::from);
        let field_name = field.name().map(String::from);
        let data = field.bytes().await.map_err(invalid)?;
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
