//! From a parsed SS-MIX2 message to rows of the normalized clinical tables, one function a
//! family of data types. Every value is kept as the text the message carries (codes, dates and
//! quantities alike), so nothing is lost to a conversion; the raw file is kept beside them.

use crate::hl7::{Message, Segment};
use crate::path::{Storage, StoredName};

/// One row to insert: the table and its columns. `file_id` and `patient_id` are added by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub table: &'static str,
    pub cols: Vec<(&'static str, Option<String>)>,
}

impl Row {
    fn new(table: &'static str) -> Row {
        Row {
            table,
            cols: Vec::with_capacity(24),
        }
    }

    fn set(mut self, col: &'static str, v: Option<String>) -> Row {
        self.put(col, v);
        self
    }

    fn put(&mut self, col: &'static str, v: Option<String>) {
        match self.cols.iter_mut().find(|(c, _)| *c == col) {
            Some(slot) => slot.1 = v,
            None => self.cols.push((col, v)),
        }
    }

    /// The value of a column, for tests and callers that look at what was mapped.
    pub fn get(&self, col: &str) -> Option<&str> {
        self.cols
            .iter()
            .find(|(c, _)| *c == col)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// What a message maps to, with notes on what could not be mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    pub rows: Vec<Row>,
    pub warnings: Vec<String>,
}

/// The message type each standard data type is sent as (MSH-9.1^9.2), cancels aside.
fn expected_message(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "ADT-00" => &["ADT^A08", "ADT^A23"],
        "ADT-01" => &["ADT^A54", "ADT^A55"],
        "ADT-12" => &["ADT^A04"],
        "ADT-21" => &["ADT^A14", "ADT^A27"],
        "ADT-22" => &["ADT^A01", "ADT^A11"],
        "ADT-31" => &["ADT^A21", "ADT^A52"],
        "ADT-32" => &["ADT^A22", "ADT^A53"],
        "ADT-41" => &["ADT^A15", "ADT^A26"],
        "ADT-42" => &["ADT^A02", "ADT^A12"],
        "ADT-51" => &["ADT^A16", "ADT^A25"],
        "ADT-52" => &["ADT^A03", "ADT^A13"],
        "ADT-61" => &["ADT^A60"],
        "PPR-01" => &["PPR^ZD1"],
        "OMD" => &["OMD^O03"],
        "OMP-01" | "OMP-02" => &["RDE^O11"],
        "OMP-11" | "OMP-12" => &["RAS^O17"],
        "OML-01" => &["OML^O33"],
        "OML-11" => &["OUL^R22"],
        "OMG-01" | "OMG-02" | "OMG-03" => &["OMG^O19"],
        "OMG-11" | "OMG-12" => &["OMI^Z23"],
        "OMG-13" => &["ORU^R01"],
        _ => return None,
    })
}

const CANCEL_EVENTS: &[&str] = &[
    "A11", "A12", "A13", "A23", "A25", "A26", "A27", "A52", "A53", "A55",
];

