//! The store key: 32 random bytes in a file that only its owner may read (the key type and the
//! derivations are `sqlkit::Key`).

use std::path::Path;

use super::{Error, Key};

/// Reads the store key file, refusing one that group or others could read.
/// `path` may also name a systemd credential (`credential:NAME`, see [`crate::secrets`]).
pub fn read_key(path: &Path) -> Result<Key, Error> {
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
    provisioning::secret::parse_key(&zeroize::Zeroizing::new(raw))
        .map(Key::from_bytes)
        .map_err(|reason| Error::KeyFile { path, reason })
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
        read_key(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(e.contains("640"), "{e}");
    }

    #[test]
    fn short_keys_are_refused() {
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
        assert!(read_key(&p)
            .unwrap_err()
            .to_string()
            .contains("64 hexadecimal"));
    }
}
