//! Small helpers the staff pages share: a typed date to `YYYYMMDD`, a day number to an ISO date,
//! and percent-encoding for links.

/// `YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD` to `YYYYMMDD`, for a day that exists (checked by
/// the `time` crate's calendar: no 1960-02-31).
pub fn parse_date(s: &str) -> Option<String> {
    let d: String = s.chars().filter(|c| *c != '-' && *c != '/').collect();
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month = time::Month::try_from(d[4..6].parse::<u8>().ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(d[..4].parse().ok()?, month, d[6..8].parse().ok()?).ok()?;
    Some(format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

pub(super) fn iso(day: i64) -> String {
    let (y, m, d) = shared::time::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

pub use view::fmt::percent_encode as urlencode;

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_urls() {
        assert_eq!(super::parse_date("1960-01-31").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("19600131").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("1960-13-01"), None);
        assert_eq!(
            super::parse_date("1960-02-31"),
            None,
            "a day that does not exist"
        );
        assert_eq!(super::parse_date("1960-02-29").as_deref(), Some("19600229"));
        assert_eq!(super::parse_date("1961-02-29"), None);
        assert_eq!(super::parse_date("1960/1/31"), None);
        assert_eq!(super::parse_date("' OR 1=1"), None);
        assert_eq!(super::urlencode("a b/検"), "a%20b%2F%E6%A4%9C");
    }
}