/// Maps a standard-storage message. Unknown data types keep their raw file and get no rows.
pub fn map(name: &StoredName, msg: &Message) -> Mapped {
    let mut out = Mapped::default();
    let msh = &msg.segments[0];
    let msg_type = format!(
        "{}^{}",
        msh.comp(9, 1).unwrap_or_default(),
        msh.comp(9, 2).unwrap_or_default()
    );
    match expected_message(&name.data_type) {
        Some(ok) if !ok.contains(&msg_type.as_str()) => out.warnings.push(format!(
            "data type {} is sent as {}, but MSH-9 says {msg_type}",
            name.data_type,
            ok.join(" or ")
        )),
        None => out.warnings.push(format!(
            "data type {} has no table; its raw file is kept",
            name.data_type
        )),
        _ => {}
    }
    match name.data_type.as_str() {
        "ADT-00" => patient(msg, &mut out),
        "ADT-61" => allergies(msg, &mut out),
        "PPR-01" => diagnoses(msg, &mut out),
        "ADT-12" | "ADT-21" | "ADT-22" | "ADT-31" | "ADT-32" | "ADT-41" | "ADT-42" | "ADT-51"
        | "ADT-52" => encounter(&name.data_type, msg, &mut out),
        "OMP-01" => medication_orders("prescription", msg, &mut out),
        "OMP-02" => medication_orders("injection", msg, &mut out),
        "OMP-11" => administrations("prescription", msg, &mut out),
        "OMP-12" => administrations("injection", msg, &mut out),
        "OML-01" => lab_orders(msg, &mut out),
        "OML-11" => lab_results(msg, &mut out),
        "OMG-01" => exam_orders("radiology", msg, &mut out),
        "OMG-02" => exam_orders("endoscopy", msg, &mut out),
        "OMG-03" => exam_orders("physiology", msg, &mut out),
        "OMG-11" => exam_reports("radiology", msg, &mut out),
        "OMG-12" => exam_reports("endoscopy", msg, &mut out),
        "OMG-13" => exam_reports("physiology", msg, &mut out),
        "OMD" => diet_orders(msg, &mut out),
        _ => {}
    }
    out
}

/// The row of an extended-storage file: its document type and name; the content is the raw file.
pub fn document(name: &StoredName, size: usize) -> Row {
    debug_assert_eq!(name.storage, Storage::Extended);
    let t = name.doc_type.clone().unwrap_or_default();
    Row::new("document")
        .set("doc_code", t.code)
        .set("doc_name", t.name)
        .set("doc_system", t.system)
        .set("std_code", t.std_code)
        .set("std_name", t.std_name)
        .set("std_system", t.std_system)
        .set("content_key", name.order_no.clone())
        .set("file_name", Some(name.file_name.clone()))
        .set("media_type", Some(media_type(&name.file_name).to_owned()))
        .set("size", Some(size.to_string()))
}

fn media_type(file: &str) -> &'static str {
    let ext = file
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "hl7" => "x-application/hl7-v2+er7",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "tif" | "tiff" => "image/tiff",
        "dcm" => "application/dicom",
        "txt" => "text/plain",
        "htm" | "html" => "text/html",
        "css" => "text/css",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// A person field (XCN): the name, from family and given components (or one full name).
fn person(s: &Segment, n: usize) -> Option<String> {
    join_name(s.comp(n, 2), s.comp(n, 3))
}

fn join_name(family: Option<String>, given: Option<String>) -> Option<String> {
    match (family, given) {
        (Some(f), Some(g)) => Some(format!("{f} {g}")),
        (f, g) => f.or(g),
    }
}

/// Picks the repetitions of an XPN field by their representation code: (ideographic, phonetic).
/// Two optional parts of a name or an address (family and given, or line and city).
type Pair = (Option<String>, Option<String>);

fn names(s: &Segment, n: usize) -> (Pair, Pair) {
    let mut kanji = None;
    let mut kana = None;
    for r in 0..s.reps(n) {
        let pair = (s.comp_rep(n, r, 1), s.comp_rep(n, r, 2));
        match s.comp_rep(n, r, 8).as_deref() {
            Some("P") if kana.is_none() => kana = Some(pair),
            Some("I") if kanji.is_none() => kanji = Some(pair),
            _ if r == 0 && kanji.is_none() => kanji = Some(pair),
            _ if r == 1 && kana.is_none() => kana = Some(pair),
            _ => {}
        }
    }
    (kanji.unwrap_or_default(), kana.unwrap_or_default())
}

fn phone(s: &Segment, n: usize) -> Option<String> {
    (0..s.reps(n)).find_map(|r| s.comp_rep(n, r, 12).or_else(|| s.comp_rep(n, r, 1)))
}

/// An address (XAD): the unstructured text of component 8, or the structured parts.
fn address(s: &Segment, n: usize) -> Pair {
    let postal = s.comp(n, 5);
    let text = s.comp(n, 8).or_else(|| {
        let parts: Vec<String> = [4, 3, 1, 2].iter().filter_map(|&c| s.comp(n, c)).collect();
        if parts.is_empty() {
            None
        } else {
            Some(parts.concat())
        }
    });
    (postal, text)
}

