//! The one rule that decides which facilities' entries of a regional patient a person may see, and
//! on what basis: their own, published to them, or their emergency access.

use rusqlite::{params, Connection};

use super::emergency::{emergency_until, Emergency};
use super::publication::{get, Scope, State};
use crate::index::{self, Entry};

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
