//! Orders grouped by ORC: prescriptions and injections (OMP-01, OMP-02), their administration
//! (OMP-11, OMP-12) and diet orders (OMD).

use super::{order_fields, person, Mapped, Row};
use crate::hl7::{Message, Segment};

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

pub(super) fn medication_orders(kind: &'static str, msg: &Message, out: &mut Mapped) {
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

pub(super) fn administrations(kind: &'static str, msg: &Message, out: &mut Mapped) {
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

pub(super) fn diet_orders(msg: &Message, out: &mut Mapped) {
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
    use crate::record::tests::mapped;

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
}
