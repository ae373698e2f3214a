//! Unit tests: every corruption at every severity runs on 224x224 and 28x28 images, keeps the
//! size, changes the image, is deterministic per seed and (when random) varies with the seed.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::*;

/// The reference's frost textures (the `imagecorruptions` wheel, [`FROST_WHEEL`]), fetched
/// into Hardy's cache by the engine's provisioning on first use, as Hardy's evaluator does.
pub(crate) fn provisioned_frost() -> PathBuf {
    let spec = engine::provision::WheelSpec {
        name: FROST_WHEEL.name,
        version: FROST_WHEEL.version,
        platform: None,
    };
    let dest = engine::provision::cache_root().join(FROST_WHEEL.cache_dir_name());
    engine::provision::ensure_unpacked(&spec, &dest, FrostWheel::member_path).expect("frost textures")
}

/// A textured 224x224-like test image: smooth gradients plus edges (deterministic).
fn test_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let stripe = if ((x * 8 / w) + (y * 8 / h)).is_multiple_of(2) {
            60.0
        } else {
            0.0
        };
        image::Rgb([
            (40.0 + 150.0 * fx + stripe) as u8,
            (30.0 + 120.0 * fy + stripe * 0.5) as u8,
            (90.0 + 80.0 * (fx * fy) + stripe * 0.3) as u8,
        ])
    })
}

/// A Fashion-MNIST-like 28x28 greyscale image stored as RGB (dark background, bright blob).
fn grey_image() -> RgbImage {
    RgbImage::from_fn(28, 28, |x, y| {
        let d = ((x as f32 - 14.0).powi(2) + (y as f32 - 13.0).powi(2)).sqrt();
        let v = if d < 9.0 { 200.0 - 8.0 * d } else { 0.0 };
        image::Rgb([v as u8; 3])
    })
}

/// A corruptor with a synthetic frost texture (no download needed).
fn corruptor(dir: &Path) -> Corruptor {
    let tex = RgbImage::from_fn(300, 200, |x, y| {
        let v = ((x * 7 + y * 13) % 97) as u8 + 120;
        image::Rgb([v, v, v.saturating_add(20)])
    });
    tex.save(dir.join("frost1.png")).unwrap();
    Corruptor::new(Some(dir)).unwrap()
}

fn changed(a: &RgbImage, b: &RgbImage) -> usize {
    a.as_raw().iter().zip(b.as_raw()).filter(|(x, y)| x != y).count()
}

#[test]
fn every_corruption_every_severity_runs_keeps_size_changes_and_is_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corruptor(tmp.path());
    for img in [test_image(224, 224), test_image(40, 30), grey_image()] {
        for corruption in Corruption::ALL {
            for severity in 1..=5 {
                let a = c.apply(&img, corruption, severity, 7).unwrap();
                assert_eq!(a.dimensions(), img.dimensions(), "{corruption:?} {severity}");
                let b = c.apply(&img, corruption, severity, 7).unwrap();
                assert_eq!(a, b, "{corruption:?} s{severity} not deterministic");
                // Blurs of severities 1-2 are sub-pixel on tiny images (see the module doc) and may
                // legitimately change nothing; everything else must change the image.
                let small = img.width() < 64;
                let blur = matches!(
                    corruption,
                    Corruption::DefocusBlur | Corruption::GaussianBlur | Corruption::GlassBlur | Corruption::MotionBlur
                );
                // Grey images are corrupted as the RGB images they are (the reference's
                // `convert('RGB')`): saturation adds none to a grey pixel at severities 1-3, and
                // at 4-5 it tints it; the noises draw per channel. Either way they come out in
                // colour, as the reference's do.
                let grey = img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]);
                let may_be_identity = (small && blur && severity <= 2) || (grey && corruption == Corruption::Saturate);
                if !may_be_identity {
                    assert!(
                        changed(&img, &a) > 0,
                        "{corruption:?} s{severity} changed nothing at {:?}",
                        img.dimensions()
                    );
                }
                let colours = corruption.group() == CorruptionGroup::Noise
                    || corruption == Corruption::SpeckleNoise
                    || (corruption == Corruption::Saturate && severity >= 4);
                if grey && colours {
                    assert!(
                        a.pixels().any(|p| p[0] != p[1] || p[1] != p[2]),
                        "{corruption:?} s{severity} kept a grey image grey"
                    );
                }
                if corruption.is_random() && img.width() >= 40 {
                    // On a small image a short motion blur has few distinct tap sets, so two
                    // angles can give the same image: some other seed must differ.
                    let differs = (8..12).any(|seed| c.apply(&img, corruption, severity, seed).unwrap() != a);
                    assert!(differs, "{corruption:?} s{severity} ignores the seed");
                }
            }
        }
    }
}

