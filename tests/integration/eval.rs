//! The real `hardy corrupt` and `hardy eval` on the shipped Fashion-MNIST model and real test
//! images: the ImageNet-C layout, every suite's figures in result.json and the report,
//! resuming, sharding and merging, and clear errors for bad options.

use std::path::Path;

use serde_json::Value;

use crate::cli::hardy;

const MODEL: &str = "models/fashion-mnist-effnet";

fn run_ok(args: &[&str]) -> String {
    let o = hardy(args, &[]);
    assert_eq!(
        o.code, 0,
        "hardy {args:?} failed\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o.stdout + &o.stderr
}

fn result(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("result.json")).expect("result.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        n += if path.is_dir() { count_files(&path) } else { 1 };
    }
    n
}

#[test]
fn corrupt_then_evaluate_every_suite_resume_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let c_dir = tmp.path().join("fmnist-c");
    let c = c_dir.to_str().unwrap();
    // A Fashion-MNIST-C in the released layout: <corruption>/<severity>/<class>/<file>.
    let args = [
        "corrupt",
        "--data",
        "fashion-mnist:test",
        "--out",
        c,
        "--limit",
        "40",
        "--resize",
        "28",
        "--crop",
        "28",
        "--format",
        "png",
        "--corruptions",
        "gaussian_noise,contrast",
        "--severities",
        "1,5",
    ];
    let log = run_ok(&args);
    assert!(log.contains("160 files written"), "{log}");
    assert_eq!(count_files(&c_dir), 160);
    let first = c_dir.join("contrast/5/9/00000.png");
    assert!(first.is_file(), "the first test image (label 9, ankle boot) is missing");
    assert_eq!(image::open(&first).unwrap().to_rgb8().dimensions(), (28, 28));
    let again = run_ok(&args);
    assert!(again.contains("0 files written, 160 already there"), "{again}");

    // Every suite that runs on Fashion-MNIST: clean, c (from the directory above), p
    // (generated), fgsm and pgd.
    let out_dir = tmp.path().join("eval");
    let out = out_dir.to_str().unwrap();
    let eval_args = [
        "eval",
        "--model",
        MODEL,
        "--suite",
        "clean,c,p,fgsm,pgd",
        "--data",
        "fashion-mnist:test",
        "--c-data",
        c,
        "--limit",
        "40",
        "--perturbations",
        "translate,brightness,gaussian_noise",
        "--eps",
        "4,16",
        "--pgd-steps",
        "3",
        "--batch-size",
        "16",
        "--out",
        out,
    ];
    run_ok(&eval_args);
    let r = result(&out_dir);
    let clean = r["clean"]["top1_error"].as_f64().unwrap();
    assert_eq!(r["clean"]["images"], 40);
    assert!(
        clean < 0.3,
        "the shipped model misclassifies {clean} of 40 clean test images"
    );
    assert!(r["clean"]["ece"].as_f64().unwrap() >= 0.0);
    let noise = &r["corruptions"]["corruptions"]["gaussian_noise"];
    assert_eq!(noise["images"][0], 40);
    assert!(noise["errors"][1].is_null(), "severity 2 was not made");
    let contrast5 = r["corruptions"]["corruptions"]["contrast"]["errors"][4]
        .as_f64()
        .unwrap();
    assert!(
        contrast5 >= clean,
        "contrast 5 ({contrast5}) easier than clean ({clean})"
    );
    assert!(r["corruptions"]["mce"].is_null(), "mCE needs all 15 corruptions");
    assert!(
        r["corruptions"]["corruptions"]["contrast"]["ce"].is_null(),
        "AlexNet-normalised CE for a 10-class model"
    );
    let p = &r["perturbations"]["perturbations"];
    for name in ["translate", "brightness", "gaussian_noise"] {
        let fp = p[name]["1"]["flip_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&fp), "{name}: {fp}");
        assert_eq!(p[name]["1"]["sequences"], 40);
    }
    let mean_fp = r["perturbations"]["mean_flip_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mean_fp), "{mean_fp}");
    assert!(
        r["perturbations"]["mfr"].is_null(),
        "mFR needs AlexNet's baseline (1000 classes)"
    );
    let fgsm = r["fgsm"].as_array().unwrap();
    let pgd = r["pgd"].as_array().unwrap();
    assert_eq!((fgsm.len(), pgd.len()), (2, 2));
    let acc = |rows: &Vec<Value>, i: usize| rows[i]["accuracy"].as_f64().unwrap();
    assert!(
        acc(fgsm, 0) <= 1.0 - clean + 1e-9 && acc(fgsm, 1) <= acc(fgsm, 0),
        "{fgsm:?}"
    );
    assert!(
        acc(pgd, 1) <= acc(fgsm, 1) + 0.05,
        "PGD weaker than FGSM: {pgd:?} vs {fgsm:?}"
    );
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for needle in [
        "## Corruptions",
        "| contrast |",
        "## Perturbation sequences",
        "| FGSM |",
        "corruption_errors.png",
    ] {
        assert!(report.contains(needle), "report lacks {needle}:\n{report}");
    }
    for png in ["corruption_errors.png", "flip_probabilities.png", "attack_accuracy.png"] {
        let img = image::open(out_dir.join(png)).unwrap().to_rgb8();
        assert!(
            img.pixels().any(|p| p[2] > 200 && p[0] < 60),
            "{png} has no blue line or bar"
        );
    }

    // Resuming does no work again and gives the same result.
    let log = run_ok(&eval_args);
    assert!(log.contains("clean: already done") && log.contains("pgd/"), "{log}");
    assert_eq!(result(&out_dir), r);
    // --quiet: the summary on stdout, nothing on stderr.
    let quiet_args: Vec<&str> = eval_args.iter().copied().chain(["--quiet"]).collect();
    let quiet = hardy(&quiet_args, &[]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(quiet.stderr.is_empty(), "--quiet wrote to stderr:\n{}", quiet.stderr);
    assert!(quiet.stdout.contains("wrote "), "{}", quiet.stdout);

    // Two shards merged equal the whole.
    let shard_dirs: Vec<String> = (0..2)
        .map(|i| tmp.path().join(format!("shard{i}")).display().to_string())
        .collect();
    for (i, dir) in shard_dirs.iter().enumerate() {
        let shard = format!("{i}/2");
        run_ok(&[
            "eval",
            "--model",
            MODEL,
            "--suite",
            "clean,fgsm",
            "--data",
            "fashion-mnist:test",
            "--limit",
            "40",
            "--eps",
            "4",
            "--shard",
            &shard,
            "--out",
            dir,
        ]);
    }
    let merged_dir = tmp.path().join("merged");
    run_ok(&[
        "eval",
        "merge",
        "--out",
        merged_dir.to_str().unwrap(),
        &shard_dirs[0],
        &shard_dirs[1],
    ]);
    let m = result(&merged_dir);
    assert_eq!(m["clean"]["images"], 40);
    assert_eq!(m["clean"]["top1_error"], r["clean"]["top1_error"]);
    assert_eq!(m["fgsm"][0]["accuracy"], r["fgsm"][0]["accuracy"]);
    let o = hardy(
        &["eval", "merge", "--out", merged_dir.to_str().unwrap(), &shard_dirs[0]],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("1/2") && o.stderr.contains("missing"), "{}", o.stderr);
}

#[test]
fn bad_eval_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["eval", "--model", MODEL, "--suite", "clean,imagenet-c", "--out", out],
            &["imagenet-c", "clean, c, p"],
        ),
        (
            &["eval", "--model", MODEL, "--suite", "clean", "--out", out],
            &["--data"],
        ),
        (
            &[
                "eval",
                "--model",
                MODEL,
                "--suite",
                "fgsm",
                "--data",
                "fashion-mnist:test",
                "--eps",
                "300",
                "--out",
                out,
            ],
            &["--eps", "300/255 is outside"],
        ),
        (
            &[
                "eval",
                "--model",
                MODEL,
                "--suite",
                "a",
                "--a-data",
                "/nonexistent",
                "--out",
                out,
            ],
            &["200 of the 1000", "10 classes"],
        ),
        (
            &[
                "corrupt",
                "--data",
                "fashion-mnist:test",
                "--out",
                out,
                "--corruptions",
                "fogg",
            ],
            &["fogg", "--corruptions"],
        ),
        (
            &[
                "eval",
                "--model",
                MODEL,
                "--suite",
                "pgd",
                "--data",
                "fashion-mnist:test",
                "--pgd-step-size=-1",
                "--out",
                out,
            ],
            &["--pgd-step-size", "-1/255 is not a step size"],
        ),
        (
            &[
                "eval",
                "--model",
                MODEL,
                "--suite",
                "clean",
                "--data",
                "/nonexistent",
                "--out",
                out,
            ],
            &["/nonexistent: No such file or directory"],
        ),
    ];
    for (args, needles) in cases {
        let o = hardy(args, &[]);
        assert_eq!(o.code, 1, "hardy {args:?} should fail\n{}", o.stderr);
        for n in needles {
            assert!(
                o.stderr.contains(n),
                "hardy {args:?}: stderr lacks {n:?}:\n{}",
                o.stderr
            );
        }
        // each cause once: the error enums print their source, anyhow's chain would repeat it
        assert_eq!(
            o.stderr.matches("No such file").count(),
            usize::from(o.stderr.contains("No such file")),
            "{}",
            o.stderr
        );
    }
}

