//! The regional patient index (名寄せ): every patient of every facility's copy, with normalized
//! names for search and matching, and the regional patient ID that confirmed links share. Also the
//! search itself, limited to what the searching facility may see.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

pub use view::names::{kana_norm, kanji_norm};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

const ENTRY_COLUMNS: &str =
    "p.id, p.facility, p.patient_id, p.regional_id, p.name_kanji, p.name_kana, p.birth_date, p.sex";

fn entry(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
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

/// What a search asks for; empty fields are not criteria.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub patient_id: String,
    pub regional_id: String,
    pub name: String,
    /// YYYYMMDD.
    pub birth_date: String,
}

impl Query {
    pub fn is_empty(&self) -> bool {
        self.patient_id.is_empty()
            && self.regional_id.is_empty()
            && self.name.is_empty()
            && self.birth_date.is_empty()
    }
}

/// Whose view a search runs in.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A facility's staff: its own patients, those published to it, and the searcher's own
    /// active emergency accesses (`emergency_login`: set only for a role that may use them),
    /// while the facility is a core hospital, and of those only the entries whose patient did not
    /// refuse (非公開) unless the access was started as life at stake.
    Facility {
        code: String,
        now: i64,
        emergency_login: Option<String>,
    },
    /// The network office: every entry (demographics only, for linking and consent).
    Office,
}

/// The most results a search returns; more means "narrow the search".
pub const MAX_RESULTS: usize = 100;

