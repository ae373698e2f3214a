//! The ImageNet-1k classes and the 200-class subsets of ImageNet-A and ImageNet-R.
//!
//! Folders of ImageNet data sets are named by WordNet id; reading them needs the 1000 wnids in
//! class-index order (and their lemmas, for folders named by label). ImageNet-A and ImageNet-R
//! hold images of 200 of the 1000 classes; a 1000-class model is evaluated on them by keeping
//! only those 200 logits and taking the argmax among them. The class lists are data in the
//! repository, extracted from the `timm` wheel by `scripts/extract_imagenet_classes.py` into
//! `data/classes/` (where the script writes them) and compiled in, so no download is needed.

use std::sync::OnceLock;

const IMAGENET_SYNSETS: &str = include_str!("../classes/imagenet_synsets.txt");
const IMAGENET_LEMMAS: &str = include_str!("../classes/imagenet_lemmas.txt");
const IMAGENET_A_SYNSETS: &str = include_str!("../classes/imagenet_a_synsets.txt");
const IMAGENET_A_INDICES: &str = include_str!("../classes/imagenet_a_indices.txt");
const IMAGENET_R_SYNSETS: &str = include_str!("../classes/imagenet_r_synsets.txt");
const IMAGENET_R_INDICES: &str = include_str!("../classes/imagenet_r_indices.txt");

/// The number of ImageNet-1k classes.
pub const IMAGENET_CLASSES: usize = 1000;

fn lines(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// The 1000 ImageNet-1k WordNet ids (`n01440764`, ...), in class-index order (the sorted
/// training folder names, the order torchvision-trained models use).
pub fn imagenet_wnids() -> &'static [String] {
    static WNIDS: OnceLock<Vec<String>> = OnceLock::new();
    WNIDS.get_or_init(|| lines(IMAGENET_SYNSETS).map(String::from).collect())
}

/// The 1000 classes' WordNet lemmas (`tench, Tinca tinca`, ...), in class-index order. Not all
/// unique (two classes are called `crane`).
pub fn imagenet_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| lines(IMAGENET_LEMMAS).map(String::from).collect())
}

/// The class index of an ImageNet-1k wnid, `None` if it is not one of the 1000.
pub fn imagenet_index(wnid: &str) -> Option<usize> {
    imagenet_wnids().iter().position(|w| w == wnid)
}

/// A subset of the ImageNet-1k classes: the classes of a data set such as ImageNet-A.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSubset {
    /// The data set's name, e.g. `imagenet-a`.
    pub name: &'static str,
    /// The subset's wnids, in subset order (ascending class index).
    pub wnids: Vec<String>,
    /// Each subset class's index among the 1000, same order.
    pub indices: Vec<usize>,
}

fn subset(name: &'static str, synsets: &'static str, indices: &'static str) -> ClassSubset {
    ClassSubset {
        name,
        wnids: lines(synsets).map(String::from).collect(),
        // The files are checked by the tests below; a line that is not a number cannot occur in
        // the compiled-in data, and would be dropped rather than panic.
        indices: lines(indices).filter_map(|l| l.parse().ok()).collect(),
    }
}

/// ImageNet-A's 200 classes (Hendrycks et al., "Natural Adversarial Examples").
pub fn imagenet_a() -> ClassSubset {
    subset("imagenet-a", IMAGENET_A_SYNSETS, IMAGENET_A_INDICES)
}

/// ImageNet-R's 200 classes (Hendrycks et al., "The Many Faces of Robustness").
pub fn imagenet_r() -> ClassSubset {
    subset("imagenet-r", IMAGENET_R_SYNSETS, IMAGENET_R_INDICES)
}

impl ClassSubset {
    /// Number of classes in the subset.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the subset has no classes.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The logits of the subset's classes, in subset order, from a row of 1000-class logits. An
    /// index beyond the row gives negative infinity (never predicted).
    pub fn restrict(&self, logits: &[f32]) -> Vec<f32> {
        self.indices
            .iter()
            .map(|&i| logits.get(i).copied().unwrap_or(f32::NEG_INFINITY))
            .collect()
    }

    /// The position within the subset of a class given by its ImageNet-1k index.
    pub fn position_of_index(&self, index: usize) -> Option<usize> {
        self.indices.iter().position(|&i| i == index)
    }

    /// The position within the subset of a wnid.
    pub fn position_of_wnid(&self, wnid: &str) -> Option<usize> {
        self.wnids.iter().position(|w| w == wnid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn imagenet_lists_are_complete_and_distinct() {
        let wnids = imagenet_wnids();
        assert_eq!(wnids.len(), IMAGENET_CLASSES);
        assert_eq!(wnids.iter().collect::<HashSet<_>>().len(), 1000);
        assert!(wnids.iter().all(|w| w.len() == 9 && w.starts_with('n')));
        // Class-index order is the sorted folder order.
        assert!(wnids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(wnids[0], "n01440764");
        assert_eq!(wnids[999], "n15075141");
        let names = imagenet_names();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench, Tinca tinca");
        assert!(names[207].starts_with("golden retriever"), "{}", names[207]);
        assert_eq!(imagenet_index("n01443537"), Some(1));
        assert_eq!(imagenet_index("n00000000"), None);
    }

    #[test]
    fn subsets_are_200_valid_sorted_and_consistent() {
        for s in [imagenet_a(), imagenet_r()] {
            assert_eq!((s.len(), s.wnids.len()), (200, 200), "{}", s.name);
            assert!(s.indices.windows(2).all(|w| w[0] < w[1]), "{}", s.name);
            assert!(s.indices.iter().all(|&i| i < 1000));
            for (w, &i) in s.wnids.iter().zip(&s.indices) {
                assert_eq!(&imagenet_wnids()[i], w, "{}", s.name);
            }
        }
        assert_ne!(imagenet_a().indices, imagenet_r().indices);
        // ImageNet-A starts with the goldfinch (class 11 is n01531178 at position 1).
        let a = imagenet_a();
        assert_eq!(a.indices[..3], [6, 11, 13]);
        assert_eq!(a.position_of_wnid("n01531178"), Some(1));
        assert_eq!(a.position_of_index(13), Some(2));
        assert_eq!(a.position_of_index(0), None);
    }
}
