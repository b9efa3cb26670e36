//! The hub's registry of the network: facilities, one-time enrolment tokens (only their hashes),
//! every certificate issued and its revocation. Plain SQL functions on a connection.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub const FILE: &str = "registry.db";

pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE facility (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE token (
    hash        BLOB PRIMARY KEY,
    facility    TEXT NOT NULL REFERENCES facility (code),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT            -- the serial of the certificate it was exchanged for
);
CREATE TABLE certificate (
    serial      TEXT PRIMARY KEY,
    facility    TEXT NOT NULL,
    appliance   TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    how         TEXT NOT NULL,  -- 'enrol' or 'renew'
    revoked_at  INTEGER
);
CREATE INDEX certificate_facility ON certificate (facility);
CREATE TABLE crl_state (one INTEGER PRIMARY KEY CHECK (one = 1), number INTEGER NOT NULL);
INSERT INTO crl_state VALUES (1, 1);
"#,
    r#"
-- Which facility a private address on a LAN certificate belongs to: the first to be issued one
-- for it. Private addresses repeat from clinic to clinic, and every clinic's browsers trust the
-- root, so no two facilities may hold certificates for the same address.
CREATE TABLE lan_address (
    address   TEXT PRIMARY KEY,
    facility  TEXT NOT NULL,
    since     INTEGER NOT NULL
);
"#,
    r#"
-- The serial of the CA that signed each certificate (the issuing CA, or the LAN issuing CA for
-- LAN certificates). Rows from before are filled in when the issuing CA is first replaced.
ALTER TABLE certificate ADD COLUMN issuer TEXT;
"#,
    r#"
-- When the hub first saw the certificate presented: a renewal replaces the certificate before it
-- once the appliance has switched to it, not when it was issued.
ALTER TABLE certificate ADD COLUMN used_at INTEGER;
"#,
];

/// Why a token was not accepted. The message never says whether a token exists for another
/// facility: a wrong token and an unknown one read the same.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the enrolment token is not known: check it, or ask the network office for a new one")]
    Unknown,
    #[error("the enrolment token has already been used: ask the network office for a new one")]
    Used,
    #[error("the enrolment token has expired: ask the network office for a new one")]
    Expired,
}

/// Registers the facility (or renames it) and stores a new token's hash.
pub fn create_token(
    conn: &Connection,
    facility: &str,
    name: &str,
    hash: &[u8; 32],
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    conn.execute(
        "INSERT INTO facility (code, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (code) DO UPDATE SET name = excluded.name",
        params![facility, name, shared::time::rfc3339(now)],
    )?;
    conn.execute(
        "INSERT INTO token (hash, facility, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![&hash[..], facility, now, expires_at],
    )?;
    tx.commit()
}

