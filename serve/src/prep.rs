//! The preprocessing worker pool: image decoding, resizing and normalisation off the async
//! runtime's threads.
//!
//! A request's images are decoded in parallel on a dedicated rayon pool; the async handler
//! awaits a oneshot reply. A panic inside a decoder becomes an internal error for that
//! request, never a crashed worker.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use bytes::Bytes;
use engine::preprocess::{ImageLimits, PreprocessSpec, Preprocessor};
use rayon::prelude::*;
use tokio::sync::oneshot;

use crate::ServeError;

/// Handle to the preprocessing threads.
pub struct PrepPool {
    pool: rayon::ThreadPool,
    limits: ImageLimits,
}

impl PrepPool {
    /// Starts `threads` workers (0: one per core).
    pub fn new(threads: usize, limits: ImageLimits) -> Result<Self, ServeError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("prep-{i}"))
            .build()
            .map_err(|e| ServeError::Internal(format!("cannot start the preprocessing pool: {e}")))?;
        Ok(Self { pool, limits })
    }

    /// Runs `work` on the pool and waits for it without blocking the caller's thread.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ServeError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ServeError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(ServeError::Internal("preprocessing panicked".into())));
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| ServeError::Internal("the preprocessing pool stopped".into()))?
    }

    /// Decodes and preprocesses encoded images into one `images x tensor_len` buffer.
    pub async fn images(&self, images: Vec<Bytes>, spec: Arc<PreprocessSpec>) -> Result<Vec<f32>, ServeError> {
        let limits = self.limits.clone();
        self.run(move || {
            let len = spec.tensor_len();
            let mut out = vec![0f32; images.len() * len];
            out.par_chunks_mut(len.max(1))
                .zip(images.par_iter())
                .enumerate()
                .try_for_each(|(index, (chunk, bytes))| {
                    let bad = |reason: String| ServeError::BadImage { index, reason };
                    let mut pre = Preprocessor::new((*spec).clone(), limits.clone()).map_err(|e| bad(e.to_string()))?;
                    pre.preprocess(bytes, chunk).map_err(|e| bad(e.to_string()))
                })?;
            Ok(out)
        })
        .await
    }
}