#[test]
fn severity_grows_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corruptor(tmp.path());
    let img = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corrupt/input224.png"))
        .unwrap()
        .to_rgb8();
    let dist = |a: &RgbImage| -> f64 {
        a.as_raw()
            .iter()
            .zip(img.as_raw())
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
            .sum::<f64>()
    };
    for corruption in [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::DefocusBlur,
        Corruption::ZoomBlur,
        Corruption::GaussianBlur,
        Corruption::Contrast,
        Corruption::Brightness,
        Corruption::Pixelate,
        Corruption::SpeckleNoise,
    ] {
        let d1 = dist(&c.apply(&img, corruption, 1, 3).unwrap());
        let d5 = dist(&c.apply(&img, corruption, 5, 3).unwrap());
        assert!(
            d5 > d1,
            "{corruption:?}: severity 5 ({d5}) should change more than 1 ({d1})"
        );
    }
}

#[test]
fn bad_severity_is_an_error() {
    let c = Corruptor::default();
    let img = test_image(32, 32);
    for s in [0, 6, 255] {
        let e = c.apply(&img, Corruption::Contrast, s, 0).unwrap_err();
        assert!(matches!(e, CorruptError::BadSeverity { severity } if severity == s));
        assert!(e.to_string().contains("1 to 5"), "{e}");
    }
}

#[test]
fn frost_without_textures_says_how_to_get_them() {
    let c = Corruptor::default();
    let e = c.apply(&test_image(64, 64), Corruption::Frost, 3, 0).unwrap_err();
    assert!(matches!(e, CorruptError::NoFrostTextures));
    let msg = e.to_string();
    assert!(
        msg.contains("FrostSource::Provisioned") && msg.contains("--frost-dir"),
        "{msg}"
    );
    // Everything else works without textures.
    assert!(c.apply(&test_image(64, 64), Corruption::Fog, 3, 0).is_ok());
}

#[test]
fn frost_dir_problems_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Corruptor::new(Some(tmp.path())).unwrap_err();
    assert!(matches!(e, CorruptError::NoFrostInDir { .. }));
    assert!(e.to_string().contains(&tmp.path().display().to_string()));
    std::fs::write(tmp.path().join("frost1.png"), b"not a png").unwrap();
    let e = Corruptor::new(Some(tmp.path())).unwrap_err();
    assert!(e.to_string().contains("frost1.png"), "{e}");
    let missing = tmp.path().join("nope");
    let e = Corruptor::new(Some(missing.clone())).unwrap_err();
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
}

/// Frost draws from the textures the reference draws from: `make_imagenet_c.py` and
/// `imagecorruptions` 1.1.2 list frost1..frost6 and take `np.random.randint(5)`, so the sixth
/// (the darkest of the real ones) never appears. Six flat textures of distinct levels on a
/// black image: the output's level tells which texture was drawn.
#[test]
fn frost_draws_from_the_first_five_textures_only() {
    let tmp = tempfile::tempdir().unwrap();
    let levels = [40u8, 80, 120, 160, 200, 240];
    for (i, &v) in levels.iter().enumerate() {
        RgbImage::from_pixel(300, 260, image::Rgb([v; 3]))
            .save(tmp.path().join(format!("frost{}.png", i + 1)))
            .unwrap();
    }
    assert_eq!(frost::load_dir(tmp.path()).unwrap().len(), 5, "frost6 is not loaded");
    let c = Corruptor::new(Some(tmp.path())).unwrap();
    let black = RgbImage::new(64, 48);
    // severity 1: 1.0 * image + 0.4 * frost, truncated
    let level_of = |v: u8| ops::to_u8_trunc(0.4 * (f32::from(v) * (1.0 / 255.0)));
    let mut seen = [0usize; 6];
    for seed in 0..300 {
        let out = c.apply(&black, Corruption::Frost, 1, seed).unwrap();
        let got = out.get_pixel(0, 0)[0];
        assert!(
            out.pixels().all(|p| p.0 == [got; 3]),
            "seed {seed}: a flat texture gives a flat image"
        );
        let k = levels
            .iter()
            .position(|&v| level_of(v) == got)
            .expect("one of the textures");
        seen[k] += 1;
    }
    assert_eq!(seen[5], 0, "frost6 drawn: {seen:?}");
    // uniform over five: 60 expected each
    assert!(seen[..5].iter().all(|&n| (30..=95).contains(&n)), "{seen:?}");
}

