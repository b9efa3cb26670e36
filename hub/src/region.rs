//! The regional database (`region.db`): people's accounts, the regional patient index, consent and
//! publication, the portal inbox, emergency access and the hash-chained audit log. One writer
//! thread owns the connection (`db::Worker`); searches and page reads use a small pool of
//! read-only connections so they never queue behind a write.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::key::Key;

pub const FILE: &str = "region.db";

/// Migrations of `region.db`, applied in order.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, crate::offline::MIGRATION, MIGRATION_3];

/// An emergency access started as life at stake opens entries whose patient refused (非公開).
const MIGRATION_3: &str = "ALTER TABLE emergency ADD COLUMN life INTEGER NOT NULL DEFAULT 0;";

const MIGRATION_1: &str = r#"
-- One person, one ID. Office and operator accounts have an empty facility.
CREATE TABLE user (
    login         TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    facility      TEXT NOT NULL,
    role          TEXT NOT NULL,
    pw            TEXT NOT NULL,            -- argon2id verifier, see account.rs
    pw_prev       TEXT,                     -- the previous verifier, which may not be reused
    pw_changed_at INTEGER NOT NULL,
    must_change   INTEGER NOT NULL,
    disabled_at   INTEGER,
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE INDEX user_facility ON user (facility);

-- Core hospitals may open a record without consent in an emergency.
CREATE TABLE core_hospital (
    facility TEXT PRIMARY KEY,
    since    INTEGER NOT NULL
);

-- The regional patient index: one row per patient of each facility's copy.
CREATE TABLE patient (
    id          INTEGER PRIMARY KEY,
    facility    TEXT NOT NULL,
    patient_id  TEXT NOT NULL,
    regional_id TEXT NOT NULL,
    name_kanji  TEXT NOT NULL,
    name_kana   TEXT NOT NULL,
    kanji_norm  TEXT NOT NULL,
    kana_norm   TEXT NOT NULL,
    birth_date  TEXT NOT NULL,              -- YYYYMMDD or ''
    sex         TEXT NOT NULL,              -- M, F, O, U or ''
    indexed_at  INTEGER NOT NULL,
    UNIQUE (facility, patient_id)
);
CREATE INDEX patient_regional ON patient (regional_id);
CREATE INDEX patient_match ON patient (kana_norm, birth_date, sex);
CREATE INDEX patient_birth ON patient (birth_date);
CREATE INDEX patient_pid ON patient (patient_id);

-- Bigrams of the normalized kanji and kana names (with an end mark), for partial name search,
-- with the patient's facility so a search can tell what the searcher may see without reading
-- the patient's row.
CREATE TABLE name_gram (
    gram     TEXT NOT NULL,
    patient  INTEGER NOT NULL,
    facility TEXT NOT NULL,
    PRIMARY KEY (gram, patient)
) WITHOUT ROWID;

-- How many patients each gram has, so a search starts from its rarest gram.
CREATE TABLE name_gram_count (
    gram TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
) WITHOUT ROWID;

-- How far each facility's copy has been indexed: the highest copy `patient` row id seen.
CREATE TABLE index_state (
    facility TEXT PRIMARY KEY,
    last_row INTEGER NOT NULL
);

CREATE TABLE regional_seq (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    next INTEGER NOT NULL
);
INSERT INTO regional_seq (one, next) VALUES (1, 1);

-- Proposals the office rejected, so they are not proposed again (a < b).
CREATE TABLE link_rejected (
    a   INTEGER NOT NULL,
    b   INTEGER NOT NULL,
    by  TEXT NOT NULL,
    at  INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;

-- Consent and publication of one facility's records of one patient.
CREATE TABLE consent (
    patient       INTEGER PRIMARY KEY,      -- patient.id of the owning facility's entry
    state         TEXT NOT NULL,            -- none, public, private, view
    scope         TEXT NOT NULL,            -- basic, clinical
    comprehensive INTEGER NOT NULL,
    facilities    TEXT NOT NULL,            -- named facilities, comma-separated
    consent_date  TEXT NOT NULL,
    form_ref      TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    published_at  INTEGER
);

-- Who may see a published entry now: a facility code, or '*' for comprehensive consent.
CREATE TABLE publication (
    grantee TEXT NOT NULL,
    patient INTEGER NOT NULL,
    PRIMARY KEY (grantee, patient)
) WITHOUT ROWID;
CREATE INDEX publication_patient ON publication (patient);

CREATE TABLE inbox (
    id       INTEGER PRIMARY KEY,
    facility TEXT NOT NULL,
    at       INTEGER NOT NULL,
    subject  TEXT NOT NULL,
    body     TEXT NOT NULL,
    read_at  INTEGER
);
CREATE INDEX inbox_facility ON inbox (facility, id);

-- Emergency (break-glass) access of a core hospital to one regional patient, time-boxed.
CREATE TABLE emergency (
    id          INTEGER PRIMARY KEY,
    facility    TEXT NOT NULL,
    login       TEXT NOT NULL,
    regional_id TEXT NOT NULL,
    reason      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL
);
CREATE INDEX emergency_access ON emergency (facility, regional_id, ends_at);

-- The audit log: append-only, each row chained to the one before by SHA-256 (audit.rs).
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,             -- Unix milliseconds
    login     TEXT NOT NULL,
    facility  TEXT NOT NULL,
    terminal  TEXT NOT NULL,
    action    TEXT NOT NULL,
    patient   TEXT NOT NULL,                -- regional ID, or facility/patient ID, or ''
    owners    TEXT NOT NULL,                -- facilities whose records were shown, comma-separated
    detail    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX audit_facility ON audit (facility, at);
CREATE INDEX audit_patient ON audit (patient, at);
CREATE INDEX audit_at ON audit (at);
CREATE TABLE audit_owner (
    facility TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (facility, seq)
) WITHOUT ROWID;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Opens `region.db` for writing, creating and migrating it.
pub fn open(data: &Path, key: &Key) -> anyhow::Result<Connection> {
    crate::db::open(&data.join(FILE), key, MIGRATIONS)
}

/// An in-memory region database with the schema, for unit tests.
#[cfg(test)]
pub fn memory() -> Connection {
    let c = Connection::open_in_memory().expect("in-memory database");
    for m in MIGRATIONS {
        c.execute_batch(m).expect("region migration");
    }
    c
}

/// A pool of read-only connections to one SQLCipher file. A connection is taken for one job on a
/// blocking thread and put back after.
pub struct Readers {
    path: PathBuf,
    key: Key,
    /// The file's migrations: a reader refuses a file newer than them.
    migrations: &'static [&'static str],
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: PathBuf, key: Key, migrations: &'static [&'static str]) -> Readers {
        Readers {
            path,
            key,
            migrations,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> anyhow::Result<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let c = crate::db::open_read_only(&self.path, &self.key, self.migrations)?;
        // A larger page cache than SQLite's default: searches revisit the same index pages.
        c.execute_batch("PRAGMA cache_size = -32768;")?;
        Ok(c)
    }

    /// Runs `f` on a pooled connection. A connection whose job failed is dropped, not pooled.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let c = self.take()?;
        let out = f(&c);
        if out.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < 8 {
                idle.push(c);
            }
        }
        out
    }
}
