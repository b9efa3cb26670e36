//! People's accounts: roles, the networks' password rules, argon2id verifiers, lockout after
//! repeated failures, and the SQL on `region.db`'s `user` table.

use rusqlite::{params, Connection, OptionalExtension};

/// Passwords expire after two months.
pub const PASSWORD_LIFETIME: i64 = 61 * 86_400;
/// The home page warns in the last two weeks.
pub const EXPIRY_NOTICE: i64 = 14 * 86_400;
/// From this many consecutive failures on, each answer is slowed down.
pub const SLOW_AFTER: i64 = 3;
/// At this many consecutive failures the account locks.
pub const LOCK_AFTER: i64 = 6;
/// How long a lock lasts; the office can lift it sooner with `user reset`.
pub const LOCK_FOR: i64 = 30 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Office,
    FacilityAdmin,
    Doctor,
    Nurse,
    Pharmacist,
    Clerk,
    Operator,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Office,
        Role::FacilityAdmin,
        Role::Doctor,
        Role::Nurse,
        Role::Pharmacist,
        Role::Clerk,
        Role::Operator,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Role::Office => "office",
            Role::FacilityAdmin => "facility-admin",
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Pharmacist => "pharmacist",
            Role::Clerk => "clerk",
            Role::Operator => "operator",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Office => "事務局",
            Role::FacilityAdmin => "施設管理者",
            Role::Doctor => "医師",
            Role::Nurse => "看護師",
            Role::Pharmacist => "薬剤師",
            Role::Clerk => "事務",
            Role::Operator => "運用担当",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.code() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: use one of {}",
                    Role::ALL
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// Roles that belong to a facility (the others belong to the network).
    pub fn in_facility(self) -> bool {
        !matches!(self, Role::Office | Role::Operator)
    }

    /// Roles that may read clinical records (clerks see basic information only).
    pub fn clinical(self) -> bool {
        matches!(
            self,
            Role::FacilityAdmin | Role::Doctor | Role::Nurse | Role::Pharmacist
        )
    }

    /// Roles that may start an emergency access at a core hospital, and for whom their own
    /// access then counts: the clinical professions, not administrators or clerks.
    pub fn breaks_glass(self) -> bool {
        matches!(self, Role::Doctor | Role::Nurse | Role::Pharmacist)
    }

    /// Roles that may open patient records at all.
    pub fn views_patients(self) -> bool {
        self.in_facility()
    }
}

/// The password rules: 8 to 127 characters of printable ASCII, with letters and digits.
pub fn check_password(p: &str) -> Result<(), &'static str> {
    let n = p.chars().count();
    if !(8..=127).contains(&n) {
        return Err("パスワードは8文字以上127文字以下にしてください");
    }
    if !p.chars().all(|c| c.is_ascii_graphic()) {
        return Err("パスワードに使えるのは半角英字・数字・記号です（空白と全角文字は使えません）");
    }
    if !p.chars().any(|c| c.is_ascii_alphabetic()) || !p.chars().any(|c| c.is_ascii_digit()) {
        return Err("パスワードには英字と数字の両方を含めてください");
    }
    Ok(())
}

/// A login ID: 3 to 32 of a-z, 0-9, '.', '_', '-'.
pub fn check_login(s: &str) -> Result<(), String> {
    let ok = (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "login ID {s:?} must be 3 to 32 characters of a-z, 0-9, '.', '_' or '-'"
        ))
    }
}

/// A verifier for `password`: `argon2id$m=…,t=…$<salt hex>$<hash hex>` (see `view::password`).
pub fn hash_password(password: &str) -> String {
    let salt = provisioning::secret::random32();
    let mut s16 = [0u8; 16];
    s16.copy_from_slice(&salt[..16]);
    view::password::hash(password, &s16)
}

pub use view::password::{same_bytes, verify as verify_password};

/// A temporary password handed to a person by the office or their administrator; it must be
/// changed at first login.
pub fn temporary_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let r = provisioning::secret::random32();
    let mut s: String = r
        .iter()
        .take(12)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    // Guarantee the rules: a letter and a digit.
    s.push(char::from(b'a' + r[12] % 26));
    s.push(char::from(b'2' + r[13] % 8));
    s
}

