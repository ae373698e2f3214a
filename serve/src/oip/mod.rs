//! The Open Inference Protocol's `infer`, independent of its transport: the checks and
//! conversions of a request's one input, the plan of its outputs, and the outputs computed
//! from the logits. HTTP ([`crate::http`]) and gRPC ([`crate::grpc`]) each parse their own
//! wire format into an [`InferRequest`] and write the [`Output`]s back in theirs, so both
//! accept exactly the same tensors, with the same limits and the same error messages.
//!
//! `infer` takes exactly one input, named as the model's input, as one of:
//! - `FP32` `[N, ...]` in the model's own input shape (already preprocessed);
//! - `UINT8` `[N, H, W, C]` pixels at the model's crop size, which the server normalises
//!   with the model's mean and std and lays out as the model wants;
//! - `BYTES` `[N]` (or `[N, 1]`) encoded images (JPEG, PNG, ...) that the server decodes and
//!   preprocesses like `/v1/.../classify`.
//!
//! The output is the logits (`FP32 [N, classes]`), or with the output parameter
//! `classification: K` the top K as `BYTES [N, K]` strings `"score:index:label"`, where
//! score is the softmax probability.

pub mod json_leaves;
mod raw;

use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::{classify::top_k, preprocess::Layout};
use serde_json::value::RawValue;

use crate::{
    ServeError,
    batcher::{Permit, QueuePolicy, Ticket},
    repository::LoadedModel,
};
use json_leaves::{Leaf, leaves};
pub use raw::BinaryPart;

/// An `infer` request as either transport parsed it.
pub struct InferRequest<'a> {
    /// Echoed in the response.
    pub id: Option<String>,
    /// The inputs (exactly one is accepted).
    pub inputs: Vec<InputTensor<'a>>,
    /// The outputs asked for (none: the logits).
    pub outputs: Vec<RequestedOutput>,
    /// Whether outputs are returned in binary unless they say otherwise (HTTP).
    pub binary_output: bool,
    /// The `priority` parameter (0 or absent: the model's default level).
    pub priority: Option<i128>,
    /// The `timeout` parameter, microseconds in the queue (0 or absent: the model's).
    pub timeout_us: Option<i128>,
}

/// One input tensor.
pub struct InputTensor<'a> {
    /// Its name; must be the model's input name.
    pub name: String,
    /// `FP32`, `UINT8` or `BYTES`.
    pub datatype: String,
    /// `[N, ...]`.
    pub shape: Vec<i64>,
    /// Its values.
    pub data: TensorData<'a>,
}

/// An input's values, in the form the transport carried them.
pub enum TensorData<'a> {
    /// JSON text, flat or nested arrays; BYTES elements as base64 strings (HTTP).
    Json(&'a RawValue),
    /// The HTTP binary part, already read into `f32` words.
    Binary(BinaryPart),
    /// Little-endian bytes (gRPC `raw_input_contents`); BYTES elements as a 4-byte length
    /// and the bytes.
    Raw(Bytes),
    /// Typed FP32 values (gRPC `contents.fp32_contents`).
    Fp32(Vec<f32>),
    /// UINT8 values carried as 32-bit integers (gRPC `contents.uint_contents`).
    Uint(Vec<u32>),
    /// BYTES elements (gRPC `contents.bytes_contents`).
    Elements(Vec<Bytes>),
}

/// An output the client asks for.
pub struct RequestedOutput {
    /// Must be the model's output name.
    pub name: String,
    /// The classification extension's `classification` parameter: the top K.
    pub classification: Option<i128>,
    /// Whether to return it in binary (HTTP; gRPC always does).
    pub binary: Option<bool>,
}

/// What a request asks back, and how it waits.
pub struct Plan {
    /// The request's id.
    pub id: Option<String>,
    /// The outputs to compute.
    pub outputs: Vec<OutputPlan>,
    /// Its priority level and queue timeout.
    pub policy: QueuePolicy,
}

/// One output to compute.
pub struct OutputPlan {
    /// Its name.
    pub name: String,
    /// Top K classes instead of logits.
    pub classification: Option<usize>,
    /// Returned in binary (HTTP).
    pub binary: bool,
}

