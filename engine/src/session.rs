//! One ONNX Runtime session for one model, with the checks that make its errors readable.
//!
//! `Session::run` takes `&mut self`, so a [`ModelSession`] belongs to one thread at a time;
//! [`crate::pool`] gives each worker thread its own. At load time the model's input and
//! output are checked against the artifact's config (names, element type, rank, channels,
//! resolution, label count), so a mismatch is reported once, naming the file and the shapes,
//! instead of surfacing as an opaque ORT error on the first request.

use std::{path::PathBuf, sync::Arc};

use ort::{
    session::{RunOptions, Session, builder::GraphOptimizationLevel},
    value::{TensorElementType, TensorRef, ValueType},
};

use crate::{
    artifact::ModelArtifact,
    device::{Device, DevicePolicy},
    preprocess::Layout,
    runtime::Runtime,
};

/// How to build a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The device asked for.
    pub device: Device,
    /// What to do when that device cannot be used.
    pub policy: DevicePolicy,
    /// ONNX Runtime intra-op threads per session; 0 lets ORT choose (one per core).
    pub intra_threads: usize,
    /// Whether the intra-op threads spin (busy-wait) for work between operators while a run
    /// is in progress, instead of sleeping (ORT's `session.intra_op.allow_spinning`; on by
    /// default, as in ORT). They stop spinning when the last run returns either way (see
    /// [`session_builder`]). Turn it off where sessions take turns on the same cores with
    /// little in between: two sessions taking turns on 2 cores ran at half speed each while
    /// they spun (benches/README.md, "Attack step").
    pub spin: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            device: Device::default(),
            policy: DevicePolicy::default(),
            intra_threads: 0,
            spin: true,
        }
    }
}

/// Why a session could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// ONNX Runtime rejected the model or failed while running it.
    #[error("{}: ONNX Runtime {stage}: {reason}", model.display())]
    Ort {
        /// The model file.
        model: PathBuf,
        /// What was being done: "load", "run", ...
        stage: &'static str,
        /// ORT's message.
        reason: String,
    },
    /// The model's inputs or outputs do not fit its config or Hardy's expectations.
    #[error("{}: {reason}", model.display())]
    Signature {
        /// The model file.
        model: PathBuf,
        /// What does not match, with the shapes involved.
        reason: String,
    },
    /// A batch whose data length does not match `batch x image size`.
    #[error("batch of {batch} needs {expected} values ({batch} x {per_image}), got {got}")]
    BatchShape {
        /// Images in the batch.
        batch: usize,
        /// Values per image.
        per_image: usize,
        /// `batch * per_image`.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A batch larger than the model can take.
    #[error("batch of {batch} exceeds this model's maximum of {max}")]
    BatchTooLarge {
        /// Images in the batch.
        batch: usize,
        /// The most the model takes in one run.
        max: usize,
    },
    /// The requested device could not be used and the policy is strict.
    #[error("cannot run on {device}: {reason}")]
    Device {
        /// The device asked for.
        device: Device,
        /// The execution provider's error.
        reason: String,
    },
    /// The inference worker pool has stopped.
    #[error("inference workers for {0} have stopped")]
    WorkersGone(String),
}

/// Logits for a batch: `batch` rows of `classes` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Rows in the batch.
    pub batch: usize,
    /// Values per row.
    pub classes: usize,
    /// Row-major values, `batch * classes` long.
    pub data: Vec<f32>,
    /// ONNX Runtime's time running the session for them (summed over runs).
    pub run: std::time::Duration,
}

impl Logits {
    /// The logits of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }

    /// Iterates over the rows.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.classes.max(1))
    }
}

/// What a loaded model takes and gives, as checked at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// The input fed with preprocessed images.
    pub input_name: String,
    /// The logits output.
    pub output_name: String,
    /// Per-image dims in the model's layout (e.g. `[3, 224, 224]` for NCHW).
    pub image_dims: [usize; 3],
    /// Number of classes (logits per image).
    pub classes: usize,
    /// The model's fixed batch size, if its batch dimension is not dynamic.
    pub fixed_batch: Option<usize>,
    /// The device the session actually runs on.
    pub device: Device,
}

