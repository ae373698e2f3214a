//! The OpenAPI 3 document of every HTTP endpoint, served at `GET /openapi.json`.
//!
//! It is generated from the handlers' own request and response types and their
//! `#[utoipa::path]` annotations, so it cannot drift from what the handlers parse and
//! answer; CI fuzzes the running server against it with schemathesis. Routes that also
//! exist with `/versions/{version}` after the model are documented once in the handlers and
//! copied here with the extra path parameter.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::{
    OpenApi,
    openapi::{
        OpenApi as Document, PathItem,
        path::{Operation, Parameter},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use super::{admin, classify, console, jobs, oip, robust};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hardy",
        description = "Batched image classification, the Open Inference Protocol v2, robustness evaluation (jobs, attacks, corruptions) and Prometheus metrics."
    ),
    paths(
        super::live,
        super::ready,
        super::metrics,
        document,
        oip::server_metadata,
        oip::model_metadata,
        oip::model_config,
        oip::model_ready,
        oip::statistics,
        oip::infer,
        classify::classify,
        console::models,
        robust::attack,
        robust::corrupt,
        robust::robustness,
        admin::index,
        admin::load,
        admin::unload,
        jobs::submit,
        jobs::list,
        jobs::status,
        jobs::cancel,
        jobs::result,
        jobs::report,
        jobs::file,
    )
)]
struct Api;

/// The document, built once.
pub fn openapi() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = Api::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let versioned: Vec<(String, PathItem)> = doc
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with("/v1/models/{model}") || path.starts_with("/v2/models/{model}"))
            .map(|(path, item)| {
                let path = path.replacen("{model}", "{model}/versions/{version}", 1);
                (path, with_parameter(item.clone(), version_parameter(item)))
            })
            .collect();
        let all_models = doc
            .paths
            .paths
            .get("/v2/models/{model}/stats")
            .cloned()
            .map(without_model_parameter);
        doc.paths.paths.extend(versioned);
        if let Some(item) = all_models {
            doc.paths.paths.insert("/v2/models/stats".into(), item);
        }
        doc
    })
}

/// The operations of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post].into_iter().flatten()
}

/// A `version` path parameter made from the item's `model` parameter.
fn version_parameter(item: &PathItem) -> Option<Parameter> {
    let model = [&item.get, &item.post]
        .into_iter()
        .flatten()
        .flat_map(|op| op.parameters.iter().flatten())
        .find(|p| p.name == "model")?;
    let mut version = model.clone();
    version.name = "version".into();
    version.description = Some("The model version (a number); without it the highest loaded version answers".into());
    Some(version)
}

fn with_parameter(mut item: PathItem, parameter: Option<Parameter>) -> PathItem {
    if let Some(p) = parameter {
        for op in operations(&mut item) {
            op.parameters.get_or_insert_with(Vec::new).push(p.clone());
        }
    }
    item
}

fn without_model_parameter(mut item: PathItem) -> PathItem {
    for op in operations(&mut item) {
        if let Some(params) = &mut op.parameters {
            params.retain(|p| p.name != "model");
        }
    }
    item
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(openapi())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented_with_its_versioned_twin() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v2/health/live",
            "/v2/health/ready",
            "/v2",
            "/v2/models/stats",
            "/v2/models/{model}",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/models/{model}/versions/{version}/config",
            "/v2/models/{model}/versions/{version}/ready",
            "/v2/models/{model}/versions/{version}/stats",
            "/v1/models/{model}/versions/{version}/classify",
            "/v1/models",
            "/v1/models/{model}/versions/{version}/attack",
            "/v1/models/{model}/versions/{version}/robustness",
            "/v1/corrupt",
            "/v2/repository/index",
            "/v2/repository/models/{model}/load",
            "/v2/repository/models/{model}/unload",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        let versioned = &paths["/v2/models/{model}/versions/{version}/infer"]["post"]["parameters"];
        let names: Vec<&str> = versioned
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"model") && names.contains(&"version"), "{names:?}");
        let all = &paths["/v2/models/stats"]["get"];
        assert!(
            all.get("parameters")
                .is_none_or(|p| p.as_array().is_some_and(|a| a.is_empty()))
        );
    }
}
