//! Opening the hub's SQLCipher databases, and the worker thread that owns each connection so
//! async code never holds one: jobs go over a channel and answers come back on a oneshot.

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::key::DbKey;

/// Opens (creating when absent) an encrypted database and runs `migrations` past its
/// `user_version`.
pub fn open(path: &Path, key: &DbKey, migrations: &[&str]) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch(&format!("PRAGMA key = {};", key.literal()))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .with_context(|| {
            format!(
                "{} cannot be read with the hub's key: wrong hub.key, or not a tsunagi database",
                path.display()
            )
        })?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000;")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > migrations.len() as i64 {
        anyhow::bail!("{} has schema version {version}, newer than this program knows ({}): run a newer tsunagi-hub", path.display(), migrations.len());
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Opens an existing encrypted database read-only, for readers beside its worker (WAL lets them
/// read while it writes).
pub fn open_read_only(path: &Path, key: &DbKey) -> anyhow::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    c.execute_batch(&format!(
        "PRAGMA key = {}; PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY;",
        key.literal()
    ))?;
    Ok(c)
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One thread that owns one connection.
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

impl Worker {
    pub fn start(name: &str, mut conn: Connection) -> anyhow::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new().name(name.into()).spawn(move || {
            for job in rx {
                job(&mut conn);
            }
        })?;
        Ok(Worker { tx })
    }

    /// Runs `f` on the connection's thread and waits for it without blocking the async runtime.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |c| {
                let _ = reply.send(f(c));
            }))
            .map_err(|_| anyhow::anyhow!("the database thread has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the database thread stopped while working"))
    }

    /// Runs `f` on the connection's thread without waiting for it (a bookkeeping write whose
    /// outcome nobody waits on; `f` logs its own failure).
    pub fn send(&self, f: impl FnOnce(&mut Connection) + Send + 'static) {
        if self.tx.send(Box::new(f)).is_err() {
            tracing::error!("the database thread has stopped");
        }
    }

    /// The same from synchronous code (the command line, the snapshot timer's thread).
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |c| {
                let _ = reply.send(f(c));
            }))
            .map_err(|_| anyhow::anyhow!("the database thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("the database thread stopped while working"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy at every earlier schema version migrates forward when the hub opens it, keeping
    /// its segments; one newer than the hub knows is refused and says what to run.
    #[test]
    fn a_copy_at_every_earlier_version_migrates_forward_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::key::HubKey::from_bytes([7; 32]).derive("copy:test");
        let all = shared::schema::MIGRATIONS;
        for k in 1..all.len() {
            let path = dir.path().join(format!("v{k}.db"));
            let c = open(&path, &key, &all[..k]).unwrap();
            c.execute("INSERT INTO outbox (seq, prev_hash, hash, body, raw_len, files, created_at) VALUES (1, zeroblob(32), zeroblob(32), x'00', 1, 0, 't')", []).unwrap();
            drop(c);
            let c = open(&path, &key, all).unwrap();
            let v: i64 = c
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, all.len() as i64, "from version {k}");
            let segs = crate::copy::archived(&c, 0, 1).unwrap();
            assert_eq!(
                segs[0].schema,
                shared::schema::LEGACY_SEGMENT_SCHEMA,
                "from version {k}"
            );
        }
        let e = open(&dir.path().join("v1.db"), &key, &all[..1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("newer than this program knows") && e.contains("run a newer tsunagi-hub"),
            "{e}"
        );
    }
}