#[derive(Debug, Clone)]
pub struct User {
    pub login: String,
    pub name: String,
    pub facility: String,
    pub role: Role,
    pub pw: String,
    pub pw_prev: Option<String>,
    pub pw_changed_at: i64,
    pub must_change: bool,
    pub disabled_at: Option<i64>,
    pub failures: i64,
    pub locked_until: Option<i64>,
}

impl User {
    pub fn password_expires_at(&self) -> i64 {
        self.pw_changed_at + PASSWORD_LIFETIME
    }
}

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        login: r.get(0)?,
        name: r.get(1)?,
        facility: r.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::Clerk),
        pw: r.get(4)?,
        pw_prev: r.get(5)?,
        pw_changed_at: r.get(6)?,
        must_change: r.get(7)?,
        disabled_at: r.get(8)?,
        failures: r.get(9)?,
        locked_until: r.get(10)?,
    })
}

const USER_COLUMNS: &str = "login, name, facility, role, pw, pw_prev, pw_changed_at, must_change, disabled_at, failures, locked_until";

pub fn get(c: &Connection, login: &str) -> rusqlite::Result<Option<User>> {
    c.query_row(
        &format!("SELECT {USER_COLUMNS} FROM user WHERE login = ?1"),
        [login],
        user_row,
    )
    .optional()
}

/// The users of one facility, or all users when `facility` is None.
pub fn list(c: &Connection, facility: Option<&str>) -> rusqlite::Result<Vec<User>> {
    let mut st = c.prepare(&format!("SELECT {USER_COLUMNS} FROM user WHERE ?1 IS NULL OR facility = ?1 ORDER BY facility, login"))?;
    let rows = st.query_map([facility], user_row)?;
    rows.collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("login ID {0} is already taken (one person, one ID)")]
    Taken(String),
    #[error("no user {0}")]
    NoUser(String),
    #[error("{0}")]
    Invalid(String),
}

/// Adds a user with a verifier of a temporary password, to be changed at first login.
#[expect(
    clippy::too_many_arguments,
    reason = "one per column of the row it writes"
)]
pub fn add(
    c: &Connection,
    login: &str,
    name: &str,
    facility: &str,
    role: Role,
    verifier: &str,
    by: &str,
    now: i64,
) -> anyhow::Result<Result<(), Error>> {
    if let Err(e) = check_login(login) {
        return Ok(Err(Error::Invalid(e)));
    }
    if name.trim().is_empty() || name.chars().count() > 60 {
        return Ok(Err(Error::Invalid(
            "the person's name must be 1 to 60 characters".into(),
        )));
    }
    if role.in_facility() && provisioning::token::check_facility(facility).is_err() {
        return Ok(Err(Error::Invalid(format!(
            "role {} belongs to a facility: give its 10-digit facility code",
            role.code()
        ))));
    }
    if !role.in_facility() && !facility.is_empty() {
        return Ok(Err(Error::Invalid(format!(
            "role {} belongs to the network, not a facility",
            role.code()
        ))));
    }
    if get(c, login)?.is_some() {
        return Ok(Err(Error::Taken(login.into())));
    }
    c.execute(
        "INSERT INTO user (login, name, facility, role, pw, pw_changed_at, must_change, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?6, ?7)",
        params![login, name.trim(), facility, role.code(), verifier, now, by],
    )?;
    Ok(Ok(()))
}

pub fn disable(c: &Connection, login: &str, now: i64) -> anyhow::Result<Result<(), Error>> {
    let n = c.execute(
        "UPDATE user SET disabled_at = COALESCE(disabled_at, ?2) WHERE login = ?1",
        params![login, now],
    )?;
    Ok(if n == 1 {
        Ok(())
    } else {
        Err(Error::NoUser(login.into()))
    })
}

pub fn enable(c: &Connection, login: &str) -> anyhow::Result<Result<(), Error>> {
    let n = c.execute(
        "UPDATE user SET disabled_at = NULL WHERE login = ?1",
        params![login],
    )?;
    Ok(if n == 1 {
        Ok(())
    } else {
        Err(Error::NoUser(login.into()))
    })
}

