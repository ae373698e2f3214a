//! The single-image robustness endpoints of `hardy serve` (`/attack`, `/corrupt`,
//! `/robustness`) end to end: the real binary on loopback, real ONNX Runtime, the shipped
//! Fashion-MNIST model and samples, and (for the must-show) the published
//! EfficientNet-Lite0 on the foolbox ImageNet photos, with the attack's image re-classified by
//! the `hardy classify` command line.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::Value;

use super::cli::hardy;
use super::serve::{Server, add_model, samples};

const PNG: (&str, &str) = ("Content-Type", "image/png");

/// Standard base64 (the attack's `image` field).
fn unbase64(text: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = A
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {c}")) as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn png_bytes(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode PNG");
    out
}

/// `hardy_requests_total` of an endpoint and outcome, over models and versions.
fn requests(server: &Server, endpoint: &str, outcome: &str) -> f64 {
    let (e, o) = (format!("endpoint=\"{endpoint}\""), format!("outcome=\"{outcome}\""));
    server
        .get("/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with("hardy_requests_total{") && l.contains(&e) && l.contains(&o))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The predictions `/classify` gives one image.
fn classify(server: &Server, model: &str, image: &[u8], top_k: usize) -> Value {
    let r = server.post(&format!("/v1/models/{model}/classify?top_k={top_k}"), &[PNG], image);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"][0]["predictions"].clone()
}

fn top1(predictions: &Value) -> u64 {
    predictions[0]["index"].as_u64().expect("a top-1 index")
}

/// A repository with the shipped Noisy Student Fashion-MNIST EfficientNet as `fmnist`.
fn fmnist_server(flags: &[&str]) -> (tempfile::TempDir, Server) {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 3, None);
    let server = Server::start(repo.path(), flags);
    (repo, server)
}

#[test]
fn attack_returns_the_8_bit_image_whose_classification_it_reports() {
    let (_repo, server) = fmnist_server(&[]);
    let mut flipped = 0;
    for (path, _) in samples() {
        let upload = std::fs::read(&path).expect("sample");
        let clean = image::load_from_memory(&upload).expect("sample").to_luma8();
        for (query, eps) in [
            ("method=fgsm&eps=2", 2u8),
            ("method=fgsm&eps=48", 48),
            ("method=pgd&eps=16&steps=5", 16),
        ] {
            let r = server.post(&format!("/v1/models/fmnist/attack?{query}&top_k=3"), &[PNG], &upload);
            assert_eq!(r.status, 200, "{query}: {}", r.text());
            let body = r.json();
            assert_eq!(body["model_name"], "fmnist");
            assert_eq!(body["model_version"], "1");
            assert_eq!(body["eps"], u64::from(eps));
            let linf = body["linf"].as_u64().expect("linf");
            assert!(linf >= 1 && linf <= u64::from(eps), "{query}: linf {linf}");
            // The model resizes 28x28 images to 28x28: the returned image has the upload's size,
            // and its pixels are the upload's moved by at most linf levels, linf by some.
            assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(28), Some(28)));
            let returned = unbase64(body["image"].as_str().expect("image"));
            let adversarial = image::load_from_memory(&returned)
                .expect("the image decodes")
                .to_luma8();
            assert_eq!(adversarial.dimensions(), (28, 28));
            let moved = clean
                .pixels()
                .zip(adversarial.pixels())
                .map(|(a, b)| u64::from(a[0].abs_diff(b[0])))
                .max();
            assert_eq!(
                moved,
                Some(linf),
                "{query}: the largest pixel change is the reported linf"
            );
            // before and after are what /classify answers for the upload and the returned image.
            assert_eq!(body["before"], classify(&server, "fmnist", &upload, 3), "{query}");
            assert_eq!(body["after"], classify(&server, "fmnist", &returned, 3), "{query}");
            assert_eq!(body["before"].as_array().map(Vec::len), Some(3));
            if eps == 48 && top1(&body["after"]) != top1(&body["before"]) {
                flipped += 1;
            }
            if eps == 16 {
                // PGD starts from a seeded random point: the same request, the same image.
                let again = server.post(&format!("/v1/models/fmnist/attack?{query}&top_k=3"), &[PNG], &upload);
                assert_eq!(again.json()["image"], body["image"], "PGD is deterministic");
            }
        }
    }
    assert!(flipped >= 1, "FGSM at 48 levels flipped no sample's prediction");
    println!(
        "attack: FGSM at 48 levels flipped {flipped} of {} samples",
        samples().len()
    );
    // Counted under its endpoint label.
    assert!(requests(&server, "attack", "success") >= 1.0);
}

