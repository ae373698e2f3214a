//! A pool of inference worker threads, each owning its own ORT session.
//!
//! `Session::run` needs `&mut self`, and blocking inference must never run on an async
//! runtime's threads. The pool is the actor for that: a cheap handle holding a channel
//! sender, and dedicated OS threads that each own one [`ModelSession`] and take whole
//! batches off the channel. The server's batcher and the evaluator both feed it.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::{
    artifact::ModelArtifact,
    device::Device,
    runtime::Runtime,
    session::{InferenceError, Logits, ModelSession, SessionOptions, Signature},
};

/// What a worker calls with a batch's result, on the worker thread.
pub type OnDone = Box<dyn FnOnce(Result<Logits, InferenceError>) + Send>;

struct Job {
    input: Vec<f32>,
    batch: usize,
    reply: OnDone,
}

/// Handle to a running pool. Dropping it lets queued jobs finish, then joins the workers.
pub struct InferencePool {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    name: String,
    signature: Signature,
    max_batch: usize,
}

impl InferencePool {
    /// Starts `workers` threads (at least one), each loading its own session of `artifact`.
    /// Returns once every session is loaded, or with the first load error.
    pub fn start(
        runtime: &Runtime,
        artifact: &ModelArtifact,
        options: &SessionOptions,
        workers: usize,
    ) -> Result<Self, InferenceError> {
        let (jobs_tx, jobs_rx) = unbounded::<Job>();
        let (ready_tx, ready_rx) = unbounded();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (rt, art, opts, rx, ready) = (
                runtime.clone(),
                artifact.clone(),
                options.clone(),
                jobs_rx.clone(),
                ready_tx.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("infer-{}-{i}", artifact.name))
                .spawn(move || match ModelSession::load(&rt, &art, &opts) {
                    Ok(session) => {
                        let _ = ready.send(Ok(session.signature()));
                        drop(ready);
                        worker_loop(session, rx);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| InferenceError::WorkersGone(format!("{}: cannot spawn thread: {e}", artifact.name)))?;
            handles.push(handle);
        }
        drop(ready_tx);
        let mut pool = Self {
            jobs: Some(jobs_tx),
            workers: handles,
            name: artifact.display_name(),
            signature: Signature {
                input_name: String::new(),
                output_name: String::new(),
                image_dims: [0; 3],
                classes: 0,
                fixed_batch: None,
                device: Device::Cpu,
            },
            // Placeholders until the sessions report: the pool exists first so that a load
            // error drops it, which joins the workers already started.
            max_batch: 0,
        };
        for _ in 0..pool.workers.len() {
            let signature = ready_rx
                .recv()
                .map_err(|_| InferenceError::WorkersGone(pool.name.clone()))??;
            pool.signature = signature;
        }
        let fixed = pool.signature.fixed_batch.unwrap_or(usize::MAX);
        pool.max_batch = artifact
            .config
            .batching
            .max_batch(pool.signature.device, pool.image_len())
            .min(fixed);
        Ok(pool)
    }

    /// Queues a batch and returns the channel its result arrives on.
    pub fn submit(&self, input: Vec<f32>, batch: usize) -> Receiver<Result<Logits, InferenceError>> {
        let (reply, rx) = bounded(1);
        self.submit_with(
            input,
            batch,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        rx
    }

    /// Queues a batch; a worker calls `on_done` with its result on the worker thread (so the
    /// callback must be quick: the server uses it to fan a batch's rows back to requests).
    /// If the workers have stopped, `on_done` is called at once with an error.
    pub fn submit_with(&self, input: Vec<f32>, batch: usize, on_done: OnDone) {
        let job = Job {
            input,
            batch,
            reply: on_done,
        };
        match self.jobs.as_ref() {
            Some(jobs) => {
                if let Err(crossbeam_channel::SendError(job)) = jobs.send(job) {
                    (job.reply)(Err(InferenceError::WorkersGone(self.name.clone())));
                }
            }
            None => (job.reply)(Err(InferenceError::WorkersGone(self.name.clone()))),
        }
    }

    /// Runs a batch and waits for its logits.
    pub fn infer(&self, input: Vec<f32>, batch: usize) -> Result<Logits, InferenceError> {
        self.submit(input, batch)
            .recv()
            .map_err(|_| InferenceError::WorkersGone(self.name.clone()))?
    }

    /// The device the sessions actually run on.
    pub fn device(&self) -> Device {
        self.signature.device
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.signature.classes
    }

    /// Values per preprocessed image.
    pub fn image_len(&self) -> usize {
        self.signature.image_dims.iter().product()
    }

    /// Input and output names, per-image dims and device, as the sessions checked them.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The largest batch one run may take: the config's `max_batch_size` (unset: chosen for
    /// the device and input size, [`crate::config::BatchingConfig::max_batch`]), capped by a
    /// fixed batch dimension in the model.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Number of worker threads (sessions).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

fn worker_loop(mut session: ModelSession, jobs: Receiver<Job>) {
    for job in jobs {
        let result = session.infer_any(&job.input, job.batch);
        (job.reply)(result);
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        self.jobs.take();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}
