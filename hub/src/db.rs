//! The hub's SQLCipher databases: opened through `sqlkit` (one key type, one set of pragmas,
//! forward migrations) and each owned by one `sqlkit::Worker` thread, so async code never holds
//! a connection.

use std::path::Path;

use rusqlite::Connection;

use crate::key::Key;

pub use sqlkit::Worker;

/// The program a database newer than this one must be opened with.
pub const PROGRAM: &str = "tsunagi-hub";

/// Opens (creating when absent) an encrypted database and runs `migrations` past its
/// `user_version`.
pub fn open(path: &Path, key: &Key, migrations: &[&str]) -> anyhow::Result<Connection> {
    Ok(sqlkit::open(path, key, migrations, PROGRAM)?)
}

/// Opens an existing encrypted database read-only, for readers beside its worker (WAL lets them
/// read while it writes).
pub fn open_read_only(path: &Path, key: &Key, migrations: &[&str]) -> anyhow::Result<Connection> {
    Ok(sqlkit::open_read_only(path, key, migrations, PROGRAM)?)
}

/// Starts the thread that owns `conn`. Its queue is unbounded: an async handler never waits
/// for room in it.
pub fn worker(name: &str, conn: Connection) -> anyhow::Result<Worker> {
    Ok(Worker::start(name, conn, sqlkit::Queue::Unbounded)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy at every earlier schema version migrates forward when the hub opens it, keeping
    /// its segments; one newer than the hub knows is refused and says what to run.
    #[test]
    fn a_copy_at_every_earlier_version_migrates_forward_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::key::Key::from_bytes([7; 32]).derive("copy:test");
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
