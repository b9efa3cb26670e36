//! Writes the stored SS-MIX2 tree back out, byte for byte: what a replacement EMR is given after
//! the original was lost. Every file's bytes are checked against their stored hash on the way.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use rusqlite::Connection;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Exported {
    pub files: u64,
    pub bytes: u64,
}

fn empty_target(to: &Path) -> anyhow::Result<()> {
    if to.exists()
        && std::fs::read_dir(to)
            .with_context(|| format!("cannot read {}", to.display()))?
            .next()
            .is_some()
    {
        bail!("{} is not empty: export into a new or empty folder, so no existing file is overwritten", to.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))
}

/// Exports every stored file (all versions, including those missing at the source): standard
/// storage below `to`, extended storage below `extended_to`. Both must be absent or empty.
pub fn export(
    conn: &Connection,
    to: &Path,
    extended_to: Option<&Path>,
) -> anyhow::Result<Exported> {
    let extended: i64 = conn.query_row(
        "SELECT count(*) FROM source_file WHERE storage = 'extended'",
        [],
        |r| r.get(0),
    )?;
    if extended > 0 && extended_to.is_none() {
        bail!("the store holds {extended} extended-storage files: name a folder for them with --extended-to");
    }
    empty_target(to)?;
    if let Some(x) = extended_to.filter(|_| extended > 0) {
        empty_target(x)?;
    }
    let mut out = Exported::default();
    let mut st =
        conn.prepare("SELECT rel_path, raw, sha256, storage FROM source_file ORDER BY rel_path")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let rel: String = r.get(0)?;
        let raw: Vec<u8> = r.get(1)?;
        let sha: Vec<u8> = r.get(2)?;
        let storage: String = r.get(3)?;
        let to = if storage == "extended" {
            extended_to.expect("checked above")
        } else {
            to
        };
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("stored path {rel:?} is not a plain relative path; refusing to write it");
        }
        if shared::chain::content_hash(&raw)[..] != sha[..] {
            bail!("stored file {rel} does not match its hash: the store is damaged; run `tsunagi-edge status` and restore from the hub");
        }
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        f.write_all(&raw)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        out.files += 1;
        out.bytes += raw.len() as u64;
    }
    Ok(out)
}
