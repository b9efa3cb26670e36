//! A facility's failover copy: the same clinical schema as the edge's store, kept current by
//! applying the edge's segments in order. Each segment is applied, archived and recorded as the new
//! head in one transaction, so the copy and its position can never disagree.

use rusqlite::session::{ConflictAction, ConflictType};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use shared::chain::{self, ChainError};
use shared::wire::Segment;

/// Where a copy stands: the last applied segment's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub seq: u64,
    #[serde(serialize_with = "hex32")]
    pub hash: [u8; 32],
}

fn hex32<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&chain::hex(h))
}

/// Why a segment was refused. Every variant leaves the copy exactly as it was.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It does not continue the copy's chain (as `shared::chain` checks it).
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("segment {seq} differs from the segment {seq} the copy already holds: the appliance's chain forked")]
    Conflict { seq: u64 },
    #[error("segment {seq} was written at schema {schema}, and this hub knows up to {}: upgrade the hub; nothing of it was taken", shared::schema::VERSION)]
    Newer { seq: u64, schema: u32 },
    #[error("segment {seq} cannot be applied: {reason}")]
    Unappliable { seq: u64, reason: String },
}

pub fn position(conn: &Connection) -> rusqlite::Result<Position> {
    conn.query_row("SELECT seq, hash FROM outbox_head WHERE one = 1", [], |r| {
        let seq: i64 = r.get(0)?;
        let damaged = |e: ChainError| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
        };
        Ok(Position {
            seq: u64::try_from(seq).map_err(|_| {
                damaged(ChainError::BadRow {
                    seq,
                    what: "the head's number is negative".into(),
                })
            })?,
            hash: chain::stored_hash(seq, "head hash", &r.get::<_, Vec<u8>>(1)?)
                .map_err(damaged)?,
        })
    })
}

/// Applies a batch in order. Segments at or below the head are repeats: a no-op when they match
/// what the copy holds. Stops at the first refusal; the segments before it stay applied.
pub fn apply_batch(
    conn: &Connection,
    segs: &[Segment],
) -> anyhow::Result<Result<Position, (Position, Refusal)>> {
    for s in segs {
        let head = position(conn)?;
        if s.seq <= head.seq {
            let held: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT hash FROM outbox WHERE seq = ?1",
                    [s.seq as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if held.is_some_and(|h| h != s.hash) || (s.seq == head.seq && s.hash != head.hash) {
                return Ok(Err((head, Refusal::Conflict { seq: s.seq })));
            }
            continue;
        }
        if let Err(e) = chain::next(head.seq, &head.hash, s) {
            return Ok(Err((head, e.into())));
        }
        if s.schema > shared::schema::VERSION {
            return Ok(Err((
                head,
                Refusal::Newer {
                    seq: s.seq,
                    schema: s.schema,
                },
            )));
        }
        let changeset = match s.changeset() {
            Ok(c) => c,
            Err(reason) => return Ok(Err((head, Refusal::Unappliable { seq: s.seq, reason }))),
        };
        if let Err(reason) =
            shared::changeset::check_tables(&changeset, shared::schema::SYNCED_TABLES, |t| {
                column_count(conn, t)
            })
        {
            return Ok(Err((head, Refusal::Unappliable { seq: s.seq, reason })));
        }
        let tx = conn.unchecked_transaction()?;
        let seq = s.seq;
        let applied = conn.apply_strm(
            &mut &changeset[..],
            None::<fn(&str) -> bool>,
            move |kind: ConflictType, _| {
                tracing::warn!(seq, ?kind, "segment conflicts with the copy");
                ConflictAction::SQLITE_CHANGESET_ABORT
            },
        );
        if let Err(e) = applied {
            drop(tx);
            return Ok(Err((
                head,
                Refusal::Unappliable {
                    seq: s.seq,
                    reason: format!("it conflicts with the copy ({e})"),
                },
            )));
        }
        conn.prepare_cached("INSERT INTO outbox (seq, prev_hash, hash, body, raw_len, files, created_at, schema) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .execute(params![s.seq as i64, &s.prev_hash[..], &s.hash[..], s.body, s.raw_len as i64, s.files as i64, s.created_at, s.schema])?;
        conn.prepare_cached("UPDATE outbox_head SET seq = ?1, hash = ?2 WHERE one = 1")?
            .execute(params![s.seq as i64, &s.hash[..]])?;
        tx.commit()?;
    }
    Ok(Ok(position(conn)?))
}

/// How many columns a table of the copy has, or None when it has no such table.
pub fn column_count(conn: &Connection, table: &str) -> Option<usize> {
    let n: i64 = conn
        .query_row("SELECT count(*) FROM pragma_table_info(?1)", [table], |r| {
            r.get(0)
        })
        .ok()?;
    (n > 0).then_some(n as usize)
}

/// Archived segments in `(after, upto]`, in order.
pub fn archived(conn: &Connection, after: u64, upto: u64) -> rusqlite::Result<Vec<Segment>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {} FROM outbox WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        shared::chain::SEGMENT_COLUMNS
    ))?;
    let rows = st.query_map(params![after as i64, upto as i64], segment_row)?;
    rows.collect()
}

