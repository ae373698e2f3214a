//! Training data: image sets held decoded in memory, the readers that fill them, and the batcher
//! that turns a list of indices into a normalised NCHW `f32` batch.
//!
//! The trainer's experiments (Noisy Student on Fashion-MNIST first) need three things from data:
//! reading the standard formats, a stratified labelled/unlabelled split, and fast, reproducible
//! augmented batches. This module provides:
//!
//! * [`ImageSet`]: `n` images of one size and channel count (1 = grey, 3 = RGB), stored decoded as
//!   one contiguous `u8` buffer (HWC per image), with an optional label per image and the class
//!   names; [`ImageSet::subset`] and [`ImageSet::split_labelled`] carve it up.
//! * [`read_idx`] for MNIST/Fashion-MNIST IDX files (raw or gzip), [`read_image_folder`] for
//!   torchvision's `ImageFolder` layout, [`read_unlabelled_folder`] for a folder of images and
//!   [`read_source`] for any data set in Hardy's grammar (`fashion-mnist:train`, an IDX file,
//!   an ImageFolder tree, labelled files). Finding and listing files, the IDX reader and
//!   decoding are the `hardy-data` crate's, shared with `hardy eval`, so a data set means the
//!   same images in the same order in both; this module turns them into an [`ImageSet`].
//! * [`make_batch`], which decodes, augments (through any [`AugmentFn`], e.g. RandAugment from
//!   `crate::augment`) and normalises a batch in parallel with rayon; each image's augmentation is
//!   seeded from `(seed, dataset index)` by [`image_seed`], so a batch does not depend on thread
//!   scheduling or on where the image sits in the batch.
//! * [`EpochOrder`] / [`shuffled_batches`] for the per-epoch shuffled batch indices.
//!
//! Whole data sets live in memory: Fashion-MNIST is 47 MB; an `ImageFolder` set costs
//! `n · size² · channels` bytes after resizing.

use std::path::{Path, PathBuf};

use ::data::idx::IdxError;
use ::data::{DataSource, DatasetError, Item};
use engine::decode::{Exif, ImageError, ImageLimits};
use engine::preprocess::{PreprocessSpec, luma, resize_crop};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

/// Fashion-MNIST's class names, in label order.
pub use ::data::fetch::FASHION_MNIST_CLASSES;

/// File extensions (compared case-insensitively) that the folder readers load, as torchvision's
/// `IMG_EXTENSIONS` minus the formats this build cannot decode.
pub use ::data::walk::IMAGE_EXTENSIONS;

/// Why reading or batching data failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's (or gzip decoder's) error.
        source: std::io::Error,
    },
    /// A file's content is not what its format requires.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the numbers involved.
        reason: String,
    },
    /// An IDX image file and its label file do not belong together.
    #[error("{} and {}: {reason}", images.display(), labels.display())]
    Mismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A data set could not be found, listed, fetched or decoded (errors name the file).
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// An argument is out of range (an index, a size, a split, normalisation constants).
    #[error("{0}")]
    Invalid(String),
}

fn format_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// `n` decoded images of one size and channel count, with optional labels and the class names.
///
/// Pixels are stored as one contiguous buffer, image after image, each image row-major with
/// interleaved channels (HWC, the `image` crate's layout). Labels index `class_names`; `None`
/// marks an unlabelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pixels: Vec<u8>,
    labels: Vec<Option<usize>>,
    class_names: Vec<String>,
    channels: usize,
    height: usize,
    width: usize,
}

/// How many images per class [`ImageSet::split_labelled`] keeps as the labelled part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelledSize {
    /// Exactly this many from every class (an error if a class has fewer).
    PerClass(usize),
    /// This fraction (0..=1) of every class, rounded per class: `round(f · count_c)`. On a
    /// balanced set (Fashion-MNIST: 6000 per class) this is equal per class (0.1 → 600).
    Fraction(f64),
}

impl ImageSet {
    /// An image set from its parts. `pixels` holds `labels.len()` images of `height × width ×
    /// channels` bytes (HWC); `channels` is 1 or 3; every label is below `class_names.len()`.
    pub fn from_raw(
        pixels: Vec<u8>,
        labels: Vec<Option<usize>>,
        class_names: Vec<String>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        if channels != 1 && channels != 3 {
            return Err(DataError::Invalid(format!(
                "images need 1 or 3 channels, got {channels}"
            )));
        }
        if height == 0 || width == 0 || u32::try_from(height).is_err() || u32::try_from(width).is_err() {
            return Err(DataError::Invalid(format!("invalid image size {height}x{width}")));
        }
        let expected = height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(channels))
            .and_then(|b| b.checked_mul(labels.len()));
        if expected != Some(pixels.len()) {
            return Err(DataError::Invalid(format!(
                "{} bytes of pixels for {} images of {height}x{width}x{channels}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some((i, label)) = labels
            .iter()
            .enumerate()
            .find_map(|(i, l)| l.filter(|&l| l >= class_names.len()).map(|l| (i, l)))
        {
            return Err(DataError::Invalid(format!(
                "image {i} has label {label} but there are only {} class names",
                class_names.len()
            )));
        }
        Ok(ImageSet {
            pixels,
            labels,
            class_names,
            channels,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per pixel: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes per image: `height × width × channels`.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of classes (the number of class names).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Every image's label, `None` for unlabelled images.
    pub fn labels(&self) -> &[Option<usize>] {
        &self.labels
    }

    /// Image `i`'s label; `None` if it is unlabelled or `i` is out of range.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.get(i).copied().flatten()
    }

    /// All pixels, image after image (HWC per image).
    pub fn raw_pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Image `i`'s pixels (HWC), `None` if `i` is out of range.
    pub fn pixels(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        self.pixels.get(i.checked_mul(len)?..(i + 1).checked_mul(len)?)
    }

    /// Image `i` as an `image` crate image (`ImageLuma8` or `ImageRgb8`), `None` if out of range.
    pub fn image(&self, i: usize) -> Option<DynamicImage> {
        let (w, h) = (u32::try_from(self.width).ok()?, u32::try_from(self.height).ok()?);
        let px = self.pixels(i)?.to_vec();
        if self.channels == 1 {
            GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8)
        } else {
            RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8)
        }
    }

    /// Image `i` as RGB (grey images replicated into the three channels), `None` if out of range.
    pub fn rgb(&self, i: usize) -> Option<RgbImage> {
        let (w, h) = (u32::try_from(self.width).ok()?, u32::try_from(self.height).ok()?);
        to_rgb(self.pixels(i)?, self.channels, w, h)
    }

    /// How many images carry each label (unlabelled images are not counted).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for label in self.labels.iter().flatten() {
            if let Some(n) = counts.get_mut(*label) {
                *n += 1;
            }
        }
        counts
    }

    /// The images at `indices`, in that order (repeats allowed), with their labels and the same
    /// class names.
    pub fn subset(&self, indices: &[usize]) -> Result<ImageSet, DataError> {
        let len = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let px = self.pixels(i).ok_or_else(|| self.out_of_range(i))?;
            pixels.extend_from_slice(px);
            labels.push(self.labels[i]);
        }
        Ok(ImageSet {
            pixels,
            labels,
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        })
    }

