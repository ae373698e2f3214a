//! The data set grammar: what a `--data` value (or a training config's data set) names.
//!
//! `hardy eval --data`, `hardy corrupt --data` and the trainer's configs take the same values:
//!
//! - a named set Hardy fetches itself: `fashion-mnist:test`, `fashion-mnist:train` (Debian's
//!   `dataset-fashion-mnist`) or `foolbox:imagenet` (the 20 labelled ImageNet photos of the
//!   PyPI `foolbox` wheel);
//! - a file: an IDX image file, with its label file when one sits beside it;
//! - a folder with sub-folders: an ImageFolder tree (`<class>/**/<image>`);
//! - a folder of files only: labelled files (`imagenet_07_559.jpg` has label 559).
//!
//! [`DataSource::resolve`] reads a value, [`DataSource::items`] lists the set in its fixed order.

use std::path::{Path, PathBuf};

use crate::fetch::{FASHION_MNIST_CLASSES, fashion_mnist, foolbox_imagenet_samples};
use crate::walk::{sorted_entries, sub_folders};
use crate::{ClassMap, DatasetError, Item, layout};

/// The named sets [`DataSource::resolve`] knows, as they are written.
pub const NAMED_SETS: [&str; 3] = ["fashion-mnist:test", "fashion-mnist:train", "foolbox:imagenet"];

/// Where a labelled image set comes from, told apart by what the path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A directory of class directories (`<class or wnid>/<image>`).
    ImageFolder(PathBuf),
    /// A flat directory whose file names end in the label (`imagenet_07_559.jpg`).
    LabelledFiles(PathBuf),
    /// An IDX image file (MNIST, Fashion-MNIST), with its label file when one sits beside it
    /// (`...-images-idx3-ubyte[.gz]` -> `...-labels-idx1-ubyte[.gz]`).
    Idx {
        /// The images.
        images: PathBuf,
        /// The labels.
        labels: Option<PathBuf>,
    },
}

impl DataSource {
    /// Resolves the named sets Hardy can fetch itself (`fashion-mnist:test`,
    /// `fashion-mnist:train` from Debian's dataset-fashion-mnist; `foolbox:imagenet`, the 20
    /// labelled ImageNet photos of the PyPI foolbox wheel), and otherwise [`DataSource::detect`]s
    /// the path.
    pub fn resolve(path: &Path) -> Result<Self, DatasetError> {
        let idx = |split: &str| -> Result<Self, DatasetError> {
            let dir = fashion_mnist()?;
            Ok(DataSource::Idx {
                images: dir.join(format!("{split}-images-idx3-ubyte.gz")),
                labels: Some(dir.join(format!("{split}-labels-idx1-ubyte.gz"))),
            })
        };
        match path.to_str() {
            Some("fashion-mnist:test") => idx("t10k"),
            Some("fashion-mnist:train") => idx("train"),
            Some("foolbox:imagenet") => Ok(DataSource::LabelledFiles(foolbox_imagenet_samples()?)),
            _ => Self::detect(path),
        }
    }

    /// Tells the kind of `path`: a file is IDX; a directory with (non-hidden) subdirectories is
    /// an ImageFolder; a directory of files is labelled by file name.
    pub fn detect(path: &Path) -> Result<Self, DatasetError> {
        if path.is_file() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let labels = name
                .contains("images-idx3")
                .then(|| path.with_file_name(name.replace("images-idx3", "labels-idx1")))
                .filter(|p| p.is_file());
            return Ok(DataSource::Idx {
                images: path.to_path_buf(),
                labels,
            });
        }
        let has_dirs = sorted_entries(path)?.iter().any(|p| p.is_dir());
        Ok(if has_dirs {
            DataSource::ImageFolder(path.to_path_buf())
        } else {
            DataSource::LabelledFiles(path.to_path_buf())
        })
    }

    /// The items, in a fixed order.
    pub fn items(&self, classes: &ClassMap) -> Result<Vec<Item>, DatasetError> {
        match self {
            DataSource::ImageFolder(root) => layout::image_folder(root, classes),
            DataSource::LabelledFiles(root) => layout::labelled_files(root),
            DataSource::Idx { images, labels } => layout::idx(images, labels.as_deref()),
        }
    }

    /// The classes the data set names itself, for uses without a model (`hardy corrupt`): an
    /// ImageFolder's sorted folder names, as torchvision's `ImageFolder` numbers them.
    pub fn own_classes(&self) -> Result<ClassMap, DatasetError> {
        let DataSource::ImageFolder(root) = self else {
            return Ok(ClassMap::numbered(0));
        };
        let names: Vec<String> = sub_folders(root)?.into_iter().map(|(name, _)| name).collect();
        Ok(ClassMap::for_model(&names))
    }

    /// The path, for reports.
    pub fn describe(&self) -> String {
        match self {
            DataSource::ImageFolder(p) | DataSource::LabelledFiles(p) => p.display().to_string(),
            DataSource::Idx { images, .. } => images.display().to_string(),
        }
    }
}

/// The class names of a named set, in label order (`fashion-mnist:*`: `T-shirt/top`, ...);
/// `None` for anything else, whose classes are numbers or folder names.
pub fn named_class_names(path: &Path) -> Option<&'static [&'static str]> {
    match path.to_str() {
        Some("fashion-mnist:test" | "fashion-mnist:train") => Some(&FASHION_MNIST_CLASSES),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    /// Paths are told apart by what they are; hidden folders are no classes.
    #[test]
    fn paths_are_detected_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("idx/t10k-images-idx3-ubyte.gz"));
        touch(&root.join("idx/t10k-labels-idx1-ubyte.gz"));
        touch(&root.join("idx/alone-images-idx3-ubyte"));
        touch(&root.join("tree/b/x.png"));
        touch(&root.join("tree/a/y.png"));
        touch(&root.join("tree/.git/z.png"));
        touch(&root.join("flat/imagenet_00_1.jpg"));
        touch(&root.join("flat/.checkpoints/imagenet_00_1.jpg"));

        let images = root.join("idx/t10k-images-idx3-ubyte.gz");
        assert_eq!(
            DataSource::resolve(&images).unwrap(),
            DataSource::Idx {
                images: images.clone(),
                labels: Some(root.join("idx/t10k-labels-idx1-ubyte.gz")),
            }
        );
        let alone = root.join("idx/alone-images-idx3-ubyte");
        assert_eq!(
            DataSource::detect(&alone).unwrap(),
            DataSource::Idx {
                images: alone.clone(),
                labels: None
            }
        );
        let tree = DataSource::detect(&root.join("tree")).unwrap();
        assert_eq!(tree, DataSource::ImageFolder(root.join("tree")));
        let own = tree.own_classes().unwrap();
        assert_eq!(
            (own.lookup("a"), own.lookup("b"), own.lookup(".git")),
            (Some(0), Some(1), None)
        );
        let flat = DataSource::detect(&root.join("flat")).unwrap();
        assert_eq!(flat, DataSource::LabelledFiles(root.join("flat")));
        assert_eq!(flat.items(&ClassMap::numbered(0)).unwrap()[0].label, Some(1));
        assert_eq!(flat.describe(), root.join("flat").display().to_string());
        assert!(DataSource::detect(&root.join("missing")).is_err());

        assert_eq!(
            named_class_names(Path::new("fashion-mnist:train")).unwrap()[9],
            "Ankle boot"
        );
        assert_eq!(named_class_names(Path::new("foolbox:imagenet")), None);
        assert!(NAMED_SETS.iter().all(|n| n.contains(':')));
    }
}
