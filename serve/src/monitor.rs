//! Label-free robustness monitoring of live traffic.
//!
//! Why: a newly loaded model version can be as accurate as the last one on a test set and
//! still be less stable on the images production actually sends. Accuracy needs labels;
//! stability does not. So, with `--monitor-rate R` (0, the default, turns it off), each image
//! that `/v1/models/{m}/classify` or `/v2/models/{m}/infer` (encoded `BYTES` inputs) classified
//! successfully is sampled with probability `R`, and re-classified in the background under a
//! few small ImageNet-P-style perturbations ([`Perturbation`]). A trial is one perturbed
//! re-classification; it flips when its top-1 class differs from the unperturbed crop's. The
//! flip probability per model, version and perturbation is exported to Prometheus
//! ([`crate::metrics::Metrics::monitor_flip_probability`] and its counters). Requests with raw
//! tensor inputs (`FP32`/`UINT8` on `/infer`) are not sampled: there is no image to perturb.
//!
//! How it stays out of the way of live traffic:
//! - [`Monitor`] is a cheap handle. Offering a sample is a `try_send` on a bounded queue
//!   ([`QUEUE_SAMPLES`] images, [`QUEUE_BYTES`] bytes of encoded images); when it is full the
//!   sample is dropped and counted (`hardy_monitor_dropped_total`), never waited for.
//! - One dedicated thread (`monitor`) owns all the state. It lowers its own priority to nice
//!   19 and the `SCHED_IDLE` policy before anything else, and everything it starts inherits
//!   that: it runs only on a core nothing else wants, and under load the queue overflows
//!   instead.
//! - It decodes and preprocesses with the engine's one path (`engine::preprocess`, the model
//!   version's own spec), so its clean crop is the live request's crop, pixel for pixel.
//! - It runs its own single-threaded ONNX Runtime session per model version (intra-op
//!   threads 1, so inference runs on the niced thread itself), created on the version's first
//!   sample and dropped within a second of the version being unloaded. It never goes through
//!   the version's batcher, so it takes no queue slots from live requests and is not counted
//!   in the serving metrics.
//!
//! The perturbations are computed here rather than taken from `eval::perturb::sequence`: a
//! sequence makes 31 to 41 frames to use one, and its brightness frames are computed on the
//! global rayon pool, whose threads are not niced. Each one below is one frame of the
//! corresponding ImageNet-P sequence's recipe, at a small, fixed size.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use engine::{
    classify::top_k,
    device::DevicePolicy,
    preprocess::{self, Exif, ImageLimits, Preprocessor},
    runtime::Runtime,
    session::{ModelSession, SessionOptions},
};
use image::RgbImage;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{ServeError, batcher::BatchOutput, metrics::Metrics, repository::LoadedModel};

/// Samples waiting for the monitor at most; more are dropped (and counted).
pub const QUEUE_SAMPLES: usize = 64;
/// Bytes of encoded images waiting for the monitor at most; more are dropped (and counted).
pub const QUEUE_BYTES: usize = 64 << 20;
/// How often the monitor thread looks for unloaded versions while no sample arrives.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// One small perturbation the monitor applies to the model's crop (the `crop_width` x
/// `crop_height` RGB image the model sees, before any grey conversion and normalisation).
/// The `perturbation` label of the monitor's metrics is [`Perturbation::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perturbation {
    /// `gaussian_noise`: `clamp(x + 0.03 N(0, 1), 0, 1)` per channel value, x in [0, 1]:
    /// a frame of ImageNet-P's `gaussian_noise` at its smallest difficulty
    /// ([`Perturbation::NOISE_SIGMA`]).
    GaussianNoise,
    /// `brightness`: the HSV value raised by 0.05 ([`Perturbation::BRIGHTNESS_SHIFT`]), hue
    /// and saturation kept, as ImageNet-P's `brightness` frames do in steps of 0.02.
    Brightness,
    /// `translate`: the crop shifted right by [`Perturbation::translate_pixels`] pixels (4 at
    /// 224, 1 at 28), the uncovered left columns repeating the first column, as
    /// ImageNet-P's `translate` frames shift by whole pixels (1 px per frame at 224).
    Translate,
}