/// A grey image is corrupted as the RGB image PIL's `convert('RGB')` makes of it (the three
/// channels equal), as the reference does: saturate's tint and per-channel noise make it
/// colour. Saturate at severity 5 on grey level v is HSV (0, 0, v) -> (0, 0.2, v), i.e.
/// (v, 0.8 v, 0.8 v): the red tint the reference gives.
#[test]
fn grey_images_are_corrupted_as_rgb() {
    let grey = image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y * 3) as u8]));
    let rgb = image::DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
    assert!(rgb.pixels().zip(grey.pixels()).all(|(p, g)| p.0 == [g[0]; 3]));
    let c = Corruptor::default();
    let out = c.apply(&rgb, Corruption::Saturate, 5, 0).unwrap();
    for (p, g) in out.pixels().zip(grey.pixels()) {
        let v = f32::from(g[0]) / 255.0;
        let tinted = ops::to_u8_trunc(v * (1.0 - 0.2));
        assert_eq!(p.0, [ops::to_u8_trunc(v), tinted, tinted], "grey level {}", g[0]);
    }
    assert!(out.pixels().any(|p| p[0] != p[1]), "saturate tints grey");
    let noisy = c.apply(&rgb, Corruption::GaussianNoise, 3, 0).unwrap();
    let coloured = noisy.pixels().filter(|p| p[0] != p[1] || p[1] != p[2]).count();
    assert!(
        coloured > 1000,
        "noise is drawn per channel: {coloured} coloured pixels of 1200"
    );
}

#[test]
fn empty_image_is_an_error() {
    let c = Corruptor::default();
    let e = c.apply(&RgbImage::new(0, 5), Corruption::Contrast, 1, 0).unwrap_err();
    assert!(matches!(e, CorruptError::EmptyImage { .. }));
}

#[test]
fn corruptor_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Corruptor>();
}

#[test]
fn ops_blur_preserves_constant_images_and_mass() {
    let img = ops::FloatImage {
        width: 20,
        height: 10,
        channels: 3,
        data: vec![0.25; 600],
    };
    for out in [
        ops::gaussian_blur(&img, 2.0),
        ops::disk_blur(&img, 3.0, 0.5),
        ops::motion_blur(&img, 5, 2.0, 30.0),
        ops::clipped_zoom(&img, 1.3),
    ] {
        assert!(out.data.iter().all(|v| (v - 0.25).abs() < 1e-5), "{:?}", &out.data[..6]);
    }
}

#[test]
fn plasma_is_normalised() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let p = ops::plasma_fractal(32, 2.0, &mut rng);
    let mn = p.data.iter().copied().fold(f32::INFINITY, f32::min);
    let mx = p.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((p.width, p.height), (32, 32));
    assert!(mn.abs() < 1e-6 && (mx - 1.0).abs() < 1e-6);
}

#[test]
fn hsv_adjust_matches_a_direct_conversion() {
    // Pure red at half value, saturation halved: HSV (0, 1, 0.5) -> (0, 0.5, 0.5) = (0.5, 0.25, 0.25).
    let mut img = ops::FloatImage {
        width: 1,
        height: 1,
        channels: 3,
        data: vec![0.5, 0.0, 0.0],
    };
    ops::hsv_adjust(&mut img, 0.0, 0.5, 0.0);
    let want = [0.5, 0.25, 0.25];
    assert!(
        img.data.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{:?}",
        img.data
    );
}

