//! Class maps: which class index a folder name stands for.
//!
//! The same ImageFolder tree can be named by ImageNet wnid, by the model's labels or by class
//! number, and ImageNet-A/R folders by the wnids of a 200-class subset; a [`ClassMap`] says how
//! the folder names of one listing are read.

use std::collections::HashMap;

use crate::imagenet::{ClassSubset, imagenet_names, imagenet_wnids};

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
    pub(crate) skip_unknown: bool,
    pub(crate) description: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn imagenet_labels() -> Vec<String> {
        imagenet_names().to_vec()
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
        let a = crate::imagenet::imagenet_a();
        let m = ClassMap::with_subset(&a);
        assert_eq!(m.lookup(&a.wnids[0]), Some(0));
        assert_eq!(m.lookup(&a.wnids[199]), Some(199));
        assert_eq!(m.lookup("n01440764"), None); // class 0 is not in ImageNet-A
        assert_eq!(m.lookup("0"), None);
        assert_eq!(ClassMap::numbered(3).lookup("2"), Some(2));
    }
}