/// A loaded model, ready to run batches on one thread.
pub struct ModelSession {
    session: Session,
    /// Runs go through these options when a [`StopSignal`] is attached.
    stop: Option<StopSignal>,
    model: PathBuf,
    input_name: String,
    output_name: String,
    /// Per-image dims in the model's layout (e.g. `[3, 224, 224]` for NCHW).
    image_dims: [usize; 3],
    per_image: usize,
    classes: usize,
    fixed_batch: Option<usize>,
    device: Device,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession")
            .field("model", &self.model)
            .field("input", &self.input_name)
            .field("output", &self.output_name)
            .field("image_dims", &self.image_dims)
            .field("classes", &self.classes)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl ModelSession {
    /// Loads `artifact` into a new session on the device `options` asks for (or CPU, when the
    /// policy allows falling back) and checks its signature against the artifact's config.
    pub fn load(runtime: &Runtime, artifact: &ModelArtifact, options: &SessionOptions) -> Result<Self, InferenceError> {
        let model = artifact.model_path.clone();
        let (mut builder, device) = session_builder(runtime, options, &model)?;
        let session = builder.commit_from_file(&model).map_err(ort_error(&model, "load"))?;
        Self::check_signature(session, artifact, device)
    }

    fn check_signature(session: Session, artifact: &ModelArtifact, device: Device) -> Result<Self, InferenceError> {
        let model = artifact.model_path.clone();
        let bad = |reason: String| InferenceError::Signature {
            model: model.clone(),
            reason,
        };
        let cfg = &artifact.config;
        let input = pick_outlet(session.inputs(), cfg.input_name.as_deref(), "input", true).map_err(bad)?;
        let output = pick_outlet(session.outputs(), cfg.output_name.as_deref(), "output", false).map_err(bad)?;
        let (in_ty, in_shape) =
            tensor_sig(input.dtype()).ok_or_else(|| bad(format!("input {:?} is not a tensor", input.name())))?;
        if in_ty != TensorElementType::Float32 {
            return Err(bad(format!(
                "input {:?} has element type {in_ty}, Hardy feeds float32",
                input.name()
            )));
        }
        let spec = cfg.preprocess_spec();
        let channels = spec.channels() as i64;
        let (h, w) = (spec.crop_height as i64, spec.crop_width as i64);
        let expected: [i64; 3] = match spec.layout {
            Layout::Nchw => [channels, h, w],
            Layout::Nhwc => [h, w, channels],
        };
        if in_shape.len() != 4
            || in_shape[1..]
                .iter()
                .zip(expected)
                .any(|(&got, want)| got >= 0 && got != want)
        {
            return Err(bad(format!(
                "input {:?} has shape {in_shape:?}, but the config ({:?}, {} channel(s), crop {h}x{w}) needs [batch, {}, {}, {}]",
                input.name(),
                spec.layout,
                channels,
                expected[0],
                expected[1],
                expected[2]
            )));
        }
        let (out_ty, out_shape) =
            tensor_sig(output.dtype()).ok_or_else(|| bad(format!("output {:?} is not a tensor", output.name())))?;
        if out_ty != TensorElementType::Float32 || out_shape.len() != 2 || out_shape[1] <= 0 {
            return Err(bad(format!(
                "output {:?} is {out_ty} {out_shape:?}; Hardy expects float32 logits [batch, classes]",
                output.name()
            )));
        }
        let classes = out_shape[1] as usize;
        if !cfg.labels.is_empty() && cfg.labels.len() != classes {
            return Err(bad(format!(
                "the config has {} labels but the model outputs {classes} classes",
                cfg.labels.len()
            )));
        }
        let fixed_batch = (in_shape[0] > 0).then_some(in_shape[0] as usize);
        let image_dims = expected.map(|d| d as usize);
        Ok(Self {
            input_name: input.name().to_string(),
            output_name: output.name().to_string(),
            per_image: image_dims.iter().product(),
            image_dims,
            classes,
            fixed_batch,
            device,
            model,
            session,
            stop: None,
        })
    }

    /// Attaches `stop`: once it is raised, a run in progress fails at its next operator (and
    /// later runs at once), so a long batch can be abandoned from another thread.
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Runs a batch of `batch` preprocessed images laid out back to back in `input`.
    pub fn infer(&mut self, input: &[f32], batch: usize) -> Result<Logits, InferenceError> {
        let expected = batch * self.per_image;
        if input.len() != expected || batch == 0 {
            return Err(InferenceError::BatchShape {
                batch,
                per_image: self.per_image,
                expected,
                got: input.len(),
            });
        }
        if let Some(fixed) = self.fixed_batch
            && batch != fixed
        {
            return Err(InferenceError::BatchTooLarge { batch, max: fixed });
        }
        let [a, b, c] = self.image_dims;
        let model = &self.model;
        let run_err = |e: ort::Error| InferenceError::Ort {
            model: model.clone(),
            stage: "run",
            reason: e.message().to_string(),
        };
        // A fresh TensorRef per run: cloning or binding borrowed tensors deadlocks in ort rc.15.
        let tensor = TensorRef::from_array_view(([batch, a, b, c], input)).map_err(run_err)?;
        let inputs = ort::inputs![self.input_name.as_str() => tensor];
        let started = std::time::Instant::now();
        let outputs = match &self.stop {
            Some(stop) => self.session.run_with_options(inputs, stop.options()),
            None => self.session.run(inputs),
        }
        .map_err(run_err)?;
        let run = started.elapsed();
        let value = outputs
            .get(self.output_name.as_str())
            .ok_or_else(|| InferenceError::Signature {
                model: model.clone(),
                reason: format!("output {:?} missing from the run's results", self.output_name),
            })?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
        if shape.len() != 2 || shape[0] as usize != batch || shape[1] as usize != self.classes {
            return Err(InferenceError::Signature {
                model: model.clone(),
                reason: format!(
                    "output shape {:?} for a batch of {batch}; expected [{batch}, {}]",
                    &shape[..],
                    self.classes
                ),
            });
        }
        Ok(Logits {
            batch,
            classes: self.classes,
            data: data.to_vec(),
            run,
        })
    }

    /// Runs any number of images (`batch` of them, back to back in `input`): in one run, or
    /// for a model with a fixed batch size, in runs of that size, the last one filled up
    /// with copies of its last image, whose logits are dropped. Callers that batch by their
    /// own options (evaluation, the monitor, `hardy classify`) go through this, so a model
    /// exported with a fixed batch works with any batch option.
    pub fn infer_any(&mut self, input: &[f32], batch: usize) -> Result<Logits, InferenceError> {
        let Some(fixed) = self.fixed_batch.filter(|&f| f != batch) else {
            return self.infer(input, batch);
        };
        let per = self.per_image;
        let expected = batch.checked_mul(per);
        if expected != Some(input.len()) || batch == 0 {
            return Err(InferenceError::BatchShape {
                batch,
                per_image: per,
                expected: expected.unwrap_or(usize::MAX),
                got: input.len(),
            });
        }
        let mut data = Vec::with_capacity(batch * self.classes);
        let mut run = std::time::Duration::ZERO;
        for chunk in input.chunks(fixed * per) {
            let n = chunk.len() / per;
            let logits = if n == fixed {
                self.infer(chunk, fixed)?
            } else {
                self.infer(&padded_batch(chunk, per, fixed), fixed)?
            };
            data.extend_from_slice(&logits.data[..n * self.classes]);
            run += logits.run;
        }
        Ok(Logits {
            batch,
            classes: self.classes,
            data,
            run,
        })
    }

    /// The device this session actually runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of classes (logits per image).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Values per preprocessed image.
    pub fn image_len(&self) -> usize {
        self.per_image
    }

    /// The model's fixed batch size, if its batch dimension is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// The input and output names used.
    pub fn io_names(&self) -> (&str, &str) {
        (&self.input_name, &self.output_name)
    }

    /// Inputs, outputs, shapes and device in one value.
    pub fn signature(&self) -> Signature {
        Signature {
            input_name: self.input_name.clone(),
            output_name: self.output_name.clone(),
            image_dims: self.image_dims,
            classes: self.classes,
            fixed_batch: self.fixed_batch,
            device: self.device,
        }
    }
}

/// The input or output (`kind`) named in the config, or else the only one (`need_unique`) or
/// the first one.
fn pick_outlet<'a>(
    outlets: &'a [ort::value::Outlet],
    wanted: Option<&str>,
    kind: &str,
    need_unique: bool,
) -> Result<&'a ort::value::Outlet, String> {
    let names = || outlets.iter().map(|o| o.name()).collect::<Vec<_>>();
    match wanted {
        Some(name) => outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
            format!(
                "config {kind}_name {name:?} is not an {kind} of the model ({kind}s: {:?})",
                names()
            )
        }),
        None if outlets.is_empty() => Err(format!("the model has no {kind}s")),
        None if need_unique && outlets.len() > 1 => Err(format!(
            "the model has {} {kind}s {:?}; set {kind}_name in config.toml",
            outlets.len(),
            names()
        )),
        None => Ok(&outlets[0]),
    }
}

