//! From a parsed SS-MIX2 message to rows of the normalized clinical tables, one function a
//! family of data types. Every value is kept as the text the message carries (codes, dates and
//! quantities alike), so nothing is lost to a conversion; the raw file is kept beside them.

mod observations;
mod orders;
mod patient;

use crate::hl7::{Message, Segment};
use crate::path::{Storage, StoredName};
use observations::{exam_orders, exam_reports, lab_orders, lab_results};
use orders::{administrations, diet_orders, medication_orders};
use patient::{allergies, diagnoses, encounter, patient};

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

fn order_fields(row: &mut Row, orc: &Segment) {
    row.put("order_no", orc.get(2));
    row.put("ordered_at", orc.get(9));
    row.put("orderer", person(orc, 12));
    row.put("department", orc.comp(17, 2).or_else(|| orc.comp(17, 1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    pub(super) fn mapped(rel: &str, text: &str) -> Mapped {
        let name = path::parse(rel).unwrap();
        map(&name, &Message::parse(text).unwrap())
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
}
