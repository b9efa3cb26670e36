//! The password and login-ID rules, argon2id verifiers, and the temporary passwords the office or
//! an administrator hands out.

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

pub use view::password::{needs_rehash, same_bytes, verify as verify_password};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::attempt::DUMMY;

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
}
