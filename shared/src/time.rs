//! The one clock of both halves ([`now`], [`now_ms`]), and calendar arithmetic for timestamps
//! written into stores and logs (UTC, RFC 3339): the arithmetic takes the seconds since the Unix
//! epoch, so it is tested without a clock.

/// Seconds since the Unix epoch (0 for a system clock set before 1970).
pub fn now() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch (0 for a system clock set before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-21T08:30:00Z` for the given seconds since 1970-01-01T00:00:00Z.
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm: (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a duration as people write it: `90d`, `12h`, `30m`, `45s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (for example 7d, 12h, 30m, 45s)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_249_845), "2026-11-21T08:30:45Z");
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = super::civil_from_days(day);
            assert_eq!(super::days_from_civil(y, m, d), day);
        }
        assert_eq!(super::days_from_civil(2000, 2, 29), 11_016);
    }

    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("7d"), Ok(604_800));
        assert_eq!(super::parse_duration("90"), Ok(90));
        assert!(super::parse_duration("7w").is_err());
        assert!(super::parse_duration("d").is_err());
    }
}
