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
