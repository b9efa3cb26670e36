//! Consent and publication per patient and facility, the portal inbox that tells facilities when a
//! publication takes effect, emergency access by core hospitals, and the one rule that decides
//! which facilities' records of a regional patient a facility may see.

use rusqlite::{params, Connection, OptionalExtension};

use crate::index::{self, Entry};

/// How long an emergency access lasts unless the hub is told otherwise.
pub const EMERGENCY_MINUTES: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    None,
    Public,
    Private,
    ViewOnly,
}

impl State {
    pub const ALL: [State; 4] = [State::None, State::Public, State::Private, State::ViewOnly];

    pub fn code(self) -> &'static str {
        match self {
            State::None => "none",
            State::Public => "public",
            State::Private => "private",
            State::ViewOnly => "view",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::None => "未同意",
            State::Public => "公開",
            State::Private => "非公開",
            State::ViewOnly => "閲覧のみ",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.code() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Basic,
    Clinical,
}

impl Scope {
    pub fn code(self) -> &'static str {
        match self {
            Scope::Basic => "basic",
            Scope::Clinical => "clinical",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scope::Basic => "基本情報",
            Scope::Clinical => "診療情報",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "basic" => Some(Scope::Basic),
            "clinical" => Some(Scope::Clinical),
            _ => None,
        }
    }
}

/// The consent recorded for one facility's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub state: State,
    pub scope: Scope,
    pub comprehensive: bool,
    pub facilities: Vec<String>,
    /// YYYY-MM-DD.
    pub consent_date: String,
    pub form_ref: String,
}

impl Default for Consent {
    fn default() -> Consent {
        Consent {
            state: State::None,
            scope: Scope::Basic,
            comprehensive: false,
            facilities: vec![],
            consent_date: String::new(),
            form_ref: String::new(),
        }
    }
}

/// A stored consent with who last changed it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub consent: Consent,
    pub updated_by: String,
    pub updated_at: i64,
    pub published_at: Option<i64>,
}

pub fn get(c: &Connection, patient: i64) -> rusqlite::Result<Option<Stored>> {
    c.query_row(
        "SELECT state, scope, comprehensive, facilities, consent_date, form_ref, updated_by, updated_at, published_at FROM consent WHERE patient = ?1",
        [patient],
        |r| {
            let facilities: String = r.get(3)?;
            Ok(Stored {
                consent: Consent {
                    state: State::parse(&r.get::<_, String>(0)?).unwrap_or(State::None),
                    scope: Scope::parse(&r.get::<_, String>(1)?).unwrap_or(Scope::Basic),
                    comprehensive: r.get(2)?,
                    facilities: facilities.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                    consent_date: r.get(4)?,
                    form_ref: r.get(5)?,
                },
                updated_by: r.get(6)?,
                updated_at: r.get(7)?,
                published_at: r.get(8)?,
            })
        },
    )
    .optional()
}

/// Checks a consent as entered; the message names the field to fix.
pub fn check(k: &Consent, owner: &str) -> Result<(), String> {
    for f in &k.facilities {
        provisioning::token::check_facility(f)
            .map_err(|_| format!("公開先の施設コード「{f}」は10桁の数字ではありません"))?;
        if f == owner {
            return Err("公開先に自施設は指定できません".into());
        }
    }
    if k.state == State::Public && !k.comprehensive && k.facilities.is_empty() {
        return Err("公開する場合は、包括同意にするか公開先の施設を1つ以上指定してください".into());
    }
    if k.state != State::None {
        let d = k.consent_date.as_bytes();
        let ok = d.len() == 10
            && d[4] == b'-'
            && d[7] == b'-'
            && d.iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !ok {
            return Err("同意日を YYYY-MM-DD の形で入力してください".into());
        }
        if k.form_ref.trim().is_empty() {
            return Err("同意書の番号（参照）を入力してください".into());
        }
    }
    if k.form_ref.chars().count() > 100 {
        return Err("同意書の番号は100文字以内にしてください".into());
    }
    Ok(())
}

