//! Image preprocessing: encoded image bytes to the normalised `f32` tensor a classifier takes.
//!
//! This module exists because a served model is only as accurate as its preprocessing is
//! faithful to the one it was trained and evaluated with. Almost every ImageNet classifier
//! was evaluated with PIL + torchvision (`Resize(256)`, `CenterCrop(224)`, `ToTensor`,
//! `Normalize`), so that is what we reproduce, pixel for pixel where we can:
//!
//! - [`decode`] (in [`crate::decode`], re-exported here): encoded bytes to 8-bit RGB with
//!   Pillow's decoder settings, under [`ImageLimits`].
//! - [`resize_crop`]: torchvision's `Resize(size)` on the shorter side (its exact size
//!   arithmetic) followed by `CenterCrop` (its exact offsets, including Python's
//!   round-half-to-even and zero padding), with `fast_image_resize`'s SIMD convolution in
//!   PIL's pass order.
//! - [`to_tensor`]: `ToTensor` + `Normalize` (optionally after PIL's `convert("L")`) into
//!   NCHW or NHWC order.
//! - [`Preprocessor`]: all three for one worker thread, reusing its buffers between images.
//!
//! Parity with PIL is tested against references made by `scripts/make_parity_reference.py`
//! (see the tests at the end of this file and `tests/data/parity/manifest.json`).

use fast_image_resize as fir;
use image::RgbImage;

pub use crate::decode::{Exif, ImageError, ImageLimits, decode, load_file, read_file};

/// How the image is resampled when it is resized. The names follow PIL; all but
/// [`Interpolation::Nearest`] are antialiased convolutions, as in PIL's `Image.resize`
/// (which is what torchvision calls for PIL images).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour (`PIL.Image.NEAREST`).
    Nearest,
    /// Triangle filter (`PIL.Image.BILINEAR`, torchvision's default).
    Bilinear,
    /// Catmull-Rom cubic, a = -0.5 (`PIL.Image.BICUBIC`, used by many timm models).
    Bicubic,
    /// Lanczos, 3 lobes (`PIL.Image.LANCZOS`).
    Lanczos,
}

impl Interpolation {
    fn resize_alg(self) -> fir::ResizeAlg {
        match self {
            Interpolation::Nearest => fir::ResizeAlg::Nearest,
            Interpolation::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            Interpolation::Bicubic => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
            Interpolation::Lanczos => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
        }
    }
}

/// The colour channels the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Three channels, R, G, B.
    Rgb,
    /// One channel: PIL's `convert("L")` (ITU-R 601-2 luma) of the cropped RGB image.
    Gray,
}

/// The order of the values of one image in the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Channels first: `[C, H, W]` per image (PyTorch).
    Nchw,
    /// Channels last: `[H, W, C]` per image (TensorFlow, Keras).
    Nhwc,
}

/// How a model wants its input prepared: torchvision's
/// `Compose([Resize(resize_size, interpolation), CenterCrop((crop_height, crop_width)),
/// ToTensor(), Normalize(mean, std)])`, plus the colour mode and tensor layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessSpec {
    /// The shorter side of the image is resized to this many pixels (the longer side keeps
    /// the aspect ratio, truncated to an integer as torchvision does).
    pub resize_size: u32,
    /// Height of the centre crop, in pixels.
    pub crop_height: u32,
    /// Width of the centre crop, in pixels.
    pub crop_width: u32,
    /// The resampling filter used by the resize.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]`; one value per channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean, in `[0, 1]`
    /// pixel units; one value per channel.
    pub std: Vec<f32>,
    /// RGB or grayscale input.
    pub color: ColorMode,
    /// Channel order of the tensor.
    pub layout: Layout,
    /// Whether decoding applies the image's EXIF orientation ([`Exif`]); the model config's
    /// `preprocess.exif_orientation`, true unless set.
    #[serde(default = "exif_orientation_default")]
    pub exif_orientation: bool,
}

fn exif_orientation_default() -> bool {
    true
}

impl PreprocessSpec {
    /// The usual ImageNet evaluation transform for a model taking `resolution` x `resolution`
    /// images: resize the shorter side to `floor(resolution / 0.875)` (224 -> 256), centre
    /// crop `resolution`, bilinear, ImageNet mean and std, RGB, NCHW.
    pub fn imagenet(resolution: u32) -> Self {
        PreprocessSpec {
            resize_size: (f64::from(resolution) / 0.875).floor() as u32,
            crop_height: resolution,
            crop_width: resolution,
            interpolation: Interpolation::Bilinear,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            color: ColorMode::Rgb,
            layout: Layout::Nchw,
            exif_orientation: true,
        }
    }

