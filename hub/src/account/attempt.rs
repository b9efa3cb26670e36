//! Login attempts: one argon2 verification each whatever the account, the failures that slow down
//! and then lock an account, and the same count in memory for those that must not touch one.

use rusqlite::{params, Connection};

use super::password::verify_password;
use super::users::{get, User};
use super::{LOCK_AFTER, LOCK_FOR, SLOW_AFTER};

/// The outcome of a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Ok {
        must_change: bool,
    },
    /// Wrong ID or password; `delay` seconds to wait before answering.
    Wrong {
        delay: u64,
    },
    Locked {
        until: i64,
    },
    Disabled,
}

/// What the password alone says about a login attempt, before anything is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    NoUser,
    /// A disabled account; `right` says whether the password was right (only then is the
    /// person told the account is disabled: anyone else reads a wrong password).
    Disabled {
        right: bool,
    },
    Locked(i64),
    Right {
        must_change: bool,
    },
    Wrong,
}

/// How many argon2 verifications `check_attempt` has run, so tests can see that an attempt at an
/// unknown, disabled or locked ID does the same work as one at a known ID.
pub static VERIFICATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Checks a password against an account (argon2: run it off the async threads and off the
/// database's writer). One verification runs whatever the account's state, against a dummy
/// verifier for an unknown ID, so timing does not tell which IDs exist or which are locked.
pub fn check_attempt(u: Option<&User>, password: &str, now: i64) -> Check {
    VERIFICATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let right = verify_password(u.map(|u| u.pw.as_str()).unwrap_or(DUMMY), password);
    let Some(u) = u else { return Check::NoUser };
    if u.disabled_at.is_some() {
        return Check::Disabled { right };
    }
    if let Some(until) = u.locked_until.filter(|t| *t > now) {
        return Check::Locked(until);
    }
    if right {
        Check::Right {
            must_change: u.must_change || now >= u.password_expires_at(),
        }
    } else {
        Check::Wrong
    }
}

/// The answer to the `failures`-th consecutive failure, by the same rule as an account's own.
fn after_failures(failures: i64, now: i64) -> Login {
    if failures >= LOCK_AFTER {
        Login::Locked {
            until: now + LOCK_FOR,
        }
    } else {
        Login::Wrong {
            delay: if failures >= SLOW_AFTER {
                1u64 << (failures - SLOW_AFTER + 1).min(3)
            } else {
                0
            },
        }
    }
}

/// Failures that must not touch an account: at an unknown ID, or at an entrance that is not the
/// account's own (another facility's appliance). Counted in memory per entrance and login ID,
/// by the same rule as an account's, so such attempts read exactly like wrong passwords at a
/// real account, and failures at another facility's appliance never lock the account at its own.
#[derive(Default)]
pub struct Strangers {
    seen: std::sync::Mutex<std::collections::HashMap<(String, String), (i64, i64)>>,
}

/// At most this many (entrance, login) pairs are remembered; at the cap, those not locked now
/// are forgotten first.
pub const STRANGERS_KEPT: usize = 20_000;

impl Strangers {
    /// Records a failed attempt at `login` through `entrance` and says what to answer (while a
    /// lock lasts, the lock, without counting).
    pub fn fail(&self, entrance: &str, login: &str, now: i64) -> Login {
        let mut m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (entrance.to_string(), login.to_string());
        let (failures, locked_until) = *m.get(&key).unwrap_or(&(0, 0));
        if locked_until > now {
            return Login::Locked {
                until: locked_until,
            };
        }
        let failures = if locked_until > 0 { 1 } else { failures + 1 };
        let answer = after_failures(failures, now);
        let until = if let Login::Locked { until } = answer {
            until
        } else {
            0
        };
        if m.len() >= STRANGERS_KEPT && !m.contains_key(&key) {
            m.retain(|_, (_, u)| *u > now);
            if m.len() >= STRANGERS_KEPT {
                m.clear();
            }
        }
        m.insert(key, (failures, until));
        answer
    }

    /// Whether attempts at `login` through `entrance` are held off now (the same answer as a
    /// locked account), before a password is even checked.
    pub fn locked(&self, entrance: &str, login: &str, now: i64) -> Option<i64> {
        let m = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(entrance.to_string(), login.to_string()))
            .map(|(_, u)| *u)
            .filter(|u| *u > now)
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Records a checked attempt (the failure count, a lock) and says what to answer. The count is
/// incremented in SQL, so attempts that race each other are all counted.
pub fn record_login(
    c: &Connection,
    login: &str,
    check: Check,
    now: i64,
) -> rusqlite::Result<Login> {
    Ok(match check {
        // The portal counts these in `Strangers`; the command line just says no.
        Check::NoUser => Login::Wrong { delay: 0 },
        Check::Disabled { right: true } => Login::Disabled,
        // A wrong password at a disabled account reads like one at any account.
        Check::Disabled { right: false } => Login::Wrong { delay: 0 },
        Check::Locked(until) => Login::Locked { until },
        Check::Right { must_change } => {
            c.execute(
                "UPDATE user SET failures = 0, locked_until = NULL WHERE login = ?1",
                [login],
            )?;
            Login::Ok { must_change }
        }
        Check::Wrong => {
            let failures: i64 = c.query_row(
                "UPDATE user SET failures = failures + 1 WHERE login = ?1 RETURNING failures",
                [login],
                |r| r.get(0),
            )?;
            let answer = after_failures(failures, now);
            if let Login::Locked { until } = answer {
                c.execute(
                    "UPDATE user SET locked_until = ?2 WHERE login = ?1",
                    params![login, until],
                )?;
            }
            answer
        }
    })
}

/// Checks and records a login in one go (the command line and tests).
pub fn login(c: &Connection, login: &str, password: &str, now: i64) -> rusqlite::Result<Login> {
    let u = get(c, login)?;
    record_login(c, login, check_attempt(u.as_ref(), password, now), now)
}

// A verifier of a random password, for timing parity on unknown IDs.
pub(super) const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{add, disable, hash_password, reset, Error, Role};

    #[test]
    fn failures_slow_down_then_lock_and_reset_lifts_it() {
        let c = crate::region::memory();
        add(
            &c,
            "dr1",
            "医師 一郎",
            "3710000001",
            Role::Doctor,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            add(
                &c,
                "dr1",
                "別人",
                "3710000001",
                Role::Doctor,
                "x",
                "office",
                0
            )
            .unwrap(),
            Err(Error::Taken("dr1".into()))
        );
        assert_eq!(
            login(&c, "dr1", "first1234", 10).unwrap(),
            Login::Ok { must_change: true }
        );
        let mut delays = vec![];
        for _ in 0..LOCK_AFTER - 1 {
            match login(&c, "dr1", "wrong1234", 10).unwrap() {
                Login::Wrong { delay } => delays.push(delay),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, vec![0, 0, 2, 4, 8]);
        assert_eq!(
            login(&c, "dr1", "wrong1234", 10).unwrap(),
            Login::Locked {
                until: 10 + LOCK_FOR
            }
        );
        // Even the right password is refused while locked.
        assert_eq!(
            login(&c, "dr1", "first1234", 20).unwrap(),
            Login::Locked {
                until: 10 + LOCK_FOR
            }
        );
        reset(&c, "dr1", &hash_password("temp5678"), 30)
            .unwrap()
            .unwrap();
        assert_eq!(
            login(&c, "dr1", "temp5678", 40).unwrap(),
            Login::Ok { must_change: true }
        );
        disable(&c, "dr1", 50).unwrap().unwrap();
        assert_eq!(login(&c, "dr1", "temp5678", 60).unwrap(), Login::Disabled);
    }

    #[test]
    fn every_attempt_runs_one_verification_whatever_the_account() {
        use std::sync::atomic::Ordering;
        let c = crate::region::memory();
        add(
            &c,
            "dr2",
            "医師 次郎",
            "3710000001",
            Role::Doctor,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        let known = get(&c, "dr2").unwrap().unwrap();
        let mut locked = known.clone();
        locked.locked_until = Some(1_000);
        let mut disabled = known.clone();
        disabled.disabled_at = Some(1);
        for (u, want) in [
            (None, Check::NoUser),
            (Some(&locked), Check::Locked(1_000)),
            (Some(&disabled), Check::Disabled { right: false }),
            (Some(&known), Check::Wrong),
        ] {
            // Other tests run verifications too: this thread's attempt adds at least one, and the
            // argon2 work is what makes the time, so it must run for every kind of account.
            let before = VERIFICATIONS.load(Ordering::SeqCst);
            let started = std::time::Instant::now();
            assert_eq!(check_attempt(u, "wrong1234", 10), want);
            assert!(
                VERIFICATIONS.load(Ordering::SeqCst) > before,
                "{want:?} ran no verification"
            );
            assert!(
                started.elapsed() >= std::time::Duration::from_millis(1),
                "{want:?} returned without hashing"
            );
        }
    }

    #[test]
    fn strangers_read_like_wrong_passwords_and_touch_no_account() {
        let s = Strangers::default();
        let c = crate::region::memory();
        add(
            &c,
            "dr3",
            "医師 三郎",
            "3710000001",
            Role::Doctor,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        let mut theirs = Vec::new();
        let mut real = Vec::new();
        for i in 0..LOCK_AFTER {
            theirs.push(s.fail("3710000002/box-b", "dr3", 10 + i));
            real.push(login(&c, "dr3", "wrong1234", 10 + i).unwrap());
        }
        // The same answers, one by one, as the account's own failures get.
        assert_eq!(theirs, real);
        assert_eq!(
            s.locked("3710000002/box-b", "dr3", 20),
            Some(10 + LOCK_AFTER - 1 + LOCK_FOR)
        );
        // Another entrance, and the account's own record, are untouched by the first.
        assert_eq!(s.locked("3710000001/box-a", "dr3", 20), None);
        let c2 = crate::region::memory();
        add(
            &c2,
            "dr3",
            "医師 三郎",
            "3710000001",
            Role::Doctor,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        for i in 0..3 * LOCK_AFTER {
            s.fail("3710000002/box-b", "dr3", 10 + i);
        }
        assert_eq!(get(&c2, "dr3").unwrap().unwrap().failures, 0);
        // After the lock, counting starts over.
        assert_eq!(
            s.fail("3710000002/box-b", "dr3", 10 + 10 * LOCK_FOR),
            Login::Wrong { delay: 0 }
        );
        // The map stays bounded however many IDs are tried.
        for i in 0..STRANGERS_KEPT + 10 {
            s.fail("x", &format!("guess{i}"), 1);
        }
        assert!(s.len() <= STRANGERS_KEPT, "{}", s.len());
    }

    #[test]
    fn racing_wrong_attempts_are_all_counted() {
        let c = crate::region::memory();
        add(
            &c,
            "ph1",
            "薬剤 一郎",
            "3710000001",
            Role::Pharmacist,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        // Several attempts checked against the same read of the account, recorded one by one.
        let u = get(&c, "ph1").unwrap();
        let check = check_attempt(u.as_ref(), "wrong1234", 10);
        assert_eq!(check, Check::Wrong);
        let outcomes: Vec<Login> = (0..LOCK_AFTER)
            .map(|_| record_login(&c, "ph1", check, 10).unwrap())
            .collect();
        assert_eq!(
            outcomes.last(),
            Some(&Login::Locked {
                until: 10 + LOCK_FOR
            })
        );
        assert_eq!(get(&c, "ph1").unwrap().unwrap().failures, LOCK_AFTER);
        assert_eq!(check_attempt(None, "x", 10), Check::NoUser);
    }
}
