//! The audit log: every search, view, download, consent change, link, account change and
//! emergency access, appended to `region.db` with who, facility, terminal, patient, what, when and
//! why. Each row's hash covers the row and the hash before it, so an edited, removed or inserted
//! row breaks the chain at that row; triggers refuse UPDATE and DELETE outright.

use rusqlite::{params, Connection, OptionalExtension};

/// One event, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub login: String,
    pub facility: String,
    pub terminal: String,
    pub action: String,
    pub patient: String,
    /// Facilities whose records were shown or changed.
    pub owners: Vec<String>,
    pub detail: String,
    pub reason: String,
    pub outcome: String,
}

/// A stored event with its place in the chain.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    pub at: i64,
    pub event: Event,
}

fn hash(prev: &[u8], seq: i64, at: i64, e: &Event, owners: &str) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tsunagi-audit-v1");
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at.to_be_bytes());
    for field in [
        &e.login,
        &e.facility,
        &e.terminal,
        &e.action,
        &e.patient,
        &owners.to_string(),
        &e.detail,
        &e.reason,
        &e.outcome,
    ] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field.as_bytes());
    }
    ctx.finish().as_ref().to_vec()
}

/// Appends `e` at time `at_ms` (Unix milliseconds) and returns its sequence number. Call it inside
/// the transaction of the change it records, so the change and its record commit together.
pub fn append(c: &Connection, at_ms: i64, e: &Event) -> rusqlite::Result<i64> {
    let (seq, prev) = match head(c)? {
        Some((s, h)) => (s + 1, h),
        None => (1, vec![0u8; 32]),
    };
    let owners = e.owners.join(",");
    let h = hash(&prev, seq, at_ms, e, &owners);
    c.execute(
        "INSERT INTO audit (seq, at, login, facility, terminal, action, patient, owners, detail, reason, outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![seq, at_ms, e.login, e.facility, e.terminal, e.action, e.patient, owners, e.detail, e.reason, e.outcome, prev, h],
    )?;
    for o in &e.owners {
        c.execute(
            "INSERT OR IGNORE INTO audit_owner (facility, seq) VALUES (?1, ?2)",
            params![o, seq],
        )?;
    }
    Ok(seq)
}

/// The newest row's sequence number and hash.
pub fn head(c: &Connection) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    c.query_row(
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Appends in its own transaction.
pub fn record(c: &mut Connection, at_ms: i64, e: &Event) -> rusqlite::Result<i64> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let seq = append(&tx, at_ms, e)?;
    tx.commit()?;
    Ok(seq)
}

/// What verification found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        rows: i64,
    },
    /// The first row whose stored hash or link does not match.
    Broken {
        seq: i64,
        why: String,
    },
}

/// Walks the whole chain from the first row.
pub fn verify(c: &Connection) -> rusqlite::Result<Verdict> {
    let mut st = c.prepare("SELECT seq, at, login, facility, terminal, action, patient, owners, detail, reason, outcome, prev_hash, hash FROM audit ORDER BY seq")?;
    let mut rows = st.query([])?;
    let mut prev = vec![0u8; 32];
    let mut expected_seq = 1;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let owners: String = r.get(7)?;
        let e = Event {
            login: r.get(2)?,
            facility: r.get(3)?,
            terminal: r.get(4)?,
            action: r.get(5)?,
            patient: r.get(6)?,
            owners: vec![],
            detail: r.get(8)?,
            reason: r.get(9)?,
            outcome: r.get(10)?,
        };
        let stored_prev: Vec<u8> = r.get(11)?;
        let stored: Vec<u8> = r.get(12)?;
        if seq != expected_seq {
            return Ok(Verdict::Broken {
                seq,
                why: format!("row {expected_seq} is missing"),
            });
        }
        if stored_prev != prev {
            return Ok(Verdict::Broken {
                seq,
                why: "its link to the row before does not match".into(),
            });
        }
        if hash(&prev, seq, r.get(1)?, &e, &owners) != stored {
            return Ok(Verdict::Broken {
                seq,
                why: "its contents do not match its hash".into(),
            });
        }
        prev = stored;
        expected_seq += 1;
        n += 1;
    }
    Ok(Verdict::Intact { rows: n })
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    let owners: String = r.get(8)?;
    Ok(Row {
        seq: r.get(0)?,
        at: r.get(1)?,
        event: Event {
            login: r.get(2)?,
            facility: r.get(3)?,
            terminal: r.get(4)?,
            action: r.get(5)?,
            patient: r.get(6)?,
            owners: owners
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            detail: r.get(7)?,
            reason: r.get(9)?,
            outcome: r.get(10)?,
        },
    })
}

