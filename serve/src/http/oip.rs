//! The Open Inference Protocol v2 (KServe / Triton REST): health, metadata and `infer`, with
//! Triton's binary tensor and classification extensions.
//!
//! What `infer` accepts and returns is the same over gRPC, and is decided in [`crate::oip`];
//! this file reads and writes its HTTP form. In JSON each BYTES element is a base64 string.
//!
//! Data may be JSON (flat or nested arrays) or binary: the body is the JSON header
//! (`Inference-Header-Content-Length` bytes) followed by each binary input's bytes
//! (`parameters.binary_data_size`), little-endian, BYTES elements as a 4-byte length plus the
//! bytes. The output is the logits (`FP32 [N, classes]`), or with the output parameter
//! `"classification": K` the top K as `BYTES [N, K]` strings `"score:index:label"`, where
//! score is the softmax probability. `binary_data: true` on an output (or
//! `binary_data_output: true` on the request) returns it in binary.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::binary::{HEADER_LENGTH, read_infer_body};
use super::{AppState, ErrorBody, ModelPath, Outcome, run_images, run_tensor};
use crate::{
    ServeError,
    oip::{self, BinaryPart, Input, OutputData, Plan, TensorData},
    repository::LoadedModel,
};

/// The JSON part of an `infer` request. Only the fields and parameters Hardy reads are
/// typed; unknown ones are skipped without being built. Input data stays raw text until its
/// datatype and shape are checked and the request is admitted.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct InferRequest<'a> {
    /// Echoed in the response.
    id: Option<String>,
    #[serde(default)]
    parameters: RequestParameters,
    #[serde(borrow)]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

/// Request parameters Hardy reads (others are ignored).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RequestParameters {
    /// Return every output in binary unless the output says otherwise.
    binary_data_output: Option<bool>,
    /// Priority level, 1 the highest (`batching.priority_levels`); 0: the model's default.
    priority: Option<i64>,
    /// Longest wait in the model's queue, microseconds (then 503); 0: the model's
    /// `queue_timeout_us`.
    timeout: Option<i64>,
}

/// The one input tensor.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct InputTensor<'a> {
    /// The model's input name.
    name: String,
    /// `[N, ...]`; see the model's metadata.
    shape: Vec<i64>,
    /// `FP32`, `UINT8` or `BYTES`.
    datatype: String,
    #[serde(default)]
    parameters: InputParameters,
    /// The values, flat or nested (BYTES: base64 strings); absent with `binary_data_size`.
    #[serde(borrow)]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    data: Option<&'a RawValue>,
}

/// Input parameters Hardy reads (others are ignored).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct InputParameters {
    /// Bytes of this input in the binary part of the body.
    binary_data_size: Option<u64>,
}

/// An output the client asks for.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    /// The model's output name.
    name: String,
    #[serde(default)]
    parameters: OutputParameters,
}

/// Output parameters Hardy reads (others are ignored).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct OutputParameters {
    /// Return the top K classes as `"score:index:label"` strings instead of the logits.
    classification: Option<u64>,
    /// Return this output in the binary part of the body.
    binary_data: Option<bool>,
}

/// `GET /v2`'s body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: Vec<&'static str>,
}

/// A tensor in a model's metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TensorMetadata {
    name: String,
    datatype: &'static str,
    /// `-1` for the batch dimension.
    shape: Vec<i64>,
}

/// The `parameters` of a model's metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MetadataParameters {
    version: String,
    device: String,
    max_batch_size: usize,
    /// Number of class names.
    labels: usize,
    /// The other input forms the model takes.
    also_accepts: String,
}

/// `GET /v2/models/{model}`'s body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelMetadata {
    name: String,
    /// The loaded versions.
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
    parameters: MetadataParameters,
}

/// `GET /v2/models/{model}/ready`'s body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelReady {
    name: String,
    version: String,
    ready: bool,
}

