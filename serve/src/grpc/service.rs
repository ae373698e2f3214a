//! The RPCs of `inference.GRPCInferenceService`: each reads its message, calls what the HTTP
//! handler of the same name calls, and writes the answer as the protocol's message.
//!
//! `ModelInfer` accepts typed `contents` (`fp32_contents` for FP32, `uint_contents` for
//! UINT8, `bytes_contents` for BYTES) or `raw_input_contents` (little-endian bytes; BYTES as
//! a 4-byte length and the bytes), never both for one input, and answers in
//! `raw_output_contents`, as Triton does. The request parameters `priority` and `timeout`
//! (microseconds) set its queue policy; an output's `classification` parameter asks for the
//! top K. Timings come back as the response metadata `x-queue-time`, `x-inference-time`,
//! `x-preprocess-time` and `x-total-time` (milliseconds), as HTTP's headers.
//!
//! `ModelStreamInfer` runs the requests of a stream concurrently (at most
//! [`STREAM_IN_FLIGHT`] at once; the stream is not read further until one finishes) and
//! answers each as it completes, with its `id`; a request's failure is a response with
//! `error_message`, and the stream goes on. When the client cancels the stream, its requests
//! are withdrawn.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Instant};

use actix_web::web;
use bytes::Bytes;
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{Request, Response, Status, Streaming, codegen::tokio_stream::Stream};

use super::proto::{
    self, InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse, infer_parameter::ParameterChoice,
    model_infer_response::InferOutputTensor,
};
use crate::{
    ServeError,
    http::{AppState, Outcome, Timings, run_images, run_tensor},
    oip::{self, Input, TensorData},
    repository::LoadedModel,
};

/// Requests of one stream running at once.
pub const STREAM_IN_FLIGHT: usize = 16;

/// The service: a handle on the server's shared state.
#[derive(Clone)]
pub struct Service {
    state: web::Data<AppState>,
}

impl Service {
    /// The service over `state`.
    pub fn new(state: web::Data<AppState>) -> Self {
        Self { state }
    }

    fn model(&self, name: &str, version: &str) -> Result<Arc<LoadedModel>, ServeError> {
        self.state.model(name, (!version.is_empty()).then_some(version))
    }

    /// One inference, counted under `endpoint`, with its timings; `traceparent` continues
    /// the caller's trace.
    async fn infer(
        &self,
        request: ModelInferRequest,
        endpoint: &'static str,
        traceparent: Option<&str>,
    ) -> Result<Answer, ServeError> {
        let mut outcome = Outcome::start(&self.state, endpoint, traceparent);
        let started = Instant::now();
        let result = self.infer_counted(request, &mut outcome).await;
        let result = result.map(|(response, timings)| {
            outcome.timed(&timings);
            Answer {
                response,
                timings,
                total: started.elapsed(),
                trace_id: outcome.trace_id(),
            }
        });
        outcome.settle(result)
    }

    async fn infer_counted(
        &self,
        request: ModelInferRequest,
        outcome: &mut Outcome,
    ) -> Result<(ModelInferResponse, Timings), ServeError> {
        let state = &self.state;
        let model = self.model(&request.model_name, &request.model_version)?;
        outcome.serving(&model);
        // The decoded message is held while it is checked and converted: count it as HTTP
        // counts a body being parsed.
        let mut guard = state.bodies.guard();
        guard.reserve(prost::Message::encoded_len(&request))?;
        // tonic has read the message already: the ticket bounds the tensors converted from
        // it, not the messages.
        let ticket = model.batcher.ticket().await?;
        let m = Arc::clone(&model);
        let (plan, input) = state
            .prep
            .run(move || {
                let _counted = guard;
                oip::prepare(to_request(request)?, &m, ticket)
            })
            .await?;
        let (out, timings) = match input {
            Input::Images { images, ticket } => run_images(state, &model, ticket, images, plan.policy).await?,
            Input::Tensor {
                permit,
                tensor,
                preprocess,
            } => run_tensor(state, &model, permit, tensor, preprocess, plan.policy).await?,
        };
        let m = Arc::clone(&model);
        let response = state
            .prep
            .run(move || response(&m, plan, &out.logits, out.classes))
            .await?;
        Ok((response, timings))
    }

    fn authorise<T>(&self, request: &Request<T>) -> Result<(), ServeError> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        crate::http::check_token(&self.state, header)
    }
}

/// A finished inference and where its time went.
struct Answer {
    response: ModelInferResponse,
    timings: Timings,
    total: std::time::Duration,
    trace_id: Option<String>,
}