/// Reads an archived `outbox` row (`SEGMENT_COLUMNS`) as `Segment::from_row` does: a damaged
/// one is an error that names it, never a segment with a hash of zeros.
fn segment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Segment> {
    Segment::from_row(
        r.get(0)?,
        &r.get::<_, Vec<u8>>(1)?,
        &r.get::<_, Vec<u8>>(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    )
    .map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// The result of `copy verify`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub position: Position,
    pub first_archived: Option<u64>,
    pub archived: u64,
    pub problems: Vec<String>,
}

/// Checks the copy: SQLite's integrity check, SQLCipher's page authentication, and the hash chain
/// of every archived segment up to the head.
pub fn verify(conn: &Connection) -> anyhow::Result<Report> {
    let mut problems = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if integrity != ["ok"] {
        problems.extend(integrity.into_iter().map(|p| format!("integrity: {p}")));
    }
    let cipher: Vec<String> = conn
        .prepare("PRAGMA cipher_integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    problems.extend(cipher.into_iter().map(|p| format!("encryption: {p}")));
    // A damaged head is reported like any other damage (the report's position is then zero).
    let position = position(conn).unwrap_or_else(|e| {
        problems.push(format!("head: {e}"));
        Position {
            seq: 0,
            hash: [0; 32],
        }
    });
    let mut st = conn.prepare(&format!(
        "SELECT {} FROM outbox ORDER BY seq",
        shared::chain::SEGMENT_COLUMNS
    ))?;
    let mut rows = st.query([])?;
    let mut first: Option<u64> = None;
    let mut count = 0u64;
    let mut last: Option<(u64, [u8; 32])> = None;
    while let Some(r) = rows.next()? {
        let seg = match segment_row(r) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("chain: {e}"));
                continue;
            }
        };
        first.get_or_insert(seg.seq);
        count += 1;
        // The archive may start after a pruned prefix: its first segment is checked against its
        // own previous hash.
        let (after, prev) = last.unwrap_or((seg.seq.wrapping_sub(1), seg.prev_hash));
        match chain::next(after, &prev, &seg) {
            Err(ChainError::Gap { expected, got }) => problems.push(format!(
                "chain: segments {expected}..{} are missing from the archive",
                got - 1
            )),
            Err(e) => problems.push(format!("chain: {e}")),
            Ok(()) => {}
        }
        // A broken link or a gap does not hide a body that does not match its own hash.
        if chain::next(after, &prev, &seg).is_err_and(|e| !matches!(e, ChainError::Corrupt { .. }))
            && chain::segment_hash(&seg.prev_hash, seg.seq, &seg.body) != seg.hash
        {
            problems.push(format!("chain: {}", ChainError::Corrupt { seq: seg.seq }));
        }
        last = Some((seg.seq, seg.hash));
    }
    if let Some((s, h)) = &last {
        if *s != position.seq || *h != position.hash {
            problems.push(format!(
                "chain: the archive ends at {s} but the head says {}",
                position.seq
            ));
        }
    }
    Ok(Report {
        position,
        first_archived: first,
        archived: count,
        problems,
    })
}

