//! The server's one error enum. Every failure a client can see is a variant here; its HTTP
//! status, its JSON body (`{"error": "..."}`) and its metrics label are decided in this file
//! and nowhere else.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::jobs::JobError;

/// Whether the evaluator refused a job's settings or data (the client's doing) rather than
/// failing on the server's side.
fn eval_user_error(e: &eval::EvalError) -> bool {
    use eval::EvalError as E;
    matches!(
        e,
        E::NoData { .. } | E::Option { .. } | E::Dataset(_) | E::Unlabelled { .. } | E::Mismatch { .. }
    )
}

/// Anything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No model of that name is loaded.
    #[error("unknown model {0:?}")]
    ModelNotFound(String),
    /// The model is loaded, but not in the version asked for.
    #[error("model {model:?} has no loaded version {version} (loaded: {loaded:?})")]
    VersionNotFound {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
        /// The versions that are loaded.
        loaded: Vec<u64>,
    },
    /// The request is malformed: bad JSON, a wrong tensor shape or datatype, a bad parameter.
    #[error("{0}")]
    Invalid(String),
    /// An image could not be decoded or is too large.
    #[error("image {index}: {reason}")]
    BadImage {
        /// The image's position in the request.
        index: usize,
        /// The decoder's or the limit's message.
        reason: String,
    },
    /// The body is larger than the server accepts.
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit (`--max-body-bytes`).
        limit: usize,
    },
    /// The body's content type is not one this endpoint reads.
    #[error("unsupported content type {got:?}; this endpoint accepts {accepted}")]
    UnsupportedMediaType {
        /// The `Content-Type` sent.
        got: String,
        /// What the endpoint reads.
        accepted: &'static str,
    },
    /// The model's queue is full; the client should retry later.
    #[error(
        "the queue of model {model} is full (at most {capacity} requests, {images} images and {bytes} bytes of input tensors are admitted at once); retry later"
    )]
    QueueFull {
        /// The model and version.
        model: String,
        /// Its `queue_capacity`.
        capacity: usize,
        /// Its `max_queue_images`.
        images: usize,
        /// Its `max_queue_bytes`.
        bytes: usize,
    },
    /// A request waited in a model's queue past its timeout (`queue_timeout_us`, or its own
    /// `timeout` parameter) and was rejected before running.
    #[error(
        "the request waited {} ms in the queue of model {model}, past its queue timeout, and did not run; retry later",
        waited.as_millis()
    )]
    QueueTimeout {
        /// The model and version.
        model: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// One request asks for more than its share of a model's budget.
    #[error(
        "the request holds {images} images ({bytes} bytes as input tensors); model {model} takes at most {max_images} images and {max_bytes} bytes in one request: split it"
    )]
    TooManyImages {
        /// The model and version.
        model: String,
        /// Images in the request.
        images: usize,
        /// Their decoded size.
        bytes: usize,
        /// Half of `max_queue_images`.
        max_images: usize,
        /// Half of `max_queue_bytes`.
        max_bytes: usize,
    },
    /// The server holds as many request bodies as its memory budget allows.
    #[error(
        "the server is reading {held} bytes of request bodies, its limit (--max-inflight-body-bytes {limit}); retry later"
    )]
    BodiesBusy {
        /// Bytes held now, this request's included.
        held: usize,
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout {
        /// `--body-timeout-s`.
        seconds: u64,
    },
    /// The models present at start are still loading.
    #[error("model {0:?} is not available yet: the server is still loading its models")]
    Loading(String),
    /// The model cannot take requests now (it is being unloaded, or its workers stopped).
    #[error("{0}")]
    Unavailable(String),
    /// An admin endpoint was called without the right bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The admin endpoints are off because no admin token is configured.
    #[error("the model repository API is disabled: start the server with --admin-token (or HARDY_ADMIN_TOKEN)")]
    AdminDisabled,
    /// A model (re)load failed; a previously loaded version keeps serving.
    #[error("failed to load model {model:?}: {reason}")]
    LoadFailed {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A failure on the server's side (inference error, a stopped worker).
    #[error("{0}")]
    Internal(String),
    /// As many single-image robustness requests (attack, corrupt, robustness profile) run as
    /// the server allows (`--max-robustness-requests`).
    #[error(
        "the server is running {limit} attack, corruption or robustness requests, its limit (--max-robustness-requests); retry later"
    )]
    RobustnessBusy {
        /// The limit.
        limit: usize,
    },
    /// An image larger than an endpoint works on (the message says which limit).
    #[error("{0}")]
    ImageTooLarge(String),
    /// The model cannot do what was asked (an attack on a graph the gradient transform cannot
    /// differentiate).
    #[error("{0}")]
    NotSupported(String),
    /// The evaluation jobs API is off (no `--jobs-dir`).
    #[error("evaluation jobs are disabled: start the server with --jobs-dir (and --admin-token)")]
    JobsDisabled,
    /// An evaluation job request failed.
    #[error(transparent)]
    Job(#[from] crate::jobs::JobError),
}