/// Records a consent for `entry` and updates its publication. Returns the facilities that were
/// told in their inbox that the publication took effect. Run it in the transaction that audits it.
pub fn set(
    c: &Connection,
    entry: &Entry,
    k: &Consent,
    by: &str,
    now: i64,
    owner_name: &str,
) -> rusqlite::Result<Vec<String>> {
    let before = get(c, entry.id)?;
    let was_public = before
        .as_ref()
        .is_some_and(|s| s.consent.state == State::Public);
    let previously: Vec<String> = if was_public {
        grantees(c, entry.id)?
    } else {
        vec![]
    };
    let published_at = if k.state == State::Public {
        before
            .as_ref()
            .and_then(|s| s.published_at)
            .filter(|_| was_public)
            .or(Some(now))
    } else {
        None
    };
    c.execute(
        "INSERT INTO consent (patient, state, scope, comprehensive, facilities, consent_date, form_ref, updated_by, updated_at, published_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (patient) DO UPDATE SET state = excluded.state, scope = excluded.scope, comprehensive = excluded.comprehensive,
           facilities = excluded.facilities, consent_date = excluded.consent_date, form_ref = excluded.form_ref,
           updated_by = excluded.updated_by, updated_at = excluded.updated_at, published_at = excluded.published_at",
        params![entry.id, k.state.code(), k.scope.code(), k.comprehensive, k.facilities.join(","), k.consent_date, k.form_ref.trim(), by, now, published_at],
    )?;
    c.execute("DELETE FROM publication WHERE patient = ?1", [entry.id])?;
    if k.state != State::Public {
        return Ok(vec![]);
    }
    let now_granted: Vec<String> = if k.comprehensive {
        vec!["*".into()]
    } else {
        k.facilities.clone()
    };
    for g in &now_granted {
        c.execute(
            "INSERT OR IGNORE INTO publication (grantee, patient) VALUES (?1, ?2)",
            params![g, entry.id],
        )?;
    }
    // Who to tell: newly named facilities; under comprehensive consent, the facilities that hold
    // the same patient (they are the ones who will look).
    let mut tell: Vec<String> = if k.comprehensive {
        if previously.iter().any(|g| g == "*") {
            vec![]
        } else {
            index::by_regional(c, &entry.regional_id)?
                .into_iter()
                .map(|e| e.facility)
                .filter(|f| f != &entry.facility)
                .collect()
        }
    } else {
        k.facilities
            .iter()
            .filter(|f| !previously.contains(f))
            .cloned()
            .collect()
    };
    tell.sort();
    tell.dedup();
    let scope = k.scope.label();
    for f in &tell {
        c.execute(
            "INSERT INTO inbox (facility, at, subject, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                f,
                now,
                format!("診療情報の公開: {owner_name}（地域患者ID {}）", entry.regional_id),
                format!("{owner_name} が地域患者ID {} の{scope}を貴施設に公開しました。同意日 {}、同意書 {}。", entry.regional_id, k.consent_date, k.form_ref.trim()),
            ],
        )?;
    }
    Ok(tell)
}

fn grantees(c: &Connection, patient: i64) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT grantee FROM publication WHERE patient = ?1")?;
    let rows = st.query_map([patient], |r| r.get(0))?;
    rows.collect()
}

/// Why a facility may see an entry, and how much of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The facility's own records (from its failover copy); no consent needed.
    Own,
    /// Published to the facility, in this scope.
    Consent(Scope),
    /// A core hospital's emergency access, until this time; `refused` when the entry's facility
    /// recorded the patient's refusal (非公開) and a doctor opened it because life is at stake.
    Emergency { until: i64, refused: bool },
}

impl Basis {
    pub fn clinical(self) -> bool {
        !matches!(self, Basis::Consent(Scope::Basic))
    }

    pub fn label(self) -> &'static str {
        match self {
            Basis::Own => "自施設",
            Basis::Consent(Scope::Basic) => "同意（基本情報）",
            Basis::Consent(Scope::Clinical) => "同意（診療情報）",
            Basis::Emergency { refused: false, .. } => "緊急閲覧",
            Basis::Emergency { refused: true, .. } => "緊急閲覧（非公開・生命の危険）",
        }
    }
}

/// Who is looking: the person's facility, and their login when their role may use an emergency
/// access (clinical staff; None for anyone else).
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub facility: &'a str,
    pub emergency_login: Option<&'a str>,
}

/// The entries of a regional patient that `viewer` may see, with the basis of each; entries they
/// may not see are left out. An emergency access counts only for the person who started it,
/// while their facility is still a core hospital and the access has not ended, and it opens an
/// entry whose patient refused (非公開) only when it was started as life at stake.
pub fn visible(
    c: &Connection,
    regional_id: &str,
    viewer: Viewer<'_>,
    now: i64,
) -> rusqlite::Result<Vec<(Entry, Basis)>> {
    let facility = viewer.facility;
    let emergency = match viewer.emergency_login {
        Some(login) => emergency_until(c, facility, login, regional_id, now)?,
        None => None,
    };
    let mut out = Vec::new();
    for e in index::by_regional(c, regional_id)? {
        let refused = || -> rusqlite::Result<bool> {
            Ok(get(c, e.id)?.is_some_and(|s| s.consent.state == State::Private))
        };
        let basis = if e.facility == facility {
            Some(Basis::Own)
        } else if let Some(Emergency { until, life }) = emergency {
            match refused()? {
                false => Some(Basis::Emergency {
                    until,
                    refused: false,
                }),
                true if life => Some(Basis::Emergency {
                    until,
                    refused: true,
                }),
                true => None,
            }
        } else {
            let granted: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM publication WHERE patient = ?1 AND grantee IN (?2, '*'))",
                params![e.id, facility],
                |r| r.get(0),
            )?;
            if granted {
                get(c, e.id)?.map(|s| Basis::Consent(s.consent.scope))
            } else {
                None
            }
        };
        if let Some(b) = basis {
            out.push((e, b));
        }
    }
    Ok(out)
}

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

