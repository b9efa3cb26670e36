//! Snapshots of a facility's copy, point-in-time restore plans, and the restore stream a
//! replacement appliance reads: the newest snapshot at or before the target, then the contiguous
//! archived segments up to it. A plan that would have to cross a gap is refused.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use shared::chain;
use shared::changeset::{Value, Writer};
use shared::wire::{Frame, RESTORE_MAGIC};

use crate::copy::{self, Position};
use crate::key::Key;

/// Changeset bytes per snapshot frame before compression.
const CHUNK: usize = 8 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub seq: u64,
    #[serde(skip)]
    pub hash: [u8; 32],
    /// When the segment it ends with was captured on the appliance.
    pub captured_at: Option<String>,
    pub path: PathBuf,
    pub bytes: u64,
}

fn name(seq: u64) -> String {
    format!("{seq:012}.db")
}

/// Opens a snapshot read-only.
pub fn open(path: &Path, key: &Key) -> anyhow::Result<Connection> {
    crate::db::open_read_only(path, key, shared::schema::MIGRATIONS)
        .with_context(|| format!("cannot open snapshot {}", path.display()))
}

/// The snapshots held for a copy, oldest first.
pub fn list(dir: &Path, key: &Key) -> anyhow::Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let e = e?;
        let n = e.file_name().to_string_lossy().to_string();
        let Some(seq) = n.strip_suffix(".db").and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let c = open(&e.path(), key)?;
        let pos = copy::position(&c)
            .with_context(|| format!("snapshot {} cannot be read", e.path().display()))?;
        if pos.seq != seq {
            anyhow::bail!(
                "snapshot {} holds position {}, not {seq}",
                e.path().display(),
                pos.seq
            );
        }
        let captured_at = c
            .query_row(
                "SELECT created_at FROM outbox WHERE seq = ?1",
                [seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        out.push(Snapshot {
            seq,
            hash: pos.hash,
            captured_at,
            path: e.path(),
            bytes: e.metadata()?.len(),
        });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Takes a snapshot of the copy at its current head into `dir`, unless one exists at that head.
/// Written to a temporary file, synced, then renamed: a crash leaves no half snapshot.
pub fn take(conn: &Connection, dir: &Path, key: &Key) -> anyhow::Result<Option<Position>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pos = copy::position(conn)?;
    if pos.seq == 0 || dir.join(name(pos.seq)).exists() {
        return Ok(None);
    }
    let tmp = dir.join(format!(".{}.tmp", name(pos.seq)));
    let _ = std::fs::remove_file(&tmp);
    conn.execute(
        "ATTACH DATABASE ?1 AS snap KEY ?2",
        rusqlite::params![tmp.to_string_lossy(), key.raw_literal().as_str()],
    )?;
    let result = (|| -> anyhow::Result<Position> {
        conn.execute_batch("BEGIN")?;
        let inner = (|| -> anyhow::Result<Position> {
            let pos = copy::position(conn)?;
            conn.query_row("SELECT sqlcipher_export('snap')", [], |_| Ok(()))?;
            conn.execute("DELETE FROM snap.outbox WHERE seq < ?1", [pos.seq as i64])?;
            let v: i64 = conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
            conn.execute_batch(&format!("PRAGMA snap.user_version = {v};"))?;
            Ok(pos)
        })();
        conn.execute_batch(if inner.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        let pos = inner?;
        conn.execute_batch("VACUUM snap")?;
        Ok(pos)
    })();
    conn.execute_batch("DETACH DATABASE snap")?;
    let pos = result?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name(pos.seq)))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Some(pos))
}

/// Keeps the newest `keep` snapshots, deletes the rest, and returns the oldest kept snapshot's
/// number: archived segments at or below it are no longer needed.
pub fn retain(dir: &Path, key: &Key, keep: usize) -> anyhow::Result<Option<u64>> {
    let all = list(dir, key)?;
    let cut = all.len().saturating_sub(keep.max(1));
    for s in &all[..cut] {
        std::fs::remove_file(&s.path)
            .with_context(|| format!("cannot delete {}", s.path.display()))?;
    }
    Ok(all.get(cut).map(|s| s.seq))
}

/// Where to restore to.
#[derive(Debug, Clone)]
pub enum Target {
    Head,
    Seq(u64),
    /// An RFC 3339 time: the last segment captured at or before it.
    Time(String),
}

