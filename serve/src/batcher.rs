//! Dynamic batching: one actor per loaded model version.
//!
//! A [`Batcher`] is a cheap handle (a channel sender and an admission counter); its thread
//! owns the queue. Requests arrive already preprocessed (`images` rows of `image_len`
//! values). The thread forms a batch when an inference worker is free and either
//! `max_batch_size` images are waiting or the oldest request has waited `max_queue_delay`
//! (so at light load a request waits at most that long, and under load batches fill while
//! the workers are busy). Requests are merged into one session run and split across runs
//! when larger than `max_batch_size`: a client batch is never capped. A worker fans the
//! run's rows back to the requests it served.
//!
//! Admission is separate from queueing: a request takes a [`Permit`] before it is
//! preprocessed and holds it until its last image starts running. When `queue_capacity`
//! permits are out, [`Batcher::admit`] fails at once (HTTP 503). A request whose client went
//! away (its reply receiver dropped) is removed before its images are batched.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, select};
use engine::{config::BatchingConfig, pool::InferencePool, session::Logits};
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

use crate::{ServeError, metrics::Metrics};

/// What a request gets back: its logits and where its time went.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// `images x classes` logits, row-major, in the request's order.
    pub logits: Vec<f32>,
    /// Logits per image.
    pub classes: usize,
    /// From entering the batcher until its last image started running.
    pub queue: Duration,
    /// Time of the session runs it took part in (summed when it spanned several).
    pub inference: Duration,
    /// Session runs it took part in.
    pub batches: usize,
}

/// The reply channel a submitted request waits on.
pub type Reply = oneshot::Receiver<Result<BatchOutput, ServeError>>;

/// Handle to one model version's batcher. Dropping the last handle lets the thread finish
/// the queued requests and stop, which stops the inference workers.
pub struct Batcher {
    requests: Sender<Request>,
    admission: Arc<Admission>,
    image_len: usize,
    stats: crate::stats::VersionHandle,
}

struct Admission {
    used: Mutex<Usage>,
    limits: Usage,
    image_bytes: usize,
    depth: IntGauge,
    depth_images: IntGauge,
    label: String,
}

/// What admitted requests hold, or what a model allows.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    requests: usize,
    images: usize,
    bytes: usize,
}

/// A place in a model's queue, taken before preprocessing and released when the request's
/// last image starts running (or when the request and every piece of work on it are
/// dropped). It holds the request's cost: one request, its images, and their decoded bytes.
pub struct Permit {
    admission: Arc<Admission>,
    images: usize,
    bytes: usize,
}

impl Permit {
    /// Images this permit admits.
    pub fn images(&self) -> usize {
        self.images
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut used = a.used.lock().unwrap_or_else(|p| p.into_inner());
        used.requests -= 1;
        used.images -= self.images;
        used.bytes -= self.bytes;
        a.depth.dec();
        a.depth_images.sub(self.images as i64);
    }
}

struct Request {
    shared: Arc<Mutex<Shared>>,
    input: Vec<f32>,
    images: usize,
    next: usize,
    enqueued: Instant,
    _permit: Permit,
}

struct Shared {
    reply: Option<oneshot::Sender<Result<BatchOutput, ServeError>>>,
    output: BatchOutput,
    remaining: usize,
}

impl Shared {
    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|r| r.is_closed())
    }

    fn fill(&mut self, rows: &[f32], first_row: usize, inference: Duration) {
        if self.reply.is_none() {
            return;
        }
        let classes = self.output.classes;
        let start = first_row * classes;
        self.output.logits[start..start + rows.len()].copy_from_slice(rows);
        self.output.inference += inference;
        self.output.batches += 1;
        self.remaining -= rows.len() / classes.max(1);
        if self.remaining == 0
            && let Some(reply) = self.reply.take()
        {
            let _ = reply.send(Ok(std::mem::replace(
                &mut self.output,
                BatchOutput {
                    logits: Vec::new(),
                    classes,
                    queue: Duration::ZERO,
                    inference: Duration::ZERO,
                    batches: 0,
                },
            )));
        }
    }

    fn fail(&mut self, error: ServeError) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// Per-version metric handles, resolved once.
#[derive(Clone)]
struct BatchMetrics {
    images: IntCounter,
    batches: IntCounter,
    batch_size: Histogram,
    queue_time: Histogram,
    inference_time: Histogram,
    stats: crate::stats::VersionHandle,
}

