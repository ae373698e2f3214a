//! The work behind the single-image robustness endpoints (`/attack`, `/corrupt`,
//! `/robustness`): adversarial images, corrupted images and the inputs of a robustness profile.
//!
//! It exists apart from the HTTP layer because the work is slow and blocking (ONNX Runtime
//! gradient runs, corruptions of a whole image) and must never run on actix's async threads,
//! and because it owns state the handlers must not: one [`Attacker`] (the model's gradient
//! graph in its own ONNX Runtime session) per model version, loaded on first use and dropped
//! once the version is gone, and the corruptor with its frost textures. It is an actor: a
//! cheap handle ([`Robust`]) and `max_robustness_requests` dedicated threads that take jobs
//! from a channel. A request takes a [`RobustPermit`] first; when that many requests hold one,
//! the next is refused at once (503), so the work queued here is bounded.
//!
//! Classification is not done here: the handlers run the images this module makes through the
//! model's batcher, the path `/classify` takes, so every prediction they report is the one
//! `/classify` would give.
//!
//! The attack works on the 8-bit image it returns: the image is decoded by the engine's one
//! decode path, resized as the model's preprocessing resizes it (without cropping), the crop
//! the model sees is attacked in `[0, 1]` pixels, the adversarial crop is quantised to 8 bits
//! (within `eps` levels of the clean crop) and put back into the resized image, which is
//! encoded as PNG. Classifying that PNG resizes it to its own size (the identity) and takes the
//! same crop, so the model sees exactly the quantised adversarial pixels.

use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use engine::{
    preprocess::{
        ColorMode, Exif, ImageError, ImageLimits, Layout, PreprocessSpec, decode, luma, resize_crop, to_tensor,
    },
    runtime::Runtime,
    session::SessionOptions,
};
use eval::{
    Corruption, Perturbation,
    attack::{AttackError, Attacker, PgdConfig},
    corrupt::{Corruptor, FrostSource, ops::jpeg_roundtrip_image},
};
use image::RgbImage;
use tokio::sync::oneshot;

use crate::{ServeError, repository::LoadedModel};

/// Largest image `/corrupt` works on, in pixels (1 Mi): some corruptions (glass blur, the
/// perturbation sequences) take seconds on a megapixel.
pub const MAX_CORRUPT_PIXELS: u64 = 1 << 20;

/// Largest resized image (the model's resize, before its crop) an attack builds and encodes,
/// in pixels (4 Mi): only images of extreme aspect ratio come near it.
pub const MAX_RESIZED_PIXELS: u64 = 1 << 22;

/// Largest attack radius, in 8-bit levels.
pub const MAX_EPS_LEVELS: u8 = 64;

/// Most PGD steps.
pub const MAX_PGD_STEPS: usize = 100;

/// Severities of the corruptions, as ImageNet-C has them.
pub const SEVERITIES: std::ops::RangeInclusive<u8> = 1..=5;

/// JPEG quality of the round trip after each corruption of a robustness profile, as the
/// released ImageNet-C files (and `hardy eval`'s generated corruptions) were stored.
pub const PROFILE_JPEG_QUALITY: u8 = 85;

/// Images of a robustness profile: the clean crop, then 19 corruptions x 5 severities.
pub const PROFILE_IMAGES: usize = 1 + Corruption::ALL.len() * 5;

/// How long a failure to fetch the frost textures is remembered before trying again.
const FROST_RETRY: Duration = Duration::from_secs(60);

/// How often an idle worker drops the attackers of model versions that are gone.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// FGSM or PGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackMethod {
    /// One signed-gradient step of `eps`.
    Fgsm,
    /// Projected gradient descent in the L-infinity ball of `eps` (random start, step
    /// `2.5 eps / steps`, seed 0).
    Pgd,
}

impl AttackMethod {
    /// `fgsm` or `pgd`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fgsm => "fgsm",
            Self::Pgd => "pgd",
        }
    }
}