fn tensor_sig(ty: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

type Builder = ort::session::builder::SessionBuilder;

/// A session builder with Hardy's settings (graph optimisation level 3, `options`'s intra-op
/// threads and spinning) and the execution provider `options` asks for registered, or CPU where the
/// policy allows falling back. Returns it with the device the session will run on. For
/// graphs that [`ModelSession`] does not fit (several inputs or outputs, models built in
/// memory, such as the attacks' gradient graphs); `model` names the model in errors.
pub fn session_builder(
    runtime: &Runtime,
    options: &SessionOptions,
    model: &std::path::Path,
) -> Result<(Builder, Device), InferenceError> {
    let mut builder = Session::builder(runtime.environment())
        .map_err(ort_error(model, "session builder"))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort_error(model, "optimization level"))?;
    if options.intra_threads > 0 {
        builder = builder
            .with_intra_threads(options.intra_threads)
            .map_err(ort_error(model, "intra-op threads"))?;
    }
    if !options.spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(ort_error(model, "intra-op spinning"))?;
    }
    // Spinning stops when the last concurrent run returns, so an idle server's intra-op
    // threads sleep instead of burning a core each after every request (ORT spins on for a
    // while by default; a lone request cost 1.36 ms of CPU with it, 1.13 ms without).
    // Memory patterns off: ORT plans one block per input shape, and a server's batch sizes
    // vary from 1 to max_batch_size, so the arena kept a block for each; without them the
    // arena reuses freed tensors. Lite0 at c=64 peaked at 539 MB with them, 486 MB without, at
    // the same throughput (benches/README.md, "Serving memory").
    builder = builder
        .with_config_entry("session.force_spinning_stop", "1")
        .map_err(ort_error(model, "force_spinning_stop"))?
        .with_memory_pattern(false)
        .map_err(ort_error(model, "memory pattern"))?;
    register_device(builder, options)
}

