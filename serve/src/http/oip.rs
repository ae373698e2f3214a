//! The Open Inference Protocol v2 (KServe / Triton REST): health, metadata and `infer`, with
//! Triton's binary tensor and classification extensions.
//!
//! `infer` takes exactly one input, named as the model's input, as one of:
//! - `FP32` `[N, ...]` in the model's own input shape (already preprocessed);
//! - `UINT8` `[N, H, W, C]` pixels at the model's crop size, which the server normalises
//!   with the model's mean and std and lays out as the model wants;
//! - `BYTES` `[N]` (or `[N, 1]`) encoded images (JPEG, PNG, ...) that the server decodes and
//!   preprocesses like `/v1/.../classify`; in JSON each element is a base64 string.
//!
//! Data may be JSON (flat or nested arrays) or binary: the body is the JSON header
//! (`Inference-Header-Content-Length` bytes) followed by each binary input's bytes
//! (`parameters.binary_data_size`), little-endian, BYTES elements as a 4-byte length plus the
//! bytes. The output is the logits (`FP32 [N, classes]`), or with the output parameter
//! `"classification": K` the top K as `BYTES [N, K]` strings `"score:index:label"`, where
//! score is the softmax probability. `binary_data: true` on an output (or
//! `binary_data_output: true` on the request) returns it in binary.

