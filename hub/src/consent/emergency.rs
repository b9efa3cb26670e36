//! Emergency access by core hospitals: which facilities are core hospitals, a person's running
//! access, starting and ending one, and the notices to the facilities whose records it opens.

use rusqlite::{params, Connection};

use super::messages::OFFICE_INBOX;
use crate::index;

/// How long an emergency access lasts unless the hub is told otherwise.
pub const EMERGENCY_MINUTES: i64 = 60;

pub fn is_core(c: &Connection, facility: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM core_hospital WHERE facility = ?1)",
        [facility],
        |r| r.get(0),
    )
}

pub fn set_core(c: &Connection, facility: &str, core: bool, now: i64) -> rusqlite::Result<()> {
    if core {
        c.execute(
            "INSERT OR IGNORE INTO core_hospital (facility, since) VALUES (?1, ?2)",
            params![facility, now],
        )?;
    } else {
        c.execute("DELETE FROM core_hospital WHERE facility = ?1", [facility])?;
    }
    Ok(())
}

/// A person's running emergency access to one regional patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emergency {
    pub until: i64,
    /// Started by a doctor stating that the patient's life is at stake: it opens refused entries.
    pub life: bool,
}

/// `login`'s own emergency access to a regional patient, if one is running and their facility is
/// a core hospital now (a facility that stops being one loses its accesses at once).
pub fn emergency_until(
    c: &Connection,
    facility: &str,
    login: &str,
    regional_id: &str,
    now: i64,
) -> rusqlite::Result<Option<Emergency>> {
    let (until, life): (Option<i64>, Option<bool>) = c.query_row(
        "SELECT max(ends_at), max(life) FROM emergency WHERE facility = ?1 AND login = ?4 AND regional_id = ?2 AND ends_at > ?3
           AND EXISTS (SELECT 1 FROM core_hospital WHERE facility = ?1)",
        params![facility, regional_id, now, login],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(until.map(|until| Emergency {
        until,
        life: life.unwrap_or(false),
    }))
}

/// The facilities other than `except` whose entry of a regional patient records the patient's
/// refusal (非公開), sorted, each once.
pub fn refusals(c: &Connection, regional_id: &str, except: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT DISTINCT p.facility FROM patient p JOIN consent k ON k.patient = p.id
          WHERE p.regional_id = ?1 AND p.facility != ?2 AND k.state = 'private' ORDER BY p.facility",
    )?;
    let rows = st.query_map(params![regional_id, except], |r| r.get(0))?;
    rows.collect()
}

/// Starts an emergency access and tells the facilities whose records it opens. With `life` (a
/// doctor stated the patient's life is at stake, after seeing the refusals) it opens refused
/// entries too, and their facilities and the office are told so. Returns when it ends and the
/// facilities told. The caller checks the facility is a core hospital, the role, and audits in
/// the same transaction.
#[expect(
    clippy::too_many_arguments,
    reason = "what one emergency access is: who, where, whom, why, until when"
)]
pub fn start_emergency(
    c: &Connection,
    facility: &str,
    facility_name: &str,
    login: &str,
    regional_id: &str,
    reason: &str,
    minutes: i64,
    life: bool,
    names: &std::collections::HashMap<String, String>,
    now: i64,
) -> rusqlite::Result<(i64, Vec<String>)> {
    let ends = now + minutes * 60;
    c.execute(
        "INSERT INTO emergency (facility, login, regional_id, reason, started_at, ends_at, life) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![facility, login, regional_id, reason, now, ends, life],
    )?;
    let refused = refusals(c, regional_id, facility)?;
    let mut owners: Vec<String> = index::by_regional(c, regional_id)?
        .into_iter()
        .map(|e| e.facility)
        .filter(|f| f != facility)
        .collect();
    owners.sort();
    owners.dedup();
    owners.retain(|o| life || !refused.contains(o));
    let tell = |to: &str, subject: String, body: String| {
        c.execute(
            "INSERT INTO inbox (facility, at, subject, body) VALUES (?1, ?2, ?3, ?4)",
            params![to, now, subject, body],
        )
    };
    for o in &owners {
        if refused.contains(o) {
            tell(
                o,
                format!("非公開の記録の緊急閲覧（生命の危険）: {facility_name}（地域患者ID {regional_id}）"),
                format!("{facility_name} の医師 {login} が、患者の生命に危険があるとして、非公開（閲覧拒否）の意思表示がある地域患者ID {regional_id} の貴施設の記録を緊急閲覧しました（{minutes}分間）。理由: {reason}"),
            )?;
        } else {
            tell(
                o,
                format!("緊急閲覧の報告: {facility_name}（地域患者ID {regional_id}）"),
                format!("{facility_name} の {login} が地域患者ID {regional_id} の記録を同意なしで緊急閲覧しました（{minutes}分間）。理由: {reason}"),
            )?;
        }
    }
    let overridden: Vec<&String> = refused
        .iter()
        .filter(|f| life && owners.contains(f))
        .collect();
    if !overridden.is_empty() {
        let list = overridden
            .iter()
            .map(|f| {
                names
                    .get(f.as_str())
                    .map(|n| format!("{n}（{f}）"))
                    .unwrap_or_else(|| f.to_string())
            })
            .collect::<Vec<_>>()
            .join("、");
        tell(
            OFFICE_INBOX,
            format!("非公開の記録の緊急閲覧（生命の危険）: {facility_name}（地域患者ID {regional_id}）"),
            format!("{facility_name} の医師 {login} が、患者の生命に危険があるとして、非公開の意思表示がある地域患者ID {regional_id} の記録（{list}）を緊急閲覧しました（{minutes}分間）。理由: {reason}"),
        )?;
    }
    Ok((ends, owners))
}

