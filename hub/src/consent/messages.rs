//! The portal inbox: messages to a facility, or to the network office, and whether they were read.

use rusqlite::{params, Connection};

/// The office's inbox: messages to the network office (its accounts belong to no facility).
pub const OFFICE_INBOX: &str = "";

/// A message in a facility's inbox.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: i64,
    pub at: i64,
    pub subject: String,
    pub body: String,
    pub read: bool,
}

pub fn inbox(c: &Connection, facility: &str, limit: i64) -> rusqlite::Result<Vec<Message>> {
    let mut st = c.prepare("SELECT id, at, subject, body, read_at IS NOT NULL FROM inbox WHERE facility = ?1 ORDER BY id DESC LIMIT ?2")?;
    let rows = st.query_map(params![facility, limit], |r| {
        Ok(Message {
            id: r.get(0)?,
            at: r.get(1)?,
            subject: r.get(2)?,
            body: r.get(3)?,
            read: r.get(4)?,
        })
    })?;
    rows.collect()
}

pub fn unread(c: &Connection, facility: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT count(*) FROM inbox WHERE facility = ?1 AND read_at IS NULL",
        [facility],
        |r| r.get(0),
    )
}

pub fn mark_read(c: &Connection, facility: &str, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE inbox SET read_at = ?2 WHERE facility = ?1 AND read_at IS NULL",
        params![facility, now],
    )?;
    Ok(())
}