use std::{sync::Arc, time::Instant};

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use engine::{classify::top_k, preprocess::Layout};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::binary::{BinaryPart, HEADER_LENGTH, read_infer_body};
use super::json_leaves::{Leaf, leaves};
use super::{AppState, ErrorBody, ModelPath, Outcome, run_images, run_tensor};
use crate::{ServeError, batcher::Permit, repository::LoadedModel};

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
        name: "hardy",
        version: env!("CARGO_PKG_VERSION"),
        extensions: vec![
            "binary_tensor_data",
            "classification",
            "model_repository",
            "model_configuration",
            "statistics",
        ],
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
    let mut input_shape = vec![-1i64];
    input_shape.extend(sig.image_dims.iter().map(|&d| d as i64));
    let versions: Vec<String> = state.repo.versions(&model.name).iter().map(u64::to_string).collect();
    HttpResponse::Ok().json(ModelMetadata {
        name: model.name.clone(),
        versions,
        platform: "onnxruntime_onnx",
        inputs: vec![TensorMetadata {
            name: sig.input_name.clone(),
            datatype: "FP32",
            shape: input_shape,
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
    let sig = &model.signature;
    let options = state.repo.options();
    let batching = &model.artifact.config.batching;
    let format = match model.spec.layout {
        Layout::Nchw => "FORMAT_NCHW",
        Layout::Nhwc => "FORMAT_NHWC",
    };
    let (kind, gpus) = match model.device() {
        engine::device::Device::Cpu => ("KIND_CPU", vec![]),
        engine::device::Device::Cuda(n) => ("KIND_GPU", vec![n]),
    };
    let version_policy = match options.versions {
        crate::config::VersionPolicy::Latest => json!({ "latest": { "num_versions": 1 } }),
        crate::config::VersionPolicy::All => json!({ "all": {} }),
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
            "default_queue_policy": { "max_queue_size": batching.queue_capacity },
        }),
        instance_group: vec![json!({
            "name": format!("{}_0", model.name),
            "kind": kind,
            "count": options.instances,
            "gpus": gpus,
        })],
        parameters: json!({
            "version": { "string_value": model.version.to_string() },
            // class names live in the model's metadata or config.toml, not in a label file
            "labels": { "string_value": model.labels().len().to_string() },
            "intra_op_threads": { "string_value": match options.session.intra_threads {
                0 => "onnxruntime default".to_string(),
                n => n.to_string(),
            } },
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
    let mut outcome = Outcome::start(&state, "infer");
    let result = async {
        let model = state.model(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        let (header, binary, body_guard) = read_infer_body(&state, &req, payload).await?;
        // Parsing, checking and admitting (and, for tensors, converting) run on a
        // preprocessing thread: a body of tens of megabytes must not hold an async thread.
        let m = Arc::clone(&model);
        let (plan, input) = state
            .prep
            .run(move || {
                let _counted = body_guard;
                prepare(&header, binary, &m)
            })
            .await?;
        let (out, timings) = match input {
            Input::Images(images) => run_images(&state, &model, images).await?,
            Input::Tensor {
                permit,
                tensor,
                preprocess,
            } => run_tensor(&state, &model, permit, tensor, preprocess).await?,
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

/// What a request asks back.
struct Plan {
    id: Option<String>,
    outputs: Vec<OutputPlan>,
}

/// The request's input, ready for the batcher (or for the preprocessing pool).
enum Input {
    /// Encoded images: the pool decodes them once they are admitted.
    Images(Vec<Bytes>),
    /// An admitted tensor of the model's input.
    Tensor {
        permit: Permit,
        tensor: Vec<f32>,
        preprocess: std::time::Duration,
    },
}

/// Parses and checks an `infer` request and admits it by its cost; tensors are converted
/// after admission, so a request's memory is counted before it is spent.
fn prepare(header: &[u8], binary: BinaryPart, model: &LoadedModel) -> Result<(Plan, Input), ServeError> {
    let request: InferRequest = serde_json::from_slice(header)
        .map_err(|e| ServeError::Invalid(format!("invalid inference request JSON: {e}")))?;
    let outputs = plan_outputs(&request, model)?;
    let [input] = request.inputs.as_slice() else {
        return Err(ServeError::Invalid(format!(
            "expected exactly one input ({:?}), got {}",
            model.signature.input_name,
            request.inputs.len()
        )));
    };
    if input.name != model.signature.input_name {
        return Err(ServeError::Invalid(format!(
            "unknown input {:?}; model {} has input {:?}",
            input.name, model.name, model.signature.input_name
        )));
    }
    let data = input_data(input, binary)?;
    let plan = Plan {
        id: request.id.clone(),
        outputs,
    };
    let input = match input.datatype.as_str() {
        "BYTES" => {
            let n = batch_of(&input.shape, &[1], "BYTES", "[N] or [N, 1]")
                .or_else(|_| batch_of(&input.shape, &[], "BYTES", "[N] or [N, 1]"))?;
            // The element count is checked against the shape (400), then against what the
            // model takes in one request (413), before any base64 is decoded.
            let images = match data {
                Data::Json(raw) => {
                    let held = leaves(raw, "BYTES", n, |leaf, index| match leaf {
                        Leaf::Text(_) => Ok(()),
                        _ => Err(not_a_string(index)),
                    })?
                    .len();
                    if held != n {
                        return Err(count_error("BYTES", n, held, "elements"));
                    }
                    model.batcher.check_size(n)?;
                    Data::Json(raw).into_bytes_elements(n)?
                }
                binary => {
                    let images = binary.into_bytes_elements(n)?;
                    model.batcher.check_size(n)?;
                    images
                }
            };
            Input::Images(images)
        }
        datatype @ ("FP32" | "UINT8") => {
            let uint8 = datatype == "UINT8";
            let (dims, expected) = if uint8 {
                let s = &model.spec;
                (
                    [s.crop_height as usize, s.crop_width as usize, s.channels()],
                    "[N, height, width, channels]",
                )
            } else {
                (model.signature.image_dims, "[N, ...model input]")
            };
            let n = batch_of(&input.shape, &dims, datatype, expected)?;
            let count = dims
                .iter()
                .try_fold(n, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| ServeError::Invalid(format!("{datatype} input shape {:?} overflows", input.shape)))?;
            // The declared shape must match the data sent before anything is sized from it.
            data.check_size(datatype, count, if uint8 { 1 } else { 4 })?;
            let permit = model.batcher.admit(n)?;
            let t = Instant::now();
            let tensor = if uint8 {
                normalise_pixels(&data.into_u8(count)?, model)
            } else {
                data.into_f32(count)?
            };
            Input::Tensor {
                permit,
                tensor,
                preprocess: t.elapsed(),
            }
        }
        other => {
            return Err(ServeError::Invalid(format!(
                "input datatype {other:?} is not supported; use FP32, UINT8 or BYTES"
            )));
        }
    };
    Ok((plan, input))
}

/// An input's data, from JSON or from the binary part.
enum Data<'a> {
    Json(&'a RawValue),
    Binary(BinaryPart),
}

/// The one input's data: its `binary_data_size` must cover the whole binary part.
fn input_data<'a>(input: &InputTensor<'a>, binary: BinaryPart) -> Result<Data<'a>, ServeError> {
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
            Ok(Data::Binary(binary))
        }
        None if !binary.is_empty() => Err(trailing(binary.len())),
        None => input.data.map(Data::Json).ok_or_else(|| {
            ServeError::Invalid(format!("input {:?} has neither data nor binary_data_size", input.name))
        }),
    }
}

/// The batch size of a shape `[N, dims...]`, or a 400 naming the expected shape.
fn batch_of(shape: &[i64], dims: &[usize], datatype: &str, expected: &str) -> Result<usize, ServeError> {
    let fits = shape.len() == dims.len() + 1
        && shape[0] >= 1
        && shape[1..].iter().zip(dims).all(|(&s, &d)| usize::try_from(s) == Ok(d));
    let n = usize::try_from(shape.first().copied().unwrap_or(0))
        .ok()
        .filter(|_| fits);
    n.ok_or_else(|| {
        let want: Vec<String> = std::iter::once("N".to_string())
            .chain(dims.iter().map(usize::to_string))
            .collect();
        ServeError::Invalid(format!(
            "{datatype} input has shape {shape:?}; this model needs {expected} = [{}]",
            want.join(", ")
        ))
    })
}

impl Data<'_> {
    /// Checks that the data can hold `count` values of `width` bytes before any buffer is
    /// sized from the shape: binary data must be exactly that long, and JSON text needs at
    /// least two characters a value.
    fn check_size(&self, datatype: &str, count: usize, width: usize) -> Result<(), ServeError> {
        match self {
            Data::Binary(b) => {
                let need = count.checked_mul(width);
                if need != Some(b.len()) {
                    return Err(ServeError::Invalid(format!(
                        "{datatype} data has {} bytes, but its shape needs {count} values of {width} bytes",
                        b.len()
                    )));
                }
            }
            Data::Json(raw) => {
                if count > raw.get().len() / 2 + 1 {
                    // The text cannot hold that many values: count what it holds, for the
                    // message (values of no size, so nothing is allocated).
                    let held = match datatype {
                        "UINT8" => leaves(raw, datatype, count, |leaf, _| uint8_leaf(leaf).map(drop))?,
                        _ => leaves(raw, datatype, count, |leaf, _| fp32_leaf(leaf).map(drop))?,
                    }
                    .len();
                    return Err(count_error(datatype, count, held, "values"));
                }
            }
        }
        Ok(())
    }

    fn into_f32(self, count: usize) -> Result<Vec<f32>, ServeError> {
        let values = match self {
            Data::Binary(b) => {
                if b.len() != count.saturating_mul(4) {
                    return Err(count_error("FP32", count.saturating_mul(4), b.len(), "bytes"));
                }
                b.into_f32()
            }
            Data::Json(raw) => leaves(raw, "FP32", count, |leaf, _| fp32_leaf(leaf))?,
        };
        if values.len() != count {
            return Err(count_error("FP32", count, values.len(), "values"));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(ServeError::Invalid(format!(
                "FP32 value {i} is {}; inputs must be finite",
                values[i]
            )));
        }
        Ok(values)
    }

    fn into_u8(self, count: usize) -> Result<Vec<u8>, ServeError> {
        let values = match self {
            Data::Binary(b) => b.to_bytes(),
            Data::Json(raw) => leaves(raw, "UINT8", count, |leaf, _| uint8_leaf(leaf))?,
        };
        if values.len() != count {
            return Err(count_error("UINT8", count, values.len(), "values"));
        }
        Ok(values)
    }

    fn into_bytes_elements(self, count: usize) -> Result<Vec<Bytes>, ServeError> {
        let out = match self {
            Data::Binary(b) => {
                let mut b = Bytes::from(b.to_bytes());
                let mut out = Vec::new();
                while !b.is_empty() {
                    if out.len() == count {
                        return Err(ServeError::Invalid(format!(
                            "BYTES data holds more than the {count} elements its shape declares"
                        )));
                    }
                    if b.len() < 4 {
                        return Err(ServeError::Invalid("BYTES data ends inside an element's length".into()));
                    }
                    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    if b.len() - 4 < len {
                        return Err(ServeError::Invalid(format!(
                            "BYTES element {} declares {len} bytes but only {} remain",
                            out.len(),
                            b.len() - 4
                        )));
                    }
                    let _ = b.split_to(4);
                    out.push(b.split_to(len));
                }
                out
            }
            Data::Json(raw) => leaves(raw, "BYTES", count, |leaf, index| match leaf {
                Leaf::Text(text) => {
                    super::classify::decode_base64(text).map_err(|reason| ServeError::BadImage { index, reason })
                }
                _ => Err(not_a_string(index)),
            })?,
        };
        if out.len() != count {
            return Err(count_error("BYTES", count, out.len(), "elements"));
        }
        Ok(out)
    }
}

fn not_a_string(index: usize) -> ServeError {
    ServeError::Invalid(format!("BYTES data element {index} is not a (base64) string"))
}

fn fp32_leaf(leaf: Leaf<'_>) -> Result<f32, ServeError> {
    match leaf {
        Leaf::Number(f) => Ok(f as f32),
        other => Err(ServeError::Invalid(format!("FP32 data holds a non-number: {other}"))),
    }
}

fn uint8_leaf(leaf: Leaf<'_>) -> Result<u8, ServeError> {
    match leaf {
        Leaf::Number(f) if f.fract() == 0.0 && (0.0..=255.0).contains(&f) => Ok(f as u8),
        other => Err(ServeError::Invalid(format!(
            "UINT8 data holds {other}, not an integer in 0..=255"
        ))),
    }
}

fn count_error(datatype: &str, expected: usize, got: usize, unit: &str) -> ServeError {
    ServeError::Invalid(format!(
        "{datatype} data has {got} {unit}, but its shape needs {expected}"
    ))
}

/// `[N, H, W, C]` pixels to the model's normalised input layout.
fn normalise_pixels(pixels: &[u8], model: &LoadedModel) -> Vec<f32> {
    let s = &model.spec;
    let (h, w, c) = (s.crop_height as usize, s.crop_width as usize, s.channels());
    let per_image = h * w * c;
    let mut out = vec![0f32; pixels.len()];
    let scale: Vec<f32> = s.std.iter().map(|sd| 1.0 / (255.0 * sd)).collect();
    let shift: Vec<f32> = s.mean.iter().zip(&s.std).map(|(m, sd)| m / sd).collect();
    for (src, dst) in pixels.chunks_exact(per_image).zip(out.chunks_exact_mut(per_image)) {
        for (i, &p) in src.iter().enumerate() {
            let ch = i % c;
            let value = p as f32 * scale[ch] - shift[ch];
            let at = match s.layout {
                Layout::Nhwc => i,
                Layout::Nchw => ch * h * w + i / c,
            };
            dst[at] = value;
        }
    }
    out
}

struct OutputPlan {
    name: String,
    classification: Option<usize>,
    binary: bool,
}

fn plan_outputs(request: &InferRequest, model: &LoadedModel) -> Result<Vec<OutputPlan>, ServeError> {
    let default_binary = request.parameters.binary_data_output.unwrap_or(false);
    let output_name = &model.signature.output_name;
    if request.outputs.is_empty() {
        return Ok(vec![OutputPlan {
            name: output_name.clone(),
            classification: None,
            binary: default_binary,
        }]);
    }
    request
        .outputs
        .iter()
        .map(|o| {
            if &o.name != output_name {
                return Err(ServeError::Invalid(format!(
                    "unknown output {:?}; model {} has output {output_name:?}",
                    o.name, model.name
                )));
            }
            let classification = match o.parameters.classification {
                None => None,
                Some(0) => {
                    return Err(ServeError::Invalid(
                        "output parameter classification must be a count >= 1, got 0".into(),
                    ));
                }
                Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            };
            Ok(OutputPlan {
                name: o.name.clone(),
                classification,
                binary: o.parameters.binary_data.unwrap_or(default_binary),
            })
        })
        .collect()
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

#[derive(Serialize)]
#[serde(untagged)]
enum OutputData<'a> {
    Floats(&'a [f32]),
    Strings(Vec<String>),
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
    let classes = classes.max(1);
    let rows = logits.len() / classes;
    let mut binary: Option<Vec<u8>> = None;
    let mut outputs = Vec::new();
    for out in &plan.outputs {
        let (datatype, shape, data, raw): (&str, [usize; 2], OutputData, Vec<u8>) = match out.classification {
            Some(k) => {
                let k = k.min(classes);
                let mut strings = Vec::with_capacity(rows.saturating_mul(k));
                for (index, row) in logits.chunks_exact(classes).enumerate() {
                    super::classify::finite(row, index)?;
                    strings.extend(top_k(row, k, model.labels()).into_iter().map(|p| match p.label {
                        Some(label) => format!("{:.6}:{}:{label}", p.score, p.index),
                        None => format!("{:.6}:{}", p.score, p.index),
                    }));
                }
                let raw = if out.binary {
                    strings
                        .iter()
                        .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                        .collect()
                } else {
                    Vec::new()
                };
                ("BYTES", [rows, k], OutputData::Strings(strings), raw)
            }
            None => {
                let raw = if out.binary {
                    logits.iter().flat_map(|x| x.to_le_bytes()).collect()
                } else {
                    Vec::new()
                };
                ("FP32", [rows, classes], OutputData::Floats(logits), raw)
            }
        };
        let (parameters, data) = if out.binary {
            let size = raw.len();
            binary.get_or_insert_with(Vec::new).extend_from_slice(&raw);
            (Some(BinarySize { binary_data_size: size }), None)
        } else {
            (None, Some(data))
        };
        outputs.push(OutputTensor {
            name: &out.name,
            datatype,
            shape,
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
