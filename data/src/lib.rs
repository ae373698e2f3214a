//! Hardy's data sets: one grammar and one reader for every layout Hardy trains or evaluates on.
//!
//! It exists so that `hardy train` and `hardy eval` (and `hardy corrupt`) mean the same thing by
//! a data set: `fashion-mnist:train`, an IDX file or an ImageFolder tree are found, listed,
//! ordered and decoded in exactly one way, and the data sets Hardy fetches itself are fetched
//! outside the inference core.
//!
//! - [`source`]: the grammar, [`DataSource`]: named sets (`fashion-mnist:test`,
//!   `foolbox:imagenet`) and paths told apart by what they are.
//! - [`layout`]: the layouts listed as [`Item`]s: ImageFolder trees, flat folders of labelled
//!   files, IDX files, the released ImageNet-C and ImageNet-P folders and their videos.
//! - [`walk`]: the one folder walker (torchvision's order, hidden files skipped).
//! - [`item`]: [`Item`] (a key, a label, where the pixels are) and its one decode path.
//! - [`classes`]: [`ClassMap`], folder names to class indices.
//! - [`imagenet`]: the ImageNet-1k classes and the 200-class subsets of ImageNet-A and -R.
//! - [`shard`]: [`Shard`], a share of a data set for one of several machines.
//! - [`idx`]: the IDX reader (MNIST, Fashion-MNIST; raw or gzip).
//! - [`fetch`]: the sets Hardy fetches itself (Fashion-MNIST from Debian, foolbox's ImageNet
//!   photos from PyPI) and ffmpeg for ImageNet-P's videos, through `engine::provision`.
//!
//! Nothing here loads ONNX Runtime; images decode through `engine::decode`, the path `hardy
//! serve` uses.

#![warn(missing_docs)]

pub mod classes;
mod error;
pub mod fetch;
pub mod idx;
pub mod imagenet;
pub mod item;
pub mod layout;
pub mod shard;
pub mod source;
pub mod walk;

pub use classes::ClassMap;
pub use error::DatasetError;
pub use item::{Item, ItemSource};
pub use shard::Shard;
pub use source::DataSource;
