//! Password verifiers, made by the hub and checked by the hub and, while the hub is down, by the
//! facility's appliance. A verifier is a standard PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, base64 without padding), which any
//! argon2 library reads. The format before it (`argon2id$m=…,t=…$<salt hex>$<hash hex>`) is
//! still accepted; [`needs_rehash`] says when a login should store a new verifier.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;

// argon2id with the OWASP baseline: 19 MiB, 2 passes, 1 lane.
pub const M_COST: u32 = 19 * 1024;
pub const T_COST: u32 = 2;

/// Parameters beyond these are refused rather than attempted: they would exhaust memory or time.
const MAX_M_COST: u32 = 256 * 1024;
const MAX_T_COST: u32 = 16;

fn argon(m: u32, t: u32) -> Option<Argon2<'static>> {
    let params = argon2::Params::new(m, t, 1, Some(32)).ok()?;
    Some(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// A verifier for `password` with a 16-byte random `salt`.
pub fn hash(password: &str, salt: &[u8; 16]) -> String {
    argon(M_COST, T_COST)
        .expect("valid argon2 parameters")
        .hash_password_with_salt(password.as_bytes(), salt)
        .expect("argon2 with a 16-byte salt")
        .to_string()
}

/// Whether `password` matches `verifier` (either format), in time independent of where they
/// differ.
pub fn verify(verifier: &str, password: &str) -> bool {
    if verifier.starts_with('$') {
        verify_phc(verifier, password)
    } else {
        verify_legacy(verifier, password)
    }
}

/// Whether a login that just succeeded with `verifier` should store a new one: the earlier
/// format, or parameters other than today's.
pub fn needs_rehash(verifier: &str) -> bool {
    let Ok(h) = PasswordHash::new(verifier) else {
        return true;
    };
    h.algorithm.as_str() != "argon2id"
        || h.version != Some(19)
        || h.params.get_decimal("m") != Some(M_COST)
        || h.params.get_decimal("t") != Some(T_COST)
        || h.params.get_decimal("p") != Some(1)
}

/// The verifier in the format before PHC strings (`argon2id$m=…,t=…$<salt hex>$<hash hex>`), which
/// every appliance release reads, so the hub hands verifiers to appliances in it: one that has not
/// been upgraded yet still logs its staff in offline. Lossless for the verifiers the hub writes
/// (argon2id, version 19, one lane, a 16-byte salt, a 32-byte hash); None for any other.
pub fn legacy_form(verifier: &str) -> Option<String> {
    if !verifier.starts_with('$') {
        return verifier
            .starts_with("argon2id$")
            .then(|| verifier.to_string());
    }
    let h = PasswordHash::new(verifier).ok()?;
    let (m, t) = (h.params.get_decimal("m")?, h.params.get_decimal("t")?);
    let salt = h.salt.as_ref()?.as_ref().to_vec();
    let hash = h.hash.as_ref()?.as_bytes().to_vec();
    (h.algorithm.as_str() == "argon2id"
        && h.version == Some(19)
        && h.params.get_decimal("p") == Some(1)
        && salt.len() == 16
        && hash.len() == 32)
        .then(|| {
            format!(
                "argon2id$m={m},t={t}${}${}",
                shared::chain::hex(&salt),
                shared::chain::hex(&hash)
            )
        })
}

fn verify_phc(verifier: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(verifier) else {
        return false;
    };
    let (Some(m), Some(t)) = (h.params.get_decimal("m"), h.params.get_decimal("t")) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id"
        || !(8..=MAX_M_COST).contains(&m)
        || !(1..=MAX_T_COST).contains(&t)
        || h.params.get_decimal("p") != Some(1)
        || h.hash.as_ref().map(|o| o.len()) != Some(32)
    {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &h)
        .is_ok()
}

fn verify_legacy(verifier: &str, password: &str) -> bool {
    let parts: Vec<&str> = verifier.split('$').collect();
    let [alg, params, salt, want] = parts[..] else {
        return false;
    };
    if alg != "argon2id" {
        return false;
    }
    let mut m = 0;
    let mut t = 0;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse().unwrap_or(0),
            Some(("t", v)) => t = v.parse().unwrap_or(0),
            _ => return false,
        }
    }
    let (Some(salt), Some(want)) = (shared::chain::unhex(salt), shared::chain::unhex(want)) else {
        return false;
    };
    if !(8..=MAX_M_COST).contains(&m) || !(1..=MAX_T_COST).contains(&t) || want.len() != 32 {
        return false;
    }
    let mut out = [0u8; 32];
    let Some(a) = argon(m, t) else {
        return false;
    };
    if a.hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    same_bytes(&out, &want)
}

/// Whether two byte strings are equal, in time independent of where they differ (`subtle`).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_only() {
        let v = hash("Pass-word1", &[7; 16]);
        assert!(v.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{v}");
        assert!(verify(&v, "Pass-word1"));
        assert!(!verify(&v, "Pass-word2"));
        assert!(!verify(&v.replace("t=2", "t=1"), "Pass-word1"));
        assert!(
            !verify(&v.replace("m=19456", "m=99999999"), "Pass-word1"),
            "absurd memory is refused, not attempted"
        );
        assert!(!verify("plain", "plain"));
        assert!(!needs_rehash(&v));
    }

    /// A verifier in the format before PHC strings still logs its person in, and says it should
    /// be replaced; one with weaker parameters too.
    #[test]
    fn the_earlier_format_is_accepted_and_asks_to_be_rehashed() {
        let salt = [7u8; 16];
        let mut out = [0u8; 32];
        argon(M_COST, T_COST)
            .unwrap()
            .hash_password_into(b"Pass-word1", &salt, &mut out)
            .unwrap();
        let old = format!(
            "argon2id$m={M_COST},t={T_COST}${}${}",
            shared::chain::hex(&salt),
            shared::chain::hex(&out)
        );
        assert!(verify(&old, "Pass-word1"));
        assert!(!verify(&old, "Pass-word2"));
        assert!(!verify(&old.replace("t=2", "t=1"), "Pass-word1"));
        assert!(needs_rehash(&old));
        let weak = argon(4096, 1)
            .unwrap()
            .hash_password_with_salt(b"x", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&weak, "x") && needs_rehash(&weak));
    }

    /// What the hub hands an appliance reads with the earlier format's own code (what an
    /// appliance not yet upgraded runs), for the same password only.
    #[test]
    fn the_legacy_form_checks_the_same_password_with_the_earlier_code() {
        let v = hash("Pass-word1", &[9; 16]);
        let old = legacy_form(&v).unwrap();
        assert!(old.starts_with("argon2id$m=19456,t=2$09090909"), "{old}");
        assert!(verify_legacy(&old, "Pass-word1"));
        assert!(!verify_legacy(&old, "Pass-word2"));
        assert_eq!(legacy_form(&old).as_deref(), Some(old.as_str()));
        assert_eq!(legacy_form("plain"), None);
        assert_eq!(legacy_form(&v.replace("argon2id", "argon2i")), None);
    }

    #[test]
    fn equal_bytes_in_constant_time() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }
}
