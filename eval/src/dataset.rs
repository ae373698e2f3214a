//! Evaluation data: the layouts the benchmarks ship in, listed as items and streamed as batches.
//!
//! An evaluation reads ImageFolder trees (by wnid or by class name), the released ImageNet-C
//! (`<corruption>/<severity>/<wnid>/*.JPEG`) and ImageNet-P (`<perturbation>[_<difficulty>]/<wnid>/
//! *.mp4`) layouts, flat folders of labelled files (foolbox's samples) and IDX files
//! (Fashion-MNIST). Listing a data set yields [`Item`]s (a stable key, a label, where the pixels
//! are), which are cheap: 50,000 of them are a list of paths. Pixels are decoded only by
//! [`batches`], which decodes in parallel and keeps a bounded number of batches in flight, so the
//! 3.75M images of ImageNet-C run in constant memory. [`Shard`] splits a list across machines.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use engine::decode::{Exif, ImageError, ImageLimits};
use engine::idx::IdxImages;
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::subsets::{ClassSubset, imagenet_names, imagenet_wnids};
use crate::{Corruption, Perturbation};

/// File extensions (compared case-insensitively) of the images the folder readers list: the ones
/// the engine decodes.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "gif"];

/// The extension of ImageNet-P's videos.
pub const VIDEO_EXTENSIONS: [&str; 1] = ["mp4"];

/// How deep the folder readers descend below a class folder; guards against symlink loops.
const MAX_FOLDER_DEPTH: usize = 32;

/// How many unknown folder names an error lists before it says "and N more".
const LISTED_NAMES: usize = 10;

