//! The 19 ImageNet-C corruptions (crate `hardy-corrupt`, re-exported here) and the frost
//! textures they need, fetched through the engine's provisioning.
//!
//! The corruptions themselves need no engine and live in `hardy-corrupt`; everything public
//! there is re-exported, so `eval::corrupt::Corruptor`, `eval::corrupt::ops` and the rest keep
//! their paths. What is added here is what needs the engine: [`FrostSource::Provisioned`],
//! which downloads the reference's frost textures (PyPI `imagecorruptions`, [`FROST_WHEEL`])
//! into Hardy's cache on first use.

use std::path::PathBuf;

pub use ::corrupt::{CorruptError, Corruptor, FrostTextures, FrostWheel, HuffmanTables, jpeg_encode, ops};
use engine::provision::{ProvisionError, WheelSpec, cache_root, ensure_unpacked};

/// The wheel whose `imagecorruptions/frost/` holds the frost textures
/// ([`::corrupt::FROST_WHEEL`], as the engine's provisioning takes it).
pub const FROST_WHEEL: WheelSpec = WheelSpec {
    name: ::corrupt::FROST_WHEEL.name,
    version: ::corrupt::FROST_WHEEL.version,
    platform: None,
};

/// Where the frost textures come from; give it to [`Corruptor::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrostSource {
    /// A directory of `frost*.png` / `frost*.jpg` images (e.g. the reference's frost1..frost6,
    /// of which the first five are used, as the reference draws them).
    Dir(PathBuf),
    /// The textures of the `imagecorruptions` wheel, fetched by [`provision_frost`].
    Provisioned,
}

impl FrostTextures for FrostSource {
    fn frost_dir(self) -> Result<PathBuf, CorruptError> {
        match self {
            FrostSource::Dir(dir) => Ok(dir),
            FrostSource::Provisioned => provision_frost().map_err(|e| CorruptError::Provision(Box::new(e))),
        }
    }
}

/// Fetches the frost textures of the PyPI `imagecorruptions` wheel ([`FROST_WHEEL`]) into
/// Hardy's cache (once) and returns their directory.
pub fn provision_frost() -> Result<PathBuf, ProvisionError> {
    let dest = cache_root().join(::corrupt::FROST_WHEEL.cache_dir_name());
    ensure_unpacked(&FROST_WHEEL, &dest, FrostWheel::member_path)
}
