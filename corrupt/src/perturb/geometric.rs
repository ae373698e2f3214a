//! The geometric sequences (translate, rotate, tilt, scale, shear, zoom_blur): warps of the whole
//! resized image, then the centre crop.
//!
//! The reference makes them with torchvision 0.2's `F.affine` (a PIL `Image.transform` with the
//! inverse matrix of `_get_inverse_affine_matrix`, centre `(w/2 + 0.5, h/2 + 0.5)`, black fill)
//! and, for tilt, OpenCV's `warpPerspective`. The two libraries place pixel centres differently
//! (PIL at `+0.5`, OpenCV at integers) and treat borders differently; both are reproduced here
//! with a small inverse-mapping warp rather than a general crate, because those conventions are
//! what makes the middle frames equal the crop and the integer shifts exact; the frames match
//! Pillow and OpenCV to within one level (`scripts/make_perturb_reference.py`). Only the `crop`
//! window of the output is computed.

use image::{Rgb, RgbImage};
use rayon::prelude::*;

use super::crop_offset;

/// How a warp samples its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// PIL `NEAREST` (torchvision's default `resample=0`, used by translate).
    Nearest,
    /// PIL `BILINEAR`.
    Bilinear,
}

/// torchvision 0.2's `_get_inverse_affine_matrix`: the output-to-input map (PIL's 6 numbers)
/// for a rotation by `angle` degrees, a translation, a zoom by `scale` and an x-shear of
/// `shear` degrees about `center`.
fn inverse_affine(center: (f64, f64), angle: f64, translate: (f64, f64), scale: f64, shear: f64) -> [f64; 6] {
    let (angle, shear, scale) = (angle.to_radians(), shear.to_radians(), 1.0 / scale);
    let d = (angle + shear).cos() * angle.cos() + (angle + shear).sin() * angle.sin();
    let mut m = [
        (angle + shear).cos(),
        (angle + shear).sin(),
        0.0,
        -angle.sin(),
        angle.cos(),
        0.0,
    ]
    .map(|v| v * scale / d);
    let (cx, cy) = center;
    let (tx, ty) = translate;
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// `CenterCrop(crop)(F.affine(img, ...))`: PIL's affine transform of `img` (output the size of
/// `img`, black outside), evaluated only inside the centre crop.
fn affine_crop(
    img: &RgbImage,
    angle: f64,
    translate: (f64, f64),
    scale: f64,
    shear: f64,
    filter: Filter,
    crop: u32,
) -> RgbImage {
    let (w, h) = img.dimensions();
    let center = (f64::from(w) * 0.5 + 0.5, f64::from(h) * 0.5 + 0.5);
    let m = inverse_affine(center, angle, translate, scale, shear);
    let (ox, oy) = (crop_offset(w, crop), crop_offset(h, crop));
    RgbImage::from_fn(crop, crop, |x, y| {
        // PIL samples at pixel centres.
        let px = f64::from(x + ox) + 0.5;
        let py = f64::from(y + oy) + 0.5;
        let xin = m[0] * px + m[1] * py + m[2];
        let yin = m[3] * px + m[4] * py + m[5];
        match filter {
            Filter::Nearest => pil_nearest(img, xin, yin),
            Filter::Bilinear => pil_bilinear(img, xin, yin),
        }
    })
}

/// PIL's nearest filter at input position (xin, yin): the pixel containing it, black outside.
fn pil_nearest(img: &RgbImage, xin: f64, yin: f64) -> Rgb<u8> {
    let (w, h) = img.dimensions();
    if xin < 0.0 || yin < 0.0 || xin >= f64::from(w) || yin >= f64::from(h) || !xin.is_finite() || !yin.is_finite() {
        return Rgb([0, 0, 0]);
    }
    *img.get_pixel(xin as u32, yin as u32)
}

/// PIL's bilinear filter at input position (xin, yin): black outside the image, neighbours
/// clamped to the edge inside it, the result truncated to 8 bits (as Pillow does).
fn pil_bilinear(img: &RgbImage, xin: f64, yin: f64) -> Rgb<u8> {
    let (w, h) = img.dimensions();
    if !(xin >= 0.0 && yin >= 0.0 && xin < f64::from(w) && yin < f64::from(h)) {
        return Rgb([0, 0, 0]);
    }
    let (xs, ys) = (xin - 0.5, yin - 0.5);
    let (x0, y0) = (xs.floor(), ys.floor());
    let (dx, dy) = (xs - x0, ys - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let clamp_x = |x: i64| x.clamp(0, i64::from(w) - 1) as u32;
    let clamp_y = |y: i64| y.clamp(0, i64::from(h) - 1) as u32;
    let (xa, xb) = (clamp_x(x0), clamp_x(x0 + 1));
    let row0 = clamp_y(y0);
    let row1 = (y0 + 1 >= 0 && y0 + 1 < i64::from(h)).then_some((y0 + 1) as u32);
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let lerp = |a: u8, b: u8, t: f64| f64::from(a) + (f64::from(b) - f64::from(a)) * t;
        let v1 = lerp(img.get_pixel(xa, row0)[c], img.get_pixel(xb, row0)[c], dx);
        let v2 = match row1 {
            Some(r) => lerp(img.get_pixel(xa, r)[c], img.get_pixel(xb, r)[c], dx),
            None => v1,
        };
        *o = (v1 + (v2 - v1) * dy).clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// 41 frames shifted horizontally by `(i - 20) * scale` px (nearest, as torchvision's default),
/// i = 0..=40: the content moves right for positive shifts.
pub(super) fn translate(img: &RgbImage, crop: u32, scale: f64) -> Vec<RgbImage> {
    (0..41)
        .into_par_iter()
        .map(|i| {
            affine_crop(
                img,
                0.0,
                ((f64::from(i) - 20.0) * scale, 0.0),
                1.0,
                0.0,
                Filter::Nearest,
                crop,
            )
        })
        .collect()
}

/// 31 frames rotated by `i - 15` degrees (bilinear).
pub(super) fn rotate(img: &RgbImage, crop: u32) -> Vec<RgbImage> {
    (0..31)
        .into_par_iter()
        .map(|i| affine_crop(img, f64::from(i) - 15.0, (0.0, 0.0), 1.0, 0.0, Filter::Bilinear, crop))
        .collect()
}

/// 31 frames zoomed by `(40 + 2.5 i) / 100` (0.40 to 1.15, bilinear).
pub(super) fn scale(img: &RgbImage, crop: u32) -> Vec<RgbImage> {
    (0..31)
        .into_par_iter()
        .map(|i| {
            affine_crop(
                img,
                0.0,
                (0.0, 0.0),
                (f64::from(i) * 2.5 + 40.0) / 100.0,
                0.0,
                Filter::Bilinear,
                crop,
            )
        })
        .collect()
}

/// 31 frames sheared by `i - 15` degrees (torchvision 0.2's x-shear, bilinear).
pub(super) fn shear(img: &RgbImage, crop: u32) -> Vec<RgbImage> {
    (0..31)
        .into_par_iter()
        .map(|i| affine_crop(img, 0.0, (0.0, 0.0), 1.0, f64::from(i) - 15.0, Filter::Bilinear, crop))
        .collect()
}

/// The clean crop, then 30 frames each the running mean of the crops zoomed by
/// `1 + 0.004 j`, j = 0..=i (float32 accumulation, truncated like `ToPILImage`).
pub(super) fn zoom_blur(img: &RgbImage, crop: u32) -> Vec<RgbImage> {
    let zoomed: Vec<RgbImage> = (0..31u32)
        .into_par_iter()
        .map(|i| {
            affine_crop(
                img,
                0.0,
                (0.0, 0.0),
                1.0 + 0.004 * f64::from(i),
                0.0,
                Filter::Bilinear,
                crop,
            )
        })
        .collect();
    let mut sum = vec![0f32; zoomed[0].len()];
    let mut frames = Vec::with_capacity(zoomed.len());
    for (i, z) in zoomed.into_iter().enumerate() {
        for (s, &v) in sum.iter_mut().zip(z.iter()) {
            *s += f32::from(v) / 255.0;
        }
        if i == 0 {
            frames.push(z);
            continue;
        }
        let n = (i + 1) as f32;
        let mut frame = z;
        for (o, s) in frame.iter_mut().zip(&sum) {
            *o = (s / n * 255.0).clamp(0.0, 255.0) as u8;
        }
        frames.push(frame);
    }
    frames
}

/// The reference's tilt homography (source to destination) for an image `w` x `h` tilted by
/// `deg` degrees about both axes: `P2 @ T @ RX @ RY @ P1` with focal length `sqrt(w^2 + h^2)`.
fn tilt_matrix(w: f64, h: f64, deg: f64) -> [[f64; 3]; 3] {
    let (phi, theta) = (deg.to_radians(), deg.to_radians());
    let f = (w * w + h * h).sqrt();
    let p1 = [
        [1.0, 0.0, -w / 2.0],
        [0.0, 1.0, -h / 2.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
    ];
    let rx = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, theta.cos(), -theta.sin(), 0.0],
        [0.0, theta.sin(), theta.cos(), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let ry = [
        [phi.cos(), 0.0, -phi.sin(), 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [phi.sin(), 0.0, phi.cos(), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let t = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, f],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let p2 = [[f, 0.0, w / 2.0, 0.0], [0.0, f, h / 2.0, 0.0], [0.0, 0.0, 1.0, 0.0]];
    let ry_p1 = matmul(&ry, &p1);
    let rx_ry_p1 = matmul(&rx, &ry_p1);
    let t_rest = matmul(&t, &rx_ry_p1);
    matmul(&p2, &t_rest)
}

/// A small dense product of an `R x K` and a `K x C` matrix.
fn matmul<const R: usize, const K: usize, const C: usize>(a: &[[f64; K]; R], b: &[[f64; C]; K]) -> [[f64; C]; R] {
    let mut out = [[0.0; C]; R];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..K).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// The inverse of a 3x3 matrix, `None` when singular.
fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let cof = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let det = m[0][0] * cof(1, 2, 1, 2) - m[0][1] * cof(1, 2, 0, 2) + m[0][2] * cof(1, 2, 0, 1);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let adj = [
        [cof(1, 2, 1, 2), -cof(0, 2, 1, 2), cof(0, 1, 1, 2)],
        [-cof(1, 2, 0, 2), cof(0, 2, 0, 2), -cof(0, 1, 0, 2)],
        [cof(1, 2, 0, 1), -cof(0, 2, 0, 1), cof(0, 1, 0, 1)],
    ];
    Some(adj.map(|row| row.map(|v| v / det)))
}

/// 31 frames of `CenterCrop(cv2.warpPerspective(img, tilt_matrix(i - 15), (w, h)))`: OpenCV's
/// bilinear sampling at integer pixel centres, neighbours outside the image read as black.
pub(super) fn tilt(img: &RgbImage, crop: u32) -> Vec<RgbImage> {
    let (w, h) = img.dimensions();
    let (ox, oy) = (crop_offset(w, crop), crop_offset(h, crop));
    (0..31)
        .into_par_iter()
        .map(|i| {
            let Some(inv) = invert3(&tilt_matrix(f64::from(w), f64::from(h), f64::from(i) - 15.0)) else {
                // Cannot happen for these angles; a black frame is what OpenCV would give.
                return RgbImage::new(crop, crop);
            };
            RgbImage::from_fn(crop, crop, |x, y| {
                let (dx, dy) = (f64::from(x + ox), f64::from(y + oy));
                let zw = inv[2][0] * dx + inv[2][1] * dy + inv[2][2];
                let zw = if zw != 0.0 { 1.0 / zw } else { 0.0 };
                let sx = (inv[0][0] * dx + inv[0][1] * dy + inv[0][2]) * zw;
                let sy = (inv[1][0] * dx + inv[1][1] * dy + inv[1][2]) * zw;
                cv_bilinear(img, sx, sy)
            })
        })
        .collect()
}

/// OpenCV's bilinear sample with a constant black border.
fn cv_bilinear(img: &RgbImage, sx: f64, sy: f64) -> Rgb<u8> {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    if !sx.is_finite() || !sy.is_finite() || sx <= -1.0 || sy <= -1.0 || sx >= w as f64 || sy >= h as f64 {
        return Rgb([0, 0, 0]);
    }
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let at = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            f64::from(img.get_pixel(x as u32, y as u32)[c])
        }
    };
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let v = at(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
            + at(x0 + 1, y0, c) * fx * (1.0 - fy)
            + at(x0, y0 + 1, c) * (1.0 - fx) * fy
            + at(x0 + 1, y0 + 1, c) * fx * fy;
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_affine_is_identity() {
        let m = inverse_affine((128.5, 100.5), 0.0, (0.0, 0.0), 1.0, 0.0);
        for (a, b) in m.iter().zip([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]) {
            assert!((a - b).abs() < 1e-12, "{m:?}");
        }
    }

    #[test]
    fn tilt_at_zero_degrees_shrinks_about_the_centre() {
        // With no rotation the homography is x' = (f x + w/2) / (1 + f): the centre is fixed.
        let m = tilt_matrix(256.0, 200.0, 0.0);
        let f = (256.0f64 * 256.0 + 200.0 * 200.0).sqrt();
        let map = |x: f64, y: f64| {
            let z = m[2][0] * x + m[2][1] * y + m[2][2];
            (
                (m[0][0] * x + m[0][1] * y + m[0][2]) / z,
                (m[1][0] * x + m[1][1] * y + m[1][2]) / z,
            )
        };
        let (cx, cy) = map(128.0, 100.0);
        assert!((cx - 128.0).abs() < 1e-9 && (cy - 100.0).abs() < 1e-9);
        let (x0, _) = map(0.0, 0.0);
        assert!((x0 - 128.0 / (1.0 + f)).abs() < 1e-9);
        let inv = invert3(&m).unwrap();
        let id = matmul(&m, &inv);
        for (r, row) in id.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }
}