/// Triton's `ModelConfig` JSON (`GET /v2/models/{model}/config`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelConfig {
    name: String,
    platform: &'static str,
    backend: &'static str,
    #[schema(value_type = Object)]
    version_policy: Value,
    max_batch_size: usize,
    #[schema(value_type = Vec<Object>)]
    input: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    output: Vec<Value>,
    #[schema(value_type = Object)]
    dynamic_batching: Value,
    #[schema(value_type = Vec<Object>)]
    instance_group: Vec<Value>,
    #[schema(value_type = Object)]
    parameters: Value,
}

/// Triton's statistics extension (`GET /v2/models/stats`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelStatistics {
    /// One entry per loaded version (Triton's `ModelStatistics`).
    #[schema(value_type = Vec<Object>)]
    model_stats: Vec<Value>,
}

/// The server's name, version and protocol extensions.
#[utoipa::path(get, path = "/v2", tag = "oip", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(ServerMetadata {
        name: super::SERVER_NAME,
        version: env!("CARGO_PKG_VERSION"),
        extensions: super::EXTENSIONS.to_vec(),
    })
}

/// A model version's inputs, outputs and settings.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "oip",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, body = ModelMetadata),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = "Models are still loading", body = ErrorBody),
    ))]
pub async fn model_metadata(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    let model = match state.model(&path.model, path.version.as_deref()) {
        Ok(m) => m,
        Err(e) => return e.error_response(),
    };
    let sig = &model.signature;
    let [h, w] = [model.spec.crop_height, model.spec.crop_width];
    let channels = model.spec.channels();
    let versions: Vec<String> = state.repo.versions(&model.name).iter().map(u64::to_string).collect();
    HttpResponse::Ok().json(ModelMetadata {
        name: model.name.clone(),
        versions,
        platform: "onnxruntime_onnx",
        inputs: vec![TensorMetadata {
            name: sig.input_name.clone(),
            datatype: "FP32",
            shape: oip::input_shape(&model),
        }],
        outputs: vec![TensorMetadata {
            name: sig.output_name.clone(),
            datatype: "FP32",
            shape: vec![-1, sig.classes as i64],
        }],
        parameters: MetadataParameters {
            version: model.version.to_string(),
            device: model.device().to_string(),
            max_batch_size: model.max_batch,
            labels: model.labels().len(),
            also_accepts: format!(
                "{name}: UINT8 [N, {h}, {w}, {channels}] pixels; BYTES [N] encoded images",
                name = sig.input_name
            ),
        },
    })
}

/// `GET /v2/models/{model}[/versions/{v}]/config`: Triton's model configuration extension,
/// the settings a version runs with (`tritonclient`'s `get_model_config`), in Triton's
/// `ModelConfig` JSON: shapes without the batch dimension, batching, instances, versions.
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "oip",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, body = ModelConfig),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = "Models are still loading", body = ErrorBody),
    ))]
pub async fn model_config(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    let model = match state.model(&path.model, path.version.as_deref()) {
        Ok(m) => m,
        Err(e) => return e.error_response(),
    };
    let facts = oip::ConfigFacts::of(&model, state.repo.options());
    let (sig, batching) = (&model.signature, facts.batching);
    let format = if facts.nchw { "FORMAT_NCHW" } else { "FORMAT_NHWC" };
    let (kind, gpus) = match facts.gpu {
        None => ("KIND_CPU", vec![]),
        Some(n) => ("KIND_GPU", vec![n]),
    };
    let version_policy = if facts.all_versions {
        json!({ "all": {} })
    } else {
        json!({ "latest": { "num_versions": 1 } })
    };
    let output = json!({ "name": sig.output_name, "data_type": "TYPE_FP32", "dims": [sig.classes] });
    HttpResponse::Ok().json(ModelConfig {
        name: model.name.clone(),
        platform: "onnxruntime_onnx",
        backend: "onnxruntime",
        version_policy,
        max_batch_size: model.max_batch,
        input: vec![
            json!({ "name": sig.input_name, "data_type": "TYPE_FP32", "format": format, "dims": sig.image_dims }),
        ],
        output: vec![output],
        dynamic_batching: json!({
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": batching.queue_timeout_us,
                "allow_timeout_override": true,
                "max_queue_size": batching.queue_capacity,
            },
        }),
        instance_group: vec![json!({
            "name": format!("{}_0", model.name),
            "kind": kind,
            "count": facts.instances,
            "gpus": gpus,
        })],
        parameters: json!({
            "version": { "string_value": model.version.to_string() },
            // class names live in the model's metadata or config.toml, not in a label file
            "labels": { "string_value": model.labels().len().to_string() },
            "intra_op_threads": { "string_value": facts.intra_threads },
            "priority_aging_us": { "string_value": batching.priority_aging_us.to_string() },
        }),
    })
}