/// Runs a search. Returns at most `MAX_RESULTS` entries and whether there were more.
pub fn search(c: &Connection, q: &Query, scope: &Scope) -> rusqlite::Result<(Vec<Entry>, bool)> {
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |v: String| {
        args.push(rusqlite::types::Value::Text(v));
        format!("?{}", args.len())
    };
    let name = kana_norm(&q.name);
    // For a facility, what it may see of a gram's patient, from the index alone: its own, those
    // published to it or to everyone, and those under its active emergency accesses.
    let seen_by = match scope {
        Scope::Facility {
            code,
            now,
            emergency_login,
        } => {
            let (f, t, l) = (
                arg(code.clone()),
                arg(now.to_string()),
                arg(emergency_login.clone().unwrap_or_default()),
            );
            format!(
                " AND (g0.facility = {f}
                   OR EXISTS (SELECT 1 FROM publication u WHERE u.patient = g0.patient AND u.grantee IN ({f}, '*'))
                   OR g0.patient IN (SELECT p2.id FROM emergency e JOIN patient p2 ON p2.regional_id = e.regional_id
                                     WHERE e.facility = {f} AND e.login = {l} AND {l} != '' AND e.ends_at > CAST({t} AS INTEGER)
                                       AND EXISTS (SELECT 1 FROM core_hospital k WHERE k.facility = {f})
                                       AND (e.life = 1 OR NOT EXISTS (SELECT 1 FROM consent r WHERE r.patient = p2.id AND r.state = 'private'))))"
            )
        }
        Scope::Office => String::new(),
    };
    // The candidate source: the most selective criterion given.
    let source = if !q.patient_id.is_empty() {
        format!(
            "SELECT id AS patient FROM patient WHERE patient_id = {}",
            arg(q.patient_id.clone())
        )
    } else if !q.regional_id.is_empty() {
        format!(
            "SELECT id AS patient FROM patient WHERE regional_id = {}",
            arg(q.regional_id.clone())
        )
    } else if !q.birth_date.is_empty() {
        format!(
            "SELECT id AS patient FROM patient WHERE birth_date = {}",
            arg(q.birth_date.clone())
        )
    } else {
        let cs: Vec<char> = name.chars().collect();
        match cs.len() {
            0 => return Ok((vec![], false)),
            1 => {
                let lo = arg(cs[0].to_string());
                let hi = arg(char::from_u32(cs[0] as u32 + 1)
                    .unwrap_or(char::MAX)
                    .to_string());
                format!("SELECT DISTINCT g0.patient AS patient FROM name_gram g0 WHERE g0.gram >= {lo} AND g0.gram < {hi}{seen_by}")
            }
            _ => {
                // Start from the rarest of the query's grams and keep only patients that have
                // every other gram too: index probes on cached pages, so the patient rows read
                // afterwards are (nearly) only true matches. A gram no one has means no result.
                let mut counted: Vec<(i64, String)> = Vec::new();
                for w in cs.windows(2) {
                    let g: String = w.iter().collect();
                    if counted.iter().any(|(_, x)| *x == g) {
                        continue;
                    }
                    let n: i64 = c
                        .prepare_cached("SELECT n FROM name_gram_count WHERE gram = ?1")?
                        .query_row([&g], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0);
                    counted.push((n, g));
                }
                counted.sort();
                if counted.first().is_none_or(|(n, _)| *n == 0) {
                    return Ok((vec![], false));
                }
                let mut grams = counted.into_iter().map(|(_, g)| g);
                let first = arg(grams.next().unwrap_or_default());
                let mut sql = format!("SELECT g0.patient AS patient FROM name_gram g0 WHERE g0.gram = {first}{seen_by}");
                for g in grams {
                    sql.push_str(&format!(" AND EXISTS (SELECT 1 FROM name_gram g WHERE g.gram = {} AND g.patient = g0.patient)", arg(g)));
                }
                sql
            }
        }
    };
    let mut filters: Vec<String> = Vec::new();
    if !q.patient_id.is_empty() {
        filters.push(format!("p.patient_id = {}", arg(q.patient_id.clone())));
    }
    if !q.regional_id.is_empty() {
        filters.push(format!("p.regional_id = {}", arg(q.regional_id.clone())));
    }
    if !q.birth_date.is_empty() {
        filters.push(format!("p.birth_date = {}", arg(q.birth_date.clone())));
    }
    if !name.is_empty() {
        let n = arg(name.clone());
        filters.push(format!(
            "(instr(p.kana_norm, {n}) > 0 OR instr(p.kanji_norm, {n}) > 0)"
        ));
    }
    if let Scope::Facility {
        code,
        now,
        emergency_login,
    } = scope
    {
        let f = arg(code.clone());
        let t = arg(now.to_string());
        let l = arg(emergency_login.clone().unwrap_or_default());
        filters.push(format!(
            "(p.facility = {f}
              OR EXISTS (SELECT 1 FROM publication u WHERE u.patient = p.id AND u.grantee IN ({f}, '*'))
              OR EXISTS (SELECT 1 FROM emergency e WHERE e.facility = {f} AND e.login = {l} AND {l} != '' AND e.regional_id = p.regional_id
                           AND e.ends_at > CAST({t} AS INTEGER) AND EXISTS (SELECT 1 FROM core_hospital k WHERE k.facility = {f})
                           AND (e.life = 1 OR NOT EXISTS (SELECT 1 FROM consent r WHERE r.patient = p.id AND r.state = 'private'))))"
        ));
    }
    // The candidates stream from indexes alone, each checked against what the searcher may see
    // and the query's other grams before its patient row is read. (A LIMIT in both queries keeps SQLite from flattening the
    // subquery, which would move the gram checks after the row reads; unlike MATERIALIZED it
    // still stops as soon as enough results are found.)
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM ({source} LIMIT 100000000) cand JOIN patient p ON p.id = cand.patient WHERE {} LIMIT {}",
        filters.join(" AND "),
        MAX_RESULTS + 1,
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params_from_iter(args.iter()), entry)?;
    let mut out: Vec<Entry> = rows.collect::<rusqlite::Result<_>>()?;
    let more = out.len() > MAX_RESULTS;
    out.truncate(MAX_RESULTS);
    out.sort_by(|a, b| (&a.regional_id, &a.facility).cmp(&(&b.regional_id, &b.facility)));
    Ok((out, more))
}

