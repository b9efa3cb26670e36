//! The store's SQL, as plain functions over a connection: no threads, no I/O but the database.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Result};

use ssmix2::path::StoredName;
use ssmix2::record::Row;

/// What a scan remembers of a file: enough to skip reading it when it has not changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub root: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub inode: i64,
    pub sha256: Vec<u8>,
}

pub fn stats(conn: &Connection, prefix: Option<&str>) -> Result<HashMap<String, Stat>> {
    let mut out = HashMap::new();
    let (lo, hi) = prefix_range(prefix);
    let mut st = conn.prepare_cached("SELECT rel_path, root, size, mtime_ns, inode, sha256 FROM file_stat WHERE rel_path >= ?1 AND rel_path < ?2")?;
    let mut rows = st.query(params![lo, hi])?;
    while let Some(r) = rows.next()? {
        out.insert(
            r.get(0)?,
            Stat {
                root: r.get(1)?,
                size: r.get(2)?,
                mtime_ns: r.get(3)?,
                inode: r.get(4)?,
                sha256: r.get(5)?,
            },
        );
    }
    Ok(out)
}

/// The range of `rel_path` values below a folder prefix (all of them without one).
fn prefix_range(prefix: Option<&str>) -> (String, String) {
    match prefix {
        Some(p) if !p.is_empty() => (format!("{p}/"), format!("{p}0")),
        _ => (String::new(), "\u{10FFFF}".into()),
    }
}

pub fn put_stat(conn: &Connection, rel: &str, s: &Stat) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO file_stat (rel_path, root, size, mtime_ns, inode, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![rel, s.root, s.size, s.mtime_ns, s.inode, s.sha256])?;
    Ok(())
}

pub fn delete_stat(conn: &Connection, rel: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM file_stat WHERE rel_path = ?1")?
        .execute([rel])?;
    Ok(())
}

/// Quarantined files below a prefix: path -> (size, mtime_ns).
pub fn quarantined(conn: &Connection, prefix: Option<&str>) -> Result<HashMap<String, (i64, i64)>> {
    let (lo, hi) = prefix_range(prefix);
    let mut st = conn.prepare_cached(
        "SELECT rel_path, size, mtime_ns FROM quarantine WHERE rel_path >= ?1 AND rel_path < ?2",
    )?;
    let rows = st.query_map(params![lo, hi], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    rows.collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "one per column of the row it writes"
)]
pub fn quarantine(
    conn: &Connection,
    rel: &str,
    root: &str,
    reason: &str,
    size: i64,
    mtime_ns: i64,
    raw: Option<&[u8]>,
    now: &str,
) -> Result<()> {
    let sha = raw.map(|r| shared::chain::content_hash(r).to_vec());
    conn.prepare_cached(
        "INSERT INTO quarantine (rel_path, root, reason, size, mtime_ns, sha256, raw, first_seen, last_tried)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (rel_path) DO UPDATE SET root = ?2, reason = ?3, size = ?4, mtime_ns = ?5, sha256 = ?6, raw = ?7, last_tried = ?8",
    )?
    .execute(params![rel, root, reason, size, mtime_ns, sha, raw, now])?;
    Ok(())
}

pub fn unquarantine(conn: &Connection, rel: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM quarantine WHERE rel_path = ?1")?
        .execute([rel])?
        > 0)
}

pub fn alarm(conn: &Connection, kind: &str, detail: &str, now: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO alarm (at, kind, detail) VALUES (?1, ?2, ?3)")?
        .execute([now, kind, detail])?;
    Ok(())
}

/// A stored file as the ingest needs to see it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: i64,
    pub rel_path: String,
    pub version_path: String,
    pub issued_at: String,
    pub flag: u8,
    pub is_current: bool,
    pub sha256: Vec<u8>,
    pub missing: bool,
}

const FILE_COLS: &str =
    "id, rel_path, version_path, issued_at, flag, is_current, sha256, missing_since IS NOT NULL";

