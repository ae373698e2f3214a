//! FGSM and PGD, run by ONNX Runtime on the gradient graph of [`super::add_input_gradient`].
//!
//! The gradient graph is built in memory and loaded with the engine's session settings and
//! device policy ([`engine::session::session_builder`]), so attacks run on CUDA when the
//! engine does. Everything between ORT runs (sign, step, projection) is a few vector
//! operations on the host.

use std::path::{Path, PathBuf};

use engine::artifact::ModelArtifact;
use engine::device::Device;
use engine::onnx::{Dim, ModelProto, model_to_bytes};
use engine::preprocess::{Layout, PreprocessSpec};
use engine::runtime::Runtime;
use engine::session::{SessionOptions, StopSignal, padded_batch};
use ort::session::Session;
use ort::value::TensorRef;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::error::AttackError;
use super::grad::{
    self, GRAD_OUTPUT, LABELS_INPUT, LOGITS_OUTPUT, LOSS_KIND_INPUT, LOSS_OUTPUT, PIXELS_INPUT, TARGETS_INPUT,
};
use super::loss::Loss;
use super::spec::GradientSpec;

/// Projected gradient descent (L-infinity) settings, in `[0, 1]` pixel units.
#[derive(Debug, Clone, PartialEq)]
pub struct PgdConfig {
    /// Radius of the L-infinity ball around the clean image, in `[0, 1]`.
    pub eps: f32,
    /// Size of each signed-gradient step.
    pub step_size: f32,
    /// Number of steps.
    pub steps: usize,
    /// Whether to start from a uniformly random point of the ball (Madry et al.).
    pub random_start: bool,
    /// Seed of the random start.
    pub seed: u64,
}

impl PgdConfig {
    /// The usual setting: `steps` steps of `2.5 * eps / steps`, random start.
    pub fn standard(eps: f32, steps: usize, seed: u64) -> Self {
        Self {
            eps,
            step_size: 2.5 * eps / steps.max(1) as f32,
            steps,
            random_start: true,
            seed,
        }
    }
}

/// The result of an attack on a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackOutcome {
    /// The adversarial pixels, in `[0, 1]`, in the input's layout (`batch * image_len`).
    pub adversarial: Vec<f32>,
    /// The logits of the clean images, `batch * classes`.
    pub clean_logits: Vec<f32>,
    /// The logits of the adversarial images, `batch * classes`.
    pub adversarial_logits: Vec<f32>,
    /// Logits per image.
    pub classes: usize,
}

impl AttackOutcome {
    /// The predicted class of each clean image.
    pub fn clean_predictions(&self) -> Vec<usize> {
        argmax_rows(&self.clean_logits, self.classes)
    }

    /// The predicted class of each adversarial image.
    pub fn adversarial_predictions(&self) -> Vec<usize> {
        argmax_rows(&self.adversarial_logits, self.classes)
    }
}

/// One run of the gradient graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    /// Logits, `batch * classes`.
    pub logits: Vec<f32>,
    /// The loss per image, `batch`.
    pub loss: Vec<f32>,
    /// d(sum of losses)/d(pixels), `batch * image_len`.
    pub grad: Vec<f32>,
}

/// A classifier's gradient graph in an ORT session, ready to attack batches of pixels.
pub struct Attacker {
    session: Session,
    /// The forward part alone (pixels to logits), for score queries.
    forward: Session,
    /// Runs go through these options when a stop signal is attached.
    stop: Option<StopSignal>,
    model: PathBuf,
    layout: Layout,
    dims: [usize; 3],
    per_image: usize,
    classes: usize,
    fixed_batch: Option<usize>,
    device: Device,
}

impl std::fmt::Debug for Attacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attacker")
            .field("model", &self.model)
            .field("dims", &self.dims)
            .field("classes", &self.classes)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn ort_err<R>(stage: &'static str) -> impl FnOnce(ort::Error<R>) -> AttackError {
    move |e| AttackError::Ort {
        stage,
        reason: e.message().to_string(),
    }
}

impl Attacker {
    /// Reads the artifact's model, adds the input gradient (with the normalisation, layout
    /// and input/output names of its config) and loads the result on the device `options`
    /// asks for.
    pub fn load(runtime: &Runtime, artifact: &ModelArtifact, options: &SessionOptions) -> Result<Self, AttackError> {
        let model = engine::onnx::read_model(&artifact.model_path)?;
        let cfg = &artifact.config;
        Self::from_model(
            runtime,
            &model,
            &cfg.preprocess_spec(),
            cfg.input_name.as_deref(),
            cfg.output_name.as_deref(),
            options,
            &artifact.model_path,
        )
    }

