//! Files that hold secrets (keys, identities): created owner-only, and refused when group or
//! others could read them or when someone else owns them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads a secret file after checking that only its owner, the running user, can read it. The
/// error names the file, says what is wrong and gives the command that fixes it.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    check_and_read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// As `read`, with a reason that does not repeat the path (for errors that carry it already).
pub fn check_and_read(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "is readable by others than its owner (mode {mode:03o}); run `chmod 600 {}`",
            path.display()
        ));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "belongs to user {}, not to the user running tsunagi; run `chown $(id -u) {}`",
            meta.uid(),
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Reads a 256-bit key from an owner-only file: 64 hexadecimal characters (as `keygen` writes
/// them), or 32 raw bytes. The reason on failure does not repeat the path.
pub fn read_key(path: &Path) -> Result<[u8; 32], String> {
    parse_key(&zeroize::Zeroizing::new(check_and_read(path)?))
}

/// A key's bytes as [`read_key`] accepts them (for secrets whose file systemd guards, such as a
/// credential in the service's private, RAM-only credentials folder).
pub fn parse_key(raw: &[u8]) -> Result<[u8; 32], String> {
    let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
    match shared::chain::unhex(text).map(zeroize::Zeroizing::new) {
        Some(b) if b.len() == 32 => Ok(b[..].try_into().expect("32 bytes")),
        _ if raw.len() == 32 => Ok(raw.try_into().expect("32 bytes")),
        _ => Err("must hold 32 random bytes, written as 64 hexadecimal characters".into()),
    }
}

/// Writes a new random 256-bit key to `path` as hexadecimal, owner-only, never overwriting.
pub fn generate_key(path: &Path) -> std::io::Result<()> {
    create(
        path,
        format!("{}\n", shared::chain::hex(&random32())).as_bytes(),
    )
}

/// Writes `bytes` to `path` owner-only and durably: to a temporary file in the same folder,
/// fsynced, then renamed over `path`, then the folder fsynced. A power cut leaves either the old
/// file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `path` owner-only with `bytes`, refusing to overwrite anything.
pub fn create(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// 32 bytes from the system's random source.
pub fn random32() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .expect("the system random source failed");
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_files_read_back_and_loose_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        create(&p, b"abc").unwrap();
        assert!(create(&p, b"x").is_err());
        assert_eq!(read(&p).unwrap(), b"abc");
        write_atomic(&p, b"def", 0o600).unwrap();
        assert_eq!(read(&p).unwrap(), b"def");
        assert!(read_key(&p).unwrap_err().contains("64 hexadecimal"));
        let k = dir.path().join("key");
        generate_key(&k).unwrap();
        assert!(generate_key(&k).is_err(), "must not overwrite a key");
        assert_ne!(read_key(&k).unwrap(), [0; 32]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
    }
}