/// Sets a new temporary password, lifts a lock and forces a change at next login.
pub fn reset(
    c: &Connection,
    login: &str,
    verifier: &str,
    now: i64,
) -> anyhow::Result<Result<(), Error>> {
    let n = c.execute(
        "UPDATE user SET pw_prev = pw, pw = ?2, pw_changed_at = ?3, must_change = 1, failures = 0, locked_until = NULL WHERE login = ?1",
        params![login, verifier, now],
    )?;
    Ok(if n == 1 {
        Ok(())
    } else {
        Err(Error::NoUser(login.into()))
    })
}

/// Records a person's own password change (already checked against the rules and the previous
/// password).
pub fn set_password(c: &Connection, login: &str, verifier: &str, now: i64) -> rusqlite::Result<()> {
    c.execute("UPDATE user SET pw_prev = pw, pw = ?2, pw_changed_at = ?3, must_change = 0 WHERE login = ?1", params![login, verifier, now])?;
    Ok(())
}

/// Why a password change was refused.
pub fn check_new_password(u: &User, new: &str) -> Result<(), &'static str> {
    check_password(new)?;
    if verify_password(&u.pw, new)
        || u.pw_prev
            .as_deref()
            .is_some_and(|p| verify_password(p, new))
    {
        return Err("現在または前回のパスワードは使えません。別のパスワードにしてください");
    }
    Ok(())
}

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

/// Login attempts per minute, whatever their outcome: at most `PER_TERMINAL` from one terminal
/// (a LAN browser as its appliance names it, or an address on the operators' listener) and
/// `PER_ENTRANCE` through one entrance (an appliance, the operators' listener). Every browser of a
/// clinic reaches the hub from one source, its appliance, so the terminal is the unit a guesser
/// is held to, and the entrance's limit holds a guesser who makes up terminal names. An attempt
/// over a limit is answered at once, before any password is hashed.
pub struct Throttle {
    /// key → (minute, attempts in that minute, attempts in the minute before it).
    counts: std::sync::Mutex<std::collections::HashMap<String, (i64, u32, u32)>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            counts: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Throttle {
    pub const PER_TERMINAL: u32 = 12;
    pub const PER_ENTRANCE: u32 = 120;
    /// At most this many keys are kept; at the cap, the past minutes' are forgotten first.
    pub const KEPT: usize = 20_000;

    /// Counts an attempt from `terminal` through `entrance` at `now`; false when either is over
    /// its limit for the minute up to `now` (the attempt is then not counted). The minute rolls:
    /// the minute before counts for the part of it still within 60 seconds (rounded up), so a
    /// guesser gains nothing at the turn of a clock minute.
    pub fn allow(&self, entrance: &str, terminal: &str, now: i64) -> bool {
        let minute = now.div_euclid(60);
        let left = 60 - now.rem_euclid(60) as u32;
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let keys = [
            (format!("e|{entrance}"), Self::PER_ENTRANCE),
            (format!("t|{entrance}|{terminal}"), Self::PER_TERMINAL),
        ];
        // (this minute's attempts, the minute before's) as of `now`.
        let counts =
            |m: &std::collections::HashMap<String, (i64, u32, u32)>, k: &str| match m.get(k) {
                Some(&(at, cur, prev)) if at == minute => (cur, prev),
                Some(&(at, cur, _)) if at == minute - 1 => (0, cur),
                _ => (0, 0),
            };
        let used = |(cur, prev): (u32, u32)| cur + (prev * left).div_ceil(60);
        if keys.iter().any(|(k, limit)| used(counts(&m, k)) >= *limit) {
            return false;
        }
        if m.len() + 2 > Self::KEPT {
            m.retain(|_, (at, _, _)| *at >= minute - 1);
            if m.len() + 2 > Self::KEPT {
                m.clear();
            }
        }
        for (k, _) in keys {
            let (cur, prev) = counts(&m, &k);
            m.insert(k, (minute, cur + 1, prev));
        }
        true
    }

    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
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
const DUMMY: &str = "argon2id$m=19456,t=2$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(check_password("abc12345").is_ok());
        assert!(check_password("abc1234").is_err(), "7 characters");
        assert!(check_password(&format!("a1{}", "x".repeat(125))).is_ok());
        assert!(
            check_password(&format!("a1{}", "x".repeat(126))).is_err(),
            "128 characters"
        );
        assert!(check_password("abcdefgh").is_err(), "no digit");
        assert!(check_password("12345678").is_err(), "no letter");
        assert!(check_password("abc 12345").is_err(), "space");
        assert!(check_password("ａｂｃ12345").is_err(), "full-width");
        assert!(check_password("P@ss-w0rd!").is_ok(), "symbols allowed");
        for _ in 0..20 {
            assert!(check_password(&temporary_password()).is_ok());
        }
    }

