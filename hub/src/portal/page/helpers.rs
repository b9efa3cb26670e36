//! Small helpers the staff pages share: a typed date to `YYYYMMDD`, a day number to an ISO date,
//! and percent-encoding for links.

/// `YYYY-MM-DD` or `YYYYMMDD` to `YYYYMMDD`.
pub fn parse_date(s: &str) -> Option<String> {
    let d: String = s.chars().filter(|c| *c != '-' && *c != '/').collect();
    let ok = d.len() == 8
        && d.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&d[4..6].parse::<u32>().ok()?)
        && (1..=31).contains(&d[6..8].parse::<u32>().ok()?);
    ok.then_some(d)
}

pub(super) fn iso(day: i64) -> String {
    let (y, m, d) = shared::time::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_urls() {
        assert_eq!(super::parse_date("1960-01-31").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("19600131").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("1960-13-01"), None);
        assert_eq!(super::parse_date("' OR 1=1"), None);
        assert_eq!(super::urlencode("a b/検"), "a%20b%2F%E6%A4%9C");
    }
}
