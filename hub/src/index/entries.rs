//! The index's entries: a facility's patients added and updated from its copy (with the name grams
//! search uses), and read back by id, regional ID or facility and patient ID.

use rusqlite::{params, Connection, OptionalExtension};

use super::{kana_norm, kanji_norm};

/// The bigrams of a normalized name with an end mark, so every character starts a gram.
fn grams(norm: &str) -> Vec<String> {
    let mut cs: Vec<char> = norm.chars().collect();
    if cs.is_empty() {
        return vec![];
    }
    cs.push('$');
    cs.windows(2).map(|w| w.iter().collect()).collect()
}

/// A patient as the index holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub facility: String,
    pub patient_id: String,
    pub regional_id: String,
    pub name_kanji: String,
    pub name_kana: String,
    pub birth_date: String,
    pub sex: String,
}

pub(super) const ENTRY_COLUMNS: &str =
    "p.id, p.facility, p.patient_id, p.regional_id, p.name_kanji, p.name_kana, p.birth_date, p.sex";

pub(super) fn entry(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: r.get(0)?,
        facility: r.get(1)?,
        patient_id: r.get(2)?,
        regional_id: r.get(3)?,
        name_kanji: r.get(4)?,
        name_kana: r.get(5)?,
        birth_date: r.get(6)?,
        sex: r.get(7)?,
    })
}

/// A new regional patient ID: `R` and ten digits.
pub fn new_regional_id(c: &Connection) -> rusqlite::Result<String> {
    let n: i64 = c.query_row(
        "UPDATE regional_seq SET next = next + 1 WHERE one = 1 RETURNING next - 1",
        [],
        |r| r.get(0),
    )?;
    Ok(format!("R{n:010}"))
}

/// A patient as a facility's copy describes it.
#[derive(Debug, Clone, Default)]
pub struct Demographics {
    pub patient_id: String,
    pub family_kanji: String,
    pub given_kanji: String,
    pub family_kana: String,
    pub given_kana: String,
    pub birth_date: String,
    pub sex: String,
}

