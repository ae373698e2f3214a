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
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::binary::{BinaryPart, HEADER_LENGTH, read_infer_body};
use super::{AppState, ModelPath, Outcome, Peer, run_images, run_tensor, unless_gone};
use crate::{ServeError, repository::LoadedModel};

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// `GET /v2`.
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "hardy",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [
            "binary_tensor_data",
            "classification",
            "model_repository",
            "model_configuration",
            "statistics",
        ],
    }))
}

/// `GET /v2/models/{model}[/versions/{v}]`.
pub async fn model_metadata(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    let model = match state.repo.get(&path.model, path.version.as_deref()) {
        Ok(m) => m,
        Err(e) => return e.error_response(),
    };
    let sig = &model.signature;
    let [h, w] = [model.spec.crop_height, model.spec.crop_width];
    let channels = model.spec.channels();
    let mut input_shape = vec![-1i64];
    input_shape.extend(sig.image_dims.iter().map(|&d| d as i64));
    let versions: Vec<String> = state.repo.versions(&model.name).iter().map(u64::to_string).collect();
    HttpResponse::Ok().json(json!({
        "name": model.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [{ "name": sig.input_name, "datatype": "FP32", "shape": input_shape }],
        "outputs": [{ "name": sig.output_name, "datatype": "FP32", "shape": [-1, sig.classes as i64] }],
        "parameters": {
            "version": model.version.to_string(),
            "device": model.device().to_string(),
            "max_batch_size": model.max_batch,
            "labels": model.labels().len(),
            "also_accepts": format!(
                "{name}: UINT8 [N, {h}, {w}, {channels}] pixels; BYTES [N] encoded images",
                name = sig.input_name
            ),
        },
    }))
}