#[test]
fn table_normals_have_the_right_moments() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut z = vec![0.0f32; 400_001];
    ops::fill_standard_normal(&mut z, &mut rng);
    let n = z.len() as f64;
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = z.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let beyond2 = z.iter().filter(|v| v.abs() > 2.0).count() as f64 / n;
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "variance {var}");
    assert!((beyond2 - 0.0455).abs() < 0.002, "P(|z| > 2) = {beyond2}");
}

#[test]
fn tiny_and_odd_sizes_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corruptor(tmp.path());
    for (w, h) in [(1, 1), (2, 3), (5, 1), (7, 9), (33, 17)] {
        let img = test_image(w, h);
        for corruption in Corruption::ALL {
            for severity in [1, 5] {
                let out = c.apply(&img, corruption, severity, 1).unwrap();
                assert_eq!(out.dimensions(), (w, h), "{corruption:?} at {w}x{h}");
            }
        }
    }
}

/// The plasma fractal written plainly (one `next_u64` per two uniforms, wrapping index
/// arithmetic at every access, one iterator of perturbations), as it was before the per-level
/// loops: the same values, bit for bit.
#[test]
fn plasma_matches_the_plain_diamond_square() {
    use rand::{Rng, RngCore, SeedableRng};
    fn plain(n: usize, wibble_decay: f32, rng: &mut impl Rng) -> Vec<f32> {
        let mut uniforms = vec![];
        for _ in 0..(n * n - 1).div_ceil(2) {
            let r = rng.next_u64();
            uniforms.push((r >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0);
            uniforms.push(((r >> 8) & 0xff_ffff) as f32 * (2.0 / 16_777_216.0) - 1.0);
        }
        let mask = n - 1;
        let mut m = vec![0.0f32; n * n];
        let (mut step, mut wibble) = (n, 100.0f32);
        let at = |y: usize, x: usize| (y & mask) * n + (x & mask);
        let mut it = uniforms.into_iter();
        while step >= 2 {
            let (half, ww) = (step / 2, wibble * wibble);
            for y in (0..n).step_by(step) {
                for x in (0..n).step_by(step) {
                    let s = m[at(y, x)] + m[at(y + step, x)] + m[at(y, x + step)] + m[at(y + step, x + step)];
                    m[at(y + half, x + half)] = s / 4.0 + ww * it.next().unwrap();
                }
            }
            for y in (0..n).step_by(step) {
                for x in (0..n).step_by(step) {
                    let dr = m[at(y + half, x + half)];
                    let s = dr + m[at(y + n - half, x + half)] + m[at(y, x)] + m[at(y, x + step)];
                    m[at(y, x + half)] = s / 4.0 + ww * it.next().unwrap();
                    let s = dr + m[at(y + half, x + n - half)] + m[at(y, x)] + m[at(y + step, x)];
                    m[at(y + half, x)] = s / 4.0 + ww * it.next().unwrap();
                }
            }
            step /= 2;
            wibble /= wibble_decay;
        }
        let mn = m.iter().copied().fold(f32::INFINITY, f32::min);
        let mx = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = if mx > mn { 1.0 / (mx - mn) } else { 1.0 };
        m.iter().map(|v| (v - mn) * inv).collect()
    }
    for (n, decay, seed) in [(2, 3.0, 0), (4, 2.0, 1), (32, 1.75, 2), (256, 2.0, 3), (256, 1.5, 4)] {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = a.clone();
        let p = ops::plasma_fractal(n, decay, &mut a);
        assert!(p.data == plain(n, decay, &mut b), "n {n} decay {decay}");
        assert_eq!(a.next_u64(), b.next_u64(), "n {n}: the same numbers drawn");
    }
}

/// Frost crops a resized texture: the first call of a size resizes the crop only, later calls
/// crop a kept whole resized texture. Both give the same bytes, at several sizes and seeds.
#[test]
fn frost_from_a_kept_resized_texture_equals_the_cropped_resize() {
    let tmp = tempfile::tempdir().unwrap();
    let first = corruptor(tmp.path());
    for (w, h) in [(224, 224), (97, 61), (28, 28)] {
        let img = test_image(w, h);
        for seed in 0..4 {
            // a fresh corruptor has seen no size: its first call takes the crop-only path
            let fresh = corruptor(tmp.path());
            let a = fresh.apply(&img, Corruption::Frost, 3, seed).unwrap();
            let b = fresh.apply(&img, Corruption::Frost, 3, seed).unwrap();
            let c = first.apply(&img, Corruption::Frost, 3, seed).unwrap();
            assert_eq!(a, b, "{w}x{h} seed {seed}: built whole vs crop");
            assert_eq!(a, c, "{w}x{h} seed {seed}: kept whole vs crop");
        }
    }
}

/// The defocus disk blur as written before its prefix sums kept their running sums in
/// registers and its disk rows were summed in blocks: the same values, bit for bit, for one
/// and three channels, radii below and above 8 and images smaller than the disk.
#[test]
fn disk_blur_matches_the_plain_version() {
    fn disk_blur_plain(img: &ops::FloatImage, radius: f32, alias_sigma: f32) -> ops::FloatImage {
        let (w, h, c) = (img.width, img.height, img.channels);
        let radius = radius.max(0.0);
        let ri = radius.floor() as usize;
        let half_widths: Vec<usize> = (0..=2 * ri)
            .map(|j| {
                let dy = j as f32 - ri as f32;
                (radius * radius - dy * dy).max(0.0).sqrt().floor() as usize
            })
            .collect();
        let count: usize = half_widths.iter().map(|a| 2 * a + 1).sum();
        let g = if radius <= 8.0 { 1 } else { 2 };
        let gk = ops::opencv_gaussian_kernel(2 * g + 1, alias_sigma);
        let m = ri + g;
        let (ew, eh) = (w + 2 * m, h + 2 * m);
        // Row prefix sums of the REFLECT_101-extended image: pre[ye][(xe + 1) * c + k].
        let pw = (ew + 1) * c;
        let mut pre = vec![0.0f32; eh * pw];
        for ye in 0..eh {
            let ys = ops::border_index(ye as isize - m as isize, h, ops::Border::Reflect101);
            let src = img.row(ys);
            let prow = &mut pre[ye * pw..(ye + 1) * pw];
            let mut acc = vec![0.0f32; c];
            for xe in 0..ew {
                let xs = ops::border_index(xe as isize - m as isize, w, ops::Border::Reflect101);
                for k in 0..c {
                    acc[k] += src[xs * c + k];
                    prow[(xe + 1) * c + k] = acc[k];
                }
            }
        }
        // Flat disk on the image plus a margin of g: d[yd][xd], image coords (yd - g, xd - g).
        let (dw, dh) = (w + 2 * g, h + 2 * g);
        let inv = 1.0 / count.max(1) as f32;
        let mut d = vec![0.0f32; dh * dw * c];
        for yd in 0..dh {
            let drow = &mut d[yd * dw * c..(yd + 1) * dw * c];
            for (j, &a) in half_widths.iter().enumerate() {
                // E row: image row (yd - g) + (j - ri) + m = yd + j
                let prow = &pre[(yd + j) * pw..(yd + j + 1) * pw];
                let hi = &prow[(ri + a + 1) * c..(ri + a + 1) * c + dw * c];
                let lo = &prow[(ri - a) * c..(ri - a) * c + dw * c];
                for ((o, &p), &q) in drow.iter_mut().zip(hi).zip(lo) {
                    *o += p - q;
                }
            }
            drow.iter_mut().for_each(|v| *v *= inv);
        }
        // Anti-aliasing Gaussian over the margin ("valid" correlation).
        let mut t = vec![0.0f32; dh * w * c];
        for yd in 0..dh {
            let src = &d[yd * dw * c..(yd + 1) * dw * c];
            let trow = &mut t[yd * w * c..(yd + 1) * w * c];
            for (tx, &kv) in gk.iter().enumerate() {
                for (o, &v) in trow.iter_mut().zip(&src[tx * c..tx * c + w * c]) {
                    *o += kv * v;
                }
            }
        }
        let mut out = ops::FloatImage::zeros(w, h, c);
        for y in 0..h {
            let orow = &mut out.data[y * w * c..(y + 1) * w * c];
            for (ty, &kv) in gk.iter().enumerate() {
                for (o, &v) in orow.iter_mut().zip(&t[(y + ty) * w * c..(y + ty + 1) * w * c]) {
                    *o += kv * v;
                }
            }
        }
        out
    }
    for (w, h, c) in [
        (224, 224, 3),
        (37, 23, 3),
        (5, 4, 3),
        (1, 9, 1),
        (64, 40, 1),
        (33, 31, 2),
    ] {
        let img = ops::FloatImage {
            width: w,
            height: h,
            channels: c,
            data: (0..w * h * c).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect(),
        };
        for (radius, alias) in [(3.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5), (2.5, 0.1)] {
            let a = ops::disk_blur(&img, radius, alias);
            let b = disk_blur_plain(&img, radius, alias);
            assert!(a.data == b.data, "{w}x{h}x{c} radius {radius}");
        }
    }
}

/// Column filtering in strips equals the filter written per value (the same additions in the
/// same order, so the same bits), for widths below, at and off multiples of the strip, every
/// border, and kernels longer than the image.
#[test]
fn filter_cols_matches_the_plain_correlation() {
    for (w, h, c) in [(224, 30, 3), (5, 7, 3), (11, 3, 1), (40, 9, 2)] {
        let img = ops::FloatImage {
            width: w,
            height: h,
            channels: c,
            data: (0..w * h * c).map(|i| ((i * 104_729) % 251) as f32 / 250.0).collect(),
        };
        for border in [ops::Border::Nearest, ops::Border::Reflect, ops::Border::Reflect101] {
            for k in [
                ops::gaussian_kernel(1.0, 4.0),
                ops::gaussian_kernel(3.0, 4.0),
                vec![1.0],
            ] {
                let r = k.len() / 2;
                let out = ops::filter_cols(&img, &k, border);
                for y in 0..h {
                    for i in 0..w * c {
                        let mut v = 0.0f32;
                        for (t, &kv) in k.iter().enumerate() {
                            let ys = ops::border_index(y as isize + t as isize - r as isize, h, border);
                            v += kv * img.data[ys * w * c + i];
                        }
                        assert_eq!(
                            out.data[y * w * c + i].to_bits(),
                            v.to_bits(),
                            "{w}x{h}x{c} {border:?} y {y} i {i}"
                        );
                    }
                }
            }
        }
    }
}

/// Motion blur with padded rows and register blocks equals the pass-per-tap version it
/// replaced, bit for bit: angles in every octant, shifts longer than the image, one and three
/// channels.
#[test]
fn motion_blur_matches_the_pass_per_tap_version() {
    fn motion_blur_plain(img: &ops::FloatImage, radius: usize, sigma: f32, angle_deg: f32) -> ops::FloatImage {
        let (w, h, c) = (img.width, img.height, img.channels);
        let width = 2 * radius + 1;
        let sigma = sigma.max(1e-3);
        let mut k: Vec<f32> = (0..width)
            .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
            .collect();
        let s: f32 = k.iter().sum();
        k.iter_mut().for_each(|v| *v /= s);
        let (sin, cos) = (
            f64::from(angle_deg).to_radians().sin(),
            f64::from(angle_deg).to_radians().cos(),
        );
        let mut taps = Vec::with_capacity(width);
        for (i, &kv) in k.iter().enumerate() {
            let dy = -((i as f64 * sin) - 0.5).ceil() as isize;
            let dx = -((i as f64 * cos) - 0.5).ceil() as isize;
            if dy.unsigned_abs() >= h || dx.unsigned_abs() >= w {
                break;
            }
            taps.push((dx, dy, kv));
        }
        let mut out = ops::FloatImage::zeros(w, h, c);
        let n = w * c;
        for y in 0..h {
            let o = &mut out.data[y * n..(y + 1) * n];
            for &(dx, dy, kv) in &taps {
                let ys = (y as isize - dy).clamp(0, h as isize - 1) as usize;
                let src = &img.data[ys * n..(ys + 1) * n];
                // out[x] = src[clamp(x - dx)]
                let lo = dx.clamp(0, w as isize) as usize; // first x whose source is >= 0
                let hi = (w as isize + dx).clamp(0, w as isize) as usize; // first x whose source is >= w
                for x in 0..lo.min(w) {
                    for ch in 0..c {
                        o[x * c + ch] += kv * src[ch];
                    }
                }
                if hi > lo {
                    let s0 = (lo as isize - dx) as usize;
                    let len = (hi - lo) * c;
                    for (ov, sv) in o[lo * c..lo * c + len].iter_mut().zip(&src[s0 * c..s0 * c + len]) {
                        *ov += kv * sv;
                    }
                }
                for x in hi.max(lo)..w {
                    for ch in 0..c {
                        o[x * c + ch] += kv * src[(w - 1) * c + ch];
                    }
                }
            }
        }
        out
    }
    for (w, h, c) in [(224, 40, 3), (9, 13, 3), (70, 5, 1), (1, 1, 3)] {
        let img = ops::FloatImage {
            width: w,
            height: h,
            channels: c,
            data: (0..w * h * c).map(|i| ((i * 7907) % 253) as f32 / 252.0).collect(),
        };
        for (radius, sigma) in [(15, 8.0), (3, 1.0), (20, 15.0)] {
            for angle in [-45.0f32, -10.0, 0.0, 33.0, 45.0, 90.0, 135.0, 200.0] {
                let a = ops::motion_blur(&img, radius, sigma, angle);
                let b = motion_blur_plain(&img, radius, sigma, angle);
                assert!(a.data == b.data, "{w}x{h}x{c} radius {radius} angle {angle}");
            }
        }
    }
}

/// Snow compositing reads the grey and the rotated layer per pixel: the same values as
/// building the grey image and the rotated layer first.
#[test]
fn snow_composite_matches_the_materialised_grey_and_rotation() {
    let (w, h) = (7, 5);
    let img = ops::FloatImage {
        width: w,
        height: h,
        channels: 3,
        data: (0..w * h * 3).map(|i| ((i * 37) % 101) as f32 / 100.0).collect(),
    };
    let layer = ops::FloatImage {
        width: w,
        height: h,
        channels: 1,
        data: (0..w * h).map(|i| ((i * 13) % 17) as f32 / 40.0).collect(),
    };
    let mut got = img.clone();
    ops::composite_snow(&mut got, &layer, 0.7);
    let rot: Vec<f32> = layer.data.iter().rev().copied().collect();
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        let grey = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        let g = grey * 1.5 + 0.5;
        for (k, &v) in p.iter().enumerate() {
            let want = (0.7 * v + (1.0 - 0.7) * v.max(g) + (layer.data[i] + rot[i])).clamp(0.0, 1.0);
            assert_eq!(got.data[3 * i + k].to_bits(), want.to_bits(), "pixel {i} channel {k}");
        }
    }
}