fn patient(msg: &Message, out: &mut Mapped) {
    let Some(pid) = msg.first("PID") else {
        out.warnings
            .push("ADT-00 without PID: no patient row".into());
        return;
    };
    let ((fk, gk), (fp, gp)) = names(pid, 5);
    let (postal, addr) = address(pid, 11);
    let mut row = Row::new("patient")
        .set("family_kanji", fk)
        .set("given_kanji", gk)
        .set("family_kana", fp)
        .set("given_kana", gp)
        .set("birth_date", pid.get(7))
        .set("sex", pid.get(8))
        .set("postal_code", postal)
        .set("address", addr)
        .set("phone_home", phone(pid, 13))
        .set("phone_work", phone(pid, 14))
        .set("updated_at", pid.get(33))
        .set("message_patient_id", pid.get(3));
    if let Some(pv1) = msg.first("PV1") {
        row.put("patient_class", pv1.get(2));
        row.put("ward", pv1.comp(3, 1));
        row.put("room", pv1.comp(3, 2));
        row.put("bed", pv1.comp(3, 3));
        row.put("attending", person(pv1, 7));
    }
    for obx in msg.all("OBX") {
        let code = obx.comp(3, 1).unwrap_or_default();
        if code.starts_with("9N001") {
            row.put("height", obx.get(5));
            row.put("height_unit", obx.comp(6, 1));
        } else if code.starts_with("9N006") {
            row.put("weight", obx.get(5));
            row.put("weight_unit", obx.comp(6, 1));
        } else if code.starts_with("5H010") {
            row.put("blood_abo", obx.comp(5, 2).or_else(|| obx.get(5)));
        }
    }
    out.rows.push(row);
    for nk1 in msg.all("NK1") {
        let ((f, g), _) = names(nk1, 2);
        let (postal, addr) = address(nk1, 4);
        out.rows.push(
            Row::new("patient_contact")
                .set("seq", nk1.get(1))
                .set("family", f)
                .set("given", g)
                .set("relationship_code", nk1.comp(3, 1))
                .set("relationship", nk1.comp(3, 2))
                .set("postal_code", postal)
                .set("address", addr)
                .set("phone", phone(nk1, 5))
                .set("organisation", nk1.comp(13, 1)),
        );
    }
    for in1 in msg.all("IN1") {
        out.rows.push(
            Row::new("patient_insurance")
                .set("seq", in1.get(1))
                .set("plan_code", in1.comp(2, 1))
                .set("plan_name", in1.comp(2, 2))
                .set("insurer_number", in1.get(3))
                .set("insurer_name", in1.get(4))
                .set("insured_symbol", in1.get(10))
                .set("insured_number", in1.get(11))
                .set("valid_from", in1.get(12))
                .set("valid_to", in1.get(13))
                .set("relationship_code", in1.comp(17, 1))
                .set("relationship", in1.comp(17, 2)),
        );
    }
    for al1 in msg.all("AL1") {
        out.rows
            .push(allergy("AL1", al1).set("onset_date", al1.get(6)));
    }
}

/// AL1 and IAM share their first five fields: set ID, type, allergen, severity, reaction.
fn allergy(source: &str, s: &Segment) -> Row {
    Row::new("allergy")
        .set("source", Some(source.into()))
        .set("seq", s.get(1))
        .set("type_code", s.comp(2, 1))
        .set("type", s.comp(2, 2))
        .set("allergen_code", s.comp(3, 1))
        .set("allergen", s.comp(3, 2))
        .set("allergen_system", s.comp(3, 3))
        .set("severity_code", s.comp(4, 1))
        .set("severity", s.comp(4, 2))
        .set("reaction", s.text(5))
}

fn allergies(msg: &Message, out: &mut Mapped) {
    for iam in msg.all("IAM") {
        out.rows.push(
            allergy("IAM", iam)
                .set("action_code", iam.comp(6, 1))
                .set("onset_date", iam.get(11))
                .set("onset_text", iam.text(12)),
        );
    }
}