impl Perturbation {
    /// Every perturbation, in the order of the monitor's batch.
    pub const ALL: [Perturbation; 3] = [
        Perturbation::GaussianNoise,
        Perturbation::Brightness,
        Perturbation::Translate,
    ];

    /// Standard deviation of the Gaussian noise, in units of the full range [0, 1].
    pub const NOISE_SIGMA: f32 = 0.03;

    /// How much the HSV value (the largest channel, in [0, 1]) is raised.
    pub const BRIGHTNESS_SHIFT: f64 = 0.05;

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::GaussianNoise => "gaussian_noise",
            Perturbation::Brightness => "brightness",
            Perturbation::Translate => "translate",
        }
    }

    /// The translation for a crop `width` pixels wide: `max(1, round(width / 56))`, 4 px
    /// at 224 (under 2% of the width), 1 px at 28.
    pub fn translate_pixels(width: u32) -> u32 {
        ((f64::from(width) / 56.0).round() as u32).max(1)
    }

    /// The perturbed copy of `crop`; `rng` draws the noise.
    pub fn apply(self, crop: &RgbImage, rng: &mut impl Rng) -> RgbImage {
        match self {
            Perturbation::GaussianNoise => gaussian_noise(crop, Self::NOISE_SIGMA, rng),
            Perturbation::Brightness => brightness(crop, Self::BRIGHTNESS_SHIFT),
            Perturbation::Translate => translate(crop, Self::translate_pixels(crop.width())),
        }
    }
}

/// ImageNet-P's conversion back to 8 bits, `np.uint8(255 * x)`: truncation.
fn to_u8(x: f64) -> u8 {
    (255.0 * x.clamp(0.0, 1.0)) as u8
}

/// A standard normal draw (Box-Muller; `1 - u` keeps the logarithm's argument in (0, 1]).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1 = 1.0 - rng.random::<f32>();
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `clamp(x / 255 + sigma * N(0, 1), 0, 1)`, back to 8 bits by truncation, per channel value
/// (the reference's `gaussian_noise` frame).
fn gaussian_noise(crop: &RgbImage, sigma: f32, rng: &mut impl Rng) -> RgbImage {
    let mut out = crop.clone();
    for v in out.iter_mut() {
        let z = (f32::from(*v) / 255.0 + sigma * standard_normal(rng)).clamp(0.0, 1.0);
        *v = (z * 255.0) as u8;
    }
    out
}

/// The HSV value raised by `shift` (clamped to [0, 1]) with hue and saturation kept. With
/// hue and saturation fixed every channel is proportional to the value, so this scales each
/// pixel by `v' / v` (a black pixel becomes the grey `v'`): skimage's `rgb2hsv`, shift,
/// `hsv2rgb` without the round trip, equal up to the last bit of floating point.
fn brightness(crop: &RgbImage, shift: f64) -> RgbImage {
    let mut out = crop.clone();
    for p in out.pixels_mut() {
        let v = f64::from(p.0.iter().copied().max().unwrap_or(0)) / 255.0;
        let raised = (v + shift).clamp(0.0, 1.0);
        p.0 = if v == 0.0 {
            [to_u8(raised); 3]
        } else {
            p.0.map(|c| to_u8(f64::from(c) / 255.0 * raised / v))
        };
    }
    out
}

/// The image shifted right by `dx` pixels; the uncovered columns repeat the first column.
fn translate(crop: &RgbImage, dx: u32) -> RgbImage {
    RgbImage::from_fn(crop.width(), crop.height(), |x, y| {
        *crop.get_pixel(x.saturating_sub(dx), y)
    })
}

/// The top-1 class of one row of logits (ties to the lower index, as `/classify` ranks), or
/// `None` when a logit is not finite (such a row cannot be ranked).
pub fn top1(row: &[f32]) -> Option<usize> {
    if row.is_empty() || row.iter().any(|x| !x.is_finite()) {
        return None;
    }
    top_k(row, 1, &[]).first().map(|p| p.index)
}