/// The request's input, ready for the batcher (or for the preprocessing pool).
pub enum Input {
    /// Encoded images: the pool decodes them once they are admitted.
    Images {
        /// The images.
        images: Vec<Bytes>,
        /// The request's ticket, for their admission.
        ticket: Ticket,
    },
    /// An admitted tensor of the model's input.
    Tensor {
        /// Its place in the queue.
        permit: Permit,
        /// The model's input, `permit.images()` rows.
        tensor: Vec<f32>,
        /// Conversion time.
        preprocess: Duration,
    },
}

/// Checks a request, admits it by its cost and converts its tensor (after admission, so a
/// request's memory is counted before it is spent). Encoded images are checked against the
/// model's limits here and admitted by [`crate::http::run_images`].
pub fn prepare(request: InferRequest<'_>, model: &LoadedModel, ticket: Ticket) -> Result<(Plan, Input), ServeError> {
    let outputs = plan_outputs(&request, model)?;
    let policy = model.batcher.queue_policy(request.priority, request.timeout_us)?;
    let plan = Plan {
        id: request.id,
        outputs,
        policy,
    };
    let input = one_input(request.inputs, model)?;
    if input.name != model.signature.input_name {
        return Err(ServeError::Invalid(format!(
            "unknown input {:?}; model {} has input {:?}",
            input.name, model.name, model.signature.input_name
        )));
    }
    let data = input.data;
    let input = match input.datatype.as_str() {
        "BYTES" => {
            let n = batch_of(&input.shape, &[1], "BYTES", "[N] or [N, 1]")
                .or_else(|_| batch_of(&input.shape, &[], "BYTES", "[N] or [N, 1]"))?;
            // The element count is checked against the shape (400), then against what the
            // model takes in one request (413), before any base64 is decoded.
            let images = match data {
                TensorData::Json(raw) => {
                    let held = leaves(raw, "BYTES", n, |leaf, index| match leaf {
                        Leaf::Text(_) => Ok(()),
                        _ => Err(not_a_string(index)),
                    })?
                    .len();
                    if held != n {
                        return Err(count_error("BYTES", n, held, "elements"));
                    }
                    model.batcher.check_size(n)?;
                    TensorData::Json(raw).into_bytes_elements(n)?
                }
                other => {
                    let images = other.into_bytes_elements(n)?;
                    model.batcher.check_size(n)?;
                    images
                }
            };
            Input::Images { images, ticket }
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
            let permit = model.batcher.admit(ticket, n)?;
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

/// The one input of a request, or 400 naming the model's input when it holds another
/// number. [`prepare`] takes it so; HTTP takes its JSON input so before reading its data,
/// since the binary part belongs to the one input whole.
pub fn one_input<T>(inputs: Vec<T>, model: &LoadedModel) -> Result<T, ServeError> {
    let count = inputs.len();
    let mut inputs = inputs.into_iter();
    match (inputs.next(), inputs.next()) {
        (Some(input), None) => Ok(input),
        _ => Err(ServeError::Invalid(format!(
            "expected exactly one input ({:?}), got {count}",
            model.signature.input_name
        ))),
    }
}

/// The model's input shape as the protocol's metadata shows it: `-1` for the batch
/// dimension, then the model's.
pub fn input_shape(model: &LoadedModel) -> Vec<i64> {
    std::iter::once(-1)
        .chain(model.signature.image_dims.iter().map(|&d| d as i64))
        .collect()
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

impl TensorData<'_> {
    /// Checks that the data can hold `count` values of `width` bytes before any buffer is
    /// sized from the shape: binary data must be exactly that long, typed values exactly
    /// that many, and JSON text needs at least two characters a value.
    fn check_size(&self, datatype: &str, count: usize, width: usize) -> Result<(), ServeError> {
        let bytes = match self {
            TensorData::Binary(b) => Some(b.len()),
            TensorData::Raw(b) => Some(b.len()),
            _ => None,
        };
        if let Some(len) = bytes {
            if count.checked_mul(width) != Some(len) {
                return Err(ServeError::Invalid(format!(
                    "{datatype} data has {len} bytes, but its shape needs {count} values of {width} bytes"
                )));
            }
            return Ok(());
        }
        let held = match self {
            TensorData::Fp32(v) => v.len(),
            TensorData::Uint(v) => v.len(),
            TensorData::Elements(v) => v.len(),
            TensorData::Json(raw) => {
                if count <= raw.get().len() / 2 + 1 {
                    return Ok(());
                }
                // The text cannot hold that many values: count what it holds, for the
                // message (values of no size, so nothing is allocated).
                match datatype {
                    "UINT8" => leaves(raw, datatype, count, |leaf, _| uint8_leaf(leaf).map(drop))?,
                    _ => leaves(raw, datatype, count, |leaf, _| fp32_leaf(leaf).map(drop))?,
                }
                .len()
            }
            TensorData::Binary(_) | TensorData::Raw(_) => count,
        };
        if held != count {
            return Err(count_error(datatype, count, held, "values"));
        }
        Ok(())
    }

    fn into_f32(self, count: usize) -> Result<Vec<f32>, ServeError> {
        let values = match self {
            TensorData::Binary(b) => {
                if b.len() != count.saturating_mul(4) {
                    return Err(count_error("FP32", count.saturating_mul(4), b.len(), "bytes"));
                }
                b.into_f32()
            }
            TensorData::Raw(b) => {
                if b.len() != count.saturating_mul(4) {
                    return Err(count_error("FP32", count.saturating_mul(4), b.len(), "bytes"));
                }
                le_f32(&b)
            }
            TensorData::Json(raw) => leaves(raw, "FP32", count, |leaf, _| fp32_leaf(leaf))?,
            TensorData::Fp32(v) => v,
            TensorData::Uint(_) | TensorData::Elements(_) => return Err(wrong_contents("FP32")),
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
            TensorData::Binary(b) => b.to_bytes(),
            TensorData::Raw(b) => b.to_vec(),
            TensorData::Json(raw) => leaves(raw, "UINT8", count, |leaf, _| uint8_leaf(leaf))?,
            TensorData::Uint(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, x)| {
                    u8::try_from(x)
                        .map_err(|_| ServeError::Invalid(format!("UINT8 value {i} is {x}, not an integer in 0..=255")))
                })
                .collect::<Result<_, _>>()?,
            TensorData::Fp32(_) | TensorData::Elements(_) => return Err(wrong_contents("UINT8")),
        };
        if values.len() != count {
            return Err(count_error("UINT8", count, values.len(), "values"));
        }
        Ok(values)
    }

    fn into_bytes_elements(self, count: usize) -> Result<Vec<Bytes>, ServeError> {
        let out = match self {
            TensorData::Binary(b) => split_elements(Bytes::from(b.to_bytes()), count)?,
            TensorData::Raw(b) => split_elements(b, count)?,
            TensorData::Json(raw) => leaves(raw, "BYTES", count, |leaf, index| match leaf {
                Leaf::Text(text) => {
                    crate::http::decode_base64(text).map_err(|reason| ServeError::BadImage { index, reason })
                }
                _ => Err(not_a_string(index)),
            })?,
            TensorData::Elements(v) => v,
            TensorData::Fp32(_) | TensorData::Uint(_) => return Err(wrong_contents("BYTES")),
        };
        if out.len() != count {
            return Err(count_error("BYTES", count, out.len(), "elements"));
        }
        Ok(out)
    }
}

/// Splits BYTES data (each element a 4-byte little-endian length and its bytes) into at
/// most `count` elements, without copying them.
fn split_elements(mut b: Bytes, count: usize) -> Result<Vec<Bytes>, ServeError> {
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
    Ok(out)
}

/// Little-endian FP32 bytes as values: on a little-endian machine one copy of the bytes
/// (bytemuck) instead of a conversion value by value, for gRPC's raw contents, which arrive
/// as bytes at no particular alignment (benches/README.md, "gRPC against HTTP").
fn le_f32(bytes: &[u8]) -> Vec<f32> {
    #[cfg(target_endian = "little")]
    {
        bytemuck::pod_collect_to_vec(bytes)
    }
    #[cfg(not(target_endian = "little"))]
    {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

fn wrong_contents(datatype: &str) -> ServeError {
    ServeError::Invalid(format!("{datatype} input carries contents of another datatype"))
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

fn plan_outputs(request: &InferRequest<'_>, model: &LoadedModel) -> Result<Vec<OutputPlan>, ServeError> {
    let default_binary = request.binary_output;
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
            let classification = match o.classification {
                None => None,
                Some(k) if k < 1 => {
                    return Err(ServeError::Invalid(format!(
                        "output parameter classification must be a count >= 1, got {k}"
                    )));
                }
                Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            };
            Ok(OutputPlan {
                name: o.name.clone(),
                classification,
                binary: o.binary.unwrap_or(default_binary),
            })
        })
        .collect()
}

/// One computed output.
pub struct Output<'a> {
    /// Its name.
    pub name: &'a str,
    /// Returned in binary (HTTP).
    pub binary: bool,
    /// `[N, classes]` or `[N, K]`.
    pub shape: [usize; 2],
    /// Its values.
    pub data: OutputData<'a>,
}

/// An output's values.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum OutputData<'a> {
    /// `FP32` logits.
    Floats(&'a [f32]),
    /// `BYTES` classification strings.
    Strings(Vec<String>),
}

impl OutputData<'_> {
    /// The protocol's datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            OutputData::Floats(_) => "FP32",
            OutputData::Strings(_) => "BYTES",
        }
    }

    /// The values as the binary extension and gRPC's `raw_output_contents` carry them.
    pub fn raw(&self) -> Vec<u8> {
        match self {
            OutputData::Floats(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Strings(strings) => strings
                .iter()
                .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                .collect(),
        }
    }
}