/// Why listing or reading a data set failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A folder does not have the expected layout.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// Class folders whose names match none of the model's classes.
    #[error(
        "{}: {count} class folder(s) match none of {classes}: {names}; name folders by wnid, by the model's labels \
         or by class number, or skip unknown folders",
        root.display()
    )]
    UnknownClasses {
        /// The data set's root.
        root: PathBuf,
        /// How many folders are unknown.
        count: usize,
        /// The first few of them, comma-separated.
        names: String,
        /// What they were matched against, in words.
        classes: String,
    },
    /// A labelled file's name holds no number to take the label from.
    #[error("{}: no label in the file name (expected a number, as in `imagenet_07_559.jpg`)", path.display())]
    NoLabel {
        /// The file.
        path: PathBuf,
    },
    /// An IDX file could not be read.
    #[error(transparent)]
    Idx(#[from] engine::idx::IdxError),
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
    /// An item refers to an image that is not in its IDX file.
    #[error("IDX item {index} is beyond the {len} images of its file")]
    IdxIndex {
        /// The item's index.
        index: usize,
        /// The number of images.
        len: usize,
    },
    /// An image could not be read or decoded (the engine's error names the file).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A `--shard` value that is not `i/n` with `i < n`.
    #[error("invalid shard `{given}`: {reason} (expected i/n with 0 <= i < n, e.g. 0/4)")]
    Shard {
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn layout_error(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Shards

/// One part of an evaluation split across machines: the items at positions `p` with
/// `p % count == index`. Written `index/count`, 0-based (`0/4` .. `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This part, `0 <= index < count`.
    pub index: usize,
    /// The number of parts.
    pub count: usize,
}

impl Shard {
    /// The whole data set: `0/1`.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// A shard, checked: `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, DatasetError> {
        if count == 0 || index >= count {
            return Err(DatasetError::Shard {
                given: format!("{index}/{count}"),
                reason: if count == 0 {
                    "the number of shards must be at least 1".into()
                } else {
                    format!("shard index {index} is not below the shard count {count}")
                },
            });
        }
        Ok(Shard { index, count })
    }

    /// Whether the item at `position` belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        self.count > 0 && position % self.count == self.index
    }

    /// This shard's items, in order.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, item)| item.clone())
            .collect()
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DatasetError::Shard {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index = i.trim().parse().map_err(|_| bad("the index is not a whole number"))?;
        let count = n.trim().parse().map_err(|_| bad("the count is not a whole number"))?;
        Shard::new(index, count).map_err(|e| match e {
            DatasetError::Shard { reason, .. } => bad(&reason),
            other => other,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Items

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
/// in a [`ClassSubset`]) and where its pixels are.
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

// ---------------------------------------------------------------------------------------------
// Class maps

/// Maps folder names to class indices.
///
/// - [`ClassMap::for_model`]: the model's labels (exact, then case-insensitive), ImageNet wnids
///   (`n01440764`) through [`imagenet_wnids`] when the model has 1000 classes, and class numbers
///   (`0`, `1`, ...) below the number of labels.
/// - [`ClassMap::with_subset`]: a subset's wnids (and lemmas) to positions in the subset, the
///   labels that [`ClassSubset::restrict`]ed logits are scored against (ImageNet-A/R).
/// - [`ClassMap::numbered`]: class numbers only.
///
/// A name that several classes share (ImageNet has two `crane`s) maps to none of them.
/// Folders that match nothing are an error naming them, unless [`ClassMap::skip_unknown`] is set
/// (then they are skipped with a warning).
#[derive(Debug, Clone)]
pub struct ClassMap {
    exact: HashMap<String, Option<usize>>,
    folded: HashMap<String, Option<usize>>,
    numbered: usize,
    skip_unknown: bool,
    description: String,
}

fn insert_unique(map: &mut HashMap<String, Option<usize>>, key: String, index: usize) {
    map.entry(key)
        .and_modify(|v| {
            if *v != Some(index) {
                *v = None;
            }
        })
        .or_insert(Some(index));
}

impl ClassMap {
    fn empty(description: String) -> Self {
        ClassMap {
            exact: HashMap::new(),
            folded: HashMap::new(),
            numbered: 0,
            skip_unknown: false,
            description,
        }
    }

    fn add_name(&mut self, name: &str, index: usize) {
        insert_unique(&mut self.exact, name.to_string(), index);
        insert_unique(&mut self.folded, name.to_lowercase(), index);
    }

    /// Folder names for a model with these class labels (one per output, in order).
    pub fn for_model(labels: &[String]) -> Self {
        let mut map = ClassMap::empty(format!("the model's {} classes", labels.len()));
        if labels.len() == imagenet_wnids().len() {
            for (i, wnid) in imagenet_wnids().iter().enumerate() {
                insert_unique(&mut map.exact, wnid.clone(), i);
            }
            map.description = "the model's 1000 classes (labels or ImageNet wnids)".into();
        }
        for (i, label) in labels.iter().enumerate() {
            map.add_name(label, i);
        }
        map.numbered = labels.len();
        map
    }

    /// Folder names for an ImageNet subset: its wnids (and WordNet lemmas, case-insensitive) map
    /// to the class's position in the subset.
    pub fn with_subset(subset: &ClassSubset) -> Self {
        let mut map = ClassMap::empty(format!("the {} classes of {}", subset.len(), subset.name));
        for (pos, (wnid, &index)) in subset.wnids.iter().zip(&subset.indices).enumerate() {
            insert_unique(&mut map.exact, wnid.clone(), pos);
            if let Some(name) = imagenet_names().get(index) {
                map.add_name(name, pos);
            }
        }
        map
    }

    /// Folders named by class number, `0` to `classes - 1`.
    pub fn numbered(classes: usize) -> Self {
        let mut map = ClassMap::empty(format!("class numbers 0..{classes}"));
        map.numbered = classes;
        map
    }

    /// Skips folders that match no class (with a warning) instead of failing.
    pub fn skip_unknown(mut self, skip: bool) -> Self {
        self.skip_unknown = skip;
        self
    }

    /// The class index of a folder name, `None` if it matches no class (or several).
    pub fn lookup(&self, folder: &str) -> Option<usize> {
        if let Some(found) = self.exact.get(folder) {
            return *found;
        }
        if let Some(found) = self.folded.get(&folder.to_lowercase()) {
            return *found;
        }
        // Canonical decimal numbers only (`7`, not `07` or `+7`).
        let n: usize = folder.parse().ok()?;
        (n < self.numbered && n.to_string() == folder).then_some(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Folder walking

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The non-hidden entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if !is_hidden(&path) {
            entries.push(path);
        }
    }
    entries.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(entries)
}

/// The sub-folders of `dir` with their names, sorted.
fn sub_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    if !dir.is_dir() {
        return Err(layout_error(dir, "not a folder"));
    }
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p,
            )
        })
        .collect())
}