/// A proposed link: two facilities' entries with the same normalized kana name, birth date and
/// sex, not yet sharing a regional ID and not rejected.
pub fn proposals(c: &Connection, limit: i64) -> rusqlite::Result<Vec<(Entry, Entry)>> {
    let mut st = c.prepare(
        "SELECT a.id, b.id FROM patient a
         JOIN patient b ON b.kana_norm = a.kana_norm AND b.birth_date = a.birth_date AND b.sex = a.sex AND b.id > a.id
         WHERE a.kana_norm != '' AND a.birth_date != '' AND a.facility != b.facility AND a.regional_id != b.regional_id
           AND NOT EXISTS (SELECT 1 FROM link_rejected r WHERE r.a = a.id AND r.b = b.id)
         ORDER BY a.id, b.id LIMIT ?1",
    )?;
    let pairs: Vec<(i64, i64)> = st
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (a, b) in pairs {
        if let (Some(a), Some(b)) = (get(c, a)?, get(c, b)?) {
            out.push((a, b));
        }
    }
    Ok(out)
}

/// Links two entries: everything under `b`'s regional ID moves to `a`'s. Returns the shared ID.
pub fn link(c: &Connection, a: i64, b: i64) -> rusqlite::Result<Option<String>> {
    let (Some(ea), Some(eb)) = (get(c, a)?, get(c, b)?) else {
        return Ok(None);
    };
    // Keep the older of the two regional IDs.
    let (keep, drop) = if ea.regional_id <= eb.regional_id {
        (ea.regional_id, eb.regional_id)
    } else {
        (eb.regional_id, ea.regional_id)
    };
    c.execute(
        "UPDATE patient SET regional_id = ?1 WHERE regional_id = ?2",
        params![keep, drop],
    )?;
    Ok(Some(keep))
}

pub fn reject(c: &Connection, a: i64, b: i64, by: &str, now: i64) -> rusqlite::Result<()> {
    let (a, b) = (a.min(b), a.max(b));
    c.execute(
        "INSERT OR REPLACE INTO link_rejected (a, b, by, at) VALUES (?1, ?2, ?3, ?4)",
        params![a, b, by, now],
    )?;
    Ok(())
}

