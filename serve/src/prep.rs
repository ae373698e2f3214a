//! The preprocessing worker pool: request parsing, image decoding, resizing and
//! normalisation, off the async runtime's threads.
//!
//! Why a scheduler of its own instead of rayon: requests must share the threads fairly and
//! stop when nobody waits for them. Work is queued as jobs of units (one image each, or one
//! closure); a worker takes the job at the front, claims one unit and, if the job has more,
//! puts it back at the end of the queue. So a request of 20,000 images and a request of one
//! take turns image by image (a large client batch never holds the others back), and several
//! workers still decode one large request in parallel when nothing else waits.
//!
//! Cancellation reaches the work: the future that waits for a job marks it cancelled when
//! it is dropped (its client went away and actix dropped the handler), and no further unit
//! of it is claimed. A job holds its request's queue [`Permit`] until its last running unit
//! has finished, so the queue's capacity counts work still in progress. A panic inside a
//! decoder becomes an internal error for that request, never a crashed worker.

use std::{
    collections::VecDeque,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use engine::preprocess::{ImageLimits, PreprocessSpec, Preprocessor};
use tokio::sync::oneshot;

use crate::{ServeError, batcher::Permit};

/// A queued piece of work made of units that workers claim one at a time.
trait Job: Send + Sync {
    /// Claims the next unit, or `None` when every unit is claimed or the job was cancelled.
    fn claim(&self) -> Option<usize>;
    /// Whether units are left to claim.
    fn more(&self) -> bool;
    /// Runs one claimed unit.
    fn run(&self, unit: usize);
    /// Called instead of `run` finishing when `run` panicked.
    fn panicked(&self);
}

struct Queue {
    jobs: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Arc<dyn Job>>,
    stop: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Arc<dyn Job>) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    /// The next unit to run, waiting for one; `None` once the pool stops.
    fn next(&self) -> Option<(Arc<dyn Job>, usize)> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if let Some(unit) = job.claim() {
                    if job.more() {
                        state.jobs.push_back(Arc::clone(&job));
                        // Another worker may take the job's next unit meanwhile.
                        self.ready.notify_one();
                    }
                    return Some((job, unit));
                }
                // Cancelled or fully claimed: dropping it here lets its permit go once
                // its running units finish.
            }
            if state.stop {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn work(queue: Arc<Queue>) {
    while let Some((job, unit)) = queue.next() {
        if catch_unwind(AssertUnwindSafe(|| job.run(unit))).is_err() {
            job.panicked();
        }
    }
}

/// Handle to the preprocessing threads. Dropping it lets the threads finish the queued
/// jobs and stop.
pub struct PrepPool {
    queue: Arc<Queue>,
    limits: ImageLimits,
}

impl Drop for PrepPool {
    fn drop(&mut self) {
        self.queue.lock().stop = true;
        self.queue.ready.notify_all();
    }
}

/// Marks a job cancelled when the future waiting for it is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl PrepPool {
    /// Starts `threads` workers (0: one per core).
    pub fn new(threads: usize, limits: ImageLimits) -> Result<Self, ServeError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let queue = Arc::new(Queue {
            jobs: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                stop: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let q = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("prep-{i}"))
                .spawn(move || work(q))
                .map_err(|e| ServeError::Internal(format!("cannot start the preprocessing pool: {e}")))?;
        }
        Ok(Self { queue, limits })
    }

    /// Runs `work` on the pool and waits for it without blocking the caller's thread. If the
    /// caller stops waiting before a worker takes it, it never runs.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ServeError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ServeError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(Arc::clone(&cancelled));
        self.queue.push(Arc::new(OnceJob {
            work: Mutex::new(Some((work, tx))),
            cancelled,
        }));
        rx.await
            .map_err(|_| ServeError::Internal("the preprocessing pool stopped".into()))?
    }

    /// Decodes and preprocesses encoded images into one `images x tensor_len` buffer. The
    /// request's permit is held while any image is being worked on and comes back with the
    /// tensor.
    pub async fn images(
        &self,
        images: Vec<Bytes>,
        spec: Arc<PreprocessSpec>,
        permit: Permit,
    ) -> Result<(Vec<f32>, Permit), ServeError> {
        let len = spec.tensor_len();
        let total = images
            .len()
            .checked_mul(len)
            .ok_or_else(|| ServeError::Invalid(format!("{} images of {len} values overflow", images.len())))?;
        let (tx, rx) = oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(Arc::clone(&cancelled));
        let count = images.len();
        self.queue.push(Arc::new(ImageJob {
            images,
            spec,
            limits: self.limits.clone(),
            next: AtomicUsize::new(0),
            left: AtomicUsize::new(count),
            cancelled,
            state: Mutex::new(ImageState {
                out: vec![0f32; total],
                reply: Some(tx),
                permit: Some(permit),
            }),
        }));
        rx.await
            .map_err(|_| ServeError::Internal("the preprocessing pool stopped".into()))?
    }
}

type Reply<T> = oneshot::Sender<Result<T, ServeError>>;

/// One closure, one unit.
struct OnceJob<T, F> {
    work: Mutex<Option<(F, Reply<T>)>>,
    cancelled: Arc<AtomicBool>,
}

