//! What the doctor reads at a glance on the journey's pages: the patient header, names instead of
//! codes, out-of-range lab values marked, the trend's band and ticks, and search that forgives
//! what people type. Each check judges the page from its own text, not from the page's marks.

use super::search;
use crate::common::browser::Browser;

/// Names, not codes on the shared person's tabs.
pub fn names_not_codes(doc: &mut Browser) {
    // Names, not codes: the department by name, no heading left empty, days with 日, doses with
    // their short unit.
    doc.click("#tab-visits");
    let departments = doc.texts("#records tr.record td:nth-child(5)");
    assert!(
        !departments.is_empty() && departments.iter().all(|d| d == "内科"),
        "{departments:?}"
    );
    assert_eq!(doc.count("#records thead th:empty"), 0);
    doc.click("#tab-prescription");
    let days = doc.texts("#records tr.record td:nth-child(6)");
    assert!(days.iter().all(|d| d.ends_with('日')), "{days:?}");
    let doses = doc.texts("#records tr.record td:nth-child(4)");
    assert!(doses.iter().all(|d| !d.contains("ミリグラム")), "{doses:?}");
}

/// The office and A's doctor find the shared person however the ID and the date are typed.
pub fn search_forgives(office: &mut Browser, op: &str, doc: &mut Browser, a: &str) {
    // Search forgives what people type: the office finds B's patient by the ID without its
    // leading zeros and in full width, and by the birth date in 和暦 and unpadded; the result
    // names the patient with both calendars and the age, the name the link for a doctor.
    for (field, typed) in [
        ("patient_id", "880002"),
        ("patient_id", "００００８８０００２"),
        ("birth_date", "S33.4.12"),
        ("birth_date", "昭和33年4月12日"),
        ("birth_date", "1958/4/12"),
    ] {
        let hits = search(office, op, field, typed);
        assert!(
            hits.iter().any(|h| h.contains("0000880002")
                && h.contains("S33/04/12（1958/04/12）")
                && h.contains("歳")),
            "{field}={typed}: {hits:?}"
        );
        if typed == "S33.4.12" {
            office.screenshot("03c-search-wareki");
        }
    }
    let hits = search(doc, a, "patient_id", "７７０００１");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(doc.text("#results td.name a.patient-link"), "山田 太郎");
    doc.screenshot("03d-search-full-width-id");
    // A date that is none, an empty search and no hits each say what to do.
    search(doc, a, "birth_date", "S33.2.30");
    assert!(
        doc.text("#message").contains("S51.11.08"),
        "{}",
        doc.text("#message")
    );
    assert_eq!(
        doc.eval("document.querySelector('#birth_date').value"),
        "S33.2.30"
    );
    search(doc, a, "birth_date", "R99.1.1");
    assert!(
        doc.text("#message").contains("今日より後"),
        "{}",
        doc.text("#message")
    );
    search(doc, a, "name", "");
    assert!(
        doc.text("#message").contains("いずれかを入力"),
        "{}",
        doc.text("#message")
    );
    let none = search(doc, a, "name", "存在しない名前");
    assert!(none.is_empty());
    assert!(
        doc.text("#count").contains("該当する患者はいません"),
        "{}",
        doc.text("#count")
    );
}

/// The lab tab (open in `doc`) marks each out-of-range value.
pub fn out_of_range_values_are_marked(doc: &mut Browser) {
    // Out-of-range values are marked on the value, by colour and arrow, and said in words; the
    // test judges each row from its own value and range text, not from the page's marks.
    let rows = doc.eval("Array.from(document.querySelectorAll('#records tr.record')).map(r => [r.cells[3].textContent, r.cells[5].textContent, r.cells[6].textContent, r.cells[3].className])");
    let (mut high, mut low) = (0, 0);
    for r in rows.as_array().unwrap() {
        let cell = |i: usize| r[i].as_str().unwrap().to_string();
        let (value, range, judged, class) = (cell(0), cell(1), cell(2), cell(3));
        let number: f64 = value.trim_start_matches(['↑', '↓', ' ']).parse().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi): (f64, f64) = (lo.parse().unwrap(), hi.parse().unwrap());
        if number > hi {
            high += 1;
            assert!(
                value.starts_with('↑') && class.contains("high") && judged.contains("高値"),
                "{r}"
            );
        } else if number < lo {
            low += 1;
            assert!(
                value.starts_with('↓') && class.contains("low") && judged.contains("低値"),
                "{r}"
            );
        } else {
            assert!(!class.contains("value") && judged.is_empty(), "{r}");
        }
    }
    assert!(
        high + low > 0,
        "some of the shared person's results are out of range"
    );
    assert_eq!(
        doc.eval("getComputedStyle(document.querySelector('#records td.value')).fontWeight"),
        "700"
    );
    doc.screenshot("08b-lab-marked");
}

/// The trend (open in `doc`) draws the reference band and steps its ticks evenly.
pub fn trend_has_its_band_and_even_ticks(doc: &mut Browser) {
    // The reference band is drawn from the newest result's range, the ticks step evenly, and
    // each row of the table says its range and judgement.
    let newest_range = doc.text("#values tbody tr td:nth-child(4)");
    assert_eq!(doc.text("#band-text"), newest_range);
    assert_eq!(doc.count("#chart rect.band"), 1);
    let ticks: Vec<f64> = doc
        .eval("Array.from(document.querySelectorAll('#chart text.ylabel')).map(t => t.textContent)")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    let step = ticks[1] - ticks[0];
    assert!(
        ticks
            .windows(2)
            .all(|w| ((w[1] - w[0]) - step).abs() < 1e-9),
        "{ticks:?}"
    );
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 2.5, 5.0]
            .iter()
            .any(|m| (m - mantissa).abs() < 1e-9),
        "{step}"
    );
}

/// The patient header on the page in `b` names the shared person (山田 太郎, born 1958-04-12,
/// allergic to penicillin) with the regional ID `rid`, the facilities `holders`, and the name in
/// the tab's title.
pub fn header_names_the_shared_person(b: &mut Browser, rid: &str, holders: &[&str]) {
    assert_eq!(b.text("#ph-name"), "山田 太郎");
    assert_eq!(b.text("#ph-kana"), "ヤマダ タロウ");
    assert_eq!(b.text("#ph-sex"), "男");
    assert_eq!(b.text("#ph-birth"), "S33/04/12（1958/04/12）");
    // The age from the machine's own calendar in Japan, not from the code under test.
    let today = std::process::Command::new("date")
        .env("TZ", "Asia/Tokyo")
        .arg("+%Y %m %d")
        .output()
        .unwrap();
    let t: Vec<i64> = String::from_utf8(today.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let mut months = (t[0] - 1958) * 12 + (t[1] - 4);
    if t[2] < 12 {
        months -= 1;
    }
    assert_eq!(
        b.text("#ph-age"),
        format!("{}歳{}ヶ月", months / 12, months % 12)
    );
    assert_eq!(b.text("#rid"), rid);
    let listed = b.texts("#ph-holders li .ph-facility");
    assert_eq!(listed.len(), holders.len(), "{listed:?}");
    assert!(
        holders.iter().all(|h| listed.iter().any(|l| l == h)),
        "{listed:?}"
    );
    assert!(b.text("#ph-allergy").contains("ペニシリン"));
    let title = b.eval("document.title");
    let title = title.as_str().unwrap();
    assert!(
        title.contains("山田 太郎") && title.contains(rid),
        "{title}"
    );
}
