//! `/v1/evaluations`: robustness evaluation jobs over HTTP (see [`crate::jobs`]).
//!
//! Every route needs the bearer token of `--admin-token` and a server started with
//! `--jobs-dir`. Submitting checks the spec and plans the job (listing its data) on a
//! blocking thread; the job itself runs on the jobs' own runners. Results and reports are
//! files of the job's `hardy eval` output directory, served read-only by name.

use std::{sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, http::header::ContentType, web};

use super::{AppState, ErrorBody, admin::authorise, read_body};
use crate::{
    ServeError,
    jobs::{JobError, JobSpec, JobState, JobStatus, Jobs, valid_id},
};

/// The largest job spec accepted, in bytes.
const MAX_SPEC_BYTES: usize = 64 << 10;
/// How long `DELETE` waits for a running job to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Jobs listed at most by default.
const DEFAULT_LIST: usize = 100;

/// The query of `GET /v1/evaluations`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    model: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/evaluations`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobList {
    /// Newest first.
    jobs: Vec<JobStatus>,
}

/// The token, then the jobs handle.
fn jobs(state: &AppState, req: &HttpRequest) -> Result<Arc<Jobs>, ServeError> {
    authorise(state, req)?;
    state.jobs.clone().ok_or(ServeError::JobsDisabled)
}

fn job_id(id: &str) -> Result<&str, ServeError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(JobError::NotFound(id.chars().take(64).collect()).into())
    }
}

fn respond(result: Result<HttpResponse, ServeError>) -> HttpResponse {
    result.unwrap_or_else(|e| {
        match &e {
            ServeError::Unauthorized | ServeError::AdminDisabled => tracing::debug!("jobs API: {e}"),
            e if e.reason() == "internal" => tracing::warn!("jobs API: {e}"),
            _ => tracing::debug!("jobs API: {e}"),
        }
        actix_web::ResponseError::error_response(&e)
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, ServeError> {
    Ok(web::block(f)
        .await
        .map_err(|e| ServeError::Internal(format!("job task failed: {e}")))??)
}

/// Submit an evaluation job (bearer token): `hardy eval`'s options as JSON.
#[utoipa::path(post, path = "/v1/evaluations", tag = "evaluations",
    security(("bearer" = [])),
    request_body(content = Object, description = "The job spec: model, version, suites, data, corruptions, severities, perturbations, noise_difficulties, eps, aa_eps, pgd_steps, pgd_step_size, jpeg_quality, batch_size, seed, limit"),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 202, description = "Queued", body = JobStatus),
        (status = 400, description = "Unknown field or impossible option, named", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "The job plans more images than --max-job-images", body = ErrorBody),
        (status = 503, description = "The queue is full", body = ErrorBody),
    ))]
pub async fn submit(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let result = async {
        let jobs = jobs(&state, &req)?;
        let (body, _guard) = read_body(&state, &req, payload).await?;
        if body.len() > MAX_SPEC_BYTES {
            return Err(ServeError::PayloadTooLarge { limit: MAX_SPEC_BYTES });
        }
        let spec: JobSpec =
            serde_json::from_slice(&body).map_err(|e| ServeError::Invalid(format!("invalid evaluation spec: {e}")))?;
        let version = spec.version.as_ref().map(|v| v.as_string());
        let model = state.model(&spec.model, version.as_deref())?;
        let status = blocking(move || jobs.submit(spec, &model)).await?;
        Ok(HttpResponse::Accepted()
            .insert_header(("Location", status.links.this.clone()))
            .json(status))
    }
    .await;
    respond(result)
}

/// List evaluation jobs, newest first (bearer token).
#[utoipa::path(get, path = "/v1/evaluations", tag = "evaluations",
    security(("bearer" = [])),
    params(
        ("state" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
        ("model" = Option<String>, Query, description = "Only this model's jobs"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, body = JobList),
        (status = 400, description = "Unknown state or parameter", body = ErrorBody),
    ))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let result = (|| {
        let jobs = jobs(&state, &req)?;
        let query = web::Query::<ListQuery>::from_query(req.query_string())
            .map_err(|e| ServeError::Invalid(format!("query: {e}")))?;
        let wanted = match &query.state {
            Some(s) => Some(
                s.parse::<JobState>()
                    .map_err(|e| ServeError::Invalid(format!("state: {e}")))?,
            ),
            None => None,
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIST);
        Ok(HttpResponse::Ok().json(JobList {
            jobs: jobs.list(wanted, query.model.as_deref(), limit),
        }))
    })();
    respond(result)
}

/// A job's state and progress (bearer token).
#[utoipa::path(get, path = "/v1/evaluations/{id}", tag = "evaluations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, body = JobStatus),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub async fn status(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    respond((|| {
        let jobs = jobs(&state, &req)?;
        Ok(HttpResponse::Ok().json(jobs.status(job_id(&id)?)?))
    })())
}

/// Cancel a job (bearer token): a queued job at once, a running one as soon as its ONNX
/// Runtime run in progress is terminated; finished parts are kept.
#[utoipa::path(delete, path = "/v1/evaluations/{id}", tag = "evaluations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, body = JobStatus),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has already finished", body = ErrorBody),
    ))]
