//! The web console: a page at `/` for people, served by the binary itself.
//!
//! It exists so that someone with only a browser can see what the server holds and try it:
//! the loaded models, an image's top-k, the same image corrupted and attacked side by side,
//! and evaluation jobs (submit, watch, cancel, read the report). It is plain HTML, JS and
//! CSS (`serve/console/`), embedded in the binary at compile time: no build step, no files to
//! deploy, no third-party code. The page only calls the public API, like any client.
//!
//! Every asset is answered with a strict `Content-Security-Policy` (scripts and styles only
//! from this server, no inline script, images from this server, `data:` and `blob:`), an
//! `ETag` and `Cache-Control: no-cache` (a browser revalidates, so a new binary's page is
//! never mixed with an old script). `GET /v1/models` is the public list of loaded models the
//! page starts from (the repository index needs the admin token).

use std::sync::OnceLock;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AppState;

/// What the console's documents may load and do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One embedded file of the console.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    body: include_bytes!("../../console/index.html"),
    content_type: "text/html; charset=utf-8",
};

/// The files under `/console/`, by name.
const ASSETS: [(&str, Asset); 2] = [
    (
        "app.js",
        Asset {
            body: include_bytes!("../../console/app.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "style.css",
        Asset {
            body: include_bytes!("../../console/style.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
];

/// The corruption, perturbation and data set names the console offers, from the evaluator
/// and the data crate themselves.
#[derive(Serialize)]
struct Names {
    corruptions: Vec<&'static str>,
    benchmark_corruptions: Vec<&'static str>,
    perturbations: Vec<&'static str>,
    data_sets: Vec<&'static str>,
}

/// `names.json`: generated once from [`eval::names`], so the page never lists a name the
/// server does not know.
fn names_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        let names = Names {
            corruptions: eval::Corruption::ALL.iter().map(|c| c.name()).collect(),
            benchmark_corruptions: eval::Corruption::BENCHMARK.iter().map(|c| c.name()).collect(),
            perturbations: eval::Perturbation::ALL.iter().map(|p| p.name()).collect(),
            data_sets: data::source::NAMED_SETS.to_vec(),
        };
        serde_json::to_vec(&names).unwrap_or_else(|_| b"{}".to_vec())
    })
}

/// A strong `ETag` for a body: its SHA-256, shortened.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether the request's `If-None-Match` names `tag` (or `*`).
fn not_modified(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// Answers an embedded file with its type, cache and security headers (304 when the
/// browser's copy is current).
fn serve(req: &HttpRequest, body: &'static [u8], content_type: &'static str) -> HttpResponse {
    let tag = etag(body);
    let mut response = if not_modified(req, &tag) {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, tag.clone()))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if not_modified(req, &tag) {
        response.finish()
    } else {
        response.content_type(content_type).body(body)
    }
}

/// `GET /`: the console page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, INDEX.body, INDEX.content_type)
}

/// `GET /console/{file}`: the page's script, style sheet and `names.json`; any other name is
/// a JSON 404.
pub async fn asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    if file.as_str() == "names.json" {
        return serve(&req, names_json(), "application/json");
    }
    match ASSETS.iter().find(|(name, _)| *name == file.as_str()) {
        Some((_, a)) => serve(&req, a.body, a.content_type),
        None => super::not_found(req).await,
    }
}

/// One loaded model in `GET /v1/models`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelEntry {
    /// The model's name.
    name: String,
    /// Its loaded versions, ascending; the last one answers requests without a version.
    versions: Vec<String>,
    /// The device the highest version runs on.
    device: String,
    /// Classes the highest version ranks.
    classes: usize,
    /// Width of the image the highest version classifies, in pixels (after its resize and crop).
    input_width: u32,
    /// Its height, in pixels.
    input_height: u32,
}

/// `GET /v1/models`'s body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Every loaded model, by name.
    models: Vec<ModelEntry>,
}

/// The loaded models and their versions (public: the repository index, which also lists
/// models that failed or are unloaded, needs the admin token).
#[utoipa::path(get, path = "/v1/models", tag = "classify",
    responses((status = 200, description = "The loaded models, by name", body = ModelList)))]
pub async fn models(state: web::Data<AppState>) -> HttpResponse {
    let mut models: Vec<ModelEntry> = Vec::new();
    // `loaded()` lists versions grouped by model, ascending: the last of a group is the highest.
    for m in state.repo.loaded() {
        let version = m.version.to_string();
        let entry = ModelEntry {
            name: m.name.clone(),
            versions: Vec::new(),
            device: m.device().to_string(),
            classes: m.signature.classes,
            input_width: m.spec.crop_width,
            input_height: m.spec.crop_height,
        };
        match models.last_mut() {
            Some(last) if last.name == m.name => {
                let versions = std::mem::take(&mut last.versions);
                *last = ModelEntry { versions, ..entry };
            }
            _ => models.push(entry),
        }
        if let Some(last) = models.last_mut() {
            last.versions.push(version);
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    HttpResponse::Ok().json(ModelList { models })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    #[test]
    fn etags_match_only_the_same_body() {
        let tag = super::etag(b"abc");
        assert_eq!(tag, super::etag(b"abc"));
        assert_ne!(tag, super::etag(b"abd"));
        let req = TestRequest::default()
            .insert_header(("If-None-Match", format!("\"x\", W/{tag}")))
            .to_http_request();
        assert!(super::not_modified(&req, &tag));
        let req = TestRequest::default()
            .insert_header(("If-None-Match", "\"x\""))
            .to_http_request();
        assert!(!super::not_modified(&req, &tag));
    }

    #[test]
    fn names_list_every_corruption_and_perturbation() {
        let v: serde_json::Value = serde_json::from_slice(super::names_json()).unwrap();
        assert_eq!(v["corruptions"].as_array().map(Vec::len), Some(19));
        assert_eq!(v["benchmark_corruptions"].as_array().map(Vec::len), Some(15));
        assert_eq!(v["perturbations"].as_array().map(Vec::len), Some(14));
        assert!(
            v["corruptions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "gaussian_noise")
        );
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let page = std::str::from_utf8(super::INDEX.body).unwrap();
        assert!(page.contains("<script src=\"/console/app.js\""), "{page}");
        assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"));
        // Inline event handlers (`onclick=...`) are blocked by the CSP too.
        let handler = page.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "{page}");
    }
}
