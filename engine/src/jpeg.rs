//! JPEG decoding with libjpeg-turbo, the decoder behind Pillow, so that Hardy's pixels are
//! Pillow's by construction (baseline and progressive alike) and the parser that faces
//! untrusted uploads is the one fuzzed continuously upstream.
//!
//! The `mozjpeg` crate wraps the library; its decoder is libjpeg-turbo's. libjpeg reports a
//! fatal error by calling a handler that must not return: the crate's handler unwinds with
//! `std::panic::resume_unwind` (no panic hook, no message on stderr), and [`decode`] catches
//! that unwind and turns it into an [`ImageError::Decode`]. Warnings (corrupt entropy data that
//! the library can step over) are silenced, as Pillow silences them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::RgbImage;
use image::metadata::Orientation;
use mozjpeg::{ColorSpace, DctMethod, Decompress, Marker};

use crate::decode::{Exif, ImageError, ImageLimits, MAX_JPEG_SCANS, check_dimensions};

/// True when a JPEG stream ends properly: an EOI marker (`FF D9`) follows the first
/// start-of-scan marker (`FF DA`). Entropy-coded data cannot contain `FF D9` (a literal
/// `FF` is stuffed as `FF 00`), and EXIF thumbnails come before the first scan, so a
/// truncated file fails this test. libjpeg itself is lenient and would fill the missing
/// part with gray; PIL refuses truncated files, and so do we.
fn is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// An upper bound on the number of scans: every scan starts with an `FF DA` marker, and
/// counting the byte pairs may only overcount (an EXIF thumbnail's own scan).
fn scan_markers(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|w| *w == [0xFF, 0xDA]).count()
}

fn decode_error(reason: impl Into<String>) -> ImageError {
    ImageError::Decode {
        format: "JPEG".into(),
        reason: reason.into(),
    }
}

/// Decodes a JPEG file to 8-bit RGB with Pillow's settings; see the module comment.
pub(crate) fn decode(bytes: &[u8], limits: &ImageLimits, exif: Exif) -> Result<RgbImage, ImageError> {
    if !is_complete(bytes) {
        return Err(decode_error(
            "the file is truncated (no end-of-image marker after the image data)",
        ));
    }
    let scans = scan_markers(bytes);
    if scans > MAX_JPEG_SCANS {
        return Err(decode_error(format!(
            "the file has {scans} scans; at most {MAX_JPEG_SCANS} are accepted"
        )));
    }
    match catch_unwind(AssertUnwindSafe(|| decode_unchecked(bytes, limits, exif))) {
        Ok(result) => result,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .map(|s| s.trim_start_matches("libjpeg fatal error: ").to_string())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg-turbo refused the file".into());
            Err(decode_error(reason))
        }
    }
}

/// The decoding proper; libjpeg's fatal errors unwind out of it.
fn decode_unchecked(bytes: &[u8], limits: &ImageLimits, exif: Exif) -> Result<RgbImage, ImageError> {
    let io = |e: std::io::Error| decode_error(e.to_string());
    let markers: &[Marker] = match exif {
        Exif::Apply => &[Marker::APP(1)],
        Exif::Ignore => &[],
    };
    let mut jpeg = Decompress::with_markers(markers).from_mem(bytes).map_err(io)?;
    let (width, height) = jpeg.size();
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    check_dimensions(width, height, "JPEG", limits)?;
    jpeg.dct_method(DctMethod::IntegerSlow);
    jpeg.do_fancy_upsampling(true);
    let orientation = match exif {
        Exif::Ignore => Orientation::NoTransforms,
        Exif::Apply => jpeg
            .markers()
            .filter(|m| m.marker == Marker::APP(1))
            .find_map(|m| m.data.strip_prefix(b"Exif\0\0"))
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms),
    };
    let pixels = width as usize * height as usize;
    let rgb = match jpeg.color_space() {
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = jpeg.to_colorspace(ColorSpace::JCS_CMYK).map_err(io)?;
            let cmyk: Vec<u8> = started.read_scanlines().map_err(io)?;
            started.finish().map_err(io)?;
            if cmyk.len() != pixels * 4 {
                return Err(decode_error("the image data ends early"));
            }
            cmyk.chunks_exact(4).flat_map(adobe_cmyk_to_rgb).collect()
        }
        _ => {
            let mut started = jpeg.rgb().map_err(io)?;
            let rgb: Vec<u8> = started.read_scanlines().map_err(io)?;
            started.finish().map_err(io)?;
            rgb
        }
    };
    let img = RgbImage::from_raw(width, height, rgb).ok_or_else(|| decode_error("the image data ends early"))?;
    if orientation == Orientation::NoTransforms {
        return Ok(img);
    }
    let mut dynamic = image::DynamicImage::ImageRgb8(img);
    dynamic.apply_orientation(orientation);
    Ok(dynamic.into_rgb8())
}

/// Pillow's reading of a CMYK JPEG: the values are taken as Adobe-inverted (`CMYK;I`, which
/// Pillow assumes for every CMYK JPEG), then `convert("RGB")` computes
/// `255 - k' - c' * (255 - k') / 255` per channel with its rounding `MULDIV255`.
fn adobe_cmyk_to_rgb(inverted: &[u8]) -> [u8; 3] {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let [c, m, y, k] = [0, 1, 2, 3].map(|i| 255 - u32::from(inverted[i]));
    let nk = 255 - k;
    [c, m, y].map(|v| (nk - muldiv255(v, nk)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_follows_pillow() {
        // Inverted storage: 255 means no ink.
        assert_eq!(adobe_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(adobe_cmyk_to_rgb(&[0, 255, 255, 255]), [0, 255, 255]);
        assert_eq!(adobe_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        // 127 of each ink: nk = 128, 128 - muldiv255(127, 128) = 128 - 64 = 64.
        assert_eq!(adobe_cmyk_to_rgb(&[128, 128, 128, 128]), [64, 64, 64]);
    }

    #[test]
    fn scan_count_is_bounded() {
        let mut bytes = vec![0xFF, 0xD8];
        for _ in 0..=MAX_JPEG_SCANS {
            bytes.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        }
        bytes.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode(&bytes, &ImageLimits::default(), Exif::Apply).unwrap_err();
        assert!(err.to_string().contains("scans"), "{err}");
    }

    #[test]
    fn garbage_after_the_markers_is_an_error_not_a_panic() {
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 1, 2, 3, 4, 5, 6];
        bytes.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode(&bytes, &ImageLimits::default(), Exif::Apply).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    }
}