/// The zoom's horizontal pass has array paths for 1 and 3 channels and a general one: a
/// three-channel zoom equals its channels zoomed one by one, and the first three channels of
/// a four-channel zoom (the general path), bit for bit.
#[test]
fn clipped_zoom_agrees_across_channel_counts() {
    let (w, h) = (53, 41);
    let rgb: Vec<f32> = (0..w * h * 3).map(|i| ((i * 6151) % 241) as f32 / 240.0).collect();
    let image = |c: usize, data: Vec<f32>| ops::FloatImage {
        width: w,
        height: h,
        channels: c,
        data,
    };
    for zoom in [1.0f32, 1.06, 1.33, 2.5] {
        let three = ops::clipped_zoom(&image(3, rgb.clone()), zoom);
        let four = ops::clipped_zoom(
            &image(4, rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], p[0]]).collect()),
            zoom,
        );
        for k in 0..3 {
            let one = ops::clipped_zoom(&image(1, rgb.iter().skip(k).step_by(3).copied().collect()), zoom);
            for i in 0..w * h {
                let v = three.data[3 * i + k].to_bits();
                assert_eq!(v, one.data[i].to_bits(), "zoom {zoom} pixel {i} channel {k}: 1 channel");
                assert_eq!(
                    v,
                    four.data[4 * i + k].to_bits(),
                    "zoom {zoom} pixel {i} channel {k}: 4 channels"
                );
            }
        }
    }
}

