//! Every Prometheus metric the server exports, with its buckets, in one place.
//!
//! Names follow Prometheus conventions: a `hardy_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Model metrics carry `model` and `version`
//! labels; request outcomes carry `outcome` (`success` or the failure's reason, see
//! [`crate::ServeError::reason`]). Process CPU and memory come from the `prometheus` crate's
//! process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    /// `hardy_requests_total{model, version, endpoint, outcome}`.
    pub requests: IntCounterVec,
    /// `hardy_inference_images_total{model, version}`: images run through a model.
    pub images: IntCounterVec,
    /// `hardy_batch_executions_total{model, version}`: session runs.
    pub batches: IntCounterVec,
    /// `hardy_batch_size_images{model, version}`: images per session run, as formed.
    pub batch_size: HistogramVec,
    /// `hardy_queue_duration_seconds{model, version}`: per request, waiting for a ticket, then
    /// from entering the batcher to its last image starting to run.
    pub queue_time: HistogramVec,
    /// `hardy_preprocess_duration_seconds{model, version}`: per request, decoding and
    /// preprocessing all its images.
    pub preprocess_time: HistogramVec,
    /// `hardy_inference_duration_seconds{model, version}`: per session run.
    pub inference_time: HistogramVec,
    /// `hardy_request_duration_seconds{model, version, endpoint}`: whole requests, any outcome.
    pub request_time: HistogramVec,
    /// `hardy_queue_depth_requests{model, version}`: admitted requests not yet running
    /// (being preprocessed or waiting for a batch).
    pub queue_depth: IntGaugeVec,
    /// `hardy_queue_depth_images{model, version}`: images of the admitted requests not yet
    /// running (what `max_queue_images` bounds).
    pub queue_images: IntGaugeVec,
    /// `hardy_queue_waiting_requests{model, version}`: requests waiting, unread, for a ticket
    /// (the model's tickets are all held; see [`crate::batcher`]).
    pub queue_waiting: IntGaugeVec,
    /// `hardy_queue_withdrawn_total{model, version, reason}`: requests taken out of a model's
    /// queue before their images ran: `timeout` (waited past their queue timeout) or
    /// `cancelled` (the client went away or cancelled the call).
    pub withdrawn: IntCounterVec,
    /// `hardy_inflight_body_bytes`: bytes of request bodies the server holds (what
    /// `--max-inflight-body-bytes` bounds).
    pub body_bytes: prometheus::IntGauge,
    /// `hardy_model_ready{model, version}`: 1 while a version is loaded and serving.
    pub model_ready: IntGaugeVec,
    /// `hardy_model_load_failures_total{model}`.
    pub load_failures: IntCounterVec,
    /// `hardy_gpu_utilization_percent{gpu}` (0..100), when serving on CUDA.
    pub gpu_utilization: IntGaugeVec,
    /// `hardy_gpu_memory_used_bytes{gpu}`, when serving on CUDA.
    pub gpu_memory_used: IntGaugeVec,
    /// `hardy_gpu_memory_total_bytes{gpu}`, when serving on CUDA.
    pub gpu_memory_total: IntGaugeVec,
    /// `hardy_build_info{version}`: always 1.
    pub build_info: IntGauge,
    /// `hardy_eval_jobs{state}`: evaluation jobs by state (queued, running, succeeded,
    /// failed, cancelled).
    pub jobs: IntGaugeVec,
    /// `hardy_eval_images_total{model, suite}`: images (sequences for suite p) evaluated by
    /// jobs.
    pub eval_images: IntCounterVec,
    /// `hardy_eval_job_duration_seconds{outcome}`: running time of finished jobs.
    pub job_duration: HistogramVec,
    /// `hardy_monitor_images_total{model, version}`: live images re-classified by the
    /// robustness monitor.
    pub monitor_images: IntCounterVec,
    /// `hardy_monitor_dropped_total{model, version}`: sampled images the monitor had no room
    /// for (it never slows live traffic down).
    pub monitor_dropped: IntCounterVec,
    /// `hardy_monitor_trials_total{model, version, perturbation}`: perturbed re-classifications.
    pub monitor_trials: IntCounterVec,
    /// `hardy_monitor_flips_total{model, version, perturbation}`: those whose top-1 differed
    /// from the unperturbed image's.
    pub monitor_flips: IntCounterVec,
    /// `hardy_monitor_flip_probability{model, version, perturbation}`: flips / trials.
    pub monitor_flip_probability: prometheus::GaugeVec,
}