    fn out_of_range(&self, i: usize) -> DataError {
        DataError::Invalid(format!(
            "image index {i} out of range for a set of {} images",
            self.len()
        ))
    }

    /// This set followed by `other`, labels kept (`other`'s must index this set's class
    /// names). The two must have the same image size and channels.
    pub fn concat(&self, other: &ImageSet) -> Result<ImageSet, DataError> {
        let shape = |s: &ImageSet| (s.channels, s.height, s.width);
        if shape(self) != shape(other) {
            return Err(DataError::Invalid(format!(
                "cannot join images of {}x{}x{} to images of {}x{}x{} (height x width x channels)",
                other.height, other.width, other.channels, self.height, self.width, self.channels
            )));
        }
        let mut pixels = Vec::with_capacity(self.pixels.len() + other.pixels.len());
        pixels.extend_from_slice(&self.pixels);
        pixels.extend_from_slice(&other.pixels);
        let labels = self.labels.iter().chain(&other.labels).copied().collect();
        ImageSet::from_raw(
            pixels,
            labels,
            self.class_names.clone(),
            self.channels,
            self.height,
            self.width,
        )
    }

    /// The same images with every label removed (class names kept).
    pub fn without_labels(mut self) -> ImageSet {
        self.labels.iter_mut().for_each(|l| *l = None);
        self
    }

    /// The indices of a stratified random labelled subset and of the rest, both ascending: for each
    /// class, `size` images are drawn without replacement by a generator seeded with `seed`.
    /// Every image must be labelled.
    pub fn split_labelled_indices(&self, size: LabelledSize, seed: u64) -> Result<(Vec<usize>, Vec<usize>), DataError> {
        if let LabelledSize::Fraction(f) = size
            && !(0.0..=1.0).contains(&f)
        {
            return Err(DataError::Invalid(format!(
                "labelled fraction must be in 0..=1, got {f}"
            )));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.class_names.len()];
        for (i, label) in self.labels.iter().enumerate() {
            match label.and_then(|l| by_class.get_mut(l)) {
                Some(members) => members.push(i),
                None => {
                    return Err(DataError::Invalid(format!(
                        "image {i} has no label; a stratified split needs labels"
                    )));
                }
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut keep = vec![false; self.len()];
        for (class, members) in by_class.iter_mut().enumerate() {
            let take = match size {
                LabelledSize::PerClass(k) => k,
                LabelledSize::Fraction(f) => (f * members.len() as f64).round() as usize,
            };
            if take > members.len() {
                return Err(DataError::Invalid(format!(
                    "class {class} ({}) has {} images, fewer than the {take} labelled ones asked for",
                    self.class_names[class],
                    members.len()
                )));
            }
            members.shuffle(&mut rng);
            for &i in &members[..take] {
                keep[i] = true;
            }
        }
        let (labelled, rest): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| keep[i]);
        Ok((labelled, rest))
    }

    /// Splits into a stratified random labelled subset (see [`ImageSet::split_labelled_indices`])
    /// and the rest. The rest keeps its true labels, for reporting; call
    /// [`ImageSet::without_labels`] to drop them.
    pub fn split_labelled(&self, size: LabelledSize, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        let (labelled, rest) = self.split_labelled_indices(size, seed)?;
        Ok((self.subset(&labelled)?, self.subset(&rest)?))
    }
}

/// PIL's `RGB` → `L` conversion: `(19595 R + 38470 G + 7471 B + 2^15) >> 16`.
fn to_rgb(px: &[u8], channels: usize, w: u32, h: u32) -> Option<RgbImage> {
    let data = if channels == 1 {
        px.iter().flat_map(|&v| [v, v, v]).collect()
    } else {
        px.to_vec()
    };
    RgbImage::from_raw(w, h, data)
}

// ---------------------------------------------------------------------------------------------
// IDX (MNIST, Fashion-MNIST)

impl From<IdxError> for DataError {
    fn from(e: IdxError) -> Self {
        match e {
            IdxError::Io { path, source } => DataError::Io { path, source },
            IdxError::Format { path, reason } => DataError::Format { path, reason },
        }
    }
}

/// Reads an IDX image file (magic 2051, `n × rows × cols` bytes) and its label file (magic 2049,
/// `n` bytes), MNIST and Fashion-MNIST's format, through [`data::idx`]; each may be
/// gzip-compressed (detected by content, not by name). `class_names` names the labels (e.g. [`FASHION_MNIST_CLASSES`]) and every label
/// must be below its length; `None` names them `"0"`, `"1"`, ... up to the largest label.
pub fn read_idx(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    class_names: Option<&[&str]>,
) -> Result<ImageSet, DataError> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let idx_images = ::data::idx::read_images(images)?;
    let label_bytes = ::data::idx::read_labels(labels)?;
    let (n, rows, cols) = (idx_images.len(), idx_images.rows(), idx_images.cols());
    if label_bytes.len() != n {
        return Err(DataError::Mismatch {
            images: images.to_path_buf(),
            labels: labels.to_path_buf(),
            reason: format!("{n} images but {} labels", label_bytes.len()),
        });
    }
    let names: Vec<String> = match class_names {
        Some(names) => {
            if let Some((i, &l)) = label_bytes
                .iter()
                .enumerate()
                .find(|&(_, &l)| usize::from(l) >= names.len())
            {
                return Err(format_error(
                    labels,
                    format!("label {l} of image {i} is beyond the {} class names given", names.len()),
                ));
            }
            names.iter().map(|s| s.to_string()).collect()
        }
        None => {
            let classes = label_bytes.iter().max().map_or(0, |&m| usize::from(m) + 1);
            (0..classes).map(|c| c.to_string()).collect()
        }
    };
    let labels_vec = label_bytes.iter().map(|&l| Some(usize::from(l))).collect();
    let set = ImageSet::from_raw(idx_images.into_raw(), labels_vec, names, 1, rows, cols)?;
    tracing::info!(images = set.len(), rows, cols, path = %images.display(), "read IDX data set");
    Ok(set)
}

