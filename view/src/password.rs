//! Password verifiers: `argon2id$m=…,t=…$<salt hex>$<hash hex>`, made by the hub and checked by
//! the hub and, while the hub is down, by the facility's appliance.

// argon2id with the OWASP baseline: 19 MiB, 2 passes, 1 lane.
pub const M_COST: u32 = 19 * 1024;
pub const T_COST: u32 = 2;

fn argon(m: u32, t: u32) -> argon2::Argon2<'static> {
    let params = argon2::Params::new(m, t, 1, Some(32)).expect("valid argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// A verifier for `password` with a 16-byte random `salt`.
pub fn hash(password: &str, salt: &[u8; 16]) -> String {
    let mut out = [0u8; 32];
    argon(M_COST, T_COST)
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .expect("argon2 with a 16-byte salt");
    format!(
        "argon2id$m={M_COST},t={T_COST}${}${}",
        shared::chain::hex(salt),
        shared::chain::hex(&out)
    )
}

/// Whether `password` matches `verifier`, in time independent of where they differ.
pub fn verify(verifier: &str, password: &str) -> bool {
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
    // Refuse parameters too weak to be ours, and ones so large they would exhaust memory.
    if !(8..=256 * 1024).contains(&m) || !(1..=16).contains(&t) || want.len() != 32 {
        return false;
    }
    let mut out = [0u8; 32];
    if argon(m, t)
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    same_bytes(&out, &want)
}

/// Whether two byte strings are equal, in time independent of where they differ.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_only() {
        let v = hash("Pass-word1", &[7; 16]);
        assert!(v.starts_with("argon2id$m=19456,t=2$"));
        assert!(verify(&v, "Pass-word1"));
        assert!(!verify(&v, "Pass-word2"));
        assert!(!verify(&v.replace("t=2", "t=1"), "Pass-word1"));
        assert!(
            !verify(&v.replace("m=19456", "m=99999999"), "Pass-word1"),
            "absurd memory is refused, not attempted"
        );
        assert!(!verify("plain", "plain"));
    }
}