/// The fixed-point gaussian_blur against the `f32` filters it replaces at the usual sizes:
/// every byte within one level, and few differing (values within about 0.1 of a level of an
/// integer truncate either way); the AVX2 block kernel against its portable twin.
#[test]
fn fixed_point_gaussian_blur_is_within_one_level_of_the_float_filters() {
    let img = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corrupt/input224.png"))
        .unwrap()
        .to_rgb8();
    let odd = image::imageops::crop_imm(&img, 3, 5, 97, 61).to_image();
    for (img, name) in [(&img, "224x224"), (&odd, "97x61")] {
        for sigma in [1.0f32, 2.0, 3.0, 4.0, 6.0, 9.5] {
            let fixed = blur::gaussian_blur_fixed(img, sigma).expect("weights below 0.5");
            let float = ops::gaussian_blur(&ops::FloatImage::from_rgb8(img), sigma).to_rgb8();
            let (mut differ, mut worst) = (0usize, 0i32);
            for (&a, &b) in fixed.as_raw().iter().zip(float.as_raw()) {
                let d = (i32::from(a) - i32::from(b)).abs();
                differ += usize::from(d > 0);
                worst = worst.max(d);
            }
            let share = differ as f64 / fixed.as_raw().len() as f64;
            println!(
                "{name} sigma {sigma}: {:.3}% of bytes differ, by at most {worst}",
                100.0 * share
            );
            assert!(
                worst <= 1 && share < 0.03,
                "{name} sigma {sigma}: worst {worst}, {share:.4} differ"
            );
        }
    }
    assert!(
        blur::gaussian_blur_fixed(&img, 0.6).is_none(),
        "a weight of 0.5 or more takes the f32 path"
    );
}