/// Checks a token and, when good, marks it used in the same transaction: two enrolments racing
/// with one token cannot both win. Returns the facility code and name.
pub fn take_token(
    conn: &Connection,
    hash: &[u8; 32],
    now: i64,
) -> rusqlite::Result<Result<(String, String), TokenError>> {
    let tx = conn.unchecked_transaction()?;
    let row: Option<(String, String, i64, Option<i64>)> = conn
        .query_row(
            "SELECT t.facility, f.name, t.expires_at, t.used_at FROM token t JOIN facility f ON f.code = t.facility WHERE t.hash = ?1",
            [&hash[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let out = match row {
        None => Err(TokenError::Unknown),
        Some((_, _, _, Some(_))) => Err(TokenError::Used),
        Some((_, _, exp, None)) if exp <= now => Err(TokenError::Expired),
        Some((f, name, _, None)) => {
            conn.execute(
                "UPDATE token SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                params![&hash[..], now],
            )?;
            Ok((f, name))
        }
    };
    tx.commit()?;
    Ok(out)
}

/// The facility a token enrols, while it can still be used (known, unused, not expired); nothing
/// is changed.
pub fn token_facility(
    conn: &Connection,
    hash: &[u8; 32],
    now: i64,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT facility FROM token WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![&hash[..], now],
        |r| r.get(0),
    )
    .optional()
}

/// The address a LAN name stands for, written one way (`::ffff:10.0.0.1` and `10.0.0.1` are one),
/// or None for a host name.
pub fn lan_address(name: &str) -> Option<String> {
    match name.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V6(v) => Some(
            v.to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_else(|| v.to_string()),
        ),
        ip => Some(ip.to_string()),
    }
}

/// Checks that the addresses among `names` are free or already `facility`'s; with `claim`,
/// records them as its own. The error names the first address another facility holds.
pub fn lan_addresses(
    conn: &Connection,
    facility: &str,
    names: &[String],
    claim: bool,
    now: i64,
) -> rusqlite::Result<Result<(), String>> {
    for addr in names.iter().filter_map(|n| lan_address(n)) {
        let holder: Option<String> = conn
            .query_row(
                "SELECT facility FROM lan_address WHERE address = ?1",
                [&addr],
                |r| r.get(0),
            )
            .optional()?;
        match holder {
            Some(f) if f != facility => {
                return Ok(Err(format!(
                    "{addr} is already the LAN address of another facility's appliance, and every clinic's browsers trust the network: give this appliance a host name under .{facility}.<LAN domain> instead, or ask the network office to release the address (tsunagi-hub cert release-address)"
                )))
            }
            Some(_) => {}
            None if claim => {
                conn.execute("INSERT INTO lan_address (address, facility, since) VALUES (?1, ?2, ?3)", params![addr, facility, now])?;
            }
            None => {}
        }
    }
    Ok(Ok(()))
}

/// Frees an address for another facility (the network office's decision); true when it was held.
pub fn release_lan_address(conn: &Connection, address: &str) -> rusqlite::Result<bool> {
    let a = lan_address(address).unwrap_or_else(|| address.to_string());
    Ok(conn.execute("DELETE FROM lan_address WHERE address = ?1", [a])? > 0)
}

/// How many certificates `appliance` of `facility` renewed since `since`.
pub fn renewals_since(
    conn: &Connection,
    facility: &str,
    appliance: &str,
    since: i64,
) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM certificate WHERE facility = ?1 AND appliance = ?2 AND how = 'renew' AND issued_at >= ?3", params![facility, appliance, since], |r| r.get(0))
}

/// Links a used token to the certificate it paid for.
pub fn token_used_by(conn: &Connection, hash: &[u8; 32], serial: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE token SET used_by = ?2 WHERE hash = ?1",
        params![&hash[..], serial],
    )?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Cert {
    pub serial: String,
    pub facility: String,
    pub appliance: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub how: String,
    pub revoked_at: Option<i64>,
    /// The serial of the CA that signed it (none for rows from before the registry kept it).
    pub issuer: Option<String>,
}

pub fn record_cert(conn: &Connection, c: &Cert) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO certificate (serial, facility, appliance, not_before, not_after, issued_at, how, issuer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![c.serial, c.facility, c.appliance, c.not_before, c.not_after, c.issued_at, c.how, c.issuer],
    )?;
    Ok(())
}

/// The columns `cert_row` reads, in its order.
const CERT_COLUMNS: &str =
    "serial, facility, appliance, not_before, not_after, issued_at, how, revoked_at, issuer";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Cert> {
    Ok(Cert {
        serial: r.get(0)?,
        facility: r.get(1)?,
        appliance: r.get(2)?,
        not_before: r.get(3)?,
        not_after: r.get(4)?,
        issued_at: r.get(5)?,
        how: r.get(6)?,
        revoked_at: r.get(7)?,
        issuer: r.get(8)?,
    })
}

pub fn certs(conn: &Connection, facility: Option<&str>) -> rusqlite::Result<Vec<Cert>> {
    let mut st = conn.prepare(&format!(
        "SELECT {CERT_COLUMNS} FROM certificate WHERE ?1 IS NULL OR facility = ?1 ORDER BY issued_at, serial"
    ))?;
    let rows = st.query_map([facility], cert_row)?;
    rows.collect()
}