/// The top-1 class image `index` of a request got, from the request's logits (`None` when
/// the row is missing or cannot be ranked).
fn live_top1(output: &BatchOutput, index: usize) -> Option<usize> {
    let start = index.checked_mul(output.classes)?;
    top1(output.logits.get(start..start.checked_add(output.classes)?)?)
}

/// The `model` and `version` labels of a model version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionKey {
    model: String,
    version: String,
}

/// One sampled live image.
struct Sample {
    key: VersionKey,
    /// The version that classified it (weak: a queued sample does not keep it loaded).
    model: Weak<LoadedModel>,
    /// The encoded image (a copy, so the request's body is not held).
    image: Bytes,
    /// The top-1 class the live request got.
    live_top1: usize,
}

/// What the handles share.
struct Shared {
    rate: f64,
    queue: Sender<Sample>,
    /// Bytes of the queued samples' images.
    queued_bytes: Arc<AtomicUsize>,
    byte_limit: usize,
    metrics: Arc<Metrics>,
}

/// Handle to the robustness monitor: cheap to clone; off when the rate is 0. Dropping every
/// handle stops the monitor thread once it has finished its current sample.
#[derive(Clone, Default)]
pub struct Monitor {
    shared: Option<Arc<Shared>>,
}

/// Images of one request picked for monitoring: their positions in the request and their
/// bytes (reference-counted, not yet copied).
pub type Picked = Vec<(usize, Bytes)>;

impl Monitor {
    /// The monitor that samples nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts the monitor thread, sampling each live image with probability `rate` (0 gives
    /// [`Monitor::off`] and starts nothing). Sessions are built in `runtime`; images are
    /// decoded under `limits` (the preprocessing pool's).
    pub fn start(rate: f64, runtime: Runtime, limits: ImageLimits, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        if !sampling(rate)? {
            return Ok(Self::off());
        }
        let (monitor, queue) = Self::with_queue(rate, QUEUE_SAMPLES, QUEUE_BYTES, metrics);
        let Some(shared) = &monitor.shared else {
            return Ok(monitor);
        };
        let worker = Worker {
            queue,
            queued_bytes: Arc::clone(&shared.queued_bytes),
            metrics: Arc::clone(&shared.metrics),
            runtime,
            limits,
            sessions: VersionCache::default(),
            rng: StdRng::from_os_rng(),
        };
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || worker.run())
            .map_err(|e| ServeError::Internal(format!("cannot start the robustness monitor: {e}")))?;
        tracing::info!(rate, "robustness monitor on");
        Ok(monitor)
    }

    /// A monitor whose queue the caller drains (the thread's side, or a test's).
    fn with_queue(rate: f64, samples: usize, bytes: usize, metrics: Arc<Metrics>) -> (Self, Receiver<Sample>) {
        let (tx, rx) = crossbeam_channel::bounded(samples);
        let shared = Shared {
            rate,
            queue: tx,
            queued_bytes: Arc::default(),
            byte_limit: bytes,
            metrics,
        };
        (
            Self {
                shared: Some(Arc::new(shared)),
            },
            rx,
        )
    }

    /// Whether the monitor samples anything.
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// Picks each image with the monitor's probability (nothing, without drawing, when off).
    /// Called before the request runs, since running consumes the images.
    pub fn pick(&self, images: &[Bytes]) -> Picked {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        images
            .iter()
            .enumerate()
            .filter(|_| rand::random::<f64>() < shared.rate)
            .map(|(i, b)| (i, b.clone()))
            .collect()
    }

    /// Offers the picked images of a request that `model` ran (`output` its logits) to the
    /// monitor, with the top-1 class each got. Never blocks: a sample the queue has no room
    /// for is dropped and counted. Rows that could not be ranked (non-finite logits) were
    /// not classified successfully and are skipped.
    pub fn offer(&self, model: &Arc<LoadedModel>, picked: Picked, output: &BatchOutput) {
        let Some(shared) = &self.shared else {
            return;
        };
        if picked.is_empty() {
            return;
        }
        let key = VersionKey {
            model: model.name.clone(),
            version: model.version.to_string(),
        };
        for (index, image) in picked {
            let Some(live_top1) = live_top1(output, index) else {
                continue;
            };
            shared.push(Sample {
                key: key.clone(),
                model: Arc::downgrade(model),
                image,
                live_top1,
            });
        }
    }
}

