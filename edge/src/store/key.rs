//! The store key: 32 random bytes in a file that only its owner may read.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Error;

/// A 256-bit SQLCipher key. Never printed: `Debug` shows nothing of it.
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
    pub fn from_file(path: &Path) -> Result<Key, Error> {
        let fail = |reason: String| Error::KeyFile { path: path.to_owned(), reason };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("{e} (create one with `tsunagi-edge keygen --out {}`)", path.display())))?;
        if !meta.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "is readable by others than its owner (mode {mode:03o}); run `chmod 600 {}`",
                path.display()
            )));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(fail(format!(
                "belongs to user {}, not to the user running tsunagi-edge; run `chown $(id -u) {}`",
                meta.uid(),
                path.display()
            )));
        }
        let raw = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        let bytes = match shared::chain::unhex(text) {
            Some(b) if b.len() == 32 => b,
            _ if raw.len() == 32 => raw,
            _ => {
                return Err(fail(
                    "must hold 32 random bytes, written as 64 hexadecimal characters; create one with `tsunagi-edge keygen --out FILE`".into(),
                ))
            }
        };
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Ok(Key(k))
    }

    /// The SQLCipher statement that sets this key as a raw key (no passphrase derivation).
    pub(super) fn pragma(&self) -> String {
        format!("PRAGMA key = \"x'{}'\";", shared::chain::hex(&self.0))
    }
}

/// Writes a new random key to `path`, owner-only, refusing to overwrite an existing file.
pub fn generate_key_file(path: &Path) -> std::io::Result<()> {
    let k = provisioning::secret::random32();
    provisioning::secret::create(path, format!("{}\n", shared::chain::hex(&k)).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

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
        std::fs::OpenOptions::new().write(true).create(true).mode(0o600).open(&p).unwrap().write_all(b"secret").unwrap();
        assert!(Key::from_file(&p).unwrap_err().to_string().contains("64 hexadecimal"));
        assert_eq!(format!("{:?}", Key::from_bytes([0xAB; 32])), "Key(..)");
    }
}
