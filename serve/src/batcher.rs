//! Dynamic batching: one actor per loaded model version.
//!
//! A [`Batcher`] is a cheap handle (a channel sender and an admission counter); its thread
//! owns the queue. Requests arrive already preprocessed (`images` rows of `image_len`
//! values). With the default `max_queue_delay_us` of 0 (Triton's and TEI's way), a request
//! that finds an inference worker free runs at once, alone or with whatever arrived with
//! it, and never waits for company; requests that arrive while every worker is busy wait
//! and go together, up to `max_batch_size` images, to the next worker that frees up. So
//! batches grow with the load, and only with the load. A positive `max_queue_delay_us`
//! (for accelerators, where a fuller batch costs little more than a lone image) holds a
//! batch until `max_batch_size` images wait or the oldest has waited that long. Requests
//! are merged into one session run and split across runs when larger than
//! `max_batch_size`: a client batch is never capped. A worker fans the run's rows back to
//! the requests it served.
//!
//! Admission is separate from queueing, and comes in two steps. First a request waits for a
//! [`Ticket`], before its body is read: a model version has `2 x workers x max_batch_size`
//! tickets, enough for every worker to find a full batch waiting when it frees up, and the
//! requests beyond them wait unread (their bytes stay in the kernel's socket buffers, not in
//! the server's memory). So memory under load follows the model's batch, not the number of
//! clients. A ticket held by a body still arriving after [`READ_GRACE`] is given back while
//! the rest arrives and taken again after it, so slow clients cannot hold a model's tickets.
//! Then, with its body read, the request takes a [`Permit`] for its images before they are
//! preprocessed. It holds its ticket until its first image starts running (so a request
//! larger than a batch lets others in while its images take turns with theirs), and its
//! permit until its last one does. When `queue_capacity` permits or the image or byte
//! budgets are out, [`Batcher::admit`] fails at once (HTTP 503). Tickets are given in
//! arrival order; priority levels order the requests that hold one.
//!
//! The queue policy (Triton's `default_queue_policy` and priorities): each request carries a
//! [`QueuePolicy`], its priority level (1 is the highest) and its queue timeout. Batches are
//! filled highest level first, and in arrival order within a level; waiting
//! `priority_aging_us` raises a request one level, so a low level is delayed, never starved.
//! A request still waiting at its deadline is rejected (503) and counted in
//! `hardy_queue_withdrawn_total{reason="timeout"}`; deadlines are checked while the thread
//! waits, not only when an inference thread frees up. A request whose client went away (its
//! [`Reply`] dropped, which wakes the thread) is withdrawn before its images run
//! (`reason="cancelled"`); images already in a session run finish, and their rows are
//! dropped.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::Poll,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, select};
use engine::{config::BatchingConfig, pool::InferencePool, session::Logits};
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{ServeError, metrics::Metrics};

/// How long a request may hold its [`Ticket`] while its body arrives. A body on loopback or a
/// fast network arrives well within it; a slower one gives its ticket back until it is
/// complete, so a few connections that send slowly cannot keep a model's tickets from others.
pub const READ_GRACE: Duration = Duration::from_millis(200);

/// What a request gets back: its logits and where its time went.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// `images x classes` logits, row-major, in the request's order.
    pub logits: Vec<f32>,
    /// Logits per image.
    pub classes: usize,
    /// Waiting for its ticket, then from entering the batcher until its last image started
    /// running.
    pub queue: Duration,
    /// Time of the session runs it took part in (summed when it spanned several).
    pub inference: Duration,
    /// Session runs it took part in.
    pub batches: usize,
    /// Images in the last session run it took part in.
    pub batch_images: usize,
    /// ONNX Runtime's run time of that last session run.
    pub run: Duration,
}

/// What a submitted request waits on. Dropping it before it resolves withdraws the request:
/// the batcher thread is woken and removes it from the queue if its images have not run.
pub struct Reply {
    rx: oneshot::Receiver<Result<BatchOutput, ServeError>>,
    wake: Sender<Msg>,
    resolved: bool,
}

