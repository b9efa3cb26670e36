//! Opening an encrypted database: the key, the pragmas every file runs with, and the forward-only
//! migrations by `user_version`; errors name what a person must do.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::Key;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("{path} cannot be opened with this key: the key file is wrong, or the file is not a tsunagi database")]
    WrongKey { path: PathBuf },
    #[error("the disk holding {path} is full: free space, then start again (nothing already stored was lost)")]
    Full { path: PathBuf },
    #[error("{path} is read-only: check the file system and its permissions (nothing already stored was lost)")]
    ReadOnly { path: PathBuf },
    #[error("{path} has schema version {found}, newer than this program knows ({known}): run a newer {program}")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
        program: &'static str,
    },
    #[error("folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database thread stopped: {0}")]
    Gone(String),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies an SQLite error on `path` by what a person must do about it.
    pub fn classify(e: rusqlite::Error, path: &Path) -> Error {
        let path = path.to_owned();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Error::Full { path },
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => Error::ReadOnly { path },
            Some(ErrorCode::NotADatabase) => Error::WrongKey { path },
            _ => Error::Sqlite(e),
        }
    }
}

/// Opens (creating when absent, with its folder) the encrypted database at `path`, checks that
/// `key` opens it, and runs the `migrations` past its `user_version`, each in its own
/// transaction. A file newer than `migrations` is refused, naming `program` to upgrade.
pub fn open(
    path: &Path,
    key: &Key,
    migrations: &[&str],
    program: &'static str,
) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Folder {
            path: dir.to_owned(),
            source,
        })?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::classify(e, path))?;
    unlock(&conn, key)
        .and_then(|_| {
            conn.execute_batch(
                "PRAGMA busy_timeout = 10000;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA temp_store = MEMORY;
                 PRAGMA foreign_keys = OFF;",
            )
        })
        .map_err(|e| Error::classify(e, path))?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn, path, migrations, program)?;
    Ok(conn)
}

/// Opens an existing encrypted database read-only (WAL lets it read beside the writer), checking
/// the key and that the file is not newer than `migrations`.
pub fn open_read_only(
    path: &Path,
    key: &Key,
    migrations: &[&str],
    program: &'static str,
) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::classify(e, path))?;
    unlock(&conn, key)
        .and_then(|_| {
            conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY;")
        })
        .map_err(|e| Error::classify(e, path))?;
    conn.set_prepared_statement_cache_capacity(64);
    let found = version(&conn).map_err(|e| Error::classify(e, path))?;
    too_new(path, found, migrations, program)?;
    Ok(conn)
}

/// Keys the connection; the first read fails with NotADatabase when the key is wrong.
fn unlock(conn: &Connection, key: &Key) -> rusqlite::Result<()> {
    // An error from the keying statement could quote it, key and all: it is replaced by one that
    // says only what failed.
    conn.execute_batch(&key.pragma()).map_err(keying_error)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
}

/// The error of a keying statement, without its text (which could quote the statement).
fn keying_error(e: rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(e.sqlite_error().map_or(1, |f| f.extended_code)),
        Some("the database key could not be set".into()),
    )
}

fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn too_new(path: &Path, found: i64, migrations: &[&str], program: &'static str) -> Result<()> {
    let known = migrations.len() as i64;
    if found > known {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found,
            known,
            program,
        });
    }
    Ok(())
}

/// Runs `migrations` past the connection's `user_version`, each with its version bump in one
/// transaction, so a crash leaves the file at one version or the next.
pub fn migrate(
    conn: &Connection,
    path: &Path,
    migrations: &[&str],
    program: &'static str,
) -> Result<()> {
    let found = version(conn)?;
    too_new(path, found, migrations, program)?;
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        // IMMEDIATE takes the write lock before the version is read again, so two processes
        // opening the same file (a command beside the daemon) never both run a migration: the
        // second waits (busy_timeout), then finds it done.
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| Error::classify(e, path))?;
        let step = (|| -> Result<bool> {
            if version(conn)? > i as i64 {
                return Ok(false);
            }
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
            Ok(true)
        })();
        match step {
            Ok(ran) => {
                conn.execute_batch("COMMIT")
                    .map_err(|e| Error::classify(e, path))?;
                if ran {
                    tracing::info!(file = %path.display(), version = i + 1, "schema migrated");
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[&str] = &[
        "CREATE TABLE a (x INTEGER);",
        "ALTER TABLE a ADD COLUMN y TEXT;",
    ];

    #[test]
    fn wrong_key_is_named_newer_is_refused_and_migrations_run_forward() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/t.db");
        let key = Key::from_bytes([7; 32]);
        let c = open(&p, &key, &M[..1], "tsunagi-test").unwrap();
        c.execute("INSERT INTO a (x) VALUES (1)", []).unwrap();
        drop(c);
        let e = open(&p, &Key::from_bytes([8; 32]), M, "tsunagi-test").unwrap_err();
        assert!(matches!(e, Error::WrongKey { .. }), "{e}");
        let c = open(&p, &key, M, "tsunagi-test").unwrap();
        let (x, y): (i64, Option<String>) = c
            .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((x, y, version(&c).unwrap()), (1, None, 2));
        drop(c);
        let e = open(&p, &key, &M[..1], "tsunagi-test").unwrap_err();
        assert!(e.to_string().contains("run a newer tsunagi-test"), "{e}");
        let e = open_read_only(&p, &key, &M[..1], "tsunagi-test").unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = open_read_only(&p, &Key::from_bytes([9; 32]), M, "tsunagi-test").unwrap_err();
        assert!(matches!(e, Error::WrongKey { .. }), "{e}");
        let r = open_read_only(&p, &key, M, "tsunagi-test").unwrap();
        assert!(
            r.execute("INSERT INTO a (x) VALUES (2)", []).is_err(),
            "read-only"
        );
    }

    /// Whatever goes wrong while keying, the key never appears in the error, and the error keeps
    /// its code (a wrong key is still told apart).
    #[test]
    fn an_error_while_keying_does_not_quote_the_key() {
        let key = Key::from_bytes([0xAB; 32]);
        let quoting = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(26),
            Some(format!("near \"{}\": syntax error", key.pragma().as_str())),
        );
        assert!(format!("{quoting:?}").contains("abababab"));
        let e = keying_error(quoting);
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("abababab") && shown.contains("key could not be set"),
            "{shown}"
        );
        assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase)
        );
    }

    /// Processes opening a new file at once (here threads, each with its own connection) all
    /// succeed, and each migration ran once: a second run of `CREATE TABLE a` would fail.
    #[test]
    fn files_opened_at_once_are_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let key = Key::from_bytes([7; 32]);
        drop(open(&p, &key, &[], "tsunagi-test").unwrap());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, key, b) = (p.clone(), key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    open(&p, &key, M, "tsunagi-test").map(|c| version(&c).unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), 2);
        }
    }

    #[test]
    fn a_full_disk_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let conn = open(&p, &Key::from_bytes([7; 32]), M, "tsunagi-test").unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
            .unwrap();
        let e = conn
            .execute("INSERT INTO a (x, y) VALUES (1, ?1)", [vec![b'x'; 100_000]])
            .unwrap_err();
        assert!(matches!(Error::classify(e, &p), Error::Full { .. }));
    }
}
