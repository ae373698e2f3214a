//! Evaluation data: the data sets of `hardy eval`, listed as items and streamed as batches.
//!
//! Finding, listing and decoding data sets is the `hardy-data` crate's (re-exported here under
//! the paths the evaluator has always used): ImageFolder trees, the released ImageNet-C and
//! ImageNet-P layouts, flat folders of labelled files, IDX files, [`Item`]s, [`ClassMap`]s and
//! [`Shard`]s, shared with the trainer. What is the evaluator's own is streaming: [`batches`]
//! decodes in parallel and keeps a bounded number of batches in flight, so the 3.75M images of
//! ImageNet-C run in constant memory.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

pub use data::layout::{idx, image_folder, imagenet_c, imagenet_p, labelled_files, parse_perturbation_folder, videos};
pub use data::walk::{IMAGE_EXTENSIONS, VIDEO_EXTENSIONS};
pub use data::{ClassMap, DatasetError, Item, ItemSource, Shard};
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Streaming

/// How many decoded batches [`batches`] keeps ready or in the making ahead of the one the caller
/// holds.
pub const BATCHES_AHEAD: usize = 2;

/// One streamed batch: each item's position in the list and what `process` made of it.
pub type Batch<T> = Vec<(usize, Result<T, DatasetError>)>;

/// Streams `items` in order as batches of `batch` (0 counts as 1) processed items, with
/// [`BATCHES_AHEAD`] batches decoded ahead; see [`batches_with`].
pub fn batches<T: Send + 'static>(
    items: &[Item],
    batch: usize,
    process: impl Fn(&Item) -> Result<T, DatasetError> + Sync + Send + 'static,
) -> BatchStream<T> {
    batches_with(items, batch, BATCHES_AHEAD, process)
}

/// Streams `items` in order as batches of `batch` (0 counts as 1) items, each item passed
/// through `process` (typically: load, corrupt, preprocess), the items of a batch processed in
/// parallel on rayon's pool by a background thread while the caller works on the previous batch.
///
/// At most `ahead` (0 counts as 1) batches are being processed or waiting, plus the one the
/// caller holds, so memory stays constant however many items there are. A failed item does not
/// stop the stream: its error comes back in its place. Dropping the stream stops the producer
/// after the batch it is working on. `process` and `T` are `'static` because the producer
/// thread outlives this call; the items are cloned (paths and shared buffers, not pixels).
pub fn batches_with<T: Send + 'static>(
    items: &[Item],
    batch: usize,
    ahead: usize,
    process: impl Fn(&Item) -> Result<T, DatasetError> + Sync + Send + 'static,
) -> BatchStream<T> {
    let items: Vec<Item> = items.to_vec();
    let batch = batch.max(1);
    let (tx, rx): (SyncSender<Batch<T>>, Receiver<Batch<T>>) = sync_channel(ahead.max(1) - 1);
    let producer = std::thread::Builder::new().name("eval-batches".into()).spawn(move || {
        for (b, chunk) in items.chunks(batch).enumerate() {
            let out: Batch<T> = chunk
                .par_iter()
                .enumerate()
                .map(|(i, item)| (b * batch + i, process(item)))
                .collect();
            if tx.send(out).is_err() {
                return; // the stream was dropped
            }
        }
    });
    match producer {
        Ok(handle) => BatchStream {
            rx: Some(rx),
            handle: Some(handle),
            spawn_error: None,
        },
        Err(e) => BatchStream {
            rx: None,
            handle: None,
            spawn_error: Some(e),
        },
    }
}

/// The iterator [`batches`] returns.
pub struct BatchStream<T> {
    rx: Option<Receiver<Batch<T>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<std::io::Error>,
}

impl<T> Iterator for BatchStream<T> {
    type Item = Batch<T>;

    fn next(&mut self) -> Option<Batch<T>> {
        if let Some(source) = self.spawn_error.take() {
            // The producer thread could not start: report it once, in place of the first batch.
            return Some(vec![(
                0,
                Err(DatasetError::Io {
                    path: PathBuf::from("<batch producer thread>"),
                    source,
                }),
            )]);
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The producer is done (or panicked: `process` panicking is a bug, and it is
                // passed on to the caller rather than ending the stream early in silence).
                if let Err(panic) = self.finish() {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl<T> BatchStream<T> {
    fn finish(&mut self) -> std::thread::Result<()> {
        self.rx = None;
        match self.handle.take() {
            Some(handle) => handle.join(),
            None => Ok(()),
        }
    }
}

impl<T> Drop for BatchStream<T> {
    fn drop(&mut self) {
        if self.finish().is_err() {
            tracing::error!("the batch producer thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::decode::{Exif, ImageLimits};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Counts values alive, and the most ever alive at once.
    struct Live {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    struct Token(Arc<Live>);

    impl Token {
        fn new(live: &Arc<Live>) -> Self {
            let n = live.now.fetch_add(1, Ordering::SeqCst) + 1;
            live.max.fetch_max(n, Ordering::SeqCst);
            Token(Arc::clone(live))
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn numbered_items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                key: format!("item{i}"),
                label: Some(i % 7),
                source: ItemSource::File(PathBuf::from(format!("/nonexistent/{i}.png"))),
            })
            .collect()
    }

    #[test]
    fn batches_stream_in_order_with_errors_in_place() {
        let items = numbered_items(23);
        let stream = batches(&items, 5, |item: &Item| {
            if item.key == "item7" {
                return Err(DatasetError::NoLabel { path: "item7".into() });
            }
            Ok(item.key.clone())
        });
        let got: Vec<Batch<String>> = stream.collect();
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 5, 3]);
        for (position, result) in got.into_iter().flatten() {
            match result {
                Ok(key) => assert_eq!(key, format!("item{position}")),
                Err(e) => assert_eq!((position, e.to_string().contains("item7")), (7, true)),
            }
        }
        // Loading real paths that do not exist reports each one.
        let failed: Vec<_> = batches(&items[..2], 0, |i: &Item| i.load(&ImageLimits::default(), Exif::Apply))
            .flatten()
            .collect();
        assert_eq!(failed.len(), 2);
        assert!(
            failed[1]
                .1
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/1.png")
        );
        assert_eq!(batches(&[], 4, |_: &Item| Ok(())).count(), 0);
    }

    #[test]
    fn batches_keep_a_bounded_number_in_flight() {
        let live = Arc::new(Live {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        });
        let processed = Arc::new(AtomicUsize::new(0));
        let items = numbered_items(400);
        let (batch, ahead) = (4, 2);
        let (l, p) = (Arc::clone(&live), Arc::clone(&processed));
        let stream = batches_with(&items, batch, ahead, move |_: &Item| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(Token::new(&l))
        });
        let seen = Mutex::new(0usize);
        for b in stream {
            // A slow consumer: the producer fills up its allowance meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(1));
            *seen.lock().unwrap() += b.len();
        }
        assert_eq!(*seen.lock().unwrap(), 400);
        let max = live.max.load(Ordering::SeqCst);
        assert!(max <= (ahead + 1) * batch, "{max} items alive at once");
        assert!(max > batch, "the producer never ran ahead ({max})");
        assert_eq!(live.now.load(Ordering::SeqCst), 0);

        // Dropping the stream early stops the producer.
        let p = Arc::clone(&processed);
        processed.store(0, Ordering::SeqCst);
        let mut stream = batches_with(&items, batch, ahead, move |_: &Item| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(stream.next().is_some());
        drop(stream);
        let done = processed.load(Ordering::SeqCst);
        assert!(done <= (ahead + 2) * batch, "{done} items processed after dropping");
    }
}
