//! The patient's own records: demographics with contacts and insurance (ADT-00), allergies,
//! diagnoses and the encounters the ADT events describe.

use super::{person, Mapped, Row};
use crate::hl7::{Message, Segment};

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

pub(super) fn patient(msg: &Message, out: &mut Mapped) {
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

pub(super) fn allergies(msg: &Message, out: &mut Mapped) {
    for iam in msg.all("IAM") {
        out.rows.push(
            allergy("IAM", iam)
                .set("action_code", iam.comp(6, 1))
                .set("onset_date", iam.get(11))
                .set("onset_text", iam.text(12)),
        );
    }
}

pub(super) fn diagnoses(msg: &Message, out: &mut Mapped) {
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

const CANCEL_EVENTS: &[&str] = &[
    "A11", "A12", "A13", "A23", "A25", "A26", "A27", "A52", "A53", "A55",
];

pub(super) fn encounter(kind: &str, msg: &Message, out: &mut Mapped) {
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

#[cfg(test)]
mod tests {
    use crate::record::tests::mapped;

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
