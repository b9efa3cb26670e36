//! The posture's book in `offline.db`: each check's kept state, the audited state changes, the
//! screen-lock reporters and their last reports.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::Local;
use crate::posture::Report;
use crate::posture::{state_from, CheckState, Event, LastReport, State, Status};

/// The posture's tables in `offline.db`.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS posture_check (
    name  TEXT PRIMARY KEY,
    state TEXT NOT NULL            -- CheckState as JSON
);
-- Every change of a check's or a terminal's state, kept until the hub has it.
CREATE TABLE IF NOT EXISTS posture_event (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    subject TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    summary TEXT NOT NULL,
    sent    INTEGER NOT NULL DEFAULT 0
);
-- Screen-lock reporters: the SHA-256 of each one's token, and the terminal it speaks for.
CREATE TABLE IF NOT EXISTS reporter (
    token       BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL
);
-- The last report of each terminal.
CREATE TABLE IF NOT EXISTS terminal_report (
    name          TEXT PRIMARY KEY,
    at            INTEGER NOT NULL,
    status        TEXT NOT NULL,
    summary       TEXT NOT NULL,
    remediation   TEXT NOT NULL,
    lock_secs     INTEGER,
    failing_since INTEGER
);
"#;

/// The posture's book in `offline.db`.
impl Local {
    pub fn check_states(&self) -> anyhow::Result<HashMap<String, CheckState>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, state FROM posture_check")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows
                .filter_map(Result::ok)
                .filter_map(|(n, j)| Some((n, serde_json::from_str(&j).ok()?)))
                .collect())
        })
    }

    /// Keeps a check's new state, and audits the change (if it is one) in the same transaction.
    pub fn keep_check(&self, s: &CheckState, prev: Option<State>) -> anyhow::Result<Option<Event>> {
        let json = serde_json::to_string(s)?;
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("INSERT INTO posture_check (name, state) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET state = excluded.state", params![s.check, json])?;
            let ev = if prev != Some(s.state) { Some(insert_event(&tx, s.checked_at, &format!("check:{}", s.check), prev, s.state, &s.outcome.summary)?) } else { None };
            tx.commit()?;
            Ok(ev)
        })
    }

    pub fn record_event(
        &self,
        at: i64,
        subject: &str,
        from: Option<State>,
        to: State,
        summary: &str,
    ) -> anyhow::Result<Event> {
        let (subject, summary) = (subject.to_string(), summary.to_string());
        self.with(move |c| insert_event(c, at, &subject, from, to, &summary))
    }

    fn events(&self, filter_and_order: &'static str, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.with(move |c| {
            let mut st = c.prepare(&format!("SELECT seq, at, subject, from_state, to_state, summary FROM posture_event {filter_and_order} LIMIT ?1"))?;
            let rows = st.query_map([limit], |r| {
                Ok(Event { seq: r.get(0)?, at: r.get(1)?, subject: r.get(2)?, from: r.get::<_, Option<String>>(3)?.as_deref().and_then(state_from), to: state_from(&r.get::<_, String>(4)?).unwrap_or(State::Error), summary: r.get(5)? })
            })?;
            rows.collect()
        })
    }

    /// Events not yet handed to telemetry, oldest first.
    pub fn unsent_events(&self, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.events("WHERE sent = 0 ORDER BY seq", limit)
    }

    pub fn events_sent(&self, upto: i64) -> anyhow::Result<()> {
        self.with(move |c| {
            c.execute("UPDATE posture_event SET sent = 1 WHERE seq <= ?1", [upto])
                .map(|_| ())
        })
    }

    /// The most recent events, newest first (for `tsunagi-edge check`).
    pub fn recent_events(&self, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.events("ORDER BY seq DESC", limit)
    }

    /// Takes a terminal's one-time code (the same codes browsers use) for a screen-lock reporter,
    /// and stores the hash of the reporter's new token. Returns the terminal's name.
    pub fn enrol_reporter(
        &self,
        code: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let token_hash = *token_hash;
        self.take_terminal_code(code, now, move |tx, name| {
            tx.execute(
                "INSERT INTO reporter (token, name, enrolled_at) VALUES (?1, ?2, ?3)",
                params![&token_hash[..], name, now],
            )
            .map(|_| ())
        })
    }

    pub fn reporter_name(&self, token_hash: &[u8; 32]) -> anyhow::Result<Option<String>> {
        let token_hash = *token_hash;
        self.with(move |c| {
            c.query_row(
                "SELECT name FROM reporter WHERE token = ?1",
                [&token_hash[..]],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Keeps a terminal's report (its failing-since carried over while it keeps failing).
    pub fn keep_report(&self, name: &str, at: i64, o: &Report) -> anyhow::Result<Option<i64>> {
        let (name, o) = (name.to_string(), o.clone());
        self.with(move |c| {
            let name = name.as_str();
            let tx = c.transaction()?;
            let prev: Option<Option<i64>> = tx.query_row("SELECT failing_since FROM terminal_report WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            let since = match o.outcome.status {
                Status::Fail => Some(prev.flatten().unwrap_or(at)),
                _ => None,
            };
            tx.execute(
                "INSERT INTO terminal_report (name, at, status, summary, remediation, lock_secs, failing_since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET at = excluded.at, status = excluded.status, summary = excluded.summary, remediation = excluded.remediation, lock_secs = excluded.lock_secs, failing_since = excluded.failing_since",
                params![name, at, serde_json::to_value(o.outcome.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(), o.outcome.summary, o.outcome.remediation, o.lock_secs.map(|s| s as i64), since],
            )?;
            tx.commit()?;
            Ok(since)
        })
    }

    /// Every terminal the facility enrolled (by browser or reporter), with its last report.
    pub fn terminal_reports(&self) -> anyhow::Result<Vec<(String, Option<LastReport>)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT n.name, r.at, r.status, r.summary, r.remediation, r.failing_since FROM
                   (SELECT name FROM terminal UNION SELECT name FROM reporter UNION SELECT name FROM terminal_report) n
                 LEFT JOIN terminal_report r ON r.name = n.name ORDER BY n.name",
            )?;
            let rows = st.query_map([], |r| {
                let at: Option<i64> = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    match at {
                        None => None,
                        Some(at) => Some((at, serde_json::from_value(serde_json::Value::String(r.get::<_, String>(2)?)).unwrap_or(Status::Error), r.get(3)?, r.get(4)?, r.get(5)?)),
                    },
                ))
            })?;
            rows.collect()
        })
    }
}

fn insert_event(
    c: &rusqlite::Connection,
    at: i64,
    subject: &str,
    from: Option<State>,
    to: State,
    summary: &str,
) -> rusqlite::Result<Event> {
    c.execute(
        "INSERT INTO posture_event (at, subject, from_state, to_state, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, subject, from.map(State::code), to.code(), summary],
    )?;
    Ok(Event {
        seq: c.last_insert_rowid(),
        at,
        subject: subject.to_string(),
        from,
        to,
        summary: summary.to_string(),
    })
}
