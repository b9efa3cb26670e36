//! Laboratory and examination orders and their results: OBX observations under OBR (OML-01,
//! OML-11, OMG-01 to OMG-03, OMG-11 to OMG-13).

use super::{order_fields, Mapped, Row};
use crate::hl7::{Message, Segment};

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

pub(super) fn lab_results(msg: &Message, out: &mut Mapped) {
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

pub(super) fn lab_orders(msg: &Message, out: &mut Mapped) {
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

pub(super) fn exam_orders(kind: &'static str, msg: &Message, out: &mut Mapped) {
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

pub(super) fn exam_reports(kind: &'static str, msg: &Message, out: &mut Mapped) {
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
