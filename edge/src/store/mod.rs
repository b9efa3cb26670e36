//! The edge's encrypted store: SQLite with SQLCipher, WAL, one thread that owns the connection.
//!
//! The key comes from a file readable by its owner only. Without it the file is noise: no patient
//! name, no code, no structure can be read from its bytes.

mod key;
pub mod sql;

pub use key::{generate_key_file, read_key};
pub use sqlkit::{Error, Key, Result};

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::Connection;

/// The database file inside the store folder.
pub const DB_FILE: &str = "edge.db";

/// The program a store newer than this one must be opened with.
const PROGRAM: &str = "tsunagi-edge";

/// Opens (creating when absent) the store in `dir` with `key`, and brings its schema up to date.
pub fn open(dir: &Path, key: &Key) -> Result<Connection> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Folder {
        path: dir.to_owned(),
        source,
    })?;
    sqlkit::open(&dir.join(DB_FILE), key, shared::schema::MIGRATIONS, PROGRAM)
}

/// Opens an existing store read-only, for `status` and `export-ssmix2`.
pub fn open_read_only(dir: &Path, key: &Key) -> Result<Connection> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(Error::Folder {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no store here (run `tsunagi-edge ingest` first)",
            ),
        });
    }
    sqlkit::open_read_only(&path, key, shared::schema::MIGRATIONS, PROGRAM)
}

/// An in-memory database with the store's schema, for tests of SQL functions.
#[cfg(test)]
pub(crate) fn in_memory() -> Connection {
    let c = Connection::open_in_memory().expect("in-memory database");
    for m in shared::schema::MIGRATIONS {
        c.execute_batch(m).expect("migration");
    }
    c
}

/// The one thread that owns the store's connection ([`sqlkit::Worker`]); everything else sends
/// it work. At most two jobs wait, so ingest cannot run ahead of the disk.
pub struct Handle {
    worker: sqlkit::Worker,
    pub path: PathBuf,
}

impl Handle {
    /// Opens the store and starts its thread.
    pub fn start(dir: &Path, key: &Key) -> Result<Handle> {
        let conn = open(dir, key)?;
        Ok(Handle {
            worker: sqlkit::Worker::start("store", conn, sqlkit::Queue::Bounded(2))?,
            path: dir.join(DB_FILE),
        })
    }

    /// Runs `f` on the store's thread and waits for its answer.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T> {
        self.worker.call_blocking(f)
    }

    /// Queues `f` on the store's thread; its answer arrives on the returned channel.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        self.worker.submit(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A store at every earlier schema version migrates forward to the current one, keeping what
    /// it held; its segments from before segments said their schema read as the legacy one.
    #[test]
    fn a_store_at_every_earlier_version_migrates_forward() {
        for k in 0..shared::schema::MIGRATIONS.len() {
            let conn = Connection::open_in_memory().unwrap();
            for m in &shared::schema::MIGRATIONS[..k] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", k as i64).unwrap();
            if k >= 1 {
                conn.execute("INSERT INTO outbox (seq, prev_hash, hash, body, raw_len, files, created_at) VALUES (1, zeroblob(32), zeroblob(32), x'00', 1, 0, 't')", []).unwrap();
            }
            sqlkit::migrate(
                &conn,
                Path::new("test.db"),
                shared::schema::MIGRATIONS,
                PROGRAM,
            )
            .unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, shared::schema::latest_version(), "from version {k}");
            if k >= 1 {
                let segs = crate::outbox::segments_after(&conn, 0, 10).unwrap();
                assert_eq!(
                    (segs.len(), segs[0].schema),
                    (1, shared::schema::LEGACY_SEGMENT_SCHEMA),
                    "from version {k}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_is_named_and_right_key_opens() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_bytes([7; 32]);
        drop(open(dir.path(), &key).unwrap());
        let err = open(dir.path(), &Key::from_bytes([8; 32])).unwrap_err();
        assert!(matches!(err, Error::WrongKey { .. }), "{err}");
        let conn = open(dir.path(), &key).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, shared::schema::latest_version());
    }

    #[test]
    fn a_full_disk_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path(), &Key::from_bytes([7; 32])).unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
            .unwrap();
        let e = conn
            .execute(
                "INSERT INTO alarm (at, kind, detail) VALUES ('t', 'k', ?1)",
                [vec![b'x'; 100_000]],
            )
            .unwrap_err();
        assert!(matches!(Error::classify(e, dir.path()), Error::Full { .. }));
    }

    #[test]
    fn handle_runs_work_on_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handle::start(dir.path(), &Key::from_bytes([1; 32])).unwrap();
        let name = h
            .call(|_| thread::current().name().map(str::to_owned))
            .unwrap();
        assert_eq!(name.as_deref(), Some("store"));
    }
}