    /// Number of channels of the tensor: 3 for RGB, 1 for gray.
    pub fn channels(&self) -> usize {
        match self.color {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }

    /// Number of `f32` values of one preprocessed image (`channels * crop_height * crop_width`).
    pub fn tensor_len(&self) -> usize {
        self.channels() * self.crop_height as usize * self.crop_width as usize
    }

    /// Checks that the spec can be applied: non-zero sizes, one finite mean and one finite,
    /// non-zero std per channel.
    pub fn validate(&self) -> Result<(), ImageError> {
        let bad = |reason: String| Err(ImageError::BadSpec { reason });
        if self.resize_size == 0 || self.crop_height == 0 || self.crop_width == 0 {
            return bad(format!(
                "resize_size ({}), crop_height ({}) and crop_width ({}) must all be positive",
                self.resize_size, self.crop_height, self.crop_width
            ));
        }
        let channels = self.channels();
        if self.mean.len() != channels || self.std.len() != channels {
            return bad(format!(
                "{:?} input has {channels} channel(s) but mean has {} value(s) and std {}",
                self.color,
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("mean {:?} must be finite", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return bad(format!("std {:?} must be finite and non-zero", self.std));
        }
        Ok(())
    }

    /// The size `(width, height)` torchvision's `Resize(resize_size)` gives an image of
    /// `width` x `height` (`_compute_resized_output_size`): the shorter side becomes
    /// `resize_size`, the longer `int(resize_size * long / short)`.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let new_short = self.resize_size;
        // Same IEEE arithmetic as Python's `int(size * long / short)`: the product is exact in
        // f64 and the division is correctly rounded in both languages.
        let new_long = if short == 0 {
            0
        } else {
            (f64::from(new_short) * f64::from(long) / f64::from(short)) as u32
        };
        if width <= height {
            (new_short, new_long)
        } else {
            (new_long, new_short)
        }
    }

    /// Where the centre crop of an image already resized to `width` x `height` (see
    /// [`PreprocessSpec::resized_size`]) lies: the part of the image it takes and where that
    /// part lands in the crop (the rest of the crop is black padding). Lets a caller change the
    /// crop's pixels and put them back into the resized image, which [`resize_crop`] then
    /// crops to exactly those pixels (an image of the resized size is not resized again).
    pub fn crop_window(&self, width: u32, height: u32) -> CropWindow {
        let cx = axis_crop(width, self.crop_width);
        let cy = axis_crop(height, self.crop_height);
        CropWindow {
            x: cx.src_start,
            y: cy.src_start,
            width: cx.len,
            height: cy.len,
            crop_x: cx.dst_start,
            crop_y: cy.dst_start,
        }
    }
}

/// The part of a resized image that its centre crop takes ([`PreprocessSpec::crop_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    /// First column of the resized image taken.
    pub x: u32,
    /// First row of the resized image taken.
    pub y: u32,
    /// Columns taken (the crop's width, unless the image is narrower than the crop).
    pub width: u32,
    /// Rows taken (the crop's height, unless the image is shorter than the crop).
    pub height: u32,
    /// Column of the crop where they land (after the left padding).
    pub crop_x: u32,
    /// Row of the crop where they land (after the top padding).
    pub crop_y: u32,
}

/// Where the crop window of one axis lies: output index `i` takes resized index `i + offset`
/// (negative offsets come from zero padding), and only outputs `dst_start..dst_start + len`
/// come from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AxisCrop {
    /// First output index inside the image.
    dst_start: u32,
    /// First resized-image index used.
    src_start: u32,
    /// Number of indices taken from the image.
    len: u32,
}

/// torchvision's `center_crop` along one axis of `size` pixels, cropping to `crop`:
/// pad `(crop - size) // 2` zeros before if the crop is larger, otherwise start at
/// `int(round((size - crop) / 2.0))` with Python's round-half-to-even.
fn axis_crop(size: u32, crop: u32) -> AxisCrop {
    if crop >= size {
        AxisCrop {
            dst_start: (crop - size) / 2,
            src_start: 0,
            len: size,
        }
    } else {
        let d = size - crop;
        let half = d / 2;
        // d / 2.0 is an integer, or k + 0.5 which Python rounds to the even one of k, k + 1.
        let start = if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half };
        AxisCrop {
            dst_start: 0,
            src_start: start,
            len: crop,
        }
    }
}

