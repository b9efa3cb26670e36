//! The hub's own key (32 random bytes in an owner-only file) and the keys derived from it with
//! HKDF-SHA256: one per facility copy, one for the registry. A copy stolen with its key would
//! open only that facility.

use std::path::Path;

use ring::hkdf;

/// The hub's master key. `Debug` never shows it.
pub struct HubKey([u8; 32]);

impl std::fmt::Debug for HubKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubKey(..)")
    }
}

/// A derived 256-bit SQLCipher key.
#[derive(Clone)]
pub struct DbKey([u8; 32]);

impl std::fmt::Debug for DbKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbKey(..)")
    }
}

impl DbKey {
    /// The SQLCipher key literal: a raw key, so no passphrase derivation runs at open.
    pub fn literal(&self) -> String {
        format!("\"{}\"", self.raw_literal())
    }

    /// The raw key as SQLCipher reads it from a bound string: `x'…'`.
    pub fn raw_literal(&self) -> String {
        format!("x'{}'", shared::chain::hex(&self.0))
    }
}

impl HubKey {
    pub fn from_file(path: &Path) -> anyhow::Result<HubKey> {
        provisioning::secret::read_key(path)
            .map(HubKey)
            .map_err(|e| {
                anyhow::anyhow!(
                    "hub key {}: {e} (create one with `tsunagi-hub keygen --out FILE`)",
                    path.display()
                )
            })
    }

    pub fn from_bytes(b: [u8; 32]) -> HubKey {
        HubKey(b)
    }

    /// The key for `label`: `copy:<facility>` or `registry`.
    pub fn derive(&self, label: &str) -> DbKey {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tsunagi-hub-v1").extract(&self.0);
        let info = [label.as_bytes()];
        let mut out = [0u8; 32];
        prk.expand(&info, Len)
            .expect("32 bytes is a valid HKDF length")
            .fill(&mut out)
            .expect("fill 32 bytes");
        DbKey(out)
    }
}

/// Writes a new hub key file, owner-only, never overwriting.
pub fn generate(path: &Path) -> std::io::Result<()> {
    provisioning::secret::generate_key(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_per_facility_and_are_stable() {
        let k = HubKey::from_bytes([7; 32]);
        assert_eq!(k.derive("copy:3712345678").0, k.derive("copy:3712345678").0);
        assert_ne!(k.derive("copy:3712345678").0, k.derive("copy:3712345679").0);
        assert_ne!(
            HubKey::from_bytes([8; 32]).derive("registry").0,
            k.derive("registry").0
        );
        assert_eq!(format!("{:?}", k.derive("registry")), "DbKey(..)");
    }
}