#[test]
fn corrupt_returns_a_seeded_png_of_the_image_and_robustness_profiles_95_images() {
    let (_repo, server) = fmnist_server(&[]);
    let (path, _) = samples().into_iter().next().expect("a sample");
    let upload = std::fs::read(&path).expect("sample");
    let clean = image::load_from_memory(&upload).expect("sample").to_rgb8();
    let corrupt = |query: &str| {
        let r = server.post(&format!("/v1/corrupt?{query}"), &[PNG], &upload);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("image/png"), "{query}");
        r.body
    };
    for query in [
        "name=gaussian_noise&severity=3",
        "name=frost&severity=2&seed=7",
        "name=glass_blur&severity=5",
        "name=contrast&severity=1",
        "name=gaussian_noise&severity=3&kind=perturbation",
        "name=rotate&severity=4",
    ] {
        let png = corrupt(query);
        let img = image::load_from_memory(&png).expect("a PNG").to_rgb8();
        assert_eq!(img.dimensions(), clean.dimensions(), "{query}");
        assert!(img != clean, "{query}: the image did not change");
        assert_eq!(corrupt(query), png, "{query}: the same seed, the same image");
    }
    assert_ne!(
        corrupt("name=gaussian_noise&severity=3&seed=1"),
        corrupt("name=gaussian_noise&severity=3&seed=2"),
        "another seed, another draw"
    );

    let r = server.post("/v1/models/fmnist/robustness?top_k=2", &[PNG], &upload);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        body["clean"],
        classify(&server, "fmnist", &upload, 2),
        "clean is /classify's answer"
    );
    let clean_top = top1(&body["clean"]);
    let corruptions = body["corruptions"].as_object().expect("corruptions");
    assert_eq!(corruptions.len(), 19);
    let mut stable = 0;
    for (name, severities) in corruptions {
        let severities = severities.as_array().expect("severities");
        assert_eq!(severities.len(), 5, "{name}");
        for p in severities {
            assert_eq!(p.as_array().map(Vec::len), Some(2), "{name}");
            stable += usize::from(top1(p) == clean_top);
        }
    }
    for name in ["gaussian_noise", "frost", "jpeg_compression", "saturate"] {
        assert!(corruptions.contains_key(name), "{name} missing");
    }
    let fraction = body["stable_fraction"].as_f64().expect("stable_fraction");
    assert!(
        (fraction - stable as f64 / 95.0).abs() < 1e-9,
        "{fraction} vs {stable}/95"
    );
    // Severity 5 of a strong noise is not the clean image: some prediction moves somewhere.
    let scores: Vec<f64> = corruptions["gaussian_noise"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0]["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).any(|w| w[0] != w[1]),
        "every severity scored the same: {scores:?}"
    );
}