/// Marks the matching certificates revoked; returns the serials newly revoked. Revoking an
/// appliance's certificate by serial also revokes the proxy and LAN certificates issued to that
/// appliance with it (a lost box loses its portal entrance and its LAN name at once).
pub fn revoke(
    conn: &Connection,
    serial: Option<&str>,
    facility: Option<&str>,
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    let tx = conn.unchecked_transaction()?;
    let serials: Vec<String> = conn
        .prepare(
            "SELECT serial FROM certificate WHERE revoked_at IS NULL AND (?1 IS NULL OR serial = lower(?1)) AND (?2 IS NULL OR facility = ?2)
             AND (?1 IS NOT NULL OR ?2 IS NOT NULL)
             UNION
             SELECT c.serial FROM certificate c JOIN certificate a ON a.serial = lower(?1) AND a.how IN ('enrol', 'renew')
               AND c.facility = a.facility AND c.appliance = a.appliance AND c.issued_at = a.issued_at AND c.how IN ('proxy', 'lan')
             WHERE c.revoked_at IS NULL",
        )?
        .query_map(params![serial, facility], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for s in &serials {
        conn.execute(
            "UPDATE certificate SET revoked_at = ?2 WHERE serial = ?1",
            params![s, now],
        )?;
    }
    tx.commit()?;
    Ok(serials)
}

/// Marks the certificates the registry does not know the issuer of (rows from before it kept
/// one) as issued by `issuer`, the issuing CA about to be replaced. LAN certificates come from
/// the LAN issuing CA and are left alone.
pub fn assign_issuer(conn: &Connection, issuer: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE certificate SET issuer = ?1 WHERE issuer IS NULL AND how != 'lan'",
        [issuer],
    )
}

/// Records the first time a certificate was presented.
pub fn mark_used(conn: &Connection, serial: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE certificate SET used_at = ?2 WHERE serial = ?1 AND used_at IS NULL",
        params![serial, now],
    )?;
    Ok(())
}

/// Certificates in use (not revoked or expired) whose issuer the registry does not know: rows
/// from before it kept one that `assign_issuer` has not reached.
pub fn unknown_issuer(conn: &Connection, now: i64) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM certificate WHERE issuer IS NULL AND how != 'lan' AND revoked_at IS NULL AND not_after > ?1", [now], |r| r.get(0))
}