/// Adds or updates one facility's patient; a new patient gets a new regional ID. Returns the
/// entry's id.
pub fn upsert(c: &Connection, facility: &str, d: &Demographics, now: i64) -> rusqlite::Result<i64> {
    let name_kanji = format!("{} {}", d.family_kanji, d.given_kanji)
        .trim()
        .to_string();
    // Kana are shown as normalized (full width, sound marks joined), with the space kept.
    let name_kana = format!("{} {}", kana_norm(&d.family_kana), kana_norm(&d.given_kana))
        .trim()
        .to_string();
    let (kj, kn) = (kanji_norm(&name_kanji), kana_norm(&name_kana));
    let existing: Option<(i64, String, String)> = c
        .query_row(
            "SELECT id, kanji_norm, kana_norm FROM patient WHERE facility = ?1 AND patient_id = ?2",
            params![facility, d.patient_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let id = match existing {
        Some((id, old_kj, old_kn)) => {
            c.execute(
                "UPDATE patient SET name_kanji = ?2, name_kana = ?3, kanji_norm = ?4, kana_norm = ?5, birth_date = ?6, sex = ?7, indexed_at = ?8 WHERE id = ?1",
                params![id, name_kanji, name_kana, kj, kn, d.birth_date, d.sex, now],
            )?;
            // The old grams come from the old names, so each is removed by its key.
            let mut del =
                c.prepare_cached("DELETE FROM name_gram WHERE gram = ?1 AND patient = ?2")?;
            let mut dec =
                c.prepare_cached("UPDATE name_gram_count SET n = n - 1 WHERE gram = ?1")?;
            for g in grams(&old_kj).into_iter().chain(grams(&old_kn)) {
                if del.execute(params![g, id])? == 1 {
                    dec.execute([g])?;
                }
            }
            id
        }
        None => {
            let rid = new_regional_id(c)?;
            c.execute(
                "INSERT INTO patient (facility, patient_id, regional_id, name_kanji, name_kana, kanji_norm, kana_norm, birth_date, sex, indexed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![facility, d.patient_id, rid, name_kanji, name_kana, kj, kn, d.birth_date, d.sex, now],
            )?;
            c.last_insert_rowid()
        }
    };
    let mut ins = c.prepare_cached(
        "INSERT OR IGNORE INTO name_gram (gram, patient, facility) VALUES (?1, ?2, ?3)",
    )?;
    let mut inc = c.prepare_cached("INSERT INTO name_gram_count (gram, n) VALUES (?1, 1) ON CONFLICT (gram) DO UPDATE SET n = n + 1")?;
    for g in grams(&kj).into_iter().chain(grams(&kn)) {
        if ins.execute(params![g, id, facility])? == 1 {
            inc.execute([g])?;
        }
    }
    Ok(id)
}

/// Patients of a copy changed since row `after`: the newest row of each patient ID, and the
/// highest row id read.
pub fn changed_in_copy(
    copy: &Connection,
    after: i64,
) -> rusqlite::Result<(Vec<Demographics>, i64)> {
    let mut st = copy.prepare(
        "SELECT id, patient_id, family_kanji, given_kanji, family_kana, given_kana, birth_date, sex FROM patient WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = st.query([after])?;
    let mut by_pid: std::collections::HashMap<String, Demographics> =
        std::collections::HashMap::new();
    let mut last = after;
    while let Some(r) = rows.next()? {
        last = r.get(0)?;
        let s = |i: usize| -> rusqlite::Result<String> {
            Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default())
        };
        let d = Demographics {
            patient_id: s(1)?,
            family_kanji: s(2)?,
            given_kanji: s(3)?,
            family_kana: s(4)?,
            given_kana: s(5)?,
            birth_date: s(6)?,
            sex: s(7)?,
        };
        by_pid.insert(d.patient_id.clone(), d);
    }
    let mut out: Vec<Demographics> = by_pid.into_values().collect();
    out.sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
    Ok((out, last))
}

pub fn indexed_up_to(c: &Connection, facility: &str) -> rusqlite::Result<i64> {
    Ok(c.query_row(
        "SELECT last_row FROM index_state WHERE facility = ?1",
        [facility],
        |r| r.get(0),
    )
    .optional()?
    .unwrap_or(0))
}

/// Indexes what a facility's copy gained since the last run, in one transaction. Returns how many
/// patients were added or updated.
pub fn catch_up(
    region: &mut Connection,
    copy: &Connection,
    facility: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    let after = indexed_up_to(region, facility)?;
    let (changed, last) = changed_in_copy(copy, after)?;
    if last == after {
        return Ok(0);
    }
    let tx = region.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for d in &changed {
        upsert(&tx, facility, d, now)?;
    }
    tx.execute("INSERT INTO index_state (facility, last_row) VALUES (?1, ?2) ON CONFLICT (facility) DO UPDATE SET last_row = excluded.last_row", params![facility, last])?;
    tx.commit()?;
    Ok(changed.len())
}

pub fn get(c: &Connection, id: i64) -> rusqlite::Result<Option<Entry>> {
    c.query_row(
        &format!("SELECT {ENTRY_COLUMNS} FROM patient p WHERE p.id = ?1"),
        [id],
        entry,
    )
    .optional()
}

pub fn by_regional(c: &Connection, regional_id: &str) -> rusqlite::Result<Vec<Entry>> {
    let mut st = c.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM patient p WHERE p.regional_id = ?1 ORDER BY p.facility, p.patient_id"))?;
    let rows = st.query_map([regional_id], entry)?;
    rows.collect()
}

pub fn by_facility_pid(
    c: &Connection,
    facility: &str,
    patient_id: &str,
) -> rusqlite::Result<Option<Entry>> {
    c.query_row(
        &format!(
            "SELECT {ENTRY_COLUMNS} FROM patient p WHERE p.facility = ?1 AND p.patient_id = ?2"
        ),
        params![facility, patient_id],
        entry,
    )
    .optional()
}
