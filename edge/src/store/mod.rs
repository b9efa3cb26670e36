//! The edge's encrypted store: SQLite with SQLCipher, WAL, one thread that owns the connection.
//!
//! The key comes from a file readable by its owner only. Without it the file is noise: no patient
//! name, no code, no structure can be read from its bytes.

mod key;
pub mod sql;

pub use key::{generate_key_file, Key};

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// The database file inside the store folder.
pub const DB_FILE: &str = "edge.db";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("the store {path} cannot be opened with this key: the key file is wrong, or the file is not a tsunagi store")]
    WrongKey { path: PathBuf },
    #[error("the disk holding the store is full: free space, then start again (nothing already stored was lost)")]
    Full,
    #[error("the store is read-only: check the file system and the permissions of {path} (nothing already stored was lost)")]
    ReadOnly { path: PathBuf },
    #[error("the store {path} has schema version {found}, newer than this program's {known}: run a newer tsunagi-edge")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store stopped: {0}")]
    Gone(String),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Error {
    /// Classifies an SQLite error by what a person must do about it.
    pub fn classify(e: rusqlite::Error, path: &Path) -> Error {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Error::Full,
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => Error::ReadOnly {
                path: path.to_owned(),
            },
            Some(ErrorCode::NotADatabase) => Error::WrongKey {
                path: path.to_owned(),
            },
            _ => Error::Sqlite(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens (creating when absent) the store in `dir` with `key`, and brings its schema up to date.
pub fn open(dir: &Path, key: &Key) -> Result<Connection> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Folder {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(DB_FILE);
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::classify(e, &path))?;
    prepare(&conn, key).map_err(|e| Error::classify(e, &path))?;
    migrate(&conn, &path)?;
    Ok(conn)
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
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::classify(e, &path))?;
    conn.execute_batch(&key.pragma())
        .map_err(|e| Error::classify(e, &path))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| Error::classify(e, &path))?;
    if version > shared::schema::latest_version() {
        return Err(Error::TooNew {
            path,
            found: version,
            known: shared::schema::latest_version(),
        });
    }
    Ok(conn)
}

fn prepare(conn: &Connection, key: &Key) -> rusqlite::Result<()> {
    conn.execute_batch(&key.pragma())?;
    // The first read fails with NotADatabase when the key is wrong.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = shared::schema::latest_version();
    if version > known {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    for (i, sql) in shared::schema::MIGRATIONS
        .iter()
        .enumerate()
        .skip(version as usize)
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit().map_err(|e| Error::classify(e, path))?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
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

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The one thread that owns the store's connection; everything else sends it work.
pub struct Handle {
    tx: Option<mpsc::SyncSender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    pub path: PathBuf,
}

impl Handle {
    /// Opens the store and starts its thread.
    pub fn start(dir: &Path, key: &Key) -> Result<Handle> {
        let mut conn = open(dir, key)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(2);
        let thread = thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                for job in rx {
                    job(&mut conn);
                }
            })
            .map_err(|e| Error::Gone(e.to_string()))?;
        Ok(Handle {
            tx: Some(tx),
            thread: Some(thread),
            path: dir.join(DB_FILE),
        })
    }

    /// Runs `f` on the store's thread and waits for its answer.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T> {
        self.submit(f)
            .recv()
            .map_err(|_| Error::Gone("the store thread ended while working".into()))
    }

    /// Queues `f` on the store's thread; its answer arrives on the returned channel.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        // A send error means the thread is gone; the caller then sees the closed channel.
        let _ = self.tx.as_ref().expect("handle is open").send(job);
        answer
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            migrate(&conn, Path::new("test.db")).unwrap();
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
        assert!(matches!(Error::classify(e, dir.path()), Error::Full));
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
