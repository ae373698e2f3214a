//! Items: one element of a data set (a stable key, a label, where its pixels are) and the one
//! way its pixels are decoded.
//!
//! Listing a data set yields [`Item`]s, which are cheap: 50,000 of them are a list of paths (or
//! of indices into one shared IDX buffer). Pixels are decoded only by [`Item::load`], through
//! the engine's decode path, so training, evaluation and serving see the same pixels.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::decode::{Exif, ImageLimits};
use image::RgbImage;

use crate::DatasetError;
use crate::idx::IdxImages;

/// Where an item's pixels are.
#[derive(Clone)]
pub enum ItemSource {
    /// An image (or video) file.
    File(PathBuf),
    /// Image `index` of an IDX file held in memory (shared by all its items).
    Idx {
        /// The decoded IDX images.
        images: Arc<IdxImages>,
        /// Which image.
        index: usize,
    },
}

impl fmt::Debug for ItemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            ItemSource::Idx { images, index } => f
                .debug_struct("Idx")
                .field("index", index)
                .field(
                    "images",
                    &format_args!("{} of {}x{}", images.len(), images.rows(), images.cols()),
                )
                .finish(),
        }
    }
}

/// One element of a data set: a stable key, its label (a class index of the model, or a position
/// in a [`ClassSubset`](crate::imagenet::ClassSubset)) and where its pixels are.
#[derive(Debug, Clone)]
pub struct Item {
    /// A stable identifier: the path relative to the data set's root with `/` separators, or
    /// `idx:<n>` for IDX images. Results of different shards are merged by it.
    pub key: String,
    /// The label, when the data set has one.
    pub label: Option<usize>,
    /// Where the pixels are.
    pub source: ItemSource,
}

impl Item {
    /// Decodes the item as 8-bit RGB (grey IDX images are replicated into three channels).
    /// Files go through the engine's one decode path ([`engine::decode`]: libjpeg-turbo with
    /// Pillow's settings for JPEG), checked against `limits` before decoding, with the EXIF
    /// orientation applied or not as the model's preprocessing says.
    pub fn load(&self, limits: &ImageLimits, exif: Exif) -> Result<RgbImage, DatasetError> {
        match &self.source {
            ItemSource::File(path) => Ok(engine::decode::load_file(path, limits, exif)?),
            ItemSource::Idx { images, index } => {
                let grey = images.image(*index).ok_or(DatasetError::IdxIndex {
                    index: *index,
                    len: images.len(),
                })?;
                Ok(image::DynamicImage::ImageLuma8(grey).into_rgb8())
            }
        }
    }

    /// The file behind the item, `None` for IDX images.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            ItemSource::File(path) => Some(path),
            ItemSource::Idx { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files load through the engine's decode path: Pillow's pixels for JPEG (progressive
    /// too), PNG as stored; limits hold and errors name the file.
    #[test]
    fn files_load_as_pillow_decodes_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/parity");
        let limits = ImageLimits::default();
        let file = |name: &str| Item {
            key: name.into(),
            label: None,
            source: ItemSource::File(dir.join(name)),
        };
        for name in ["input_progressive_320x240.jpg", "input_baseline_301x203.jpg"] {
            let ours = file(name).load(&limits, Exif::Ignore).unwrap();
            let pillow = image::open(dir.join(format!("{name}.decoded.png"))).unwrap().to_rgb8();
            assert!(ours == pillow, "{name}");
        }
        let png = file("input_wide_320x188.png").load(&limits, Exif::Apply).unwrap();
        assert_eq!(png.dimensions(), (320, 188));
        let small = ImageLimits {
            max_pixels: 100,
            ..ImageLimits::default()
        };
        let err = file("input_baseline_301x203.jpg")
            .load(&small, Exif::Apply)
            .unwrap_err();
        assert!(err.to_string().contains("input_baseline_301x203.jpg"), "{err}");
    }
}