impl Shared {
    /// Queues a sample (copying its image) if there is room; otherwise counts it dropped.
    fn push(&self, mut sample: Sample) {
        let len = sample.image.len();
        let room = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(len).filter(|&n| n <= self.byte_limit)
            })
            .is_ok();
        let dropped = |key: &VersionKey| {
            self.metrics
                .monitor_dropped
                .with_label_values(&[&key.model, &key.version])
                .inc();
        };
        if !room {
            dropped(&sample.key);
            return;
        }
        if self.queue.is_full() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            dropped(&sample.key);
            return;
        }
        // A copy of just this image: the request's body (which may hold other images) is
        // freed when the request ends, whatever the queue holds.
        sample.image = Bytes::copy_from_slice(&sample.image);
        match self.queue.try_send(sample) {
            Ok(()) => {}
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                dropped(&s.key);
            }
        }
    }
}

/// Per-version state that lives exactly as long as the version: an entry is dropped once
/// its version has been unloaded (no strong reference left).
struct VersionCache<K, V> {
    entries: Vec<(Weak<K>, V)>,
}

impl<K, V> Default for VersionCache<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<K, V> VersionCache<K, V> {
    /// Drops the entries of versions that are gone.
    fn prune(&mut self) {
        self.entries.retain(|(version, _)| version.strong_count() > 0);
    }

    /// The entry of `version`, made by `make` if it has none.
    fn get_or_insert_with(&mut self, version: &Arc<K>, make: impl FnOnce() -> V) -> &mut V {
        let weak = Arc::downgrade(version);
        let at = match self.entries.iter().position(|(v, _)| v.ptr_eq(&weak)) {
            Some(at) => at,
            None => {
                self.entries.push((weak, make()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[at].1
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What the monitor keeps per model version.
struct VersionState {
    session: ModelSession,
    preprocessor: Preprocessor,
}

impl VersionState {
    /// A single-threaded session on the device the version runs on, and its preprocessing.
    fn load(runtime: &Runtime, model: &LoadedModel, limits: &ImageLimits) -> Result<Self, String> {
        let options = SessionOptions {
            device: model.device(),
            policy: DevicePolicy::Strict,
            intra_threads: 1,
            ..SessionOptions::default()
        };
        let session = ModelSession::load(runtime, &model.artifact, &options).map_err(|e| e.to_string())?;
        let preprocessor = Preprocessor::new((*model.spec).clone(), limits.clone()).map_err(|e| e.to_string())?;
        if session.image_len() != preprocessor.spec().tensor_len() {
            return Err(format!(
                "the session takes {} values per image, the preprocessing makes {}",
                session.image_len(),
                preprocessor.spec().tensor_len()
            ));
        }
        Ok(Self { session, preprocessor })
    }
}

/// Whether `rate` samples anything; an error when it is not a probability.
fn sampling(rate: f64) -> Result<bool, ServeError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate > 0.0)
    } else {
        Err(ServeError::Internal(format!("monitor rate {rate} is not in [0, 1]")))
    }
}

/// The monitor thread's state.
struct Worker {
    queue: Receiver<Sample>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    runtime: Runtime,
    limits: ImageLimits,
    /// `None` for a version whose session could not be built (reported once).
    sessions: VersionCache<LoadedModel, Option<VersionState>>,
    rng: StdRng,
}

impl Worker {
    fn run(mut self) {
        lowest_priority();
        loop {
            match self.queue.recv_timeout(PRUNE_EVERY) {
                Ok(sample) => self.handle(sample),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.sessions.prune();
        }
    }

    fn handle(&mut self, sample: Sample) {
        self.queued_bytes.fetch_sub(sample.image.len(), Ordering::AcqRel);
        // A version unloaded while its sample waited is not monitored any more.
        let Some(model) = sample.model.upgrade() else {
            return;
        };
        self.sessions.prune();
        let (runtime, limits) = (&self.runtime, &self.limits);
        let state = self.sessions.get_or_insert_with(&model, || {
            VersionState::load(runtime, &model, limits)
                .inspect_err(|e| {
                    tracing::warn!(
                        model = %sample.key.model,
                        version = %sample.key.version,
                        "robustness monitor off for this version: {e}"
                    )
                })
                .ok()
        });
        drop(model);
        let Some(state) = state else {
            return;
        };
        let rng = &mut self.rng;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            evaluate(&sample.image, &mut state.preprocessor, rng, |input, rows| {
                run_rows(&mut state.session, input, rows)
            })
        }));
        match outcome {
            Ok(Ok(verdict)) => {
                if verdict.clean != sample.live_top1 {
                    tracing::debug!(
                        model = %sample.key.model,
                        version = %sample.key.version,
                        live = sample.live_top1,
                        monitor = verdict.clean,
                        "the monitor's clean top-1 differs from the live request's"
                    );
                }
                record(&self.metrics, &sample.key, &verdict);
            }
            Ok(Err(e)) => tracing::debug!(model = %sample.key.model, "monitor skipped an image: {e}"),
            Err(_) => tracing::warn!(model = %sample.key.model, "monitor panicked on an image; skipped"),
        }
    }
}

/// Lowers the calling thread to the lowest priority: nice 19, and the `SCHED_IDLE` policy,
/// under which it runs only on a core that nothing else wants and is preempted as soon as
/// another thread wakes there (nice 19 alone still gets a share of a busy core). On Linux
/// both belong to each thread, and `pid = 0` names the calling one; threads it starts later
/// inherit them.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::warn!(
                "cannot lower the robustness monitor's priority: {}",
                std::io::Error::last_os_error()
            );
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call, which only reads it.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(
                "cannot move the robustness monitor to SCHED_IDLE: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs `rows` preprocessed images through `session` (in its fixed batch size, padded, if
/// it has one) and returns each image's top-1 class (`None` for a row that is not finite).
fn run_rows(session: &mut ModelSession, input: &[f32], rows: usize) -> Result<Vec<Option<usize>>, String> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let logits = session.infer_any(input, rows).map_err(|e| e.to_string())?;
    Ok(logits.rows().map(top1).collect())
}

