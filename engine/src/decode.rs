//! Image decoding: encoded bytes to 8-bit RGB pixels. This is Hardy's one decode path: the
//! server, `hardy classify`, `hardy eval` and the trainer all decode through [`decode`], so an
//! evaluation measures the pixels the server classifies.
//!
//! The policy, fixed here and documented in models/README.md:
//!
//! - The format is sniffed from the content (JPEG, PNG, WebP, BMP, GIF), never from a name.
//! - The input size, then the header's dimensions, are checked against [`ImageLimits`]
//!   *before* any pixel is decoded.
//! - JPEG is decoded by libjpeg-turbo (the `mozjpeg` crate builds its decoder, which is
//!   libjpeg-turbo's, from source with the C compiler alone; with `nasm` on the PATH at build
//!   time it adds the SIMD kernels, which give the same pixels). The settings are Pillow's:
//!   the accurate integer IDCT (`JDCT_ISLOW`) and fancy upsampling, so decoded pixels match
//!   `PIL.Image.open(f).convert("RGB")` exactly, progressive files included. CMYK files are
//!   read as Adobe-inverted CMYK and converted with Pillow's formula. Truncated files are
//!   refused (Pillow refuses them too), and so are files with more than [`MAX_JPEG_SCANS`]
//!   scans (a progressive file with thousands of scans costs a full pass each).
//! - PNG, WebP, BMP and GIF (first frame) are decoded by the `image` crate.
//! - The EXIF orientation is applied or ignored as the model's `preprocess.exif_orientation`
//!   says ([`Exif`]); PIL's `Image.open` ignores it, phones rely on it.
//! - Gray, gray + alpha, RGBA and 16-bit images become 8-bit RGB; alpha is dropped, like
//!   PIL's `convert("RGB")`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};

/// Most scans a JPEG may have. Baseline files have one per component (at most four);
/// progressive encoders write about ten; libjpeg-turbo's own fuzzers stop at 500.
pub const MAX_JPEG_SCANS: usize = 500;

/// Whether [`decode`] applies the EXIF orientation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exif {
    /// Rotate and flip the image as its EXIF orientation says (JPEG, WebP, PNG `eXIf`), so a
    /// phone photo stands upright. The default.
    #[default]
    Apply,
    /// Keep the pixels as stored, as `PIL.Image.open` (and so torchvision's `ImageFolder`)
    /// does.
    Ignore,
}

impl Exif {
    /// [`Exif::Apply`] when `apply` is true (the model config's `exif_orientation`).
    pub fn from_flag(apply: bool) -> Self {
        if apply { Exif::Apply } else { Exif::Ignore }
    }
}

/// Bounds on the images [`decode`] accepts, so that a hostile or broken upload cannot
/// exhaust memory. Dimensions are checked from the header, before pixels are decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageLimits {
    /// Largest accepted width, in pixels.
    pub max_width: u32,
    /// Largest accepted height, in pixels.
    pub max_height: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
    /// Largest accepted encoded input, in bytes.
    pub max_bytes: usize,
}

impl Default for ImageLimits {
    /// 16384 x 16384 pixels at most, 64 Mi pixels (2^26) in total, 64 MiB of encoded input.
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 1 << 26,
            max_bytes: 64 << 20,
        }
    }
}

impl ImageLimits {
    pub(crate) fn describe(&self) -> String {
        format!(
            "at most {}x{} pixels and {} pixels in total",
            self.max_width, self.max_height, self.max_pixels
        )
    }
}