/// Takes one entry out of its link with a fresh regional ID; returns it, or None when the entry
/// was not linked to anything.
pub fn unlink(c: &Connection, id: i64) -> rusqlite::Result<Option<String>> {
    let Some(e) = get(c, id)? else {
        return Ok(None);
    };
    let shared: i64 = c.query_row(
        "SELECT count(*) FROM patient WHERE regional_id = ?1",
        [&e.regional_id],
        |r| r.get(0),
    )?;
    if shared < 2 {
        return Ok(None);
    }
    let rid = new_regional_id(c)?;
    c.execute(
        "UPDATE patient SET regional_id = ?1 WHERE id = ?2",
        params![rid, id],
    )?;
    // Unlinking is deliberate: do not propose the same pair again.
    for other in by_regional(c, &e.regional_id)? {
        c.execute(
            "INSERT OR IGNORE INTO link_rejected (a, b, by, at) VALUES (?1, ?2, 'unlink', 0)",
            params![id.min(other.id), id.max(other.id)],
        )?;
    }
    Ok(Some(rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(
        pid: &str,
        fk: &str,
        gk: &str,
        fa: &str,
        ga: &str,
        birth: &str,
        sex: &str,
    ) -> Demographics {
        Demographics {
            patient_id: pid.into(),
            family_kanji: fk.into(),
            given_kanji: gk.into(),
            family_kana: fa.into(),
            given_kana: ga.into(),
            birth_date: birth.into(),
            sex: sex.into(),
        }
    }

    #[test]
    fn kana_normalizes_half_width_hiragana_and_spaces() {
        assert_eq!(kana_norm("ﾔﾏﾀﾞ ﾀﾛｳ"), "ヤマダタロウ");
        assert_eq!(kana_norm("やまだ　たろう"), "ヤマダタロウ");
        assert_eq!(kana_norm("ﾊﾟﾝ ﾎﾟﾎﾟ"), "パンポポ");
        assert_eq!(kana_norm("ｳﾞｨｰﾅｽ"), "ヴィーナス");
        assert_eq!(kana_norm("ｻｲﾄｳ"), "サイトウ");
        assert_eq!(kana_norm("ﾂﾞｯﾄ"), "ヅット");
        assert_eq!(kanji_norm("山田　太郎"), "山田太郎");
    }

    fn setup() -> Connection {
        let c = crate::region::memory();
        c.execute_batch("").unwrap();
        upsert(
            &c,
            "3710000001",
            &demo("0001", "山田", "太郎", "ﾔﾏﾀﾞ", "ﾀﾛｳ", "19600101", "M"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000002",
            &demo("A-77", "山田", "太郎", "ヤマダ", "タロウ", "19600101", "M"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000002",
            &demo("A-78", "山田", "花子", "ヤマダ", "ハナコ", "19620202", "F"),
            0,
        )
        .unwrap();
        upsert(
            &c,
            "3710000003",
            &demo("9", "林", "翔", "ハヤシ", "ショウ", "19900303", "M"),
            0,
        )
        .unwrap();
        c
    }

    fn ids(v: &[Entry]) -> Vec<String> {
        let mut out: Vec<String> = v
            .iter()
            .map(|e| format!("{}/{}", e.facility, e.patient_id))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn search_by_each_criterion_within_scope() {
        let c = setup();
        let office = Scope::Office;
        let q = |name: &str| Query {
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(ids(&search(&c, &q("山田"), &office).unwrap().0).len(), 3);
        assert_eq!(
            ids(&search(&c, &q("やまだ たろう"), &office).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-77"]
        );
        assert_eq!(
            ids(&search(&c, &q("田太"), &office).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-77"]
        );
        assert_eq!(
            ids(&search(&c, &q("林"), &office).unwrap().0),
            vec!["3710000003/9"]
        );
        assert_eq!(
            ids(&search(&c, &q("翔"), &office).unwrap().0),
            vec!["3710000003/9"],
            "a name's last character"
        );
        assert_eq!(
            ids(&search(&c, &q("太山"), &office).unwrap().0),
            Vec::<String>::new(),
            "grams in the wrong order"
        );
        let birth = Query {
            birth_date: "19620202".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(&search(&c, &birth, &office).unwrap().0),
            vec!["3710000002/A-78"]
        );
        let pid = Query {
            patient_id: "0001".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(&search(&c, &pid, &office).unwrap().0),
            vec!["3710000001/0001"]
        );
        // A facility sees its own patients only, until one is published to it.
        let f1 = Scope::Facility {
            code: "3710000001".into(),
            now: 100,
            emergency_login: Some("er".into()),
        };
        assert_eq!(
            ids(&search(&c, &q("山田"), &f1).unwrap().0),
            vec!["3710000001/0001"]
        );
        let b = by_facility_pid(&c, "3710000002", "A-78").unwrap().unwrap();
        c.execute(
            "INSERT INTO publication (grantee, patient) VALUES ('3710000001', ?1)",
            [b.id],
        )
        .unwrap();
        assert_eq!(
            ids(&search(&c, &q("山田"), &f1).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-78"]
        );
        assert_eq!(
            ids(&search(&c, &q("山"), &f1).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-78"]
        );
        // An emergency access opens the patient to search for its starter, at a core hospital,
        // until it ends.
        let taro_b = by_facility_pid(&c, "3710000002", "A-77").unwrap().unwrap();
        c.execute("INSERT INTO emergency (facility, login, regional_id, reason, started_at, ends_at) VALUES ('3710000001', 'er', ?1, 'x', 0, 200)", [&taro_b.regional_id]).unwrap();
        assert_eq!(
            ids(&search(&c, &q("ヤマダ"), &f1).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-78"],
            "not a core hospital"
        );
        crate::consent::set_core(&c, "3710000001", true, 0).unwrap();
        assert_eq!(
            ids(&search(&c, &q("ヤマダ"), &f1).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-77", "3710000002/A-78"]
        );
        assert_eq!(
            ids(&search(&c, &q("タロウ"), &f1).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-77"],
            "the name index path too"
        );
        for other in [Some("ns1".to_string()), None] {
            let colleague = Scope::Facility {
                code: "3710000001".into(),
                now: 100,
                emergency_login: other,
            };
            assert_eq!(
                ids(&search(&c, &q("ヤマダ"), &colleague).unwrap().0),
                vec!["3710000001/0001", "3710000002/A-78"],
                "a colleague does not ride on it"
            );
        }
        let later = Scope::Facility {
            code: "3710000001".into(),
            now: 300,
            emergency_login: Some("er".into()),
        };
        assert_eq!(
            ids(&search(&c, &q("ヤマダ"), &later).unwrap().0),
            vec!["3710000001/0001", "3710000002/A-78"]
        );
        // Injection attempts are only text.
        for evil in ["' OR 1=1 --", "%", "<script>", "\"; DROP TABLE patient; --"] {
            assert!(
                search(&c, &q(evil), &office).unwrap().0.is_empty(),
                "{evil}"
            );
            assert!(search(
                &c,
                &Query {
                    patient_id: evil.into(),
                    ..Default::default()
                },
                &office
            )
            .unwrap()
            .0
            .is_empty());
        }
        assert_eq!(
            c.query_row("SELECT count(*) FROM patient", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            4
        );
        let n = |g: &str| {
            c.query_row("SELECT n FROM name_gram_count WHERE gram = ?1", [g], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        };
        assert_eq!((n("山田"), n("ヤマ"), n("太郎"), n("林翔")), (3, 3, 2, 1));
        // A renamed patient moves its counts.
        upsert(
            &c,
            "3710000003",
            &demo("9", "林", "大翔", "ハヤシ", "ヒロト", "19900303", "M"),
            1,
        )
        .unwrap();
        assert_eq!((n("林翔"), n("林大")), (0, 1));
        assert_eq!(
            ids(&search(&c, &q("林翔"), &office).unwrap().0),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&search(&c, &q("ハヤシヒロト"), &office).unwrap().0),
            vec!["3710000003/9"]
        );
    }

    #[test]
    fn proposals_link_reject_and_unlink() {
        let c = setup();
        let p = proposals(&c, 10).unwrap();
        assert_eq!(p.len(), 1);
        let (a, b) = (&p[0].0, &p[0].1);
        assert_eq!(
            (a.patient_id.as_str(), b.patient_id.as_str()),
            ("0001", "A-77")
        );
        let rid = link(&c, a.id, b.id).unwrap().unwrap();
        assert_eq!(by_regional(&c, &rid).unwrap().len(), 2);
        assert!(proposals(&c, 10).unwrap().is_empty());
        let fresh = unlink(&c, b.id).unwrap().unwrap();
        assert_ne!(fresh, rid);
        assert_eq!(by_regional(&c, &rid).unwrap().len(), 1);
        assert!(
            proposals(&c, 10).unwrap().is_empty(),
            "an unlinked pair is not proposed again"
        );
        assert_eq!(unlink(&c, b.id).unwrap(), None, "not linked any more");
        // An update keeps the regional ID and re-indexes the name.
        upsert(
            &c,
            "3710000002",
            &demo("A-77", "山田", "太朗", "ヤマダ", "タロウ", "19600101", "M"),
            1,
        )
        .unwrap();
        assert_eq!(get(&c, b.id).unwrap().unwrap().regional_id, fresh);
        assert_eq!(
            ids(&search(
                &c,
                &Query {
                    name: "太朗".into(),
                    ..Default::default()
                },
                &Scope::Office
            )
            .unwrap()
            .0),
            vec!["3710000002/A-77"]
        );
        reject(&c, a.id, b.id, "office", 1).unwrap();
    }
}
