//! Times and codes as people read them on the portal.

/// `2026-11-21 19:30` in Japan time (UTC+9, no daylight saving) of Unix seconds.
pub fn jst(secs: i64) -> String {
    let t = secs + 9 * 3600;
    let (y, m, d) = shared::time::civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s / 60 % 60)
}

/// An HL7 time (`YYYYMMDD[HHMM[SS]]…`) as people read it.
pub fn hl7_time(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit) {
        let mut out = format!("{}/{}/{}", &s[0..4], &s[4..6], &s[6..8]);
        if b.len() >= 12 && b[8..12].iter().all(u8::is_ascii_digit) {
            out.push_str(&format!(" {}:{}", &s[8..10], &s[10..12]));
        }
        out
    } else {
        s.to_string()
    }
}

/// `M` → 男, `F` → 女.
pub fn sex_label(s: &str) -> &'static str {
    match s {
        "M" => "男",
        "F" => "女",
        "O" => "その他",
        _ => "不明",
    }
}

/// `%`-encodes everything but RFC 3986's unreserved characters (`percent-encoding`), for an ID
/// in a link or a path: the hub's portal and the appliance's offline view write the same links.
pub fn percent_encode(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

/// The eras of 和暦 with the first day of each (YYYYMMDD) and its letter, newest first.
const ERAS: [(u32, char, i64); 5] = [
    (20190501, 'R', 2019),
    (19890108, 'H', 1989),
    (19261225, 'S', 1926),
    (19120730, 'T', 1912),
    (18680101, 'M', 1868),
];

/// The date of `YYYYMMDD…` as numbers, if it is one.
fn ymd(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..8].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (y, m, d) = (
        s[0..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..8].parse().ok()?,
    );
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// `19660606` → `S41/06/06`, as K-MIX R writes a birth date in 和暦; `None` for what is not a
/// date or falls before 明治.
pub fn wareki(s: &str) -> Option<String> {
    let (y, m, d) = ymd(s)?;
    let n = (y as u32) * 10_000 + m * 100 + d;
    let (_, letter, base) = ERAS.iter().find(|(from, _, _)| n >= *from)?;
    Some(format!("{letter}{}/{m:02}/{d:02}", y - base + 1))
}

/// `19660606` → `1966/06/06`.
pub fn seireki(s: &str) -> Option<String> {
    let (y, m, d) = ymd(s)?;
    Some(format!("{y:04}/{m:02}/{d:02}"))
}

/// The age on `today` (Japan time, as `(year, month, day)`) of someone born on `birth`
/// (`YYYYMMDD`), in 歳ヶ月 (`60歳5ヶ月`); `None` when the birth date is not a date or is later.
pub fn age(birth: &str, today: (i64, u32, u32)) -> Option<String> {
    let (by, bm, bd) = ymd(birth)?;
    let (ty, tm, td) = today;
    let mut months = (ty - by) * 12 + (tm as i64 - bm as i64);
    if td < bd {
        months -= 1;
    }
    (months >= 0).then(|| format!("{}歳{}ヶ月", months / 12, months % 12))
}

/// Today in Japan time, as `(year, month, day)`.
pub fn today_jst() -> (i64, u32, u32) {
    shared::time::civil_from_days((shared::time::now() + 9 * 3600).div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_in_both_calendars_and_ages() {
        assert_eq!(wareki("19660606").as_deref(), Some("S41/06/06"));
        assert_eq!(wareki("19761108").as_deref(), Some("S51/11/08"));
        // The first and last days of eras.
        assert_eq!(wareki("19890107").as_deref(), Some("S64/01/07"));
        assert_eq!(wareki("19890108").as_deref(), Some("H1/01/08"));
        assert_eq!(wareki("20190430").as_deref(), Some("H31/04/30"));
        assert_eq!(wareki("20190501").as_deref(), Some("R1/05/01"));
        assert_eq!(wareki("19261224").as_deref(), Some("T15/12/24"));
        assert_eq!(wareki("19261225").as_deref(), Some("S1/12/25"));
        assert_eq!(wareki("1966"), None);
        assert_eq!(wareki("19661306"), None);
        assert_eq!(seireki("19660606").as_deref(), Some("1966/06/06"));
        assert_eq!(age("19660606", (2026, 12, 2)).as_deref(), Some("60歳5ヶ月"));
        assert_eq!(age("19660606", (2026, 6, 5)).as_deref(), Some("59歳11ヶ月"));
        assert_eq!(age("19660606", (2026, 6, 6)).as_deref(), Some("60歳0ヶ月"));
        assert_eq!(age("20261201", (2026, 12, 2)).as_deref(), Some("0歳0ヶ月"));
        assert_eq!(age("20270101", (2026, 12, 2)), None);
    }
}
