//! The store key: 32 random bytes in a file that only its owner may read.

use std::path::Path;

use super::Error;

/// A 256-bit SQLCipher key. Never printed: `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn from_bytes(b: [u8; 32]) -> Key {
        Key(b)
    }

    /// Reads the key file, refusing one that group or others could read.
    /// `path` may also name a systemd credential (`credential:NAME`, see [`crate::secrets`]).
    pub fn from_file(path: &Path) -> Result<Key, Error> {
        let (path, raw) = crate::secrets::read(path).map_err(|(p, reason)| {
            let hint = if p.as_path() == path
                && !p.exists()
                && !p.to_string_lossy().starts_with(crate::secrets::CREDENTIAL)
            {
                " (create one with `tsunagi-edge keygen --out FILE`)"
            } else {
                ""
            };
            Error::KeyFile {
                path: p,
                reason: format!("{reason}{hint}"),
            }
        })?;
        provisioning::secret::parse_key(&raw)
            .map(Key)
            .map_err(|reason| Error::KeyFile { path, reason })
    }

    /// The SQLCipher statement that sets this key as a raw key (no passphrase derivation).
    pub(crate) fn pragma(&self) -> String {
        format!("PRAGMA key = \"x'{}'\";", shared::chain::hex(&self.0))
    }

    /// A key for another file, derived with HMAC-SHA256 under `label`, so no two files share one.
    pub fn derive(&self, label: &str) -> Key {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let tag = ring::hmac::sign(&k, label.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Key(out)
    }
}

/// Writes a new random key to `path`, owner-only, refusing to overwrite an existing file.
pub fn generate_key_file(path: &Path) -> std::io::Result<()> {
    provisioning::secret::generate_key(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    #[test]
    fn generated_key_reads_back_and_loose_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate_key_file(&p).unwrap();
        assert!(generate_key_file(&p).is_err(), "must not overwrite a key");
        Key::from_file(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Key::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(e.contains("640"), "{e}");
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .unwrap()
            .write_all(b"secret")
            .unwrap();
        assert!(Key::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("64 hexadecimal"));
        assert_eq!(format!("{:?}", Key::from_bytes([0xAB; 32])), "Key(..)");
    }
}