/// What a restore will do, printed by `--dry-run`.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub snapshot: Option<Snapshot>,
    pub base_seq: u64,
    #[serde(skip)]
    pub base_hash: [u8; 32],
    /// Segments applied after the snapshot: first and last number, count, compressed bytes.
    pub segments: u64,
    pub first_segment: Option<u64>,
    pub segment_bytes: u64,
    pub to_seq: u64,
    pub to_hash: String,
    pub to_captured_at: Option<String>,
    pub head: Position,
    /// What exists in the copy after the target and will not be in the restored store.
    pub lost_segments: u64,
    pub lost_files: u64,
    pub lost_from: Option<String>,
    pub lost_to: Option<String>,
}

type Stat = (u64, u64, Option<String>, Option<String>);

fn range_stats(conn: &Connection, after: u64, upto: u64) -> rusqlite::Result<Stat> {
    conn.query_row(
        "SELECT count(*), coalesce(sum(length(body)), 0), min(created_at), max(created_at) FROM outbox WHERE seq > ?1 AND seq <= ?2",
        [after as i64, upto as i64],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?)),
    )
}

/// Works out the plan for `target` from the copy's archive and its snapshots.
pub fn plan(conn: &Connection, dir: &Path, key: &Key, target: &Target) -> anyhow::Result<Plan> {
    let head = copy::position(conn)?;
    let snaps = list(dir, key)?;
    let to_seq = match target {
        Target::Head => head.seq,
        Target::Seq(n) if *n > head.seq => anyhow::bail!(
            "the copy reaches only segment {}; cannot restore to {n}",
            head.seq
        ),
        Target::Seq(n) => *n,
        Target::Time(t) => {
            let archived: Option<i64> = conn.query_row(
                "SELECT max(seq) FROM outbox WHERE created_at <= ?1",
                [t],
                |r| r.get(0),
            )?;
            let snap = snaps
                .iter()
                .rev()
                .find(|s| s.captured_at.as_deref().is_some_and(|c| c <= t.as_str()))
                .map(|s| s.seq);
            match (archived.map(|a| a as u64), snap) {
                (None, None) => anyhow::bail!("nothing held was captured at or before {t}"),
                (a, s) => a.unwrap_or(0).max(s.unwrap_or(0)),
            }
        }
    };
    let snapshot = snaps.into_iter().rev().find(|s| s.seq <= to_seq);
    let (base_seq, base_hash) = snapshot
        .as_ref()
        .map(|s| (s.seq, s.hash))
        .unwrap_or((0, shared::chain::GENESIS));
    let (n, bytes, _, _) = range_stats(conn, base_seq, to_seq)?;
    if n != to_seq - base_seq {
        let first: Option<i64> = conn.query_row("SELECT min(seq) FROM outbox", [], |r| r.get(0))?;
        anyhow::bail!(
            "cannot restore to {to_seq}: segments after {base_seq} are no longer held (the archive starts at {}); choose a point at or after the oldest snapshot",
            first.map(|f| f.to_string()).unwrap_or_else(|| "nothing".into())
        );
    }
    let (to_hash, to_captured_at) = if to_seq == base_seq {
        (
            base_hash,
            snapshot.as_ref().and_then(|s| s.captured_at.clone()),
        )
    } else {
        conn.query_row(
            "SELECT hash, created_at FROM outbox WHERE seq = ?1",
            [to_seq as i64],
            |r| {
                let hash = chain::stored_hash(to_seq as i64, "hash", &r.get::<_, Vec<u8>>(0)?)
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Blob,
                            Box::new(e),
                        )
                    })?;
                Ok((hash, r.get(1)?))
            },
        )?
    };
    let (lost_segments, _, lost_from, lost_to) = range_stats(conn, to_seq, head.seq)?;
    let lost_files: i64 = conn.query_row(
        "SELECT coalesce(sum(files), 0) FROM outbox WHERE seq > ?1",
        [to_seq as i64],
        |r| r.get(0),
    )?;
    Ok(Plan {
        snapshot,
        base_seq,
        base_hash,
        segments: n,
        first_segment: (n > 0).then_some(base_seq + 1),
        segment_bytes: bytes,
        to_seq,
        to_hash: shared::chain::hex(&to_hash),
        to_captured_at,
        head,
        lost_segments,
        lost_files: lost_files as u64,
        lost_from,
        lost_to,
    })
}