impl Future for Reply {
    type Output = Result<BatchOutput, ServeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        polled.map(|r| {
            self.resolved = true;
            r.map_err(|_| ServeError::Internal("the batcher dropped the request".into()))
                .and_then(|r| r)
        })
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.resolved {
            // Closed first, so the thread sees the request as withdrawn when it wakes.
            self.rx.close();
            let _ = self.wake.send(Msg::Withdrawn);
        }
    }
}

/// How one request waits in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Its priority level: 1 is the highest.
    pub level: u32,
    /// How long it may wait in the queue before it is rejected; `None`: without limit.
    pub timeout: Option<Duration>,
}

/// A model version's queue policy settings (from its `[batching]` config).
#[derive(Debug, Clone, Copy)]
struct PolicySettings {
    levels: u32,
    default_level: u32,
    default_timeout: Option<Duration>,
}

/// What the batcher thread receives.
enum Msg {
    /// A request to queue.
    Request(Request),
    /// A client withdrew a request: look through the queue.
    Withdrawn,
}

/// Handle to one model version's batcher. Dropping the last handle lets the thread finish
/// the queued requests and stop, which stops the inference workers.
pub struct Batcher {
    requests: Sender<Msg>,
    admission: Arc<Admission>,
    image_len: usize,
    stats: crate::stats::VersionHandle,
    policy: PolicySettings,
}

struct Admission {
    used: Mutex<Usage>,
    limits: Usage,
    image_bytes: usize,
    /// The model's tickets: `2 x workers x max_batch` (see the module comment).
    tickets: Arc<Semaphore>,
    depth: IntGauge,
    depth_images: IntGauge,
    /// Requests waiting for a ticket.
    waiting: IntGauge,
    /// Requests that waited past their queue timeout (for a ticket, here).
    timed_out: IntCounter,
    label: String,
}

/// What admitted requests hold, or what a model allows.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    requests: usize,
    images: usize,
    bytes: usize,
}

/// A request's ticket to bring its data in: taken before its body is read (or, where the
/// transport has already read it, before it is converted), and held by its [`Permit`] until
/// its first image starts running. See the module comment.
pub struct Ticket {
    admission: Arc<Admission>,
    /// `None` while given back during a slow read.
    slot: Option<OwnedSemaphorePermit>,
    /// Time spent waiting for it: part of the request's queue time.
    waited: Duration,
    /// The request's queue timeout, for each wait.
    timeout: Option<Duration>,
}

impl Ticket {
    /// Runs `read` (a body being read) while holding the ticket for at most [`READ_GRACE`]:
    /// a read still going then gives the ticket back, and takes one again, waiting as
    /// [`Batcher::ticket`] does, once `read` is done.
    pub async fn hold_while<T>(&mut self, read: impl Future<Output = Result<T, ServeError>>) -> Result<T, ServeError> {
        let mut read = std::pin::pin!(read);
        let grace = tokio::time::sleep(READ_GRACE);
        tokio::select! {
            done = &mut read => return done,
            () = grace => {}
        }
        self.slot = None;
        let done = read.await?;
        let (slot, waited) = wait_for_ticket(&self.admission, self.timeout, self.waited).await?;
        self.slot = Some(slot);
        self.waited = waited;
        Ok(done)
    }
}

/// Waits for one of `a`'s tickets for at most what is left of `timeout` after `waited`;
/// returns it and the whole time waited.
async fn wait_for_ticket(
    a: &Arc<Admission>,
    timeout: Option<Duration>,
    waited: Duration,
) -> Result<(OwnedSemaphorePermit, Duration), ServeError> {
    let closed = || ServeError::Unavailable(format!("model {} is shutting down", a.label));
    match Arc::clone(&a.tickets).try_acquire_owned() {
        Ok(slot) => return Ok((slot, waited)),
        Err(tokio::sync::TryAcquireError::Closed) => return Err(closed()),
        Err(tokio::sync::TryAcquireError::NoPermits) => {}
    }
    let started = Instant::now();
    let _waiting = Waiting::new(&a.waiting);
    let acquire = Arc::clone(&a.tickets).acquire_owned();
    let acquired = match timeout {
        None => acquire.await,
        Some(t) => match tokio::time::timeout(t.saturating_sub(waited), acquire).await {
            Ok(acquired) => acquired,
            Err(_) => {
                a.timed_out.inc();
                return Err(ServeError::QueueTimeout {
                    model: a.label.clone(),
                    waited: waited.saturating_add(started.elapsed()),
                });
            }
        },
    };
    let slot = acquired.map_err(|_| closed())?;
    Ok((slot, waited.saturating_add(started.elapsed())))
}