fn diagnoses(msg: &Message, out: &mut Mapped) {
    for seg in &msg.segments {
        match seg.name() {
            "PRB" => out.rows.push(
                Row::new("diagnosis")
                    .set("action", seg.get(1))
                    .set("action_at", seg.get(2))
                    .set("code", seg.comp(3, 1))
                    .set("name", seg.comp(3, 2))
                    .set("code_system", seg.comp(3, 3))
                    .set("problem_id", seg.get(4))
                    .set("established_on", seg.get(7))
                    .set("resolved_on", seg.get(9))
                    .set("icd10", seg.comp(10, 1))
                    .set("diagnosis_type_code", seg.comp(10, 4))
                    .set("diagnosis_type", seg.comp(10, 5))
                    .set("icd10_edition", seg.comp(10, 7))
                    .set("certainty", seg.comp(13, 1))
                    .set("outcome_code", seg.comp(14, 1))
                    .set("outcome", seg.comp(14, 2))
                    .set("outcome_on", seg.get(15))
                    .set("onset_on", seg.get(16))
                    .set("display_name", seg.text(17))
                    .set("ranking", seg.comp(18, 2).or_else(|| seg.comp(18, 1)))
                    .set(
                        "is_main",
                        Some(
                            if seg.comp(18, 1).as_deref() == Some("1") {
                                "1"
                            } else {
                                "0"
                            }
                            .into(),
                        ),
                    ),
            ),
            "ZPR" => {
                if let Some(last) = out.rows.last_mut().filter(|r| r.table == "diagnosis") {
                    last.put("prefix_modifier", seg.comp(1, 1));
                    last.put("suffix_modifier", seg.comp(3, 1));
                    last.put("exchange_code", seg.comp(5, 1));
                }
            }
            _ => {}
        }
    }
}

fn encounter(kind: &str, msg: &Message, out: &mut Mapped) {
    let event = msg.segments[0].comp(9, 2);
    let is_cancel = event.as_deref().is_some_and(|e| CANCEL_EVENTS.contains(&e));
    let mut row = Row::new("encounter")
        .set("data_type", Some(kind.to_owned()))
        .set("is_cancel", Some(if is_cancel { "1" } else { "0" }.into()))
        .set("event", event);
    if let Some(evn) = msg.first("EVN") {
        row.put("event_at", evn.get(6).or_else(|| evn.get(2)));
        row.put("recorded_at", evn.get(2));
    }
    if let Some(pv1) = msg.first("PV1") {
        row.put("patient_class", pv1.get(2));
        row.put("ward", pv1.comp(3, 1));
        row.put("room", pv1.comp(3, 2));
        row.put("bed", pv1.comp(3, 3));
        row.put("prior_ward", pv1.comp(6, 1));
        row.put("prior_room", pv1.comp(6, 2));
        row.put("prior_bed", pv1.comp(6, 3));
        row.put("attending_id", pv1.comp(7, 1));
        row.put("attending", person(pv1, 7));
        row.put("department", pv1.get(10));
        row.put("admitting", person(pv1, 17));
        row.put("discharge_disposition", pv1.get(36));
        row.put("admit_at", pv1.get(44));
        row.put("discharge_at", pv1.get(45));
    } else {
        out.warnings.push(format!("{kind} without PV1"));
    }
    if let Some(pv2) = msg.first("PV2") {
        row.put("expected_admit_at", pv2.get(8));
        row.put("expected_discharge_at", pv2.get(9));
    }
    out.rows.push(row);
}

/// Splits the segments after the header into groups, each starting at a segment named `start`.
fn groups<'a>(msg: &'a Message, start: &str) -> Vec<Vec<&'a Segment>> {
    let mut out: Vec<Vec<&Segment>> = Vec::new();
    for seg in &msg.segments {
        if seg.name() == start {
            out.push(vec![seg]);
        } else if let Some(g) = out.last_mut() {
            g.push(seg);
        }
    }
    out
}