/// `GET /v2/models/{model}[/versions/{v}]/config`: Triton's model configuration extension,
/// the settings a version runs with (`tritonclient`'s `get_model_config`), in Triton's
/// `ModelConfig` JSON: shapes without the batch dimension, batching, instances, versions.
pub async fn model_config(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    let model = match state.repo.get(&path.model, path.version.as_deref()) {
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
    HttpResponse::Ok().json(json!({
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": version_policy,
        "max_batch_size": model.max_batch,
        "input": [{ "name": sig.input_name, "data_type": "TYPE_FP32", "format": format, "dims": sig.image_dims }],
        "output": [output],
        "dynamic_batching": {
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "default_queue_policy": { "max_queue_size": batching.queue_capacity },
        },
        "instance_group": [{
            "name": format!("{}_0", model.name),
            "kind": kind,
            "count": options.instances,
            "gpus": gpus,
        }],
        "parameters": {
            "version": { "string_value": model.version.to_string() },
            // class names live in the model's metadata or config.toml, not in a label file
            "labels": { "string_value": model.labels().len().to_string() },
            "intra_op_threads": { "string_value": match options.session.intra_threads {
                0 => "onnxruntime default".to_string(),
                n => n.to_string(),
            } },
        },
    }))
}

/// `GET /v2/models/{model}[/versions/{v}]/ready`.
pub async fn model_ready(state: web::Data<AppState>, path: web::Path<ModelPath>) -> HttpResponse {
    match state.repo.get(&path.model, path.version.as_deref()) {
        Ok(m) => HttpResponse::Ok().json(json!({ "name": m.name, "version": m.version.to_string(), "ready": true })),
        Err(e) => e.error_response(),
    }
}

/// `GET /v2/models/stats`, `/v2/models/{model}/stats` and
/// `/v2/models/{model}/versions/{v}/stats`: Triton's statistics extension for every loaded
/// version, a model's loaded versions, or one version ([`crate::stats`]).
pub async fn statistics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let info = req.match_info();
    let mut versions = match (info.get("model"), info.get("version")) {
        (None, _) => state.repo.loaded(),
        (Some(model), version) => match state.repo.get(model, version) {
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
    HttpResponse::Ok().json(json!({ "model_stats": stats }))
}

/// `POST /v2/models/{model}[/versions/{v}]/infer`.
pub async fn infer(
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let mut outcome = Outcome::start(&state, "infer");
    let result = async {
        let model = state.repo.get(&path.model, path.version.as_deref())?;
        outcome.serving(&model);
        let (header, binary) = read_infer_body(&req, payload, state.max_body_bytes).await?;
        let request: InferRequest = serde_json::from_slice(&header)
            .map_err(|e| ServeError::Invalid(format!("invalid inference request JSON: {e}")))?;
        let outputs = plan_outputs(&request, &model)?;
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
        let peer = Peer::of(&req);
        let (out, timings) = match input.datatype.as_str() {
            "BYTES" => {
                let n = batch_of(&input.shape, &[1], "BYTES", "[N] or [N, 1]")
                    .or_else(|_| batch_of(&input.shape, &[], "BYTES", "[N] or [N, 1]"))?;
                let images = data.into_bytes_elements(n)?;
                run_images(&state, &model, peer.as_ref(), images).await?
            }
            "FP32" | "UINT8" => {
                let uint8 = input.datatype == "UINT8";
                let (dims, expected) = if uint8 {
                    let s = &model.spec;
                    (
                        [s.crop_height as usize, s.crop_width as usize, s.channels()],
                        "[N, height, width, channels]",
                    )
                } else {
                    (model.signature.image_dims, "[N, ...model input]")
                };
                let n = batch_of(&input.shape, &dims, &input.datatype, expected)?;
                let permit = model.batcher.admit()?;
                let t = Instant::now();
                let count = n * dims.iter().product::<usize>();
                let tensor = match data {
                    // Binary FP32 already is the tensor's memory: nothing for the pool to do.
                    Data::Binary(_) if !uint8 => data.into_f32(count)?,
                    data => {
                        let m = Arc::clone(&model);
                        unless_gone(
                            peer.as_ref(),
                            state.prep.run(move || {
                                if uint8 {
                                    Ok(normalise_pixels(&data.into_u8(count)?, &m))
                                } else {
                                    data.into_f32(count)
                                }
                            }),
                        )
                        .await??
                    }
                };
                run_tensor(&state, &model, peer.as_ref(), permit, tensor, n, t.elapsed()).await?
            }
            other => {
                return Err(ServeError::Invalid(format!(
                    "input datatype {other:?} is not supported; use FP32, UINT8 or BYTES"
                )));
            }
        };
        let rows = out.logits.len() / out.classes.max(1);
        let response = respond(&model, request.id, &outputs, &out.logits, rows, out.classes);
        let mut builder = HttpResponse::Ok();
        outcome.ran(&timings, &mut builder);
        Ok(match response {
            (json_part, None) => builder.json(json_part),
            (json_part, Some(binary)) => {
                let header = serde_json::to_vec(&json_part).unwrap_or_default();
                let mut body = Vec::with_capacity(header.len() + binary.len());
                body.extend_from_slice(&header);
                body.extend_from_slice(&binary);
                builder
                    .insert_header((HEADER_LENGTH, header.len().to_string()))
                    .content_type("application/octet-stream")
                    .body(body)
            }
        })
    }
    .await;
    outcome.finish(result)
}

/// An input's data, from JSON or from the binary part.
enum Data {
    Json(Value),
    Binary(BinaryPart),
}

/// The one input's data: its `binary_data_size` must cover the whole binary part.
fn input_data(input: &InputTensor, binary: BinaryPart) -> Result<Data, ServeError> {
    let trailing = |bytes: usize| {
        ServeError::Invalid(format!(
            "{bytes} bytes of binary data follow the inputs that declared binary_data_size"
        ))
    };
    match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size.as_u64().ok_or_else(|| {
                ServeError::Invalid(format!("input {:?}: binary_data_size is not a byte count", input.name))
            })? as usize;
            if size > binary.len() {
                return Err(ServeError::Invalid(format!(
                    "input {:?}: binary_data_size {size} exceeds the {} binary bytes sent",
                    input.name,
                    binary.len()
                )));
            }
            if size < binary.len() {
                return Err(trailing(binary.len() - size));
            }
            Ok(Data::Binary(binary))
        }
        None if !binary.is_empty() => Err(trailing(binary.len())),
        None => input.data.clone().map(Data::Json).ok_or_else(|| {
            ServeError::Invalid(format!("input {:?} has neither data nor binary_data_size", input.name))
        }),
    }
}

/// The batch size of a shape `[N, dims...]`, or a 400 naming the expected shape.
fn batch_of(shape: &[i64], dims: &[usize], datatype: &str, expected: &str) -> Result<usize, ServeError> {
    let fits =
        shape.len() == dims.len() + 1 && shape[0] >= 1 && shape[1..].iter().zip(dims).all(|(&s, &d)| s == d as i64);
    if !fits {
        let want: Vec<String> = std::iter::once("N".to_string())
            .chain(dims.iter().map(usize::to_string))
            .collect();
        return Err(ServeError::Invalid(format!(
            "{datatype} input has shape {shape:?}; this model needs {expected} = [{}]",
            want.join(", ")
        )));
    }
    Ok(shape[0] as usize)
}

impl Data {
    fn into_f32(self, count: usize) -> Result<Vec<f32>, ServeError> {
        match self {
            Data::Binary(b) => {
                if b.len() != count * 4 {
                    return Err(count_error("FP32", count * 4, b.len(), "bytes"));
                }
                Ok(b.into_f32())
            }
            Data::Json(v) => {
                let mut out = Vec::with_capacity(count);
                flatten(&v, &mut |x| match x.as_f64() {
                    Some(f) => {
                        out.push(f as f32);
                        Ok(())
                    }
                    None => Err(ServeError::Invalid(format!("FP32 data holds a non-number: {x}"))),
                })?;
                if out.len() != count {
                    return Err(count_error("FP32", count, out.len(), "values"));
                }
                Ok(out)
            }
        }
    }