impl<T, F> OnceJob<T, F> {
    fn take(&self) -> Option<(F, Reply<T>)> {
        self.work.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<T, F> Job for OnceJob<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ServeError> + Send + 'static,
{
    fn claim(&self) -> Option<usize> {
        (!self.cancelled.load(Ordering::Acquire)).then_some(0)
    }
    fn more(&self) -> bool {
        false
    }
    fn run(&self, _unit: usize) {
        if let Some((work, reply)) = self.take() {
            let result = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(ServeError::Internal("request processing panicked".into())));
            let _ = reply.send(result);
        }
    }
    fn panicked(&self) {}
}

/// A request's images, one unit each, written into one tensor.
struct ImageJob {
    images: Vec<Bytes>,
    spec: Arc<PreprocessSpec>,
    limits: ImageLimits,
    next: AtomicUsize,
    /// Images not yet finished.
    left: AtomicUsize,
    /// Set by the waiting side going away, or by the first failure.
    cancelled: Arc<AtomicBool>,
    state: Mutex<ImageState>,
}

struct ImageState {
    out: Vec<f32>,
    reply: Option<Reply<(Vec<f32>, Permit)>>,
    permit: Option<Permit>,
}

impl ImageJob {
    fn lock(&self) -> MutexGuard<'_, ImageState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, error: ServeError) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(reply) = self.lock().reply.take() {
            let _ = reply.send(Err(error));
        }
    }

    fn preprocess(&self, index: usize, scratch: &mut Vec<f32>) -> Result<(), ServeError> {
        let bad = |reason: String| ServeError::BadImage { index, reason };
        let mut pre = Preprocessor::new((*self.spec).clone(), self.limits.clone()).map_err(|e| bad(e.to_string()))?;
        let len = self.spec.tensor_len();
        scratch.clear();
        scratch.resize(len, 0.0);
        pre.preprocess(&self.images[index], scratch)
            .map_err(|e| bad(e.to_string()))?;
        let mut state = self.lock();
        if let Some(row) = state.out.get_mut(index * len..(index + 1) * len) {
            row.copy_from_slice(scratch);
        }
        Ok(())
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Job for ImageJob {
    fn claim(&self) -> Option<usize> {
        if self.cancelled.load(Ordering::Acquire) {
            return None;
        }
        let unit = self.next.fetch_add(1, Ordering::AcqRel);
        (unit < self.images.len()).then_some(unit)
    }

    fn more(&self) -> bool {
        !self.cancelled.load(Ordering::Acquire) && self.next.load(Ordering::Acquire) < self.images.len()
    }

    fn run(&self, unit: usize) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        let done = SCRATCH.with(|s| self.preprocess(unit, &mut s.borrow_mut()));
        if let Err(e) = done {
            return self.fail(e);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut state = self.lock();
            let out = std::mem::take(&mut state.out);
            if let (Some(reply), Some(permit)) = (state.reply.take(), state.permit.take()) {
                let _ = reply.send(Ok((out, permit)));
            }
        }
    }

    fn panicked(&self) {
        self.fail(ServeError::Internal("preprocessing panicked".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        actix_web::rt::System::new().block_on(f)
    }

    #[test]
    fn closures_run_and_panics_become_errors() {
        let pool = PrepPool::new(2, ImageLimits::default()).unwrap();
        assert_eq!(block_on(pool.run(|| Ok(7))).unwrap(), 7);
        let err = block_on(pool.run(|| -> Result<(), ServeError> { panic!("boom") })).unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        // The workers survived the panic.
        assert_eq!(block_on(pool.run(|| Ok(8))).unwrap(), 8);
    }

    #[test]
    fn jobs_take_turns_unit_by_unit() {
        // One worker, a blocker, then a long job and a short one: the short one's unit runs
        // right after the long one's first, not after all of them.
        let pool = PrepPool::new(1, ImageLimits::default()).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        struct Units {
            name: &'static str,
            n: usize,
            next: AtomicUsize,
            order: Arc<Mutex<Vec<&'static str>>>,
        }
        impl Job for Units {
            fn claim(&self) -> Option<usize> {
                let u = self.next.fetch_add(1, Ordering::AcqRel);
                (u < self.n).then_some(u)
            }
            fn more(&self) -> bool {
                self.next.load(Ordering::Acquire) < self.n
            }
            fn run(&self, _: usize) {
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.order.lock().unwrap().push(self.name);
            }
            fn panicked(&self) {}
        }
        let job = |name, n| {
            Arc::new(Units {
                name,
                n,
                next: AtomicUsize::new(0),
                order: Arc::clone(&order),
            })
        };
        let blocker = job("block", 1);
        {
            // Queue all three before the worker can take any.
            let mut q = pool.queue.lock();
            q.jobs.push_back(blocker);
            q.jobs.push_back(job("long", 5));
            q.jobs.push_back(job("short", 1));
        }
        pool.queue.ready.notify_one();
        let t0 = std::time::Instant::now();
        while order.lock().unwrap().len() < 7 {
            assert!(t0.elapsed().as_secs() < 10, "jobs did not finish");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["block", "long", "short", "long", "long", "long", "long"]);
    }

    #[test]
    fn a_cancelled_job_is_not_run() {
        let pool = PrepPool::new(1, ImageLimits::default()).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        // Occupy the only worker, then queue a job and stop waiting for it.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let hold = pool.run(move || {
            let _ = hold_rx.recv();
            Ok(())
        });
        let r = Arc::clone(&ran);
        let dropped = pool.run(move || {
            r.store(true, Ordering::Release);
            Ok(())
        });
        block_on(async {
            let mut hold = std::pin::pin!(hold);
            // Polling once queues each job; the second is dropped while it waits.
            assert!(futures_util::FutureExt::now_or_never(hold.as_mut()).is_none());
            let mut d = Box::pin(dropped);
            assert!(futures_util::FutureExt::now_or_never(d.as_mut()).is_none());
            drop(d);
            hold_tx.send(()).unwrap();
            hold.await.unwrap();
        });
        assert_eq!(block_on(pool.run(|| Ok(1))).unwrap(), 1);
        assert!(!ran.load(Ordering::Acquire), "a cancelled job ran");
    }
}