/// All files below `dir` with one of `extensions`, in torchvision's order (`sorted(os.walk)`
/// then sorted file names): by folder path, then by name.
fn files_below(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, DatasetError> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = stack.pop() {
        for path in sorted_entries(&folder)? {
            if path.is_dir() {
                if depth + 1 > MAX_FOLDER_DEPTH {
                    return Err(layout_error(
                        &path,
                        format!("more than {MAX_FOLDER_DEPTH} folder levels (a symlink loop?)"),
                    ));
                }
                stack.push((path, depth + 1));
            } else if has_extension(&path, extensions) {
                found.push((folder.clone(), path));
            }
        }
    }
    found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn relative_key(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn class_folder_items(root: &Path, classes: &ClassMap, extensions: &[&str]) -> Result<Vec<Item>, DatasetError> {
    let folders = sub_folders(root)?;
    let mut unknown = Vec::new();
    let mut items = Vec::new();
    for (name, path) in &folders {
        let Some(label) = classes.lookup(name) else {
            unknown.push(name.clone());
            continue;
        };
        for file in files_below(path, extensions)? {
            items.push(Item {
                key: relative_key(root, &file),
                label: Some(label),
                source: ItemSource::File(file),
            });
        }
    }
    if !unknown.is_empty() {
        let mut names = unknown
            .iter()
            .take(LISTED_NAMES)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if unknown.len() > LISTED_NAMES {
            names.push_str(&format!(" and {} more", unknown.len() - LISTED_NAMES));
        }
        if !classes.skip_unknown {
            return Err(DatasetError::UnknownClasses {
                root: root.to_path_buf(),
                count: unknown.len(),
                names,
                classes: classes.description.clone(),
            });
        }
        tracing::warn!(root = %root.display(), count = unknown.len(), folders = %names, "skipping class folders that match no class");
    }
    if items.is_empty() {
        return Err(layout_error(
            root,
            format!(
                "no {} files in any class folder ({} folders)",
                extensions.join("/"),
                folders.len()
            ),
        ));
    }
    Ok(items)
}

/// An ImageFolder tree: `<root>/<class>/**/<image>`, with class folders named as `classes`
/// accepts. Items come sorted by class folder name, then by path (torchvision's order); image
/// extensions are matched case-insensitively (`.JPEG`), hidden files and folders are skipped.
pub fn image_folder(root: &Path, classes: &ClassMap) -> Result<Vec<Item>, DatasetError> {
    class_folder_items(root, classes, &IMAGE_EXTENSIONS)
}

/// A flat folder of labelled images whose label is the last number in the file name (foolbox's
/// `imagenet_07_559.jpg` has label 559), sorted by file name.
pub fn labelled_files(root: &Path) -> Result<Vec<Item>, DatasetError> {
    if !root.is_dir() {
        return Err(layout_error(root, "not a folder"));
    }
    let mut items = Vec::new();
    for path in sorted_entries(root)? {
        if path.is_dir() || !has_extension(&path, &IMAGE_EXTENSIONS) {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = last_number(&stem).ok_or_else(|| DatasetError::NoLabel { path: path.clone() })?;
        items.push(Item {
            key: relative_key(root, &path),
            label: Some(label),
            source: ItemSource::File(path),
        });
    }
    if items.is_empty() {
        return Err(layout_error(root, "no image files"));
    }
    Ok(items)
}

/// The last run of ASCII digits in `s`, as a number.
fn last_number(s: &str) -> Option<usize> {
    let end = s.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = s[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    s[start..end].parse().ok()
}

/// An IDX image file (Fashion-MNIST, MNIST; raw or gzip) and optionally its label file. The
/// images are decoded once into one shared buffer; items are `idx:0`, `idx:1`, ...
pub fn idx(images: &Path, labels: Option<&Path>) -> Result<Vec<Item>, DatasetError> {
    let set = Arc::new(engine::idx::read_images(images)?);
    let labels = match labels {
        Some(path) => {
            let l = engine::idx::read_labels(path)?;
            if l.len() != set.len() {
                return Err(DatasetError::Mismatch {
                    images: images.to_path_buf(),
                    labels: path.to_path_buf(),
                    reason: format!("{} images but {} labels", set.len(), l.len()),
                });
            }
            Some(l)
        }
        None => None,
    };
    tracing::debug!(images = set.len(), path = %images.display(), "read IDX images");
    Ok((0..set.len())
        .map(|index| Item {
            key: format!("idx:{index}"),
            label: labels.as_ref().map(|l| usize::from(l[index])),
            source: ItemSource::Idx {
                images: Arc::clone(&set),
                index,
            },
        })
        .collect())
}

/// The `<corruption>/<severity>/` folders present under an ImageNet-C root (the released
/// layout), sorted by corruption (released order) and severity. Unknown folders are skipped with
/// a warning; a root with none is an error.
pub fn imagenet_c(root: &Path) -> Result<Vec<(Corruption, u8, PathBuf)>, DatasetError> {
    let mut found = Vec::new();
    for (name, path) in sub_folders(root)? {
        let Ok(corruption) = name.parse::<Corruption>() else {
            tracing::warn!(folder = %path.display(), "not an ImageNet-C corruption; skipped");
            continue;
        };
        for (sev_name, sev_path) in sub_folders(&path)? {
            match sev_name.parse::<u8>() {
                Ok(s @ 1..=5) if s.to_string() == sev_name => found.push((corruption, s, sev_path)),
                _ => tracing::warn!(folder = %sev_path.display(), "not a severity 1..5; skipped"),
            }
        }
    }
    if found.is_empty() {
        return Err(layout_error(
            root,
            "no <corruption>/<severity>/ folders (e.g. gaussian_noise/3/) of the ImageNet-C layout",
        ));
    }
    found.sort_by_key(|(c, s, _)| (*c, *s));
    Ok(found)
}

/// Parses an ImageNet-P folder name: `<perturbation>`, or `<noise perturbation>_<2|3>` for the
/// harder noise sets. Noise perturbations get their difficulty (1 for the plain name); the others
/// `None` (their difficulty is the comparison step, chosen at evaluation).
pub fn parse_perturbation_folder(name: &str) -> Option<(Perturbation, Option<u8>)> {
    if let Ok(p) = name.parse::<Perturbation>() {
        return Some((p, p.is_noise().then_some(1)));
    }
    let (base, level) = name.rsplit_once('_')?;
    let p = base.parse::<Perturbation>().ok()?;
    let d = match level {
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    p.is_noise().then_some((p, Some(d)))
}

/// The perturbation folders present under an ImageNet-P root (the released layout:
/// `<perturbation>/<wnid>/<file>.mp4`, the noise sets of difficulty 2 and 3 as
/// `gaussian_noise_2`, `gaussian_noise_3`, ...), sorted by perturbation and difficulty. Unknown
/// folders are skipped with a warning; a root with none is an error.
pub fn imagenet_p(root: &Path) -> Result<Vec<(Perturbation, Option<u8>, PathBuf)>, DatasetError> {
    let mut found = Vec::new();
    for (name, path) in sub_folders(root)? {
        match parse_perturbation_folder(&name) {
            Some((p, d)) => found.push((p, d, path)),
            None => tracing::warn!(folder = %path.display(), "not an ImageNet-P perturbation; skipped"),
        }
    }
    if found.is_empty() {
        return Err(layout_error(
            root,
            "no perturbation folders (e.g. rotate/, gaussian_noise_2/) of the ImageNet-P layout",
        ));
    }
    found.sort_by_key(|(p, d, _)| (*p, *d));
    Ok(found)
}

/// The videos of one ImageNet-P perturbation folder: `<dir>/<class>/**/*.mp4`, labelled through
/// `classes`, sorted as [`image_folder`] sorts.
pub fn videos(dir: &Path, classes: &ClassMap) -> Result<Vec<Item>, DatasetError> {
    class_folder_items(dir, classes, &VIDEO_EXTENSIONS)
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// How many decoded batches [`batches`] keeps ready or in the making ahead of the one the caller
/// holds.
pub const BATCHES_AHEAD: usize = 2;

/// One streamed batch: each item's position in the list and what `process` made of it.
pub type Batch<T> = Vec<(usize, Result<T, DatasetError>)>;

/// Streams `items` in order as batches of `batch` (0 counts as 1) processed items, with
/// [`BATCHES_AHEAD`] batches decoded ahead; see [`batches_with`].
pub fn batches<T: Send + 'static>(
    items: &[Item],
    batch: usize,
    process: impl Fn(&Item) -> Result<T, DatasetError> + Sync + Send + 'static,
) -> BatchStream<T> {
    batches_with(items, batch, BATCHES_AHEAD, process)
}

/// Streams `items` in order as batches of `batch` (0 counts as 1) items, each item passed
/// through `process` (typically: load, corrupt, preprocess), the items of a batch processed in
/// parallel on rayon's pool by a background thread while the caller works on the previous batch.
///
/// At most `ahead` (0 counts as 1) batches are being processed or waiting, plus the one the
/// caller holds, so memory stays constant however many items there are. A failed item does not
/// stop the stream: its error comes back in its place. Dropping the stream stops the producer
/// after the batch it is working on. `process` and `T` are `'static` because the producer
/// thread outlives this call; the items are cloned (paths and shared buffers, not pixels).
pub fn batches_with<T: Send + 'static>(
    items: &[Item],
    batch: usize,
    ahead: usize,
    process: impl Fn(&Item) -> Result<T, DatasetError> + Sync + Send + 'static,
) -> BatchStream<T> {
    let items: Vec<Item> = items.to_vec();
    let batch = batch.max(1);
    let (tx, rx): (SyncSender<Batch<T>>, Receiver<Batch<T>>) = sync_channel(ahead.max(1) - 1);
    let producer = std::thread::Builder::new().name("eval-batches".into()).spawn(move || {
        for (b, chunk) in items.chunks(batch).enumerate() {
            let out: Batch<T> = chunk
                .par_iter()
                .enumerate()
                .map(|(i, item)| (b * batch + i, process(item)))
                .collect();
            if tx.send(out).is_err() {
                return; // the stream was dropped
            }
        }
    });
    match producer {
        Ok(handle) => BatchStream {
            rx: Some(rx),
            handle: Some(handle),
            spawn_error: None,
        },
        Err(e) => BatchStream {
            rx: None,
            handle: None,
            spawn_error: Some(e),
        },
    }
}

/// The iterator [`batches`] returns.
pub struct BatchStream<T> {
    rx: Option<Receiver<Batch<T>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<std::io::Error>,
}

impl<T> Iterator for BatchStream<T> {
    type Item = Batch<T>;

    fn next(&mut self) -> Option<Batch<T>> {
        if let Some(source) = self.spawn_error.take() {
            // The producer thread could not start: report it once, in place of the first batch.
            return Some(vec![(
                0,
                Err(DatasetError::Io {
                    path: PathBuf::from("<batch producer thread>"),
                    source,
                }),
            )]);
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The producer is done (or panicked: `process` panicking is a bug, and it is
                // passed on to the caller rather than ending the stream early in silence).
                if let Err(panic) = self.finish() {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl<T> BatchStream<T> {
    fn finish(&mut self) -> std::thread::Result<()> {
        self.rx = None;
        match self.handle.take() {
            Some(handle) => handle.join(),
            None => Ok(()),
        }
    }
}

impl<T> Drop for BatchStream<T> {
    fn drop(&mut self) {
        if self.finish().is_err() {
            tracing::error!("the batch producer thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    fn save(path: &Path, img: &RgbImage, format: image::ImageFormat) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save_with_format(path, format).unwrap();
    }

    fn solid(v: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(8, 6, image::Rgb(v))
    }

    fn imagenet_labels() -> Vec<String> {
        imagenet_names().to_vec()
    }

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert_eq!(s.to_string(), "1/3");
        assert_eq!(" 0 / 1".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["3/3", "0/0", "1", "a/2", "1/b", "-1/2", ""] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")) && e.contains("i/n"), "{e}");
        }
        assert!("3/3".parse::<Shard>().unwrap_err().to_string().contains("not below"));
        let items: Vec<usize> = (0..10).collect();
        let parts: Vec<Vec<usize>> = (0..3).map(|i| Shard::new(i, 3).unwrap().select(&items)).collect();
        assert_eq!(parts[0], [0, 3, 6, 9]);
        assert_eq!(parts[1], [1, 4, 7]);
        assert_eq!(parts[2], [2, 5, 8]);
        assert!(Shard::ALL.contains(12345));
        assert!(!Shard::new(1, 2).unwrap().contains(4));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shard>(&json).unwrap(), s);
    }

    #[test]
    fn image_folder_by_wnid_in_torchvision_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        use image::ImageFormat::{Jpeg, Png};
        save(&root.join("n01443537/b.png"), &solid([200, 100, 50]), Png);
        save(&root.join("n01443537/A.JPEG"), &solid([9, 9, 9]), Jpeg);
        save(&root.join("n01443537/sub/c.png"), &solid([1, 2, 3]), Png);
        save(&root.join("n01440764/x.jpg"), &solid([128, 128, 128]), Jpeg);
        save(&root.join("n01440764/.hidden.png"), &solid([0, 0, 0]), Png);
        std::fs::write(root.join("n01440764/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("README"), "top-level files are ignored").unwrap();

        let classes = ClassMap::for_model(&imagenet_labels());
        let items = image_folder(root, &classes).unwrap();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "n01440764/x.jpg",
                "n01443537/A.JPEG",
                "n01443537/b.png",
                "n01443537/sub/c.png"
            ]
        );
        let labels: Vec<_> = items.iter().map(|i| i.label).collect();
        assert_eq!(labels, [Some(0), Some(1), Some(1), Some(1)]);
        let limits = ImageLimits::default();
        let img = items[2].load(&limits, Exif::Apply).unwrap();
        assert_eq!(img.dimensions(), (8, 6));
        assert_eq!(img.get_pixel(3, 3).0, [200, 100, 50]);
        assert!(items[0].load(&limits, Exif::Apply).unwrap().get_pixel(0, 0).0[0].abs_diff(128) <= 2);
        assert_eq!(items[3].path(), Some(root.join("n01443537/sub/c.png").as_path()));

        // An unknown folder is an error naming it, or skipped when asked.
        save(&root.join("not_a_class/y.png"), &solid([0, 0, 0]), Png);
        let e = image_folder(root, &classes).unwrap_err().to_string();
        assert!(e.contains("not_a_class") && e.contains("1000 classes"), "{e}");
        let skipped = image_folder(root, &classes.clone().skip_unknown(true)).unwrap();
        assert_eq!(skipped.len(), 4);
        // A broken image fails when loaded, naming the file.
        std::fs::write(root.join("n01440764/broken.png"), b"definitely not a png").unwrap();
        let items = image_folder(root, &classes.skip_unknown(true)).unwrap();
        let broken = items.iter().find(|i| i.key.ends_with("broken.png")).unwrap();
        let e = broken.load(&limits, Exif::Apply).unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");
        assert!(image_folder(&root.join("missing"), &ClassMap::numbered(2)).is_err());
    }

    #[test]
    fn class_maps_match_labels_numbers_and_subsets() {
        let labels: Vec<String> = ["cat", "Dog", "crane", "crane", "T-shirt/top"]
            .map(String::from)
            .to_vec();
        let m = ClassMap::for_model(&labels);
        assert_eq!(m.lookup("cat"), Some(0));
        assert_eq!(m.lookup("CAT"), Some(0));
        assert_eq!(m.lookup("dog"), Some(1));
        assert_eq!(m.lookup("crane"), None); // ambiguous
        assert_eq!(m.lookup("4"), Some(4));
        assert_eq!(m.lookup("04"), None);
        assert_eq!(m.lookup("5"), None);
        assert_eq!(m.lookup("n01440764"), None); // not a 1000-class model
        let imagenet = ClassMap::for_model(&imagenet_labels());
        assert_eq!(imagenet.lookup("n01440764"), Some(0));
        assert_eq!(imagenet.lookup("n15075141"), Some(999));
        assert_eq!(imagenet.lookup("tench, Tinca tinca"), Some(0));
        assert_eq!(imagenet.lookup("crane"), None);
        // Exact label beats case folding.
        let m = ClassMap::for_model(&["a".to_string(), "A".to_string()]);
        assert_eq!((m.lookup("a"), m.lookup("A")), (Some(0), Some(1)));
        // Subsets map to positions in the subset.
        let a = crate::subsets::imagenet_a();
        let m = ClassMap::with_subset(&a);
        assert_eq!(m.lookup(&a.wnids[0]), Some(0));
        assert_eq!(m.lookup(&a.wnids[199]), Some(199));
        assert_eq!(m.lookup("n01440764"), None); // class 0 is not in ImageNet-A
        assert_eq!(m.lookup("0"), None);
        assert_eq!(ClassMap::numbered(3).lookup("2"), Some(2));
    }

    #[test]
    fn foolbox_samples_as_labelled_files() {
        let dir = engine::provision::foolbox_imagenet_samples().expect("foolbox samples (pip download)");
        let items = labelled_files(&dir).unwrap();
        assert_eq!(items.len(), 20);
        assert!(items.windows(2).all(|w| w[0].key < w[1].key));
        for item in &items {
            let label = item.label.unwrap();
            assert!(label < 1000);
            assert!(item.key.ends_with(&format!("_{label}.jpg")), "{}", item.key);
        }
        let img = items[0].load(&ImageLimits::default(), Exif::Apply).unwrap();
        assert_eq!(img.dimensions(), (512, 512));

        let tmp = tempfile::tempdir().unwrap();
        save(
            &tmp.path().join("cifar10_03_7.png"),
            &solid([1, 1, 1]),
            image::ImageFormat::Png,
        );
        let items = labelled_files(tmp.path()).unwrap();
        assert_eq!((items[0].label, items[0].key.as_str()), (Some(7), "cifar10_03_7.png"));
        save(
            &tmp.path().join("unlabelled.png"),
            &solid([1, 1, 1]),
            image::ImageFormat::Png,
        );
        let e = labelled_files(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("unlabelled.png") && e.contains("no label"), "{e}");
        assert_eq!(last_number("imagenet_07_559"), Some(559));
        assert_eq!(last_number("a12b"), Some(12));
        assert_eq!(last_number("none"), None);
    }

    #[test]
    fn fashion_mnist_as_idx_items() {
        let dir = engine::provision::fashion_mnist().expect("Fashion-MNIST (Debian dataset-fashion-mnist)");
        let images = dir.join("t10k-images-idx3-ubyte.gz");
        let items = idx(&images, Some(&dir.join("t10k-labels-idx1-ubyte.gz"))).unwrap();
        assert_eq!(items.len(), 10_000);
        let mut counts = [0usize; 10];
        items.iter().for_each(|i| counts[i.label.unwrap()] += 1);
        assert_eq!(counts, [1000; 10]);
        assert_eq!(items[42].key, "idx:42");
        // One shared buffer for all items.
        let (ItemSource::Idx { images: a, .. }, ItemSource::Idx { images: b, .. }) =
            (&items[0].source, &items[9999].source)
        else {
            panic!("not IDX items")
        };
        assert!(Arc::ptr_eq(a, b));
        let img = items[0].load(&ImageLimits::default(), Exif::Apply).unwrap();
        assert_eq!(img.dimensions(), (28, 28));
        assert!(img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        assert_eq!(img.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), a.pixels(0).unwrap());
        assert!(img.pixels().any(|p| p.0[0] > 0));
        assert!(idx(&images, None).unwrap().iter().all(|i| i.label.is_none()));
        let e = idx(&images, Some(&dir.join("train-labels-idx1-ubyte.gz")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10000 images but 60000 labels"), "{e}");
        let bad = Item {
            key: "idx:10000".into(),
            label: None,
            source: ItemSource::Idx {
                images: Arc::clone(a),
                index: 10_000,
            },
        };
        assert!(bad.load(&ImageLimits::default(), Exif::Apply).is_err());
    }

    #[test]
    fn imagenet_c_and_p_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        for d in [
            "gaussian_noise/5",
            "gaussian_noise/1",
            "fog/3",
            "junk/1",
            "gaussian_noise/6",
            "gaussian_noise/x",
            "saturate/2",
        ] {
            std::fs::create_dir_all(c.join(d)).unwrap();
        }
        let found: Vec<(Corruption, u8)> = imagenet_c(&c).unwrap().into_iter().map(|(c, s, _)| (c, s)).collect();
        assert_eq!(
            found,
            [
                (Corruption::GaussianNoise, 1),
                (Corruption::GaussianNoise, 5),
                (Corruption::Fog, 3),
                (Corruption::Saturate, 2)
            ]
        );
        assert_eq!(imagenet_c(&c).unwrap()[2].2, c.join("fog/3"));
        assert!(
            imagenet_c(&c.join("junk"))
                .unwrap_err()
                .to_string()
                .contains("ImageNet-C")
        );

        let p = dir.path().join("p");
        for d in [
            "rotate",
            "gaussian_noise_3",
            "gaussian_noise",
            "gaussian_noise_2",
            "rotate_2",
            "speckle_noise_4",
            "x",
            "translate",
        ] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        let found: Vec<(Perturbation, Option<u8>)> =
            imagenet_p(&p).unwrap().into_iter().map(|(p, d, _)| (p, d)).collect();
        assert_eq!(
            found,
            [
                (Perturbation::GaussianNoise, Some(1)),
                (Perturbation::GaussianNoise, Some(2)),
                (Perturbation::GaussianNoise, Some(3)),
                (Perturbation::Translate, None),
                (Perturbation::Rotate, None),
            ]
        );
        assert!(imagenet_p(&p.join("x")).is_err());
        assert_eq!(
            parse_perturbation_folder("shot_noise_2"),
            Some((Perturbation::ShotNoise, Some(2)))
        );

        let rotate = p.join("rotate");
        for f in [
            "n01443537/b.mp4",
            "n01443537/a.MP4",
            "n01440764/z.mp4",
            "n01440764/z.png",
        ] {
            std::fs::create_dir_all(rotate.join(f).parent().unwrap()).unwrap();
            std::fs::write(rotate.join(f), b"").unwrap();
        }
        let vids = videos(&rotate, &ClassMap::for_model(&imagenet_labels())).unwrap();
        let keys: Vec<(&str, Option<usize>)> = vids.iter().map(|i| (i.key.as_str(), i.label)).collect();
        assert_eq!(
            keys,
            [
                ("n01440764/z.mp4", Some(0)),
                ("n01443537/a.MP4", Some(1)),
                ("n01443537/b.mp4", Some(1))
            ]
        );
    }

    /// Counts values alive, and the most ever alive at once.
    struct Live {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    struct Token(Arc<Live>);

    impl Token {
        fn new(live: &Arc<Live>) -> Self {
            let n = live.now.fetch_add(1, Ordering::SeqCst) + 1;
            live.max.fetch_max(n, Ordering::SeqCst);
            Token(Arc::clone(live))
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn numbered_items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                key: format!("item{i}"),
                label: Some(i % 7),
                source: ItemSource::File(PathBuf::from(format!("/nonexistent/{i}.png"))),
            })
            .collect()
    }

    #[test]
    fn batches_stream_in_order_with_errors_in_place() {
        let items = numbered_items(23);
        let stream = batches(&items, 5, |item: &Item| {
            if item.key == "item7" {
                return Err(DatasetError::NoLabel { path: "item7".into() });
            }
            Ok(item.key.clone())
        });
        let got: Vec<Batch<String>> = stream.collect();
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 5, 3]);
        for (position, result) in got.into_iter().flatten() {
            match result {
                Ok(key) => assert_eq!(key, format!("item{position}")),
                Err(e) => assert_eq!((position, e.to_string().contains("item7")), (7, true)),
            }
        }
        // Loading real paths that do not exist reports each one.
        let failed: Vec<_> = batches(&items[..2], 0, |i: &Item| i.load(&ImageLimits::default(), Exif::Apply))
            .flatten()
            .collect();
        assert_eq!(failed.len(), 2);
        assert!(
            failed[1]
                .1
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/1.png")
        );
        assert_eq!(batches(&[], 4, |_: &Item| Ok(())).count(), 0);
    }

    #[test]
    fn batches_keep_a_bounded_number_in_flight() {
        let live = Arc::new(Live {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        });
        let processed = Arc::new(AtomicUsize::new(0));
        let items = numbered_items(400);
        let (batch, ahead) = (4, 2);
        let (l, p) = (Arc::clone(&live), Arc::clone(&processed));
        let stream = batches_with(&items, batch, ahead, move |_: &Item| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(Token::new(&l))
        });
        let seen = Mutex::new(0usize);
        for b in stream {
            // A slow consumer: the producer fills up its allowance meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(1));
            *seen.lock().unwrap() += b.len();
        }
        assert_eq!(*seen.lock().unwrap(), 400);
        let max = live.max.load(Ordering::SeqCst);
        assert!(max <= (ahead + 1) * batch, "{max} items alive at once");
        assert!(max > batch, "the producer never ran ahead ({max})");
        assert_eq!(live.now.load(Ordering::SeqCst), 0);

        // Dropping the stream early stops the producer.
        let p = Arc::clone(&processed);
        processed.store(0, Ordering::SeqCst);
        let mut stream = batches_with(&items, batch, ahead, move |_: &Item| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(stream.next().is_some());
        drop(stream);
        let done = processed.load(Ordering::SeqCst);
        assert!(done <= (ahead + 2) * batch, "{done} items processed after dropping");
    }
}
