//! `offline.db`, and the one module that reads or writes it: what the appliance keeps so its
//! facility can work while the hub is down (the password verifiers of its own staff, as the hub
//! last handed them over, and the accesses served offline until the hub has taken them into its
//! audit log), the terminals the facility enrolled, and the posture's book ([`posture`]).
//! SQLCipher, with a key derived from the store's.

use std::path::Path;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

use crate::store::Key;

mod posture;

pub const FILE: &str = "offline.db";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS verifier (
    login      TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    login      TEXT NOT NULL,
    terminal   TEXT NOT NULL,
    action     TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    uploaded   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
-- Terminals the facility administrator enrolled: the SHA-256 of the terminal's cookie, its name.
CREATE TABLE IF NOT EXISTS terminal (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL
);
-- One-time codes for enrolling a terminal, stored as hashes.
CREATE TABLE IF NOT EXISTS terminal_code (
    hash       BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"#;

pub use shared::offline::{Access, Verifier};

/// `offline.db`, owned by its own thread ([`sqlkit::Worker`]): the proxy's handlers reach it
/// with [`Local::call`], the posture and telemetry threads with the blocking methods below.
pub struct Local {
    worker: sqlkit::Worker,
}

/// The key label of `offline.db` under the store key.
const LABEL: &str = "offline.db";

impl Local {
    pub fn open(state_dir: &Path, key: &Key) -> anyhow::Result<Local> {
        let path = state_dir.join(FILE);
        let conn = open_file(&path, key).with_context(|| {
            format!("{} cannot be read with the store key: it is damaged or belongs to another key; move it away (offline logins and unsent offline accesses in it are lost)", path.display())
        })?;
        conn.execute_batch(SCHEMA)
            .and_then(|_| conn.execute_batch(posture::SCHEMA))
            .with_context(|| format!("{}: cannot create its tables", path.display()))?;
        Ok(Local {
            worker: sqlkit::Worker::start("offline-db", conn, sqlkit::Queue::Unbounded)?,
        })
    }

    /// Runs `f` on `offline.db`'s thread and waits for it (from a blocking thread).
    pub(crate) fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(self.worker.call_blocking(f)??)
    }

    /// Runs `f` on `offline.db`'s thread from async code, without blocking the runtime.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(self.worker.call(f).await??)
    }

    /// Replaces the verifiers with the hub's current list, in one transaction: people the hub
    /// no longer lists (disabled, moved, removed) can no longer log in offline.
    pub fn replace_verifiers(&self, list: &[Verifier], now: i64) -> anyhow::Result<()> {
        let list = list.to_vec();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM verifier", [])?;
            for v in &list {
                tx.execute("INSERT INTO verifier (login, name, role, verifier, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)", params![v.login, v.name, v.role, v.verifier, v.expires_at])?;
            }
            tx.execute("INSERT INTO meta (k, v) VALUES ('verifiers_at', ?1) ON CONFLICT (k) DO UPDATE SET v = excluded.v", [now.to_string()])?;
            tx.commit()
        })
    }

    pub fn verifier(&self, login: &str) -> anyhow::Result<Option<Verifier>> {
        let login = login.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT login, name, role, verifier, expires_at FROM verifier WHERE login = ?1",
                [&login],
                |r| {
                    Ok(Verifier {
                        login: r.get(0)?,
                        name: r.get(1)?,
                        role: r.get(2)?,
                        verifier: r.get(3)?,
                        expires_at: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// How many staff can log in offline (the login page says so when none can yet).
    pub fn verifier_count(&self) -> anyhow::Result<i64> {
        self.with(count_verifiers)
    }

    /// Records an access before it is served; if it cannot be recorded, it must not be served.
    pub fn record(
        &self,
        at_ms: i64,
        login: &str,
        terminal: &str,
        action: &str,
        patient_id: &str,
        outcome: &str,
    ) -> anyhow::Result<i64> {
        let row = (
            at_ms,
            login.to_string(),
            terminal.to_string(),
            action.to_string(),
            patient_id.to_string(),
            outcome.to_string(),
        );
        self.with(move |c| {
            let (at_ms, login, terminal, action, patient_id, outcome) = row;
            c.execute(
                "INSERT INTO access (at, login, terminal, action, patient_id, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![at_ms, login, terminal, action, patient_id, outcome],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Accesses the hub has not taken yet, oldest first.
    pub fn pending(&self, limit: i64) -> anyhow::Result<Vec<Access>> {
        self.with(move |c| {
            let mut st = c.prepare("SELECT seq, at, login, terminal, action, patient_id, outcome FROM access WHERE uploaded = 0 ORDER BY seq LIMIT ?1")?;
            let rows = st.query_map([limit], |r| {
                Ok(Access { seq: r.get(0)?, at: r.get(1)?, login: r.get(2)?, terminal: r.get(3)?, action: r.get(4)?, patient_id: r.get(5)?, outcome: r.get(6)? })
            })?;
            rows.collect()
        })
    }

    /// Marks accesses up to `seq` as taken by the hub.
    pub fn uploaded(&self, seq: i64) -> anyhow::Result<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE access SET uploaded = 1 WHERE seq <= ?1 AND uploaded = 0",
                [seq],
            )
            .map(|_| ())
        })
    }
}

impl Local {
    /// A one-time code that enrols one terminal under `name`, valid until `expires_at`.
    pub fn terminal_code(&self, name: &str, now: i64, expires_at: i64) -> anyhow::Result<String> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 40 || name.chars().any(char::is_control) {
            anyhow::bail!(
                "a terminal's name is 1 to 40 characters, for example 受付PC1 or 診察室2"
            );
        }
        let code = provisioning::token::generate();
        let hash = provisioning::token::hash(&code);
        let name = name.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM terminal_code WHERE expires_at < ?1", [now])?;
            c.execute(
                "INSERT INTO terminal_code (hash, name, expires_at) VALUES (?1, ?2, ?3)",
                params![&hash[..], name, expires_at],
            )
        })?;
        Ok(code)
    }

    /// Takes a code (once) and enrols the terminal whose cookie hashes to `id` under its name.
    pub fn enrol_terminal(
        &self,
        code: &str,
        id: &[u8; 32],
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let id = *id;
        self.take_terminal_code(code, now, move |tx, name| {
            tx.execute("INSERT INTO terminal (id, name, enrolled_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET name = excluded.name, enrolled_at = excluded.enrolled_at", params![&id[..], name, now]).map(|_| ())
        })
    }

    /// Takes a one-time terminal code (once, if valid) and, in the same transaction, does what
    /// the code was for with the terminal's name. Returns the name, or None for a wrong, used or
    /// expired code.
    pub(crate) fn take_terminal_code(
        &self,
        code: &str,
        now: i64,
        enrol: impl FnOnce(&rusqlite::Transaction, &str) -> rusqlite::Result<()> + Send + 'static,
    ) -> anyhow::Result<Option<String>> {
        let hash = provisioning::token::hash(code);
        self.with(move |c| {
            let tx = c.transaction()?;
            let name: Option<String> = tx
                .query_row(
                    "SELECT name FROM terminal_code WHERE hash = ?1 AND expires_at >= ?2",
                    params![&hash[..], now],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(n) = &name {
                tx.execute("DELETE FROM terminal_code WHERE hash = ?1", [&hash[..]])?;
                enrol(&tx, n)?;
            }
            tx.commit()?;
            Ok(name)
        })
    }

    /// The enrolled name of the terminal whose cookie hashes to `id`.
    pub fn terminal_name(&self, id: &[u8; 32]) -> anyhow::Result<Option<String>> {
        let id = *id;
        self.with(move |c| {
            c.query_row("SELECT name FROM terminal WHERE id = ?1", [&id[..]], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Every enrolled terminal's cookie hash and name.
    pub fn terminal_ids(&self) -> anyhow::Result<Vec<([u8; 32], String)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, name FROM terminal")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?;
            Ok(rows
                .filter_map(|r| r.ok())
                .filter_map(|(id, n)| Some((<[u8; 32]>::try_from(id.as_slice()).ok()?, n)))
                .collect())
        })
    }

    /// Enrolled terminals: name and when.
    pub fn terminals(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, enrolled_at FROM terminal ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Forgets the terminals enrolled under `name`; returns how many.
    pub fn forget_terminal(&self, name: &str) -> anyhow::Result<usize> {
        let name = name.to_string();
        self.with(move |c| c.execute("DELETE FROM terminal WHERE name = ?1", [name]))
    }
}

pub(crate) fn count_verifiers(c: &mut Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT count(*) FROM verifier", [], |r| r.get(0))
}

/// Opens `offline.db` with its key: the HMAC-SHA256 of the label under the store key
/// ([`Key::derive_hmac`]), as every appliance release has keyed it. It stays so: a box that rolls
/// back to its previous release (docs/image.md) must still open the file, with its offline logins
/// and unsent accesses.
fn open_file(path: &Path, key: &Key) -> sqlkit::Result<Connection> {
    sqlkit::open(path, &key.derive_hmac(LABEL), &[], "tsunagi-edge")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// offline.db is keyed as every earlier appliance keyed it, so a file written before this
    /// release opens with its accesses (and one written now opens with an earlier release).
    #[test]
    fn an_offline_db_keeps_the_key_earlier_appliances_wrote_it_with() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_bytes([9; 32]);
        let path = dir.path().join(FILE);
        {
            let c = Connection::open(&path).unwrap();
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]);
            let tag = ring::hmac::sign(&k, b"offline.db");
            c.execute_batch(&format!(
                "PRAGMA key = \"x'{}'\";",
                shared::chain::hex(tag.as_ref())
            ))
            .unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute("INSERT INTO access (at, login, terminal, action, patient_id, outcome) VALUES (1, 'dr', 't', 'view', 'P1', 'ok')", []).unwrap();
        }
        let l = Local::open(dir.path(), &key).unwrap();
        assert_eq!(l.pending(10).unwrap()[0].patient_id, "P1");
        drop(l);
        sqlkit::open(&path, &key.derive_hmac(LABEL), &[], "t").unwrap();
        assert!(Local::open(dir.path(), &Key::from_bytes([1; 32])).is_err());
    }

    #[test]
    fn verifiers_are_replaced_and_accesses_wait_for_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_bytes([9; 32]);
        let l = Local::open(dir.path(), &key).unwrap();
        let v = |login: &str| Verifier {
            login: login.into(),
            name: "n".into(),
            role: "doctor".into(),
            verifier: "argon2id$x".into(),
            expires_at: 9,
        };
        l.replace_verifiers(&[v("a"), v("b")], 1).unwrap();
        l.replace_verifiers(&[v("b")], 2).unwrap();
        assert!(
            l.verifier("a").unwrap().is_none(),
            "a person the hub no longer lists cannot log in offline"
        );
        assert_eq!(l.verifier("b").unwrap(), Some(v("b")));
        let s1 = l.record(1, "b", "t", "offline-login", "", "ok").unwrap();
        let s2 = l.record(2, "b", "t", "offline-view", "0001", "ok").unwrap();
        assert_eq!(l.pending(10).unwrap().len(), 2);
        l.uploaded(s1).unwrap();
        assert_eq!(
            l.pending(10)
                .unwrap()
                .iter()
                .map(|a| a.seq)
                .collect::<Vec<_>>(),
            vec![s2]
        );
        drop(l);
        // Another key cannot read it, and says what to do.
        let err = Local::open(dir.path(), &Key::from_bytes([1; 32]))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("move it away"), "{err:#}");
        let l = Local::open(dir.path(), &key).unwrap();
        assert_eq!(
            l.pending(10).unwrap().len(),
            1,
            "unsent accesses survive a restart"
        );
    }

    #[test]
    fn a_terminal_code_enrols_one_terminal_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = Local::open(dir.path(), &Key::from_bytes([3; 32])).unwrap();
        assert!(l.terminal_code("", 0, 10).is_err());
        let code = l.terminal_code("受付PC1", 0, 100).unwrap();
        let (t1, t2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(l.enrol_terminal("wrong", &t1, 5).unwrap(), None);
        assert_eq!(
            l.enrol_terminal(&code.to_uppercase(), &t1, 5)
                .unwrap()
                .as_deref(),
            Some("受付PC1")
        );
        assert_eq!(
            l.enrol_terminal(&code, &t2, 6).unwrap(),
            None,
            "a code works once"
        );
        assert_eq!(l.terminal_name(&t1).unwrap().as_deref(), Some("受付PC1"));
        assert_eq!(l.terminal_name(&t2).unwrap(), None);
        let late = l.terminal_code("診察室2", 0, 10).unwrap();
        assert_eq!(
            l.enrol_terminal(&late, &t2, 11).unwrap(),
            None,
            "an expired code does nothing"
        );
        assert_eq!(l.terminals().unwrap().len(), 1);
        assert_eq!(l.forget_terminal("受付PC1").unwrap(), 1);
        assert_eq!(l.terminal_name(&t1).unwrap(), None);
    }
}
