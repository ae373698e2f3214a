//! Models built with the graph module, run through ONNX Runtime, checked against plain Rust.

use engine::{
    artifact::ModelArtifact,
    device::{Device, DevicePolicy},
    pool::InferencePool,
    preprocess::Layout,
    session::{ModelSession, SessionOptions, StopSignal},
};

use crate::common::{TinyCnn, config_for, max_diff, random, runtime};

#[test]
fn tiny_cnn_matches_direct_computation_at_several_opsets_and_batches() {
    let rt = runtime();
    for (opset, seed) in [(13, 1), (17, 2), (21, 3)] {
        let net = TinyCnn::new(3, 8, 5, 12, seed);
        let dir = tempfile::tempdir().unwrap();
        net.write(dir.path(), false, &config_for(12, 3, 5), opset);
        let artifact = ModelArtifact::open(dir.path(), None).unwrap();
        let mut session = ModelSession::load(&rt, &artifact, &SessionOptions::default()).unwrap();
        assert_eq!(
            (session.classes(), session.image_len(), session.device()),
            (5, 3 * 12 * 12, Device::Cpu)
        );
        for batch in [1, 4] {
            let input = random(batch * session.image_len(), 100 + batch as u64);
            let logits = session.infer(&input, batch).unwrap();
            for i in 0..batch {
                let want = net.forward(&input[i * 432..(i + 1) * 432]);
                let d = max_diff(logits.row(i), &want);
                assert!(d < 1e-5, "opset {opset} batch {batch} image {i}: max diff {d}");
            }
        }
    }
}

/// A raised stop signal fails the runs of the sessions it is attached to (ORT's terminate
/// flag), and only theirs.
#[test]
fn a_raised_stop_signal_fails_runs() {
    let rt = runtime();
    let net = TinyCnn::new(3, 8, 5, 12, 4);
    let dir = tempfile::tempdir().unwrap();
    net.write(dir.path(), false, &config_for(12, 3, 5), 17);
    let artifact = ModelArtifact::open(dir.path(), None).unwrap();
    let stop = StopSignal::new().unwrap();
    let mut stoppable = ModelSession::load(&rt, &artifact, &SessionOptions::default())
        .unwrap()
        .with_stop(stop.clone());
    let mut other = ModelSession::load(&rt, &artifact, &SessionOptions::default()).unwrap();
    let input = random(stoppable.image_len(), 5);
    assert!(stoppable.infer(&input, 1).is_ok());
    stop.stop();
    let err = stoppable.infer(&input, 1).unwrap_err().to_string();
    assert!(err.contains("terminate"), "{err}");
    assert!(other.infer(&input, 1).is_ok());
}

#[test]
fn nhwc_models_get_nhwc_tensors() {
    let rt = runtime();
    let net = TinyCnn::new(3, 4, 3, 8, 7);
    let (nchw_dir, nhwc_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    net.write(nchw_dir.path(), false, &config_for(8, 3, 3), 17);
    let mut cfg = config_for(8, 3, 3);
    cfg.preprocess.layout = Layout::Nhwc;
    net.write(nhwc_dir.path(), true, &cfg, 17);
    let nchw: Vec<f32> = random(3 * 64, 9);
    // The same image in NHWC order.
    let nhwc: Vec<f32> = (0..64)
        .flat_map(|p| (0..3).map(move |c| (c, p)))
        .map(|(c, p)| nchw[c * 64 + p])
        .collect();
    let a = ModelArtifact::open(nhwc_dir.path(), None).unwrap();
    let mut s = ModelSession::load(&rt, &a, &SessionOptions::default()).unwrap();
    let got = s.infer(&nhwc, 1).unwrap();
    assert!(max_diff(got.row(0), &net.forward(&nchw)) < 1e-5);
}

/// Loads the model in `dir`, expecting the load to fail, and returns the error message.
fn load_error(dir: &std::path::Path) -> String {
    let artifact = ModelArtifact::open(dir, None).unwrap();
    ModelSession::load(&runtime(), &artifact, &SessionOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn signature_mismatches_are_reported_at_load_with_shapes() {
    let net = TinyCnn::new(3, 4, 3, 8, 11);
    let dir = tempfile::tempdir().unwrap();
    // The model takes 3x8x8, its metadata says 1 channel at 8x8.
    net.write(dir.path(), false, &config_for(8, 1, 3), 17);
    let err = load_error(dir.path());
    assert!(
        err.contains("[batch, 1, 8, 8]") && err.contains("[-1, 3, 8, 8]"),
        "{err}"
    );
    // Wrong label count.
    net.write(dir.path(), false, &config_for(8, 3, 4), 17);
    let err = load_error(dir.path());
    assert!(err.contains("4 labels") && err.contains("3 classes"), "{err}");
    // Unknown input name in config.toml.
    net.write(dir.path(), false, &config_for(8, 3, 3), 17);
    std::fs::write(dir.path().join("config.toml"), "input_name = \"pixels\"\n").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("\"pixels\"") && err.contains("image"), "{err}");
}

#[test]
fn wrong_batch_length_is_an_error_not_a_panic() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    TinyCnn::new(3, 4, 3, 8, 5).write(dir.path(), false, &config_for(8, 3, 3), 17);
    let mut s = ModelSession::load(
        &rt,
        &ModelArtifact::open(dir.path(), None).unwrap(),
        &SessionOptions::default(),
    )
    .unwrap();
    let err = s.infer(&[0.0; 10], 1).unwrap_err().to_string();
    assert!(err.contains("needs 192 values") && err.contains("got 10"), "{err}");
    assert!(s.infer(&[], 0).is_err());
}

#[test]
fn cuda_request_without_gpu_falls_back_or_fails_strictly() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    TinyCnn::new(3, 4, 3, 8, 5).write(dir.path(), false, &config_for(8, 3, 3), 17);
    let a = ModelArtifact::open(dir.path(), None).unwrap();
    let lenient = SessionOptions {
        device: Device::Cuda(0),
        ..Default::default()
    };
    let s = ModelSession::load(&rt, &a, &lenient).unwrap();
    assert_eq!(
        s.device(),
        Device::Cpu,
        "no usable GPU here: the session must report CPU"
    );
    let strict = SessionOptions {
        device: Device::Cuda(0),
        policy: DevicePolicy::Strict,
        ..Default::default()
    };
    let err = ModelSession::load(&rt, &a, &strict).unwrap_err().to_string();
    assert!(err.contains("cannot run on cuda:0"), "{err}");
}

