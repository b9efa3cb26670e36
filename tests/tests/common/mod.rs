//! Helpers shared by the end-to-end tests: run the real `tsunagi-edge`, read its store.

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge::store;
use rusqlite::types::ValueRef;

pub struct Edge {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub key: PathBuf,
}

impl Edge {
    pub fn new() -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("store.key");
        let out = Command::new(tests::run::bin("tsunagi-edge"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Edge {
            store: dir.path().join("store"),
            key,
            dir,
        }
    }

    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = Command::new(tests::run::bin("tsunagi-edge"));
        c.arg(sub)
            .arg("--store")
            .arg(&self.store)
            .arg("--key-file")
            .arg(&self.key);
        c
    }

    /// `ingest --once --json` over `roots`; returns the summary and the exit code.
    pub fn ingest(&self, roots: &[&Path], extra: &[&str]) -> (serde_json::Value, i32) {
        let mut c = self.cmd("ingest");
        for r in roots {
            c.arg("--root").arg(r);
        }
        let out = c.args(["--once", "--json"]).args(extra).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "no summary ({e}): stdout {text:?}, stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (summary, code)
    }

    pub fn run(&self, c: &mut Command) -> Output {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn conn(&self) -> rusqlite::Connection {
        store::open_read_only(&self.store, &store::read_key(&self.key).unwrap()).unwrap()
    }

    /// Rows of a query, every value shown as text (blobs as hex).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        rows(&self.conn(), sql)
    }

    pub fn one(&self, sql: &str) -> String {
        let r = self.query(sql);
        assert_eq!(r.len(), 1, "{sql} gave {r:?}");
        r[0][0].clone()
    }

    /// Every synced table, in id order: the store's clinical content.
    pub fn dump(&self) -> Vec<(String, Vec<Vec<String>>)> {
        dump(&self.conn())
    }
}

pub fn rows(c: &rusqlite::Connection, sql: &str) -> Vec<Vec<String>> {
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    let mut out = Vec::new();
    let mut rows = st.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        out.push(
            (0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => "NULL".into(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => v.to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(b) => shared::chain::hex(b),
                })
                .collect(),
        );
    }
    out
}

pub fn dump(c: &rusqlite::Connection) -> Vec<(String, Vec<Vec<String>>)> {
    shared::schema::SYNCED_TABLES
        .iter()
        .map(|t| {
            (
                t.to_string(),
                rows(c, &format!("SELECT * FROM {t} ORDER BY id")),
            )
        })
        .collect()
}

pub fn fixture() -> PathBuf {
    tests::run::fixtures_dir().join("ssmix2/nho-sample")
}

/// Copies a folder tree (files keep their bytes; times are new).
pub fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

pub mod net;

/// Copies the contents of `from` into `to`, merging with what is there.
pub fn merge_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let st = Command::new("cp")
        .arg("-rT")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}
