//! Reading one patient's records out of a facility's failover copy for the portal: the tabs of the
//! patient page, the calendar's events and a lab test's trend. Plain SQL on a read-only copy
//! connection; the portal merges several facilities' answers.

use crate::fmt;
use rusqlite::{params, Connection, OptionalExtension};

/// The patient page's tabs, in the order the networks show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Visits,
    Allergy,
    Diagnosis,
    Prescription,
    Injection,
    Lab,
    Documents,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Visits,
        Tab::Allergy,
        Tab::Diagnosis,
        Tab::Prescription,
        Tab::Injection,
        Tab::Lab,
        Tab::Documents,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Tab::Visits => "visits",
            Tab::Allergy => "allergy",
            Tab::Diagnosis => "diagnosis",
            Tab::Prescription => "prescription",
            Tab::Injection => "injection",
            Tab::Lab => "lab",
            Tab::Documents => "documents",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Visits => "受付・入退院",
            Tab::Allergy => "アレルギー",
            Tab::Diagnosis => "病名",
            Tab::Prescription => "処方",
            Tab::Injection => "注射",
            Tab::Lab => "検査",
            Tab::Documents => "画像・文書",
        }
    }

    pub fn parse(s: &str) -> Option<Tab> {
        Tab::ALL.into_iter().find(|t| t.code() == s)
    }

    /// Column headings, after the date (the facility column comes first on the page).
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Tab::Visits => &["区分", "入外", "診療科", "病棟・病室", "担当医", "退院日時"],
            Tab::Allergy => &["種類", "アレルゲン", "重症度", "反応"],
            Tab::Diagnosis => &["病名", "ICD-10", "主病名", "転帰", "終了日"],
            Tab::Prescription => &["薬剤", "用量", "用法", "日数", "処方医", "診療科"],
            Tab::Injection => &["薬剤", "用量", "経路", "指示", "処方医", "診療科"],
            Tab::Lab => &["検査項目", "結果", "単位", "基準値", "判定"],
            Tab::Documents => &["種別", "項目", "詳細", "状態"],
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Tab::Visits => {
                "SELECT coalesce(event_at, admit_at, recorded_at, ''), data_type, coalesce(patient_class, ''), coalesce(department, ''),
                        coalesce(ward, ''), coalesce(attending, ''), coalesce(discharge_at, ''),
                        CASE is_cancel WHEN 1 THEN '（取消）' ELSE '' END, '', coalesce(room, '')
                 FROM encounter WHERE patient_id = ?1"
            }
            Tab::Allergy => {
                "SELECT coalesce(onset_date, ''), coalesce(type, type_code, ''), coalesce(allergen, ''), coalesce(severity, severity_code, ''),
                        coalesce(reaction, ''), '', '', '', ''
                 FROM allergy WHERE patient_id = ?1"
            }
            Tab::Diagnosis => {
                "SELECT coalesce(established_on, onset_on, ''), coalesce(display_name, name, ''), coalesce(icd10, ''),
                        CASE is_main WHEN 1 THEN '主' ELSE '' END, coalesce(outcome, ''), coalesce(resolved_on, ''), '', '', ''
                 FROM diagnosis WHERE patient_id = ?1"
            }
            Tab::Prescription => {
                "SELECT coalesce(ordered_at, start_at, ''), coalesce(drug_name, ''), coalesce(dose, ''),
                        coalesce(usage_text, ''), coalesce(days, ''), coalesce(orderer, ''), coalesce(department, ''), '', '', coalesce(unit, '')
                 FROM medication_order WHERE patient_id = ?1 AND kind = 'prescription'"
            }
            Tab::Injection => {
                "SELECT coalesce(ordered_at, start_at, ''), coalesce(drug_name, ''), coalesce(dose, ''),
                        coalesce(route, ''), coalesce(instruction, ''), coalesce(orderer, ''), coalesce(department, ''), '', '', coalesce(unit, '')
                 FROM medication_order WHERE patient_id = ?1 AND kind = 'injection'"
            }
            Tab::Lab => {
                "SELECT coalesce(collected_at, observed_at, reported_at, ''), coalesce(name, local_name, ''), coalesce(value, value_text, ''),
                        coalesce(unit, ''), coalesce(reference_range, ''), coalesce(abnormal_flag, ''), '', coalesce(code, local_code, ''), ''
                 FROM lab_result WHERE patient_id = ?1"
            }
            Tab::Documents => {
                "SELECT coalesce(observed_at, reported_at, ''), CASE kind WHEN 'radiology' THEN '放射線' WHEN 'endoscopy' THEN '内視鏡' WHEN 'physiology' THEN '生理' ELSE kind END,
                        coalesce(item, ''), coalesce(modality, ''), coalesce(result_status, ''), '', '', '', NULL, NULL, NULL
                 FROM exam_report WHERE patient_id = ?1
                 UNION ALL
                 SELECT substr(s.issued_at, 1, 14), '文書', coalesce(d.doc_name, d.std_name, ''), d.file_name, '', '', '', '', d.file_id, CAST(d.size AS TEXT), d.media_type
                 FROM document d JOIN source_file s ON s.id = d.file_id WHERE d.patient_id = ?1"
            }
        }
    }
}