impl Answer {
    fn into_response(self) -> Response<ModelInferResponse> {
        let mut response = Response::new(self.response);
        let ms = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        let t = &self.timings;
        let metadata = response.metadata_mut();
        for (key, value) in [
            ("x-preprocess-time", t.preprocess),
            ("x-queue-time", t.queue),
            ("x-inference-time", t.inference),
            ("x-total-time", self.total),
        ] {
            if let Ok(v) = ms(value).parse() {
                metadata.insert(key, v);
            }
        }
        if let Some(v) = self.trace_id.and_then(|id| id.parse().ok()) {
            metadata.insert(crate::telemetry::TRACE_ID_HEADER, v);
        }
        response
    }
}

/// A call's W3C `traceparent` metadata, if any.
fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The transport-neutral request of a `ModelInferRequest`.
fn to_request(request: ModelInferRequest) -> Result<oip::InferRequest<'static>, ServeError> {
    let ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    if !raw_input_contents.is_empty() && raw_input_contents.len() != inputs.len() {
        return Err(ServeError::Invalid(format!(
            "raw_input_contents holds {} tensors for {} inputs",
            raw_input_contents.len(),
            inputs.len()
        )));
    }
    let mut raw = raw_input_contents.into_iter();
    let inputs = inputs
        .into_iter()
        .map(|input| {
            let data = match raw.next() {
                Some(bytes) => {
                    if input.contents.is_some() {
                        return Err(ServeError::Invalid(format!(
                            "input {:?} has both contents and raw_input_contents",
                            input.name
                        )));
                    }
                    TensorData::Raw(bytes)
                }
                None => contents(&input.name, &input.datatype, input.contents)?,
            };
            Ok(oip::InputTensor {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                data,
            })
        })
        .collect::<Result<Vec<_>, ServeError>>()?;
    let outputs = outputs
        .into_iter()
        .map(|o| {
            Ok(oip::RequestedOutput {
                classification: integer(&o.parameters, "classification")?,
                name: o.name,
                binary: None,
            })
        })
        .collect::<Result<Vec<_>, ServeError>>()?;
    Ok(oip::InferRequest {
        id: (!id.is_empty()).then_some(id),
        inputs,
        outputs,
        binary_output: true,
        priority: integer(&parameters, "priority")?,
        timeout_us: integer(&parameters, "timeout")?,
    })
}

/// An input's typed contents: the field its datatype uses, and no other.
fn contents(
    name: &str,
    datatype: &str,
    contents: Option<InferTensorContents>,
) -> Result<TensorData<'static>, ServeError> {
    let Some(c) = contents else {
        return Err(ServeError::Invalid(format!(
            "input {name:?} has neither contents nor raw_input_contents"
        )));
    };
    let held = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    let (field, data) = match datatype {
        "FP32" => ("fp32_contents", TensorData::Fp32(c.fp32_contents)),
        "UINT8" => ("uint_contents", TensorData::Uint(c.uint_contents)),
        "BYTES" => ("bytes_contents", TensorData::Elements(c.bytes_contents)),
        // the datatype itself is refused, with the HTTP message, by `oip::prepare`
        _ => return Ok(TensorData::Elements(Vec::new())),
    };
    if let Some((other, n)) = held.iter().find(|(f, n)| *n > 0 && *f != field) {
        return Err(ServeError::Invalid(format!(
            "input {name:?} is {datatype}, whose values go in contents.{field}, but it sends {n} values in contents.{other}"
        )));
    }
    Ok(data)
}

/// An integer parameter (`int64_param` or `uint64_param`), if present.
fn integer(parameters: &HashMap<String, InferParameter>, key: &str) -> Result<Option<i128>, ServeError> {
    match parameters.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(n)) => Ok(Some(i128::from(*n))),
        Some(ParameterChoice::Uint64Param(n)) => Ok(Some(i128::from(*n))),
        Some(_) => Err(ServeError::Invalid(format!(
            "parameter {key:?} must be an integer (int64_param or uint64_param)"
        ))),
    }
}

