//! ImageNet-P: perturbation sequences ([`sequence`], from `hardy-corrupt`) and a reader of the
//! released videos ([`read_video`]).
//!
//! The sequences need no engine and live in the crate `hardy-corrupt` (re-exported here, so
//! `eval::perturb::sequence` and the rest keep their paths). Reading the released mp4 files is
//! here because it decodes H.264 (OpenH264, built from source) and, for the released High
//! 4:4:4 streams, runs the ffmpeg the engine provisions; its errors are [`PerturbError`]s.

pub use ::corrupt::perturb::*;

mod video;

pub use video::read_video;

#[cfg(test)]
mod tests;