/// What to attack with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttackRequest {
    /// FGSM or PGD.
    pub method: AttackMethod,
    /// The L-infinity radius in 8-bit levels, `1..=MAX_EPS_LEVELS`.
    pub eps: u8,
    /// PGD steps, `1..=MAX_PGD_STEPS` (FGSM ignores it).
    pub steps: usize,
}

/// An adversarial image, as it is returned.
#[derive(Debug, Clone)]
pub struct AttackedImage {
    /// The PNG: the uploaded image resized as the model resizes it, with its crop replaced by
    /// the quantised adversarial crop (grey for a grey model).
    pub png: Vec<u8>,
    /// The largest change of a crop pixel value from the clean image, in 8-bit levels.
    pub linf: u8,
    /// The PNG's width.
    pub width: u32,
    /// The PNG's height.
    pub height: u32,
}

/// A corruption or a perturbation, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distortion {
    /// An ImageNet-C corruption.
    Corruption(Corruption),
    /// An ImageNet-P perturbation; see [`perturbation_frame`] for what a severity picks.
    Perturbation(Perturbation),
}

impl Distortion {
    /// Finds `name` among the corruptions, else the perturbations; `kind` (`corruption` or
    /// `perturbation`) chooses when the name is both (`gaussian_noise`, `snow`, ...).
    pub fn parse(name: &str, kind: Option<&str>) -> Result<Self, String> {
        let corruption = name.parse::<Corruption>();
        let perturbation = name.parse::<Perturbation>();
        match kind {
            None => corruption.map(Self::Corruption).or_else(|_| {
                perturbation.map(Self::Perturbation).map_err(|_| {
                    format!(
                        "name {name:?} is neither a corruption ({}) nor a perturbation ({})",
                        Corruption::ALL.map(|c| c.name()).join(", "),
                        Perturbation::ALL.map(|p| p.name()).join(", ")
                    )
                })
            }),
            Some("corruption") => corruption.map(Self::Corruption).map_err(|e| format!("name: {e}")),
            Some("perturbation") => perturbation.map(Self::Perturbation).map_err(|e| format!("name: {e}")),
            Some(other) => Err(format!("kind {other:?} is not `corruption` or `perturbation`")),
        }
    }
}

/// What to corrupt an image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptRequest {
    /// The corruption or perturbation.
    pub distortion: Distortion,
    /// 1..=5.
    pub severity: u8,
    /// Seed of the random draws (noise, snow, frost texture, ...).
    pub seed: u64,
}

/// For a perturbation at `severity` (1..=5): its difficulty (the noises' level, 1..=3:
/// `ceil(3 severity / 5)`; 1 for the others, which have one sequence) and the frame of the
/// sequence returned: frame `6 severity` of the 31 (the sequence's growth from the clean frame
/// 0 to its end 30), or for translate frame `20 + 4 severity` of the 41, a shift of
/// `4 severity` pixels at 224 (scaled with the image, as ImageNet-P's generator scales).
pub fn perturbation_frame(perturbation: Perturbation, severity: u8) -> (u8, usize) {
    let difficulty = if perturbation.is_noise() {
        (3 * severity).div_ceil(5).clamp(1, 3)
    } else {
        1
    };
    let frame = match perturbation {
        Perturbation::Translate => 20 + 4 * usize::from(severity),
        _ => 6 * usize::from(severity),
    };
    (difficulty, frame)
}