/// Resizes the region of `src` (an RGB buffer of `src_w` x `src_h`) that lands in the crop
/// windows `cx`/`cy` of the `new_w` x `new_h` resized image, writing `cx.len` x `cy.len`
/// RGB pixels to `dst`. With windows covering the whole resized image this is PIL's
/// resize. With smaller windows it is the same computation in exact arithmetic
/// (`fast_image_resize`, like PIL, clips filters at the image's edges, not the crop's), but
/// the window's offset changes the floating-point rounding of the filter positions, so a
/// few pixels can differ by a level or two; `crop_window_matches_full_resize` tests both.
///
/// The two passes are made separately, horizontal first, because that is PIL's order and
/// each pass rounds to 8 bits (`fast_image_resize` on its own does the vertical pass first
/// for 8-bit images, which rounds differently).
#[allow(clippy::too_many_arguments)]
fn resize_region(
    resizer: &mut fir::Resizer,
    tmp: &mut Vec<u8>,
    src: &[u8],
    (src_w, src_h): (u32, u32),
    (new_w, new_h): (u32, u32),
    cx: AxisCrop,
    cy: AxisCrop,
    interpolation: Interpolation,
    dst: &mut [u8],
) -> Result<(), ImageError> {
    let fir_err = |e: &dyn std::fmt::Display| ImageError::Resize { reason: e.to_string() };
    let alg = interpolation.resize_alg();
    let scale_x = f64::from(src_w) / f64::from(new_w);
    let scale_y = f64::from(src_h) / f64::from(new_h);
    // The source box of the window; the whole image exactly when the window is the whole
    // resized image, and never past the image's edge (`len * scale` may round up by an ulp).
    let source_box = |c: AxisCrop, new: u32, size: u32, scale: f64| {
        if c.src_start == 0 && c.len == new {
            (0.0, f64::from(size))
        } else {
            let start = f64::from(c.src_start) * scale;
            (start, (f64::from(c.len) * scale).min(f64::from(size) - start))
        }
    };
    let (left, width) = source_box(cx, new_w, src_w, scale_x);
    let (top, height) = source_box(cy, new_h, src_h, scale_y);
    if interpolation == Interpolation::Nearest {
        // PIL samples the source pixel under each output pixel's centre,
        // floor((i + 0.5) * scale); fast_image_resize's nearest mode rounds differently
        // once a crop box is involved, so it is done here (a plain gather).
        let src_x = |i: u32| ((f64::from(i) + 0.5) * scale_x).floor().min(f64::from(src_w - 1)) as usize;
        let src_y = |i: u32| ((f64::from(i) + 0.5) * scale_y).floor().min(f64::from(src_h - 1)) as usize;
        let row = src_w as usize * 3;
        let xs: Vec<usize> = (0..cx.len).map(|x| src_x(cx.src_start + x) * 3).collect();
        for (y, out_row) in (0..cy.len).zip(dst.chunks_exact_mut(cx.len as usize * 3)) {
            let src_row = &src[src_y(cy.src_start + y) * row..][..row];
            for (o, &sx) in out_row.chunks_exact_mut(3).zip(&xs) {
                o.copy_from_slice(&src_row[sx..sx + 3]);
            }
        }
        return Ok(());
    }
    let src_view = fir::images::ImageRef::new(src_w, src_h, src, fir::PixelType::U8x3).map_err(|e| fir_err(&e))?;
    if new_w == src_w || new_h == src_h {
        // Only one pass is needed.
        let mut dst_view =
            fir::images::Image::from_slice_u8(cx.len, cy.len, dst, fir::PixelType::U8x3).map_err(|e| fir_err(&e))?;
        let options = fir::ResizeOptions::new().resize_alg(alg).crop(left, top, width, height);
        return resizer
            .resize(&src_view, &mut dst_view, &options)
            .map_err(|e| fir_err(&e));
    }
    // Horizontal pass over all rows, then vertical pass over the needed columns.
    tmp.clear();
    tmp.resize(cx.len as usize * src_h as usize * 3, 0);
    {
        let mut tmp_view =
            fir::images::Image::from_slice_u8(cx.len, src_h, tmp, fir::PixelType::U8x3).map_err(|e| fir_err(&e))?;
        let options = fir::ResizeOptions::new()
            .resize_alg(alg)
            .crop(left, 0.0, width, f64::from(src_h));
        resizer
            .resize(&src_view, &mut tmp_view, &options)
            .map_err(|e| fir_err(&e))?;
    }
    let tmp_view = fir::images::ImageRef::new(cx.len, src_h, tmp, fir::PixelType::U8x3).map_err(|e| fir_err(&e))?;
    let mut dst_view =
        fir::images::Image::from_slice_u8(cx.len, cy.len, dst, fir::PixelType::U8x3).map_err(|e| fir_err(&e))?;
    let options = fir::ResizeOptions::new()
        .resize_alg(alg)
        .crop(0.0, top, f64::from(cx.len), height);
    resizer
        .resize(&tmp_view, &mut dst_view, &options)
        .map_err(|e| fir_err(&e))
}

/// Above this many times the crop's pixels, only the crop window of the resized image is
/// computed (see [`resize_region`]).
const CROP_WINDOW_FACTOR: u64 = 4;

/// Resize + centre crop into `out` (`crop_width * crop_height * 3` bytes, RGB).
fn resize_crop_into(
    resizer: &mut fir::Resizer,
    tmp: &mut Vec<u8>,
    region: &mut Vec<u8>,
    img: &RgbImage,
    spec: &PreprocessSpec,
    out: &mut [u8],
) -> Result<(), ImageError> {
    let (src_w, src_h) = img.dimensions();
    if src_w == 0 || src_h == 0 {
        return Err(ImageError::Decode {
            format: "image".into(),
            reason: "the image is empty (0 pixels)".into(),
        });
    }
    let (new_w, new_h) = spec.resized_size(src_w, src_h);
    if new_w == 0 || new_h == 0 {
        return Err(ImageError::BadSpec {
            reason: format!(
                "resizing {src_w}x{src_h} to a shorter side of {} gives an empty image",
                spec.resize_size
            ),
        });
    }
    let (crop_w, crop_h) = (spec.crop_width, spec.crop_height);
    let cx = axis_crop(new_w, crop_w);
    let cy = axis_crop(new_h, crop_h);
    let row = crop_w as usize * 3;
    let padded = cx.len != crop_w || cy.len != crop_h;
    if padded {
        out.fill(0);
    }
    // `data` holds the resized image, or a window of it, `data_w` pixels wide; the crop
    // starts at (`x0`, `y0`) in it.
    let (data, data_w, x0, y0): (&[u8], u32, u32, u32) = if (new_w, new_h) == (src_w, src_h) {
        // torchvision returns the image unchanged when it already has the target size.
        (img.as_raw(), src_w, cx.src_start, cy.src_start)
    } else {
        // Resize the whole image and crop it, as torchvision does (bit-exact with PIL's
        // positions), unless the resized image would be much larger than the crop (extreme
        // aspect ratios: a 1x16384 image would become 256x4194304); then only the crop
        // window is resized, which can differ by a level or two in a few pixels.
        let resized_pixels = u64::from(new_w) * u64::from(new_h);
        let window_only = resized_pixels > CROP_WINDOW_FACTOR * u64::from(crop_w) * u64::from(crop_h);
        let (wx, wy) = if window_only {
            (cx, cy)
        } else {
            (
                AxisCrop {
                    dst_start: 0,
                    src_start: 0,
                    len: new_w,
                },
                AxisCrop {
                    dst_start: 0,
                    src_start: 0,
                    len: new_h,
                },
            )
        };
        region.clear();
        region.resize(wx.len as usize * wy.len as usize * 3, 0);
        let src = (src_w, src_h);
        resize_region(
            resizer,
            tmp,
            img.as_raw(),
            src,
            (new_w, new_h),
            wx,
            wy,
            spec.interpolation,
            region,
        )?;
        if window_only {
            (region.as_slice(), cx.len, 0, 0)
        } else {
            (region.as_slice(), new_w, cx.src_start, cy.src_start)
        }
    };
    let n = cx.len as usize * 3;
    for y in 0..cy.len as usize {
        let s = ((y0 as usize + y) * data_w as usize + x0 as usize) * 3;
        let d = (cy.dst_start as usize + y) * row + cx.dst_start as usize * 3;
        out[d..d + n].copy_from_slice(&data[s..s + n]);
    }
    Ok(())
}

