//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (KServe's
//! `grpc_predict_v2.proto` with Triton's extensions), on its own port (8001 by default), for
//! tritonclient[grpc], KServe's clients and Triton's perf tools.
//!
//! The RPCs ([`service`]) share everything behind HTTP's handlers: the model repository, the
//! batchers with their admission limits and queue policy, the preprocessing pool, the
//! metrics and the statistics extension; requests are checked by the same code
//! ([`crate::oip`]), so both transports accept the same tensors and fail with the same
//! messages (gRPC status codes in place of HTTP statuses, [`crate::ServeError::grpc_code`]).
//!
//! Limits of the transport itself, the counterparts of HTTP's:
//! - one message at most `max_body_bytes` (RESOURCE_EXHAUSTED);
//! - request bodies counted against the server-wide body budget while they arrive
//!   (UNAVAILABLE when it is full), and due within `body_timeout_s` (DEADLINE_EXCEEDED);
//! - at most `max_connections` connections (more wait in the listen backlog), 64 concurrent
//!   streams per connection, 1 MiB flow-control windows, so an unread stream holds little;
//! - a client's deadline (`grpc-timeout`) or cancellation drops the call, which withdraws the
//!   request wherever it is, as a closed HTTP connection does.
//!
//! The server runs on its own Tokio runtime (actix has its own), started and stopped with the
//! HTTP server: on SIGTERM or SIGINT it stops accepting and answers the calls in flight.

pub mod service;

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::Status;

use crate::{
    ServeError,
    http::{AppState, BodyBudget, BodyGuard},
};

/// The generated protocol types, client and server (`proto/grpc_service.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");

    /// The compiled `.proto` (a `FileDescriptorSet`), for tests that compare it with other
    /// implementations of the protocol.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/grpc_service.bin"));
}

/// Concurrent streams (calls) per connection.
const STREAMS_PER_CONNECTION: u32 = 64;
/// HTTP/2 flow-control window per stream and per connection: what a client may send before
/// the server reads it.
const WINDOW_BYTES: u32 = 1 << 20;

/// The gRPC server's settings.
pub struct GrpcSettings {
    /// The bound listener.
    pub listener: std::net::TcpListener,
    /// Worker threads of its runtime.
    pub threads: usize,
    /// Connections at once.
    pub max_connections: usize,
    /// Seconds to finish the calls in flight once told to stop.
    pub shutdown_timeout: Duration,
}

/// A running gRPC server: stop it with [`GrpcServer::stop`].
pub struct GrpcServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    /// Starts serving on `settings.listener` with `state`. It stops on SIGTERM/SIGINT, or
    /// when [`GrpcServer::stop`] is called.
    pub fn start(state: actix_web::web::Data<AppState>, settings: GrpcSettings) -> Result<Self, ServeError> {
        let addr = settings
            .listener
            .local_addr()
            .map_err(|e| ServeError::Internal(format!("gRPC listener: {e}")))?;
        settings
            .listener
            .set_nonblocking(true)
            .map_err(|e| ServeError::Internal(format!("gRPC listener: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads.max(1))
            .thread_name("grpc")
            .enable_all()
            .build()
            .map_err(|e| ServeError::Internal(format!("cannot start the gRPC runtime: {e}")))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || {
                runtime.block_on(serve(state, settings, addr, stop_rx));
                // Calls still running after the drain are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| ServeError::Internal(format!("cannot start the gRPC thread: {e}")))?;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops accepting, waits for the calls in flight (up to the shutdown timeout) and
    /// returns when the server has stopped.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the gRPC server thread panicked");
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    state: actix_web::web::Data<AppState>,
    settings: GrpcSettings,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(settings.listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("gRPC listener on {addr}: {e}");
            return;
        }
    };
    let budget = BudgetLayer {
        bodies: Arc::clone(&state.bodies),
        deadline: state.body_timeout,
    };
    let max_message = state.max_body_bytes;
    let service = proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(service::Service::new(state))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    let incoming = accept(listener, Arc::new(Semaphore::new(settings.max_connections.max(1))));
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = stop => {}
            _ = terminated() => {}
        }
        tracing::info!("gRPC: stopping; answering the calls in flight");
        let _ = drain_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .layer(budget)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal);
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => {
            if let Err(e) = result {
                tracing::error!("gRPC server on {addr} failed: {e}");
            }
        }
        // After the stop signal, the drain gets the shutdown timeout.
        _ = async {
            let _ = drain_rx.await;
            tokio::time::sleep(settings.shutdown_timeout).await;
        } => tracing::warn!("gRPC: calls still running after the shutdown timeout are dropped"),
    }
}

/// Resolves on SIGTERM or SIGINT (never, where they cannot be listened for).
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Accepted connections, at most `limit`'s permits at once: while all are taken, the
/// listener is not polled and new connections wait in the backlog.
fn accept(
    listener: tokio::net::TcpListener,
    limit: Arc<Semaphore>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = Result<Connection, std::io::Error>> {
    futures_util::stream::unfold((listener, limit), |(listener, limit)| async move {
        let permit = Arc::clone(&limit).acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Connection {
                        stream,
                        _permit: permit,
                    };
                    return Some((Ok(conn), (listener, limit)));
                }
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!("gRPC accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// An accepted connection holding its place under the connection limit.
pub struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts unary request bodies against the server's body budget while they arrive, and
/// fails them when they do not arrive in time. Streams (ModelStreamInfer) are bounded by
/// flow control and by their calls in flight instead.
#[derive(Clone)]
struct BudgetLayer {
    bodies: Arc<BodyBudget>,
    deadline: Duration,
}

impl<S> tower_layer::Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct BudgetService<S> {
    inner: S,
    layer: BudgetLayer,
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for BudgetService<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().ends_with("/ModelStreamInfer") {
            return self.inner.call(request);
        }
        let (parts, body) = request.into_parts();
        let body = tonic::body::Body::new(BudgetedBody {
            inner: body,
            guard: self.layer.bodies.guard(),
            received: 0,
            deadline: Box::pin(tokio::time::sleep(self.layer.deadline)),
            seconds: self.layer.deadline.as_secs(),
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

struct BudgetedBody {
    inner: tonic::body::Body,
    guard: BodyGuard,
    received: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    seconds: u64,
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len());
                    if let Err(e) = this.guard.reserve(this.received) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let late = ServeError::BodyTimeout { seconds: this.seconds };
                    return Poll::Ready(Some(Err(late.into())));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
