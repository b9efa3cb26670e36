//! What an appliance needs to serve its facility while the hub cannot be reached: the password
//! verifiers of its own facility's staff (never anyone else's), and a place to hand in the
//! accesses it served offline so they join the audit log.

use rusqlite::{params, Connection, OptionalExtension};
pub use shared::offline::{Access, Verifier, ACTIONS};

use crate::account::{self, User};
use crate::audit::{self, Event};

/// The staff of `facility` who may read records offline: enabled, not locked out, past their
/// first-login change, and in a role that reads clinical records (the offline view has no
/// basic-information-only page for clerks). Nobody of another facility, and no office account.
pub fn verifiers(c: &Connection, facility: &str, now: i64) -> rusqlite::Result<Vec<Verifier>> {
    if facility.is_empty() {
        return Ok(Vec::new());
    }
    Ok(account::list(c, Some(facility))?
        .into_iter()
        .filter(|u: &User| {
            u.facility == facility
                && u.disabled_at.is_none()
                && u.locked_until.is_none_or(|t| t <= now)
                && !u.must_change
                && u.role.clinical()
        })
        // In the format every appliance release reads (`view::password::legacy_form`).
        .filter_map(|u| {
            Some(Verifier {
                expires_at: u.password_expires_at(),
                verifier: view::password::legacy_form(&u.pw)?,
                login: u.login,
                name: u.name,
                role: u.role.code().into(),
            })
        })
        .collect())
}

pub const MIGRATION: &str = r#"
-- How far each appliance's offline accesses have been taken into the audit log.
CREATE TABLE offline_upload (
    facility  TEXT NOT NULL,
    appliance TEXT NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (facility, appliance)
);
"#;

