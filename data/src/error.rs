//! The data crate's one error: why listing, fetching or reading a data set failed.

use std::path::{Path, PathBuf};

use engine::decode::ImageError;

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
    Idx(#[from] crate::idx::IdxError),
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
    /// A data set Hardy fetches itself could not be fetched.
    #[error(transparent)]
    Provision(#[from] engine::provision::ProvisionError),
    /// A `--shard` value that is not `i/n` with `i < n`.
    #[error("invalid shard `{given}`: {reason} (expected i/n with 0 <= i < n, e.g. 0/4)")]
    Shard {
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Turns an I/O error on `path` into [`DatasetError::Io`].
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A [`DatasetError::Layout`] for `path`.
pub(crate) fn layout_error(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