fn stored_file(r: &rusqlite::Row) -> Result<StoredFile> {
    Ok(StoredFile {
        id: r.get(0)?,
        rel_path: r.get(1)?,
        version_path: r.get(2)?,
        issued_at: r.get(3)?,
        flag: r.get(4)?,
        is_current: r.get(5)?,
        sha256: r.get(6)?,
        missing: r.get(7)?,
    })
}

pub fn file_by_path(conn: &Connection, rel: &str) -> Result<Option<StoredFile>> {
    conn.prepare_cached(&format!(
        "SELECT {FILE_COLS} FROM source_file WHERE rel_path = ?1"
    ))?
    .query_row([rel], stored_file)
    .optional()
}

/// Files stored under a prefix whose source has vanished.
pub fn missing_under(conn: &Connection, prefix: Option<&str>) -> Result<Vec<String>> {
    let (lo, hi) = prefix_range(prefix);
    let mut st = conn.prepare_cached("SELECT rel_path FROM source_file WHERE missing_since IS NOT NULL AND rel_path >= ?1 AND rel_path < ?2")?;
    let rows = st.query_map(params![lo, hi], |r| r.get(0))?;
    rows.collect()
}

/// The message header fields kept with a file.
#[derive(Debug, Default, Clone)]
pub struct Header {
    pub message_type: Option<String>,
    pub message_id: Option<String>,
    pub sent_at: Option<String>,
    pub warnings: Option<String>,
}

pub fn insert_file(
    conn: &Connection,
    rel: &str,
    n: &StoredName,
    raw: &[u8],
    sha: &[u8],
    h: &Header,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO source_file (rel_path, version_path, storage, patient_id, care_date, data_type, order_no, issued_at,
            department, flag, sha256, size, raw, message_type, message_id, sent_at, decode_warnings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        rel, n.version_path, n.storage.as_str(), n.patient_id, n.care_date, n.data_type, n.order_no, n.issued_at,
        n.department, n.flag, sha, raw.len() as i64, raw, h.message_type, h.message_id, h.sent_at, h.warnings
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn replace_content(
    conn: &Connection,
    id: i64,
    raw: &[u8],
    sha: &[u8],
    h: &Header,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE source_file SET raw = ?2, sha256 = ?3, size = ?4, message_type = ?5, message_id = ?6, sent_at = ?7,
            decode_warnings = ?8, missing_since = NULL WHERE id = ?1",
    )?
    .execute(params![id, raw, sha, raw.len() as i64, h.message_type, h.message_id, h.sent_at, h.warnings])?;
    Ok(())
}

/// A rename that SS-MIX2 uses to supersede or delete: same bytes, new name (new flag).
pub fn rename_file(conn: &Connection, id: i64, rel: &str, n: &StoredName) -> Result<()> {
    conn.prepare_cached("UPDATE source_file SET rel_path = ?2, version_path = ?3, flag = ?4, missing_since = NULL WHERE id = ?1")?
        .execute(params![id, rel, n.version_path, n.flag])?;
    Ok(())
}

pub fn set_missing(conn: &Connection, rel: &str, since: Option<&str>) -> Result<bool> {
    let changed = if since.is_some() {
        conn.prepare_cached("UPDATE source_file SET missing_since = ?2 WHERE rel_path = ?1 AND missing_since IS NULL")?.execute(params![rel, since])?
    } else {
        conn.prepare_cached("UPDATE source_file SET missing_since = NULL WHERE rel_path = ?1 AND missing_since IS NOT NULL")?.execute([rel])?
    };
    Ok(changed > 0)
}

/// Every stored version of the logical record a file belongs to. For snapshot types (PPR-01,
/// ADT-00, ADT-61) that is every file of the type for the patient.
pub fn versions(conn: &Connection, n: &StoredName) -> Result<Vec<StoredFile>> {
    let mut st = if n.is_snapshot() {
        conn.prepare_cached(&format!(
            "SELECT {FILE_COLS} FROM source_file WHERE patient_id = ?1 AND data_type = ?2 AND storage = ?3 ORDER BY id"
        ))?
    } else {
        conn.prepare_cached(&format!(
            "SELECT {FILE_COLS} FROM source_file WHERE patient_id = ?1 AND data_type = ?2 AND storage = ?3
               AND care_date IS ?4 AND order_no IS ?5 ORDER BY id"
        ))?
    };
    let rows = if n.is_snapshot() {
        st.query_map(
            params![n.patient_id, n.data_type, n.storage.as_str()],
            stored_file,
        )?
        .collect()
    } else {
        st.query_map(
            params![
                n.patient_id,
                n.data_type,
                n.storage.as_str(),
                n.care_date,
                n.order_no
            ],
            stored_file,
        )?
        .collect()
    };
    rows
}

pub fn set_current(conn: &Connection, id: i64, current: bool) -> Result<()> {
    conn.prepare_cached("UPDATE source_file SET is_current = ?2 WHERE id = ?1")?
        .execute(params![id, current])?;
    Ok(())
}

pub fn raw(conn: &Connection, id: i64) -> Result<Vec<u8>> {
    conn.prepare_cached("SELECT raw FROM source_file WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
}

/// Removes the clinical rows a file produced.
pub fn delete_rows(conn: &Connection, file_id: i64) -> Result<()> {
    for t in shared::schema::clinical_tables() {
        conn.prepare_cached(&format!("DELETE FROM {t} WHERE file_id = ?1"))?
            .execute([file_id])?;
    }
    Ok(())
}

pub fn insert_rows(conn: &Connection, file_id: i64, patient_id: &str, rows: &[Row]) -> Result<()> {
    for row in rows {
        let cols: Vec<&str> = row.cols.iter().map(|(c, _)| *c).collect();
        let marks: Vec<String> = (3..cols.len() + 3).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {} (file_id, patient_id, {}) VALUES (?1, ?2, {})",
            row.table,
            cols.join(", "),
            marks.join(", ")
        );
        let mut st = conn.prepare_cached(&sql)?;
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&file_id, &patient_id];
        values.extend(row.cols.iter().map(|(_, v)| v as &dyn rusqlite::ToSql));
        st.execute(values.as_slice())?;
    }
    Ok(())
}