/// Suites `a` and `r` on the published EfficientNet-Lite0 (imported by `hardy import lite0`):
/// the foolbox ImageNet photos whose classes belong to ImageNet-A / ImageNet-R, in wnid folders
/// as those data sets are laid out, scored on the subsets' 200 classes.
#[test]
fn imagenet_a_and_r_suites_score_the_200_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("lite0/1/model.onnx");
    run_ok(&["import", "lite0", "--out", model.to_str().unwrap()]);
    let photos = data::fetch::foolbox_imagenet_samples().expect("foolbox samples");
    let wnids: Vec<&str> = include_str!("../../data/classes/imagenet_synsets.txt")
        .lines()
        .collect();
    for (set, indices) in [
        ("a", include_str!("../../data/classes/imagenet_a_indices.txt")),
        ("r", include_str!("../../data/classes/imagenet_r_indices.txt")),
    ] {
        let members: Vec<usize> = indices.split_whitespace().map(|i| i.parse().unwrap()).collect();
        let root = tmp.path().join(format!("imagenet-{set}"));
        let mut copied = 0;
        for entry in std::fs::read_dir(&photos).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let label: usize = stem.rsplit('_').next().unwrap().parse().unwrap();
            if members.contains(&label) {
                let dir = root.join(wnids[label]);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
                copied += 1;
            }
        }
        assert!(copied >= 5, "only {copied} foolbox photos belong to ImageNet-{set}");
        let out = tmp.path().join(format!("out-{set}"));
        let flag = format!("--{set}-data");
        run_ok(&[
            "eval",
            "--model",
            tmp.path().join("lite0").to_str().unwrap(),
            "--suite",
            set,
            &flag,
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let r = result(&out);
        let key = format!("imagenet_{set}");
        assert_eq!(r[&key]["images"], copied, "{r}");
        let error = r[&key]["top1_error"].as_f64().unwrap();
        // Lite0 gets 18 of the 20 photos right over 1000 classes; over 200 it can only do better.
        assert!(error <= 0.34, "ImageNet-{set} subset top-1 error {error}");
    }
}