impl ServeError {
    /// The label used for this failure in `hardy_requests_total{outcome=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ModelNotFound(_) | Self::VersionNotFound { .. } => "not_found",
            Self::Invalid(_) => "invalid_argument",
            Self::BadImage { .. } => "bad_image",
            Self::PayloadTooLarge { .. } | Self::TooManyImages { .. } => "payload_too_large",
            Self::BodiesBusy { .. } => "overloaded",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Loading(_) => "unavailable",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::QueueFull { .. } => "queue_full",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Unauthorized => "unauthorized",
            Self::AdminDisabled => "admin_disabled",
            Self::LoadFailed { .. } => "load_failed",
            Self::Internal(_) => "internal",
            Self::RobustnessBusy { .. } => "robustness_busy",
            Self::ImageTooLarge(_) => "payload_too_large",
            Self::NotSupported(_) => "not_supported",
            Self::JobsDisabled => "admin_disabled",
            Self::Job(e) => match e {
                JobError::NotFound(_) => "not_found",
                JobError::Conflict { .. } => "conflict",
                JobError::Spec(_) => "invalid_argument",
                JobError::TooLarge { .. } => "payload_too_large",
                JobError::QueueFull { .. } => "queue_full",
                JobError::Eval(e) if eval_user_error(e) => "invalid_argument",
                JobError::Eval(_) | JobError::Storage(_) => "internal",
            },
        }
    }

    /// Seconds a client should wait before retrying, for errors that say so.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(
            self,
            Self::QueueFull { .. }
                | Self::QueueTimeout { .. }
                | Self::Unavailable(_)
                | Self::BodiesBusy { .. }
                | Self::Loading(_)
                | Self::Job(JobError::QueueFull { .. })
                | Self::RobustnessBusy { .. }
        )
        .then_some(1)
    }
}

impl ResponseError for ServeError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::ModelNotFound(_) | Self::VersionNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Invalid(_) | Self::BadImage { .. } | Self::LoadFailed { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } | Self::TooManyImages { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::Unavailable(_)
            | Self::BodiesBusy { .. }
            | Self::Loading(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::AdminDisabled => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RobustnessBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ImageTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            Self::JobsDisabled => StatusCode::FORBIDDEN,
            Self::Job(e) => match e {
                JobError::NotFound(_) => StatusCode::NOT_FOUND,
                JobError::Conflict { .. } => StatusCode::CONFLICT,
                JobError::Spec(_) => StatusCode::BAD_REQUEST,
                JobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                JobError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
                JobError::Eval(e) if eval_user_error(e) => StatusCode::BAD_REQUEST,
                JobError::Eval(_) | JobError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after() {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

impl ServeError {
    /// The gRPC status code of this failure: the counterpart of its HTTP status.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self.status_code().as_u16() {
            400 | 415 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            408 => Code::DeadlineExceeded,
            409 => Code::AlreadyExists,
            413 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

/// A failure as a gRPC status: the code of [`ServeError::grpc_code`] and the same message
/// the HTTP body carries.
impl From<ServeError> for tonic::Status {
    fn from(e: ServeError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl From<engine::session::InferenceError> for ServeError {
    fn from(e: engine::session::InferenceError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let e = ServeError::QueueFull {
            model: "m:1".into(),
            capacity: 4,
            images: 8,
            bytes: 1 << 20,
        };
        let r = e.error_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get("Retry-After").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(e.reason(), "queue_full");
        assert_eq!(
            ServeError::PayloadTooLarge { limit: 5 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ServeError::ModelNotFound("x".into()).status_code(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ServeError::BadImage {
                index: 0,
                reason: "x".into()
            }
            .status_code(),
            StatusCode::BAD_REQUEST
        );
    }
}