fn order_fields(row: &mut Row, orc: &Segment) {
    row.put("order_no", orc.get(2));
    row.put("ordered_at", orc.get(9));
    row.put("orderer", person(orc, 12));
    row.put("department", orc.comp(17, 2).or_else(|| orc.comp(17, 1)));
}

fn medication_orders(kind: &'static str, msg: &Message, out: &mut Mapped) {
    for g in groups(msg, "ORC") {
        let orc = g[0];
        let find = |name: &str| g.iter().copied().find(|s| s.name() == name);
        let Some(rxe) = find("RXE") else {
            // A cancel (ORC-1 CA, DC, OC ...) names the order alone; anything else lost its drug.
            if !matches!(
                orc.get(1).as_deref(),
                Some("CA" | "DC" | "OC" | "OD" | "CR" | "DR")
            ) {
                out.warnings.push(format!(
                    "ORC {} without RXE",
                    orc.get(2).unwrap_or_default()
                ));
            }
            continue;
        };
        let mut base = Row::new("medication_order").set("kind", Some(kind.into()));
        order_fields(&mut base, orc);
        base.put("control", orc.get(1));
        base.put("rp_no", orc.get(4));
        base.put("entered_by", person(orc, 10));
        base.put("orderer_id", orc.comp(12, 1));
        base.put("department_code", orc.comp(17, 1));
        base.put("patient_class", orc.comp(29, 1));
        base.put("dose", rxe.get(3));
        base.put("dose_max", rxe.get(4));
        base.put("unit_code", rxe.comp(5, 1));
        base.put("unit", rxe.comp(5, 2));
        base.put("dosage_form", rxe.comp(6, 2).or_else(|| rxe.comp(6, 1)));
        base.put("instruction", rxe.comp(7, 2).or_else(|| rxe.comp(7, 1)));
        base.put("dispense_amount", rxe.get(10));
        base.put("dispense_unit", rxe.comp(11, 2).or_else(|| rxe.comp(11, 1)));
        base.put("rx_no", rxe.get(15));
        base.put("daily_dose", rxe.comp(19, 1));
        base.put(
            "daily_unit",
            rxe.sub(19, 2, 2).or_else(|| rxe.sub(19, 2, 1)),
        );
        base.put(
            "category",
            Some(
                (0..rxe.reps(21))
                    .filter_map(|r| rxe.comp_rep(21, r, 2).or_else(|| rxe.comp_rep(21, r, 1)))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .filter(|s| !s.is_empty()),
        );
        base.put("rate", rxe.get(24));
        base.put("rate_unit", rxe.comp(25, 1));
        if let Some(tq1) = find("TQ1") {
            base.put("usage_code", tq1.sub(3, 1, 1));
            base.put("usage_text", tq1.sub(3, 1, 2));
            if tq1
                .comp(6, 2)
                .as_deref()
                .is_none_or(|u| u == "d" || u == "D")
            {
                base.put("days", tq1.comp(6, 1));
            }
            base.put("start_at", tq1.get(7));
            base.put("end_at", tq1.get(8));
        }
        if let Some(rxr) = find("RXR") {
            base.put("route_code", rxr.comp(1, 1));
            base.put("route", rxr.comp(1, 2));
            base.put("device", rxr.comp(3, 2).or_else(|| rxr.comp(3, 1)));
        }
        let rxcs: Vec<&Segment> = g.iter().copied().filter(|s| s.name() == "RXC").collect();
        if kind == "injection" && !rxcs.is_empty() {
            for rxc in rxcs {
                out.rows.push(
                    base.clone()
                        .set("injection_type", rxe.comp(2, 2).or_else(|| rxe.comp(2, 1)))
                        .set("component", rxc.get(1))
                        .set("drug_code", rxc.comp(2, 1))
                        .set("drug_name", rxc.comp(2, 2))
                        .set("drug_system", rxc.comp(2, 3))
                        .set("dose", rxc.get(3))
                        .set("unit_code", rxc.comp(4, 1))
                        .set("unit", rxc.comp(4, 2)),
                );
            }
        } else {
            out.rows.push(
                base.set("drug_code", rxe.comp(2, 1))
                    .set("drug_name", rxe.comp(2, 2))
                    .set("drug_system", rxe.comp(2, 3)),
            );
        }
    }
}

fn administrations(kind: &'static str, msg: &Message, out: &mut Mapped) {
    for g in groups(msg, "ORC") {
        let order_no = g[0].get(2);
        let first = out.rows.len();
        for seg in &g {
            match seg.name() {
                "RXA" => out.rows.push(
                    Row::new("administration")
                        .set("kind", Some(kind.into()))
                        .set("order_no", order_no.clone())
                        .set("started_at", seg.get(3))
                        .set("ended_at", seg.get(4))
                        .set("drug_code", seg.comp(5, 1))
                        .set("drug_name", seg.comp(5, 2))
                        .set("drug_system", seg.comp(5, 3))
                        .set("amount", seg.get(6))
                        .set("unit_code", seg.comp(7, 1))
                        .set("unit", seg.comp(7, 2))
                        .set("note", seg.comp(9, 2).or_else(|| seg.comp(9, 1)))
                        .set("performer", person(seg, 10))
                        .set(
                            "location",
                            Some(
                                [1, 2, 3]
                                    .iter()
                                    .filter_map(|&c| seg.comp(11, c))
                                    .collect::<Vec<_>>()
                                    .join("-"),
                            )
                            .filter(|s| !s.is_empty()),
                        )
                        .set("rate", seg.get(12))
                        .set("completion", seg.get(20))
                        .set("entered_at", seg.get(22)),
                ),
                "RXR" => {
                    for r in &mut out.rows[first..] {
                        if r.get("route").is_none() {
                            r.put("route", seg.comp(1, 2).or_else(|| seg.comp(1, 1)));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn observation(table: &'static str, obx: &Segment) -> Row {
    let value_type = obx.get(2);
    let coded = matches!(value_type.as_deref(), Some("CWE" | "CE" | "CNE"));
    let value = if coded || value_type.as_deref() == Some("XCN") {
        obx.comp(5, 1)
    } else {
        // Free text and numbers keep the whole field, with components (SN uses them) intact.
        obx.text(5)
    };
    let mut row = Row::new(table)
        .set("set_id", obx.get(1))
        .set("value_type", value_type)
        .set("code", obx.comp(3, 1))
        .set("name", obx.comp(3, 2))
        .set("code_system", obx.comp(3, 3))
        .set("sub_id", obx.get(4))
        .set("value", value)
        .set("unit", obx.comp(6, 1))
        .set("status", obx.get(11));
    if table == "lab_result" {
        row.put("local_code", obx.comp(3, 4));
        row.put("local_name", obx.comp(3, 5));
        row.put("value_text", if coded { obx.comp(5, 2) } else { None });
        row.put("reference_range", obx.text(7));
        row.put("abnormal_flag", obx.get(8));
        row.put("observed_at", obx.get(14));
    }
    row
}

fn lab_results(msg: &Message, out: &mut Mapped) {
    let (mut spm, mut obr, mut orc): (Option<&Segment>, Option<&Segment>, Option<&Segment>) =
        (None, None, None);
    for seg in &msg.segments {
        match seg.name() {
            "SPM" => (spm, obr, orc) = (Some(seg), None, None),
            "OBR" => (obr, orc) = (Some(seg), None),
            "ORC" => orc = Some(seg),
            "OBX" => {
                let mut row = observation("lab_result", seg);
                row.put(
                    "order_no",
                    orc.and_then(|o| o.get(2))
                        .or_else(|| obr.and_then(|o| o.get(2))),
                );
                if let Some(s) = spm {
                    row.put("specimen_id", s.get(2));
                    row.put("specimen_code", s.comp(4, 1));
                    row.put("specimen", s.comp(4, 2));
                    row.put("collected_at", s.get(17));
                }
                if let Some(o) = obr {
                    row.put("item_code", o.comp(4, 1));
                    row.put("item", o.comp(4, 2));
                    row.put("reported_at", o.get(22));
                }
                out.rows.push(row);
            }
            _ => {}
        }
    }
}

fn lab_orders(msg: &Message, out: &mut Mapped) {
    let (mut spm, mut orc): (Option<&Segment>, Option<&Segment>) = (None, None);
    let mut pending: Option<Row> = None;
    for seg in &msg.segments {
        match seg.name() {
            "SPM" => {
                out.rows.extend(pending.take());
                (spm, orc) = (Some(seg), None);
            }
            "ORC" => {
                out.rows.extend(pending.take());
                orc = Some(seg);
            }
            "OBR" => {
                out.rows.extend(pending.take());
                let mut row = Row::new("lab_order");
                if let Some(o) = orc {
                    order_fields(&mut row, o);
                }
                if row.get("order_no").is_none() {
                    row.put("order_no", seg.get(2));
                }
                if let Some(s) = spm {
                    row.put("specimen_code", s.comp(4, 1));
                    row.put("specimen", s.comp(4, 2));
                    row.put("collected_at", s.get(17));
                }
                row.put("item_code", seg.comp(4, 1));
                row.put("item", seg.comp(4, 2));
                pending = Some(row);
            }
            "OBX" => {
                // A test requested under the current OBR; OBX under SPM alone describe the specimen.
                let base = match (&pending, out.rows.last()) {
                    (Some(p), _) => Some(p.clone()),
                    (None, Some(last)) if last.table == "lab_order" && orc.is_some() => {
                        Some(last.clone())
                    }
                    _ => None,
                };
                if let Some(base) = base {
                    pending = None;
                    out.rows.push(
                        base.set("test_code", seg.comp(3, 1))
                            .set("test_name", seg.comp(3, 2))
                            .set("test_system", seg.comp(3, 3))
                            .set("local_code", seg.comp(3, 4))
                            .set("local_name", seg.comp(3, 5)),
                    );
                }
            }
            _ => {}
        }
    }
    out.rows.extend(pending);
}

fn exam_orders(kind: &'static str, msg: &Message, out: &mut Mapped) {
    let mut orc: Option<&Segment> = None;
    let mut tq1: Option<&Segment> = None;
    let mut current_order: Option<String> = None;
    for seg in &msg.segments {
        match seg.name() {
            "ORC" => (orc, tq1) = (Some(seg), None),
            "TQ1" => tq1 = Some(seg),
            "OBR" => {
                let mut row = Row::new("exam_order").set("kind", Some(kind.into()));
                if let Some(o) = orc {
                    order_fields(&mut row, o);
                    row.put("control", o.get(1));
                    row.put("parent_order_no", o.get(8));
                }
                if row.get("order_no").is_none() {
                    row.put("order_no", seg.get(2));
                }
                if row.get("parent_order_no").is_none() {
                    row.put("parent_order_no", seg.get(29));
                }
                row.put("item_code", seg.comp(4, 1));
                row.put("item", seg.comp(4, 2));
                row.put("item_system", seg.comp(4, 3));
                row.put("priority", tq1.and_then(|t| t.comp(9, 1)));
                current_order = row.get("order_no").map(str::to_owned);
                out.rows.push(row);
            }
            "OBX" => out.rows.push(
                observation("exam_observation", seg)
                    .set("kind", Some(kind.into()))
                    .set("order_no", current_order.clone()),
            ),
            _ => {}
        }
    }
}

fn exam_reports(kind: &'static str, msg: &Message, out: &mut Mapped) {
    let mut orc: Option<&Segment> = None;
    let mut current_order: Option<String> = None;
    let mut last_report: Option<usize> = None;
    for seg in &msg.segments {
        match seg.name() {
            "ORC" => orc = Some(seg),
            "OBR" => {
                let order_no = orc.and_then(|o| o.get(2)).or_else(|| seg.get(2));
                let parent = orc.and_then(|o| o.get(8)).or_else(|| seg.get(29));
                current_order = order_no.clone();
                last_report = Some(out.rows.len());
                out.rows.push(
                    Row::new("exam_report")
                        .set("kind", Some(kind.into()))
                        .set("order_no", order_no)
                        .set("parent_order_no", parent)
                        .set("item_code", seg.comp(4, 1))
                        .set("item", seg.comp(4, 2))
                        .set("item_system", seg.comp(4, 3))
                        .set("observed_at", seg.get(7))
                        .set("reported_at", seg.get(22))
                        .set("result_status", seg.get(25)),
                );
                orc = None;
            }
            "IPC" => {
                if let Some(i) = last_report {
                    let r = &mut out.rows[i];
                    r.put("accession_no", seg.get(1));
                    r.put("procedure_id", seg.get(2));
                    r.put("study_uid", seg.get(3));
                    r.put("modality", seg.comp(5, 1));
                }
            }
            "OBX" => out.rows.push(
                observation("exam_observation", seg)
                    .set("kind", Some(kind.into()))
                    .set("order_no", current_order.clone()),
            ),
            _ => {}
        }
    }
}

fn diet_orders(msg: &Message, out: &mut Mapped) {
    for g in groups(msg, "ORC") {
        let orc = g[0];
        let tq1 = g.iter().find(|s| s.name() == "TQ1");
        for ods in g.iter().filter(|s| s.name() == "ODS") {
            let mut row = Row::new("diet_order");
            order_fields(&mut row, orc);
            row.put("control", orc.get(1));
            if let Some(t) = tq1 {
                row.put("timing_code", t.sub(3, 1, 1));
                row.put("timing", t.sub(3, 1, 2));
                row.put("start_at", t.get(7));
                row.put("priority", t.comp(9, 1));
            }
            row.put("diet_kind", ods.get(1));
            row.put("diet_code", ods.comp(3, 1));
            row.put("diet_name", ods.comp(3, 2));
            row.put("instruction", ods.text(4));
            out.rows.push(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    fn mapped(rel: &str, text: &str) -> Mapped {
        let name = path::parse(rel).unwrap();
        map(&name, &Message::parse(text).unwrap())
    }

    #[test]
    fn injections_get_a_row_per_component() {
        let m = mapped(
            "999/901/9999013/20110701/OMP-02/9999013_20110701_OMP-02_123456789012345_20110701224603984_01_1",
            "MSH|^~\\&|H|S|GW|R|20110701||RDE^O11^RDE_O11|1|P|2.5\rPID|0001||9999013\rORC|NW|123456789012345\rRXE||00^一般^99I02|510||ML^ミリリットル^MR9P\rTQ1|1||||||201107010800\rRXR|IV^静脈内^HL70162\rRXC|B|620007329^ソリタ^HOT9|1|HON^本^MR9P\rRXC|A|620002559^アドナ^HOT9|2|AMP^アンプル^MR9P",
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[1].get("drug_code"), Some("620002559"));
        assert_eq!(m.rows[1].get("component"), Some("A"));
        assert_eq!(m.rows[1].get("dose"), Some("2"));
        assert_eq!(m.rows[1].get("route"), Some("静脈内"));
        assert_eq!(m.rows[0].get("injection_type"), Some("一般"));
    }

    #[test]
    fn wrong_message_type_is_a_warning_not_a_failure() {
        let m = mapped(
            "999/901/9999013/20111120/ADT-22/9999013_20111120_ADT-22_999999999999999_20111220224447339_01_1",
            "MSH|^~\\&|H|S|GW|R|20110701||ADT^A03^ADT_A03|1|P|2.5\rPV1|0001|I|32^302^1",
        );
        assert_eq!(m.rows.len(), 1);
        assert!(
            m.warnings[0].contains("MSH-9 says ADT^A03"),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn cancel_events_are_marked() {
        let m = mapped(
            "999/901/9999013/20111120/ADT-22/9999013_20111120_ADT-22_999999999999999_20111220224447339_01_0",
            "MSH|^~\\&|H|S|GW|R|20110701||ADT^A11|1|P|2.5\rEVN||201112202100\rPV1|0001|I",
        );
        assert_eq!(m.rows[0].get("is_cancel"), Some("1"));
        assert_eq!(m.rows[0].get("event_at"), Some("201112202100"));
    }
}