#[test]
fn fixed_point_block_kernel_avx2_equals_portable() {
    let Some(avx2) = simd::avx2() else {
        eprintln!("no AVX2 on this CPU: only the portable kernel exists here");
        return;
    };
    let src: Vec<i16> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 17) as i16 & 0x7fff)
        .collect();
    let q: Vec<i16> = (0..25).map(|t| (t * 977 % 4000) as i16).collect();
    for base in [0usize, 1, 17, 300] {
        let starts: Vec<usize> = (0..q.len()).map(|t| base + 3 * t + (t % 4) * 50).collect();
        assert_eq!(
            blur::taps_block(&src, &starts, &q, 12, Some(avx2)),
            blur::taps_block(&src, &starts, &q, 12, None),
            "base {base}"
        );
    }
}

/// The remap (elastic_transform's resampling) against bilinear interpolation written per
/// pixel with scipy's "reflect" border: the same bits, for displacements inside and far
/// outside the image, one and three channels.
#[test]
fn remap_matches_the_per_pixel_bilinear() {
    for (w, h, c) in [(31, 17, 3), (8, 9, 1)] {
        let img = ops::FloatImage {
            width: w,
            height: h,
            channels: c,
            data: (0..w * h * c).map(|i| ((i * 3571) % 229) as f32 / 228.0).collect(),
        };
        let dx: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 23) as f32 * 0.73 - 8.0).collect();
        let dy: Vec<f32> = (0..w * h).map(|i| ((i * 53) % 19) as f32 * 1.31 - 12.5).collect();
        let out = ops::remap_bilinear_reflect(&img, &dx, &dy);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (sx, sy) = (x as f32 + dx[i], y as f32 + dy[i]);
                let (fx0, fy0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - fx0, sy - fy0);
                let bx = |v: f32| ops::border_index(v as isize, w, ops::Border::Reflect);
                let by = |v: f32| ops::border_index(v as isize, h, ops::Border::Reflect);
                let (xa, xb, ya, yb) = (bx(fx0), bx(fx0 + 1.0), by(fy0), by(fy0 + 1.0));
                for k in 0..c {
                    let p = |yy: usize, xx: usize| img.data[(yy * w + xx) * c + k];
                    let top = p(ya, xa) + (p(ya, xb) - p(ya, xa)) * fx;
                    let bot = p(yb, xa) + (p(yb, xb) - p(yb, xa)) * fx;
                    let want = top + (bot - top) * fy;
                    assert_eq!(
                        out.data[i * c + k].to_bits(),
                        want.to_bits(),
                        "{w}x{h}x{c} at ({x}, {y}) channel {k}"
                    );
                }
            }
        }
    }
}
