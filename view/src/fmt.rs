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
    let (y, m, d): (i32, u8, u8) = (
        s[0..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..8].parse().ok()?,
    );
    // A day the calendar has: no 1966-02-31.
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some((i64::from(y), u32::from(m), u32::from(d)))
}

/// `19660606` → `S41/06/06`, as K-MIX R writes a birth date in 和暦; `None` for what is not a
/// date or falls before 明治.
pub fn wareki(s: &str) -> Option<String> {
    let (y, m, d) = ymd(s)?;
    let n = (y as u32) * 10_000 + m * 100 + d;
    let (_, letter, base) = ERAS.iter().find(|(from, _, _)| n >= *from)?;
    Some(format!("{letter}{}/{m:02}/{d:02}", y - base + 1))
}

/// A birth date as K-MIX R shows it: `19660606` → `S41/06/06（1966/06/06）`; what is not a date
/// (or falls before 明治) as [`hl7_time`] shows it.
pub fn birth(s: &str) -> String {
    match (wareki(s), seireki(s)) {
        (Some(w), Some(d)) => format!("{w}（{d}）"),
        _ => hl7_time(s),
    }
}

/// `19660606` → `1966/06/06`.
pub fn seireki(s: &str) -> Option<String> {
    let (y, m, d) = ymd(s)?;
    Some(format!("{y:04}/{m:02}/{d:02}"))
}

/// The age on `today` (Japan time, as `(year, month, day)`) of someone born on `birth`
/// (`YYYYMMDD`), in 歳ヶ月 (`60歳5ヶ月`), or in days under a month (`生後12日`: doses for a newborn
/// go by it); `None` when the birth date is not a date or is later.
pub fn age(birth: &str, today: (i64, u32, u32)) -> Option<String> {
    let (by, bm, bd) = ymd(birth)?;
    let (ty, tm, td) = today;
    let mut months = (ty - by) * 12 + (tm as i64 - bm as i64);
    if td < bd {
        months -= 1;
    }
    if months == 0 {
        let days =
            shared::time::days_from_civil(ty, tm, td) - shared::time::days_from_civil(by, bm, bd);
        return (days >= 0).then(|| format!("生後{days}日"));
    }
    (months > 0).then(|| format!("{}歳{}ヶ月", months / 12, months % 12))
}

/// Today in Japan time, as `(year, month, day)`.
pub fn today_jst() -> (i64, u32, u32) {
    shared::time::civil_from_days((shared::time::now() + 9 * 3600).div_euclid(86_400))
}

/// The departments of SS-MIX2's table 0069 (統一診療科コード) by their two-character code, which
/// the receipt's 診療科 codes share. A three-character code (`011` 第１内科, `01A`) names a division
/// of the department its first two characters name.
const DEPARTMENTS: &[(&str, &str)] = &[
    ("01", "内科"),
    ("02", "精神科"),
    ("03", "神経科"),
    ("04", "神経内科"),
    ("05", "呼吸器科"),
    ("06", "消化器科"),
    ("07", "胃腸科"),
    ("08", "循環器科"),
    ("09", "小児科"),
    ("10", "外科"),
    ("11", "整形外科"),
    ("12", "形成外科"),
    ("13", "美容外科"),
    ("14", "脳神経外科"),
    ("15", "呼吸器外科"),
    ("16", "心臓血管外科"),
    ("17", "小児外科"),
    ("18", "皮膚ひ尿器科"),
    ("19", "皮膚科"),
    ("20", "ひ尿器科"),
    ("21", "性病科"),
    ("22", "こう門科"),
    ("23", "産婦人科"),
    ("24", "産科"),
    ("25", "婦人科"),
    ("26", "眼科"),
    ("27", "耳鼻いんこう科"),
    ("28", "気管食道科"),
    ("30", "放射線科"),
    ("31", "麻酔科"),
    ("33", "心療内科"),
    ("34", "アレルギー科"),
    ("35", "リウマチ科"),
    ("36", "リハビリテーション科"),
];