/// A PNG whose header declares `width` x `height` (with a valid CRC) over a tiny image's data.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = png_bytes(&image::DynamicImage::ImageLuma8(image::GrayImage::new(4, 4)));
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn hostile_requests_get_4xx_errors_naming_the_field() {
    let (_repo, server) = fmnist_server(&["--max-robustness-requests", "1", "--body-timeout", "20"]);
    let upload = std::fs::read(&samples()[0].0).expect("sample");
    let cases: Vec<(String, Vec<u8>, u16, Vec<&str>)> = vec![
        (
            "/v1/corrupt?name=sunburn&severity=2".into(),
            upload.clone(),
            400,
            vec!["sunburn", "name"],
        ),
        (
            "/v1/corrupt?name=fog&severity=0".into(),
            upload.clone(),
            400,
            vec!["severity", "1..=5"],
        ),
        (
            "/v1/corrupt?name=fog&severity=6".into(),
            upload.clone(),
            400,
            vec!["severity"],
        ),
        (
            "/v1/corrupt?name=fog&severity=-1".into(),
            upload.clone(),
            400,
            vec!["severity"],
        ),
        (
            "/v1/corrupt?name=fog".into(),
            upload.clone(),
            400,
            vec!["severity is required"],
        ),
        (
            "/v1/corrupt?severity=2".into(),
            upload.clone(),
            400,
            vec!["name is required"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2&seed=x".into(),
            upload.clone(),
            400,
            vec!["seed"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2&kind=weather".into(),
            upload.clone(),
            400,
            vec!["kind"],
        ),
        (
            "/v1/corrupt?name=translate&severity=2&kind=corruption".into(),
            upload.clone(),
            400,
            vec!["translate"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2&strength=9".into(),
            upload.clone(),
            400,
            vec!["strength"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2&severity=3".into(),
            upload.clone(),
            400,
            vec!["severity", "twice"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2".into(),
            b"GIF89a garbage".to_vec(),
            400,
            vec!["image 0"],
        ),
        ("/v1/corrupt?name=fog&severity=2".into(), Vec::new(), 400, vec!["empty"]),
        (
            "/v1/corrupt?name=fog&severity=2".into(),
            png_declaring(100_000, 100_000),
            413,
            vec!["100000x100000"],
        ),
        (
            "/v1/corrupt?name=fog&severity=2".into(),
            png_declaring(1100, 1000),
            413,
            vec!["1100x1000", "1048576 pixels"],
        ),
        (
            "/v1/models/fmnist/attack?eps=0".into(),
            upload.clone(),
            400,
            vec!["eps", "1..=64"],
        ),
        (
            "/v1/models/fmnist/attack?eps=1000".into(),
            upload.clone(),
            400,
            vec!["eps"],
        ),
        (
            "/v1/models/fmnist/attack?eps=2.5".into(),
            upload.clone(),
            400,
            vec!["eps"],
        ),
        (
            "/v1/models/fmnist/attack?method=pgd&steps=0".into(),
            upload.clone(),
            400,
            vec!["steps", "1..=100"],
        ),
        (
            "/v1/models/fmnist/attack?method=pgd&steps=101".into(),
            upload.clone(),
            400,
            vec!["steps"],
        ),
        (
            "/v1/models/fmnist/attack?method=cw".into(),
            upload.clone(),
            400,
            vec!["method", "cw"],
        ),
        (
            "/v1/models/fmnist/attack?top_k=0".into(),
            upload.clone(),
            400,
            vec!["top_k"],
        ),
        (
            "/v1/models/fmnist/attack".into(),
            b"\x89PNG\r\n\x1a\nbroken".to_vec(),
            400,
            vec!["image 0"],
        ),
        (
            "/v1/models/fmnist/attack".into(),
            png_declaring(100_000, 100_000),
            400,
            vec!["image 0", "100000x100000"],
        ),
        (
            "/v1/models/fmnist/attack".into(),
            png_bytes(&image::DynamicImage::ImageLuma8(image::GrayImage::new(1, 16384))),
            413,
            vec!["1x16384", "aspect ratio"],
        ),
        ("/v1/models/nope/attack".into(), upload.clone(), 404, vec!["nope"]),
        (
            "/v1/models/fmnist/versions/9/attack".into(),
            upload.clone(),
            404,
            vec!["9"],
        ),
        (
            "/v1/models/fmnist/robustness?top_k=zero".into(),
            upload.clone(),
            400,
            vec!["top_k"],
        ),
        (
            "/v1/models/fmnist/robustness".into(),
            b"garbage".to_vec(),
            400,
            vec!["image 0"],
        ),
        (
            "/v1/models/fmnist/robustness".into(),
            png_declaring(100_000, 100_000),
            400,
            vec!["image 0", "100000x100000"],
        ),
    ];
    for (path, body, status, needles) in &cases {
        let r = server.post(path, &[PNG], body);
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        r.assert_error(*status, needles);
    }
    // Not a raw image: 415.
    let r = server.post(
        "/v1/corrupt?name=fog&severity=2",
        &[("Content-Type", "text/plain")],
        &upload,
    );
    r.assert_error(415, &["text/plain"]);

    // One request holding the only place (its body still arriving) makes the next a 503 at
    // once; when it is done, the place is free again.
    let mut slow = TcpStream::connect(server.addr()).expect("connect");
    write!(
        slow,
        "POST /v1/models/fmnist/robustness HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    )
    .expect("head");
    slow.write_all(&upload[..10]).expect("part of the body");
    slow.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    let r = server.post("/v1/corrupt?name=fog&severity=2", &[PNG], &upload);
    r.assert_error(503, &["--max-robustness-requests"]);
    assert_eq!(r.header("retry-after"), Some("1"));
    slow.write_all(&upload[10..]).expect("the rest of the body");
    slow.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).expect("the slow request's answer");
    assert_eq!(&head, b"HTTP/1.1 200", "the slow request is answered");
    drop(slow);
    let t0 = std::time::Instant::now();
    loop {
        let r = server.post("/v1/corrupt?name=fog&severity=2", &[PNG], &upload);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(t0.elapsed() < Duration::from_secs(30), "the place was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing crashed, nothing was a 5xx other than the 503.
    assert_eq!(server.get("/v2/health/live").status, 200);
    assert_eq!(requests(&server, "corrupt", "internal"), 0.0);
    assert!(requests(&server, "corrupt", "invalid_argument") >= 10.0);
    assert!(requests(&server, "corrupt", "robustness_busy") >= 1.0);
}

/// The must-show: `hardy import lite0`, served; a foolbox photo Lite0 classifies
/// correctly is attacked with FGSM at a few levels until its prediction turns; the returned
/// PNG, written to disk and classified by `hardy classify --json`, gives the class the endpoint
/// reported after the attack.
#[test]
fn fgsm_on_lite0_turns_a_correct_photo_and_hardy_classify_agrees_with_after() {
    let repo = tempfile::tempdir().expect("tempdir");
    let model_dir = repo.path().join("lite0");
    let onnx = model_dir.join("1/model.onnx");
    let o = hardy(&["import", "lite0", "--out", onnx.to_str().unwrap()], &[]);
    assert_eq!(o.code, 0, "hardy import lite0 failed:\n{}", o.stderr);
    let server = Server::start(repo.path(), &[]);
    let photos = data::fetch::foolbox_imagenet_samples().expect("foolbox samples");
    let mut files: Vec<_> = std::fs::read_dir(&photos)
        .expect("photos")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .collect();
    files.sort();
    let mut turned = None;
    'photos: for path in &files {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let label: u64 = stem
            .rsplit('_')
            .next()
            .and_then(|l| l.parse().ok())
            .expect("label in the name");
        let upload = std::fs::read(path).expect("photo");
        if top1(&classify(&server, "lite0", &upload, 1)) != label {
            continue;
        }
        for eps in 1..=4u8 {
            let r = server.post(
                &format!("/v1/models/lite0/attack?method=fgsm&eps={eps}"),
                &[("Content-Type", "image/jpeg")],
                &upload,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let body = r.json();
            assert_eq!(top1(&body["before"]), label);
            let linf = body["linf"].as_u64().expect("linf");
            assert!(linf >= 1 && linf <= u64::from(eps), "linf {linf} at eps {eps}");
            if top1(&body["after"]) != label {
                turned = Some((path.clone(), eps, body));
                break 'photos;
            }
        }
    }
    let (path, eps, body) = turned.expect("FGSM at 1..4 levels turned none of the correctly classified photos");
    let returned = unbase64(body["image"].as_str().expect("image"));
    let img = image::load_from_memory(&returned).expect("the image decodes");
    assert_eq!(
        (u64::from(img.width()), u64::from(img.height())),
        (body["width"].as_u64().unwrap(), body["height"].as_u64().unwrap())
    );
    // The returned image is the upload resized as Lite0 resizes it, its crop moved by at most
    // linf levels (some value by exactly linf), and nothing outside the crop changed.
    let spec = engine::artifact::ModelArtifact::open(&model_dir, Some(1))
        .expect("the model")
        .config
        .preprocess_spec();
    let photo = engine::preprocess::decode(
        &std::fs::read(&path).expect("photo"),
        &engine::preprocess::ImageLimits::default(),
        engine::preprocess::Exif::from_flag(spec.exif_orientation),
    )
    .expect("decode the photo");
    let (w, h) = spec.resized_size(photo.width(), photo.height());
    let whole = engine::preprocess::PreprocessSpec {
        crop_width: w,
        crop_height: h,
        ..spec.clone()
    };
    let clean = engine::preprocess::resize_crop(&photo, &whole).expect("resize");
    assert_eq!(clean.dimensions(), (img.width(), img.height()));
    let window = spec.crop_window(w, h);
    let mut largest = 0;
    for ((x, y, a), b) in clean.enumerate_pixels().zip(img.to_rgb8().pixels()) {
        let moved = a.0.iter().zip(b.0).map(|(&p, q)| p.abs_diff(q)).max().unwrap_or(0);
        let in_crop =
            (window.x..window.x + window.width).contains(&x) && (window.y..window.y + window.height).contains(&y);
        assert!(in_crop || moved == 0, "pixel ({x}, {y}) outside the crop changed");
        largest = largest.max(moved);
    }
    assert_eq!(u64::from(largest), body["linf"].as_u64().unwrap());
    let out = repo.path().join("adversarial.png");
    std::fs::write(&out, &returned).expect("write the PNG");
    let o = hardy(
        &[
            "classify",
            "--json",
            "--top-k",
            "1",
            "--model",
            model_dir.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "hardy classify failed:\n{}", o.stderr);
    let line: Value = serde_json::from_str(o.stdout.lines().next().expect("a JSON line")).expect("JSON");
    assert_eq!(
        line["predictions"][0]["index"], body["after"][0]["index"],
        "hardy classify of the returned PNG: {line}"
    );
    assert_eq!(line["predictions"][0]["label"], body["after"][0]["label"]);
    println!(
        "lite0: {} (class {}, {}) turned by FGSM at eps {eps} (linf {}) into class {} ({}); hardy classify of the PNG: {} ({})",
        path.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        body["before"][0]["index"],
        body["before"][0]["label"],
        body["linf"],
        body["after"][0]["index"],
        body["after"][0]["label"],
        line["predictions"][0]["index"],
        line["predictions"][0]["label"],
    );
}