/// One row of a tab: its date (HL7 form), the cells after it, and for lab rows the test code
/// (for the trend link) and how the value is marked, or for documents the source file id (for
/// the download).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: String,
    pub cells: Vec<String>,
    pub code: String,
    pub file_id: Option<i64>,
    /// A lab value out of its range: the class its cell is marked with (`high`, `low`, …).
    pub mark: Option<&'static str>,
    /// A document a browser shows itself (a PDF), which the page offers to open as well as to
    /// download.
    pub viewable: bool,
}

/// The lab tab's column of the value, which an abnormal result marks.
pub const LAB_VALUE_COLUMN: usize = 1;

const ENCOUNTER_LABELS: &[(&str, &str)] = &[
    ("ADT-12", "外来受付"),
    ("ADT-21", "入院予定"),
    ("ADT-22", "入院"),
    ("ADT-31", "外出泊"),
    ("ADT-32", "外出泊帰院"),
    ("ADT-41", "転科・転棟予定"),
    ("ADT-42", "転科・転棟"),
    ("ADT-51", "退院予定"),
    ("ADT-52", "退院"),
];

/// The rows of `tab` for one patient of one copy, newest first, at most `limit`.
pub fn tab(
    copy: &Connection,
    tab: Tab,
    patient_id: &str,
    limit: usize,
) -> rusqlite::Result<Vec<Line>> {
    // The facility's own names for its department codes, as its orders carry them.
    let departments: std::collections::HashMap<String, String> = if tab == Tab::Visits {
        let mut st = copy.prepare_cached(
            "SELECT department_code, department FROM medication_order
             WHERE patient_id = ?1 AND department_code IS NOT NULL AND department <> '' GROUP BY 1",
        )?;
        let pairs = st.query_map(params![patient_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        pairs.collect::<rusqlite::Result<_>>()?
    } else {
        Default::default()
    };
    let mut st = copy.prepare_cached(tab.sql())?;
    let mut rows = st.query(params![patient_id])?;
    let ncols = tab.columns().len();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut cells: Vec<String> = (1..=ncols)
            .map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default))
            .collect::<rusqlite::Result<_>>()?;
        if tab == Tab::Visits {
            // The event's name (with a cancel mark) and the patient class, as people read them.
            let kind = ENCOUNTER_LABELS
                .iter()
                .find(|(c, _)| *c == cells[0])
                .map(|(_, l)| *l)
                .unwrap_or(cells[0].as_str());
            cells[0] = format!("{kind}{}", r.get::<_, String>(7)?);
            cells[1] = match cells[1].as_str() {
                "I" => "入院".into(),
                "O" => "外来".into(),
                x => x.into(),
            };
            cells[2] = fmt::department(&cells[2], departments.get(&cells[2]).map(String::as_str));
            // A ward and room are an inpatient's; an outpatient's location is a code of the
            // clinic's own that names nothing the department column does not.
            cells[3] = if cells[1] == "外来" {
                String::new()
            } else {
                fmt::ward_room(&cells[3], &r.get::<_, String>(9)?)
            };
            // A discharge says when in its own event time when the discharge field is empty.
            if cells[5].is_empty() && r.get::<_, String>(1)? == "ADT-52" {
                cells[5] = r.get(0)?;
            }
            cells[5] = fmt::hl7_time(&cells[5]);
        }
        if matches!(tab, Tab::Prescription | Tab::Injection) {
            cells[1] = fmt::dose(&cells[1], &r.get::<_, String>(9)?);
            if tab == Tab::Prescription {
                cells[3] = fmt::days(&cells[3]);
            }
        }
        let viewable = tab == Tab::Documents
            && r.get::<_, Option<String>>(10)?.as_deref() == Some("application/pdf");
        if tab == Tab::Documents {
            match r.get::<_, Option<String>>(9)? {
                // A document: its file and size.
                Some(bytes) => {
                    let n: i64 = bytes.parse().unwrap_or(0);
                    cells[2] = format!("{}（{}）", cells[2], fmt::size(n));
                }
                // An exam report: the item, modality and status in words.
                None => {
                    cells[1] = fmt::exam_item(&cells[1]);
                    cells[2] = fmt::modality(&cells[2]);
                    cells[3] = fmt::result_status(&cells[3]);
                }
            }
        }
        let (code, mark) = if tab == Tab::Lab {
            // The value marked and the flag said in words: `↑ 9.1`, 判定 `H 高値`.
            let judged = crate::lab::judge(&cells[1], &cells[3], &cells[4]);
            if let Some(j) = judged {
                cells[1] = format!("{} {}", j.arrow, cells[1]);
                cells[4] = if cells[4].trim().is_empty() {
                    j.word.to_string()
                } else {
                    format!("{} {}", cells[4].trim(), j.word)
                };
            }
            (r.get::<_, String>(7)?, judged.map(|j| j.class))
        } else {
            (String::new(), None)
        };
        let file_id = if tab == Tab::Documents {
            r.get::<_, Option<i64>>(8).ok().flatten()
        } else {
            None
        };
        out.push(Line {
            at: r.get(0)?,
            cells,
            code,
            file_id,
            mark,
            viewable,
        });
    }
    out.sort_by(|a, b| b.at.cmp(&a.at));
    out.truncate(limit);
    Ok(out)
}

