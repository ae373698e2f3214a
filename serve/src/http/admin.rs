//! The model repository API (Triton's extension): `POST /v2/repository/index` and
//! `POST /v2/repository/models/{model}/load|unload`, behind a bearer token. Without a
//! configured token the API answers 403.

use super::{AppState, ErrorBody};
use crate::ServeError;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

pub(super) fn authorise(state: &AppState, req: &HttpRequest) -> Result<(), ServeError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    check_token(state, header)
}

/// Checks an `Authorization` value (`Bearer <token>`; an HTTP header or gRPC metadata)
/// against the admin token: 403 when the API is off, 401 when it is missing or wrong.
pub fn check_token(state: &AppState, authorization: Option<&str>) -> Result<(), ServeError> {
    let Some(token) = &state.admin_token else {
        return Err(ServeError::AdminDisabled);
    };
    let given = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if same_token(given, token) {
        Ok(())
    } else {
        Err(ServeError::Unauthorized)
    }
}

/// Compares the SHA-256 digests of both tokens in constant time: the time taken tells
/// neither how much of the token matched nor how long it is.
fn same_token(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(result: Result<HttpResponse, ServeError>) -> HttpResponse {
    result.unwrap_or_else(|e| {
        // A client without the token could otherwise fill the log.
        match e {
            ServeError::Unauthorized | ServeError::AdminDisabled => tracing::debug!("repository API: {e}"),
            _ => tracing::warn!("repository API: {e}"),
        }
        e.error_response()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_match_only_when_equal() {
        assert!(super::same_token("s3cret", "s3cret"));
        for other in ["", "s3cre", "s3cret!", "S3cret", "x3cret"] {
            assert!(!super::same_token(other, "s3cret"), "{other}");
        }
    }
}

/// `POST /v2/repository/models/{model}/load`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Loaded {
    name: String,
    versions: Vec<u64>,
    state: &'static str,
}

/// `POST /v2/repository/models/{model}/unload`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Unloaded {
    name: String,
    state: &'static str,
}

/// Every model on disk or loaded, with its state (bearer token).
#[utoipa::path(post, path = "/v2/repository/index", tag = "repository",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<crate::repository::IndexEntry>),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The API is off (no token configured)", body = ErrorBody),
    ))]
pub async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(authorise(&state, &req).map(|()| HttpResponse::Ok().json(state.repo.index())))
}

/// (Re)load a model (bearer token). On failure the versions already serving keep serving.
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "repository",
    security(("bearer" = [])),
    params(("model" = String, Path, description = "The model's directory name")),
    responses(
        (status = 200, body = Loaded),
        (status = 400, description = "Invalid name, or the load failed", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The API is off (no token configured)", body = ErrorBody),
    ))]
pub async fn load(state: web::Data<AppState>, req: HttpRequest, model: web::Path<String>) -> HttpResponse {
    let result = async {
        authorise(&state, &req)?;
        let repo = state.repo.clone();
        let name = model.into_inner();
        let loaded_name = name.clone();
        // Loading builds sessions and warms them up: blocking work, off the async threads.
        let versions = web::block(move || repo.load(&loaded_name))
            .await
            .map_err(|e| ServeError::Internal(format!("load task failed: {e}")))??;
        Ok(HttpResponse::Ok().json(Loaded {
            name,
            versions,
            state: "READY",
        }))
    }
    .await;
    respond(result)
}

/// Stop serving a model (bearer token); admitted requests finish.
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "repository",
    security(("bearer" = [])),
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, body = Unloaded),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The API is off (no token configured)", body = ErrorBody),
        (status = 404, description = "The model is not loaded", body = ErrorBody),
    ))]
pub async fn unload(state: web::Data<AppState>, req: HttpRequest, model: web::Path<String>) -> HttpResponse {
    let result = authorise(&state, &req).and_then(|()| {
        state.repo.unload(&model)?;
        Ok(HttpResponse::Ok().json(Unloaded {
            name: model.into_inner(),
            state: "UNAVAILABLE",
        }))
    });
    respond(result)
}