/// Rows per synced table, for `status`.
pub fn table_counts(conn: &Connection) -> Result<Vec<(String, i64)>> {
    shared::schema::SYNCED_TABLES
        .iter()
        .map(|t| {
            Ok((
                t.to_string(),
                conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssmix2::path;

    fn mem() -> Connection {
        crate::store::in_memory()
    }

    #[test]
    fn versions_group_by_logical_key_and_snapshots_by_patient() {
        let c = mem();
        let h = Header::default();
        let a = "999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_2";
        let b = "999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110702224603984_01_1";
        let other = "999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000186_20110702224603984_01_1";
        let p1 = "999/901/9999013/-/PPR-01/9999013_-_PPR-01_000000000000001_20111209163030000_01_2";
        let p2 = "999/901/9999013/-/PPR-01/9999013_-_PPR-01_999999999999999_20111210163030000_01_1";
        for p in [a, b, other, p1, p2] {
            insert_file(&c, p, &path::parse(p).unwrap(), b"x", b"h", &h).unwrap();
        }
        let v = versions(&c, &path::parse(a).unwrap()).unwrap();
        assert_eq!(
            v.iter().map(|f| f.rel_path.as_str()).collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(versions(&c, &path::parse(p2).unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn rows_insert_and_delete_by_file() {
        let c = mem();
        let rows = vec![
            Row {
                table: "allergy",
                cols: vec![
                    ("source", Some("IAM".into())),
                    ("allergen", Some("スギ".into())),
                ],
            },
            Row {
                table: "diagnosis",
                cols: vec![("icd10", Some("K297".into()))],
            },
        ];
        insert_rows(&c, 5, "p", &rows).unwrap();
        insert_rows(&c, 6, "p", &rows[..1]).unwrap();
        delete_rows(&c, 5).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM allergy", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let n: i64 = c
            .query_row("SELECT count(*) FROM diagnosis", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