impl Plan {
    /// The plan as the API sends it (`shared::api::Plan`), with the copy's schema version; the
    /// snapshot's path on the hub stays on the hub.
    pub fn wire(&self, schema: u32) -> shared::api::Plan {
        shared::api::Plan {
            snapshot: self.snapshot.as_ref().map(|s| shared::api::PlanSnapshot {
                seq: s.seq,
                captured_at: s.captured_at.clone(),
                bytes: s.bytes,
            }),
            base_seq: self.base_seq,
            segments: self.segments,
            first_segment: self.first_segment,
            segment_bytes: self.segment_bytes,
            to_seq: self.to_seq,
            to_hash: self.to_hash.clone(),
            to_captured_at: self.to_captured_at.clone(),
            head: shared::api::PlanHead {
                seq: self.head.seq,
                hash: shared::chain::hex(&self.head.hash),
            },
            lost_segments: self.lost_segments,
            lost_files: self.lost_files,
            lost_from: self.lost_from.clone(),
            lost_to: self.lost_to.clone(),
            schema,
        }
    }
}

/// Writes the restore stream for `plan` through `send`, which returns false when the receiver
/// has gone. `conn` is a reader on the copy, not the copy's writer.
pub fn stream(
    conn: &Connection,
    plan: &Plan,
    key: &Key,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> anyhow::Result<()> {
    let mut head = RESTORE_MAGIC.to_vec();
    head.extend_from_slice(&plan.base_seq.to_be_bytes());
    head.extend_from_slice(&plan.base_hash);
    if !send(head) {
        return Ok(());
    }
    if let Some(s) = &plan.snapshot {
        let snap = open(&s.path, key)?;
        let mut w = Writer::new();
        let mut flush = |w: &mut Writer| -> anyhow::Result<bool> {
            let raw = w.take();
            let body = zstd::bulk::compress(&raw, 3)?;
            let mut out = Vec::with_capacity(body.len() + 9);
            Frame::Snapshot {
                raw_len: raw.len(),
                body,
            }
            .encode(&mut out);
            Ok(send(out))
        };
        for table in shared::schema::SYNCED_TABLES {
            let pk: Vec<u8> = snap
                .prepare(&format!(
                    "SELECT pk FROM pragma_table_info('{table}') ORDER BY cid"
                ))?
                .query_map([], |r| r.get::<_, u8>(0))?
                .collect::<Result<_, _>>()?;
            let mut st = snap.prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))?;
            let mut rows = st.query([])?;
            let mut started = false;
            while let Some(r) = rows.next()? {
                if !started {
                    w.table(table, &pk);
                    started = true;
                }
                let mut vals = Vec::with_capacity(pk.len());
                for i in 0..pk.len() {
                    vals.push(match r.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Integer(v),
                        ValueRef::Real(v) => Value::Real(v),
                        ValueRef::Text(t) => Value::Text(t),
                        ValueRef::Blob(b) => Value::Blob(b),
                    });
                }
                w.insert(&vals);
                if w.len() >= CHUNK {
                    if !flush(&mut w)? {
                        return Ok(());
                    }
                    started = false;
                }
            }
        }
        if !w.is_empty() && !flush(&mut w)? {
            return Ok(());
        }
    }
    let mut after = plan.base_seq;
    while after < plan.to_seq {
        let segs = copy::archived(conn, after, plan.to_seq.min(after + 256))?;
        if segs.is_empty() {
            anyhow::bail!(
                "segment {} vanished from the archive during the restore",
                after + 1
            );
        }
        for s in segs {
            after = s.seq;
            let mut out = Vec::with_capacity(s.wire_len() + 1);
            Frame::Segment(s).encode(&mut out);
            if !send(out) {
                return Ok(());
            }
        }
    }
    let mut end = Vec::new();
    let to_hash: [u8; 32] = shared::chain::unhex(&plan.to_hash)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the plan's target hash {:?} is not 32 bytes of hex",
                plan.to_hash
            )
        })?;
    Frame::End {
        seq: plan.to_seq,
        hash: to_hash,
    }
    .encode(&mut end);
    send(end);
    Ok(())
}