/// torchvision's `CenterCrop((crop_height, crop_width))(Resize(resize_size)(img))` on an RGB
/// image, as `crop_width` x `crop_height` RGB. See [`PreprocessSpec::resized_size`] for the
/// resize's size; the crop starts at `round((size - crop) / 2)` (halves to even, as Python
/// rounds) and pads with black where the crop is larger than the resized image.
///
/// Allocates a resizer and scratch buffers per call; [`Preprocessor::resize_crop`] reuses
/// them.
pub fn resize_crop(img: &RgbImage, spec: &PreprocessSpec) -> Result<RgbImage, ImageError> {
    Preprocessor::new(spec.clone(), ImageLimits::default())?.resize_crop(img)
}

/// The `f32` lookup table `(v / 255 - mean[c]) / std[c]` for `v` in `0..=255`, per channel:
/// the same f32 operations as torchvision's `ToTensor` (`div(255)`) + `Normalize`
/// (`sub_(mean).div_(std)`), so the results are bit-identical.
fn normalisation_table(spec: &PreprocessSpec) -> Vec<f32> {
    let mut lut = Vec::with_capacity(256 * spec.channels());
    for c in 0..spec.channels() {
        let (mean, std) = (spec.mean[c], spec.std[c]);
        lut.extend((0..=255u8).map(|v| (f32::from(v) / 255.0 - mean) / std));
    }
    lut
}

/// PIL's `convert("L")`: `L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`, the
/// ITU-R 601-2 luma `R * 299/1000 + G * 587/1000 + B * 114/1000` in 16-bit fixed point.
/// PIL's `convert("L")` of one pixel: `(19595 R + 38470 G + 7471 B + 2^15) >> 16`.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// Writes the normalised tensor of the crop-sized RGB buffer `rgb` into `out`.
fn tensor_from_rgb(rgb: &[u8], spec: &PreprocessSpec, lut: &[f32], out: &mut [f32]) {
    let plane = spec.crop_width as usize * spec.crop_height as usize;
    let pixels = rgb.chunks_exact(3).take(plane);
    match (spec.color, spec.layout) {
        (ColorMode::Gray, _) => {
            for (o, p) in out.iter_mut().zip(pixels) {
                *o = lut[usize::from(luma(p[0], p[1], p[2]))];
            }
        }
        (ColorMode::Rgb, Layout::Nhwc) => {
            for (o, p) in out.chunks_exact_mut(3).zip(pixels) {
                o[0] = lut[usize::from(p[0])];
                o[1] = lut[256 + usize::from(p[1])];
                o[2] = lut[512 + usize::from(p[2])];
            }
        }
        (ColorMode::Rgb, Layout::Nchw) => {
            let (r_plane, rest) = out.split_at_mut(plane);
            let (g_plane, b_plane) = rest.split_at_mut(plane);
            for (((p, r), g), b) in pixels.zip(r_plane).zip(g_plane).zip(b_plane) {
                *r = lut[usize::from(p[0])];
                *g = lut[256 + usize::from(p[1])];
                *b = lut[512 + usize::from(p[2])];
            }
        }
    }
}

fn check_out_len(spec: &PreprocessSpec, out: &[f32]) -> Result<(), ImageError> {
    if out.len() == spec.tensor_len() {
        Ok(())
    } else {
        Err(ImageError::OutputLength {
            expected: spec.tensor_len(),
            actual: out.len(),
        })
    }
}

/// torchvision's `ToTensor()` + `Normalize(mean, std)` of a crop-sized RGB image into `out`
/// (`spec.tensor_len()` values, one image, in `spec.layout` order). With
/// [`ColorMode::Gray`] the pixels first go through PIL's `convert("L")`.
pub fn to_tensor(img: &RgbImage, spec: &PreprocessSpec, out: &mut [f32]) -> Result<(), ImageError> {
    spec.validate()?;
    check_out_len(spec, out)?;
    if img.dimensions() != (spec.crop_width, spec.crop_height) {
        return Err(ImageError::WrongSize {
            width: img.width(),
            height: img.height(),
            expected_width: spec.crop_width,
            expected_height: spec.crop_height,
        });
    }
    tensor_from_rgb(img.as_raw(), spec, &normalisation_table(spec), out);
    Ok(())
}

/// [`decode`] + [`resize_crop`] + [`to_tensor`]: encoded bytes to one image's tensor in
/// `out` (`spec.tensor_len()` values). Allocates scratch buffers per call; a
/// [`Preprocessor`] reuses them.
pub fn preprocess(
    bytes: &[u8],
    spec: &PreprocessSpec,
    limits: &ImageLimits,
    out: &mut [f32],
) -> Result<(), ImageError> {
    Preprocessor::new(spec.clone(), limits.clone())?.preprocess(bytes, out)
}