/// Ends a person's own active emergency access to a regional patient now. Returns whether one
/// was active.
pub fn end_emergency(
    c: &Connection,
    facility: &str,
    login: &str,
    regional_id: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let n = c.execute("UPDATE emergency SET ends_at = ?3 WHERE facility = ?1 AND login = ?4 AND regional_id = ?2 AND ends_at > ?3", params![facility, regional_id, now, login])?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::tests::entry;
    use crate::consent::{inbox, set, unread, visible, Basis, Consent, State, Viewer};

    #[test]
    fn emergency_is_the_starters_own_time_boxed_and_reported() {
        let c = crate::region::memory();
        let eb = entry(&c, "3710000002", "2");
        let rid = eb.regional_id.clone();
        set_core(&c, "3710000009", true, 0).unwrap();
        let me = Viewer {
            facility: "3710000009",
            emergency_login: Some("er1"),
        };
        let (ends, told) = start_emergency(
            &c,
            "3710000009",
            "中央病院",
            "er1",
            &rid,
            "意識障害で搬送",
            60,
            false,
            &Default::default(),
            1000,
        )
        .unwrap();
        assert_eq!(ends, 1000 + 3600);
        assert_eq!(told, vec!["3710000002".to_string()]);
        assert_eq!(
            visible(&c, &rid, me, 2000).unwrap()[0].1,
            Basis::Emergency {
                until: ends,
                refused: false
            }
        );
        // Nobody else at the hospital rides on it: not a colleague, not a role without it.
        assert!(visible(
            &c,
            &rid,
            Viewer {
                facility: "3710000009",
                emergency_login: Some("ns2")
            },
            2000
        )
        .unwrap()
        .is_empty());
        assert!(visible(
            &c,
            &rid,
            Viewer {
                facility: "3710000009",
                emergency_login: None
            },
            2000
        )
        .unwrap()
        .is_empty());
        // A hospital that stops being a core hospital loses the access at once.
        set_core(&c, "3710000009", false, 2100).unwrap();
        assert!(
            visible(&c, &rid, me, 2200).unwrap().is_empty(),
            "no longer a core hospital"
        );
        set_core(&c, "3710000009", true, 2300).unwrap();
        assert!(
            visible(&c, &rid, me, ends).unwrap().is_empty(),
            "over when the time is up"
        );
        start_emergency(
            &c,
            "3710000009",
            "中央病院",
            "er1",
            &rid,
            "再搬送",
            60,
            false,
            &Default::default(),
            5000,
        )
        .unwrap();
        assert!(
            !end_emergency(&c, "3710000009", "ns2", &rid, 5100).unwrap(),
            "only its starter ends it"
        );
        assert!(end_emergency(&c, "3710000009", "er1", &rid, 5100).unwrap());
        assert!(
            visible(&c, &rid, me, 5100).unwrap().is_empty(),
            "over when ended"
        );
        assert!(
            !end_emergency(&c, "3710000009", "er1", &rid, 5200).unwrap(),
            "nothing left to end"
        );
        assert_eq!(
            unread(&c, "3710000002").unwrap(),
            2,
            "each start is reported"
        );
    }

    #[test]
    fn a_refusal_holds_against_emergency_unless_a_doctor_states_life_at_stake() {
        let c = crate::region::memory();
        let (a, b, er) = ("3710000001", "3710000002", "3710000009");
        let ea = entry(&c, a, "1");
        let eb = entry(&c, b, "2");
        let rid = index::link(&c, ea.id, eb.id).unwrap().unwrap();
        set_core(&c, er, true, 0).unwrap();
        // B records the patient's refusal; A has recorded nothing.
        let k = Consent {
            state: State::Private,
            consent_date: "2026-11-01".into(),
            form_ref: "F-9".into(),
            ..Default::default()
        };
        set(
            &c,
            &index::get(&c, eb.id).unwrap().unwrap(),
            &k,
            "office",
            10,
            "B病院",
        )
        .unwrap();
        assert_eq!(refusals(&c, &rid, er).unwrap(), vec![b.to_string()]);
        assert!(
            refusals(&c, &rid, b).unwrap().is_empty(),
            "a facility's own refusal is not another's"
        );
        let me = Viewer {
            facility: er,
            emergency_login: Some("dr1"),
        };
        let (_, told) = start_emergency(
            &c,
            er,
            "中央病院",
            "dr1",
            &rid,
            "意識障害",
            60,
            false,
            &Default::default(),
            100,
        )
        .unwrap();
        assert_eq!(
            told,
            vec![a.to_string()],
            "B's records do not open, so B is not told"
        );
        let seen: Vec<_> = visible(&c, &rid, me, 200)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e.facility)
            .collect();
        assert_eq!(
            seen,
            vec![a.to_string()],
            "the refusal holds in an ordinary emergency"
        );
        let search = |login: &str| {
            let q = index::Query {
                regional_id: rid.clone(),
                ..Default::default()
            };
            index::search(
                &c,
                &q,
                &index::Scope::Facility {
                    code: er.into(),
                    now: 200,
                    emergency_login: Some(login.into()),
                },
            )
            .unwrap()
            .0
            .into_iter()
            .map(|e| e.facility)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            search("dr1"),
            vec![a.to_string()],
            "nor does search show the refused entry"
        );
        assert_eq!(unread(&c, OFFICE_INBOX).unwrap(), 0);
        // Life at stake: B's records open for this doctor alone, and B and the office are told.
        let names = [(b.to_string(), "B病院".to_string())].into_iter().collect();
        let (_, told) = start_emergency(
            &c,
            er,
            "中央病院",
            "dr1",
            &rid,
            "心停止、既往不明",
            60,
            true,
            &names,
            300,
        )
        .unwrap();
        assert_eq!(told, vec![a.to_string(), b.to_string()]);
        let seen = visible(&c, &rid, me, 400).unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen
            .iter()
            .any(|(e, basis)| e.facility == b
                && matches!(basis, Basis::Emergency { refused: true, .. })));
        assert!(seen.iter().any(|(e, basis)| e.facility == a
            && matches!(basis, Basis::Emergency { refused: false, .. })));
        assert_eq!(search("dr1").len(), 2);
        assert_eq!(
            search("ns1"),
            Vec::<String>::new(),
            "a colleague gets nothing"
        );
        let to_b = inbox(&c, b, 10).unwrap();
        assert!(
            to_b[0].subject.contains("非公開") && to_b[0].subject.contains("生命の危険"),
            "{:?}",
            to_b[0].subject
        );
        let to_office = inbox(&c, OFFICE_INBOX, 10).unwrap();
        assert_eq!(to_office.len(), 1);
        assert!(
            to_office[0].body.contains("B病院（3710000002）") && to_office[0].body.contains("dr1"),
            "{}",
            to_office[0].body
        );
        // Ended, it all closes again.
        assert!(end_emergency(&c, er, "dr1", &rid, 500).unwrap());
        assert!(visible(&c, &rid, me, 500).unwrap().is_empty());
    }
}