/// Deletes archived segments at or below `seq` (they are inside a retained snapshot).
pub fn prune_archive(conn: &Connection, seq: u64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM outbox WHERE seq <= ?1", [seq as i64])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn mem() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        for m in shared::schema::MIGRATIONS {
            c.execute_batch(m).unwrap();
        }
        c
    }

    /// Segments made the way the edge makes them: changes under a session, compressed, chained.
    pub fn edge_segments(rows: &[&str]) -> Vec<Segment> {
        let edge = mem();
        let mut prev = chain::GENESIS;
        let mut out = Vec::new();
        for (i, a) in rows.iter().enumerate() {
            let mut s = rusqlite::session::Session::new(&edge).unwrap();
            s.attach(Some("allergy")).unwrap();
            edge.execute("INSERT INTO allergy (file_id, patient_id, source, allergen) VALUES (1, 'p', 'IAM', ?1)", [a]).unwrap();
            let mut cs = Vec::new();
            s.changeset_strm(&mut cs).unwrap();
            let body = zstd::bulk::compress(&cs, 3).unwrap();
            let seq = i as u64 + 1;
            let hash = chain::segment_hash(&prev, seq, &body);
            out.push(Segment {
                seq,
                prev_hash: prev,
                hash,
                body,
                raw_len: cs.len(),
                files: 1,
                created_at: format!("2026-11-2{}T00:00:00Z", i % 10),
                schema: shared::schema::VERSION,
            });
            prev = hash;
        }
        out
    }

    fn allergens(c: &Connection) -> Vec<String> {
        c.prepare("SELECT allergen FROM allergy ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn segments_apply_once_in_order() {
        let segs = edge_segments(&["a", "b", "c"]);
        let c = mem();
        assert_eq!(apply_batch(&c, &segs[..2]).unwrap().unwrap().seq, 2);
        assert_eq!(
            apply_batch(&c, &segs[..2]).unwrap().unwrap().seq,
            2,
            "a repeat is a no-op"
        );
        assert_eq!(allergens(&c), ["a", "b"]);
        assert_eq!(apply_batch(&c, &segs[1..]).unwrap().unwrap().seq, 3);
        assert_eq!(allergens(&c), ["a", "b", "c"]);
        let r = verify(&c).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.archived, r.position.seq), (3, 3));
    }

    /// A segment written at a schema newer than this hub knows is refused by name, before
    /// anything of it is applied.
    #[test]
    fn a_segment_from_a_newer_schema_is_refused_before_anything_changes() {
        let c = mem();
        let mut segs = edge_segments(&["a"]);
        segs[0].schema = shared::schema::VERSION + 1;
        let (pos, refusal) = apply_batch(&c, &segs).unwrap().unwrap_err();
        assert_eq!(pos.seq, 0);
        assert_eq!(
            refusal,
            Refusal::Newer {
                seq: 1,
                schema: shared::schema::VERSION + 1
            }
        );
        assert!(refusal.to_string().contains("upgrade the hub"), "{refusal}");
        assert!(allergens(&c).is_empty());
        segs[0].schema = shared::schema::LEGACY_SEGMENT_SCHEMA;
        apply_batch(&c, &segs).unwrap().unwrap();
        assert_eq!(
            archived(&c, 0, 1).unwrap()[0].schema,
            shared::schema::LEGACY_SEGMENT_SCHEMA,
            "kept as it came"
        );
    }

    /// A damaged archive row (a short hash) is named by `copy verify` and refused by a restore's
    /// reader, where it was read as a hash of zeros before.
    #[test]
    fn a_damaged_archive_row_is_named_not_zero_filled() {
        let c = mem();
        apply_batch(&c, &edge_segments(&["a", "b"]))
            .unwrap()
            .unwrap();
        c.execute("UPDATE outbox SET prev_hash = x'0102' WHERE seq = 2", [])
            .unwrap();
        let r = verify(&c).unwrap();
        assert!(
            r.problems.iter().any(|p| p.contains(
                "the stored segment 2 is damaged: its previous hash has 2 bytes, not 32"
            )),
            "{:?}",
            r.problems
        );
        assert!(archived(&c, 0, 2)
            .unwrap_err()
            .to_string()
            .contains("segment 2 is damaged"));
        c.execute("UPDATE outbox_head SET hash = x'00'", [])
            .unwrap();
        assert!(position(&c)
            .unwrap_err()
            .to_string()
            .contains("head hash has 1 bytes"));
        let r = verify(&c).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("head: ") && p.contains("head hash has 1 bytes")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn gaps_breaks_corruption_and_forks_are_refused_without_change() {
        let segs = edge_segments(&["a", "b", "c"]);
        let c = mem();
        let (_, e) = apply_batch(&c, &segs[1..2]).unwrap().unwrap_err();
        assert_eq!(
            e,
            Refusal::Chain(ChainError::Gap {
                expected: 1,
                got: 2
            })
        );
        apply_batch(&c, &segs[..1]).unwrap().unwrap();
        let mut bad = segs[1].clone();
        bad.body[3] ^= 1;
        assert_eq!(
            apply_batch(&c, &[bad]).unwrap().unwrap_err().1,
            Refusal::Chain(ChainError::Corrupt { seq: 2 })
        );
        let mut other = segs[1].clone();
        other.prev_hash = [9; 32];
        assert_eq!(
            apply_batch(&c, &[other]).unwrap().unwrap_err().1,
            Refusal::Chain(ChainError::Broken { seq: 2 })
        );
        let fork = edge_segments(&["x"]);
        assert_eq!(
            apply_batch(&c, &fork).unwrap().unwrap_err().1,
            Refusal::Conflict { seq: 1 }
        );
        // A lie about the expanded length is caught before anything is applied.
        let mut bomb = segs[1].clone();
        bomb.raw_len = 3;
        assert!(matches!(
            apply_batch(&c, &[bomb]).unwrap().unwrap_err().1,
            Refusal::Unappliable { seq: 2, .. }
        ));
        assert_eq!(allergens(&c), ["a"]);
        assert_eq!(position(&c).unwrap().seq, 1);
    }

    /// A segment made like the edge's, but of changes to `table` by `sql`.
    fn segment_of(prev: [u8; 32], seq: u64, table: &str, sql: &str) -> Segment {
        let edge = mem();
        let mut s = rusqlite::session::Session::new(&edge).unwrap();
        s.attach(Some(table)).unwrap();
        edge.execute_batch(sql).unwrap();
        let mut cs = Vec::new();
        s.changeset_strm(&mut cs).unwrap();
        let body = zstd::bulk::compress(&cs, 3).unwrap();
        let hash = chain::segment_hash(&prev, seq, &body);
        Segment {
            seq,
            prev_hash: prev,
            hash,
            body,
            raw_len: cs.len(),
            files: 1,
            created_at: "2026-11-20T00:00:00Z".into(),
            schema: shared::schema::VERSION,
        }
    }

    #[test]
    fn a_segment_that_writes_a_local_table_is_refused_by_name() {
        let c = mem();
        let first = edge_segments(&["a"]);
        apply_batch(&c, &first).unwrap().unwrap();
        for (table, sql) in [
            ("outbox_head", "UPDATE outbox_head SET seq = 999 WHERE one = 1"),
            ("outbox", "INSERT INTO outbox (seq, prev_hash, hash, body, raw_len, files, created_at) VALUES (77, x'00', x'00', x'00', 1, 1, 'x')"),
            ("sync_state", "UPDATE sync_state SET hub_seq = 5 WHERE one = 1"),
        ] {
            let seg = segment_of(first[0].hash, 2, table, sql);
            let (pos, refusal) = apply_batch(&c, &[seg]).unwrap().unwrap_err();
            match &refusal {
                Refusal::Unappliable { seq: 2, reason } => assert!(reason.contains(table) && reason.contains("not one of the synced tables"), "{reason}"),
                other => panic!("{table}: {other:?}"),
            }
            assert_eq!(pos.seq, 1);
        }
        // A table neither side's schema has is refused the same way, not skipped.
        let edge = mem();
        edge.execute_batch("CREATE TABLE receipt_line (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let mut s = rusqlite::session::Session::new(&edge).unwrap();
        s.attach(Some("receipt_line")).unwrap();
        edge.execute_batch("INSERT INTO receipt_line (v) VALUES ('x')")
            .unwrap();
        let mut cs = Vec::new();
        s.changeset_strm(&mut cs).unwrap();
        let body = zstd::bulk::compress(&cs, 3).unwrap();
        let hash = chain::segment_hash(&first[0].hash, 2, &body);
        let seg = Segment {
            seq: 2,
            prev_hash: first[0].hash,
            hash,
            body,
            raw_len: cs.len(),
            files: 1,
            created_at: "x".into(),
            schema: shared::schema::VERSION,
        };
        assert!(
            matches!(apply_batch(&c, &[seg]).unwrap().unwrap_err().1, Refusal::Unappliable { seq: 2, reason } if reason.contains("receipt_line"))
        );
        let head: i64 = c
            .query_row("SELECT seq FROM outbox_head", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (
                head,
                c.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
                    .unwrap()
            ),
            (1, 1),
            "nothing changed"
        );
    }
}