/// A department's name from its code: `named` first (the facility's own name for the code, as its
/// orders carry it), then table 0069, then the code itself.
pub fn department(code: &str, named: Option<&str>) -> String {
    let code = code.trim();
    if let Some(n) = named.map(str::trim).filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    let two = code.get(..2).unwrap_or("");
    match DEPARTMENTS.iter().find(|(c, _)| *c == code || *c == two) {
        Some((_, n)) if code.len() <= 3 => n.to_string(),
        _ => code.to_string(),
    }
}

/// A ward and room as codes name them (`32`, `302`) → `32病棟 302号室`; a name (`東4階`) stays.
pub fn ward_room(ward: &str, room: &str) -> String {
    let coded = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let w = match ward.trim() {
        w if coded(w) => format!("{w}病棟"),
        w => w.to_string(),
    };
    let r = match room.trim() {
        r if coded(r) => format!("{r}号室"),
        r => r.to_string(),
    };
    [w, r]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A size in bytes as people read it: `812 B`, `1.6 KB`, `2.4 MB`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    if b < 1024.0 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.1} GB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// A DICOM modality code (DICOM PS3.3 C.7.3.1.1.1) as a Japanese clinician names it.
pub fn modality(code: &str) -> String {
    let name = match code.trim() {
        "CR" => "単純X線（CR）",
        "DX" => "単純X線（DX）",
        "CT" => "CT",
        "MR" => "MRI",
        "US" => "超音波",
        "XA" => "血管造影",
        "RF" => "X線透視",
        "MG" => "マンモグラフィ",
        "NM" => "核医学",
        "PT" => "PET",
        "ES" => "内視鏡",
        "ECG" => "心電図",
        "EEG" => "脳波",
        "EMG" => "筋電図",
        "HD" => "血行動態",
        "OP" | "OPT" => "眼底・眼科撮影",
        "SM" => "顕微鏡（病理）",
        "XC" => "外部カメラ",
        "OT" => "その他",
        "" => "",
        other => return other.to_string(),
    };
    name.to_string()
}

/// A result's status (HL7 table 0123, which SS-MIX2's reports use) in words.
pub fn result_status(code: &str) -> String {
    let name = match code.trim() {
        "F" => "確定",
        "P" => "仮報告",
        "C" => "訂正",
        "A" => "一部報告",
        "R" => "未確認",
        "I" => "検査中",
        "O" => "受付",
        "S" => "予定",
        "X" => "中止",
        "" => "",
        other => return other.to_string(),
    };
    name.to_string()
}

/// An exam item written as a dotted code path (`検査.上部.－.－.上部通常内視鏡.－`) as words:
/// the empty parts left out, each part once (`検査・上部・上部通常内視鏡`).
pub fn exam_item(item: &str) -> String {
    if !item.contains('.') {
        return item.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in item.split('.').map(str::trim) {
        if !p.is_empty() && !matches!(p, "－" | "-" | "−" | "‐" | "ー" | "―") && !parts.contains(&p)
        {
            parts.push(p);
        }
    }
    parts.join("・")
}

/// A dose and its unit as a prescription shows them: `2` `ミリグラム` → `2 mg`; a unit that has no
/// usual short form (錠, 包, カプセル) is kept.
pub fn dose(amount: &str, unit: &str) -> String {
    let unit = match unit.trim() {
        "ミリグラム" => "mg",
        "グラム" => "g",
        "マイクログラム" => "μg",
        "ミリリットル" => "mL",
        "リットル" => "L",
        "単位" => "単位",
        u => u,
    };
    format!("{} {unit}", amount.trim()).trim().to_string()
}

/// A number of days as `28日`; text that is not a number is kept.
pub fn days(s: &str) -> String {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        format!("{t}日")
    } else {
        t.to_string()
    }
}

/// Full-width ASCII (`０００１`, `Ｒ`, `／`) and the ideographic space as their plain forms, as a
/// clinic's IME types them.
pub fn ascii_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        })
        .collect()
}