/// The monitor's reading of one image: the clean crop's top-1 and each perturbed crop's.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    clean: usize,
    /// `None` where the perturbed crop's logits were not finite (no trial).
    perturbed: Vec<(Perturbation, Option<usize>)>,
}

/// Decodes and crops `image` as the live request did, perturbs the crop, and classifies the
/// clean crop and every perturbation in one batch through `classify` (rows of preprocessed
/// images -> top-1 per row).
fn evaluate(
    image: &[u8],
    preprocessor: &mut Preprocessor,
    rng: &mut impl Rng,
    classify: impl FnOnce(&[f32], usize) -> Result<Vec<Option<usize>>, String>,
) -> Result<Verdict, String> {
    let spec = preprocessor.spec().clone();
    let decoded = preprocess::decode(image, preprocessor.limits(), Exif::from_flag(spec.exif_orientation))
        .map_err(|e| e.to_string())?;
    let crop = preprocessor.resize_crop(&decoded).map_err(|e| e.to_string())?;
    let len = spec.tensor_len();
    let rows = 1 + Perturbation::ALL.len();
    let mut input = vec![0.0f32; rows * len];
    let mut slots = input.chunks_exact_mut(len);
    let mut put = |img: &RgbImage| -> Result<(), String> {
        let slot = slots.next().ok_or("more images than rows")?;
        preprocess::to_tensor(img, &spec, slot).map_err(|e| e.to_string())
    };
    put(&crop)?;
    for p in Perturbation::ALL {
        put(&p.apply(&crop, rng))?;
    }
    let top = classify(&input, rows)?;
    if top.len() != rows {
        return Err(format!("{} classes for {rows} images", top.len()));
    }
    let clean = top[0].ok_or("the clean crop's logits are not finite")?;
    Ok(Verdict {
        clean,
        perturbed: Perturbation::ALL.into_iter().zip(top[1..].iter().copied()).collect(),
    })
}