    /// Like [`Attacker::load`], for a model in memory; `path` only names it in errors.
    pub fn from_model(
        runtime: &Runtime,
        model: &ModelProto,
        spec: &PreprocessSpec,
        input_name: Option<&str>,
        output_name: Option<&str>,
        options: &SessionOptions,
        path: &Path,
    ) -> Result<Self, AttackError> {
        let gspec = GradientSpec::from_preprocess(spec);
        let graph = grad::add_input_gradient_named(model, &gspec, input_name, output_name)?;
        let bytes = model_to_bytes(&graph)?;
        let in_dims = graph
            .graph
            .input
            .iter()
            .find(|i| i.name == PIXELS_INPUT)
            .and_then(grad::value_dims)
            .unwrap_or_default();
        let out_dims = graph
            .graph
            .output
            .iter()
            .find(|o| o.name == LOGITS_OUTPUT)
            .and_then(grad::value_dims)
            .unwrap_or_default();
        // The two sessions take turns (clean predictions, FAB's and Square's forward passes
        // between gradient runs): the spinning threads of the one that just ran would take
        // the cores from the other.
        let options = &SessionOptions {
            spin: false,
            ..options.clone()
        };
        let (mut builder, device) = engine::session::session_builder(runtime, options, path)?;
        let session = builder.commit_from_memory(&bytes).map_err(ort_err("load"))?;
        let forward_bytes = model_to_bytes(&grad::logits_only(&graph))?;
        let (mut builder, _) = engine::session::session_builder(runtime, options, path)?;
        let forward = builder.commit_from_memory(&forward_bytes).map_err(ort_err("load"))?;
        let c = spec.channels();
        let (h, w) = (spec.crop_height as usize, spec.crop_width as usize);
        let dims = match spec.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        };
        for (i, (&want, got)) in dims.iter().zip(in_dims.iter().skip(1)).enumerate() {
            if let Dim::Fixed(got) = got
                && *got != want as i64
            {
                return Err(AttackError::Shape(format!(
                    "{}: input dimension {} is {got}, but the preprocessing ({:?}, {c} channel(s), crop {h}x{w}) gives {want}",
                    path.display(),
                    i + 1,
                    spec.layout
                )));
            }
        }
        let fixed_batch = match in_dims.first() {
            Some(Dim::Fixed(b)) if *b > 0 => Some(*b as usize),
            _ => None,
        };
        let mut attacker = Self {
            session,
            forward,
            stop: None,
            model: path.to_path_buf(),
            layout: spec.layout,
            per_image: dims.iter().product(),
            dims,
            classes: 0,
            fixed_batch,
            device,
        };
        attacker.classes = match out_dims.get(1) {
            Some(Dim::Fixed(k)) if *k > 0 => *k as usize,
            _ => {
                // Learn it from one run on a grey image.
                let b = fixed_batch.unwrap_or(1);
                let pixels = vec![0.5; b * attacker.per_image];
                let (shape, _) = attacker.raw_run(&pixels, b, &vec![0; b], &vec![0; b], Loss::CrossEntropy)?;
                shape
            }
        };
        Ok(attacker)
    }

    /// Attaches `stop`: once it is raised, a gradient run in progress fails at its next
    /// operator (see [`StopSignal`]).
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Values per image in the pixel tensor.
    pub fn image_len(&self) -> usize {
        self.per_image
    }

    /// Logits per image.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The device the gradient graph runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// One ORT run on exactly the session's batch; returns the number of classes and the
    /// gradient.
    fn raw_run(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: &[i64],
        targets: &[i64],
        loss: Loss,
    ) -> Result<(usize, Gradient), AttackError> {
        let [a, b, c] = self.dims;
        let kind = [loss.code()];
        let x = TensorRef::from_array_view(([batch, a, b, c], pixels)).map_err(ort_err("run"))?;
        let l = TensorRef::from_array_view(([batch], labels)).map_err(ort_err("run"))?;
        let t = TensorRef::from_array_view(([batch], targets)).map_err(ort_err("run"))?;
        let k = TensorRef::from_array_view(([1], &kind[..])).map_err(ort_err("run"))?;
        let inputs = ort::inputs![PIXELS_INPUT => x, LABELS_INPUT => l, TARGETS_INPUT => t, LOSS_KIND_INPUT => k];
        let outputs = match &self.stop {
            Some(stop) => self.session.run_with_options(inputs, stop.options()),
            None => self.session.run(inputs),
        }
        .map_err(ort_err("run"))?;
        let get = |name: &str| -> Result<(Vec<i64>, Vec<f32>), AttackError> {
            let v = outputs
                .get(name)
                .ok_or_else(|| AttackError::Shape(format!("output `{name}` missing from the run's results")))?;
            let (shape, data) = v.try_extract_tensor::<f32>().map_err(ort_err("run"))?;
            Ok((shape.to_vec(), data.to_vec()))
        };
        let (lshape, logits) = get(LOGITS_OUTPUT)?;
        let (_, loss) = get(LOSS_OUTPUT)?;
        let (_, grad) = get(GRAD_OUTPUT)?;
        if lshape.len() != 2 || lshape[0] as usize != batch || loss.len() != batch || grad.len() != pixels.len() {
            return Err(AttackError::Shape(format!(
                "{}: the gradient graph returned logits {lshape:?}, {} losses and {} gradient values for a batch of {batch}",
                self.model.display(),
                loss.len(),
                grad.len()
            )));
        }
        Ok((lshape[1] as usize, Gradient { logits, loss, grad }))
    }

    /// Logits, per-image cross-entropy and its pixel gradient for a batch, with `labels` (one
    /// per image). Batches of any size are cut to the model's fixed batch size, if it has one.
    pub fn gradient(&mut self, pixels: &[f32], batch: usize, labels: &[i64]) -> Result<Gradient, AttackError> {
        self.loss_gradient(pixels, batch, labels, None, Loss::CrossEntropy)
    }

    /// Logits, per-image `loss` and its pixel gradient for a batch, with `labels` and, for the
    /// targeted losses, `targets` (one each per image).
    pub fn loss_gradient(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: &[i64],
        targets: Option<&[i64]>,
        loss: Loss,
    ) -> Result<Gradient, AttackError> {
        self.check_batch(pixels, batch)?;
        self.check_classes(labels, batch)?;
        if loss.targeted() && targets.is_none() {
            return Err(AttackError::Parameter(format!(
                "the {loss:?} loss needs target classes"
            )));
        }
        if self.classes < loss.min_classes() {
            return Err(AttackError::Parameter(format!(
                "the {loss:?} loss needs {} classes or more; the model has {}",
                loss.min_classes(),
                self.classes
            )));
        }
        let targets = match targets {
            Some(t) => {
                self.check_classes(t, batch)?;
                t
            }
            None => labels,
        };
        let chunk = self.fixed_batch.unwrap_or(batch);
        let mut out = Gradient {
            logits: Vec::with_capacity(batch * self.classes),
            loss: Vec::with_capacity(batch),
            grad: Vec::with_capacity(pixels.len()),
        };
        let per = self.per_image;
        let mut start = 0;
        while start < batch {
            let n = chunk.min(batch - start);
            let xs = padded_batch(&pixels[start * per..(start + n) * per], per, chunk);
            let ls = padded_batch(&labels[start..start + n], 1, chunk);
            let ts = padded_batch(&targets[start..start + n], 1, chunk);
            let (classes, g) = self.raw_run(&xs, chunk, &ls, &ts, loss)?;
            if classes != self.classes {
                return Err(AttackError::Shape(format!(
                    "{}: the model returned {classes} logits per image, expected {}",
                    self.model.display(),
                    self.classes
                )));
            }
            out.logits.extend_from_slice(&g.logits[..n * classes]);
            out.loss.extend_from_slice(&g.loss[..n]);
            out.grad.extend_from_slice(&g.grad[..n * per]);
            start += n;
        }
        Ok(out)
    }

    /// Checks that `classes` holds one valid class index per image of a batch of `batch`.
    fn check_classes(&self, classes: &[i64], batch: usize) -> Result<(), AttackError> {
        if classes.len() != batch {
            return Err(AttackError::Shape(format!(
                "{} labels for a batch of {batch}",
                classes.len()
            )));
        }
        for (index, &label) in classes.iter().enumerate() {
            if label < 0 || label as usize >= self.classes.max(1) {
                return Err(AttackError::Label {
                    index,
                    label,
                    classes: self.classes,
                });
            }
        }
        Ok(())
    }

    /// The logits of a batch (a forward pass only), `batch * classes`.
    pub fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, AttackError> {
        self.check_batch(pixels, batch)?;
        let chunk = self.fixed_batch.unwrap_or(batch);
        let per = self.per_image;
        let [a, b, c] = self.dims;
        let mut out = Vec::with_capacity(batch * self.classes);
        let mut start = 0;
        while start < batch {
            let n = chunk.min(batch - start);
            let xs = padded_batch(&pixels[start * per..(start + n) * per], per, chunk);
            let x = TensorRef::from_array_view(([chunk, a, b, c], &xs[..])).map_err(ort_err("run"))?;
            let inputs = ort::inputs![PIXELS_INPUT => x];
            let outputs = match &self.stop {
                Some(stop) => self.forward.run_with_options(inputs, stop.options()),
                None => self.forward.run(inputs),
            }
            .map_err(ort_err("run"))?;
            let v = outputs.get(LOGITS_OUTPUT).ok_or_else(|| {
                AttackError::Shape(format!("output `{LOGITS_OUTPUT}` missing from the run's results"))
            })?;
            let (shape, data) = v.try_extract_tensor::<f32>().map_err(ort_err("run"))?;
            if shape.len() != 2 || shape[0] as usize != chunk || shape[1] as usize != self.classes {
                return Err(AttackError::Shape(format!(
                    "{}: the model returned logits {:?} for a batch of {chunk}, expected {} classes",
                    self.model.display(),
                    &shape[..],
                    self.classes
                )));
            }
            out.extend_from_slice(&data[..n * self.classes]);
            start += n;
        }
        Ok(out)
    }

    /// The shape of one input image.
    pub fn image_shape(&self) -> crate::autoattack::ImageShape {
        let (channels, height, width) = match self.layout {
            Layout::Nchw => (self.dims[0], self.dims[1], self.dims[2]),
            Layout::Nhwc => (self.dims[2], self.dims[0], self.dims[1]),
        };
        crate::autoattack::ImageShape {
            layout: self.layout,
            channels,
            height,
            width,
        }
    }

    fn check_batch(&self, pixels: &[f32], batch: usize) -> Result<(), AttackError> {
        if batch == 0 || pixels.len() != batch * self.per_image {
            return Err(AttackError::Shape(format!(
                "a batch of {batch} needs {} pixel values ({batch} x {}), got {}",
                batch * self.per_image,
                self.per_image,
                pixels.len()
            )));
        }
        Ok(())
    }

    /// The labels to attack (given, or the clean prediction), the clean logits, and the
    /// gradient at the clean images for those labels.
    fn clean(&mut self, pixels: &[f32], batch: usize, labels: Option<&[i64]>) -> Result<Clean, AttackError> {
        self.check_batch(pixels, batch)?;
        match labels {
            Some(l) => {
                let g = self.gradient(pixels, batch, l)?;
                Ok(Clean {
                    labels: l.to_vec(),
                    logits: g.logits,
                    grad: g.grad,
                })
            }
            None => {
                let logits = self.logits(pixels, batch)?;
                let labels: Vec<i64> = argmax_rows(&logits, self.classes)
                    .into_iter()
                    .map(|c| c as i64)
                    .collect();
                let g = self.gradient(pixels, batch, &labels)?;
                Ok(Clean {
                    labels,
                    logits,
                    grad: g.grad,
                })
            }
        }
    }

    /// Fast gradient sign method: `clip(x + eps * sign(grad), 0, 1)` with the gradient of the
    /// cross-entropy at `labels` (the model's clean predictions when `None`). `pixels` are in
    /// `[0, 1]` (resized and cropped, not normalised), `batch * image_len` values.
    pub fn fgsm(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: Option<&[i64]>,
        eps: f32,
    ) -> Result<AttackOutcome, AttackError> {
        check_eps(eps)?;
        let Clean {
            labels,
            logits: clean_logits,
            grad,
        } = self.clean(pixels, batch, labels)?;
        let adversarial: Vec<f32> = pixels
            .iter()
            .zip(&grad)
            .map(|(&x, &g)| (x + eps * sign(g)).clamp(0.0, 1.0))
            .collect();
        let adversarial_logits = self.gradient(&adversarial, batch, &labels)?.logits;
        Ok(AttackOutcome {
            adversarial,
            clean_logits,
            adversarial_logits,
            classes: self.classes,
        })
    }

    /// Projected gradient descent in the L-infinity ball of radius `config.eps` around
    /// `pixels` (intersected with `[0, 1]`): an optional uniform random start, then
    /// `config.steps` steps of `step_size * sign(grad)`, each projected back.
    pub fn pgd(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: Option<&[i64]>,
        config: &PgdConfig,
    ) -> Result<AttackOutcome, AttackError> {
        self.pgd_until(pixels, batch, labels, config, &|| false)
    }

    /// [`Attacker::pgd`] that asks `stop` before every step and gives up with
    /// [`AttackError::Stopped`] when it says so (a cancelled evaluation job stops within one
    /// gradient run, not one whole attack).
    pub fn pgd_until(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: Option<&[i64]>,
        config: &PgdConfig,
        stop: &dyn Fn() -> bool,
    ) -> Result<AttackOutcome, AttackError> {
        check_eps(config.eps)?;
        if !config.step_size.is_finite() || config.step_size < 0.0 {
            return Err(AttackError::Parameter(format!(
                "PGD step size {} must be finite and non-negative",
                config.step_size
            )));
        }
        let eps = config.eps;
        let Clean {
            labels,
            logits: clean_logits,
            mut grad,
        } = self.clean(pixels, batch, labels)?;
        let project = |x: f32, x0: f32| x.clamp(x0 - eps, x0 + eps).clamp(0.0, 1.0);
        let mut x: Vec<f32> = if config.random_start && eps > 0.0 {
            let mut rng = StdRng::seed_from_u64(config.seed);
            let start: Vec<f32> = pixels
                .iter()
                .map(|&x0| project(x0 + rng.random_range(-eps..=eps), x0))
                .collect();
            grad = self.gradient(&start, batch, &labels)?.grad;
            start
        } else {
            pixels.to_vec()
        };
        for step in 0..config.steps {
            if stop() {
                return Err(AttackError::Stopped);
            }
            if step > 0 {
                grad = self.gradient(&x, batch, &labels)?.grad;
            }
            for ((v, &x0), &g) in x.iter_mut().zip(pixels).zip(&grad) {
                *v = project(*v + config.step_size * sign(g), x0);
            }
        }
        let adversarial_logits = self.gradient(&x, batch, &labels)?.logits;
        Ok(AttackOutcome {
            adversarial: x,
            clean_logits,
            adversarial_logits,
            classes: self.classes,
        })
    }
}