/// Whether a model (version) is served.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "oip",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, body = ModelReady),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = "Models are still loading", body = ErrorBody),
    ))]
pub async fn model_ready(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    match state.model(&path.model, path.version.as_deref()) {
        Ok(m) => HttpResponse::Ok().json(ModelReady {
            name: m.name.clone(),
            version: m.version.to_string(),
            ready: true,
        }),
        Err(e) => e.error_response(),
    }
}

/// `GET /v2/models/stats`, `/v2/models/{model}/stats` and
/// `/v2/models/{model}/versions/{v}/stats`: Triton's statistics extension for every loaded
/// version, a model's loaded versions, or one version ([`crate::stats`]).
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "oip",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, body = ModelStatistics),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = "Models are still loading", body = ErrorBody),
    ))]
pub async fn statistics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let info = req.match_info();
    let mut versions = match (info.get("model"), info.get("version")) {
        (None, _) => state.repo.loaded(),
        (Some(model), version) => match state.model(model, version) {
            Ok(one) if version.is_some() => vec![one],
            Ok(_) => state.repo.loaded().into_iter().filter(|m| m.name == model).collect(),
            Err(e) => return e.error_response(),
        },
    };
    versions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    let stats: Vec<Value> = versions
        .iter()
        .map(|m| crate::stats::lock(m.batcher.stats()).json(&m.name, &m.version.to_string()))
        .collect();
    HttpResponse::Ok().json(ModelStatistics { model_stats: stats })
}

/// Inference (Open Inference Protocol v2), JSON or with Triton's binary tensor extension.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "oip",
    params(
        ("model" = String, Path, description = "The model's name"),
        ("Inference-Header-Content-Length" = Option<u64>, Header,
            description = "With binary data: bytes of the JSON part at the start of the body"),
    ),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs; binary outputs follow the JSON part", content(
            (InferResponse = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        (status = 400, description = "Malformed request, tensor or image", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body or image count over the limits", body = ErrorBody),
        (status = 503, description = "Queue or body budget full, or models loading (Retry-After)", body = ErrorBody),
    ))]
pub async fn infer(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "infer", super::traceparent(&req));
    let result = async {
        let model = state.model(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        // The body is read once the model has room for it (see `crate::batcher`).
        let mut ticket = model.batcher.ticket().await?;
        let (header, binary, body_guard) = ticket.hold_while(read_infer_body(&state, &req, payload)).await?;
        // Parsing, checking and admitting (and, for tensors, converting) run on a
        // preprocessing thread: a body of tens of megabytes must not hold an async thread.
        let m = Arc::clone(&model);
        let (plan, input) = state
            .prep
            .run(move || {
                let _counted = body_guard;
                oip::prepare(parse(&header, binary, &m)?, &m, ticket)
            })
            .await?;
        let (out, timings) = match input {
            Input::Images { images, ticket } => run_images(&state, &model, ticket, images, plan.policy).await?,
            Input::Tensor {
                permit,
                tensor,
                preprocess,
            } => run_tensor(&state, &model, permit, tensor, preprocess, plan.policy).await?,
        };
        let m = Arc::clone(&model);
        let (json_part, binary) = state
            .prep
            .run(move || respond(&m, plan, &out.logits, out.classes))
            .await?;
        let mut builder = HttpResponse::Ok();
        outcome.ran(&timings, &mut builder);
        Ok(match binary {
            None => builder.content_type("application/json").body(json_part),
            Some(binary) => {
                let mut body = Vec::with_capacity(json_part.len() + binary.len());
                body.extend_from_slice(&json_part);
                body.extend_from_slice(&binary);
                builder
                    .insert_header((HEADER_LENGTH, json_part.len().to_string()))
                    .content_type("application/octet-stream")
                    .body(body)
            }
        })
    }
    .await;
    outcome.finish(result)
}