fn ort_error<R>(model: &std::path::Path, stage: &'static str) -> impl FnOnce(ort::Error<R>) -> InferenceError {
    let model = model.to_path_buf();
    move |e| InferenceError::Ort {
        model,
        stage,
        reason: e.message().to_string(),
    }
}

/// Registers the requested execution provider. CUDA is registered with `error_on_failure`;
/// on failure the policy decides between stopping and running on CPU (with a warning).
fn register_device(builder: Builder, options: &SessionOptions) -> Result<(Builder, Device), InferenceError> {
    let device = options.device;
    let fallback = |builder: Builder, reason: String| match options.policy {
        DevicePolicy::Strict => Err(InferenceError::Device { device, reason }),
        DevicePolicy::FallBackToCpu => {
            tracing::warn!(%device, %reason, "falling back to CPU");
            Ok((builder, Device::Cpu))
        }
    };
    match device {
        Device::Cpu => Ok((builder, Device::Cpu)),
        #[cfg(feature = "cuda")]
        Device::Cuda(id) => {
            // TF32 off: convolutions and matrix products in full fp32, so a model answers on
            // the GPU as it does on CPU (and attack gradients pass the same checks).
            let ep = ort::ep::CUDA::default()
                .with_device_id(id as i32)
                .with_tf32(false)
                .build()
                .error_on_failure();
            match builder.with_execution_providers([ep]) {
                Ok(b) => Ok((b, device)),
                Err(e) => {
                    let reason = e.message().to_string();
                    fallback(e.recover(), reason)
                }
            }
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => fallback(
            builder,
            "this hardy was built without the `cuda` feature (it is on unless --no-default-features)".into(),
        ),
    }
}

/// A flag that stops the ONNX Runtime runs of every session it is attached to (ORT's run
/// termination): raised from any thread, it makes a run in progress fail at its next
/// operator, and every later run fail at once. Cheap to clone; all clones are one flag.
#[derive(Clone)]
pub struct StopSignal(Arc<RunOptions>);

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignal")
    }
}

impl StopSignal {
    /// A lowered flag.
    pub fn new() -> Result<Self, InferenceError> {
        RunOptions::new()
            .map(|o| Self(Arc::new(o)))
            .map_err(|e| InferenceError::Ort {
                model: PathBuf::new(),
                stage: "run options",
                reason: e.message().to_string(),
            })
    }

    /// Raises the flag.
    pub fn stop(&self) {
        if let Err(e) = self.0.terminate() {
            tracing::warn!("cannot stop ONNX Runtime runs: {e}");
        }
    }

    /// The run options to pass to `Session::run_with_options`.
    pub fn options(&self) -> &RunOptions {
        &self.0
    }
}

/// `values` (whole images of `per` values each, at least one) filled up to `size` images by
/// repeating the last: a short last run for a model with a fixed batch size (the copies'
/// outputs are dropped).
pub fn padded_batch<T: Clone>(values: &[T], per: usize, size: usize) -> Vec<T> {
    let mut out = values.to_vec();
    let n = values.len() / per.max(1);
    for _ in n..size {
        out.extend_from_within((n - 1) * per..n * per);
    }
    out
}