/// The protocol's response: every output in `raw_output_contents`.
fn response(
    model: &LoadedModel,
    plan: oip::Plan,
    logits: &[f32],
    classes: usize,
) -> Result<ModelInferResponse, ServeError> {
    let outputs = oip::outputs(model, &plan.outputs, logits, classes)?;
    Ok(ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id: plan.id.unwrap_or_default(),
        parameters: HashMap::new(),
        outputs: outputs
            .iter()
            .map(|o| InferOutputTensor {
                name: o.name.to_string(),
                datatype: o.data.datatype().to_string(),
                shape: o.shape.iter().map(|&d| d as i64).collect(),
                parameters: HashMap::new(),
                contents: None,
            })
            .collect(),
        raw_output_contents: outputs.iter().map(|o| Bytes::from(o.data.raw())).collect(),
    })
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::grpc_inference_service_server::GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        // As Triton: an unknown or unloaded model is not ready, not an error.
        let ready = self.model(&r.name, &r.version).is_ok();
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: crate::http::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::http::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        use proto::model_metadata_response::TensorMetadata;
        let r = request.into_inner();
        let model = self.model(&r.name, &r.version)?;
        let sig = &model.signature;
        Ok(Response::new(proto::ModelMetadataResponse {
            name: model.name.clone(),
            versions: self
                .state
                .repo
                .versions(&model.name)
                .iter()
                .map(u64::to_string)
                .collect(),
            platform: "onnxruntime_onnx".into(),
            inputs: vec![TensorMetadata {
                name: sig.input_name.clone(),
                datatype: "FP32".into(),
                shape: oip::input_shape(&model),
            }],
            outputs: vec![TensorMetadata {
                name: sig.output_name.clone(),
                datatype: "FP32".into(),
                shape: vec![-1, sig.classes as i64],
            }],
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let traceparent = traceparent(&request);
        let answer = self
            .infer(request.into_inner(), "grpc_infer", traceparent.as_deref())
            .await?;
        Ok(answer.into_response())
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let traceparent = traceparent(&request);
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<proto::ModelStreamInferResponse, Status>>(STREAM_IN_FLIGHT);
        let service = self.clone();
        tokio::spawn(async move {
            let mut running: JoinSet<proto::ModelStreamInferResponse> = JoinSet::new();
            let mut reading = true;
            // Until the client has sent its last request and every answer has been sent.
            while reading || !running.is_empty() {
                tokio::select! {
                    // The client went away: dropping the calls withdraws their requests.
                    _ = tx.closed() => break,
                    next = incoming.message(), if reading && running.len() < STREAM_IN_FLIGHT => match next {
                        Ok(Some(request)) => {
                            let (service, traceparent) = (service.clone(), traceparent.clone());
                            running.spawn(async move {
                                let id = request.id.clone();
                                match service.infer(request, "grpc_stream_infer", traceparent.as_deref()).await {
                                    Ok(answer) => proto::ModelStreamInferResponse {
                                        error_message: String::new(),
                                        infer_response: Some(answer.response),
                                    },
                                    Err(e) => proto::ModelStreamInferResponse {
                                        error_message: e.to_string(),
                                        infer_response: Some(ModelInferResponse { id, ..Default::default() }),
                                    },
                                }
                            });
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    },
                    Some(done) = running.join_next(), if !running.is_empty() => {
                        let message = done.map_err(|e| Status::internal(format!("stream request failed: {e}")));
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
            running.abort_all();
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn model_config(
        &self,
        request: Request<proto::ModelConfigRequest>,
    ) -> Result<Response<proto::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let model = self.model(&r.name, &r.version)?;
        let facts = oip::ConfigFacts::of(&model, self.state.repo.options());
        Ok(Response::new(proto::ModelConfigResponse {
            config: Some(model_config(&facts)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<proto::ModelStatisticsRequest>,
    ) -> Result<Response<proto::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let mut versions = if r.name.is_empty() {
            self.state.repo.loaded()
        } else if r.version.is_empty() {
            self.model(&r.name, "")?;
            self.state
                .repo
                .loaded()
                .into_iter()
                .filter(|m| m.name == r.name)
                .collect()
        } else {
            vec![self.model(&r.name, &r.version)?]
        };
        versions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        let model_stats = versions
            .iter()
            .map(|m| statistics(&crate::stats::lock(m.batcher.stats()), &m.name, &m.version.to_string()))
            .collect();
        Ok(Response::new(proto::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<proto::RepositoryIndexRequest>,
    ) -> Result<Response<proto::RepositoryIndexResponse>, Status> {
        use proto::repository_index_response::ModelIndex;
        self.authorise(&request)?;
        let ready_only = request.into_inner().ready;
        let models = self
            .state
            .repo
            .index()
            .into_iter()
            .filter(|e| !ready_only || e.state == "READY")
            .map(|e| ModelIndex {
                name: e.name,
                version: e.version.unwrap_or_default(),
                state: e.state.to_string(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<proto::RepositoryModelLoadRequest>,
    ) -> Result<Response<proto::RepositoryModelLoadResponse>, Status> {
        self.authorise(&request)?;
        let name = request.into_inner().model_name;
        let repo = Arc::clone(&self.state.repo);
        // Loading builds sessions and warms them up: blocking work, off the async threads.
        tokio::task::spawn_blocking(move || repo.load(&name))
            .await
            .map_err(|e| ServeError::Internal(format!("load task failed: {e}")))??;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<proto::RepositoryModelUnloadRequest>,
    ) -> Result<Response<proto::RepositoryModelUnloadResponse>, Status> {
        self.authorise(&request)?;
        self.state.repo.unload(&request.into_inner().model_name)?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }
}

/// Triton's `ModelConfig` message of a version.
fn model_config(facts: &oip::ConfigFacts<'_>) -> proto::ModelConfig {
    use proto::{model_config::SchedulingChoice, model_version_policy::PolicyChoice};
    let (model, b) = (facts.model, facts.batching);
    let sig = &model.signature;
    let format = if facts.nchw {
        proto::model_input::Format::Nchw
    } else {
        proto::model_input::Format::Nhwc
    };
    let (kind, gpus) = match facts.gpu {
        None => (proto::model_instance_group::Kind::Cpu, vec![]),
        Some(n) => (
            proto::model_instance_group::Kind::Gpu,
            vec![i32::try_from(n).unwrap_or(i32::MAX)],
        ),
    };
    let parameter = |v: String| proto::ModelParameter { string_value: v };
    proto::ModelConfig {
        name: model.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(proto::ModelVersionPolicy {
            policy_choice: Some(if facts.all_versions {
                PolicyChoice::All(proto::model_version_policy::All {})
            } else {
                PolicyChoice::Latest(proto::model_version_policy::Latest { num_versions: 1 })
            }),
        }),
        max_batch_size: i32::try_from(model.max_batch).unwrap_or(i32::MAX),
        input: vec![proto::ModelInput {
            name: sig.input_name.clone(),
            data_type: proto::DataType::TypeFp32 as i32,
            format: format as i32,
            dims: sig.image_dims.iter().map(|&d| d as i64).collect(),
        }],
        output: vec![proto::ModelOutput {
            name: sig.output_name.clone(),
            data_type: proto::DataType::TypeFp32 as i32,
            dims: vec![sig.classes as i64],
        }],
        instance_group: vec![proto::ModelInstanceGroup {
            name: format!("{}_0", model.name),
            kind: kind as i32,
            count: i32::try_from(facts.instances).unwrap_or(i32::MAX),
            gpus,
        }],
        scheduling_choice: Some(SchedulingChoice::DynamicBatching(proto::ModelDynamicBatching {
            max_queue_delay_microseconds: b.max_queue_delay_us,
            priority_levels: u64::from(b.priority_levels),
            default_priority_level: u64::from(b.default_priority_level),
            default_queue_policy: Some(proto::ModelQueuePolicy {
                timeout_action: proto::model_queue_policy::TimeoutAction::Reject as i32,
                default_timeout_microseconds: b.queue_timeout_us,
                allow_timeout_override: true,
                max_queue_size: u32::try_from(b.queue_capacity).unwrap_or(u32::MAX),
            }),
        })),
        parameters: HashMap::from([
            ("version".to_string(), parameter(model.version.to_string())),
            ("labels".to_string(), parameter(model.labels().len().to_string())),
            ("intra_op_threads".to_string(), parameter(facts.intra_threads.clone())),
            (
                "priority_aging_us".to_string(),
                parameter(b.priority_aging_us.to_string()),
            ),
        ]),
    }
}

/// Triton's `ModelStatistics` message of a version ([`crate::stats`]).
fn statistics(s: &crate::stats::VersionStats, name: &str, version: &str) -> proto::ModelStatistics {
    let d = |c: &crate::stats::Cumulative| {
        Some(proto::StatisticDuration {
            count: c.count,
            ns: c.ns,
        })
    };
    let none = crate::stats::Cumulative::default();
    proto::ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(proto::InferStatistics {
            success: d(&s.success),
            fail: d(&s.fail),
            queue: d(&s.queue),
            compute_input: d(&s.compute_input),
            compute_infer: d(&s.compute_infer),
            compute_output: d(&s.compute_output),
            cache_hit: d(&none),
            cache_miss: d(&none),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(&size, c)| proto::InferBatchStatistics {
                batch_size: size as u64,
                compute_input: d(&none),
                compute_infer: d(c),
                compute_output: d(&none),
            })
            .collect(),
    }
}