/// What went wrong while decoding or preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The input has no bytes at all.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// The content is not in a format we decode.
    #[error("not a supported image: the content is not JPEG, PNG, WebP, BMP or GIF")]
    UnknownFormat,
    /// The header declares an image larger than the limits allow.
    #[error("the image is {width}x{height} pixels; {limit}")]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit that was exceeded, in words.
        limit: String,
    },
    /// The encoded input is larger than the limits allow.
    #[error("the image is {bytes} bytes; at most {limit} bytes are accepted")]
    TooManyBytes {
        /// Size of the input.
        bytes: usize,
        /// The largest accepted size.
        limit: usize,
    },
    /// The content looked like `format` but could not be decoded (truncated, corrupt, or an
    /// unsupported variant of the format).
    #[error("cannot decode {format} image: {reason}")]
    Decode {
        /// The format the content was recognised as.
        format: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// An image file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An image file was read but is not acceptable; `source` says why.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with its content.
        source: Box<ImageError>,
    },
    /// The [`PreprocessSpec`] cannot be applied.
    #[error("invalid preprocessing: {reason}")]
    BadSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// The output slice does not have [`PreprocessSpec::tensor_len`] values.
    #[error("output buffer holds {actual} values but one preprocessed image needs {expected}")]
    OutputLength {
        /// `spec.tensor_len()`.
        expected: usize,
        /// The slice's length.
        actual: usize,
    },
    /// [`to_tensor`] was given an image that is not of the crop size.
    #[error("image is {width}x{height} but the spec's crop is {expected_width}x{expected_height}")]
    WrongSize {
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
        /// `spec.crop_width`.
        expected_width: u32,
        /// `spec.crop_height`.
        expected_height: u32,
    },
    /// The resize library refused its arguments (a bug in this module, not in the input).
    #[error("resize failed: {reason}")]
    Resize {
        /// The library's message.
        reason: String,
    },
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Gif => "GIF",
        _ => "image",
    }
}

/// Maps the image crate's error for an image of `format` (and, once known, `dims`).
fn map_image_error(
    err: image::ImageError,
    format: ImageFormat,
    dims: Option<(u32, u32)>,
    limits: &ImageLimits,
) -> ImageError {
    match (err, dims) {
        (image::ImageError::Limits(e), Some((width, height))) => ImageError::TooLarge {
            width,
            height,
            limit: format!("{} ({e})", limits.describe()),
        },
        (err, _) => ImageError::Decode {
            format: format_name(format).to_string(),
            reason: err.to_string(),
        },
    }
}

/// Decodes an encoded image (JPEG, PNG, WebP, BMP or GIF, recognised from its content)
/// into 8-bit RGB, refusing it if it breaks `limits`; see the module comment for the policy.
pub fn decode(bytes: &[u8], limits: &ImageLimits, exif: Exif) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| ImageError::UnknownFormat)?;
    match reader.format() {
        Some(ImageFormat::Jpeg) => crate::jpeg::decode(bytes, limits, exif),
        Some(f @ (ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Gif)) => {
            decode_with_image_crate(reader, f, limits, exif)
        }
        _ => Err(ImageError::UnknownFormat),
    }
}

/// Checks a header's `width` x `height` against `limits` (and refuses an empty image).
pub(crate) fn check_dimensions(width: u32, height: u32, format: &str, limits: &ImageLimits) -> Result<(), ImageError> {
    if width > limits.max_width
        || height > limits.max_height
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: limits.describe(),
        });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Decode {
            format: format.into(),
            reason: format!("the header declares an empty image ({width}x{height})"),
        });
    }
    Ok(())
}