/// The planned outputs, from `rows x classes` logits.
pub fn outputs<'a>(
    model: &LoadedModel,
    plan: &'a [OutputPlan],
    logits: &'a [f32],
    classes: usize,
) -> Result<Vec<Output<'a>>, ServeError> {
    let classes = classes.max(1);
    let rows = logits.len() / classes;
    plan.iter()
        .map(|out| {
            let (shape, data) = match out.classification {
                Some(k) => {
                    let k = k.min(classes);
                    let mut strings = Vec::with_capacity(rows.saturating_mul(k));
                    for (index, row) in logits.chunks_exact(classes).enumerate() {
                        crate::http::finite(row, index)?;
                        strings.extend(top_k(row, k, model.labels()).into_iter().map(|p| match p.label {
                            Some(label) => format!("{:.6}:{}:{label}", p.score, p.index),
                            None => format!("{:.6}:{}", p.score, p.index),
                        }));
                    }
                    ([rows, k], OutputData::Strings(strings))
                }
                None => ([rows, classes], OutputData::Floats(logits)),
            };
            Ok(Output {
                name: &out.name,
                binary: out.binary,
                shape,
                data,
            })
        })
        .collect()
}

/// What a version's configuration reports (Triton's `ModelConfig`), for either transport.
pub struct ConfigFacts<'a> {
    /// The version.
    pub model: &'a LoadedModel,
    /// The input's layout is NCHW (else NHWC).
    pub nchw: bool,
    /// The GPU its sessions run on, if any.
    pub gpu: Option<u32>,
    /// Every version is loaded (else the latest).
    pub all_versions: bool,
    /// Inference threads (sessions).
    pub instances: usize,
    /// ONNX Runtime intra-op threads per session, as shown.
    pub intra_threads: String,
    /// Its batching and queue policy settings.
    pub batching: &'a engine::config::BatchingConfig,
}

impl<'a> ConfigFacts<'a> {
    /// The facts of `model` served with `options`.
    pub fn of(model: &'a LoadedModel, options: &crate::repository::LoadOptions) -> Self {
        Self {
            model,
            nchw: model.spec.layout == Layout::Nchw,
            gpu: match model.device() {
                engine::device::Device::Cpu => None,
                engine::device::Device::Cuda(n) => Some(n),
            },
            all_versions: options.versions == crate::config::VersionPolicy::All,
            instances: options.instances,
            intra_threads: match options.session.intra_threads {
                0 => "onnxruntime default".to_string(),
                n => n.to_string(),
            },
            batching: &model.artifact.config.batching,
        }
    }
}
