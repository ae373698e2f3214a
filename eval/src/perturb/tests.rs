//! Tests of the video reader against ffmpeg's own decode of committed clips (the sequence
//! generator's tests are in `hardy-corrupt`).

use std::path::PathBuf;

use image::RgbImage;

use super::*;

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/perturb")
        .join(name)
}

#[test]
fn video_frames_match_ffmpeg() {
    let frames = read_video(&data("clip_yuv420p.mp4")).unwrap();
    assert_eq!(frames.len(), 12);
    let refs: Vec<RgbImage> = (0..12)
        .map(|i| {
            image::open(data(&format!("clip_yuv420p_{i:02}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    for (i, (f, r)) in frames.iter().zip(&refs).enumerate() {
        assert_eq!(f.dimensions(), (96, 64));
        let p = psnr(f, r);
        assert!(p >= 40.0, "frame {i}: PSNR {p:.1} dB against ffmpeg");
    }
    // The clip moves: a frame matches its own reference better than its neighbours' (so the
    // order, with B-frames reordered, is right).
    for i in 0..11 {
        assert!(
            psnr(&frames[i], &refs[i + 1]) < psnr(&frames[i], &refs[i]) - 3.0,
            "frame {i}"
        );
    }
}

#[test]
fn video_with_a_cropping_window_has_its_true_size() {
    let frames = read_video(&data("clip_odd.mp4")).unwrap();
    assert_eq!(frames.len(), 3);
    for (i, f) in frames.iter().enumerate() {
        let want = image::open(data(&format!("clip_odd_{i:02}.png"))).unwrap().to_rgb8();
        assert_eq!(f.dimensions(), (30, 22));
        assert!(psnr(f, &want) >= 40.0, "frame {i}: PSNR {:.1}", psnr(f, &want));
    }
}

/// The frames `clip_yuv444p.mp4` was encoded from.
fn clip_444_sources() -> Vec<RgbImage> {
    (0..6)
        .map(|i| {
            image::open(data(&format!("clip_yuv444p_src_{i:02}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

/// The released ImageNet-P videos are High 4:4:4 Predictive, which OpenH264 cannot decode:
/// they are read through ffmpeg (provisioned on first use).
#[test]
fn high_444_videos_are_read_with_ffmpeg() {
    let src = clip_444_sources();
    for (clip, min_psnr) in [("clip_yuv444p.mp4", 38.0), ("clip_lossless.mp4", 35.0)] {
        let frames = read_video(&data(clip)).unwrap();
        assert_eq!(frames.len(), 6, "{clip}");
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.dimensions(), (64, 48), "{clip} frame {i}");
            let p = psnr(f, &src[i]);
            assert!(p >= min_psnr, "{clip} frame {i}: PSNR {p:.1} dB against its source");
            // the window moves 3 px per frame: each frame is closest to its own source
            if i + 1 < 6 {
                assert!(psnr(f, &src[i + 1]) < p - 3.0, "{clip} frame {i} is out of order");
            }
        }
    }
}

#[test]
fn unsupported_and_broken_videos_are_errors() {
    let e = read_video(&data("missing.mp4")).unwrap_err();
    assert!(matches!(e, PerturbError::Io { .. }), "{e}");

    let bytes = std::fs::read(data("clip_yuv420p.mp4")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("half.mp4", bytes[..bytes.len() / 2].to_vec()),
        ("head.mp4", bytes[..100].to_vec()),
        ("tail.mp4", bytes[bytes.len() / 2..].to_vec()),
        ("text.mp4", b"this is not a video".to_vec()),
        ("empty.mp4", Vec::new()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let e = read_video(&path).unwrap_err();
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
    // Corrupt the coded data but keep the boxes: the decoder must not crash.
    let mut scrambled = bytes.clone();
    let n = scrambled.len();
    for b in &mut scrambled[n / 3..n / 3 + 400] {
        *b ^= 0x5A;
    }
    let path = dir.path().join("scrambled.mp4");
    std::fs::write(&path, scrambled).unwrap();
    let _ = read_video(&path);
    // The same through ffmpeg: an error naming the file, or frames, never a crash or a hang.
    let mut scrambled = std::fs::read(data("clip_yuv444p.mp4")).unwrap();
    let n = scrambled.len();
    for b in &mut scrambled[n / 3..n / 3 + 400] {
        *b ^= 0x5A;
    }
    let path = dir.path().join("scrambled444.mp4");
    std::fs::write(&path, scrambled).unwrap();
    if let Err(e) = read_video(&path) {
        assert!(e.to_string().contains("scrambled444.mp4"), "{e}");
    }
}