impl crate::autoattack::Classifier for Attacker {
    fn shape(&self) -> crate::autoattack::ImageShape {
        self.image_shape()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn logits(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, AttackError> {
        Attacker::logits(self, pixels, batch)
    }

    fn loss_grad(
        &mut self,
        pixels: &[f32],
        batch: usize,
        labels: &[i64],
        targets: Option<&[i64]>,
        loss: Loss,
    ) -> Result<crate::autoattack::LossGrad, AttackError> {
        self.loss_gradient(pixels, batch, labels, targets, loss)
    }
}

/// The labels an attack uses, the clean logits and the gradient at the clean images.
struct Clean {
    labels: Vec<i64>,
    logits: Vec<f32>,
    grad: Vec<f32>,
}

fn check_eps(eps: f32) -> Result<(), AttackError> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(AttackError::Parameter(format!(
            "eps {eps} is outside [0, 1] (pixel units)"
        )));
    }
    Ok(())
}

/// -1, 0 or 1 (0 for a zero gradient, unlike `f32::signum`; as `torch.sign`).
pub(crate) fn sign(g: f32) -> f32 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes.max(1))
        .map(crate::autoattack::argmax)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_argmax() {
        assert_eq!([sign(-0.5), sign(0.0), sign(2.0)], [-1.0, 0.0, 1.0]);
        assert_eq!(argmax_rows(&[0.0, 2.0, 1.0, 5.0, -1.0, 0.0], 3), vec![1, 0]);
        assert!(check_eps(1.5).is_err() && check_eps(f32::NAN).is_err() && check_eps(0.0).is_ok());
        let c = PgdConfig::standard(0.1, 10, 0);
        assert!((c.step_size - 0.025).abs() < 1e-7);
    }
}
