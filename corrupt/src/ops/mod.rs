//! Parameterised building blocks of the corruptions, public so that ImageNet-P sequences (and
//! anything else) can reuse them with their own parameters.
//!
//! Pixel convention: a [`FloatImage`] is `f32`, row-major, channels interleaved (HWC), values
//! nominally in `[0, 1]` (intermediate results may leave that range; callers clip). Single
//! layers (snow, liquid, plasma) are `FloatImage`s with one channel. Lengths (radii, sigmas) are
//! in pixels of the image they are applied to; [`Corruptor`](crate::Corruptor) scales them for
//! sizes other than 224. Every random primitive takes the caller's RNG, so a seeded RNG makes
//! it reproducible.
//!
//! By family, one file each: filtering (`filter.rs`: separable, 2-D, disk and motion blurs),
//! geometry (`geometry.rs`: zoom, remapping, layer resizing), colour (`colour.rs`: HSV
//! adjustment), noise (`noise.rs`: Gaussian draws, the plasma fractal), weather
//! (`weather.rs`: fog, snow and spatter layers and their compositing), and the edge analysis
//! that spatter's water needs (`edges.rs`: Canny, distance transform, histogram
//! equalisation). This file holds [`FloatImage`] and the 8-bit conversions all of them share.

mod colour;
mod edges;
mod filter;
mod geometry;
mod noise;
mod weather;

pub use colour::hsv_adjust;
pub use edges::{canny, distance_to_edges, equalize_hist};
pub use filter::{
    Border, border_index, box_blur, disk_blur, disk_kernel, filter_2d, filter_cols, filter_rows, gaussian_blur,
    gaussian_blur_with, gaussian_kernel, motion_blur, opencv_gaussian_kernel, separable_filter,
};
pub use geometry::{clipped_zoom, remap_bilinear_reflect, resize_layer};
pub(crate) use noise::normal_table;
pub use noise::{fill_standard_normal, normal_layer, plasma_fractal};
pub use weather::{
    SnowParams, SpatterParams, add_fog, composite_snow, composite_spatter, snow_layer, spatter_layer, spatter_mix,
};

pub use crate::blur::zoom_blur;
pub use crate::digital::elastic as elastic_transform;
pub use crate::jpeg::{jpeg_roundtrip, jpeg_roundtrip_image};
use crate::simd::multiversion;

/// An image or layer: `f32` values, HWC interleaved, nominally in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel (3 for colour images, 1 for layers).
    pub channels: usize,
    /// `height * width * channels` values.
    pub data: Vec<f32>,
}

impl FloatImage {
    /// A zero-filled image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        FloatImage {
            width,
            height,
            channels,
            data: vec![0.0; width * height * channels],
        }
    }

    /// Converts 8-bit RGB to `[0, 1]` (value / 255).
    pub fn from_rgb8(img: &image::RgbImage) -> Self {
        FloatImage {
            width: img.width() as usize,
            height: img.height() as usize,
            channels: 3,
            data: bytes_to_unit(img.as_raw()),
        }
    }

    /// Converts a 3-channel image back to 8-bit RGB as the reference code does: clip to `[0, 1]`,
    /// times 255, truncated (`np.uint8`). A 1-channel image is broadcast to grey RGB; other
    /// channel counts keep their first three channels.
    pub fn to_rgb8(&self) -> image::RgbImage {
        let out: Vec<u8> = match self.channels {
            3 => unit_to_bytes(&self.data),
            c => self
                .data
                .chunks_exact(c.max(1))
                .flat_map(|px| (0..3).map(move |k| to_u8_trunc(px[k.min(px.len() - 1)])))
                .collect(),
        };
        image::RgbImage::from_raw(self.width as u32, self.height as u32, out)
            .unwrap_or_else(|| image::RgbImage::new(self.width as u32, self.height as u32))
    }

    /// Row `y` as a slice of `width * channels` values.
    pub fn row(&self, y: usize) -> &[f32] {
        let n = self.width * self.channels;
        &self.data[y * n..(y + 1) * n]
    }

    /// Clips every value to `[0, 1]` in place.
    pub fn clip01(&mut self) {
        for v in &mut self.data {
            *v = v.clamp(0.0, 1.0);
        }
    }

    /// Rounds every value to the nearest multiple of 1/255 after clipping (an 8-bit round trip).
    pub fn quantize_round(&mut self) {
        for v in &mut self.data {
            // + 0.5 and truncation round (the value is >= 0); faster than `round`
            *v = ((v.clamp(0.0, 1.0) * 255.0 + 0.5) as i32) as f32 * (1.0 / 255.0);
        }
    }

    /// Truncates every value to a multiple of 1/255 after clipping (`np.uint8(x * 255) / 255`).
    pub fn quantize_trunc(&mut self) {
        for v in &mut self.data {
            *v = f32::from(to_u8_trunc(*v)) * (1.0 / 255.0);
        }
    }
}

multiversion! {
    /// `v / 255` for every byte.
    fn bytes_to_unit(bytes: &[u8]) -> Vec<f32> {
        bytes.iter().map(|&v| f32::from(v) / 255.0).collect()
    }
}

multiversion! {
    /// [`to_u8_trunc`] of every value.
    fn unit_to_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().map(|&v| to_u8_trunc(v)).collect()
    }
}

/// `np.uint8(clip(v, 0, 1) * 255)`: clip, scale, truncate.
#[inline(always)]
pub fn to_u8_trunc(v: f32) -> u8 {
    // `max` first maps NaN to 0; a hair of slack keeps values that are exactly k/255 in real
    // arithmetic at k.
    #[allow(clippy::manual_clamp)] // deliberately not clamp: NaN must become 0, not stay NaN
    let x = v.max(0.0).min(1.0) * 255.0 + 1e-4;
    // SAFETY: x is finite and in [0, 255.0001], so it fits an i32; the unchecked conversion
    // (unlike `as`, which must handle NaN and overflow) lets the compiler vectorise it.
    (unsafe { x.to_int_unchecked::<i32>() }) as u8
}

/// `clip(v, 0, 255)` truncated to a byte (NaN becomes 0, as `as` would make it).
#[inline(always)]
pub(crate) fn clip_trunc(v: f32) -> u8 {
    #[allow(clippy::manual_clamp)] // deliberately not clamp: NaN must become 0, not stay NaN
    let v = v.max(0.0).min(255.0);
    // SAFETY: v is finite and in [0, 255], so it fits an i32; the unchecked conversion (unlike
    // `as`) lets the compiler vectorise the loop.
    (unsafe { v.to_int_unchecked::<i32>() }) as u8
}

/// The smaller of two numbers that are not NaN (one `minss`, unlike `f32::min`, which also
/// handles NaN and so costs a compare and a blend more in a dependency chain).
#[inline(always)]
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}