fn clip(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

/// Appends the accesses not taken before to the audit log, in one transaction, each under the
/// appliance's facility whatever the batch says, with the patient's regional ID when the index
/// knows the facility's patient ID. Returns how many were new.
pub fn take(
    c: &mut Connection,
    facility: &str,
    appliance: &str,
    batch: &[Access],
) -> Result<usize, String> {
    for a in batch {
        if !ACTIONS.contains(&a.action.as_str()) {
            return Err(format!(
                "access {} has action {:?}; an appliance may only report {}",
                a.seq,
                a.action,
                ACTIONS.join(", ")
            ));
        }
        if a.login.is_empty() || a.login.len() > 64 {
            return Err(format!("access {} has no usable login", a.seq));
        }
    }
    let now_ms = shared::time::now_ms();
    for a in batch {
        // The offline view runs for days at most; an access from before a year ago, or from the
        // future, is not one it served.
        if a.at < now_ms - 400 * 86_400_000 || a.at > now_ms + 300_000 {
            return Err(format!(
                "access {} has a time outside the last year; nothing was taken",
                a.seq
            ));
        }
    }
    let mut run = || -> rusqlite::Result<Result<usize, String>> {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: i64 = tx
            .query_row(
                "SELECT last_seq FROM offline_upload WHERE facility = ?1 AND appliance = ?2",
                params![facility, appliance],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut n = 0;
        let mut top = last;
        // The appliance numbers its accesses one by one (AUTOINCREMENT, never deleted): the new
        // ones follow the last taken without a gap, so a planted high number cannot swallow the
        // genuine accesses after it.
        for (i, a) in batch.iter().filter(|a| a.seq > last).enumerate() {
            if a.seq != last + 1 + i as i64 {
                return Ok(Err(format!(
                    "access {} does not follow {} without a gap; nothing was taken",
                    a.seq,
                    last + i as i64
                )));
            }
        }
        // A served access names someone whose verifier this appliance was given: a person of its
        // own facility. (A failed attempt may name anyone: it is what was typed.)
        for a in batch.iter().filter(|a| a.seq > last && a.outcome == "ok") {
            if account::get(&tx, &a.login)?.is_none_or(|u| u.facility != facility) {
                return Ok(Err(format!(
                    "access {} names {:?}, who is not of facility {facility}; nothing was taken",
                    a.seq,
                    clip(&a.login, 64)
                )));
            }
        }
        for a in batch.iter().filter(|a| a.seq > last) {
            let rid = if a.patient_id.is_empty() {
                None
            } else {
                crate::index::by_facility_pid(&tx, facility, &a.patient_id)?.map(|e| e.regional_id)
            };
            let e = Event {
                login: clip(&a.login, 64),
                facility: facility.to_string(),
                terminal: clip(&format!("{appliance}/{} (offline)", a.terminal), 120),
                action: a.action.clone(),
                patient: rid.clone().unwrap_or_default(),
                owners: if a.patient_id.is_empty() {
                    vec![]
                } else {
                    vec![facility.to_string()]
                },
                detail: if rid.is_none() && !a.patient_id.is_empty() {
                    clip(&format!("patient ID {}", a.patient_id), 80)
                } else {
                    String::new()
                },
                reason: String::new(),
                outcome: clip(&a.outcome, 20),
            };
            audit::append(&tx, a.at, &e)?;
            top = top.max(a.seq);
            n += 1;
        }
        tx.execute(
            "INSERT INTO offline_upload (facility, appliance, last_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (facility, appliance) DO UPDATE SET last_seq = excluded.last_seq",
            params![facility, appliance, top],
        )?;
        tx.commit()?;
        Ok(Ok(n))
    };
    run().map_err(|e| format!("the audit log could not take the accesses: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Role;

    #[test]
    fn only_the_facilitys_own_staff_who_may_read_records() {
        let c = crate::region::memory();
        let v = account::hash_password("Pass-word1");
        for (login, facility, role) in [
            ("dr-a", "3710000001", Role::Doctor),
            ("ck-a", "3710000001", Role::Clerk),
            ("dr-b", "3710000002", Role::Doctor),
            ("off", "", Role::Office),
            ("new-a", "3710000001", Role::Nurse),
        ] {
            account::add(&c, login, "x", facility, role, &v, "t", 0)
                .unwrap()
                .unwrap();
        }
        c.execute("UPDATE user SET must_change = 0 WHERE login != 'new-a'", [])
            .unwrap();
        let handed = verifiers(&c, "3710000001", 10).unwrap();
        // In the format appliances not yet upgraded read, and still the same password.
        assert!(
            handed[0].verifier.starts_with("argon2id$m=19456,t=2$"),
            "{}",
            handed[0].verifier
        );
        assert!(view::password::verify(&handed[0].verifier, "Pass-word1"));
        let got: Vec<String> = handed.into_iter().map(|v| v.login).collect();
        assert_eq!(
            got,
            vec!["dr-a"],
            "not the clerk, not B's doctor, not the office, not one who must change"
        );
        // A locked account's verifier is not handed out while the lock lasts.
        c.execute(
            "UPDATE user SET locked_until = 100 WHERE login = 'dr-a'",
            [],
        )
        .unwrap();
        assert!(verifiers(&c, "3710000001", 10).unwrap().is_empty());
        assert_eq!(verifiers(&c, "3710000001", 100).unwrap().len(), 1);
        account::disable(&c, "dr-a", 5).unwrap().unwrap();
        assert!(verifiers(&c, "3710000001", 100).unwrap().is_empty());
        assert!(verifiers(&c, "", 100).unwrap().is_empty());
    }

    #[test]
    fn accesses_are_taken_once_and_under_the_appliances_facility() {
        let mut c = crate::region::memory();
        let v = account::hash_password("Pass-word1");
        account::add(&c, "dr-a", "x", "3710000001", Role::Doctor, &v, "t", 0)
            .unwrap()
            .unwrap();
        account::add(&c, "dr-b", "x", "3710000002", Role::Doctor, &v, "t", 0)
            .unwrap()
            .unwrap();
        let now = shared::time::now_ms();
        let a = |seq, action: &str| Access {
            seq,
            at: now - 10_000 + seq,
            login: "dr-a".into(),
            terminal: "t-1".into(),
            action: action.into(),
            patient_id: "0001".into(),
            outcome: "ok".into(),
        };
        // An appliance cannot plant another facility's doctor, a time long past, or a jump in the
        // sequence that would swallow the genuine accesses after it.
        let forged = Access {
            login: "dr-b".into(),
            ..a(1, "offline-view")
        };
        assert!(take(&mut c, "3710000001", "box-1", &[forged])
            .unwrap_err()
            .contains("not of facility"));
        let jump = Access {
            seq: 1_000_000,
            ..a(1, "offline-view")
        };
        assert!(take(&mut c, "3710000001", "box-1", &[jump])
            .unwrap_err()
            .contains("without a gap"));
        let old = Access {
            at: now - 40 * 86_400_000 * 11,
            ..a(1, "offline-view")
        };
        assert!(take(&mut c, "3710000001", "box-1", &[old])
            .unwrap_err()
            .contains("outside the last year"));
        // A failed attempt may name anyone: it is what was typed.
        let typo = Access {
            login: "dr-typo".into(),
            outcome: "wrong-password".into(),
            ..a(1, "offline-login")
        };
        assert_eq!(take(&mut c, "3710000001", "box-1", &[typo]), Ok(1));
        assert_eq!(
            take(
                &mut c,
                "3710000001",
                "box-1",
                &[a(1, "offline-login"), a(2, "offline-view")]
            ),
            Ok(1)
        );
        assert_eq!(
            take(
                &mut c,
                "3710000001",
                "box-1",
                &[
                    a(1, "offline-login"),
                    a(2, "offline-view"),
                    a(3, "offline-view")
                ]
            ),
            Ok(1)
        );
        assert_eq!(
            take(&mut c, "3710000001", "box-1", &[a(4, "offline-view")]),
            Ok(1)
        );
        assert!(take(&mut c, "3710000001", "box-1", &[a(5, "consent")])
            .unwrap_err()
            .contains("consent"));
        let rows: Vec<(String, String, String)> = c
            .prepare("SELECT facility, terminal, detail FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|(f, t, d)| f == "3710000001"
            && t == "box-1/t-1 (offline)"
            && d == "patient ID 0001"));
        assert!(matches!(
            audit::verify(&c).unwrap(),
            audit::Verdict::Intact { .. }
        ));
    }
}