/// Counts one monitored image: a trial per perturbation, a flip where its top-1 differs from
/// the clean crop's, and the flip probability (flips / trials) so far.
fn record(metrics: &Metrics, key: &VersionKey, verdict: &Verdict) {
    metrics
        .monitor_images
        .with_label_values(&[&key.model, &key.version])
        .inc();
    for &(p, top) in &verdict.perturbed {
        let Some(top) = top else { continue };
        let labels = [key.model.as_str(), key.version.as_str(), p.name()];
        let trials = metrics.monitor_trials.with_label_values(&labels);
        let flips = metrics.monitor_flips.with_label_values(&labels);
        trials.inc();
        if top != verdict.clean {
            flips.inc();
        }
        metrics
            .monitor_flip_probability
            .with_label_values(&labels)
            .set(flips.get() as f64 / trials.get().max(1) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::preprocess::PreprocessSpec;
    use image::Rgb;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().unwrap())
    }

    fn key() -> VersionKey {
        VersionKey {
            model: "m".into(),
            version: "3".into(),
        }
    }

    fn sample(bytes: usize) -> Sample {
        Sample {
            key: key(),
            model: Weak::new(),
            image: Bytes::from(vec![7u8; bytes]),
            live_top1: 0,
        }
    }

    fn output(rows: &[&[f32]]) -> BatchOutput {
        BatchOutput {
            logits: rows.concat(),
            classes: rows[0].len(),
            queue: Duration::ZERO,
            inference: Duration::ZERO,
            batches: 1,
            ..BatchOutput::default()
        }
    }

    /// A picture with edges and every channel different, so each perturbation changes it.
    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 9 + y) as u8, (y * 7) as u8, (100 + x * 3) as u8])
        })
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn rate_zero_is_off_and_offers_nothing() {
        assert!(!sampling(0.0).unwrap());
        assert!(sampling(0.01).unwrap() && sampling(1.0).unwrap());
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(sampling(bad).is_err(), "{bad}");
        }
        let images = vec![Bytes::from_static(b"a"); 1000];
        let off = Monitor::off();
        assert!(!off.is_on());
        assert!(off.pick(&images).is_empty());
        // Even a queue at rate 0 is offered nothing.
        let (zero, rx) = Monitor::with_queue(0.0, 4, 1 << 20, metrics());
        assert!(zero.pick(&images).is_empty());
        assert!(rx.is_empty());
    }

    #[test]
    fn picking_follows_the_rate() {
        let (all, _rx) = Monitor::with_queue(1.0, 4, 1 << 20, metrics());
        let images: Vec<Bytes> = (0..50u8).map(|i| Bytes::from(vec![i])).collect();
        let picked = all.pick(&images);
        assert_eq!(
            picked.iter().map(|p| p.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert!(picked.iter().all(|(i, b)| b[0] as usize == *i));
        let (tenth, _rx) = Monitor::with_queue(0.1, 4, 1 << 20, metrics());
        let many = vec![Bytes::from_static(b"x"); 20_000];
        let n = tenth.pick(&many).len();
        // Binomial(20000, 0.1): mean 2000, sd 42; 1700..2300 is seven sd either side.
        assert!((1700..=2300).contains(&n), "{n} of 20000 picked at rate 0.1");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let m = metrics();
        let (monitor, rx) = Monitor::with_queue(1.0, 2, 1 << 20, Arc::clone(&m));
        let shared = monitor.shared.as_ref().unwrap();
        for _ in 0..5 {
            shared.push(sample(10));
        }
        let dropped = m.monitor_dropped.with_label_values(&["m", "3"]).get();
        assert_eq!((rx.len(), dropped), (2, 3));
        assert_eq!(shared.queued_bytes.load(Ordering::Acquire), 20);
        // The byte budget bounds the queue too: 2 MiB does not fit in 1 MiB.
        drop(rx.try_recv().unwrap());
        shared.queued_bytes.fetch_sub(10, Ordering::AcqRel);
        shared.push(sample(2 << 20));
        assert_eq!(m.monitor_dropped.with_label_values(&["m", "3"]).get(), 4);
        assert_eq!(rx.len(), 1);
        // A stopped monitor thread (receiver gone) counts drops too.
        drop(rx);
        shared.push(sample(10));
        assert_eq!(m.monitor_dropped.with_label_values(&["m", "3"]).get(), 5);
        assert_eq!(shared.queued_bytes.load(Ordering::Acquire), 10);
    }

    #[test]
    fn the_live_top1_comes_from_the_request_row_and_unrankable_rows_are_skipped() {
        let out = output(&[&[0.0, 2.0, 1.0], &[f32::NAN, 0.0, 0.0], &[5.0, 1.0, 5.0]]);
        let got: Vec<Option<usize>> = [0, 1, 2, 3, usize::MAX].map(|i| live_top1(&out, i)).to_vec();
        assert_eq!(got, [Some(1), None, Some(0), None, None]);
    }

    #[test]
    fn flips_are_counted_per_perturbation_with_their_probability() {
        let m = metrics();
        let k = key();
        use Perturbation::*;
        let verdicts = [
            (3, [Some(3), Some(3), Some(3)]),
            (3, [Some(4), Some(3), Some(3)]),
            (2, [Some(4), Some(2), None]),
            (2, [Some(2), Some(1), Some(2)]),
        ];
        for (clean, tops) in verdicts {
            let v = Verdict {
                clean,
                perturbed: Perturbation::ALL.into_iter().zip(tops).collect(),
            };
            record(&m, &k, &v);
        }
        let get = |p: Perturbation| {
            let l = ["m", "3", p.name()];
            (
                m.monitor_trials.with_label_values(&l).get(),
                m.monitor_flips.with_label_values(&l).get(),
                m.monitor_flip_probability.with_label_values(&l).get(),
            )
        };
        assert_eq!(get(GaussianNoise), (4, 2, 0.5));
        assert_eq!(get(Brightness), (4, 1, 0.25));
        assert_eq!(get(Translate), (3, 0, 0.0));
        assert_eq!(m.monitor_images.with_label_values(&["m", "3"]).get(), 4);
        let text = m.render().unwrap();
        assert!(
            text.contains(
                "hardy_monitor_flip_probability{model=\"m\",perturbation=\"gaussian_noise\",version=\"3\"} 0.5"
            ),
            "{text}"
        );
    }

    #[test]
    fn perturbations_are_small_and_what_they_say() {
        let crop = picture(56, 40);
        let mut rng = StdRng::seed_from_u64(1);
        // Noise: zero-mean, sigma 0.03 of the range (7.65 levels), clipped and truncated.
        let noisy = Perturbation::GaussianNoise.apply(&crop, &mut rng);
        let d: Vec<f64> = noisy
            .iter()
            .zip(crop.iter())
            .filter(|&(_, &c)| (20..=235).contains(&c))
            .map(|(&n, &c)| f64::from(n) - f64::from(c))
            .collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
        // Truncation lowers the mean by half a level.
        assert!((mean + 0.5).abs() < 0.5, "noise mean {mean}");
        assert!((sd - 7.65).abs() < 0.8, "noise sd {sd}");
        assert_ne!(noisy, Perturbation::GaussianNoise.apply(&crop, &mut rng), "fresh noise");

        // Brightness: the largest channel rises by 0.05 (12.75 levels), the ratios stay.
        let bright = Perturbation::Brightness.apply(&crop, &mut rng);
        for (p, q) in crop.pixels().zip(bright.pixels()) {
            let (v, w) = (p.0.iter().max().copied().unwrap(), q.0.iter().max().copied().unwrap());
            let want = (255.0 * ((f64::from(v) / 255.0) + 0.05).min(1.0)) as u8;
            assert!(w.abs_diff(want) <= 1, "{p:?} -> {q:?}");
            for c in 0..3 {
                let scaled = f64::from(p.0[c]) * f64::from(w) / f64::from(v.max(1));
                assert!((f64::from(q.0[c]) - scaled).abs() <= 1.5, "{p:?} -> {q:?}");
            }
        }
        let black = RgbImage::new(2, 2);
        assert_eq!(brightness(&black, 0.05).get_pixel(0, 0).0, [12, 12, 12]);

        // Translate: 1 px at 56 wide (round(56 / 56)), 4 at 224, 1 at 28.
        assert_eq!([28, 56, 224, 384].map(Perturbation::translate_pixels), [1, 1, 4, 7]);
        let moved = Perturbation::Translate.apply(&crop, &mut rng);
        assert_eq!(moved.dimensions(), crop.dimensions());
        for y in 0..40 {
            assert_eq!(moved.get_pixel(0, y), crop.get_pixel(0, y));
            for x in 1..56 {
                assert_eq!(moved.get_pixel(x, y), crop.get_pixel(x - 1, y));
            }
        }
    }

    #[test]
    fn evaluate_batches_the_clean_crop_then_each_perturbation() {
        // A 28x28 grey model's preprocessing of a 64x48 colour photo.
        let spec = PreprocessSpec {
            resize_size: 28,
            crop_height: 28,
            crop_width: 28,
            color: engine::preprocess::ColorMode::Gray,
            mean: vec![0.5],
            std: vec![0.5],
            ..PreprocessSpec::imagenet(28)
        };
        let mut pre = Preprocessor::new(spec.clone(), ImageLimits::default()).unwrap();
        let photo = picture(64, 48);
        let bytes = png(&photo);
        let mut live = vec![0.0; spec.tensor_len()];
        pre.preprocess(&bytes, &mut live).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = Vec::new();
        // The fake model's class: the index of the row, except the brightened crop, which
        // it sees as the clean crop's class.
        let verdict = evaluate(&bytes, &mut pre, &mut rng, |input, rows| {
            seen = input.chunks(spec.tensor_len()).map(<[f32]>::to_vec).collect();
            Ok((0..rows).map(|r| Some(if r == 2 { 0 } else { r })).collect())
        })
        .unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], live, "the clean row is the live request's tensor");
        for row in &seen[1..] {
            assert_ne!(row, &live);
        }
        assert_eq!(
            verdict,
            Verdict {
                clean: 0,
                perturbed: vec![
                    (Perturbation::GaussianNoise, Some(1)),
                    (Perturbation::Brightness, Some(0)),
                    (Perturbation::Translate, Some(3)),
                ],
            }
        );
        // Not an image, and a model answer of the wrong length: errors, not panics.
        assert!(evaluate(b"not an image", &mut pre, &mut rng, |_, r| Ok(vec![Some(0); r])).is_err());
        assert!(evaluate(&bytes, &mut pre, &mut rng, |_, _| Ok(vec![Some(0)])).is_err());
        assert!(evaluate(&bytes, &mut pre, &mut rng, |_, r| Ok(vec![None; r])).is_err());
    }

    #[test]
    fn per_version_state_is_dropped_with_its_version() {
        let mut cache: VersionCache<u32, &str> = VersionCache::default();
        let (v1, v2) = (Arc::new(1), Arc::new(2));
        *cache.get_or_insert_with(&v1, || "one") = "one, used";
        cache.get_or_insert_with(&v2, || "two");
        assert_eq!(*cache.get_or_insert_with(&v1, || "again"), "one, used");
        assert_eq!(cache.len(), 2);
        drop(v1);
        cache.prune();
        assert_eq!(cache.len(), 1);
        assert_eq!(*cache.get_or_insert_with(&v2, || "again"), "two");
    }

    #[test]
    fn top1_ranks_like_classify_and_refuses_non_finite_rows() {
        assert_eq!(top1(&[0.1, 3.0, 2.0]), Some(1));
        assert_eq!(top1(&[2.0, 1.0, 2.0]), Some(0));
        assert_eq!(top1(&[1.0, f32::INFINITY]), None);
        assert_eq!(top1(&[]), None);
    }
}