/// One running single-image robustness request. Cloned into the jobs it sends, so its place
/// is given back only when the request and all its work are done (a client that goes away
/// does not free a place its job still uses).
#[derive(Clone)]
pub struct RobustPermit(#[allow(dead_code)] Arc<Place>);

struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type Job = Box<dyn FnOnce(&Shared) + Send>;

/// Handle to the robustness threads. Dropping it lets them finish their jobs and stop.
pub struct Robust {
    jobs: crossbeam_channel::Sender<Job>,
    running: Arc<AtomicUsize>,
    limit: usize,
}

/// One model version's attacker: loaded on first use; a load failure is kept (the model's
/// graph will not become differentiable by asking again).
type AttackerSlot = Arc<Mutex<Option<Result<Attacker, String>>>>;

/// The attackers by model name and version, each with the version it was made for.
type Attackers = HashMap<(String, u64), (Weak<LoadedModel>, AttackerSlot)>;

/// What the worker threads share.
struct Shared {
    runtime: Runtime,
    session: SessionOptions,
    attackers: Mutex<Attackers>,
    plain: Corruptor,
    frost: Mutex<FrostState>,
}

#[derive(Default)]
struct FrostState {
    corruptor: Option<Arc<Corruptor>>,
    failed: Option<(Instant, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Robust {
    /// Starts `limit` threads; at most `limit` requests hold a permit at once. Attackers are
    /// loaded with `runtime` and `session` (the device and threads models are served with).
    pub fn new(limit: usize, runtime: Runtime, session: SessionOptions) -> Result<Self, ServeError> {
        let limit = limit.max(1);
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let shared = Arc::new(Shared {
            runtime,
            session,
            attackers: Mutex::default(),
            plain: Corruptor::default(),
            frost: Mutex::default(),
        });
        for i in 0..limit {
            let (rx, shared) = (rx.clone(), Arc::clone(&shared));
            std::thread::Builder::new()
                .name(format!("robust-{i}"))
                .spawn(move || work(&rx, &shared))
                .map_err(|e| ServeError::Internal(format!("cannot start the robustness threads: {e}")))?;
        }
        Ok(Self {
            jobs: tx,
            running: Arc::new(AtomicUsize::new(0)),
            limit,
        })
    }

    /// A place for one request, or 503 when `limit` requests hold one.
    pub fn admit(&self) -> Result<RobustPermit, ServeError> {
        let limit = self.limit;
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .map_err(|_| ServeError::RobustnessBusy { limit })?;
        Ok(RobustPermit(Arc::new(Place(Arc::clone(&self.running)))))
    }

    /// Runs `work` on a robustness thread and waits for it without blocking the caller. If the
    /// caller stops waiting before a thread takes it, it never runs.
    async fn run<T, F>(&self, permit: &RobustPermit, work: F) -> Result<T, ServeError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, ServeError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let held = permit.clone();
        let job: Job = Box::new(move |shared| {
            if tx.is_closed() {
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(|| work(shared)))
                .unwrap_or_else(|_| Err(ServeError::Internal("a robustness thread panicked".into())));
            // The place is free before the answer leaves, so a client that sends its next
            // request on the answer finds it free.
            drop(held);
            let _ = tx.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| ServeError::Unavailable("the robustness threads stopped".into()))?;
        rx.await
            .map_err(|_| ServeError::Internal("the robustness threads dropped a request".into()))?
    }

    /// Attacks the crop `model` classifies of the encoded image `image`; see the module
    /// comment.
    pub async fn attack(
        &self,
        permit: &RobustPermit,
        model: Arc<LoadedModel>,
        image: bytes::Bytes,
        request: AttackRequest,
    ) -> Result<AttackedImage, ServeError> {
        self.run(permit, move |shared| {
            let slot = shared.attacker(&model);
            let mut slot = lock(&slot);
            if slot.is_none() {
                let t = Instant::now();
                let loaded =
                    Attacker::load(&shared.runtime, &model.artifact, &shared.session).map_err(|e| e.to_string());
                match &loaded {
                    Ok(_) => tracing::info!(
                        model = %model.name,
                        version = model.version,
                        "attacker (gradient graph) loaded in {:.0} ms",
                        t.elapsed().as_secs_f64() * 1e3
                    ),
                    Err(e) => tracing::warn!(model = %model.name, version = model.version, "cannot attack: {e}"),
                }
                *slot = Some(loaded);
            }
            match slot.as_mut() {
                Some(Ok(attacker)) => attack_image(attacker, &model.spec, &image, request),
                Some(Err(e)) => Err(ServeError::NotSupported(format!(
                    "model {}:{} cannot be attacked: {e}",
                    model.name, model.version
                ))),
                None => Err(ServeError::Internal("the attacker slot is empty".into())),
            }
        })
        .await
    }

    /// The encoded image corrupted as `request` says, as PNG.
    pub async fn corrupt(
        &self,
        permit: &RobustPermit,
        image: bytes::Bytes,
        request: CorruptRequest,
    ) -> Result<Vec<u8>, ServeError> {
        self.run(permit, move |shared| {
            let frost = matches!(request.distortion, Distortion::Corruption(Corruption::Frost));
            let corruptor = if frost { Some(shared.frost_corruptor()?) } else { None };
            corrupt_image(corruptor.as_deref().unwrap_or(&shared.plain), &image, request)
        })
        .await
    }

    /// The model inputs of a robustness profile of the encoded image: the normalised tensors
    /// of its crop, then of the crop under each corruption ([`Corruption::ALL`] order) at
    /// severities 1..=5, each stored as JPEG at quality 85 and read back ([`PROFILE_IMAGES`]
    /// images, back to back).
    pub async fn profile_inputs(
        &self,
        permit: &RobustPermit,
        spec: Arc<PreprocessSpec>,
        image: bytes::Bytes,
    ) -> Result<Vec<f32>, ServeError> {
        self.run(permit, move |shared| {
            profile_inputs(&*shared.frost_corruptor()?, &spec, &image)
        })
        .await
    }
}

/// A worker: runs jobs until the handle is dropped; when idle, drops the attackers of model
/// versions that are gone.
fn work(jobs: &crossbeam_channel::Receiver<Job>, shared: &Shared) {
    loop {
        match jobs.recv_timeout(SWEEP_EVERY) {
            Ok(job) => job(shared),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => shared.sweep(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Shared {
    /// Drops the attackers of model versions no longer loaded (unloaded or replaced).
    fn sweep(&self) {
        lock(&self.attackers).retain(|_, (model, _)| model.strong_count() > 0);
    }

    /// The attacker slot of this loaded version (a reloaded version gets a new one).
    fn attacker(&self, model: &Arc<LoadedModel>) -> AttackerSlot {
        let mut map = lock(&self.attackers);
        map.retain(|_, (m, _)| m.strong_count() > 0);
        let key = (model.name.clone(), model.version);
        let current = Arc::downgrade(model);
        let entry = map.entry(key).or_insert_with(|| (current.clone(), Arc::default()));
        if !Weak::ptr_eq(&entry.0, &current) {
            *entry = (current, Arc::default());
        }
        Arc::clone(&entry.1)
    }

    /// The corruptor with the frost textures (fetched into Hardy's cache on first use); 503
    /// when they cannot be had (offline, say), retried a minute later.
    fn frost_corruptor(&self) -> Result<Arc<Corruptor>, ServeError> {
        let mut state = lock(&self.frost);
        if let Some(c) = &state.corruptor {
            return Ok(Arc::clone(c));
        }
        if let Some((at, reason)) = &state.failed
            && at.elapsed() < FROST_RETRY
        {
            return Err(ServeError::Unavailable(format!(
                "the frost corruption needs its textures, which could not be fetched: {reason}"
            )));
        }
        match Corruptor::new(Some(FrostSource::Provisioned)) {
            Ok(c) => {
                let c = Arc::new(c);
                state.corruptor = Some(Arc::clone(&c));
                state.failed = None;
                Ok(c)
            }
            Err(e) => {
                tracing::warn!("cannot load the frost textures: {e}");
                let reason = e.to_string();
                state.failed = Some((Instant::now(), reason.clone()));
                Err(ServeError::Unavailable(format!(
                    "the frost corruption needs its textures, which could not be fetched: {reason}"
                )))
            }
        }
    }
}

/// An error of the (one) uploaded image: 400 `image 0: ...`, as `/classify` answers it (the
/// attack classifies the upload at the same time, so both must answer alike).
fn image_error(e: ImageError) -> ServeError {
    ServeError::BadImage {
        index: 0,
        reason: e.to_string(),
    }
}

/// Encodes an 8-bit image as PNG.
fn png(img: &image::DynamicImage) -> Result<Vec<u8>, ServeError> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| ServeError::Internal(format!("cannot encode the PNG: {e}")))?;
    Ok(out)
}

/// The uploaded image resized as `spec` resizes it (shorter side to `resize_size`), without
/// the crop; for a grey model, its luma in all three channels (what the model sees of it).
fn resized(img: &RgbImage, spec: &PreprocessSpec) -> Result<RgbImage, ServeError> {
    let (w, h) = spec.resized_size(img.width(), img.height());
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(ServeError::BadImage {
            index: 0,
            reason: format!(
                "resizing {}x{} to a shorter side of {} gives an empty image",
                img.width(),
                img.height(),
                spec.resize_size
            ),
        });
    }
    if pixels > MAX_RESIZED_PIXELS {
        return Err(ServeError::ImageTooLarge(format!(
            "the image is {}x{}, which the model's resize makes {w}x{h}; an attack works on at most {MAX_RESIZED_PIXELS} resized pixels (an aspect ratio too extreme)",
            img.width(),
            img.height()
        )));
    }
    let whole = PreprocessSpec {
        crop_width: w,
        crop_height: h,
        ..spec.clone()
    };
    let mut out = resize_crop(img, &whole).map_err(image_error)?;
    if spec.color == ColorMode::Gray {
        for p in out.pixels_mut() {
            let v = luma(p[0], p[1], p[2]);
            p.0 = [v; 3];
        }
    }
    Ok(out)
}

/// Where value `i` of one image's tensor lies: (channel, x, y) of the crop.
fn tensor_position(i: usize, spec: &PreprocessSpec) -> (usize, u32, u32) {
    let (w, plane) = (
        spec.crop_width as usize,
        spec.crop_width as usize * spec.crop_height as usize,
    );
    let channels = spec.channels();
    let (c, pixel) = match spec.layout {
        Layout::Nchw => (i / plane, i % plane),
        Layout::Nhwc => (i % channels, i / channels),
    };
    (c, (pixel % w) as u32, (pixel / w) as u32)
}

/// 8-bit level of a `[0, 1]` pixel value: rounded, clipped.
fn level(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// The attack itself: see the module comment.
fn attack_image(
    attacker: &mut Attacker,
    spec: &PreprocessSpec,
    bytes: &[u8],
    request: AttackRequest,
) -> Result<AttackedImage, ServeError> {
    let img = decode(bytes, &ImageLimits::default(), Exif::from_flag(spec.exif_orientation)).map_err(image_error)?;
    let mut whole = resized(&img, spec)?;
    drop(img);
    let crop = resize_crop(&whole, spec).map_err(image_error)?;
    let mut clean = vec![0f32; spec.tensor_len()];
    eval::attack::pixels(&crop, spec, &mut clean).map_err(attack_error)?;
    let eps = f32::from(request.eps) / 255.0;
    let outcome = match request.method {
        AttackMethod::Fgsm => attacker.fgsm(&clean, 1, None, eps),
        AttackMethod::Pgd => attacker.pgd(&clean, 1, None, &PgdConfig::standard(eps, request.steps, 0)),
    }
    .map_err(attack_error)?;
    if outcome.adversarial.len() != clean.len() {
        return Err(ServeError::Internal(format!(
            "the attack returned {} pixel values for an image of {}",
            outcome.adversarial.len(),
            clean.len()
        )));
    }
    let window = spec.crop_window(whole.width(), whole.height());
    let grey = spec.color == ColorMode::Gray;
    let mut linf = 0u8;
    for (i, (&x0, &x)) in clean.iter().zip(&outcome.adversarial).enumerate() {
        let (c, cx, cy) = tensor_position(i, spec);
        // Crop pixels in the padding are not in the image: they stay as they are (black).
        let inside = (window.crop_x..window.crop_x + window.width).contains(&cx)
            && (window.crop_y..window.crop_y + window.height).contains(&cy);
        if !inside {
            continue;
        }
        let l0 = level(x0);
        let l = level(x).clamp(l0.saturating_sub(request.eps), l0.saturating_add(request.eps));
        linf = linf.max(l.abs_diff(l0));
        let p = whole.get_pixel_mut(cx - window.crop_x + window.x, cy - window.crop_y + window.y);
        if grey {
            p.0 = [l; 3];
        } else {
            p.0[c] = l;
        }
    }
    let (width, height) = whole.dimensions();
    let encoded = if grey {
        let luma = image::GrayImage::from_fn(width, height, |x, y| image::Luma([whole.get_pixel(x, y)[0]]));
        png(&image::DynamicImage::ImageLuma8(luma))?
    } else {
        png(&image::DynamicImage::ImageRgb8(whole))?
    };
    Ok(AttackedImage {
        png: encoded,
        linf,
        width,
        height,
    })
}

fn attack_error(e: AttackError) -> ServeError {
    match e {
        AttackError::Unsupported { .. } | AttackError::Attribute { .. } | AttackError::Model(_) => {
            ServeError::NotSupported(e.to_string())
        }
        e => ServeError::Internal(format!("attack failed: {e}")),
    }
}

/// `/corrupt`'s work: decode (at most [`MAX_CORRUPT_PIXELS`], EXIF orientation applied),
/// corrupt or perturb, encode as PNG.
fn corrupt_image(corruptor: &Corruptor, bytes: &[u8], request: CorruptRequest) -> Result<Vec<u8>, ServeError> {
    let limits = ImageLimits {
        max_pixels: MAX_CORRUPT_PIXELS,
        ..ImageLimits::default()
    };
    let img = decode(bytes, &limits, Exif::Apply).map_err(|e| match e {
        ImageError::TooLarge { .. } | ImageError::TooManyBytes { .. } => ServeError::ImageTooLarge(format!(
            "{e}: /corrupt works on images of at most {MAX_CORRUPT_PIXELS} pixels"
        )),
        e => image_error(e),
    })?;
    let out = match request.distortion {
        Distortion::Corruption(c) => corruptor
            .apply(&img, c, request.severity, request.seed)
            .map_err(|e| ServeError::Internal(format!("corruption {} failed: {e}", c.name())))?,
        Distortion::Perturbation(p) => {
            let (difficulty, frame) = perturbation_frame(p, request.severity);
            let side = img.width().min(img.height());
            let mut frames = eval::perturb::sequence(&img, p, difficulty, request.seed, side)
                .map_err(|e| ServeError::Internal(format!("perturbation {} failed: {e}", p.name())))?;
            let last = frames.len().saturating_sub(1);
            if frames.is_empty() {
                return Err(ServeError::Internal(format!("perturbation {} made no frame", p.name())));
            }
            frames.swap_remove(frame.min(last))
        }
    };
    png(&image::DynamicImage::ImageRgb8(out))
}

/// See [`Robust::profile_inputs`].
fn profile_inputs(corruptor: &Corruptor, spec: &PreprocessSpec, bytes: &[u8]) -> Result<Vec<f32>, ServeError> {
    let img = decode(bytes, &ImageLimits::default(), Exif::from_flag(spec.exif_orientation)).map_err(image_error)?;
    let crop = resize_crop(&img, spec).map_err(image_error)?;
    drop(img);
    let len = spec.tensor_len();
    let mut out = vec![0f32; PROFILE_IMAGES * len];
    let mut rows = out.chunks_exact_mut(len);
    let tensor_error = |e: ImageError| ServeError::Internal(format!("cannot make the model input: {e}"));
    to_tensor(&crop, spec, rows.next().ok_or(ServeError::Internal("no row".into()))?).map_err(tensor_error)?;
    for c in Corruption::ALL {
        for s in SEVERITIES {
            let corrupted = corruptor
                .apply(&crop, c, s, 0)
                .map_err(|e| ServeError::Internal(format!("corruption {} failed: {e}", c.name())))?;
            let stored = jpeg_roundtrip_image(&corrupted, PROFILE_JPEG_QUALITY);
            to_tensor(&stored, spec, rows.next().ok_or(ServeError::Internal("no row".into()))?)
                .map_err(tensor_error)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_corruptions_first_and_kind_chooses() {
        assert_eq!(
            Distortion::parse("snow", None),
            Ok(Distortion::Corruption(Corruption::Snow))
        );
        assert_eq!(
            Distortion::parse("snow", Some("perturbation")),
            Ok(Distortion::Perturbation(Perturbation::Snow))
        );
        assert_eq!(
            Distortion::parse("translate", None),
            Ok(Distortion::Perturbation(Perturbation::Translate))
        );
        assert!(Distortion::parse("translate", Some("corruption")).is_err());
        assert!(Distortion::parse("nope", None).unwrap_err().contains("nope"));
        assert!(Distortion::parse("fog", Some("weather")).unwrap_err().contains("kind"));
    }

    #[test]
    fn perturbation_severities_pick_frames_inside_the_sequence() {
        for p in Perturbation::ALL {
            for s in SEVERITIES {
                let (d, f) = perturbation_frame(p, s);
                assert!(eval::perturb::difficulties(p).contains(&d), "{p:?} {s}");
                assert!(f < eval::perturb::frame_count(p), "{p:?} {s}: frame {f}");
            }
        }
        assert_eq!(perturbation_frame(Perturbation::Translate, 5), (1, 40));
        assert_eq!(perturbation_frame(Perturbation::GaussianNoise, 1), (1, 6));
        assert_eq!(perturbation_frame(Perturbation::GaussianNoise, 5), (3, 30));
    }

    #[test]
    fn tensor_positions_follow_the_layout() {
        let mut spec = PreprocessSpec::imagenet(4);
        spec.crop_width = 3;
        spec.crop_height = 2;
        // NCHW: value 6 + 4 is channel 1, pixel 4 = (1, 1).
        assert_eq!(tensor_position(10, &spec), (1, 1, 1));
        spec.layout = Layout::Nhwc;
        // NHWC: value 3 * 4 + 2 is pixel 4 = (1, 1), channel 2.
        assert_eq!(tensor_position(14, &spec), (2, 1, 1));
        assert_eq!(level(1.2), 255);
        assert_eq!(level(-0.1), 0);
        assert_eq!(level(128.0 / 255.0), 128);
    }

    #[test]
    fn the_limit_of_running_requests_holds_until_their_work_is_done() {
        let runtime_free = Robust {
            jobs: crossbeam_channel::unbounded().0,
            running: Arc::new(AtomicUsize::new(0)),
            limit: 2,
        };
        let a = runtime_free.admit().unwrap();
        let job_copy = a.clone();
        let _b = runtime_free.admit().unwrap();
        assert!(matches!(
            runtime_free.admit(),
            Err(ServeError::RobustnessBusy { limit: 2 })
        ));
        drop(a);
        assert!(runtime_free.admit().is_err(), "a job still holds the first place");
        drop(job_copy);
        assert!(runtime_free.admit().is_ok());
    }

    #[test]
    fn oversized_and_broken_images_are_413_and_400() {
        let big = image::RgbImage::new(1025, 1025);
        let bytes = png(&image::DynamicImage::ImageRgb8(big)).unwrap();
        let request = CorruptRequest {
            distortion: Distortion::Corruption(Corruption::Contrast),
            severity: 1,
            seed: 0,
        };
        let e = corrupt_image(&Corruptor::default(), &bytes, request).unwrap_err();
        assert!(matches!(e, ServeError::ImageTooLarge(_)), "{e}");
        let e = corrupt_image(&Corruptor::default(), b"not an image", request).unwrap_err();
        assert!(matches!(e, ServeError::BadImage { index: 0, .. }), "{e}");
    }
}