    fn into_u8(self, count: usize) -> Result<Vec<u8>, ServeError> {
        match self {
            Data::Binary(b) => {
                if b.len() != count {
                    return Err(count_error("UINT8", count, b.len(), "bytes"));
                }
                Ok(b.to_bytes())
            }
            Data::Json(v) => {
                let mut out = Vec::with_capacity(count);
                flatten(&v, &mut |x| match x.as_u64().filter(|&n| n <= 255) {
                    Some(n) => {
                        out.push(n as u8);
                        Ok(())
                    }
                    None => Err(ServeError::Invalid(format!(
                        "UINT8 data holds {x}, not an integer in 0..=255"
                    ))),
                })?;
                if out.len() != count {
                    return Err(count_error("UINT8", count, out.len(), "values"));
                }
                Ok(out)
            }
        }
    }

    fn into_bytes_elements(self, count: usize) -> Result<Vec<Bytes>, ServeError> {
        let out = match self {
            Data::Binary(b) => {
                let mut b = Bytes::from(b.to_bytes());
                let mut out = Vec::new();
                while !b.is_empty() {
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
            Data::Json(v) => {
                let mut out = Vec::new();
                let mut index = 0;
                flatten(&v, &mut |x| {
                    let text = x.as_str().ok_or_else(|| {
                        ServeError::Invalid(format!("BYTES data element {index} is not a (base64) string"))
                    })?;
                    out.push(
                        super::classify::decode_base64(text)
                            .map_err(|reason| ServeError::BadImage { index, reason })?,
                    );
                    index += 1;
                    Ok(())
                })?;
                out
            }
        };
        if out.len() != count {
            return Err(count_error("BYTES", count, out.len(), "elements"));
        }
        Ok(out)
    }
}

fn count_error(datatype: &str, expected: usize, got: usize, unit: &str) -> ServeError {
    ServeError::Invalid(format!(
        "{datatype} data has {got} {unit}, but its shape needs {expected}"
    ))
}

/// Calls `f` on every leaf of a (possibly nested) JSON array.
fn flatten(v: &Value, f: &mut dyn FnMut(&Value) -> Result<(), ServeError>) -> Result<(), ServeError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, f)),
        leaf => f(leaf),
    }
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
    let flag = |params: &Map<String, Value>, key: &str| -> Result<Option<bool>, ServeError> {
        match params.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ServeError::Invalid(format!(
                "parameter {key} must be true or false, got {other}"
            ))),
        }
    };
    let default_binary = flag(&request.parameters, "binary_data_output")?.unwrap_or(false);
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
            let classification = match o.parameters.get("classification") {
                None => None,
                Some(v) => Some(v.as_u64().filter(|&k| k >= 1).ok_or_else(|| {
                    ServeError::Invalid(format!("output parameter classification must be a count >= 1, got {v}"))
                })? as usize),
            };
            Ok(OutputPlan {
                name: o.name.clone(),
                classification,
                binary: flag(&o.parameters, "binary_data")?.unwrap_or(default_binary),
            })
        })
        .collect()
}

/// The response's JSON part, and its binary part when an output asked for binary data.
fn respond(
    model: &LoadedModel,
    id: Option<String>,
    plans: &[OutputPlan],
    logits: &[f32],
    rows: usize,
    classes: usize,
) -> (Value, Option<Vec<u8>>) {
    let mut binary: Option<Vec<u8>> = None;
    let mut outputs = Vec::new();
    for plan in plans {
        let (datatype, shape, json_data, raw): (&str, [usize; 2], Value, Vec<u8>) = match plan.classification {
            Some(k) => {
                let k = k.min(classes);
                let strings: Vec<String> = logits
                    .chunks_exact(classes.max(1))
                    .flat_map(|row| top_k(row, k, model.labels()))
                    .map(|p| match p.label {
                        Some(label) => format!("{:.6}:{}:{label}", p.score, p.index),
                        None => format!("{:.6}:{}", p.score, p.index),
                    })
                    .collect();
                let raw = if plan.binary {
                    strings
                        .iter()
                        .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                        .collect()
                } else {
                    Vec::new()
                };
                ("BYTES", [rows, k], json!(strings), raw)
            }
            None => {
                let raw = if plan.binary {
                    logits.iter().flat_map(|x| x.to_le_bytes()).collect()
                } else {
                    Vec::new()
                };
                ("FP32", [rows, classes], json!(logits), raw)
            }
        };
        let mut output = json!({ "name": plan.name, "datatype": datatype, "shape": shape });
        if plan.binary {
            output["parameters"] = json!({ "binary_data_size": raw.len() });
            binary.get_or_insert_with(Vec::new).extend_from_slice(&raw);
        } else {
            output["data"] = json_data;
        }
        outputs.push(output);
    }
    let mut response = json!({
        "model_name": model.name,
        "model_version": model.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = id {
        response["id"] = json!(id);
    }
    (response, binary)
}
