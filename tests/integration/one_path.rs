//! One image path: the server, `hardy eval`'s clean suite and the trainer's reader turn the same
//! files into the same tensors, bit for bit.
//!
//! The model is a Flatten: its logits are its input tensor, so comparing the server's answer
//! and the evaluator's logits compares the tensors each built. The files cover JPEG (baseline,
//! progressive, and one with an EXIF orientation), PNG and WebP, all larger than the model's
//! input so that the resize and crop run too.

use std::path::Path;

use engine::{
    artifact::ModelArtifact,
    config::METADATA_KEY,
    onnx::{Attr, Dim, ElemType, GraphBuilder, write_model},
};
use serde_json::json;

use crate::common::{config_for, root, runtime};
use crate::serve::{Server, b64};

/// Side of the model's input.
const SIZE: u32 = 8;

/// `model_dir/model.onnx`: NCHW `[N, 3, SIZE, SIZE]` in, the same values flattened out.
fn write_echo_model(model_dir: &Path) {
    let config = config_for(SIZE, 3, 0);
    let s = i64::from(SIZE);
    let mut g = GraphBuilder::new("echo");
    let x = g.input("image", ElemType::Float32, &Dim::batched(&[3, s, s]));
    g.node("Flatten", &[x], &["logits"], vec![Attr::int("axis", 1)]);
    g.output("logits", ElemType::Float32, &Dim::batched(&[3 * s * s]));
    g.metadata(METADATA_KEY, &config.to_toml());
    let model = g.build(17).expect("valid graph");
    std::fs::create_dir_all(model_dir).unwrap();
    write_model(&model, &model_dir.join("model.onnx")).unwrap();
}

/// `jpeg` with an APP1 Exif segment saying Orientation = `orientation` right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The logits of one OIP answer, each read straight into an `f32` from its JSON text.
fn logits_of(body: &str) -> Vec<f32> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        outputs: Vec<Output<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Output<'a> {
        #[serde(borrow)]
        data: Vec<&'a serde_json::value::RawValue>,
    }
    let answer: Answer = serde_json::from_str(body).expect("an OIP answer");
    answer.outputs[0]
        .data
        .iter()
        .map(|v| v.get().parse::<f32>().expect("a number"))
        .collect()
}

#[test]
fn server_eval_and_trainer_build_identical_tensors() {
    let parity = root().join("tests/data/parity");
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("data/class0");
    std::fs::create_dir_all(&class).unwrap();
    let baseline = std::fs::read(parity.join("input_baseline_301x203.jpg")).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a_baseline.jpg", baseline.clone()),
        (
            "b_progressive.jpg",
            std::fs::read(parity.join("input_progressive_320x240.jpg")).unwrap(),
        ),
        ("c_rotated.jpg", with_exif_orientation(&baseline, 6)),
        (
            "d_wide.png",
            std::fs::read(parity.join("input_rgba_221x165.png")).unwrap(),
        ),
        ("e_lossless.webp", {
            let img = image::open(parity.join("input_tall_180x291.png")).unwrap().to_rgb8();
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageFormat::WebP).unwrap();
            bytes.into_inner()
        }),
    ];
    for (name, bytes) in &files {
        std::fs::write(class.join(name), bytes).unwrap();
    }
    let repo = dir.path().join("models");
    write_echo_model(&repo.join("echo/1"));

    // The server: each file as an OIP BYTES input.
    let server = Server::start(&repo, &[]);
    let served: Vec<Vec<f32>> = files
        .iter()
        .map(|(name, bytes)| {
            let request = json!({
                "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(bytes)]}]
            });
            let reply = server.post_json("/v2/models/echo/versions/1/infer", &request);
            assert_eq!(reply.status, 200, "{name}: {}", reply.text());
            logits_of(&reply.text())
        })
        .collect();
    drop(server);

    // `hardy eval`'s clean suite, through the library.
    let rt = runtime();
    let artifact = ModelArtifact::open(&repo.join("echo"), None).unwrap();
    let options = eval::suite::EvalOptions::new(dir.path().join("eval-out"));
    let mut evaluator =
        eval::suite::Evaluator::new(&rt, &artifact, engine::session::SessionOptions::default(), options).unwrap();
    let source = eval::suite::DataSource::resolve(&dir.path().join("data")).unwrap();
    let mut items = source.items(&source.own_classes().unwrap()).unwrap();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let evaluated = evaluator.clean_logits(&items).unwrap();

    // The trainer's reader, normalised with the model's mean and std.
    let set = trainer::data::read_image_folder(dir.path().join("data"), SIZE, 3).unwrap();
    let p = &artifact.config.preprocess;
    let normalize = trainer::data::Normalize::new(p.mean.clone(), p.std.clone()).unwrap();
    let indices: Vec<usize> = (0..set.len()).collect();
    let batch = trainer::data::make_batch(&set, &indices, None, &normalize, 0).unwrap();
    let plane = (3 * SIZE * SIZE) as usize;

    assert_eq!(
        (served.len(), evaluated.len(), set.len()),
        (files.len(), files.len(), files.len())
    );
    for (i, (name, _)) in files.iter().enumerate() {
        assert!(items[i].key.ends_with(name), "{} vs {name}", items[i].key);
        assert_eq!(served[i].len(), plane, "{name}");
        assert!(
            served[i] == evaluated[i],
            "{name}: the server's tensor differs from eval's"
        );
        let trained = &batch.images[i * plane..(i + 1) * plane];
        assert!(
            served[i] == trained,
            "{name}: the server's tensor differs from the trainer's"
        );
    }
    // The EXIF orientation was applied (the model's default), by all three alike.
    assert!(served[0] != served[2], "the rotated copy gave the same tensor");
}