const COLUMNS: &str = "a.seq, a.at, a.login, a.facility, a.terminal, a.action, a.patient, a.detail, a.owners, a.reason, a.outcome";

/// Which slice of the log a history page or CSV shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// What one person did (the key is their login).
    Mine,
    /// What our facility's staff did.
    Staff,
    /// Who saw or received our facility's records (views by others, emergency access).
    OurRecords,
    /// What our facility published, and when (consent and publication changes).
    Published,
    /// Everything (the office).
    All,
}

/// Rows of `view` for `facility` (for `Mine`, the login) between `from_ms` and `to_ms`, optionally of one patient, oldest
/// first, at most `limit`.
pub fn query(
    c: &Connection,
    view: &View,
    facility: &str,
    from_ms: i64,
    to_ms: i64,
    patient: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<Row>> {
    let (join, filter) = match view {
        View::Mine => ("", "a.login = ?1"),
        View::Staff => ("", "a.facility = ?1"),
        View::OurRecords => (
            "JOIN audit_owner o ON o.seq = a.seq AND o.facility = ?1",
            "a.facility != ?1",
        ),
        View::Published => (
            "JOIN audit_owner o ON o.seq = a.seq AND o.facility = ?1",
            "a.action IN ('consent', 'publish')",
        ),
        View::All => ("", "?1 = ?1"),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM audit a {join} WHERE {filter} AND a.at >= ?2 AND a.at < ?3 AND (?4 IS NULL OR a.patient = ?4) ORDER BY a.seq LIMIT ?5"
    );
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map(params![facility, from_ms, to_ms, patient, limit], row)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, patient: &str) -> Event {
        Event {
            login: "dr1".into(),
            facility: "3710000001".into(),
            terminal: "127.0.0.1".into(),
            action: action.into(),
            patient: patient.into(),
            owners: vec!["3710000002".into()],
            detail: "tab=rx".into(),
            reason: String::new(),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn chain_verifies_and_an_edit_is_found_at_its_row() {
        let mut c = crate::region::memory();
        for i in 0..5 {
            record(&mut c, 1_000 + i, &ev("view", &format!("R{i}"))).unwrap();
        }
        assert_eq!(verify(&c).unwrap(), Verdict::Intact { rows: 5 });
        // The triggers refuse edits made through SQL.
        assert!(c
            .execute("UPDATE audit SET patient = 'R9' WHERE seq = 3", [])
            .is_err());
        assert!(c.execute("DELETE FROM audit WHERE seq = 5", []).is_err());
        // Someone who drops the triggers can edit, but the chain shows where.
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        c.execute("UPDATE audit SET patient = 'R9' WHERE seq = 3", [])
            .unwrap();
        assert!(matches!(
            verify(&c).unwrap(),
            Verdict::Broken { seq: 3, .. }
        ));
        c.execute("UPDATE audit SET patient = 'R2' WHERE seq = 3", [])
            .unwrap();
        assert_eq!(verify(&c).unwrap(), Verdict::Intact { rows: 5 });
        c.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        assert!(matches!(
            verify(&c).unwrap(),
            Verdict::Broken { seq: 3, .. }
        ));
    }

    #[test]
    fn views_select_the_right_rows() {
        let mut c = crate::region::memory();
        record(&mut c, 10, &ev("view", "R1")).unwrap();
        let mut other = ev("view", "R1");
        other.facility = "3710000002".into();
        other.owners = vec!["3710000001".into()];
        record(&mut c, 20, &other).unwrap();
        let mut publish = ev("consent", "R1");
        publish.facility = "3710000001".into();
        publish.owners = vec!["3710000001".into()];
        record(&mut c, 30, &publish).unwrap();
        let f = "3710000001";
        assert_eq!(
            query(&c, &View::Staff, f, 0, 100, None, 100).unwrap().len(),
            2
        );
        let ours = query(&c, &View::OurRecords, f, 0, 100, None, 100).unwrap();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].event.facility, "3710000002");
        assert_eq!(
            query(&c, &View::Published, f, 0, 100, None, 100)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            query(&c, &View::Staff, f, 0, 15, None, 100).unwrap().len(),
            1
        );
        assert_eq!(
            query(&c, &View::Mine, "dr1", 0, 100, None, 100)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            query(&c, &View::Mine, "dr2", 0, 100, None, 100)
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            query(&c, &View::All, "", 0, 100, Some("R1"), 100)
                .unwrap()
                .len(),
            3
        );
    }
}
