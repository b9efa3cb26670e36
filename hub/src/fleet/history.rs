//! `fleet.db`: its schema and each appliance's history (presence, posture, commands and their
//! acknowledgements, alerts), queued in memory and written in batches off the MQTT loop.

use rusqlite::params;
use serde::Serialize;

use super::{Fleet, HistoryRow};

pub const FILE: &str = "fleet.db";

pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE history (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    facility  TEXT NOT NULL,
    appliance TEXT NOT NULL,
    kind      TEXT NOT NULL,      -- presence, posture, command, ack, alert, resolved
    detail    TEXT NOT NULL,
    edge_seq  INTEGER             -- a posture event's number on the appliance
);
CREATE INDEX history_by_appliance ON history (facility, appliance, id);
CREATE UNIQUE INDEX history_edge_event ON history (facility, appliance, edge_seq) WHERE edge_seq IS NOT NULL;
"#];

/// A row of an appliance's history.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub at: i64,
    pub kind: String,
    pub detail: String,
}

impl Fleet {
    pub(super) fn note(
        &self,
        at: i64,
        facility: &str,
        appliance: &str,
        kind: &str,
        detail: String,
        edge_seq: Option<i64>,
    ) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((
                at,
                facility.into(),
                appliance.into(),
                kind.into(),
                detail,
                edge_seq,
            ));
    }

    fn take_pending(&self) -> Vec<HistoryRow> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Writes the waiting history rows in one transaction, and waits for it (blocking code).
    pub fn flush(&self) -> anyhow::Result<usize> {
        let rows = self.take_pending();
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        self.history
            .call_blocking(move |c| write_rows(c, &rows))??;
        Ok(n)
    }

    /// The same without waiting, from async code: `fleet.db`'s thread writes the rows when it
    /// gets to them, and logs a failure.
    pub fn flush_later(&self) {
        let rows = self.take_pending();
        if !rows.is_empty() {
            self.history.send(move |c| {
                if let Err(e) = write_rows(c, &rows) {
                    tracing::error!(error = %e, "the fleet history cannot be written");
                }
            });
        }
    }

    /// An appliance's history, newest first.
    pub fn history(&self, facility: &str, appliance: &str, limit: i64) -> anyhow::Result<Vec<Row>> {
        let _ = self.flush();
        let (facility, appliance) = (facility.to_string(), appliance.to_string());
        Ok(self.history.call_blocking(move |c| {
            let mut st = c.prepare_cached("SELECT at, kind, detail FROM history WHERE facility = ?1 AND appliance = ?2 ORDER BY id DESC LIMIT ?3")?;
            let rows = st.query_map(params![facility, appliance, limit], |r| {
                Ok(Row {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })??)
    }
}

fn write_rows(c: &mut rusqlite::Connection, rows: &[HistoryRow]) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare_cached("INSERT OR IGNORE INTO history (at, facility, appliance, kind, detail, edge_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for (at, f, a, k, d, s) in rows {
            st.execute(params![at, f, a, k, d, s])?;
        }
    }
    tx.commit()
}