    #[test]
    fn verifiers_check_and_differ_by_salt() {
        let v = hash_password("abc12345");
        assert!(verify_password(&v, "abc12345"));
        assert!(!verify_password(&v, "abc12346"));
        assert_ne!(v, hash_password("abc12345"));
        assert!(!verify_password("garbage", "abc12345"));
        assert!(!verify_password(DUMMY, ""));
    }

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

    #[test]
    fn previous_password_cannot_be_reused_and_expiry_forces_a_change() {
        let c = crate::region::memory();
        add(
            &c,
            "ns1",
            "看護 花子",
            "3710000001",
            Role::Nurse,
            &hash_password("first1234"),
            "office",
            0,
        )
        .unwrap()
        .unwrap();
        set_password(&c, "ns1", &hash_password("second123"), 100).unwrap();
        let u = get(&c, "ns1").unwrap().unwrap();
        assert!(check_new_password(&u, "second123").is_err(), "current");
        assert!(check_new_password(&u, "first1234").is_err(), "previous");
        assert!(check_new_password(&u, "third1234").is_ok());
        assert_eq!(
            login(&c, "ns1", "second123", 100 + PASSWORD_LIFETIME - 1).unwrap(),
            Login::Ok { must_change: false }
        );
        assert_eq!(
            login(&c, "ns1", "second123", 100 + PASSWORD_LIFETIME).unwrap(),
            Login::Ok { must_change: true }
        );
    }

    #[test]
    fn logins_are_throttled_per_terminal_and_per_entrance_and_the_map_stays_bounded() {
        let t = Throttle::default();
        let now = 1_800_000_000; // on a minute boundary (30,000,000 minutes)
        for _ in 0..Throttle::PER_TERMINAL {
            assert!(t.allow("3710000001/box-1", "box-1/t-a", now));
        }
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 5),
            "the terminal's 13th attempt in a minute"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-b", now + 5),
            "another terminal of the clinic still gets through"
        );
        assert!(
            t.allow("3710000002/box-1", "box-1/t-a", now + 5),
            "the same terminal name at another facility's appliance is another terminal"
        );
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 59),
            "the turn of the clock minute gives nothing back"
        );
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 60),
            "nor the first second of the next"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-a", now + 90),
            "half a minute on, half the budget is back"
        );
        for _ in 1..Throttle::PER_TERMINAL / 2 {
            assert!(t.allow("3710000001/box-1", "box-1/t-a", now + 90));
        }
        assert!(
            !t.allow("3710000001/box-1", "box-1/t-a", now + 90),
            "and no more than half"
        );
        assert!(
            t.allow("3710000001/box-1", "box-1/t-a", now + 240),
            "minutes later"
        );
        // Made-up terminal names do not get past the appliance's limit.
        let mut n = 0;
        for i in 0..1000 {
            if t.allow("3710000003/box-9", &format!("box-9/t-{i}"), now) {
                n += 1;
            }
        }
        assert_eq!(n, Throttle::PER_ENTRANCE);
        // However many terminals, the map is bounded.
        for i in 0..30_000 {
            t.allow(&format!("e{i}"), "x", now + 120);
        }
        assert!(t.len() <= Throttle::KEPT, "{}", t.len());
    }
}
