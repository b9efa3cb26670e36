//! The hub's own key (32 random bytes in an owner-only file). Every database the hub writes is
//! keyed with one derived from it ([`Key::derive`]): one per facility copy, one for the
//! registry, the region and the fleet, so a copy stolen with its key opens only that facility.

use std::path::Path;

pub use sqlkit::Key;

/// Reads the hub key file, refusing one that group or others could read.
pub fn read(path: &Path) -> anyhow::Result<Key> {
    provisioning::secret::read_key(path)
        .map(Key::from_bytes)
        .map_err(|e| {
            anyhow::anyhow!(
                "hub key {}: {e} (create one with `tsunagi-hub keygen --out FILE`)",
                path.display()
            )
        })
}

/// Writes a new hub key file, owner-only, never overwriting.
pub fn generate(path: &Path) -> std::io::Result<()> {
    provisioning::secret::generate_key(path)
}