// ---------------------------------------------------------------------------------------------
// Image folders

/// Decodes one item through the data crate's one decode path ([`Item::load`]: the engine's
/// decoder, EXIF orientation as `hardy serve` applies it) and torchvision's `Resize(size)` +
/// `CenterCrop(size)` (the engine's, as `hardy serve` and `hardy eval` apply them to a model
/// exported with `crop_pct = 1`), then keeps `channels` channels (grey by PIL's `L` formula,
/// after the resize, as the engine's tensor conversion does).
fn load_image(item: &Item, size: u32, channels: usize) -> Result<Vec<u8>, DataError> {
    let limits = ImageLimits::default();
    let spec = PreprocessSpec {
        resize_size: size,
        crop_height: size,
        crop_width: size,
        ..PreprocessSpec::imagenet(size)
    };
    let img = item.load(&limits, Exif::from_flag(spec.exif_orientation))?;
    let crop = resize_crop(&img, &spec).map_err(|source| {
        DatasetError::Image(ImageError::File {
            path: item.path().map_or_else(|| PathBuf::from(&item.key), Path::to_path_buf),
            source: Box::new(source),
        })
    })?;
    Ok(if channels == 1 {
        crop.pixels().map(|p| luma(p[0], p[1], p[2])).collect()
    } else {
        crop.into_raw()
    })
}

fn check_folder_args(size: u32, channels: usize) -> Result<(), DataError> {
    if size == 0 {
        return Err(DataError::Invalid("image size must be at least 1 pixel".into()));
    }
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!(
            "images need 1 or 3 channels, got {channels}"
        )));
    }
    Ok(())
}

/// Decodes `items` in parallel into one pixel buffer; the first failure (naming its file) wins.
fn load_all(items: &[Item], size: u32, channels: usize) -> Result<Vec<u8>, DataError> {
    let images: Vec<Vec<u8>> = items
        .par_iter()
        .map(|item| load_image(item, size, channels))
        .collect::<Result<_, _>>()?;
    Ok(images.concat())
}

/// Decodes `items` (labels, if any, below `class_names.len()`) into a set of `size × size`
/// images of `channels` channels, in order.
fn items_to_set(items: &[Item], class_names: Vec<String>, size: u32, channels: usize) -> Result<ImageSet, DataError> {
    let pixels = load_all(items, size, channels)?;
    let labels = items.iter().map(|i| i.label).collect();
    ImageSet::from_raw(pixels, labels, class_names, channels, size as usize, size as usize)
}

/// Reads torchvision's `ImageFolder` layout, `root/<class>/**/<image>`, as
/// [`data::layout::class_folders`] lists it: classes are the sub-folders of `root` sorted by
/// name (label = position), images are the files with an [`IMAGE_EXTENSIONS`] extension below
/// each class folder (recursively, folders by path and files by name, as torchvision orders
/// them). Names starting with `.` are skipped (unlike torchvision, so that
/// `.ipynb_checkpoints` is not a class). Images are decoded in parallel through [`Item::load`],
/// converted to `channels` (1 or 3), resized so the shorter side is `size` (triangle filter)
/// and centre-cropped to `size × size`. A class without images is an error, as in torchvision.
pub fn read_image_folder(root: impl AsRef<Path>, size: u32, channels: usize) -> Result<ImageSet, DataError> {
    let root = root.as_ref();
    check_folder_args(size, channels)?;
    let (class_names, items) = ::data::layout::class_folders(root)?;
    let set = items_to_set(&items, class_names, size, channels)?;
    tracing::info!(images = set.len(), classes = set.num_classes(), size, path = %root.display(), "read image folder");
    Ok(set)
}

/// Reads every image below `root` (recursively, same order, filtering and preprocessing as
/// [`read_image_folder`]) as an unlabelled set with no class names.
pub fn read_unlabelled_folder(root: impl AsRef<Path>, size: u32, channels: usize) -> Result<ImageSet, DataError> {
    let root = root.as_ref();
    check_folder_args(size, channels)?;
    let items = ::data::layout::unlabelled_files(root)?;
    let set = items_to_set(&items, Vec::new(), size, channels)?;
    tracing::info!(images = set.len(), size, path = %root.display(), "read unlabelled image folder");
    Ok(set)
}

