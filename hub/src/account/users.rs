//! Accounts as rows of `region.db`'s `user` table: reading and listing them, adding, disabling,
//! enabling and resetting them, and a person's own password change.

use rusqlite::{params, Connection, OptionalExtension};

use super::password::{check_login, check_password, verify_password};
use super::role::Role;
use super::PASSWORD_LIFETIME;

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

/// Replaces `login`'s verifier `old` with `new`, a verifier of the same password (a rehash at
/// login: the password's age and the previous password stay as they were). Nothing happens if
/// the verifier changed since it was read.
pub fn rehash(c: &Connection, login: &str, old: &str, new: &str) -> rusqlite::Result<bool> {
    Ok(c.execute(
        "UPDATE user SET pw = ?3 WHERE login = ?1 AND pw = ?2",
        params![login, old, new],
    )? == 1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{hash_password, login, Login};

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
}
