//! Applying what a scan found: the work for each file, and each batch of it in one transaction,
//! captured into one outbox segment, with the current version of each record kept in the
//! clinical tables.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;

use super::path::{self, StoredName};
use super::{derive, now, Derived, Summary};
use crate::outbox;
use crate::store::{sql, sql::Stat};

#[expect(
    clippy::large_enum_variant,
    reason = "one per file, moved once to the store thread; most are Content"
)]
pub(super) enum Work {
    /// New or changed bytes that parsed.
    Content {
        rel: String,
        name: StoredName,
        stat: Stat,
        raw: Vec<u8>,
        derived: Derived,
    },
    /// Bytes that cannot be taken in.
    Bad {
        rel: String,
        root: String,
        size: i64,
        mtime_ns: i64,
        raw: Option<Vec<u8>>,
        reason: String,
    },
    /// Same bytes as stored, back after being missing, or seen with a new inode or time.
    Restat { rel: String, stat: Stat },
    /// Stored, no longer in the tree.
    Gone { rel: String },
    /// Quarantined, no longer in the tree.
    Unquarantine { rel: String },
}

impl Work {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Work::Content { raw, .. } => raw.len(),
            Work::Bad { raw, .. } => raw.as_ref().map_or(0, Vec::len),
            _ => 0,
        }
    }
}

/// Counts from one applied batch.
#[derive(Default)]
pub(super) struct Outcome {
    ingested: u64,
    superseded: u64,
    deleted: u64,
    renamed: u64,
    quarantined: u64,
    rewritten_bad: u64,
    missing: u64,
    reappeared: u64,
    segment: bool,
}

impl Outcome {
    pub(super) fn add_to(self, s: &mut Summary) {
        s.ingested += self.ingested;
        s.superseded += self.superseded;
        s.deleted += self.deleted;
        s.renamed += self.renamed;
        s.quarantined += self.quarantined;
        s.missing += self.missing;
        s.reappeared += self.reappeared;
        s.segments += self.segment as u64;
        s.rewritten_unreadable += self.rewritten_bad;
    }
}

/// Applies one batch in one transaction, captured into one outbox segment.
pub(super) fn apply(
    conn: &Connection,
    batch: Vec<Work>,
    present: &HashSet<String>,
) -> rusqlite::Result<Outcome> {
    let t = now();
    let files = batch.len() as u64;
    let (mut out, seq) = outbox::capture(conn, files, &t, |c| -> rusqlite::Result<Outcome> {
        let mut out = Outcome::default();
        let mut touched: BTreeMap<String, StoredName> = BTreeMap::new();
        let mut fresh: HashMap<String, Derived> = HashMap::new();
        for w in batch {
            match w {
                Work::Content {
                    rel,
                    name,
                    stat,
                    raw,
                    derived,
                } => {
                    sql::unquarantine(c, &rel)?;
                    match sql::file_by_path(c, &rel)? {
                        Some(old) if old.sha256 == stat.sha256 => {
                            sql::set_missing(c, &rel, None)?;
                        }
                        Some(old) => {
                            sql::replace_content(c, old.id, &raw, &stat.sha256, &derived.header)?;
                            if old.is_current {
                                sql::delete_rows(c, old.id)?;
                                sql::insert_rows(c, old.id, &name.patient_id, &derived.rows)?;
                            }
                            out.ingested += 1;
                        }
                        None => {
                            if let Some(from) = renamed_from(c, &rel, &name, &stat.sha256, present)?
                            {
                                sql::rename_file(c, from.id, &rel, &name)?;
                                sql::delete_stat(c, &from.rel_path)?;
                                out.renamed += 1;
                            } else {
                                sql::insert_file(
                                    c,
                                    &rel,
                                    &name,
                                    &raw,
                                    &stat.sha256,
                                    &derived.header,
                                )?;
                                out.ingested += 1;
                            }
                            match name.flag {
                                0 => out.deleted += 1,
                                2 => out.superseded += 1,
                                _ => {}
                            }
                            fresh.insert(rel.clone(), derived);
                            touched.insert(key_of(&name), name);
                        }
                    }
                    sql::put_stat(c, &rel, &stat)?;
                }
                Work::Bad {
                    rel,
                    root,
                    size,
                    mtime_ns,
                    raw,
                    reason,
                } => {
                    let reason = match sql::file_by_path(c, &rel)? {
                        Some(_) => {
                            out.rewritten_bad += 1;
                            format!("{reason} (the file was rewritten in place; the version stored before is kept)")
                        }
                        None => reason,
                    };
                    tracing::warn!(path = %rel, %reason, "quarantined");
                    sql::quarantine(c, &rel, &root, &reason, size, mtime_ns, raw.as_deref(), &t)?;
                    out.quarantined += 1;
                }
                Work::Restat { rel, stat } => {
                    if sql::set_missing(c, &rel, None)? {
                        out.reappeared += 1;
                    }
                    sql::put_stat(c, &rel, &stat)?;
                }
                Work::Gone { rel } => {
                    if sql::set_missing(c, &rel, Some(&t))? {
                        out.missing += 1;
                    }
                    sql::delete_stat(c, &rel)?;
                }
                Work::Unquarantine { rel } => {
                    sql::unquarantine(c, &rel)?;
                }
            }
        }
        for name in touched.values() {
            refresh(c, name, &mut fresh)?;
        }
        Ok(out)
    })?;
    out.segment = seq.is_some();
    Ok(out)
}