/// Reads the JSON part of an `infer` request, with its binary part, into the
/// transport-neutral request. The one input is counted before its data is read: the binary
/// part belongs to it whole.
fn parse<'a>(header: &'a [u8], binary: BinaryPart, model: &LoadedModel) -> Result<oip::InferRequest<'a>, ServeError> {
    let request: InferRequest = serde_json::from_slice(header)
        .map_err(|e| ServeError::Invalid(format!("invalid inference request JSON: {e}")))?;
    let input = oip::one_input(request.inputs, model)?;
    let data = input_data(&input, binary)?;
    Ok(oip::InferRequest {
        id: request.id,
        inputs: vec![oip::InputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        }],
        outputs: request
            .outputs
            .into_iter()
            .map(|o| oip::RequestedOutput {
                name: o.name,
                classification: o.parameters.classification.map(i128::from),
                binary: o.parameters.binary_data,
            })
            .collect(),
        binary_output: request.parameters.binary_data_output.unwrap_or(false),
        priority: request.parameters.priority.map(i128::from),
        timeout_us: request.parameters.timeout.map(i128::from),
    })
}

/// The one input's data: its `binary_data_size` must cover the whole binary part.
fn input_data<'a>(input: &InputTensor<'a>, binary: BinaryPart) -> Result<TensorData<'a>, ServeError> {
    let trailing = |bytes: usize| {
        ServeError::Invalid(format!(
            "{bytes} bytes of binary data follow the inputs that declared binary_data_size"
        ))
    };
    match input.parameters.binary_data_size {
        Some(size) => {
            let sent = binary.len() as u64;
            if size > sent {
                return Err(ServeError::Invalid(format!(
                    "input {:?}: binary_data_size {size} exceeds the {sent} binary bytes sent",
                    input.name,
                )));
            }
            if size < sent {
                return Err(trailing((sent - size) as usize));
            }
            Ok(TensorData::Binary(binary))
        }
        None if !binary.is_empty() => Err(trailing(binary.len())),
        None => input.data.map(TensorData::Json).ok_or_else(|| {
            ServeError::Invalid(format!("input {:?} has neither data nor binary_data_size", input.name))
        }),
    }
}

/// One output of the response's JSON part.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputTensor<'a> {
    name: &'a str,
    /// `FP32` (logits) or `BYTES` (classification strings).
    datatype: &'static str,
    shape: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    parameters: Option<BinarySize>,
    /// Absent when the output is in the binary part.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<serde_json::Value>, required = false)]
    data: Option<OutputData<'a>>,
}

/// Where a binary output's bytes are.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BinarySize {
    binary_data_size: usize,
}

/// The JSON part of an `infer` response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    id: Option<String>,
    outputs: Vec<OutputTensor<'a>>,
}

/// The response's JSON part, and its binary part when an output asked for binary data.
/// Serialised straight from the logits (no JSON tree in between).
fn respond(
    model: &LoadedModel,
    plan: Plan,
    logits: &[f32],
    classes: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>), ServeError> {
    let mut binary: Option<Vec<u8>> = None;
    let mut outputs = Vec::new();
    for out in oip::outputs(model, &plan.outputs, logits, classes)? {
        let datatype = out.data.datatype();
        let (parameters, data) = if out.binary {
            let raw = out.data.raw();
            let size = raw.len();
            binary.get_or_insert_with(Vec::new).extend_from_slice(&raw);
            (Some(BinarySize { binary_data_size: size }), None)
        } else {
            (None, Some(out.data))
        };
        outputs.push(OutputTensor {
            name: out.name,
            datatype,
            shape: out.shape,
            parameters,
            data,
        });
    }
    let response = InferResponse {
        model_name: &model.name,
        model_version: model.version.to_string(),
        id: plan.id,
        outputs,
    };
    let json =
        serde_json::to_vec(&response).map_err(|e| ServeError::Internal(format!("cannot encode the response: {e}")))?;
    Ok((json, binary))
}
