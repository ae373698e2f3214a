//! AutoAttack (Croce & Hein 2020) on any ONNX classifier: APGD-CE, APGD-T, FAB-T and Square,
//! run in the reference package's order on the points each previous attack left robust.
//!
//! The reference (`autoattack`, fra31/auto-attack) needs a PyTorch model; these attacks need
//! only [`Classifier`]: logits, and the pixel gradient of one of a few losses on the logits,
//! which [`crate::attack::Attacker`] computes with the gradient graph in ONNX Runtime. Each
//! attack is a port of the reference's algorithm and defaults; the randomness is ours
//! (seeded), so results match the reference in distribution, not bit for bit.
//!
//! Files:
//! - `classifier`: [`Classifier`], [`Loss`], [`LossGrad`], [`ImageShape`], [`Norm`].
//! - `apgd`: APGD on cross-entropy, DLR and targeted DLR (APGD-CE, APGD-T).
//! - `fab`: FAB-T; `fab_projections`: its L-inf and L2 projections.
//! - `square`: the Square attack (scores only).
//! - `options`: the `autoattack` suite's options and the per-image records it stores.
//! - `run`: the sequence ([`evaluate`], one attack at a time with [`run_attack`]) and the
//!   reference's model checks.

mod apgd;
mod classifier;
mod fab;
mod fab_projections;
mod options;
mod run;
mod square;

pub use apgd::{ApgdConfig, ApgdOutcome, apgd, apgd_targeted};
pub use classifier::{Classifier, ImageShape, Loss, LossGrad, Norm, argmax, loss_and_dz};
pub use fab::{FabConfig, fab_targeted};
pub use options::{AutoAttackOptions, RobustSample, Version, write_png};
pub use run::{
    AttackName, AttackRun, AutoAttackConfig, AutoAttackResult, ModelChecks, check_model, evaluate, run_attack,
    square_beat_white_box,
};
pub use square::{SquareConfig, square};
