//! The model repository API (Triton's extension): `POST /v2/repository/index` and
//! `POST /v2/repository/models/{model}/load|unload`, behind a bearer token. Without a
//! configured token the API answers 403.

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use super::AppState;
use crate::ServeError;

fn authorise(state: &AppState, req: &HttpRequest) -> Result<(), ServeError> {
    let Some(token) = &state.admin_token else {
        return Err(ServeError::AdminDisabled);
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    // Compare every byte, so the time taken does not tell how much of the token matched.
    let same =
        given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(ServeError::Unauthorized) }
}

fn respond(result: Result<HttpResponse, ServeError>) -> HttpResponse {
    result.unwrap_or_else(|e| {
        tracing::warn!("repository API: {e}");
        e.error_response()
    })
}

/// `POST /v2/repository/index`: every model on disk or loaded, with its state.
pub async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(authorise(&state, &req).map(|()| HttpResponse::Ok().json(state.repo.index())))
}

/// `POST /v2/repository/models/{model}/load`: (re)load a model. On failure the versions
/// already serving keep serving.
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
        Ok(HttpResponse::Ok().json(json!({ "name": name, "versions": versions, "state": "READY" })))
    }
    .await;
    respond(result)
}

/// `POST /v2/repository/models/{model}/unload`: stop serving a model; admitted requests finish.
pub async fn unload(state: web::Data<AppState>, req: HttpRequest, model: web::Path<String>) -> HttpResponse {
    let result = authorise(&state, &req).and_then(|()| {
        state.repo.unload(&model)?;
        Ok(HttpResponse::Ok().json(json!({ "name": model.as_str(), "state": "UNAVAILABLE" })))
    });
    respond(result)
}