/// Preprocessing for one worker thread: a validated spec and limits, plus the resizer, the
/// normalisation table and the scratch buffers, all reused from one image to the next.
#[derive(Debug)]
pub struct Preprocessor {
    spec: PreprocessSpec,
    limits: ImageLimits,
    resizer: fir::Resizer,
    lut: Vec<f32>,
    tmp: Vec<u8>,
    region: Vec<u8>,
    crop: Vec<u8>,
}

impl Preprocessor {
    /// A preprocessor for `spec` (validated here) and `limits`.
    pub fn new(spec: PreprocessSpec, limits: ImageLimits) -> Result<Self, ImageError> {
        spec.validate()?;
        let lut = normalisation_table(&spec);
        Ok(Preprocessor {
            spec,
            limits,
            resizer: fir::Resizer::new(),
            lut,
            tmp: Vec::new(),
            region: Vec::new(),
            crop: Vec::new(),
        })
    }

    /// The spec this preprocessor applies.
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// The limits [`Preprocessor::preprocess`] decodes under.
    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    fn crop_into_scratch(&mut self, img: &RgbImage) -> Result<(), ImageError> {
        let len = self.spec.crop_width as usize * self.spec.crop_height as usize * 3;
        self.crop.clear();
        self.crop.resize(len, 0);
        resize_crop_into(
            &mut self.resizer,
            &mut self.tmp,
            &mut self.region,
            img,
            &self.spec,
            &mut self.crop,
        )
    }

    /// [`resize_crop`] with this preprocessor's spec and buffers.
    pub fn resize_crop(&mut self, img: &RgbImage) -> Result<RgbImage, ImageError> {
        self.crop_into_scratch(img)?;
        let (w, h) = (self.spec.crop_width, self.spec.crop_height);
        RgbImage::from_raw(w, h, self.crop.clone()).ok_or_else(|| ImageError::Resize {
            reason: format!("crop buffer does not hold {w}x{h} pixels"),
        })
    }

    /// [`resize_crop`] + [`to_tensor`] of a decoded image into `out`.
    pub fn preprocess_image(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<(), ImageError> {
        check_out_len(&self.spec, out)?;
        self.crop_into_scratch(img)?;
        tensor_from_rgb(&self.crop, &self.spec, &self.lut, out);
        Ok(())
    }

    /// [`decode`] + [`resize_crop`] + [`to_tensor`] of encoded bytes into `out`.
    pub fn preprocess(&mut self, bytes: &[u8], out: &mut [f32]) -> Result<(), ImageError> {
        check_out_len(&self.spec, out)?;
        let img = decode(bytes, &self.limits, Exif::from_flag(self.spec.exif_orientation))?;
        self.preprocess_image(&img, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{encode, test_picture};
    use image::{DynamicImage, ImageFormat, Rgb};
    use std::path::{Path, PathBuf};

    /// [`super::decode`] with the EXIF orientation applied (the default policy).
    fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
        super::decode(bytes, limits, Exif::Apply)
    }

    /// [`super::load_file`] with the EXIF orientation applied.
    fn load_file(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
        super::load_file(path, limits, Exif::Apply)
    }

    fn spec(resize: u32, crop_h: u32, crop_w: u32) -> PreprocessSpec {
        PreprocessSpec {
            resize_size: resize,
            crop_height: crop_h,
            crop_width: crop_w,
            ..PreprocessSpec::imagenet(224)
        }
    }

    /// (max, mean) absolute difference of two equally sized RGB images, in 0..255 units.
    fn abs_error(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
        assert_eq!(a.dimensions(), b.dimensions());
        let diffs = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y));
        let (max, sum) = diffs.fold((0u8, 0u64), |(m, s), d| (m.max(d), s + u64::from(d)));
        (max, sum as f64 / a.as_raw().len() as f64)
    }

    #[test]
    fn imagenet_spec_and_sizes() {
        let s = PreprocessSpec::imagenet(224);
        assert_eq!((s.resize_size, s.crop_height, s.crop_width), (256, 224, 224));
        assert_eq!(PreprocessSpec::imagenet(299).resize_size, 341);
        assert_eq!(PreprocessSpec::imagenet(384).resize_size, 438);
        assert_eq!((s.channels(), s.tensor_len()), (3, 3 * 224 * 224));
        let g = PreprocessSpec {
            color: ColorMode::Gray,
            mean: vec![0.5],
            std: vec![0.5],
            ..s.clone()
        };
        assert_eq!((g.channels(), g.tensor_len()), (1, 224 * 224));
        // torchvision: int(256 * 1024 / 683) = 383, orientation kept.
        assert_eq!(s.resized_size(1024, 683), (383, 256));
        assert_eq!(s.resized_size(683, 1024), (256, 383));
        assert_eq!(s.resized_size(512, 512), (256, 256));
        assert_eq!(s.resized_size(180, 291), (256, 413));
        s.validate().unwrap();
        g.validate().unwrap();
    }

    #[test]
    fn spec_serde_is_lowercase() {
        let s = PreprocessSpec {
            interpolation: Interpolation::Bicubic,
            layout: Layout::Nhwc,
            ..PreprocessSpec::imagenet(224)
        };
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("interpolation = \"bicubic\""), "{text}");
        assert!(text.contains("layout = \"nhwc\""), "{text}");
        assert!(text.contains("color = \"rgb\""), "{text}");
        let back: PreprocessSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn invalid_specs_are_refused() {
        let bad_mean = PreprocessSpec {
            mean: vec![0.5],
            ..PreprocessSpec::imagenet(224)
        };
        assert!(matches!(bad_mean.validate(), Err(ImageError::BadSpec { .. })));
        let zero_std = PreprocessSpec {
            std: vec![0.2, 0.0, 0.2],
            ..PreprocessSpec::imagenet(224)
        };
        assert!(matches!(
            Preprocessor::new(zero_std, ImageLimits::default()),
            Err(ImageError::BadSpec { .. })
        ));
        let zero_crop = PreprocessSpec {
            crop_width: 0,
            ..PreprocessSpec::imagenet(224)
        };
        assert!(matches!(
            resize_crop(&test_picture(8, 8), &zero_crop),
            Err(ImageError::BadSpec { .. })
        ));
    }