#[test]
fn pool_workers_each_run_their_own_session_and_agree() {
    let rt = runtime();
    let net = TinyCnn::new(3, 6, 4, 10, 21);
    let dir = tempfile::tempdir().unwrap();
    net.write(dir.path(), false, &config_for(10, 3, 4), 17);
    let a = ModelArtifact::open(dir.path(), None).unwrap();
    let pool = InferencePool::start(
        &rt,
        &a,
        &SessionOptions {
            intra_threads: 1,
            ..Default::default()
        },
        2,
    )
    .unwrap();
    assert_eq!((pool.workers(), pool.classes(), pool.max_batch()), (2, 4, 32));
    let inputs: Vec<Vec<f32>> = (0..16).map(|i| random(3 * 300, 1000 + i)).collect();
    let pending: Vec<_> = inputs.iter().map(|x| pool.submit(x.clone(), 3)).collect();
    for (x, rx) in inputs.iter().zip(pending) {
        let logits = rx.recv().unwrap().unwrap();
        for i in 0..3 {
            assert!(max_diff(logits.row(i), &net.forward(&x[i * 300..(i + 1) * 300])) < 1e-5);
        }
    }
    let err = pool.infer(vec![0.0; 7], 1).unwrap_err().to_string();
    assert!(err.contains("got 7"), "{err}");
}

/// Without a `max_batch_size` in any layer, a CPU pool batches a 224 px RGB model by 4 (the
/// power of two that keeps a batch within 1 Mi input values) and a small one by 32; a value in
/// `config.toml` wins, and a fixed batch dimension caps both.
#[test]
fn an_unset_max_batch_follows_the_input_size_on_the_cpu() {
    let rt = runtime();
    let max_batch = |size: usize, config_toml: Option<&str>, fixed: Option<i64>| {
        let dir = tempfile::tempdir().unwrap();
        let path = TinyCnn::new(3, 2, 4, size, 41).write(dir.path(), false, &config_for(size as u32, 3, 4), 17);
        if let Some(text) = config_toml {
            std::fs::write(path.with_file_name("config.toml"), text).unwrap();
        }
        if let Some(b) = fixed {
            crate::common::fix_batch(&path, b);
        }
        let a = ModelArtifact::open(&path, None).unwrap();
        InferencePool::start(&rt, &a, &SessionOptions::default(), 1)
            .unwrap()
            .max_batch()
    };
    assert_eq!(max_batch(224, None, None), 4);
    assert_eq!(max_batch(32, None, None), 32);
    assert_eq!(max_batch(224, Some("[batching]\nmax_batch_size = 16\n"), None), 16);
    assert_eq!(max_batch(224, Some("[batching]\nmax_batch_size = 16\n"), Some(2)), 2);
}

/// A model exported with a fixed batch size serves any batch through the pool: smaller ones
/// filled up, larger ones in runs of that size, each image's logits its own.
#[test]
fn a_fixed_batch_model_serves_any_batch_size() {
    let rt = runtime();
    let net = TinyCnn::new(3, 6, 4, 10, 31);
    let dir = tempfile::tempdir().unwrap();
    let path = net.write(dir.path(), false, &config_for(10, 3, 4), 17);
    crate::common::fix_batch(&path, 4);
    let a = ModelArtifact::open(dir.path(), None).unwrap();
    let pool = InferencePool::start(&rt, &a, &SessionOptions::default(), 1).unwrap();
    assert_eq!(pool.max_batch(), 4);
    for batch in [1, 3, 4, 9] {
        let x = random(batch * 300, 2000 + batch as u64);
        let logits = pool.infer(x.clone(), batch).unwrap();
        assert_eq!(logits.batch, batch);
        for i in 0..batch {
            let d = max_diff(logits.row(i), &net.forward(&x[i * 300..(i + 1) * 300]));
            assert!(d < 1e-5, "batch {batch} image {i}: max diff {d}");
        }
    }
}