/// PNG, WebP, BMP and GIF through the `image` crate, with its allocation limit set too.
fn decode_with_image_crate(
    mut reader: image::ImageReader<Cursor<&[u8]>>,
    format: ImageFormat,
    limits: &ImageLimits,
    exif: Exif,
) -> Result<RgbImage, ImageError> {
    // Decoding may allocate the image at up to 16 bits x 4 channels, plus working memory.
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits.clone());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, format, None, limits))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, format_name(format), limits)?;
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    let dims = Some((width, height));
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| map_image_error(e, format, dims, limits))?;
    let orientation = match exif {
        Exif::Ignore => Orientation::NoTransforms,
        Exif::Apply => decoder.orientation().unwrap_or_else(|e| {
            tracing::debug!(
                "ignoring unreadable EXIF orientation of a {} image: {e}",
                format_name(format)
            );
            Orientation::NoTransforms
        }),
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format, dims, limits))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Reads the image file at `path` and [`decode`]s it; errors name the file.
pub fn load_file(path: &Path, limits: &ImageLimits, exif: Exif) -> Result<RgbImage, ImageError> {
    let bytes = read_file(path, limits)?;
    decode(&bytes, limits, exif).map_err(|e| ImageError::File {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// The bytes of an image file, refused (naming the file) when it is larger than
/// `limits.max_bytes`; the size is checked before anything is read.
pub fn read_file(path: &Path, limits: &ImageLimits) -> Result<Vec<u8>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limits.max_bytes as u64 {
        return Err(ImageError::File {
            path: path.to_path_buf(),
            source: Box::new(ImageError::TooManyBytes {
                bytes: usize::try_from(size).unwrap_or(usize::MAX),
                limit: limits.max_bytes,
            }),
        });
    }
    std::fs::read(path).map_err(io)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgb, Rgba};

    /// [`super::decode`] with the EXIF orientation applied (the default policy).
    fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
        super::decode(bytes, limits, Exif::Apply)
    }

    /// [`super::load_file`] with the EXIF orientation applied.
    fn load_file(path: &Path, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
        super::load_file(path, limits, Exif::Apply)
    }

    pub(crate) fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    /// A deterministic, detailed test picture (smooth gradients plus a checkerboard).
    pub(crate) fn test_picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let c = if (x / 3 + y / 5) % 2 == 0 { 40 } else { 0 };
            Rgb([
                ((x * 255) / w.max(1)) as u8,
                ((y * 255) / h.max(1)) as u8,
                (((x + y) * 7) % 200) as u8 + c,
            ])
        })
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(matches!(decode(&[], &ImageLimits::default()), Err(ImageError::Empty)));
    }

    #[test]
    fn text_is_unknown_format() {
        let err = decode(b"name,label\ncat.jpg,281\n", &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::UnknownFormat), "{err:?}");
        assert!(err.to_string().contains("JPEG, PNG, WebP, BMP or GIF"), "{err}");
        // A format the image crate recognises but we do not decode (TIFF) is unknown too.
        assert!(matches!(
            decode(b"II*\0\x08\0\0\0\0\0", &ImageLimits::default()),
            Err(ImageError::UnknownFormat)
        ));
    }

    #[test]
    fn truncated_jpeg_is_a_decode_error() {
        let bytes = encode(&DynamicImage::ImageRgb8(test_picture(64, 48)), ImageFormat::Jpeg);
        decode(&bytes, &ImageLimits::default()).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 2, 200] {
            let err = decode(&bytes[..cut], &ImageLimits::default()).unwrap_err();
            assert!(
                matches!(&err, ImageError::Decode { format, .. } if format == "JPEG"),
                "cut at {cut}: {err:?}"
            );
        }
        // Just the SOI marker and a bit of a header.
        assert!(matches!(
            decode(&bytes[..20], &ImageLimits::default()),
            Err(ImageError::Decode { .. })
        ));
    }

    #[test]
    fn truncated_png_is_a_decode_error() {
        let bytes = encode(&DynamicImage::ImageRgb8(test_picture(64, 48)), ImageFormat::Png);
        let err = decode(&bytes[..bytes.len() / 2], &ImageLimits::default()).unwrap_err();
        assert!(
            matches!(&err, ImageError::Decode { format, .. } if format == "PNG"),
            "{err:?}"
        );
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid 1x1 PNG whose IHDR (with a correct CRC) claims `width` x `height`.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = encode(&DynamicImage::ImageRgb8(RgbImage::new(1, 1)), ImageFormat::Png);
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn huge_header_is_refused_before_decoding() {
        let mut bytes = encode(&DynamicImage::ImageRgb8(RgbImage::new(1, 1)), ImageFormat::Png);
        assert_eq!(
            crc32(&bytes[12..29]).to_be_bytes(),
            bytes[29..33],
            "crc32 helper is wrong"
        );
        bytes = png_claiming(100_000, 100_000);
        let err = decode(&bytes, &ImageLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{err:?}"
        );
        // Within the side limits but over the pixel budget.
        let small = ImageLimits {
            max_pixels: 1000,
            ..ImageLimits::default()
        };
        let err = decode(&png_claiming(100, 11), &small).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    width: 100,
                    height: 11,
                    ..
                }
            ),
            "{err:?}"
        );
        // Within all limits: the header passes and the (missing) pixel data fails instead.
        let err = decode(&png_claiming(100, 10), &small).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn too_many_bytes_is_refused() {
        let bytes = encode(&DynamicImage::ImageRgb8(test_picture(16, 16)), ImageFormat::Png);
        let limits = ImageLimits {
            max_bytes: bytes.len() - 1,
            ..ImageLimits::default()
        };
        assert!(matches!(decode(&bytes, &limits), Err(ImageError::TooManyBytes { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        std::fs::write(&path, &bytes).unwrap();
        let err = load_file(&path, &limits).unwrap_err();
        assert!(err.to_string().contains("big.png"), "{err}");
        assert_eq!(
            load_file(&path, &ImageLimits::default()).unwrap().dimensions(),
            (16, 16)
        );
        let err = load_file(&dir.path().join("missing.jpg"), &limits).unwrap_err();
        assert!(
            matches!(&err, ImageError::Io { .. }) && err.to_string().contains("missing.jpg"),
            "{err}"
        );
    }

    /// Inserts an APP1 Exif segment with Orientation = `orientation` right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II\x2a\x00\x08\x00\x00\x00"); // little endian, IFD at 8
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 48x32, red top-left 16x16 block, green elsewhere.
        let img = RgbImage::from_fn(48, 32, |x, y| {
            if x < 16 && y < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 255, 0])
            }
        });
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let is_red = |p: &Rgb<u8>| p[0] > 180 && p[1] < 80;
        let plain = decode(&jpeg, &ImageLimits::default()).unwrap();
        assert_eq!(plain.dimensions(), (48, 32));
        assert!(is_red(plain.get_pixel(8, 8)));

        // Orientation 6: rotate 90 degrees clockwise to display; the top-left corner goes to
        // the top-right.
        let rotated = decode(&with_exif_orientation(&jpeg, 6), &ImageLimits::default()).unwrap();
        assert_eq!(rotated.dimensions(), (32, 48));
        assert!(is_red(rotated.get_pixel(24, 8)), "{:?}", rotated.get_pixel(24, 8));
        assert!(!is_red(rotated.get_pixel(8, 8)), "{:?}", rotated.get_pixel(8, 8));
        assert!(!is_red(rotated.get_pixel(24, 40)));

        // Orientation 3: rotate 180 degrees; the top-left corner goes to the bottom-right.
        let flipped = decode(&with_exif_orientation(&jpeg, 3), &ImageLimits::default()).unwrap();
        assert_eq!(flipped.dimensions(), (48, 32));
        assert!(is_red(flipped.get_pixel(40, 24)) && !is_red(flipped.get_pixel(8, 8)));
    }

    #[test]
    fn gray_and_rgba_become_rgb() {
        let gray = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y) as u8]));
        let got = decode(
            &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(*got.get_pixel(3, 2), Rgb([122, 122, 122]));

        let la = image::GrayAlphaImage::from_pixel(2, 2, image::LumaA([77, 10]));
        let got = decode(
            &encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(*got.get_pixel(1, 1), Rgb([77, 77, 77]));

        // Alpha is dropped, not multiplied in (PIL's convert("RGB")).
        let rgba = image::RgbaImage::from_pixel(3, 2, Rgba([200, 100, 50, 20]));
        let got = decode(
            &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(*got.get_pixel(2, 1), Rgb([200, 100, 50]));

        let rgb16 = image::ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(2, 2, Rgb([65535, 0, 32896]));
        let got = decode(
            &encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png),
            &ImageLimits::default(),
        )
        .unwrap();
        assert_eq!(*got.get_pixel(0, 0), Rgb([255, 0, 128]));
    }

    #[test]
    fn gif_first_frame_webp_and_bmp_decode() {
        use image::codecs::gif::GifEncoder;
        let red = image::RgbaImage::from_pixel(6, 4, Rgba([255, 0, 0, 255]));
        let blue = image::RgbaImage::from_pixel(6, 4, Rgba([0, 0, 255, 255]));
        let mut gif = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut gif);
            enc.encode_frames([image::Frame::new(red), image::Frame::new(blue)])
                .unwrap();
        }
        let got = decode(&gif, &ImageLimits::default()).unwrap();
        assert_eq!(got.dimensions(), (6, 4));
        assert_eq!(*got.get_pixel(3, 2), Rgb([255, 0, 0]));

        let picture = test_picture(13, 7);
        for format in [ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Png] {
            let bytes = encode(&DynamicImage::ImageRgb8(picture.clone()), format);
            let got = decode(&bytes, &ImageLimits::default()).unwrap();
            assert_eq!(got, picture, "{format:?} (lossless) round trip");
        }
    }

    /// Pillow's own decoding of the JPEG inputs committed in tests/data/parity (baseline with
    /// partial MCUs, 4:4:4, progressive), made by scripts/make_parity_reference.py: ours must
    /// be identical, pixel for pixel.
    #[test]
    fn jpeg_decoding_is_pillows_exactly() {
        let parity = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity"));
        let manifest = std::fs::read_to_string(parity.join("manifest.json")).unwrap();
        let files = [
            "input_progressive_320x240.jpg",
            "input_baseline_301x203.jpg",
            "input_444_160x120.jpg",
        ];
        for file in files {
            let decoded = format!("{file}.decoded.png");
            assert!(
                manifest.contains(&format!("\"{decoded}\"")),
                "manifest.json lacks {decoded}"
            );
            let want = load_file(&parity.join(&decoded), &ImageLimits::default()).unwrap();
            let got = load_file(&parity.join(file), &ImageLimits::default()).unwrap();
            assert_eq!(got.dimensions(), want.dimensions(), "{file}");
            let differing = got.as_raw().iter().zip(want.as_raw()).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{file}: {differing} values differ from Pillow's decoding");
        }
        // Pillow's decodings of the files `hardy corrupt` writes, and of grey, 4:4:4 and
        // restart-marker files (scripts/make_jpeg_reference.py).
        let corrupt = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../corrupt/tests/data/corrupt/jpeg"
        ));
        for name in [
            "q85_opt_224x224",
            "q85_opt_97x61",
            "q85_opt_8x8",
            "q50_std_100x70",
            "q15_std_224x224",
            "grey_q85_61x47",
            "q80_444_50x40",
            "q85_rst_97x61",
        ] {
            let want = load_file(&corrupt.join(format!("{name}.decoded.png")), &ImageLimits::default()).unwrap();
            let got = load_file(&corrupt.join(format!("{name}.jpg")), &ImageLimits::default()).unwrap();
            assert!(got == want, "{name}: differs from Pillow's decoding");
        }
        let progressive = std::fs::read(parity.join(files[0])).unwrap();
        assert!(
            progressive.windows(2).any(|w| w == [0xFF, 0xC2]),
            "not a progressive file"
        );
    }

    /// Inputs tried by [`mutated_images_never_panic`].
    const DECODE_FUZZ_INPUTS: usize = 50_000;

    /// A bounded, seeded mutation fuzz of the decode path (the server's largest attack
    /// surface): valid JPEG (baseline, 4:4:4, progressive), PNG, WebP, GIF and BMP files with
    /// byte flips, truncation, inserted and duplicated ranges, and header words set to extreme
    /// values. Every input must decode or give an error: no panic (an escaping unwind from
    /// libjpeg included), and nothing decoded outside the limits.
    #[test]
    fn mutated_images_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let parity = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity"));
        let picture = DynamicImage::ImageRgb8(test_picture(40, 30));
        let mut seeds: Vec<Vec<u8>> = ["input_progressive_320x240.jpg", "input_444_160x120.jpg"]
            .iter()
            .map(|f| std::fs::read(parity.join(f)).unwrap())
            .collect();
        for format in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Gif,
            ImageFormat::Bmp,
        ] {
            seeds.push(encode(&picture, format));
        }
        let limits = ImageLimits {
            max_pixels: 1 << 20,
            max_width: 4096,
            max_height: 4096,
            ..ImageLimits::default()
        };
        let mut rng = StdRng::seed_from_u64(20);
        let (mut decoded, mut refused, mut panics) = (0usize, 0usize, 0usize);
        for i in 0..DECODE_FUZZ_INPUTS {
            let mut bytes = seeds[i % seeds.len()].clone();
            for _ in 0..rng.random_range(1..=3) {
                let len = bytes.len().max(1);
                match rng.random_range(0..6) {
                    0 => {
                        for _ in 0..rng.random_range(1..=8) {
                            let at = rng.random_range(0..len);
                            if let Some(b) = bytes.get_mut(at) {
                                *b ^= 1 << rng.random_range(0..8);
                            }
                        }
                    }
                    1 => bytes.truncate(rng.random_range(0..len)),
                    2 => {
                        let at = rng.random_range(0..=bytes.len());
                        let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                        bytes.splice(at..at, junk);
                    }
                    3 => {
                        let a = rng.random_range(0..len);
                        let b = (a + rng.random_range(1..256)).min(bytes.len());
                        let copy = bytes.get(a..b).map(<[u8]>::to_vec).unwrap_or_default();
                        let at = rng.random_range(0..=bytes.len());
                        bytes.splice(at..at, copy);
                    }
                    4 => {
                        // Header words (sizes, lengths, counts) to extremes.
                        let at = rng.random_range(0..len.min(256));
                        let value: [u8; 2] = [[0xFF, 0xFF], [0, 0], [0x80, 0], [0, 1]][rng.random_range(0..4)];
                        for (k, v) in value.into_iter().enumerate() {
                            if let Some(b) = bytes.get_mut(at + k) {
                                *b = v;
                            }
                        }
                    }
                    _ => {
                        // A marker byte pair where data was.
                        let at = rng.random_range(0..len);
                        let marker = [0xC0, 0xC2, 0xC4, 0xDA, 0xDB, 0xDD, 0xD9, 0xE1][rng.random_range(0..8)];
                        if at + 1 < bytes.len() {
                            bytes[at] = 0xFF;
                            bytes[at + 1] = marker;
                        }
                    }
                }
            }
            match std::panic::catch_unwind(|| super::decode(&bytes, &limits, Exif::Apply)) {
                Ok(Ok(img)) => {
                    decoded += 1;
                    let (w, h) = img.dimensions();
                    assert!(
                        u64::from(w) * u64::from(h) <= limits.max_pixels && w.max(h) <= 4096,
                        "input {i}: {w}x{h}"
                    );
                }
                Ok(Err(_)) => refused += 1,
                Err(_) => panics += 1,
            }
        }
        println!(
            "decode fuzz: {DECODE_FUZZ_INPUTS} inputs from {} seeds, {decoded} decoded, {refused} refused, {panics} panics",
            seeds.len()
        );
        assert_eq!(panics, 0);
        assert!(decoded > 0 && refused > 0);
    }
}