/// The forms a facility patient ID may be stored under when it is typed as `id`: as typed (full
/// width made plain, spaces trimmed) and, for a number, with any count of leading zeros up to 20
/// digits (`1000022` finds `0001000022`).
pub fn patient_id_forms(id: &str) -> Vec<String> {
    let plain = ascii_width(id).trim().to_string();
    // Longer than any ID, not a number, or all zeros (a dummy patient's): as typed only.
    let bare = plain.trim_start_matches('0');
    if plain.len() > 20 || bare.is_empty() || !plain.bytes().all(|b| b.is_ascii_digit()) {
        return vec![plain];
    }
    let mut forms: Vec<String> = (bare.len()..=20.max(plain.len()))
        .map(|w| format!("{bare:0>w$}"))
        .collect();
    if !forms.contains(&plain) {
        forms.push(plain);
    }
    forms
}

/// A date as people type it, to `YYYYMMDD`: 西暦 (`1976-11-08`, `1976/11/8`, `1976.11.8`,
/// `1976年11月8日`, `19761108`) or 和暦 (`S51.11.08`, `s51/11/8`, `昭和51年11月8日`, `H1.1.8`,
/// `令和元年5月1日`, `S511108`), in full or half width. The day must exist and fall inside its era.
pub fn parse_day(s: &str) -> Option<String> {
    let t: String = ascii_width(s)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (era, rest) = era_prefix(&t);
    let nums: Vec<&str> = rest
        .split(['-', '/', '.', '年', '月', '日'])
        .filter(|p| !p.is_empty())
        .collect();
    let year_text = |y: &str| {
        if y == "元" {
            Some(1)
        } else {
            y.parse::<i64>().ok()
        }
    };
    let (y, m, d): (i64, u32, u32) = match nums.as_slice() {
        [y, m, d] => (year_text(y)?, m.parse().ok()?, d.parse().ok()?),
        [all] if all.bytes().all(|b| b.is_ascii_digit()) => match (era, all.len()) {
            (None, 8) => (
                all[..4].parse().ok()?,
                all[4..6].parse().ok()?,
                all[6..].parse().ok()?,
            ),
            (Some(_), 6) => (
                all[..2].parse().ok()?,
                all[2..4].parse().ok()?,
                all[4..].parse().ok()?,
            ),
            _ => return None,
        },
        _ => return None,
    };
    if nums
        .iter()
        .any(|p| *p != "元" && !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let year = match era {
        None if y >= 1000 => y,
        None => return None,
        Some(i) => {
            if !(1..=99).contains(&y) {
                return None;
            }
            ERAS[i].2 + y - 1
        }
    };
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(d).ok()?)
            .ok()?;
    let n = (date.year() as u32) * 10_000
        + u32::from(u8::from(date.month())) * 100
        + u32::from(date.day());
    if let Some(i) = era {
        // Inside the era: from its first day, before the next one's.
        if n < ERAS[i].0 || (i > 0 && n >= ERAS[i - 1].0) {
            return None;
        }
    }
    Some(format!("{n:08}"))
}