pub async fn cancel(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let result = async {
        let jobs = jobs(&state, &req)?;
        let id = job_id(&id)?.to_string();
        let status = blocking(move || jobs.cancel(&id, CANCEL_WAIT)).await?;
        Ok(HttpResponse::Ok().json(status))
    }
    .await;
    respond(result)
}

/// Reads `name` from job `id`'s output directory; 409 while the job has not written it.
async fn job_file(state: &AppState, req: &HttpRequest, id: &str, name: &str) -> Result<Vec<u8>, ServeError> {
    let jobs = jobs(state, req)?;
    let id = job_id(id)?.to_string();
    let (dir, job_state) = jobs.output_dir(&id)?;
    let path = dir.join(name);
    let read = web::block(move || std::fs::read(path))
        .await
        .map_err(|e| ServeError::Internal(format!("read task failed: {e}")))?;
    match read {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(match job_state {
            JobState::Succeeded => ServeError::Job(JobError::NotFound(format!("{id}/{name}"))),
            s => ServeError::Job(JobError::Conflict {
                id,
                state: s.name(),
                what: "it has no such file yet",
            }),
        }),
        Err(e) => Err(ServeError::Internal(format!("job {id}: {name}: {e}"))),
    }
}

/// The job's `result.json`, the same document `hardy eval` writes (bearer token).
#[utoipa::path(get, path = "/v1/evaluations/{id}/result", tag = "evaluations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, description = "result.json", content_type = "application/json"),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not written yet", body = ErrorBody),
    ))]
pub async fn result(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    respond(
        job_file(&state, &req, &id, "result.json")
            .await
            .map(|bytes| HttpResponse::Ok().content_type(ContentType::json()).body(bytes)),
    )
}

/// The job's report as an HTML page; its plots are relative links to `{id}/NAME.png`.
#[utoipa::path(get, path = "/v1/evaluations/{id}/report", tag = "evaluations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, description = "The report", content_type = "text/html"),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not written yet", body = ErrorBody),
    ))]
pub async fn report(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let result = async {
        let markdown = job_file(&state, &req, &id, "report.md").await?;
        let markdown = String::from_utf8_lossy(&markdown);
        Ok(HttpResponse::Ok()
            .content_type(ContentType::html())
            .insert_header((
                "Content-Security-Policy",
                "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
            ))
            .body(report_page(&id, &markdown)))
    }
    .await;
    respond(result)
}

/// Whether `name` is a file of an output directory the API serves: the report, the
/// result, and the plots (no paths, no hidden files).
fn servable(name: &str) -> Option<&'static str> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !plain {
        return None;
    }
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => Some("image/png"),
        Some("md") => Some("text/markdown; charset=utf-8"),
        Some("json") => Some("application/json"),
        _ => None,
    }
}

/// A file of the job's output directory: `report.md`, the plots, `run.json` (bearer token).
#[utoipa::path(get, path = "/v1/evaluations/{id}/{file}", tag = "evaluations",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id"),
        ("file" = String, Path, description = "report.md, result.json, run.json or a plot (NAME.png)"),
    ),
    responses(
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Jobs are off (no token or no --jobs-dir)", body = ErrorBody),
        (status = 200, description = "The file"),
        (status = 404, description = "No such job or file", body = ErrorBody),
    ))]
pub async fn file(state: web::Data<AppState>, req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (id, name) = path.into_inner();
    let result = async {
        let Some(content_type) = servable(&name) else {
            jobs(&state, &req)?;
            return Err(ServeError::Job(JobError::NotFound(format!(
                "{}/{}",
                id.chars().take(64).collect::<String>(),
                name.chars().take(64).collect::<String>()
            ))));
        };
        let bytes = job_file(&state, &req, &id, &name).await?;
        Ok(HttpResponse::Ok().content_type(content_type).body(bytes))
    }
    .await;
    respond(result)
}

/// The report's Markdown as a standalone HTML page.
fn report_page(id: &str, markdown: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let mut body = String::new();
    // Raw HTML in the Markdown is escaped, not passed through (the report is ours, but the
    // page should not trust file contents either).
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        pulldown_cmark::Event::Html(text) | pulldown_cmark::Event::InlineHtml(text) => {
            pulldown_cmark::Event::Text(text)
        }
        other => other,
    });
    html::push_html(&mut body, parser);
    // Relative image links resolve against the report's URL (`.../{id}/report`), i.e.
    // `.../{id}/NAME.png`, which [`file`] serves.
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Evaluation {id}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}\
img{{max-width:100%}}code{{background:#f4f4f4;padding:0 .2rem}}</style></head>\n<body>\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_output_files_are_served() {
        assert_eq!(servable("corruption_errors.png"), Some("image/png"));
        assert_eq!(servable("report.md"), Some("text/markdown; charset=utf-8"));
        for bad in [
            "",
            "../job.json",
            ".lock",
            "a/b.png",
            "x.tmp-12",
            "parts",
            "report.md\0",
            "job.sh",
        ] {
            assert_eq!(servable(bad), None, "{bad}");
        }
    }

    #[test]
    fn report_pages_escape_raw_html_and_keep_tables_and_images() {
        let page = report_page(
            "x",
            "# R\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![plot](fog.png)\n\n<script>alert(1)</script>\n",
        );
        assert!(
            page.contains("<table>") && page.contains("<img src=\"fog.png\""),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
    }
}