/// The patient's demographics as the copy has them: (label, value) pairs for the header.
pub fn basic(copy: &Connection, patient_id: &str) -> rusqlite::Result<Vec<(&'static str, String)>> {
    let row = copy
        .query_row(
            "SELECT coalesce(postal_code, ''), coalesce(address, ''), coalesce(phone_home, ''), coalesce(blood_abo, ''),
                    trim(coalesce(height, '') || ' ' || coalesce(height_unit, '')), trim(coalesce(weight, '') || ' ' || coalesce(weight_unit, '')),
                    coalesce(updated_at, '')
             FROM patient WHERE patient_id = ?1 ORDER BY id DESC LIMIT 1",
            [patient_id],
            |r| Ok([r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?]),
        )
        .optional()?;
    let Some(v) = row else { return Ok(vec![]) };
    let labels = ["郵便番号", "住所", "電話", "血液型", "身長", "体重", "更新"];
    Ok(labels
        .into_iter()
        .zip(v)
        .filter(|(_, v)| !v.is_empty())
        .collect())
}

/// The patient's allergens as recorded (the allergen's name, or its code when it has no name),
/// each once, oldest first: the patient header's warning.
pub fn allergens(copy: &Connection, patient_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = copy.prepare_cached(
        "SELECT coalesce(nullif(allergen, ''), allergen_code, '') FROM allergy
         WHERE patient_id = ?1 AND coalesce(action_code, '') NOT IN ('D', 'X')
         GROUP BY 1 ORDER BY min(id)",
    )?;
    let rows = st.query_map([patient_id], |r| r.get::<_, String>(0))?;
    // A row that records "no known allergy" is not an allergy to warn of.
    const NONE: [&str; 8] = [
        "なし",
        "無し",
        "特記なし",
        "特になし",
        "アレルギーなし",
        "NKA",
        "NKDA",
        "-",
    ];
    rows.filter(|r| !matches!(r, Ok(s) if s.trim().is_empty() || NONE.contains(&s.trim())))
        .collect()
}

/// An event on the calendar: the day (YYYYMMDD) and what happened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub day: String,
    pub what: String,
    pub count: i64,
}