    #[test]
    fn center_crop_offsets_round_half_to_even() {
        // Python: int(round(49 / 2.0)) == 24, int(round(51 / 2.0)) == 26, int(round(1 / 2.0)) == 0.
        assert_eq!(
            axis_crop(273, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 24,
                len: 224
            }
        );
        assert_eq!(
            axis_crop(275, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 26,
                len: 224
            }
        );
        assert_eq!(
            axis_crop(225, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 0,
                len: 224
            }
        );
        assert_eq!(
            axis_crop(227, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 2,
                len: 224
            }
        );
        assert_eq!(
            axis_crop(256, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 16,
                len: 224
            }
        );
        // Padding: (224 - 160) // 2 = 32 before, the rest after; odd: (224 - 161) // 2 = 31.
        assert_eq!(
            axis_crop(160, 224),
            AxisCrop {
                dst_start: 32,
                src_start: 0,
                len: 160
            }
        );
        assert_eq!(
            axis_crop(161, 224),
            AxisCrop {
                dst_start: 31,
                src_start: 0,
                len: 161
            }
        );
        assert_eq!(
            axis_crop(224, 224),
            AxisCrop {
                dst_start: 0,
                src_start: 0,
                len: 224
            }
        );
    }

    #[test]
    fn nearest_samples_pixel_centres() {
        // 6x6 -> shorter side 2: scale 3, output i takes source floor((i + 0.5) * 3) = 1, 4.
        let img = RgbImage::from_fn(6, 6, |x, y| Rgb([x as u8, y as u8, 0]));
        let s = PreprocessSpec {
            interpolation: Interpolation::Nearest,
            ..spec(2, 2, 2)
        };
        let out = resize_crop(&img, &s).unwrap();
        let got: Vec<_> = out.pixels().map(|p| (p[0], p[1])).collect();
        assert_eq!(got, [(1, 1), (4, 1), (1, 4), (4, 4)]);
    }

    #[test]
    fn crop_larger_than_image_pads_with_black() {
        // 5x4 resized to shorter side 4 -> int(4 * 5 / 4) = 5: 5x4, already that size so no
        // resize; crop 7 wide x 6 high pads 1 column left, 1 right, 1 row top, 1 bottom.
        let img = RgbImage::from_pixel(5, 4, Rgb([200, 100, 50]));
        let out = resize_crop(&img, &spec(4, 6, 7)).unwrap();
        assert_eq!(out.dimensions(), (7, 6));
        for (x, y, p) in out.enumerate_pixels() {
            let inside = (1..6).contains(&x) && (1..5).contains(&y);
            assert_eq!(
                *p,
                if inside { Rgb([200, 100, 50]) } else { Rgb([0, 0, 0]) },
                "({x}, {y})"
            );
        }
    }