/// Latency buckets: 100 us to about 26 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1e-4, 2.0, 19).unwrap_or_default()
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let mv = &["model", "version"];
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram =
            |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let build_info = IntGauge::with_opts(
            Opts::new("hardy_build_info", "Hardy's version, as a label; always 1")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info.set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            requests: counter(
                "hardy_requests_total",
                "Inference requests by model, version, endpoint and outcome (success or the failure reason)",
                &["model", "version", "endpoint", "outcome"],
            )?,
            images: counter("hardy_inference_images_total", "Images run through the model", mv)?,
            batches: counter("hardy_batch_executions_total", "Session runs (batches executed)", mv)?,
            batch_size: histogram(
                "hardy_batch_size_images",
                "Images per session run, as the dynamic batcher formed them",
                mv,
                prometheus::exponential_buckets(1.0, 2.0, 13).unwrap_or_default(),
            )?,
            queue_time: histogram(
                "hardy_queue_duration_seconds",
                "Per request: time waiting for a ticket, then from entering the batcher until its last image started running",
                mv,
                latency_buckets(),
            )?,
            preprocess_time: histogram(
                "hardy_preprocess_duration_seconds",
                "Per request: decoding and preprocessing of all its images",
                mv,
                latency_buckets(),
            )?,
            inference_time: histogram(
                "hardy_inference_duration_seconds",
                "Per session run: ONNX Runtime inference of one batch",
                mv,
                latency_buckets(),
            )?,
            request_time: histogram(
                "hardy_request_duration_seconds",
                "Whole inference requests, from arrival to response, any outcome",
                &["model", "version", "endpoint"],
                latency_buckets(),
            )?,
            queue_depth: gauge(
                "hardy_queue_depth_requests",
                "Admitted requests not yet running (being preprocessed or waiting for a batch)",
                mv,
            )?,
            queue_images: gauge(
                "hardy_queue_depth_images",
                "Images of the admitted requests not yet running",
                mv,
            )?,
            queue_waiting: gauge(
                "hardy_queue_waiting_requests",
                "Requests waiting, unread, for a ticket (every ticket of the model is held)",
                mv,
            )?,
            withdrawn: counter(
                "hardy_queue_withdrawn_total",
                "Requests taken out of the queue before their images ran, by reason (timeout, cancelled)",
                &["model", "version", "reason"],
            )?,
            body_bytes: {
                let g = prometheus::IntGauge::new(
                    "hardy_inflight_body_bytes",
                    "Bytes of request bodies being read or parsed",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            model_ready: gauge(
                "hardy_model_ready",
                "1 while the model version is loaded and serving",
                mv,
            )?,
            load_failures: counter("hardy_model_load_failures_total", "Failed model loads", &["model"])?,
            gpu_utilization: gauge(
                "hardy_gpu_utilization_percent",
                "GPU utilisation over the last sample period, percent (CUDA only)",
                &["gpu"],
            )?,
            gpu_memory_used: gauge("hardy_gpu_memory_used_bytes", "GPU memory in use (CUDA only)", &["gpu"])?,
            gpu_memory_total: gauge("hardy_gpu_memory_total_bytes", "GPU memory size (CUDA only)", &["gpu"])?,
            build_info,
            jobs: gauge(
                "hardy_eval_jobs",
                "Evaluation jobs by state (queued, running, succeeded, failed, cancelled)",
                &["state"],
            )?,
            eval_images: counter(
                "hardy_eval_images_total",
                "Images (sequences for suite p) evaluated by jobs, by model and suite",
                &["model", "suite"],
            )?,
            job_duration: histogram(
                "hardy_eval_job_duration_seconds",
                "Running time of finished evaluation jobs, by outcome",
                &["outcome"],
                prometheus::exponential_buckets(0.1, 2.0, 20).unwrap_or_default(),
            )?,
            monitor_images: counter(
                "hardy_monitor_images_total",
                "Live images re-classified under small perturbations by the robustness monitor",
                mv,
            )?,
            monitor_dropped: counter(
                "hardy_monitor_dropped_total",
                "Sampled live images the robustness monitor had no room for",
                mv,
            )?,
            monitor_trials: counter(
                "hardy_monitor_trials_total",
                "Perturbed re-classifications of live images",
                &["model", "version", "perturbation"],
            )?,
            monitor_flips: counter(
                "hardy_monitor_flips_total",
                "Perturbed re-classifications whose top-1 class differed from the unperturbed image's",
                &["model", "version", "perturbation"],
            )?,
            monitor_flip_probability: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "hardy_monitor_flip_probability",
                        "Flip probability of live images under a small perturbation (flips / trials)",
                    ),
                    &["model", "version", "perturbation"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        })
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Samples GPU utilisation and memory through NVML (loaded at run time) for `gpu`.
#[cfg(feature = "cuda")]
pub fn sample_gpu(metrics: &Metrics, gpu: u32) {
    use std::sync::OnceLock;
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    let nvml = NVML.get_or_init(|| {
        nvml_wrapper::Nvml::init()
            .inspect_err(|e| tracing::warn!(error = %e, "NVML unavailable: no GPU utilisation or memory metrics"))
            .ok()
    });
    let Some(nvml) = nvml else {
        return;
    };
    let device = match nvml.device_by_index(gpu) {
        Ok(d) => d,
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| tracing::warn!(gpu, error = %e, "NVML cannot open the GPU: no GPU metrics"));
            return;
        }
    };
    let label = gpu.to_string();
    if let Ok(u) = device.utilization_rates() {
        metrics.gpu_utilization.with_label_values(&[&label]).set(u.gpu as i64);
    }
    if let Ok(m) = device.memory_info() {
        metrics.gpu_memory_used.with_label_values(&[&label]).set(m.used as i64);
        metrics
            .gpu_memory_total
            .with_label_values(&[&label])
            .set(m.total as i64);
    }
}

/// Without the `cuda` feature there is no GPU to sample.
#[cfg(not(feature = "cuda"))]
pub fn sample_gpu(_metrics: &Metrics, _gpu: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_with_units_and_totals() {
        let m = Metrics::new().unwrap();
        m.requests.with_label_values(&["m", "1", "infer", "success"]).inc();
        m.batch_size.with_label_values(&["m", "1"]).observe(4.0);
        let text = m.render().unwrap();
        for name in [
            "hardy_requests_total{endpoint=\"infer\",model=\"m\",outcome=\"success\",version=\"1\"} 1",
            "hardy_batch_size_images_bucket{model=\"m\",version=\"1\",le=\"4\"} 1",
            "hardy_build_info",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