/// Counts a request in `hardy_queue_waiting_requests` while it waits for a ticket.
struct Waiting<'a>(&'a IntGauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A place in a model's queue, taken before preprocessing and released when the request's
/// last image starts running (or when the request and every piece of work on it are
/// dropped). It holds the request's cost: one request, its images, and their decoded bytes,
/// and its [`Ticket`].
pub struct Permit {
    admission: Arc<Admission>,
    images: usize,
    bytes: usize,
    ticket: Ticket,
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
    /// Priority level, 1 the highest.
    level: u32,
    /// When it is rejected if still waiting.
    deadline: Option<Instant>,
    /// Its turn within a level: arrival order, renewed when a batch takes part of it.
    turn: u64,
    permit: Permit,
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

    fn fill(&mut self, rows: &[f32], first_row: usize, inference: Duration, batch: (usize, Duration)) {
        if self.reply.is_none() {
            return;
        }
        let classes = self.output.classes;
        let start = first_row * classes;
        self.output.logits[start..start + rows.len()].copy_from_slice(rows);
        self.output.inference += inference;
        self.output.batches += 1;
        (self.output.batch_images, self.output.run) = batch;
        self.remaining -= rows.len() / classes.max(1);
        if self.remaining == 0
            && let Some(reply) = self.reply.take()
        {
            let _ = reply.send(Ok(std::mem::take(&mut self.output)));
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
    timed_out: IntCounter,
    cancelled: IntCounter,
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
            timed_out: metrics.withdrawn.with_label_values(&[label.0, label.1, "timeout"]),
            cancelled: metrics.withdrawn.with_label_values(&[label.0, label.1, "cancelled"]),
            images: metrics.images.with_label_values(&mv),
            batches: metrics.batches.with_label_values(&mv),
            batch_size: metrics.batch_size.with_label_values(&mv),
            queue_time: metrics.queue_time.with_label_values(&mv),
            inference_time: metrics.inference_time.with_label_values(&mv),
            stats: crate::stats::VersionHandle::default(),
        };
        let stats = Arc::clone(&bm.stats);
        let image_len = pool.image_len();
        let tickets = pool
            .workers()
            .max(1)
            .saturating_mul(pool.max_batch().max(1))
            .saturating_mul(2)
            .min(Semaphore::MAX_PERMITS);
        let admission = Arc::new(Admission {
            used: Mutex::new(Usage::default()),
            limits: Usage {
                requests: batching.queue_capacity,
                images: batching.max_queue_images,
                bytes: batching.max_queue_bytes,
            },
            image_bytes: image_len.saturating_mul(std::mem::size_of::<f32>()),
            tickets: Arc::new(Semaphore::new(tickets)),
            depth: metrics.queue_depth.with_label_values(&mv),
            depth_images: metrics.queue_images.with_label_values(&mv),
            waiting: metrics.queue_waiting.with_label_values(&mv),
            timed_out: bm.timed_out.clone(),
            label: format!("{}:{}", label.0, label.1),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let settings = Settings {
            max_batch: pool.max_batch(),
            max_delay: Duration::from_micros(batching.max_queue_delay_us),
            aging: Duration::from_micros(batching.priority_aging_us.max(1)),
            label: admission.label.clone(),
        };
        let policy = PolicySettings {
            levels: batching.priority_levels,
            default_level: match batching.default_priority_level {
                0 => batching.priority_levels.max(1),
                n => n,
            },
            default_timeout: (batching.queue_timeout_us > 0).then(|| Duration::from_micros(batching.queue_timeout_us)),
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
            policy,
        }
    }

    /// The queue policy of a request that names `priority` (0 or absent: the default level)
    /// and `timeout_us` (0 or absent: the model's `queue_timeout_us`), or 400 when the model
    /// has no such level or the timeout is negative.
    pub fn queue_policy(&self, priority: Option<i128>, timeout_us: Option<i128>) -> Result<QueuePolicy, ServeError> {
        let (p, default) = (&self.policy, self.default_policy());
        let level = match priority {
            None | Some(0) => default.level,
            Some(_) if p.levels == 0 => {
                return Err(ServeError::Invalid(format!(
                    "model {} has no priority levels (batching.priority_levels = 0): send no priority",
                    self.admission.label
                )));
            }
            Some(n) => u32::try_from(n).ok().filter(|&n| n <= p.levels).ok_or_else(|| {
                ServeError::Invalid(format!(
                    "priority {n} is not a level of model {}: 1 (highest) ..= {}",
                    self.admission.label, p.levels
                ))
            })?,
        };
        let timeout = match timeout_us {
            None | Some(0) => default.timeout,
            Some(n) => Some(Duration::from_micros(u64::try_from(n).map_err(|_| {
                ServeError::Invalid(format!("timeout {n} is not a number of microseconds >= 0"))
            })?)),
        };
        Ok(QueuePolicy { level, timeout })
    }

    /// The policy of a request that names neither priority nor timeout.
    pub fn default_policy(&self) -> QueuePolicy {
        QueuePolicy {
            level: self.policy.default_level,
            timeout: self.policy.default_timeout,
        }
    }

    /// The version's figures for Triton's statistics extension (fresh with each load).
    pub fn stats(&self) -> &crate::stats::VersionHandle {
        &self.stats
    }

    /// Waits for a ticket to bring a request in (see the module comment), for at most the
    /// model's `queue_timeout_us` (then 503, counted as `reason="timeout"`): a request's own
    /// timeout is in its body, which is not read yet.
    pub async fn ticket(&self) -> Result<Ticket, ServeError> {
        let timeout = self.policy.default_timeout;
        let (slot, waited) = wait_for_ticket(&self.admission, timeout, Duration::ZERO).await?;
        Ok(Ticket {
            admission: Arc::clone(&self.admission),
            slot: Some(slot),
            waited,
            timeout,
        })
    }

    /// Takes a place in the queue for a request of `images` images that holds `ticket`, or
    /// fails at once: 413 when the request alone is more than half of the model's image or
    /// byte budget, 503 when `queue_capacity` requests or the budget are taken by others.
    pub fn admit(&self, ticket: Ticket, images: usize) -> Result<Permit, ServeError> {
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
            ticket,
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

    /// Queues `images` preprocessed images laid out back to back in `input`, to wait as
    /// `policy` says.
    pub fn submit(
        &self,
        permit: Permit,
        input: Vec<f32>,
        classes: usize,
        policy: QueuePolicy,
    ) -> Result<Reply, ServeError> {
        let images = permit.images;
        if images == 0 || Some(input.len()) != images.checked_mul(self.image_len) {
            return Err(ServeError::Internal(format!(
                "batcher got {} values for {images} image(s) of {} values",
                input.len(),
                self.image_len
            )));
        }
        let (reply, rx) = oneshot::channel();
        // Its queue time, its timeout and its aging count from when it began to wait for
        // its ticket (the time its body was read and converted excluded).
        let now = Instant::now();
        let enqueued = now.checked_sub(permit.ticket.waited).unwrap_or(now);
        let request = Request {
            shared: Arc::new(Mutex::new(Shared {
                reply: Some(reply),
                output: BatchOutput {
                    logits: vec![0.0; images.saturating_mul(classes)],
                    classes,
                    ..BatchOutput::default()
                },
                remaining: images,
            })),
            input,
            images,
            next: 0,
            enqueued,
            level: policy.level.max(1),
            // A timeout too long to represent is no limit.
            deadline: policy.timeout.and_then(|t| enqueued.checked_add(t)),
            turn: 0,
            permit,
        };
        self.requests
            .send(Msg::Request(request))
            .map_err(|_| ServeError::Unavailable(format!("model {} is shutting down", self.admission.label)))?;
        Ok(Reply {
            rx,
            wake: self.requests.clone(),
            resolved: false,
        })
    }
}

#[derive(Clone)]
struct Settings {
    max_batch: usize,
    max_delay: Duration,
    aging: Duration,
    label: String,
}

fn run(pool: InferencePool, requests: Receiver<Msg>, settings: Settings, metrics: BatchMetrics) {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
    let never = crossbeam_channel::never::<Msg>();
    let workers = pool.workers();
    let image_len = pool.image_len();
    let classes = pool.classes();
    // Unordered: batches pick by (level, turn), see `form_batch`.
    let mut queue: Vec<Request> = Vec::new();
    let mut queued_images = 0usize;
    let mut in_flight = 0usize;
    let mut turns = 0u64;
    let mut open = true;
    loop {
        // Everything that has arrived joins the queue before a batch forms, so a burst that
        // finds a free worker runs as one batch rather than as its first request alone.
        while open {
            match requests.try_recv() {
                Ok(msg) => accept(msg, &mut queue, &mut queued_images, &mut turns),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => open = false,
            }
        }
        let now = Instant::now();
        // Withdraw requests whose client went away or whose wait ran out, wherever they are.
        queue.retain(|r| {
            let mut shared = lock(&r.shared);
            let withdrawn = if shared.cancelled() {
                metrics.cancelled.inc();
                true
            } else if r.deadline.is_some_and(|d| now >= d) {
                metrics.timed_out.inc();
                shared.fail(ServeError::QueueTimeout {
                    model: settings.label.clone(),
                    waited: now.saturating_duration_since(r.enqueued),
                });
                true
            } else {
                false
            };
            if withdrawn {
                queued_images -= r.images - r.next;
            }
            !withdrawn
        });
        if !open && queue.is_empty() && in_flight == 0 {
            break;
        }
        let oldest = queue.iter().map(|r| r.enqueued).min();
        let batch_due = oldest.and_then(|t| t.checked_add(settings.max_delay));
        let due = queued_images >= settings.max_batch || !open || batch_due.is_some_and(|d| now >= d);
        if in_flight < workers && !queue.is_empty() && due {
            let batch = form_batch(&mut queue, &mut queued_images, &settings, image_len, &mut turns);
            in_flight += 1;
            submit(&pool, batch, classes, &metrics, done_tx.clone());
            continue;
        }
        let incoming = if open { &requests } else { &never };
        // Wake for the batching window (when a worker could take the batch) and for the
        // nearest queue deadline (always).
        let expiry = queue.iter().filter_map(|r| r.deadline).min();
        let wake = batch_due
            .filter(|_| in_flight < workers)
            .into_iter()
            .chain(expiry)
            .min();
        let mut on_message = |msg: Result<Msg, _>| match msg {
            Ok(msg) => accept(msg, &mut queue, &mut queued_images, &mut turns),
            Err(_) => open = false,
        };
        match wake {
            Some(at) => select! {
                recv(incoming) -> msg => on_message(msg),
                recv(done_rx) -> _ => in_flight -= 1,
                default(at.saturating_duration_since(now)) => {}
            },
            None => select! {
                recv(incoming) -> msg => on_message(msg),
                recv(done_rx) -> _ => in_flight -= 1,
            },
        }
    }
}

/// Takes a message off the channel: a request joins the queue with the next turn; a
/// withdrawal needs nothing more (the loop looks through the queue each time it wakes).
fn accept(msg: Msg, queue: &mut Vec<Request>, queued_images: &mut usize, turns: &mut u64) {
    if let Msg::Request(mut r) = msg {
        *turns += 1;
        r.turn = *turns;
        *queued_images += r.images;
        queue.push(r);
    }
}

/// The level a request competes at after waiting until `now`: one level higher per `aging`
/// waited, and never above 1.
fn effective_level(r: &Request, now: Instant, aging: Duration) -> u32 {
    let steps = now.saturating_duration_since(r.enqueued).as_nanos() / aging.as_nanos().max(1);
    r.level.saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX)).max(1)
}

struct Batch {
    input: Vec<f32>,
    images: usize,
    /// `(request, its first row in this batch's output, rows)`.
    segments: Vec<(Arc<Mutex<Shared>>, usize, usize)>,
    started: Instant,
    queue_times: Vec<Duration>,
}

fn form_batch(
    queue: &mut Vec<Request>,
    queued: &mut usize,
    settings: &Settings,
    image_len: usize,
    turns: &mut u64,
) -> Batch {
    let (max_batch, started) = (settings.max_batch, Instant::now());
    let mut batch = Batch {
        input: Vec::new(),
        images: 0,
        segments: Vec::new(),
        started,
        queue_times: Vec::new(),
    };
    while batch.images < max_batch {
        // The highest (aged) level first; arrival order within a level.
        let Some(at) = queue
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| (effective_level(r, started, settings.aging), r.turn))
            .map(|(i, _)| i)
        else {
            break;
        };
        let front = &mut queue[at];
        // Its first images start running: its ticket goes to the next request waiting for
        // one (its place stays taken until its last image runs).
        front.permit.ticket.slot = None;
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
        if front.next == front.images {
            let done = queue.swap_remove(at);
            let waited = started.saturating_duration_since(done.enqueued);
            lock(&done.shared).output.queue = waited;
            batch.queue_times.push(waited);
            // Dropping the request releases its permit: it no longer waits.
        } else {
            // A request larger than one batch takes a new turn after each batch, so the
            // requests of its level behind it take turns with it instead of waiting for all
            // of its images.
            *turns += 1;
            front.turn = *turns;
        }
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
                        lock(shared).fill(values, *first, elapsed, (images, logits.run));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<Admission> {
        Arc::new(Admission {
            used: Mutex::new(Usage {
                requests: 100,
                images: 100,
                bytes: 100,
            }),
            limits: Usage::default(),
            image_bytes: 0,
            tickets: Arc::new(Semaphore::new(1)),
            depth: IntGauge::new("d", "d").expect("gauge"),
            depth_images: IntGauge::new("i", "i").expect("gauge"),
            waiting: IntGauge::new("w", "w").expect("gauge"),
            timed_out: IntCounter::new("t", "t").expect("counter"),
            label: "m:1".into(),
        })
    }

    /// A queued request of `images` one-value images, all `id`, at `level`, that arrived
    /// `ago` before now.
    fn request(id: f32, images: usize, level: u32, turn: u64, ago: Duration) -> Request {
        let (reply, _rx) = oneshot::channel();
        Request {
            shared: Arc::new(Mutex::new(Shared {
                reply: Some(reply),
                output: BatchOutput {
                    logits: vec![0.0; images],
                    classes: 1,
                    ..BatchOutput::default()
                },
                remaining: images,
            })),
            input: vec![id; images],
            images,
            next: 0,
            enqueued: Instant::now().checked_sub(ago).expect("instant"),
            level,
            deadline: None,
            turn,
            permit: Permit {
                admission: admission(),
                images: 0,
                bytes: 0,
                ticket: Ticket {
                    admission: admission(),
                    slot: None,
                    waited: Duration::ZERO,
                    timeout: None,
                },
            },
        }
    }

    fn settings(max_batch: usize) -> Settings {
        Settings {
            max_batch,
            max_delay: Duration::ZERO,
            aging: Duration::from_millis(100),
            label: "m:1".into(),
        }
    }

    fn batch(queue: &mut Vec<Request>, max_batch: usize, turns: &mut u64) -> Vec<f32> {
        let mut queued = queue.iter().map(|r| r.images - r.next).sum();
        form_batch(queue, &mut queued, &settings(max_batch), 1, turns).input
    }

    #[test]
    fn batches_take_the_highest_level_first_then_arrival_order() {
        let ms = Duration::from_millis;
        let mut queue = vec![
            request(1.0, 1, 2, 1, ms(3)),
            request(2.0, 1, 2, 2, ms(2)),
            request(3.0, 2, 1, 3, ms(1)),
            request(4.0, 1, 2, 4, ms(0)),
        ];
        let mut turns = 4;
        assert_eq!(batch(&mut queue, 3, &mut turns), vec![3.0, 3.0, 1.0]);
        assert_eq!(batch(&mut queue, 3, &mut turns), vec![2.0, 4.0]);
        assert!(queue.is_empty());
    }

    #[test]
    fn waiting_raises_a_level_so_no_level_starves() {
        let ms = Duration::from_millis;
        // Level 3 after 250 ms (aging 100 ms) competes at level 1 and arrived first; level 3
        // after 150 ms competes at level 2.
        let mut queue = vec![
            request(1.0, 1, 3, 1, ms(250)),
            request(2.0, 1, 3, 2, ms(150)),
            request(3.0, 1, 1, 3, ms(0)),
        ];
        let mut turns = 3;
        assert_eq!(batch(&mut queue, 1, &mut turns), vec![1.0]);
        assert_eq!(batch(&mut queue, 1, &mut turns), vec![3.0]);
        assert_eq!(batch(&mut queue, 1, &mut turns), vec![2.0]);
        let r = request(0.0, 1, 5, 0, ms(10_000));
        assert_eq!(effective_level(&r, Instant::now(), ms(100)), 1);
    }

    #[test]
    fn a_request_larger_than_a_batch_takes_turns_with_its_level() {
        let ms = Duration::from_millis;
        let mut queue = vec![request(1.0, 5, 1, 1, ms(2)), request(2.0, 1, 1, 2, ms(1))];
        let mut turns = 2;
        assert_eq!(batch(&mut queue, 2, &mut turns), vec![1.0, 1.0]);
        assert_eq!(batch(&mut queue, 2, &mut turns), vec![2.0, 1.0]);
        assert_eq!(batch(&mut queue, 2, &mut turns), vec![1.0, 1.0]);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_ticket_wait_times_out_and_a_slow_read_gives_its_ticket_back() {
        // One ticket.
        let a = admission();
        let ms = Duration::from_millis;
        let ticket = |slot| Ticket {
            admission: Arc::clone(&a),
            slot: Some(slot),
            waited: Duration::ZERO,
            timeout: Some(ms(2000)),
        };
        let (first, _) = wait_for_ticket(&a, None, Duration::ZERO).await.expect("free ticket");
        let mut first = ticket(first);
        // Taken: a second request waits out its timeout, counted once.
        let refused = wait_for_ticket(&a, Some(ms(50)), Duration::ZERO).await;
        assert!(
            matches!(refused, Err(ServeError::QueueTimeout { .. })),
            "{:?}",
            refused.err()
        );
        assert_eq!((a.timed_out.get(), a.waiting.get()), (1, 0));
        // A read that outlasts the grace gives the ticket back while it goes on: another
        // request takes it meanwhile, and gives it back for the read to finish.
        let read = async {
            tokio::time::sleep(READ_GRACE + ms(300)).await;
            Ok::<_, ServeError>("body")
        };
        let other = async {
            tokio::time::sleep(READ_GRACE + ms(50)).await;
            let (slot, _) = wait_for_ticket(&a, Some(ms(100)), Duration::ZERO)
                .await
                .expect("the ticket given back");
            tokio::time::sleep(ms(100)).await;
            drop(slot);
        };
        let (body, ()) = tokio::join!(first.hold_while(read), other);
        assert_eq!(body.expect("read"), "body");
        assert!(first.slot.is_some(), "the ticket is taken again after the read");
        assert!(first.waited < ms(100), "waited {:?}", first.waited);
    }
}
