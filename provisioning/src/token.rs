//! One-time enrolment tokens: 128 random bits shown once to the network office, stored only as a
//! SHA-256 hash, valid for one enrolment before they expire.

/// A new token as a person types it: `tsg-` and 32 lower-case hexadecimal digits in groups of 8.
pub fn generate() -> String {
    let r = crate::secret::random32();
    let h = shared::chain::hex(&r[..16]);
    format!(
        "tsg-{}-{}-{}-{}",
        &h[0..8],
        &h[8..16],
        &h[16..24],
        &h[24..32]
    )
}

/// The stored form of a token; spaces and case are forgiven so a token read over the phone works.
pub fn hash(token: &str) -> [u8; 32] {
    let norm: String = token
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    shared::chain::content_hash(norm.as_bytes())
}

/// Checks a facility code: the 10-digit medical-institution code (prefecture 2, point table 1,
/// institution 7).
pub fn check_facility(code: &str) -> Result<(), String> {
    if code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("facility code {code:?} is not a 10-digit medical-institution code (for example 3712345678)"))
    }
}

/// Checks an appliance id: 1 to 64 characters of letters, digits, `-` and `_`.
pub fn check_appliance(id: &str) -> Result<(), String> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "appliance id {id:?} must be 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_forgivingly() {
        let a = generate();
        assert_ne!(a, generate());
        assert_eq!(a.len(), 4 + 32 + 3);
        assert_eq!(hash(&a), hash(&format!(" {} ", a.to_uppercase())));
        assert_ne!(hash(&a), hash(&generate()));
    }

    #[test]
    fn facility_codes_are_ten_digits() {
        assert!(check_facility("3712345678").is_ok());
        assert!(check_facility("371234567").is_err());
        assert!(check_facility("37123456ab").is_err());
        assert!(check_appliance("box-1").is_ok());
        assert!(check_appliance("a/b").is_err());
    }
}