/// The certificates from `issuer` still in use: not revoked, not expired, and not replaced by a
/// later one of the same appliance and kind (its own certificate, or its proxy's; later by
/// insertion, as a renewal can share its second with the enrolment) that has been presented
/// since. A certificate issued but never presented (a renewal whose answer was lost) replaces
/// nothing. Withdrawing the issuer cuts these off.
pub fn in_use_from(conn: &Connection, issuer: &str, now: i64) -> rusqlite::Result<Vec<Cert>> {
    let kind = |t: &str| {
        format!("(CASE WHEN {t}.how IN ('enrol', 'renew') THEN 'appliance' ELSE {t}.how END)")
    };
    let sql = format!(
        "SELECT c.serial, c.facility, c.appliance, c.not_before, c.not_after, c.issued_at, c.how, c.revoked_at, c.issuer FROM certificate c
         WHERE c.issuer = ?1 AND c.revoked_at IS NULL AND c.not_after > ?2 AND c.how != 'lan'
           AND NOT EXISTS (SELECT 1 FROM certificate n WHERE n.facility = c.facility AND n.appliance = c.appliance
                           AND {} = {} AND n.rowid > c.rowid AND n.revoked_at IS NULL AND n.used_at IS NOT NULL)
         ORDER BY c.facility, c.appliance, c.issued_at",
        kind("n"),
        kind("c")
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(params![issuer, now], cert_row)?;
    rows.collect()
}

/// Every revoked serial with its time, and the next CRL number (incremented).
pub fn crl_entries(conn: &Connection) -> rusqlite::Result<(Vec<(String, i64)>, u64)> {
    let list = conn
        .prepare("SELECT serial, revoked_at FROM certificate WHERE revoked_at IS NOT NULL ORDER BY serial")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let n: i64 = conn.query_row(
        "UPDATE crl_state SET number = number + 1 WHERE one = 1 RETURNING number",
        [],
        |r| r.get(0),
    )?;
    Ok((list, n as u64))
}

/// Every facility's code and name.
pub fn facility_names(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare("SELECT code, name FROM facility ORDER BY code")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub fn facility_name(conn: &Connection, code: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT name FROM facility WHERE code = ?1", [code], |r| {
        r.get(0)
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            c.execute_batch(m).unwrap();
        }
        c
    }

    #[test]
    fn a_private_address_belongs_to_one_facility() {
        let c = mem();
        let (a, b) = ("3710000001", "3710000002");
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(lan_addresses(
            &c,
            a,
            &names(&["192.168.1.10", "box.3710000001.tsunagi.internal"]),
            true,
            1
        )
        .unwrap()
        .is_ok());
        assert!(
            lan_addresses(&c, a, &names(&["192.168.1.10"]), true, 2)
                .unwrap()
                .is_ok(),
            "its own again"
        );
        for taken in ["192.168.1.10", "::ffff:192.168.1.10"] {
            let e = lan_addresses(&c, b, &names(&[taken]), false, 3)
                .unwrap()
                .unwrap_err();
            assert!(e.contains("192.168.1.10") && e.contains("host name"), "{e}");
        }
        assert!(lan_addresses(
            &c,
            b,
            &names(&["192.168.1.11", "box.3710000002.tsunagi.internal"]),
            true,
            3
        )
        .unwrap()
        .is_ok());
        assert!(release_lan_address(&c, "192.168.1.10").unwrap());
        assert!(
            lan_addresses(&c, b, &names(&["192.168.1.10"]), true, 4)
                .unwrap()
                .is_ok(),
            "released, then taken by another"
        );
        assert!(lan_addresses(&c, a, &names(&["192.168.1.10"]), false, 5)
            .unwrap()
            .is_err());
    }

    #[test]
    fn a_token_works_once_and_expires() {
        let c = mem();
        create_token(&c, "3712345678", "さぬきクリニック", &[1; 32], 100, 200).unwrap();
        create_token(&c, "3712345678", "さぬきクリニック", &[2; 32], 100, 150).unwrap();
        assert_eq!(
            take_token(&c, &[9; 32], 120).unwrap(),
            Err(TokenError::Unknown)
        );
        assert_eq!(
            take_token(&c, &[1; 32], 120).unwrap().unwrap().0,
            "3712345678"
        );
        assert_eq!(
            take_token(&c, &[1; 32], 121).unwrap(),
            Err(TokenError::Used)
        );
        assert_eq!(
            take_token(&c, &[2; 32], 150).unwrap(),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn revocation_by_serial_or_facility_feeds_the_crl() {
        let c = mem();
        for (s, f) in [
            ("aa", "3712345678"),
            ("bb", "3712345678"),
            ("cc", "3799999999"),
        ] {
            record_cert(
                &c,
                &Cert {
                    serial: s.into(),
                    facility: f.into(),
                    appliance: "x".into(),
                    not_before: 0,
                    not_after: 9,
                    issued_at: 0,
                    how: "enrol".into(),
                    revoked_at: None,
                    issuer: None,
                },
            )
            .unwrap();
        }
        assert!(
            revoke(&c, None, None, 5).unwrap().is_empty(),
            "revoking nothing named must revoke nothing"
        );
        assert_eq!(revoke(&c, Some("AA"), None, 5).unwrap(), ["aa"]);
        assert_eq!(revoke(&c, None, Some("3712345678"), 6).unwrap(), ["bb"]);
        let (list, n1) = crl_entries(&c).unwrap();
        assert_eq!(list, [("aa".to_string(), 5), ("bb".to_string(), 6)]);
        assert!(crl_entries(&c).unwrap().1 > n1);
    }

    #[test]
    fn a_certificate_is_in_use_until_revoked_expired_or_replaced() {
        let c = mem();
        let cert = |serial: &str,
                    appliance: &str,
                    issued_at,
                    not_after,
                    how: &str,
                    issuer: Option<&str>| Cert {
            serial: serial.into(),
            facility: "3712345678".into(),
            appliance: appliance.into(),
            not_before: 0,
            not_after,
            issued_at,
            how: how.into(),
            revoked_at: None,
            issuer: issuer.map(Into::into),
        };
        for x in [
            cert("a1", "box-1", 10, 900, "enrol", None),
            cert("p1", "box-1", 10, 900, "proxy", None),
            cert("l1", "box-1", 10, 900, "lan", None),
            cert("a2", "box-1", 20, 900, "renew", Some("new")), // replaces a1, not p1
            cert("b1", "box-2", 10, 900, "enrol", None),
            cert("c1", "box-3", 10, 50, "enrol", None), // expired at 100
            cert("d1", "box-4", 10, 900, "enrol", None),
        ] {
            record_cert(&c, &x).unwrap();
        }
        revoke(&c, Some("d1"), None, 30).unwrap();
        assert_eq!(
            unknown_issuer(&c, 100).unwrap(),
            3,
            "a1, p1 and b1: not the LAN, expired or revoked ones, nor a2"
        );
        assert_eq!(
            assign_issuer(&c, "old").unwrap(),
            5,
            "every row without an issuer but the LAN certificate"
        );
        assert_eq!(unknown_issuer(&c, 100).unwrap(), 0);
        let in_use = |c: &Connection| {
            in_use_from(c, "old", 100)
                .unwrap()
                .into_iter()
                .map(|c| c.serial)
                .collect::<Vec<String>>()
        };
        assert_eq!(
            in_use(&c),
            ["a1", "p1", "b1"],
            "a2 was issued but never presented: a1 is what box-1 uses"
        );
        mark_used(&c, "a2", 40).unwrap();
        assert_eq!(in_use(&c), ["p1", "b1"]);
        assert_eq!(in_use_from(&c, "new", 100).unwrap().len(), 1);
        assert_eq!(
            certs(&c, None)
                .unwrap()
                .iter()
                .find(|c| c.serial == "l1")
                .unwrap()
                .issuer,
            None
        );
    }

    #[test]
    fn revoking_an_appliance_revokes_its_proxy_and_lan_certificates() {
        let c = mem();
        let cert = |serial: &str, appliance: &str, issued_at, how: &str| Cert {
            serial: serial.into(),
            facility: "3712345678".into(),
            appliance: appliance.into(),
            not_before: 0,
            not_after: 9,
            issued_at,
            how: how.into(),
            revoked_at: None,
            issuer: Some("i1".into()),
        };
        for x in [
            cert("a1", "box-1", 10, "enrol"),
            cert("p1", "box-1", 10, "proxy"),
            cert("l1", "box-1", 10, "lan"),
            cert("a2", "box-1", 20, "renew"),
            cert("p2", "box-1", 20, "proxy"),
            cert("p9", "box-2", 10, "proxy"),
        ] {
            record_cert(&c, &x).unwrap();
        }
        let mut got = revoke(&c, Some("a2"), None, 30).unwrap();
        got.sort();
        assert_eq!(
            got,
            ["a2", "p2"],
            "the renewal's own proxy certificate, not the older set nor another box's"
        );
        let mut got = revoke(&c, Some("a1"), None, 31).unwrap();
        got.sort();
        assert_eq!(got, ["a1", "l1", "p1"]);
    }
}