/// The logical record a file is a version of.
fn key_of(n: &StoredName) -> String {
    if n.is_snapshot() {
        format!(
            "{}\u{1}{}\u{1}{}",
            n.storage.as_str(),
            n.patient_id,
            n.data_type
        )
    } else {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            n.storage.as_str(),
            n.patient_id,
            n.data_type,
            n.care_date.as_deref().unwrap_or("-"),
            n.order_no.as_deref().unwrap_or("-")
        )
    }
}

/// SS-MIX2 supersedes and deletes by renaming a file's flag. A new path whose bytes equal a stored
/// file that differs only in the flag, and that is no longer in the tree, is that file renamed.
fn renamed_from(
    c: &Connection,
    rel: &str,
    n: &StoredName,
    sha: &[u8],
    present: &HashSet<String>,
) -> rusqlite::Result<Option<sql::StoredFile>> {
    let flag_at = match n.storage {
        path::Storage::Standard => rel.len() - 1,
        path::Storage::Extended => n.version_path.len() - 1,
    };
    for f in [b'0', b'1', b'2'] {
        if rel.as_bytes()[flag_at] == f {
            continue;
        }
        let mut sibling = rel.as_bytes().to_vec();
        sibling[flag_at] = f;
        let sibling = String::from_utf8(sibling).expect("flag is ASCII");
        if present.contains(&sibling) {
            continue;
        }
        if let Some(old) = sql::file_by_path(c, &sibling)? {
            if old.sha256 == sha {
                return Ok(Some(old));
            }
        }
    }
    Ok(None)
}

/// Makes the newest flag-1 version of a record the one whose rows are in the clinical tables.
fn refresh(
    c: &Connection,
    name: &StoredName,
    fresh: &mut HashMap<String, Derived>,
) -> rusqlite::Result<()> {
    let versions = sql::versions(c, name)?;
    let winner = versions
        .iter()
        .filter(|v| v.flag == 1)
        .max_by(|a, b| (&a.issued_at, &a.version_path).cmp(&(&b.issued_at, &b.version_path)));
    let should = |v: &sql::StoredFile| {
        winner.is_some_and(|w| v.flag == 1 && v.version_path == w.version_path)
    };
    for v in versions.iter().filter(|v| v.is_current && !should(v)) {
        sql::delete_rows(c, v.id)?;
        sql::set_current(c, v.id, false)?;
    }
    for v in versions.iter().filter(|v| !v.is_current && should(v)) {
        let derived = match fresh.remove(&v.rel_path) {
            Some(d) => Some(d),
            None => {
                let raw = sql::raw(c, v.id)?;
                path::parse(&v.rel_path)
                    .ok()
                    .and_then(|n| derive(&n, &raw).ok())
            }
        };
        if let Some(d) = derived {
            sql::insert_rows(c, v.id, &name.patient_id, &d.rows)?;
        }
        sql::set_current(c, v.id, true)?;
    }
    Ok(())
}
