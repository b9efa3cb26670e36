//! A facility's failover copy: the same clinical schema as the edge's store, kept current by
//! applying the edge's segments in order. Each segment is applied, archived and recorded as the new
//! head in one transaction, so the copy and its position can never disagree.

use rusqlite::session::{ConflictAction, ConflictType};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use shared::chain;
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
    #[error("segment {got} arrived but the copy expects {expected}: send from {expected}")]
    Gap { expected: u64, got: u64 },
    #[error("segment {seq} does not chain to the copy's segment {}: its previous hash differs", seq - 1)]
    Broken { seq: u64 },
    #[error("segment {seq}'s hash does not match its body: it was changed in transit or at rest")]
    Corrupt { seq: u64 },
    #[error("segment {seq} differs from the segment {seq} the copy already holds: the appliance's chain forked")]
    Conflict { seq: u64 },
    #[error("segment {seq} cannot be applied: {reason}")]
    Unappliable { seq: u64, reason: String },
}

pub fn position(conn: &Connection) -> rusqlite::Result<Position> {
    conn.query_row("SELECT seq, hash FROM outbox_head WHERE one = 1", [], |r| {
        Ok(Position {
            seq: r.get::<_, i64>(0)? as u64,
            hash: r.get::<_, Vec<u8>>(1)?.try_into().unwrap_or([0; 32]),
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
        if s.seq != head.seq + 1 {
            return Ok(Err((
                head,
                Refusal::Gap {
                    expected: head.seq + 1,
                    got: s.seq,
                },
            )));
        }
        if s.prev_hash != head.hash {
            return Ok(Err((head, Refusal::Broken { seq: s.seq })));
        }
        if chain::segment_hash(&s.prev_hash, s.seq, &s.body) != s.hash {
            return Ok(Err((head, Refusal::Corrupt { seq: s.seq })));
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
        conn.prepare_cached("INSERT INTO outbox (seq, prev_hash, hash, body, raw_len, files, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![s.seq as i64, &s.prev_hash[..], &s.hash[..], s.body, s.raw_len as i64, s.files as i64, s.created_at])?;
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
    let mut st = conn.prepare_cached("SELECT seq, prev_hash, hash, body, raw_len, files, created_at FROM outbox WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")?;
    let rows = st.query_map(params![after as i64, upto as i64], |r| {
        Ok(Segment {
            seq: r.get::<_, i64>(0)? as u64,
            prev_hash: r.get::<_, Vec<u8>>(1)?.try_into().unwrap_or([0; 32]),
            hash: r.get::<_, Vec<u8>>(2)?.try_into().unwrap_or([0; 32]),
            body: r.get(3)?,
            raw_len: r.get::<_, i64>(4)? as usize,
            files: r.get::<_, i64>(5)? as u64,
            created_at: r.get(6)?,
        })
    })?;
    rows.collect()
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
    let position = position(conn)?;
    let mut st = conn.prepare("SELECT seq, prev_hash, hash, body FROM outbox ORDER BY seq")?;
    let mut rows = st.query([])?;
    let mut first: Option<u64> = None;
    let mut count = 0u64;
    let mut last: Option<(u64, Vec<u8>)> = None;
    while let Some(r) = rows.next()? {
        let seq = r.get::<_, i64>(0)? as u64;
        let prev: Vec<u8> = r.get(1)?;
        let hash: Vec<u8> = r.get(2)?;
        let body: Vec<u8> = r.get_ref(3)?.as_blob()?.to_vec();
        first.get_or_insert(seq);
        count += 1;
        if let Some((ls, lh)) = &last {
            if seq != ls + 1 {
                problems.push(format!(
                    "chain: segments {}..{} are missing from the archive",
                    ls + 1,
                    seq - 1
                ));
            } else if &prev != lh {
                problems.push(format!(
                    "chain: segment {seq} does not chain to segment {ls}"
                ));
            }
        }
        let prev32: [u8; 32] = prev.clone().try_into().unwrap_or([0; 32]);
        if chain::segment_hash(&prev32, seq, &body)[..] != hash[..] {
            problems.push(format!(
                "chain: segment {seq}'s body does not match its hash"
            ));
        }
        last = Some((seq, hash));
    }
    if let Some((s, h)) = &last {
        if *s != position.seq || h[..] != position.hash[..] {
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

    #[test]
    fn gaps_breaks_corruption_and_forks_are_refused_without_change() {
        let segs = edge_segments(&["a", "b", "c"]);
        let c = mem();
        let (_, e) = apply_batch(&c, &segs[1..2]).unwrap().unwrap_err();
        assert_eq!(
            e,
            Refusal::Gap {
                expected: 1,
                got: 2
            }
        );
        apply_batch(&c, &segs[..1]).unwrap().unwrap();
        let mut bad = segs[1].clone();
        bad.body[3] ^= 1;
        assert_eq!(
            apply_batch(&c, &[bad]).unwrap().unwrap_err().1,
            Refusal::Corrupt { seq: 2 }
        );
        let mut other = segs[1].clone();
        other.prev_hash = [9; 32];
        assert_eq!(
            apply_batch(&c, &[other]).unwrap().unwrap_err().1,
            Refusal::Broken { seq: 2 }
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