/// The patient's events from `from` to `to` (YYYYMMDD, inclusive), one per day and kind.
pub fn events(
    copy: &Connection,
    patient_id: &str,
    from: &str,
    to: &str,
) -> rusqlite::Result<Vec<Event>> {
    let mut st = copy.prepare_cached(
        "SELECT d, what, count(*) FROM (
            SELECT substr(coalesce(event_at, admit_at, recorded_at), 1, 8) d,
                   CASE data_type WHEN 'ADT-12' THEN '受診' WHEN 'ADT-22' THEN '入院' WHEN 'ADT-52' THEN '退院' ELSE '入退院' END what
              FROM encounter WHERE patient_id = ?1 AND is_cancel = 0
            UNION ALL SELECT substr(coalesce(ordered_at, start_at), 1, 8), CASE kind WHEN 'prescription' THEN '処方' ELSE '注射' END
              FROM medication_order WHERE patient_id = ?1 GROUP BY order_no, kind
            UNION ALL SELECT substr(coalesce(collected_at, observed_at), 1, 8), '検査' FROM lab_result WHERE patient_id = ?1 GROUP BY order_no
            UNION ALL SELECT substr(coalesce(observed_at, reported_at), 1, 8), '画像・文書' FROM exam_report WHERE patient_id = ?1
         ) WHERE d BETWEEN ?2 AND ?3 GROUP BY d, what ORDER BY d, what",
    )?;
    let rows = st.query_map(params![patient_id, from, to], |r| {
        Ok(Event {
            day: r.get(0)?,
            what: r.get(1)?,
            count: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// One point of a lab trend.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at: String,
    pub value: f64,
    pub text: String,
    pub unit: String,
    pub name: String,
    pub range: String,
    pub judged: Option<crate::lab::Judgement>,
}

/// Every numeric result of test `code` for the patient, oldest first.
pub fn trend(copy: &Connection, patient_id: &str, code: &str) -> rusqlite::Result<Vec<Point>> {
    let mut st = copy.prepare_cached(
        "SELECT coalesce(collected_at, observed_at, reported_at, ''), coalesce(value, ''), coalesce(unit, ''), coalesce(name, local_name, ''),
                coalesce(reference_range, ''), coalesce(abnormal_flag, '')
         FROM lab_result WHERE patient_id = ?1 AND coalesce(code, local_code) = ?2 ORDER BY 1",
    )?;
    let rows = st.query_map(params![patient_id, code], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (at, text, unit, name, range, flag) = row?;
        if let Ok(value) = text.trim().parse::<f64>() {
            out.push(Point {
                judged: crate::lab::judge(&text, &range, &flag),
                at,
                value,
                text,
                unit,
                name,
                range,
            });
        }
    }
    Ok(out)
}

/// A document's file name, media type and size, if the copy holds it for this patient.
pub fn document(
    copy: &Connection,
    patient_id: &str,
    file_id: i64,
) -> rusqlite::Result<Option<(String, String, i64)>> {
    copy.query_row(
        "SELECT d.file_name, coalesce(d.media_type, 'application/octet-stream'), length(s.raw) FROM document d JOIN source_file s ON s.id = d.file_id
         WHERE d.patient_id = ?1 AND d.file_id = ?2 LIMIT 1",
        params![patient_id, file_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// Whether a stored file's bytes begin with `prefix` (a PDF's `%PDF-`), read without loading it.
pub fn begins_with(copy: &Connection, file_id: i64, prefix: &[u8]) -> rusqlite::Result<bool> {
    let blob = copy.blob_open(rusqlite::MAIN_DB, "source_file", "raw", file_id, true)?;
    if blob.len() < prefix.len() {
        return Ok(false);
    }
    let mut head = vec![0u8; prefix.len()];
    blob.read_at_exact(&mut head, 0)?;
    Ok(head == prefix)
}

/// Streams a stored file's bytes in chunks of `chunk` bytes to `send`, with SQLite's incremental
/// blob I/O, so a large document is never held whole. Stops early (Ok) when `send` says false.
pub fn stream_file(
    copy: &Connection,
    file_id: i64,
    chunk: usize,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> rusqlite::Result<()> {
    let blob = copy.blob_open(rusqlite::MAIN_DB, "source_file", "raw", file_id, true)?;
    let size = blob.len();
    let mut at = 0;
    while at < size {
        let n = chunk.min(size - at);
        let mut buf = vec![0u8; n];
        blob.read_at_exact(&mut buf, at)?;
        at += n;
        if !send(buf) {
            break;
        }
    }
    Ok(())
}