/// Suite `p` on videos in the released ImageNet-P layout (`<perturbation>/<wnid>/<file>.mp4`):
/// two High 4:4:4 Predictive clips, the released encoding, which go through ffmpeg, and one
/// 4:2:0 clip, which OpenH264 reads.
#[test]
fn released_imagenet_p_videos_are_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("lite0/1/model.onnx");
    run_ok(&["import", "lite0", "--out", model.to_str().unwrap()]);
    let clips = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/tests/data/perturb");
    let root = tmp.path().join("imagenet-p");
    for (dest, clip) in [
        ("translate/n01440764/a.mp4", "clip_yuv444p.mp4"),
        ("translate/n01443537/b.mp4", "clip_lossless.mp4"),
        ("gaussian_noise/n01440764/c.mp4", "clip_yuv420p.mp4"),
    ] {
        let path = root.join(dest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(clips.join(clip), &path).unwrap();
    }
    let out = tmp.path().join("out");
    run_ok(&[
        "eval",
        "--model",
        tmp.path().join("lite0").to_str().unwrap(),
        "--suite",
        "p",
        "--p-data",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = result(&out);
    let p = &r["perturbations"]["perturbations"];
    for (name, sequences) in [("translate", 2), ("gaussian_noise", 1)] {
        assert_eq!(p[name]["1"]["sequences"], sequences, "{r}");
        let fp = p[name]["1"]["flip_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&fp), "{name}: {fp}");
    }
}

/// The shipped Fashion-MNIST samples as an ImageFolder (`<class number>/<file>`), into `dir`;
/// returns how many.
fn sample_folder(dir: &Path) -> usize {
    let classes = [
        "t-shirt-top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle-boot",
    ];
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/fashion-mnist");
    let mut n = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let class = classes
            .iter()
            .position(|c| name.ends_with(&format!("-{c}.png")))
            .unwrap_or_else(|| panic!("{name}: no class"));
        let folder = dir.join(class.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(&path, folder.join(&name)).unwrap();
        n += 1;
    }
    n
}

/// A truncated JPEG and a garbage `.png` among good images fail those two images in every
/// part, not the run: the figures are those of the good images alone, result.json counts the
/// failures per part with their reasons, and the report and the summary say so.
#[test]
fn malformed_files_fail_their_image_not_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let good_dir = tmp.path().join("good");
    let good = sample_folder(&good_dir);
    assert_eq!(good, 10);
    let bad_dir = tmp.path().join("bad");
    assert_eq!(sample_folder(&bad_dir), good);
    let boot = image::open(bad_dir.join("9/test00000-ankle-boot.png")).unwrap();
    let mut jpeg = Vec::new();
    boot.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(bad_dir.join("9/truncated.jpg"), &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    std::fs::write(bad_dir.join("3/garbage.png"), b"this is not a PNG file, only text").unwrap();

    let eval = |data: &Path, out: &Path| {
        let o = hardy(
            &[
                "eval",
                "--model",
                MODEL,
                "--suite",
                "clean,c,fgsm",
                "--corruptions",
                "fog",
                "--severities",
                "1",
                "--eps",
                "4",
                "--batch-size",
                "4",
                "--data",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(
            o.code, 0,
            "hardy eval failed\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        (result(out), o.stdout)
    };
    let (clean_run, clean_stdout) = eval(&good_dir, &tmp.path().join("out-good"));
    let (r, stdout) = eval(&bad_dir, &tmp.path().join("out-bad"));

    // The good images' figures, unchanged by the bad files beside them.
    assert_eq!(r["clean"]["images"], good);
    for (a, b) in [
        (&r["clean"], &clean_run["clean"]),
        (&r["corruptions"], &clean_run["corruptions"]),
        (&r["fgsm"], &clean_run["fgsm"]),
    ] {
        assert_eq!(a, b);
    }
    assert!(
        clean_run.get("failed_images").is_none() && clean_run.get("failures").is_none(),
        "{clean_run}"
    );
    assert!(!clean_stdout.contains("failed"), "{clean_stdout}");

    // Two failures in every part, with their reasons.
    let failed = r["failed_images"].as_object().unwrap();
    let keys: Vec<&str> = failed.keys().map(String::as_str).collect();
    assert_eq!(keys, ["c/fog/1", "clean", "fgsm/0.015686"], "{r}");
    assert!(failed.values().all(|n| n == 2), "{r}");
    for key in keys {
        let failures = r["failures"][key].as_array().unwrap();
        let mut items: Vec<(&str, &str)> = failures
            .iter()
            .map(|f| (f["item"].as_str().unwrap(), f["reason"].as_str().unwrap()))
            .collect();
        items.sort();
        assert_eq!(items.len(), 2, "{key}: {failures:?}");
        assert_eq!(items[0].0, "3/garbage.png");
        assert!(items[0].1.contains("not a supported image"), "{}", items[0].1);
        assert_eq!(items[1].0, "9/truncated.jpg");
        assert!(items[1].1.contains("truncated"), "{}", items[1].1);
        for (_, reason) in items {
            assert!(!reason.contains(tmp.path().to_str().unwrap()), "{reason}");
        }
    }

    let report = std::fs::read_to_string(tmp.path().join("out-bad/report.md")).unwrap();
    for needle in [
        "## Failed images",
        "6 item(s) could not be evaluated",
        "| clean | 2 |",
        "truncated.jpg",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
    }
    let good_report = std::fs::read_to_string(tmp.path().join("out-good/report.md")).unwrap();
    assert!(!good_report.contains("Failed images"), "{good_report}");
    assert!(
        stdout.contains("failed: 6 image(s) could not be evaluated") && stdout.contains("clean 2"),
        "{stdout}"
    );

    // Shards count their own failures; `hardy eval merge` adds them up.
    let shards: Vec<String> = (0..2)
        .map(|i| tmp.path().join(format!("shard{i}")).display().to_string())
        .collect();
    for (i, dir) in shards.iter().enumerate() {
        let shard = format!("{i}/2");
        let data = bad_dir.to_str().unwrap();
        run_ok(&[
            "eval", "--model", MODEL, "--data", data, "--shard", &shard, "--out", dir,
        ]);
    }
    let merged = tmp.path().join("merged");
    run_ok(&[
        "eval",
        "merge",
        "--out",
        merged.to_str().unwrap(),
        &shards[0],
        &shards[1],
    ]);
    let m = result(&merged);
    for figure in ["images", "top1_error", "top5_error"] {
        assert_eq!(m["clean"][figure], r["clean"][figure], "{figure}");
    }
    assert_eq!(m["failed_images"], serde_json::json!({"clean": 2}));
    let mut items: Vec<&str> = m["failures"]["clean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["item"].as_str().unwrap())
        .collect();
    items.sort();
    assert_eq!(items, ["3/garbage.png", "9/truncated.jpg"]);
}

/// With a data root, the evaluator refuses data paths outside it (naming the option), and a
/// symlink inside the set pointing at a file outside fails that image alone.
#[cfg(unix)]
#[test]
fn data_root_confines_paths_and_items() {
    use eval::suite::{EvalOptions, Evaluator, Silent, Suite};

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let set = root.join("set");
    let good = sample_folder(&set);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.png");
    std::fs::copy(set.join("3/test00013-dress.png"), &secret).unwrap();
    std::os::unix::fs::symlink(&secret, set.join("3/link.png")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();

    let rt = crate::common::runtime();
    let artifact = engine::artifact::ModelArtifact::open(&crate::common::root().join(MODEL), None).unwrap();
    let options = |data: &Path, out: &str, data_root: Option<&Path>| {
        let mut o = EvalOptions::new(tmp.path().join(out));
        o.suites = [Suite::Clean].into();
        o.data = Some(data.to_path_buf());
        o.data_root = data_root.map(Path::to_path_buf);
        o
    };
    let new = |o: EvalOptions| Evaluator::new(&rt, &artifact, engine::session::SessionOptions::default(), o);

    // Paths outside the root, directly, through `..` or through a symlink, are refused.
    for (option, data) in [
        ("data", outside.clone()),
        ("data", set.join("../../outside")),
        ("data", root.join("escape")),
    ] {
        let err = new(options(&data, "o", Some(&root)))
            .err()
            .expect("accepted")
            .to_string();
        assert_eq!(err, format!("{option}: {} is outside the data root", data.display()));
    }
    let mut o = options(&set, "o", Some(&root));
    o.suites = [Suite::Clean, Suite::C].into();
    o.c_data = Some(outside.clone());
    let err = new(o).err().expect("accepted").to_string();
    assert!(
        err.starts_with("c_data: ") && err.contains("outside the data root"),
        "{err}"
    );
    // Named sets live in Hardy's cache and are not confined.
    assert!(new(options(Path::new("fashion-mnist:test"), "o", Some(&root))).is_ok());

    // Inside the root: the symlinked file fails alone; the others are evaluated.
    let r = new(options(&set, "confined", Some(&root)))
        .unwrap()
        .run(&Silent)
        .unwrap();
    assert_eq!(r.clean.as_ref().unwrap().images, good as u64);
    assert_eq!(r.failed_images.get("clean"), Some(&1));
    let failure = &r.failures["clean"][0];
    assert_eq!(
        (failure.item.as_str(), failure.reason.as_str()),
        ("3/link.png", "outside the data root")
    );
    // Without a root the same link is an ordinary, readable image.
    let free = new(options(&set, "free", None)).unwrap().run(&Silent).unwrap();
    assert_eq!(free.clean.as_ref().unwrap().images, good as u64 + 1);
    assert!(free.failed_images.is_empty());
}

/// The per-image records of an AutoAttack part, sorted by item.
fn autoattack_samples(dir: &Path, attack: &str) -> Vec<Value> {
    let path = dir.join(format!("parts/autoattack__Linf__0.031373__{attack}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: Value = serde_json::from_str(&text).unwrap();
    let mut samples = record["tally"]["samples"].as_array().unwrap().clone();
    samples.sort_by_key(|s| s["item"].as_str().unwrap().to_string());
    samples
}

fn robust(sample: &Value) -> bool {
    sample["clean"] == sample["label"] && sample.get("fooled_by").is_none()
}

/// `--suite autoattack` (standard version, L-inf 8/255, the default radius for 28-px
/// images) on the shipped linear model: the four attacks in the reference's order, each on
/// the images the ones before left robust (per image: once fooled, fooled for good, by the
/// attack that did it, with a prediction that is wrong); robust accuracy never above PGD-10's
/// on the same images; shards evaluated apart and merged give exactly the unsharded records
/// (every image draws from its own seed); a rerun resumes; the standard version refuses other
/// settings.
#[test]
fn autoattack_runs_in_order_merges_exactly_and_is_never_above_pgd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let model = "models/fashion-mnist-linear";
    let base = |out: &Path, shard: &str| -> Vec<String> {
        [
            "eval",
            "--model",
            model,
            "--suite",
            "autoattack,pgd",
            "--eps",
            "8",
            "--data",
            "fashion-mnist:test",
            "--limit",
            "60",
            "--batch-size",
            "16",
            "--shard",
            shard,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |args: &[String]| run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let full = dir("full");
    let mut with_images = base(&full, "0/1");
    with_images.push("--aa-save-adversarial".into());
    let stdout = run(&with_images);
    assert!(stdout.contains("AutoAttack Linf eps 8.0/255"), "{stdout}");
    let r = result(&full);
    let row = &r["autoattack"][0];
    let attacks: Vec<&str> = row["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(attacks, ["apgd-ce", "apgd-t", "fab-t", "square"]);
    assert_eq!(row["images"], 60);
    let counts: Vec<u64> = row["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["robust"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "robust counts rise: {counts:?}"
    );
    let clean = row["clean_accuracy"].as_f64().unwrap();
    let aa = row["robust_accuracy"].as_f64().unwrap();
    let pgd = row["pgd_accuracy"].as_f64().unwrap();
    assert!(aa <= pgd, "AutoAttack {aa} above PGD-10 {pgd}");
    assert!(aa < clean && clean > 0.5, "clean {clean}, AutoAttack {aa}");
    assert_eq!(r["pgd"][0]["accuracy"].as_f64().unwrap(), pgd);

    // Per image, along the sequence.
    let mut before: Option<Vec<Value>> = None;
    for &attack in &attacks {
        let now = autoattack_samples(&full, attack);
        assert_eq!(now.len(), 60);
        for (i, s) in now.iter().enumerate() {
            if let Some(by) = s.get("fooled_by") {
                assert_ne!(s["prediction"], s["label"], "{attack}: {s}");
                if let Some(b) = &before
                    && !robust(&b[i])
                {
                    assert_eq!(b[i], *s, "{attack} changed an image already decided");
                }
                assert!(attacks.contains(&by.as_str().unwrap()));
            } else {
                assert_eq!(s["prediction"], s["clean"], "{attack}: {s}");
            }
        }
        before = Some(now);
    }
    let report = std::fs::read_to_string(full.join("report.md")).unwrap();
    assert!(
        report.contains("## AutoAttack") && report.contains("apgd-t"),
        "{report}"
    );

    // Two shards, merged, give the same records and figures.
    run(&base(&dir("s0"), "0/2"));
    run(&base(&dir("s1"), "1/2"));
    let merged = dir("merged");
    run_ok(&[
        "eval",
        "merge",
        "--out",
        merged.to_str().unwrap(),
        dir("s0").to_str().unwrap(),
        dir("s1").to_str().unwrap(),
    ]);
    for attack in ["apgd-ce", "apgd-t", "fab-t", "square"] {
        assert_eq!(
            autoattack_samples(&merged, attack),
            autoattack_samples(&full, attack),
            "{attack}: sharded records differ"
        );
    }
    // (PGD draws its random starts per batch, so its figure may differ between shards.)
    let without_pgd = |mut v: Value| {
        v["autoattack"][0].as_object_mut().unwrap().remove("pgd_accuracy");
        v["autoattack"].clone()
    };
    assert_eq!(without_pgd(result(&merged)), without_pgd(r.clone()));

    // A rerun keeps every part.
    let again = run(&base(&full, "0/1"));
    assert_eq!(again.matches("already done, kept").count(), 5, "{again}");

    // The standard version's settings are fixed.
    let mut custom = base(&dir("bad"), "0/1");
    custom.extend(["--aa-iter".to_string(), "5".to_string()]);
    let o = crate::cli::hardy(&custom.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("--aa-version custom"), "{}", o.stderr);
}

/// Parity with an independent implementation: PyPI torchattacks' APGD, APGD-T, FAB (targeted)
/// and Square, configured as the reference's standard version, run in sequence by
/// scripts/autoattack_reference.py on the shipped linear model converted with onnx2torch
/// (PyTorch from PyPI into Hardy's cache by scripts/torch-env.sh), on the first 100
/// Fashion-MNIST test images at L-inf 8/255: the same clean predictions, and robust counts
/// after each attack within 2 images of Hardy's. (The larger parity runs of eval/README.md use
/// the same two programs.)
#[test]
fn autoattack_matches_torchattacks_on_the_shipped_linear_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = "models/fashion-mnist-linear";
    let n = 100;

    // The pixels Hardy attacks: the IDX bytes / 255 (the model's crop is the whole 28x28 image).
    let dir = data::fetch::fashion_mnist().unwrap();
    let images = data::idx::read_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = data::idx::read(&dir.join("t10k-labels-idx1-ubyte.gz"), 1).unwrap();
    let labels: Vec<u8> = labels.data[..n].to_vec();
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| {
            images
                .pixels(i)
                .unwrap()
                .iter()
                .flat_map(|&b| (f32::from(b) / 255.0).to_le_bytes())
        })
        .collect();
    let artifact = engine::artifact::ModelArtifact::open(&crate::common::root().join(model), None).unwrap();
    let spec = artifact.config.preprocess_spec();
    assert_eq!((spec.channels(), spec.crop_width, spec.crop_height), (1, 28, 28));
    let input = tmp.path().join("pixels.f32");
    std::fs::write(&input, pixels).unwrap();
    let sidecar = serde_json::json!({
        "n": n, "c": 1, "h": 28, "w": 28, "labels": labels, "mean": spec.mean, "std": spec.std,
        "eps": 8.0 / 255.0, "norm": "Linf", "seed": 0, "batch_size": n,
    });
    std::fs::write(tmp.path().join("pixels.f32.json"), sidecar.to_string()).unwrap();
    let reference = crate::common::torch_script(
        "autoattack_reference.py",
        &[artifact.model_path.as_os_str(), input.as_os_str()],
    );
    let reference: Value = serde_json::from_slice(&reference).expect("JSON from the reference");

    let out = tmp.path().join("hardy");
    run_ok(&[
        "eval",
        "--model",
        model,
        "--suite",
        "autoattack",
        "--data",
        "fashion-mnist:test",
        "--limit",
        "100",
        "--out",
        out.to_str().unwrap(),
    ]);
    let row = &result(&out)["autoattack"][0];
    let ours = |attack: &str| -> i64 {
        let steps = row["after"].as_array().unwrap();
        steps.iter().find(|s| s["attack"] == attack).unwrap()["robust"]
            .as_i64()
            .unwrap()
    };
    let theirs = |attack: &str| reference["robust_count"][attack].as_i64().unwrap();
    let clean = (row["clean_accuracy"].as_f64().unwrap() * n as f64).round() as i64;
    eprintln!("clean: Hardy {clean}, torch {}", theirs("clean"));
    assert_eq!(
        clean,
        theirs("clean"),
        "onnx2torch and ONNX Runtime disagree on clean images"
    );
    for attack in ["apgd-ce", "apgd-t", "fab-t", "square"] {
        eprintln!(
            "after {attack}: Hardy {}, torchattacks {}",
            ours(attack),
            theirs(attack)
        );
        assert!(
            (ours(attack) - theirs(attack)).abs() <= 2,
            "after {attack}: Hardy {} robust, torchattacks {}",
            ours(attack),
            theirs(attack)
        );
    }
}

/// The shipped linear model's version directory copied to `dst`, its input and output
/// batch dimension fixed to `batch`.
fn with_fixed_batch(dst: &Path, batch: i64) {
    let src = crate::common::root().join("models/fashion-mnist-linear/1");
    let version = dst.join("1");
    std::fs::create_dir_all(&version).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, version.join(path.file_name().unwrap())).unwrap();
    }
    crate::common::fix_batch(&version.join("model.onnx"), batch);
}

#[test]
fn a_fixed_batch_export_evaluates_with_any_batch_size() {
    // The batch size comes from the model: a file with batch 4 runs with --batch-size 3
    // (a short last batch of 2 included), in every suite, with the dynamic model's figures.
    let tmp = tempfile::tempdir().unwrap();
    let fixed = tmp.path().join("linear-batch4");
    with_fixed_batch(&fixed, 4);
    let mut figures = Vec::new();
    for (model, out) in [
        (
            crate::common::root().join("models/fashion-mnist-linear"),
            tmp.path().join("dynamic"),
        ),
        (fixed.clone(), tmp.path().join("fixed")),
    ] {
        run_ok(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--suite",
            "clean,c,pgd,autoattack",
            "--corruptions",
            "contrast",
            "--severities",
            "2",
            "--eps",
            "8",
            "--aa-version",
            "custom",
            "--aa-attacks",
            "apgd-ce,square",
            "--aa-iter",
            "5",
            "--aa-square-queries",
            "20",
            "--data",
            "fashion-mnist:test",
            "--limit",
            "11",
            "--batch-size",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let r = result(&out);
        let samples: Vec<bool> = autoattack_samples(&out, "square").iter().map(robust).collect();
        figures.push((
            r["clean"]["top1_error"].clone(),
            r["corruptions"]["corruptions"].to_string(),
            r["pgd"].to_string(),
            r["autoattack"].to_string(),
            samples,
        ));
    }
    assert!(
        figures[0].0.as_f64().is_some() && figures[0].1 != "null",
        "{:?}",
        figures[0]
    );
    assert_eq!(figures[0], figures[1]);
}

/// An AutoAttack part interrupted between batches resumes from its progress log: the logged
/// images are taken as they are (one is altered in the log here, and the alteration is what
/// the result holds, so it was not recomputed), the rest are attacked as in an uninterrupted
/// run, a line cut short is ignored, and the log goes once the part is stored.
#[test]
fn an_interrupted_autoattack_part_resumes_from_its_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "eval",
            "--model",
            "models/fashion-mnist-linear",
            "--suite",
            "autoattack",
            "--aa-version",
            "custom",
            "--aa-attacks",
            "apgd-ce,square",
            "--aa-iter",
            "10",
            "--aa-square-queries",
            "50",
            "--data",
            "fashion-mnist:test",
            "--limit",
            "24",
            "--batch-size",
            "8",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |args: &[String]| run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let whole = tmp.path().join("whole");
    run(&args(&whole));
    let expected = autoattack_samples(&whole, "apgd-ce");
    let part: Value = serde_json::from_str(
        &std::fs::read_to_string(whole.join("parts/autoattack__Linf__0.031373__apgd-ce.json")).unwrap(),
    )
    .unwrap();

    // The interrupted run: the same output directory with the first attack's first 16 images
    // logged, one of them altered (a robust image logged as fooled), and a torn last line.
    let resumed = tmp.path().join("resumed");
    std::fs::create_dir_all(resumed.join("progress")).unwrap();
    std::fs::copy(whole.join("run.json"), resumed.join("run.json")).unwrap();
    let mut logged: Vec<Value> = part["tally"]["samples"].as_array().unwrap()[..16].to_vec();
    let altered = logged
        .iter()
        .position(robust)
        .expect("a robust image among the first 16");
    let label = logged[altered]["label"].as_u64().unwrap();
    logged[altered]["prediction"] = ((label + 1) % 10).into();
    logged[altered]["fooled_by"] = "apgd-ce".into();
    let altered_item = logged[altered]["item"].clone();
    let line = serde_json::json!({
        "samples": logged,
        "zero_gradients": 0,
        "checks": part["tally"]["checks"],
    });
    let log = resumed.join("progress/autoattack__Linf__0.031373__apgd-ce.jsonl");
    std::fs::write(&log, format!("{line}\n{{\"samples\": [")).unwrap();
    run(&args(&resumed));
    assert!(!log.exists(), "the progress log outlived its part");
    let got = autoattack_samples(&resumed, "apgd-ce");
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        if g["item"] == altered_item {
            assert_eq!(g["fooled_by"], "apgd-ce", "the logged image was attacked again: {g}");
            assert_eq!(g["prediction"].as_u64(), Some((label + 1) % 10));
        } else {
            assert_eq!(g, e, "resumed and uninterrupted runs differ");
        }
    }
    // The next attack ran on what the resumed part left robust.
    let square = autoattack_samples(&resumed, "square");
    assert_eq!(square.len(), 24);
    assert!(square.iter().any(|s| s["item"] == altered_item && !robust(s)));
}
