//! The ImageNet-1k classes and the 200-class subsets of ImageNet-A and ImageNet-R.
//!
//! The class lists are data (`data::imagenet`, shared with the data set readers that name
//! folders by wnid); they are re-exported here under the evaluator's paths. ImageNet-A and
//! ImageNet-R are scored by keeping only their 200 logits ([`ClassSubset::restrict`]) and
//! taking the argmax among them.

pub use data::imagenet::{
    ClassSubset, IMAGENET_CLASSES, imagenet_a, imagenet_index, imagenet_names, imagenet_r, imagenet_wnids,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_keeps_the_subset_logits_in_order() {
        let logits: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let a = imagenet_a();
        let r = a.restrict(&logits);
        assert_eq!(r.len(), 200);
        assert_eq!(r[..3], [6.0, 11.0, 13.0]);
        assert!(r.iter().zip(&a.indices).all(|(&v, &i)| v == i as f32));
        // The argmax among the subset can differ from the full argmax.
        let mut l = vec![0.0f32; 1000];
        l[0] = 9.0; // not an ImageNet-A class
        l[11] = 5.0;
        assert_eq!(crate::metrics::top1(&l), Some(0));
        assert_eq!(crate::metrics::top1(&a.restrict(&l)), Some(1));
        assert_eq!(a.restrict(&[1.0; 10])[5], f32::NEG_INFINITY);
    }
}
