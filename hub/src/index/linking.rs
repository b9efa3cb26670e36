//! Linking (名寄せ): proposed links between facilities' entries, and linking, rejecting and
//! unlinking them under a shared regional patient ID.

use rusqlite::{params, Connection};

use super::entries::{by_regional, get, new_regional_id, Entry};

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
    use crate::index::tests::{demo, ids, setup};
    use crate::index::{search, upsert, Query, Scope};

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