impl Batcher {
    /// Starts the batcher thread for `pool`. `label` is `(model, version)` for metrics and
    /// errors.
    pub fn start(pool: InferencePool, batching: &BatchingConfig, metrics: &Metrics, label: (&str, &str)) -> Self {
        let mv = [label.0, label.1];
        let bm = BatchMetrics {
            images: metrics.images.with_label_values(&mv),
            batches: metrics.batches.with_label_values(&mv),
            batch_size: metrics.batch_size.with_label_values(&mv),
            queue_time: metrics.queue_time.with_label_values(&mv),
            inference_time: metrics.inference_time.with_label_values(&mv),
            stats: crate::stats::VersionHandle::default(),
        };
        let stats = Arc::clone(&bm.stats);
        let image_len = pool.image_len();
        let admission = Arc::new(Admission {
            used: Mutex::new(Usage::default()),
            limits: Usage {
                requests: batching.queue_capacity,
                images: batching.max_queue_images,
                bytes: batching.max_queue_bytes,
            },
            image_bytes: image_len.saturating_mul(std::mem::size_of::<f32>()),
            depth: metrics.queue_depth.with_label_values(&mv),
            depth_images: metrics.queue_images.with_label_values(&mv),
            label: format!("{}:{}", label.0, label.1),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let settings = Settings {
            max_batch: pool.max_batch(),
            max_delay: Duration::from_micros(batching.max_queue_delay_us),
        };
        let name = format!("batch-{}", admission.label);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(pool, rx, settings, bm));
        if let Err(e) = spawned {
            // Without its thread the channel is closed, and every submit answers 503.
            tracing::error!(model = %admission.label, "cannot start the batcher thread: {e}");
        }
        Self {
            requests: tx,
            admission,
            image_len,
            stats,
        }
    }

    /// The version's figures for Triton's statistics extension (fresh with each load).
    pub fn stats(&self) -> &crate::stats::VersionHandle {
        &self.stats
    }

    /// Takes a place in the queue for a request of `images` images, or fails at once: 413
    /// when the request alone is more than half of the model's image or byte budget, 503
    /// when `queue_capacity` requests or the budget are taken by others.
    pub fn admit(&self, images: usize) -> Result<Permit, ServeError> {
        let a = &self.admission;
        let bytes = self.check_size(images)?;
        let mut used = a.used.lock().unwrap_or_else(|p| p.into_inner());
        let fits = used.requests < a.limits.requests
            && used.images + images <= a.limits.images
            && used.bytes + bytes <= a.limits.bytes;
        if !fits {
            return Err(ServeError::QueueFull {
                model: a.label.clone(),
                capacity: a.limits.requests,
                images: a.limits.images,
                bytes: a.limits.bytes,
            });
        }
        used.requests += 1;
        used.images += images;
        used.bytes += bytes;
        drop(used);
        a.depth.inc();
        a.depth_images.add(images as i64);
        Ok(Permit {
            admission: Arc::clone(a),
            images,
            bytes,
        })
    }

    /// The decoded size of a request of `images` images, or 413 when it is more than half
    /// of the model's image or byte budget (so at least two such requests always fit).
    pub fn check_size(&self, images: usize) -> Result<usize, ServeError> {
        let a = &self.admission;
        let bytes = images.saturating_mul(a.image_bytes);
        let (max_images, max_bytes) = (a.limits.images / 2, a.limits.bytes / 2);
        if images > max_images || bytes > max_bytes {
            return Err(ServeError::TooManyImages {
                model: a.label.clone(),
                images,
                bytes,
                max_images,
                max_bytes,
            });
        }
        Ok(bytes)
    }

    /// Queues `images` preprocessed images laid out back to back in `input`.
    pub fn submit(&self, permit: Permit, input: Vec<f32>, classes: usize) -> Result<Reply, ServeError> {
        let images = permit.images;
        if images == 0 || Some(input.len()) != images.checked_mul(self.image_len) {
            return Err(ServeError::Internal(format!(
                "batcher got {} values for {images} image(s) of {} values",
                input.len(),
                self.image_len
            )));
        }
        let (reply, rx) = oneshot::channel();
        let request = Request {
            shared: Arc::new(Mutex::new(Shared {
                reply: Some(reply),
                output: BatchOutput {
                    logits: vec![0.0; images.saturating_mul(classes)],
                    classes,
                    queue: Duration::ZERO,
                    inference: Duration::ZERO,
                    batches: 0,
                },
                remaining: images,
            })),
            input,
            images,
            next: 0,
            enqueued: Instant::now(),
            _permit: permit,
        };
        self.requests
            .send(request)
            .map_err(|_| ServeError::Unavailable(format!("model {} is shutting down", self.admission.label)))?;
        Ok(rx)
    }
}

#[derive(Clone, Copy)]
struct Settings {
    max_batch: usize,
    max_delay: Duration,
}

fn run(pool: InferencePool, requests: Receiver<Request>, settings: Settings, metrics: BatchMetrics) {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
    let never = crossbeam_channel::never::<Request>();
    let workers = pool.workers();
    let image_len = pool.image_len();
    let classes = pool.classes();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut queued_images = 0usize;
    let mut in_flight = 0usize;
    let mut open = true;
    loop {
        // Forget requests whose client went away, wherever they are in the queue.
        queue.retain(|r| {
            let gone = lock(&r.shared).cancelled();
            if gone {
                queued_images -= r.images - r.next;
            }
            !gone
        });
        if !open && queue.is_empty() && in_flight == 0 {
            break;
        }
        let now = Instant::now();
        let deadline = queue.front().map(|r| r.enqueued + settings.max_delay);
        let due = queued_images >= settings.max_batch || !open || deadline.is_some_and(|d| now >= d);
        if in_flight < workers && !queue.is_empty() && due {
            let batch = form_batch(&mut queue, &mut queued_images, settings.max_batch, image_len);
            in_flight += 1;
            submit(&pool, batch, classes, &metrics, done_tx.clone());
            continue;
        }
        let incoming = if open { &requests } else { &never };
        let wait = match deadline {
            Some(d) if in_flight < workers => Some(d.saturating_duration_since(now)),
            _ => None,
        };
        let mut on_request = |msg: Result<Request, _>| match msg {
            Ok(r) => {
                queued_images += r.images;
                queue.push_back(r);
            }
            Err(_) => open = false,
        };
        match wait {
            Some(timeout) => select! {
                recv(incoming) -> msg => on_request(msg),
                recv(done_rx) -> _ => in_flight -= 1,
                default(timeout) => {}
            },
            None => select! {
                recv(incoming) -> msg => on_request(msg),
                recv(done_rx) -> _ => in_flight -= 1,
            },
        }
    }
}

struct Batch {
    input: Vec<f32>,
    images: usize,
    /// `(request, its first row in this batch's output, rows)`.
    segments: Vec<(Arc<Mutex<Shared>>, usize, usize)>,
    started: Instant,
    queue_times: Vec<Duration>,
}

fn form_batch(queue: &mut VecDeque<Request>, queued: &mut usize, max_batch: usize, image_len: usize) -> Batch {
    let started = Instant::now();
    let mut batch = Batch {
        input: Vec::new(),
        images: 0,
        segments: Vec::new(),
        started,
        queue_times: Vec::new(),
    };
    while batch.images < max_batch {
        let Some(front) = queue.front_mut() else { break };
        let take = (max_batch - batch.images).min(front.images - front.next);
        let rest = (max_batch - batch.images).min(*queued) - take;
        if batch.images == 0 && front.next == 0 && take == front.images {
            // A whole request opens the batch: hand its buffer over instead of copying it
            // (one copy fewer of what can be tens of megabytes). Room for the rest is only
            // made when other requests wait to join.
            batch.input = std::mem::take(&mut front.input);
            batch.input.reserve_exact(rest * image_len);
        } else {
            if batch.input.capacity() == 0 {
                batch.input.reserve_exact((take + rest) * image_len);
            }
            batch
                .input
                .extend_from_slice(&front.input[front.next * image_len..(front.next + take) * image_len]);
        }
        batch.segments.push((Arc::clone(&front.shared), front.next, take));
        front.next += take;
        batch.images += take;
        *queued -= take;
        if front.next == front.images
            && let Some(done) = queue.pop_front()
        {
            let waited = started.saturating_duration_since(done.enqueued);
            lock(&done.shared).output.queue = waited;
            batch.queue_times.push(waited);
            // Dropping the request releases its permit: it no longer waits.
        }
    }
    // A request larger than one batch goes to the back after each batch, so the requests
    // behind it take turns with it instead of waiting for all of its images.
    if queue.front().is_some_and(|r| r.next > 0)
        && let Some(partial) = queue.pop_front()
    {
        queue.push_back(partial);
    }
    batch
}

fn submit(pool: &InferencePool, batch: Batch, classes: usize, metrics: &BatchMetrics, done: Sender<()>) {
    for q in &batch.queue_times {
        metrics.queue_time.observe(q.as_secs_f64());
    }
    metrics.batches.inc();
    metrics.images.inc_by(batch.images as u64);
    metrics.batch_size.observe(batch.images as f64);
    let inference_time = metrics.inference_time.clone();
    let stats = Arc::clone(&metrics.stats);
    let (segments, started, images) = (batch.segments, batch.started, batch.images);
    pool.submit_with(
        batch.input,
        batch.images,
        Box::new(move |result: Result<Logits, _>| {
            let elapsed = started.elapsed();
            inference_time.observe(elapsed.as_secs_f64());
            crate::stats::lock(&stats).executed(images, elapsed);
            match result {
                Ok(logits) => {
                    let mut row = 0;
                    for (shared, first, rows) in &segments {
                        let values = &logits.data[row * classes..(row + rows) * classes];
                        lock(shared).fill(values, *first, elapsed);
                        row += rows;
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (shared, _, _) in &segments {
                        lock(shared).fail(ServeError::Internal(message.clone()));
                    }
                }
            }
            let _ = done.send(());
        }),
    );
}

/// Locks a request's state; a poisoned lock (a panic elsewhere) still holds usable data.
fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}