/// The office's inbox: messages to the network office (its accounts belong to no facility).
pub const OFFICE_INBOX: &str = "";

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

/// A message in a facility's inbox.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: i64,
    pub at: i64,
    pub subject: String,
    pub body: String,
    pub read: bool,
}

pub fn inbox(c: &Connection, facility: &str, limit: i64) -> rusqlite::Result<Vec<Message>> {
    let mut st = c.prepare("SELECT id, at, subject, body, read_at IS NOT NULL FROM inbox WHERE facility = ?1 ORDER BY id DESC LIMIT ?2")?;
    let rows = st.query_map(params![facility, limit], |r| {
        Ok(Message {
            id: r.get(0)?,
            at: r.get(1)?,
            subject: r.get(2)?,
            body: r.get(3)?,
            read: r.get(4)?,
        })
    })?;
    rows.collect()
}

pub fn unread(c: &Connection, facility: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT count(*) FROM inbox WHERE facility = ?1 AND read_at IS NULL",
        [facility],
        |r| r.get(0),
    )
}

pub fn mark_read(c: &Connection, facility: &str, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE inbox SET read_at = ?2 WHERE facility = ?1 AND read_at IS NULL",
        params![facility, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{upsert, Demographics};

    fn entry(c: &Connection, facility: &str, pid: &str) -> Entry {
        let d = Demographics {
            patient_id: pid.into(),
            family_kanji: "山田".into(),
            given_kanji: "太郎".into(),
            family_kana: "ヤマダ".into(),
            given_kana: "タロウ".into(),
            birth_date: "19600101".into(),
            sex: "M".into(),
        };
        let id = upsert(c, facility, &d, 0).unwrap();
        index::get(c, id).unwrap().unwrap()
    }

    #[test]
    fn publication_follows_consent_and_tells_the_facilities() {
        let c = crate::region::memory();
        let (a, b) = ("3710000001", "3710000002");
        let ea = entry(&c, a, "1");
        let eb = entry(&c, b, "2");
        let rid = index::link(&c, ea.id, eb.id).unwrap().unwrap();
        // Before consent, A sees only its own entry.
        let seen = visible(
            &c,
            &rid,
            Viewer {
                facility: a,
                emergency_login: None,
            },
            0,
        )
        .unwrap();
        assert_eq!(
            seen.iter()
                .map(|(e, b)| (e.facility.as_str(), *b))
                .collect::<Vec<_>>(),
            vec![(a, Basis::Own)]
        );
        let mut k = Consent {
            state: State::Public,
            scope: Scope::Clinical,
            comprehensive: false,
            facilities: vec![a.into()],
            consent_date: "2026-11-01".into(),
            form_ref: "F-001".into(),
        };
        check(&k, b).unwrap();
        let eb = index::get(&c, eb.id).unwrap().unwrap();
        assert_eq!(
            set(&c, &eb, &k, "office", 10, "B病院").unwrap(),
            vec![a.to_string()]
        );
        assert_eq!(unread(&c, a).unwrap(), 1);
        let seen = visible(
            &c,
            &rid,
            Viewer {
                facility: a,
                emergency_login: None,
            },
            20,
        )
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1, Basis::Consent(Scope::Clinical));
        // Setting the same consent again tells nobody twice.
        assert!(set(&c, &eb, &k, "office", 30, "B病院").unwrap().is_empty());
        // Withdrawn: gone at once.
        k.state = State::Private;
        set(&c, &eb, &k, "office", 40, "B病院").unwrap();
        assert_eq!(
            visible(
                &c,
                &rid,
                Viewer {
                    facility: a,
                    emergency_login: None
                },
                50
            )
            .unwrap()
            .len(),
            1
        );
        // A third facility that is not named sees nothing of B's entry.
        assert!(visible(
            &c,
            &rid,
            Viewer {
                facility: "3710000003",
                emergency_login: None
            },
            50
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn consent_checks_name_the_field() {
        let mut k = Consent {
            state: State::Public,
            ..Default::default()
        };
        assert!(check(&k, "3710000001").unwrap_err().contains("公開先"));
        k.comprehensive = true;
        assert!(check(&k, "3710000001").unwrap_err().contains("同意日"));
        k.consent_date = "2026-11-01".into();
        assert!(check(&k, "3710000001").unwrap_err().contains("同意書"));
        k.form_ref = "F-1".into();
        check(&k, "3710000001").unwrap();
        k.facilities = vec!["123".into()];
        assert!(check(&k, "3710000001").unwrap_err().contains("10桁"));
    }

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