    /// `crop_window` names the pixels `resize_crop` takes from an image of the resized size
    /// (which it does not resample: the identity at equal size), padded or not.
    #[test]
    fn crop_window_locates_the_crop_in_the_resized_image() {
        for (w, h, s) in [
            (300, 256, spec(256, 224, 224)),
            (5, 4, spec(4, 6, 7)),
            (28, 28, spec(28, 28, 28)),
        ] {
            assert_eq!(
                s.resized_size(w, h),
                (w, h),
                "an image of the resized size keeps its size"
            );
            let img = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 1]));
            let out = resize_crop(&img, &s).unwrap();
            let win = s.crop_window(w, h);
            for (x, y, p) in out.enumerate_pixels() {
                let inside = (win.crop_x..win.crop_x + win.width).contains(&x)
                    && (win.crop_y..win.crop_y + win.height).contains(&y);
                let expected = if inside {
                    *img.get_pixel(x - win.crop_x + win.x, y - win.crop_y + win.y)
                } else {
                    Rgb([0, 0, 0])
                };
                assert_eq!(*p, expected, "{w}x{h} crop pixel ({x}, {y})");
            }
        }
        let win = spec(256, 224, 224).crop_window(300, 256);
        assert_eq!(
            (win.x, win.y, win.width, win.height, win.crop_x, win.crop_y),
            (38, 16, 224, 224, 0, 0)
        );
    }

    #[test]
    fn image_of_the_resized_size_is_only_cropped() {
        let img = test_picture(300, 256);
        let out = resize_crop(&img, &spec(256, 224, 224)).unwrap();
        // round((300 - 224) / 2) = 38, (256 - 224) / 2 = 16.
        let expected = image::imageops::crop_imm(&img, 38, 16, 224, 224).to_image();
        assert_eq!(out, expected);
    }

    /// Resizing the whole image and cropping is what torchvision does, and what
    /// `resize_crop` does unless the resized image is huge; resizing only the crop window
    /// (the fallback for huge ones) may differ by at most two levels.
    #[test]
    fn crop_window_matches_full_resize() {
        let mut resizer = fir::Resizer::new();
        let mut tmp = Vec::new();
        let sizes = [
            (512, 512),
            (1024, 683),
            (320, 188),
            (180, 291),
            (301, 257),
            (221, 165),
            (97, 400),
            (640, 480),
            (2000, 90),
        ];
        let interps = [
            Interpolation::Bilinear,
            Interpolation::Bicubic,
            Interpolation::Lanczos,
            Interpolation::Nearest,
        ];
        let mut window_cases = 0;
        for (w, h) in sizes {
            let img = test_picture(w, h);
            for interpolation in interps {
                for (resize, crop_h, crop_w) in [(256, 224, 224), (160, 224, 223), (256, 200, 240), (232, 224, 224)] {
                    let s = PreprocessSpec {
                        interpolation,
                        ..spec(resize, crop_h, crop_w)
                    };
                    let (nw, nh) = s.resized_size(w, h);
                    let full_x = AxisCrop {
                        dst_start: 0,
                        src_start: 0,
                        len: nw,
                    };
                    let full_y = AxisCrop {
                        dst_start: 0,
                        src_start: 0,
                        len: nh,
                    };
                    let mut full = vec![0u8; nw as usize * nh as usize * 3];
                    let (src, new) = ((w, h), (nw, nh));
                    let raw = img.as_raw();
                    resize_region(
                        &mut resizer,
                        &mut tmp,
                        raw,
                        src,
                        new,
                        full_x,
                        full_y,
                        interpolation,
                        &mut full,
                    )
                    .unwrap();
                    let full = RgbImage::from_raw(nw, nh, full).unwrap();
                    let (cx, cy) = (axis_crop(nw, crop_w), axis_crop(nh, crop_h));
                    let mut expected = RgbImage::new(crop_w, crop_h);
                    let mut window = vec![0u8; cx.len as usize * cy.len as usize * 3];
                    resize_region(
                        &mut resizer,
                        &mut tmp,
                        raw,
                        src,
                        new,
                        cx,
                        cy,
                        interpolation,
                        &mut window,
                    )
                    .unwrap();
                    let mut windowed = RgbImage::new(crop_w, crop_h);
                    for y in 0..cy.len {
                        for x in 0..cx.len {
                            let p = *full.get_pixel(cx.src_start + x, cy.src_start + y);
                            expected.put_pixel(cx.dst_start + x, cy.dst_start + y, p);
                            let i = ((y * cx.len + x) * 3) as usize;
                            let q = Rgb([window[i], window[i + 1], window[i + 2]]);
                            windowed.put_pixel(cx.dst_start + x, cy.dst_start + y, q);
                        }
                    }
                    let case = format!("{w}x{h} {interpolation:?} {resize}/{crop_h}x{crop_w}");
                    let (max, _) = abs_error(&windowed, &expected);
                    assert!(max <= 2, "{case}: crop window differs by {max}");
                    let got = resize_crop(&img, &s).unwrap();
                    if u64::from(nw) * u64::from(nh) > CROP_WINDOW_FACTOR * u64::from(crop_w * crop_h) {
                        window_cases += 1;
                        assert!(got == windowed, "{case}");
                    } else {
                        assert!(got == expected, "{case}: {:?}", abs_error(&got, &expected));
                    }
                }
            }
        }
        assert!(window_cases > 0);
    }

    #[test]
    fn layouts_place_values() {
        // 2x2 crop: pixel (x, y) = (10x + y, 100 + 10x + y, 200 + 10x + y).
        let img = RgbImage::from_fn(2, 2, |x, y| {
            Rgb([(10 * x + y) as u8, (100 + 10 * x + y) as u8, (200 + 10 * x + y) as u8])
        });
        let base = PreprocessSpec {
            mean: vec![0.0; 3],
            std: vec![1.0 / 255.0; 3],
            ..spec(2, 2, 2)
        };
        let mut nchw = vec![0.0; 12];
        to_tensor(&img, &base, &mut nchw).unwrap();
        let expect_nchw = [0., 10., 1., 11., 100., 110., 101., 111., 200., 210., 201., 211.];
        for (got, want) in nchw.iter().zip(expect_nchw) {
            assert!((got - want).abs() < 1e-3, "{nchw:?}");
        }
        let nhwc_spec = PreprocessSpec {
            layout: Layout::Nhwc,
            ..base.clone()
        };
        let mut nhwc = vec![0.0; 12];
        to_tensor(&img, &nhwc_spec, &mut nhwc).unwrap();
        let expect_nhwc = [0., 100., 200., 10., 110., 210., 1., 101., 201., 11., 111., 211.];
        for (got, want) in nhwc.iter().zip(expect_nhwc) {
            assert!((got - want).abs() < 1e-3, "{nhwc:?}");
        }
        let mut short = vec![0.0; 11];
        assert!(matches!(
            to_tensor(&img, &base, &mut short),
            Err(ImageError::OutputLength {
                expected: 12,
                actual: 11
            })
        ));
        let wrong = RgbImage::new(3, 2);
        assert!(matches!(
            to_tensor(&wrong, &base, &mut nchw),
            Err(ImageError::WrongSize { .. })
        ));
    }

    #[test]
    fn normalisation_matches_torchvision_formula() {
        let img = RgbImage::from_pixel(1, 1, Rgb([124, 116, 104]));
        let s = spec(1, 1, 1);
        let mut out = [0.0f32; 3];
        to_tensor(&img, &s, &mut out).unwrap();
        // (124/255 - 0.485) / 0.229, (116/255 - 0.456) / 0.224, (104/255 - 0.406) / 0.225
        let expected = [0.005_565_5_f32, -0.004_902_0, 0.008_191_8];
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{out:?}");
        }
        // Exactly torchvision's f32 operations.
        assert_eq!(out[0], (124f32 / 255.0 - 0.485) / 0.229);

        // Gray: PIL's L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
        assert_eq!(luma(124, 116, 104), 117);
        let g = PreprocessSpec {
            color: ColorMode::Gray,
            mean: vec![0.5],
            std: vec![0.25],
            ..s
        };
        let mut one = [0.0f32; 1];
        to_tensor(&img, &g, &mut one).unwrap();
        assert_eq!(one[0], (117f32 / 255.0 - 0.5) / 0.25);
    }

    #[test]
    fn preprocessor_matches_the_free_functions() {
        let bytes = encode(&DynamicImage::ImageRgb8(test_picture(300, 200)), ImageFormat::Png);
        let s = PreprocessSpec::imagenet(224);
        let mut expected = vec![0.0; s.tensor_len()];
        let crop = resize_crop(&decode(&bytes, &ImageLimits::default()).unwrap(), &s).unwrap();
        to_tensor(&crop, &s, &mut expected).unwrap();
        let mut free = vec![0.0; s.tensor_len()];
        preprocess(&bytes, &s, &ImageLimits::default(), &mut free).unwrap();
        assert_eq!(free, expected);
        let mut p = Preprocessor::new(s.clone(), ImageLimits::default()).unwrap();
        for _ in 0..2 {
            let mut out = vec![1.0; s.tensor_len()];
            p.preprocess(&bytes, &mut out).unwrap();
            assert_eq!(out, expected);
        }
        assert!(matches!(p.preprocess(b"", &mut free), Err(ImageError::Empty)));
    }

    /// One parity case: made by `scripts/make_parity_reference.py`, listed in
    /// `tests/data/parity/manifest.json`.
    struct Case {
        name: &'static str,
        input: &'static str,
        from_foolbox: bool,
        resize: u32,
        crop_h: u32,
        crop_w: u32,
    }

    const CASES: [Case; 11] = [
        Case {
            name: "jpeg_512sq",
            input: "imagenet_00_243.jpg",
            from_foolbox: true,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "jpeg_1024x683",
            input: "imagenet_10_541.jpg",
            from_foolbox: true,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "jpeg_512sq_b",
            input: "imagenet_14_129.jpg",
            from_foolbox: true,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "png_wide",
            input: "input_wide_320x188.png",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "png_tall",
            input: "input_tall_180x291.png",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "png_gray",
            input: "input_gray_301x257.png",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "png_rgba",
            input: "input_rgba_221x165.png",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "png_wide_pad",
            input: "input_wide_320x188.png",
            from_foolbox: false,
            resize: 160,
            crop_h: 224,
            crop_w: 223,
        },
        Case {
            name: "png_tall_rect",
            input: "input_tall_180x291.png",
            from_foolbox: false,
            resize: 256,
            crop_h: 200,
            crop_w: 240,
        },
        Case {
            name: "jpeg_progressive",
            input: "input_progressive_320x240.jpg",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
        Case {
            name: "jpeg_odd_baseline",
            input: "input_baseline_301x203.jpg",
            from_foolbox: false,
            resize: 256,
            crop_h: 224,
            crop_w: 224,
        },
    ];

    /// Largest accepted difference from PIL + torchvision, in 0..255 units, for every input:
    /// JPEG decoding is Pillow's exactly (libjpeg-turbo with its settings, pinned by
    /// `decode::tests::jpeg_decoding_is_pillows_exactly`), and the resize rounds its
    /// fixed-point sums within one level of PIL's. See the report the test prints.
    const MAX_ERR: u8 = 1;

    #[test]
    fn parity_with_pil_and_torchvision() {
        let parity = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity"));
        let manifest = std::fs::read_to_string(parity.join("manifest.json")).unwrap();
        let foolbox = crate::provision::foolbox_imagenet_samples().unwrap();
        let decoded_dir = std::env::var_os("HARDY_PARITY_DECODED_DIR").map(PathBuf::from);
        let limits = ImageLimits::default();
        let mut failures = Vec::new();
        for case in &CASES {
            let reference = format!("{}.ref.png", case.name);
            assert!(
                manifest.contains(&format!("\"{reference}\"")),
                "manifest.json lacks {reference}"
            );
            assert!(
                manifest.contains(&format!("\"{}\"", case.input)),
                "manifest.json lacks {}",
                case.input
            );
            let input = if case.from_foolbox {
                foolbox.join(case.input)
            } else {
                parity.join(case.input)
            };
            let want = load_file(&parity.join(&reference), &limits).unwrap();
            let s = spec(case.resize, case.crop_h, case.crop_w);
            let got = resize_crop(&load_file(&input, &limits).unwrap(), &s).unwrap();
            let (max, mean) = abs_error(&got, &want);
            println!(
                "parity {:14} {:24} max abs error {max}, mean {mean:.4} (0..255 units)",
                case.name, case.input
            );
            if max > MAX_ERR {
                failures.push(format!("{}: max error {max} > {MAX_ERR}", case.name));
            }
            if let (Some(dir), true) = (&decoded_dir, case.from_foolbox) {
                // Split the error: decoding alone, and resizing PIL's own decoding.
                let pil_decoded = load_file(&dir.join(format!("{}.decoded.png", case.name)), &limits).unwrap();
                let ours = load_file(&input, &limits).unwrap();
                let (dmax, dmean) = abs_error(&ours, &pil_decoded);
                let (rmax, rmean) = abs_error(&resize_crop(&pil_decoded, &s).unwrap(), &want);
                println!(
                    "    decode only (full size): max {dmax}, mean {dmean:.4}; resize+crop of PIL's decoding: max {rmax}, mean {rmean:.4}"
                );
            }
        }
        assert!(failures.is_empty(), "{failures:?}");
    }
}
