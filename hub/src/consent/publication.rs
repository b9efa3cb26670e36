//! Consent as recorded for one facility's entry (its state, scope and form), its checks, and the
//! publication that follows from it, with the inbox notices to the facilities it is published to.

use rusqlite::{params, Connection, OptionalExtension};

use crate::index::{self, Entry};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::tests::entry;
    use crate::consent::{unread, visible, Basis, Viewer};

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
}
