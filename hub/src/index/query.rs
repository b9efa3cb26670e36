//! The search: what it asks for, whose view it runs in, and the SQL it builds from the name grams
//! and what the searching facility may see.

use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::entries::{entry, Entry, ENTRY_COLUMNS};
use super::kana_norm;

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
    // A facility patient ID typed without its leading zeros, or in full width, still finds it.
    let id_forms = if q.patient_id.is_empty() {
        String::new()
    } else {
        view::fmt::patient_id_forms(&q.patient_id)
            .into_iter()
            .map(&mut arg)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = if !q.patient_id.is_empty() {
        format!("SELECT id AS patient FROM patient WHERE patient_id IN ({id_forms})")
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
        filters.push(format!("p.patient_id IN ({id_forms})"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{demo, ids, setup};
    use crate::index::{by_facility_pid, upsert};

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
}