/// Reads a labelled data set named in Hardy's data grammar ([`DataSource`], as `hardy eval
/// --data` takes it; [`DataSource::resolve`] turns a name or path into one):
///
/// - an IDX image file with its label file, through [`read_idx`] (`size` and `channels` do not
///   apply: the file's own size, grey);
/// - an ImageFolder tree, through [`read_image_folder`];
/// - a flat folder of labelled files (`imagenet_07_559.jpg`), decoded and resized as
///   [`read_image_folder`] does, classes `"0"` up to the largest label.
///
/// `class_names` names the labels of IDX files and labelled files (every label must be below
/// its length); folders name their own classes. Folders need `size` and `channels`.
pub fn read_source(
    source: &DataSource,
    size: Option<u32>,
    channels: Option<usize>,
    class_names: Option<&[&str]>,
) -> Result<ImageSet, DataError> {
    let folder_args = |root: &Path| match (size, channels) {
        (Some(size), Some(channels)) => Ok((size, channels)),
        _ => Err(DataError::Invalid(format!(
            "{}: a folder of images needs an image `size` and `channels` to be read at",
            root.display()
        ))),
    };
    match source {
        DataSource::Idx {
            images,
            labels: Some(labels),
        } => read_idx(images, labels, class_names),
        DataSource::Idx { images, labels: None } => Err(format_error(
            images,
            "no label file beside it (`...-labels-idx1-ubyte[.gz]` for `...-images-idx3-ubyte[.gz]`); \
             training needs labels",
        )),
        DataSource::ImageFolder(root) => {
            let (size, channels) = folder_args(root)?;
            read_image_folder(root, size, channels)
        }
        DataSource::LabelledFiles(root) => {
            let (size, channels) = folder_args(root)?;
            check_folder_args(size, channels)?;
            let items = ::data::layout::labelled_files(root)?;
            let largest = items.iter().filter_map(|i| i.label).max().unwrap_or(0);
            let names: Vec<String> = match class_names {
                Some(names) => names.iter().map(|s| s.to_string()).collect(),
                None => (0..=largest).map(|c| c.to_string()).collect(),
            };
            if largest >= names.len() {
                return Err(format_error(
                    root,
                    format!("label {largest} is beyond the {} class names given", names.len()),
                ));
            }
            let set = items_to_set(&items, names, size, channels)?;
            tracing::info!(images = set.len(), size, path = %root.display(), "read labelled files");
            Ok(set)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batches

/// Per-channel normalisation `(v / 255 − mean[c]) / std[c]`; one value applies to every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Channel means on the 0..=1 scale.
    pub mean: Vec<f32>,
    /// Channel standard deviations on the 0..=1 scale.
    pub std: Vec<f32>,
}

impl Normalize {
    /// Checked constructor: same non-zero length, finite means, finite positive deviations.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(DataError::Invalid(format!(
                "{} means but {} standard deviations",
                mean.len(),
                std.len()
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "invalid normalisation mean {mean:?} std {std:?}"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// ImageNet's RGB statistics (torchvision, timm): mean (0.485, 0.456, 0.406), std (0.229,
    /// 0.224, 0.225).
    pub fn imagenet() -> Self {
        Normalize {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Fashion-MNIST's training-set statistics: mean 0.2860, std 0.3530.
    pub fn fashion_mnist() -> Self {
        Normalize {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// Only scales to 0..=1 (mean 0, std 1).
    pub fn unit() -> Self {
        Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// The per-channel mean and (population) standard deviation of a set's pixels on the 0..=1
    /// scale; a constant channel gets std 1.
    pub fn from_set(set: &ImageSet) -> Self {
        let c = set.channels();
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for px in set.raw_pixels().chunks_exact(c) {
            for ((s, q), &v) in sum.iter_mut().zip(&mut sq).zip(px) {
                let v = f64::from(v) / 255.0;
                *s += v;
                *q += v * v;
            }
        }
        let n = (set.raw_pixels().len() / c).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let var = (q / n - (s / n).powi(2)).max(0.0);
                if var > 0.0 { var.sqrt() as f32 } else { 1.0 }
            })
            .collect();
        Normalize { mean, std }
    }

    /// A lookup table per channel, byte value → normalised value.
    fn tables(&self, channels: usize) -> Result<Vec<[f32; 256]>, DataError> {
        let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        if self.mean.is_empty()
            || self.std.len() != self.mean.len()
            || (self.mean.len() != 1 && self.mean.len() != channels)
        {
            return Err(DataError::Invalid(format!(
                "normalisation has {} means and {} deviations for {channels}-channel images",
                self.mean.len(),
                self.std.len()
            )));
        }
        Ok((0..channels)
            .map(|c| {
                let (m, s) = (pick(&self.mean, c), pick(&self.std, c));
                std::array::from_fn(|v| (v as f32 / 255.0 - m) / s)
            })
            .collect())
    }
}

/// A training or evaluation batch: `n` images as one normalised NCHW `f32` buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n × c × h × w` values, image after image, channel planes within an image.
    pub images: Vec<f32>,
    /// The images' labels, `Some` only if every image in the batch is labelled.
    pub labels: Option<Vec<usize>>,
    /// The images' indices in the set.
    pub indices: Vec<usize>,
    /// Number of images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// An augmentation for [`make_batch`]: takes an RGB image and the image's own generator and
/// returns an image of the same size. Grey sets are expanded to RGB before and converted back
/// (PIL `L` formula, exact for grey) after. Example with `crate::augment`:
/// `let f = |img: &RgbImage, rng: &mut StdRng| ra.apply(&random_crop_flip(img, 2, true, rng), rng);`
pub type AugmentFn = dyn Fn(&RgbImage, &mut StdRng) -> RgbImage + Sync;

/// SplitMix64's output function, a fast bijective 64-bit mixer.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e4b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of image `index`'s generator in a batch made with `seed` (also used to derive an
/// epoch's seed from a base seed). Distinct inputs give unrelated seeds.
pub fn image_seed(seed: u64, index: u64) -> u64 {
    splitmix64(seed ^ splitmix64(index))
}

/// Builds the batch of images `indices` of `set`: each image is (optionally) augmented with a
/// generator seeded by [`image_seed`]`(seed, index)` and normalised into NCHW `f32`, in parallel
/// with rayon. The result depends only on the arguments; change `seed` every epoch (e.g.
/// [`EpochOrder::epoch_seed`]) or every image is augmented the same way each epoch. Errors on an
/// index out of range, normalisation constants that do not fit the channel count, or an
/// augmentation that changes the image size.
pub fn make_batch(
    set: &ImageSet,
    indices: &[usize],
    augment: Option<&AugmentFn>,
    normalize: &Normalize,
    seed: u64,
) -> Result<Batch, DataError> {
    let (c, h, w) = (set.channels(), set.height(), set.width());
    let tables = normalize.tables(c)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(set.out_of_range(bad));
    }
    let plane = h * w;
    let (wu, hu) = (w as u32, h as u32); // checked to fit in `ImageSet::from_raw`
    let mut images = vec![0f32; indices.len() * plane * c];
    images
        .par_chunks_mut((plane * c).max(1))
        .zip(indices.par_iter())
        .try_for_each(|(out, &i)| {
            let src = set.pixels(i).ok_or_else(|| set.out_of_range(i))?;
            let augmented;
            let (px, stride): (&[u8], usize) = match augment {
                None => (src, c),
                Some(f) => {
                    let rgb = to_rgb(src, c, wu, hu).ok_or_else(|| set.out_of_range(i))?;
                    let mut rng = StdRng::seed_from_u64(image_seed(seed, i as u64));
                    augmented = f(&rgb, &mut rng);
                    if augmented.dimensions() != (wu, hu) {
                        return Err(DataError::Invalid(format!(
                            "augmentation turned image {i} of {w}x{h} into {}x{}",
                            augmented.width(),
                            augmented.height()
                        )));
                    }
                    (augmented.as_raw(), 3)
                }
            };
            // `take`: an image from `ImageBuffer::from_raw` may carry extra bytes after its pixels.
            for (p, pixel) in px.chunks_exact(stride).take(plane).enumerate() {
                if c == 1 {
                    let v = if stride == 3 {
                        luma(pixel[0], pixel[1], pixel[2])
                    } else {
                        pixel[0]
                    };
                    out[p] = tables[0][usize::from(v)];
                } else {
                    for ch in 0..3 {
                        out[ch * plane + p] = tables[ch][usize::from(pixel[ch])];
                    }
                }
            }
            Ok(())
        })?;
    let labels = indices.iter().map(|&i| set.label(i)).collect();
    Ok(Batch {
        images,
        labels,
        indices: indices.to_vec(),
        n: indices.len(),
        c,
        h,
        w,
    })
}

/// The indices `0..n` shuffled by a generator seeded with `seed` and cut into batches of
/// `batch_size` (the last one shorter unless `drop_last` drops it). A `batch_size` of 0 gives no
/// batches.
pub fn shuffled_batches(n: usize, batch_size: usize, seed: u64, drop_last: bool) -> Vec<Vec<usize>> {
    if batch_size == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
        .chunks(batch_size)
        .filter(|b| !drop_last || b.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// The batch order of every epoch of a training run: a fresh shuffle per epoch, derived from one
/// base seed so that a run can be replayed or resumed at any epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochOrder {
    n: usize,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
}

impl EpochOrder {
    /// Batches of `batch_size` (at least 1) over `n` images, shuffled from `seed`.
    pub fn new(n: usize, batch_size: usize, seed: u64, drop_last: bool) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        Ok(EpochOrder {
            n,
            batch_size,
            seed,
            drop_last,
        })
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.n / self.batch_size
        } else {
            self.n.div_ceil(self.batch_size)
        }
    }

    /// A seed specific to `epoch`, for [`make_batch`]'s augmentation.
    pub fn epoch_seed(&self, epoch: u64) -> u64 {
        image_seed(self.seed, epoch)
    }

    /// Epoch `epoch`'s batches (see [`shuffled_batches`]).
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        shuffled_batches(
            self.n,
            self.batch_size,
            image_seed(self.epoch_seed(epoch), u64::MAX),
            self.drop_last,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{RandAugment, random_crop_flip};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(pixels);
        out
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, 1];
        out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        out.extend_from_slice(labels);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    /// Three 2x3 images with labels 0, 2, 1.
    fn tiny_idx() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..18).map(|v| v * 10).collect();
        (idx_images(3, 2, 3, &pixels), idx_labels(&[0, 2, 1]), pixels)
    }

    #[test]
    fn idx_raw_and_gzip_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (images, labels, pixels) = tiny_idx();
        let raw = (write(dir.path(), "img", &images), write(dir.path(), "lbl", &labels));
        let gz = (
            write(dir.path(), "img.gz", &gzip(&images)),
            write(dir.path(), "lbl.gz", &gzip(&labels)),
        );
        for (img, lbl) in [&raw, &gz, &(raw.0.clone(), gz.1.clone())] {
            let set = read_idx(img, lbl, None).unwrap();
            assert_eq!((set.len(), set.channels(), set.height(), set.width()), (3, 1, 2, 3));
            assert_eq!(set.raw_pixels(), &pixels[..]);
            assert_eq!(set.labels(), &[Some(0), Some(2), Some(1)]);
            assert_eq!(set.class_names(), &["0", "1", "2"]);
            assert_eq!(set.pixels(1), Some(&pixels[6..12]));
            assert_eq!(set.pixels(3), None);
            let Some(DynamicImage::ImageLuma8(img)) = set.image(2) else {
                panic!("not grey")
            };
            assert_eq!(img.get_pixel(2, 1).0[0], 170);
        }
        let set = read_idx(&raw.0, &raw.1, Some(&FASHION_MNIST_CLASSES)).unwrap();
        assert_eq!(set.class_names()[2], "Pullover");
        assert_eq!(set.num_classes(), 10);
        assert_eq!(set.class_counts(), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn idx_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (images, labels, _) = tiny_idx();
        let lbl = write(dir.path(), "lbl", &labels);
        let img = write(dir.path(), "img", &images);
        let msg = |r: Result<ImageSet, DataError>| r.map(|_| ()).unwrap_err().to_string();

        let mut bad_magic = images.clone();
        bad_magic[3] = 2;
        let e = msg(read_idx(write(dir.path(), "magic", &bad_magic), &lbl, None));
        assert!(e.contains("magic number 2050") && e.contains("expected 2051"), "{e}");
        // Labels given as images and vice versa.
        assert!(msg(read_idx(&lbl, &img, None)).contains("2051"));

        let e = msg(read_idx(
            write(dir.path(), "short", &images[..images.len() - 1]),
            &lbl,
            None,
        ));
        assert!(e.contains("truncated") && e.contains("short"), "{e}");
        let e = msg(read_idx(
            write(dir.path(), "short.gz", &gzip(&images[..10])),
            &lbl,
            None,
        ));
        assert!(e.contains("truncated IDX header"), "{e}");
        let mut long = images.clone();
        long.push(0);
        assert!(msg(read_idx(write(dir.path(), "long", &long), &lbl, None)).contains("trailing"));

        let e = msg(read_idx(&img, write(dir.path(), "two", &idx_labels(&[0, 1])), None));
        assert!(e.contains("3 images but 2 labels"), "{e}");

        let e = msg(read_idx(&img, &lbl, Some(&["a", "b"])));
        assert!(e.contains("label 2"), "{e}");

        let e = msg(read_idx(dir.path().join("missing"), &lbl, None));
        assert!(e.contains("missing"), "{e}");

        let mut corrupt = gzip(&images);
        let mid = corrupt.len() / 2;
        corrupt[mid..].iter_mut().for_each(|b| *b = b.wrapping_add(77));
        assert!(read_idx(write(dir.path(), "corrupt.gz", &corrupt), &lbl, None).is_err());

        // Dimensions whose product overflows, or that promise more than there is.
        let huge = idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2, 3]);
        let e = msg(read_idx(write(dir.path(), "huge", &huge), &lbl, None));
        assert!(e.contains("overflow") || e.contains("truncated"), "{e}");
    }

    fn png(path: &Path, img: &RgbImage) {
        img.save_with_format(path, image::ImageFormat::Png).unwrap();
    }

    #[test]
    fn image_folder_reads_classes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["dog", "cat", "cat/nested", ".hidden"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        png(
            &root.join("cat/b.png"),
            &RgbImage::from_pixel(40, 20, image::Rgb([200, 100, 50])),
        );
        png(
            &root.join("cat/a.PNG"),
            &RgbImage::from_pixel(20, 30, image::Rgb([10, 20, 30])),
        );
        png(
            &root.join("cat/nested/c.png"),
            &RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3])),
        );
        png(
            &root.join("dog/z.png"),
            &RgbImage::from_pixel(17, 16, image::Rgb([255, 255, 255])),
        );
        png(
            &root.join(".hidden/x.png"),
            &RgbImage::from_pixel(16, 16, image::Rgb([0, 0, 0])),
        );
        std::fs::write(root.join("dog/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("readme.md"), "top-level files are ignored").unwrap();

        let set = read_image_folder(root, 16, 3).unwrap();
        assert_eq!(set.class_names(), &["cat", "dog"]);
        assert_eq!(set.labels(), &[Some(0), Some(0), Some(0), Some(1)]);
        assert_eq!((set.height(), set.width(), set.channels()), (16, 16, 3));
        // Files in the class folder first, by name (upper-case `a.PNG` sorts before `b.png`),
        // then sub-folders; constant images stay constant through resize and crop.
        let first = |i: usize| set.pixels(i).unwrap()[..3].to_vec();
        assert_eq!(first(0), [10, 20, 30]);
        assert_eq!(first(1), [200, 100, 50]);
        assert_eq!(first(2), [1, 2, 3]);
        assert!(set.pixels(0).unwrap().chunks(3).all(|p| p == [10, 20, 30]));

        let grey = read_image_folder(root, 8, 1).unwrap();
        assert_eq!(grey.image_len(), 64);
        // PIL: (200*19595 + 100*38470 + 50*7471 + 32768) >> 16 = 124.
        assert!(grey.pixels(1).unwrap().iter().all(|&v| v == 124));

        let unlabelled = read_unlabelled_folder(root.join("cat"), 8, 3).unwrap();
        assert_eq!(unlabelled.len(), 3);
        assert_eq!(unlabelled.labels(), &[None, None, None]);
        assert!(unlabelled.class_names().is_empty());
    }

    /// Any data set of the shared grammar reads as its own reader reads it; labelled files get
    /// numbered classes; what cannot be trained on is refused, saying why.
    #[test]
    fn sources_of_the_shared_grammar_read_as_sets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let tree = root.join("tree");
        for (d, v) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir_all(tree.join(d)).unwrap();
            png(
                &tree.join(d).join("a.png"),
                &RgbImage::from_pixel(12, 10, image::Rgb([v, v, v])),
            );
        }
        let source = DataSource::detect(&tree).unwrap();
        assert_eq!(
            read_source(&source, Some(8), Some(1), None).unwrap(),
            read_image_folder(&tree, 8, 1).unwrap()
        );
        let e = read_source(&source, None, Some(1), None).unwrap_err().to_string();
        assert!(e.contains("size"), "{e}");

        let flat = root.join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        png(
            &flat.join("x_2.png"),
            &RgbImage::from_pixel(8, 8, image::Rgb([5, 5, 5])),
        );
        png(
            &flat.join("y_0.png"),
            &RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])),
        );
        let source = DataSource::detect(&flat).unwrap();
        let set = read_source(&source, Some(4), Some(3), None).unwrap();
        assert_eq!(set.labels(), &[Some(2), Some(0)]);
        assert_eq!(set.class_names(), &["0", "1", "2"]);
        assert_eq!(set.pixels(1).unwrap()[..3], [9, 9, 9]);
        let e = read_source(&source, Some(4), Some(3), Some(&["a", "b"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 2"), "{e}");

        let (images, labels, pixels) = tiny_idx();
        let img = write(root, "t-images-idx3-ubyte", &images);
        write(root, "t-labels-idx1-ubyte", &labels);
        let set = read_source(&DataSource::detect(&img).unwrap(), None, None, None).unwrap();
        assert_eq!(
            (set.raw_pixels(), set.labels()),
            (&pixels[..], &[Some(0), Some(2), Some(1)][..])
        );
        let alone = write(root, "alone", &images);
        let e = read_source(&DataSource::detect(&alone).unwrap(), None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no label file") && e.contains("alone"), "{e}");
    }

    #[test]
    fn image_folder_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        png(
            &root.join("a/ok.png"),
            &RgbImage::from_pixel(8, 8, image::Rgb([1, 1, 1])),
        );
        std::fs::write(root.join("a/broken.jpg"), b"definitely not a jpeg").unwrap();
        let e = read_image_folder(root, 8, 3).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("broken.jpg"), "{e}");
        std::fs::remove_file(root.join("a/broken.jpg")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        let e = read_image_folder(root, 8, 3).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("no image files") && e.contains(&root.join("b").display().to_string()),
            "{e}"
        );
        assert!(read_image_folder(root.join("nope"), 8, 3).is_err());
        assert!(read_image_folder(root, 0, 3).is_err());
        assert!(read_image_folder(root, 8, 2).is_err());
        assert!(read_unlabelled_folder(root.join("b"), 8, 3).is_err());
    }

    /// `per_class[c]` images of class `c`, each a 2x2 grey image holding its own index.
    fn synthetic(per_class: &[usize]) -> ImageSet {
        let labels: Vec<Option<usize>> = per_class
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(Some(c), n))
            .collect();
        let pixels = (0..labels.len()).flat_map(|i| [i as u8; 4]).collect();
        let names = (0..per_class.len()).map(|c| format!("class{c}")).collect();
        ImageSet::from_raw(pixels, labels, names, 1, 2, 2).unwrap()
    }

    #[test]
    fn concat_keeps_order_and_labels_and_refuses_other_sizes() {
        let set = synthetic(&[2, 1]);
        let (lab, rest) = set.split_labelled(LabelledSize::PerClass(1), 0).unwrap();
        let joined = lab.concat(&rest.clone().without_labels()).unwrap();
        assert_eq!(joined.len(), 3);
        assert_eq!(joined.class_names(), set.class_names());
        assert_eq!(&joined.labels()[..2], lab.labels());
        assert_eq!(joined.label(2), None);
        assert_eq!(joined.pixels(2), rest.pixels(0));
        let rgb = ImageSet::from_raw(vec![0; 12], vec![None], vec![], 3, 2, 2).unwrap();
        assert!(set.concat(&rgb).unwrap_err().to_string().contains("2x2x3"));
    }

    #[test]
    fn stratified_split_is_exact_disjoint_and_complete() {
        let set = synthetic(&[10, 12, 10]);
        let (lab, rest) = set.split_labelled_indices(LabelledSize::PerClass(4), 5).unwrap();
        assert_eq!(lab.len(), 12);
        assert_eq!(rest.len(), 20);
        let mut all: Vec<usize> = lab.iter().chain(&rest).copied().collect();
        all.sort();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
        let (labelled, unlabelled) = set.split_labelled(LabelledSize::PerClass(4), 5).unwrap();
        assert_eq!(labelled.class_counts(), [4, 4, 4]);
        assert_eq!(unlabelled.class_counts(), [6, 8, 6]);
        // Pixels follow their images; the rest keeps its labels.
        assert_eq!(labelled.pixels(0).unwrap()[0] as usize, lab[0]);
        assert_eq!(unlabelled.label(0), set.label(rest[0]));
        assert!(unlabelled.clone().without_labels().labels().iter().all(Option::is_none));
        // Deterministic, seed-dependent.
        assert_eq!(set.split_labelled_indices(LabelledSize::PerClass(4), 5).unwrap().0, lab);
        assert_ne!(set.split_labelled_indices(LabelledSize::PerClass(4), 6).unwrap().0, lab);
        // Fractions round per class: 0.25 of 10 = 2.5 -> 3, of 12 = 3.
        let (frac, _) = set.split_labelled(LabelledSize::Fraction(0.25), 1).unwrap();
        assert_eq!(frac.class_counts(), [3, 3, 3]);
        assert!(set.split_labelled(LabelledSize::PerClass(11), 1).is_err());
        assert!(set.split_labelled(LabelledSize::Fraction(1.5), 1).is_err());
        let unlabelled_set = set.clone().without_labels();
        assert!(unlabelled_set.split_labelled(LabelledSize::PerClass(1), 1).is_err());
    }

    #[test]
    fn subset_and_constructor_check_their_input() {
        let set = synthetic(&[2, 2]);
        let sub = set.subset(&[3, 0, 3]).unwrap();
        assert_eq!(sub.labels(), &[Some(1), Some(0), Some(1)]);
        assert_eq!(sub.raw_pixels(), &[3, 3, 3, 3, 0, 0, 0, 0, 3, 3, 3, 3]);
        assert!(set.subset(&[4]).is_err());
        assert!(ImageSet::from_raw(vec![0; 5], vec![None], vec![], 1, 2, 2).is_err());
        assert!(ImageSet::from_raw(vec![0; 4], vec![Some(0)], vec![], 1, 2, 2).is_err());
        assert!(ImageSet::from_raw(vec![0; 8], vec![None], vec![], 2, 2, 2).is_err());
        assert!(ImageSet::from_raw(vec![], vec![], vec![], 3, 0, 2).is_err());
    }

    #[test]
    fn batch_shape_and_normalisation() {
        // Two RGB 2x1 images with distinct channel values.
        let pixels = vec![255, 0, 51, 0, 255, 102, /* image 1 */ 10, 20, 30, 40, 50, 60];
        let set = ImageSet::from_raw(pixels, vec![Some(1), Some(0)], vec!["a".into(), "b".into()], 3, 1, 2).unwrap();
        let norm = Normalize::new(vec![0.5, 0.0, 0.2], vec![0.25, 1.0, 0.5]).unwrap();
        let b = make_batch(&set, &[0, 1], None, &norm, 0).unwrap();
        assert_eq!((b.n, b.c, b.h, b.w), (2, 3, 1, 2));
        assert_eq!(b.images.len(), 12);
        assert_eq!(b.labels, Some(vec![1, 0]));
        assert_eq!(b.indices, vec![0, 1]);
        // NCHW: image 0, channel 0 plane = [255, 0] -> (1 - 0.5) / 0.25 = 2, (0 - 0.5) / 0.25 = -2.
        assert_eq!(&b.images[0..2], &[2.0, -2.0]);
        assert_eq!(&b.images[2..4], &[0.0, 1.0]);
        assert!((b.images[4] - 0.0).abs() < 1e-6 && (b.images[5] - 0.4).abs() < 1e-6);
        assert!((b.images[6] - (10.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6);

        // Grey, one value for all channels; unlabelled images give no labels.
        let grey = synthetic(&[1, 1]).without_labels();
        let b = make_batch(&grey, &[1], None, &Normalize::unit(), 0).unwrap();
        assert_eq!(b.images, vec![1.0 / 255.0; 4]);
        assert_eq!(b.labels, None);
        let empty = make_batch(&grey, &[], None, &Normalize::unit(), 0).unwrap();
        assert_eq!((empty.n, empty.images.len()), (0, 0));

        assert!(make_batch(&grey, &[2], None, &Normalize::unit(), 0).is_err());
        assert!(
            make_batch(
                &set,
                &[0],
                None,
                &Normalize::new(vec![0.0; 2], vec![1.0; 2]).unwrap(),
                0
            )
            .is_err()
        );
        assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
        let shrink = |img: &RgbImage, _: &mut StdRng| image::imageops::crop_imm(img, 0, 0, 1, 1).to_image();
        assert!(make_batch(&set, &[0], Some(&shrink), &Normalize::unit(), 0).is_err());
        let padded = |img: &RgbImage, _: &mut StdRng| {
            let mut raw = img.as_raw().clone();
            raw.extend_from_slice(&[9; 7]);
            RgbImage::from_raw(img.width(), img.height(), raw).unwrap()
        };
        assert_eq!(
            make_batch(&set, &[1], Some(&padded), &norm, 0).unwrap(),
            make_batch(&set, &[1], None, &norm, 0).unwrap()
        );
    }

    fn augmenter() -> impl Fn(&RgbImage, &mut StdRng) -> RgbImage + Sync {
        let ra = RandAugment::new(2, 9.0).unwrap();
        move |img: &RgbImage, rng: &mut StdRng| ra.apply(&random_crop_flip(img, 2, true, rng), rng)
    }

    fn noisy_grey_set(n: usize) -> ImageSet {
        let mut state = 12345u64;
        let pixels = (0..n * 784)
            .map(|i| {
                state = splitmix64(state);
                if (i % 28) > 6 && (i % 28) < 22 {
                    (state >> 56) as u8
                } else {
                    0
                }
            })
            .collect();
        let labels = (0..n).map(|i| Some(i % 10)).collect();
        let names = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
        ImageSet::from_raw(pixels, labels, names, 1, 28, 28).unwrap()
    }

    #[test]
    fn augmented_batches_are_deterministic_per_image() {
        let set = noisy_grey_set(64);
        let aug = augmenter();
        let norm = Normalize::fashion_mnist();
        let idx: Vec<usize> = (0..64).rev().collect();
        let a = make_batch(&set, &idx, Some(&aug), &norm, 9).unwrap();
        let b = make_batch(&set, &idx, Some(&aug), &norm, 9).unwrap();
        assert_eq!(a, b);
        let c = make_batch(&set, &idx, Some(&aug), &norm, 10).unwrap();
        assert_ne!(a.images, c.images);
        let plain = make_batch(&set, &idx, None, &norm, 9).unwrap();
        assert_ne!(a.images, plain.images);
        // Image 5 comes out the same wherever it sits in the batch.
        let alone = make_batch(&set, &[5], Some(&aug), &norm, 9).unwrap();
        let pos = idx.iter().position(|&i| i == 5).unwrap();
        assert_eq!(&a.images[pos * 784..(pos + 1) * 784], &alone.images[..]);
        // And matches augmenting it by hand with its own generator.
        let mut rng = StdRng::seed_from_u64(image_seed(9, 5));
        let by_hand = aug(&set.rgb(5).unwrap(), &mut rng);
        let expected: Vec<f32> = by_hand
            .pixels()
            .map(|p| (f32::from(p.0[0]) / 255.0 - 0.2860) / 0.3530)
            .collect();
        assert_eq!(alone.images, expected);
    }

    #[test]
    fn epoch_order_covers_every_index_once() {
        let batches = shuffled_batches(10, 3, 1, false);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(shuffled_batches(10, 3, 1, true).len(), 3);
        assert_eq!(shuffled_batches(10, 3, 1, false), batches);
        assert_ne!(shuffled_batches(10, 3, 2, false), batches);
        assert!(shuffled_batches(10, 0, 1, false).is_empty());
        assert!(shuffled_batches(0, 4, 1, false).is_empty());

        let order = EpochOrder::new(10, 4, 7, false).unwrap();
        assert_eq!(order.num_batches(), 3);
        assert_eq!(EpochOrder::new(10, 4, 7, true).unwrap().num_batches(), 2);
        assert_eq!(order.batches(3), order.batches(3));
        assert_ne!(order.batches(3), order.batches(4));
        assert_ne!(order.epoch_seed(3), order.epoch_seed(4));
        assert!(EpochOrder::new(10, 0, 7, false).is_err());
    }

    #[test]
    fn fashion_mnist_from_disk() {
        let dir = ::data::fetch::fashion_mnist().expect("Fashion-MNIST (Debian dataset-fashion-mnist)");
        let (images, labels) = (
            dir.join("train-images-idx3-ubyte.gz"),
            dir.join("train-labels-idx1-ubyte.gz"),
        );
        let set = read_idx(&images, &labels, Some(&FASHION_MNIST_CLASSES)).unwrap();
        assert_eq!(
            (set.len(), set.height(), set.width(), set.channels()),
            (60000, 28, 28, 1)
        );
        assert_eq!(set.class_counts(), [6000; 10]);
        let stats = Normalize::from_set(&set);
        let reference = Normalize::fashion_mnist();
        assert!((stats.mean[0] - reference.mean[0]).abs() < 5e-4, "{stats:?}");
        assert!((stats.std[0] - reference.std[0]).abs() < 5e-4, "{stats:?}");
        let (labelled, rest) = set.split_labelled(LabelledSize::Fraction(0.1), 0).unwrap();
        assert_eq!(labelled.class_counts(), [600; 10]);
        assert_eq!(rest.class_counts(), [5400; 10]);
        let test = read_idx(
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz"),
            None,
        )
        .unwrap();
        assert_eq!(test.class_counts(), [1000; 10]);
    }
}
