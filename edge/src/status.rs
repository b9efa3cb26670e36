//! What the store holds, for `tsunagi-edge status`: rows per table, files by state, the
//! quarantine with each file's reason, alarms, and the outbox position.

use rusqlite::Connection;
use serde::Serialize;

use crate::outbox;

#[derive(Debug, Serialize)]
pub struct Status {
    pub schema_version: i64,
    pub tables: Vec<(String, i64)>,
    pub files: Files,
    pub quarantine: Vec<Quarantined>,
    /// Stored files whose decoding or mapping needed leniency (the first 50).
    pub warnings: Vec<Warned>,
    pub alarms: Vec<Alarm>,
    pub outbox: Outbox,
    pub hub: Hub,
}

/// The hub's copy as last acknowledged, and what is still to send.
#[derive(Debug, Serialize)]
pub struct Hub {
    pub seq: u64,
    pub hash: String,
    pub acked_at: Option<String>,
    /// Segments the hub does not hold yet, and their compressed bytes.
    pub backlog: u64,
    pub backlog_bytes: i64,
    pub last_attempt: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Files {
    pub current: i64,
    pub superseded: i64,
    pub deleted: i64,
    pub not_current: i64,
    pub missing_at_source: i64,
    pub with_warnings: i64,
}

#[derive(Debug, Serialize)]
pub struct Quarantined {
    pub path: String,
    pub reason: String,
    pub size: i64,
    pub first_seen: String,
    pub last_tried: String,
}

#[derive(Debug, Serialize)]
pub struct Warned {
    pub path: String,
    pub warnings: String,
}

#[derive(Debug, Serialize)]
pub struct Alarm {
    pub at: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Outbox {
    /// The newest segment: its number and hash.
    pub seq: u64,
    pub hash: String,
    /// Segments still held (not yet pruned), their first number and compressed bytes.
    pub held: i64,
    pub first_held: Option<u64>,
    pub bytes: i64,
}

pub fn read(conn: &Connection) -> rusqlite::Result<Status> {
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let (seq, hash) = outbox::head(conn)?;
    let mut q = conn.prepare(
        "SELECT rel_path, reason, size, first_seen, last_tried FROM quarantine ORDER BY rel_path",
    )?;
    let quarantine = q
        .query_map([], |r| {
            Ok(Quarantined {
                path: r.get(0)?,
                reason: r.get(1)?,
                size: r.get(2)?,
                first_seen: r.get(3)?,
                last_tried: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut w = conn.prepare("SELECT rel_path, decode_warnings FROM source_file WHERE decode_warnings IS NOT NULL ORDER BY rel_path LIMIT 50")?;
    let warnings = w
        .query_map([], |r| {
            Ok(Warned {
                path: r.get(0)?,
                warnings: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut a = conn.prepare("SELECT at, detail FROM alarm ORDER BY id DESC LIMIT 20")?;
    let alarms = a
        .query_map([], |r| {
            Ok(Alarm {
                at: r.get(0)?,
                detail: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let (hub_seq, hub_hash) = outbox::hub_position(conn)?;
    let (acked_at, last_attempt, last_error) = conn.query_row(
        "SELECT acked_at, last_attempt, last_error FROM sync_state WHERE one = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let backlog_bytes = conn.query_row(
        "SELECT coalesce(sum(length(body)), 0) FROM outbox WHERE seq > ?1",
        [hub_seq as i64],
        |r| r.get(0),
    )?;
    Ok(Status {
        hub: Hub {
            seq: hub_seq,
            hash: shared::chain::hex(&hub_hash),
            acked_at,
            backlog: seq.saturating_sub(hub_seq),
            backlog_bytes,
            last_attempt,
            last_error,
        },
        schema_version: count("PRAGMA user_version")?,
        tables: crate::store::sql::table_counts(conn)?,
        files: Files {
            current: count("SELECT count(*) FROM source_file WHERE is_current = 1")?,
            superseded: count("SELECT count(*) FROM source_file WHERE flag = 2")?,
            deleted: count("SELECT count(*) FROM source_file WHERE flag = 0")?,
            not_current: count(
                "SELECT count(*) FROM source_file WHERE flag = 1 AND is_current = 0",
            )?,
            missing_at_source: count(
                "SELECT count(*) FROM source_file WHERE missing_since IS NOT NULL",
            )?,
            with_warnings: count(
                "SELECT count(*) FROM source_file WHERE decode_warnings IS NOT NULL",
            )?,
        },
        quarantine,
        warnings,
        alarms,
        outbox: Outbox {
            seq,
            hash: shared::chain::hex(&hash),
            held: count("SELECT count(*) FROM outbox")?,
            first_held: outbox::first_seq(conn)?,
            bytes: count("SELECT coalesce(sum(length(body)), 0) FROM outbox")?,
        },
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "store schema version {}", self.schema_version)?;
        writeln!(f, "\nrows per table:")?;
        for (t, n) in &self.tables {
            writeln!(f, "  {t:<18} {n:>10}")?;
        }
        let x = &self.files;
        writeln!(f, "\nfiles: {} current, {} superseded, {} deleted, {} older flag-1 versions, {} missing at the source, {} with decode warnings",
            x.current, x.superseded, x.deleted, x.not_current, x.missing_at_source, x.with_warnings)?;
        writeln!(
            f,
            "\noutbox: head {} ({}), {} segments held from {}, {} bytes",
            self.outbox.seq,
            &self.outbox.hash[..16],
            self.outbox.held,
            self.outbox.first_held.map_or("-".into(), |s| s.to_string()),
            self.outbox.bytes
        )?;
        let h = &self.hub;
        writeln!(
            f,
            "hub:    copy at {} ({}), acknowledged {}; backlog {} segments, {} bytes",
            h.seq,
            &h.hash[..16],
            h.acked_at.as_deref().unwrap_or("never"),
            h.backlog,
            h.backlog_bytes
        )?;
        if let Some(e) = &h.last_error {
            writeln!(
                f,
                "        last upload failed at {}: {e}",
                h.last_attempt.as_deref().unwrap_or("?")
            )?;
        }
        writeln!(f, "\nquarantine: {} file(s)", self.quarantine.len())?;
        for q in &self.quarantine {
            writeln!(
                f,
                "  {}\n    {} (since {}, last tried {})",
                q.path, q.reason, q.first_seen, q.last_tried
            )?;
        }
        if !self.warnings.is_empty() {
            writeln!(
                f,
                "\nfiles stored with warnings (first {}):",
                self.warnings.len()
            )?;
            for w in &self.warnings {
                writeln!(
                    f,
                    "  {}\n    {}",
                    w.path,
                    w.warnings.replace('\n', "\n    ")
                )?;
            }
        }
        if !self.alarms.is_empty() {
            writeln!(f, "\nalarms (newest first):")?;
            for a in &self.alarms {
                writeln!(f, "  {} {}", a.at, a.detail)?;
            }
        }
        Ok(())
    }
}
