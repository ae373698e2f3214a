//! (in progress)

/// Placeholder error, replaced by the real module.
#[derive(Debug, thiserror::Error)]
#[error("unimplemented")]
pub struct RuntimeError;