/// The era a typed date starts with (its index in `ERAS`) and the rest of the text.
fn era_prefix(t: &str) -> (Option<usize>, &str) {
    const NAMES: [(&str, usize); 15] = [
        ("令和", 0),
        ("平成", 1),
        ("昭和", 2),
        ("大正", 3),
        ("明治", 4),
        ("令", 0),
        ("平", 1),
        ("昭", 2),
        ("大", 3),
        ("明", 4),
        ("R", 0),
        ("H", 1),
        ("S", 2),
        ("T", 3),
        ("M", 4),
    ];
    for (name, i) in NAMES {
        if let Some(rest) = t.strip_prefix(name) {
            return (Some(i), rest);
        }
        let lower = name.to_ascii_lowercase();
        if name.is_ascii() {
            if let Some(rest) = t.strip_prefix(lower.as_str()) {
                return (Some(i), rest);
            }
        }
    }
    (None, t)
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
        assert_eq!(age("20261201", (2026, 12, 2)).as_deref(), Some("生後1日"));
        assert_eq!(age("20261120", (2026, 12, 2)).as_deref(), Some("生後12日"));
        assert_eq!(age("20261102", (2026, 12, 2)).as_deref(), Some("0歳1ヶ月"));
        assert_eq!(age("20270101", (2026, 12, 2)), None);
        assert_eq!(wareki("19660231"), None, "a day the calendar does not have");
        assert_eq!(age("19660231", (2026, 12, 2)), None);
    }

    #[test]
    fn dates_ids_and_widths_as_people_type_them() {
        for typed in [
            "1976-11-08",
            "1976/11/8",
            "1976.11.08",
            "1976年11月8日",
            "19761108",
            "１９７６／１１／０８",
            "S51.11.08",
            "s51/11/8",
            "Ｓ５１．１１．０８",
            "昭和51年11月8日",
            "昭51.11.8",
            "S511108",
            " S51.11.08 ",
        ] {
            assert_eq!(parse_day(typed).as_deref(), Some("19761108"), "{typed}");
        }
        assert_eq!(parse_day("H1.1.8").as_deref(), Some("19890108"));
        assert_eq!(parse_day("令和元年5月1日").as_deref(), Some("20190501"));
        assert_eq!(parse_day("R1.5.1").as_deref(), Some("20190501"));
        // Outside its era, a day that does not exist, or not a date.
        assert_eq!(
            parse_day("H1.1.7"),
            None,
            "昭和64年1月7日 was the last of Shōwa"
        );
        assert_eq!(parse_day("H31.5.1"), None, "Reiwa had begun");
        assert_eq!(parse_day("S51.2.30"), None);
        assert_eq!(parse_day("1960-02-31"), None);
        assert_eq!(
            parse_day("51.11.08"),
            None,
            "a two-digit year needs its era"
        );
        assert_eq!(parse_day("S0.1.1"), None);
        assert_eq!(parse_day("' OR 1=1"), None);
        assert_eq!(parse_day(""), None);
        assert_eq!(parse_day("X51.11.08"), None);
        assert_eq!(ascii_width("０００１　Ｒ"), "0001 R");
        let forms = patient_id_forms("1000022");
        assert!(
            forms.contains(&"0001000022".to_string()) && forms.contains(&"1000022".to_string())
        );
        assert!(patient_id_forms("０００１００００２２").contains(&"0001000022".to_string()));
        assert_eq!(patient_id_forms("A-12"), ["A-12"]);
        assert_eq!(
            patient_id_forms("0"),
            ["0"],
            "all zeros: a dummy patient, as typed only"
        );
        assert_eq!(patient_id_forms("000"), ["000"]);
        let long = format!("{}1", "0".repeat(100_000));
        assert_eq!(patient_id_forms(&long).len(), 1, "no quadratic blow-up");
        assert_eq!(parse_day("R1976.1.1"), None, "an era year is at most 99");
    }

    #[test]
    fn codes_become_the_words_people_use() {
        assert_eq!(department("01", None), "内科");
        assert_eq!(department("011", None), "内科");
        assert_eq!(department("01", Some("総合内科")), "総合内科");
        assert_eq!(department("99", None), "99");
        assert_eq!(department("-", None), "-");
        assert_eq!(ward_room("32", "302"), "32病棟 302号室");
        assert_eq!(ward_room("東4階", "302"), "東4階 302号室");
        assert_eq!(ward_room("", ""), "");
        assert_eq!(size(1618), "1.6 KB");
        assert_eq!(size(812), "812 B");
        assert_eq!(size(5 << 20), "5.0 MB");
        assert_eq!(modality("ES"), "内視鏡");
        assert_eq!(modality("CR"), "単純X線（CR）");
        assert_eq!(modality("ZZ"), "ZZ");
        assert_eq!(result_status("F"), "確定");
        assert_eq!(
            exam_item("検査.上部.－.－.上部通常内視鏡.－"),
            "検査・上部・上部通常内視鏡"
        );
        assert_eq!(
            exam_item("検査.上部.−.−.上部通常内視鏡.−"),
            "検査・上部・上部通常内視鏡"
        );
        assert_eq!(exam_item("胸部単純X線"), "胸部単純X線");
        assert_eq!(dose("2", "ミリグラム"), "2 mg");
        assert_eq!(dose("1", "錠"), "1 錠");
        assert_eq!(days("28"), "28日");
        assert_eq!(days("頓用"), "頓用");
    }
}
