//! Where a file sits in an SS-MIX2 tree and what its name says: the storage index key.
//!
//! Standard storage: `<pid 1-3>/<pid 4-6>/<pid>/<YYYYMMDD|->/<type>/<pid_date_type_order_time_dept_flag>`.
//! Extended storage: `<pid 1-3>/<pid 4-6>/<pid>/<date>/<document type>/<content folder>/<file>`,
//! the content folder named like a standard file, with 7 fields or 6 (no department).

/// The fifteen nines that stand for "no order number".
pub const NO_ORDER: &str = "999999999999999";

/// Data types whose newest file holds the patient's whole list, whatever its order number.
pub const SNAPSHOT_TYPES: &[&str] = &["ADT-00", "ADT-61", "PPR-01"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Standard,
    Extended,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Standard => "standard",
            Storage::Extended => "extended",
        }
    }
}

/// A document-type folder of extended storage: `code^name^system^std code^std name^std system`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocType {
    pub code: Option<String>,
    pub name: Option<String>,
    pub system: Option<String>,
    pub std_code: Option<String>,
    pub std_name: Option<String>,
    pub std_system: Option<String>,
}

/// Everything the path of a stored file tells, checked against the folders it sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName {
    pub storage: Storage,
    pub patient_id: String,
    pub care_date: Option<String>,
    pub data_type: String,
    pub order_no: Option<String>,
    pub issued_at: String,
    pub department: Option<String>,
    pub flag: u8,
    /// The file itself (standard) or its content folder (extended): one version of a record.
    pub version_path: String,
    pub doc_type: Option<DocType>,
    pub file_name: String,
    pub warnings: Vec<String>,
}

impl StoredName {
    pub fn is_snapshot(&self) -> bool {
        self.storage == Storage::Standard && SNAPSHOT_TYPES.contains(&self.data_type.as_str())
    }
}

/// Reads the storage key out of a path relative to the root (components separated by `/`).
/// The error says what is wrong, in words a person can act on.
pub fn parse(rel_path: &str) -> Result<StoredName, String> {
    let parts: Vec<&str> = rel_path.split('/').collect();
    match parts.len() {
        6 => parse_standard(&parts),
        7 => parse_extended(&parts),
        n => Err(format!(
            "not an SS-MIX2 storage path: {n} folder levels, expected 6 (standard) or 7 (extended storage)"
        )),
    }
}

fn check_folders(parts: &[&str]) -> Result<(), String> {
    let (l1, l2, pid) = (parts[0], parts[1], parts[2]);
    if pid.is_empty() || pid.len() > 15 || !pid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "patient folder {pid:?} is not a patient ID (1 to 15 letters or digits)"
        ));
    }
    let want1 = &pid[..pid.len().min(3)];
    let want2 = &pid[pid.len().min(3)..pid.len().min(6)];
    if l1 != want1 || l2 != want2 {
        return Err(format!(
            "patient {pid} is filed under {l1}/{l2}/, but belongs under {want1}/{want2}/"
        ));
    }
    let date = parts[3];
    if date != "-" && !is_date(date) {
        return Err(format!("date folder {date:?} is neither YYYYMMDD nor '-'"));
    }
    Ok(())
}

fn is_date(s: &str) -> bool {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let m: u32 = s[4..6].parse().unwrap_or(0);
    let d: u32 = s[6..8].parse().unwrap_or(0);
    (1..=12).contains(&m) && (1..=31).contains(&d)
}

struct NameFields<'a> {
    pid: &'a str,
    date: &'a str,
    kind: &'a str,
    order: &'a str,
    time: &'a str,
    dept: Option<&'a str>,
    flag: &'a str,
}

fn split_name(name: &str, allow_six: bool) -> Result<NameFields<'_>, String> {
    let f: Vec<&str> = name.split('_').collect();
    match (f.len(), allow_six) {
        (7, _) => Ok(NameFields { pid: f[0], date: f[1], kind: f[2], order: f[3], time: f[4], dept: Some(f[5]), flag: f[6] }),
        (6, true) => Ok(NameFields { pid: f[0], date: f[1], kind: f[2], order: f[3], time: f[4], dept: None, flag: f[5] }),
        (n, _) => Err(format!(
            "file name {name:?} has {n} '_'-separated fields, expected 7 (pid_date_type_order_time_dept_flag)"
        )),
    }
}

fn check_name(n: &NameFields, parts: &[&str], warnings: &mut Vec<String>) -> Result<u8, String> {
    if n.pid != parts[2] {
        return Err(format!(
            "file names patient {:?} but sits in patient folder {:?}",
            n.pid, parts[2]
        ));
    }
    if n.date != parts[3] {
        return Err(format!(
            "file names date {:?} but sits in date folder {:?}",
            n.date, parts[3]
        ));
    }
    let flag = match n.flag {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        other => return Err(format!("condition flag {other:?} is not 0, 1 or 2")),
    };
    if n.order.is_empty()
        || n.order.len() > 22
        || !n.order.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "order number {:?} is not 1 to 22 letters or digits",
            n.order
        ));
    }
    if !n.time.bytes().all(|b| b.is_ascii_digit()) || n.time.len() < 8 {
        return Err(format!("time field {:?} is not YYYYMMDDHHMMSSfff", n.time));
    }
    if n.time.len() != 17 {
        warnings.push(format!(
            "time field {:?} has {} digits, expected 17",
            n.time,
            n.time.len()
        ));
    }
    if let Some(d) = n.dept {
        if d != "-"
            && (d.is_empty() || d.len() > 5 || !d.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!(
                "department field {d:?} is neither a department code nor '-'"
            ));
        }
    }
    Ok(flag)
}

fn opt(s: &str, none: &str) -> Option<String> {
    if s == none {
        None
    } else {
        Some(s.to_owned())
    }
}

fn parse_standard(parts: &[&str]) -> Result<StoredName, String> {
    check_folders(parts)?;
    let kind = parts[4];
    let valid_kind = kind.len() <= 10
        && kind.len() >= 3
        && kind
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if !valid_kind {
        return Err(format!(
            "data-type folder {kind:?} is not an SS-MIX2 data type (ADT-00, OMP-01, OMD ...)"
        ));
    }
    let name = parts[5];
    let n = split_name(name, false)?;
    let mut warnings = Vec::new();
    let flag = check_name(&n, parts, &mut warnings)?;
    if n.kind != kind {
        return Err(format!(
            "file names data type {:?} but sits in data-type folder {kind:?}",
            n.kind
        ));
    }
    Ok(StoredName {
        storage: Storage::Standard,
        patient_id: n.pid.to_owned(),
        care_date: opt(n.date, "-"),
        data_type: kind.to_owned(),
        order_no: opt(n.order, NO_ORDER),
        issued_at: n.time.to_owned(),
        department: n.dept.and_then(|d| opt(d, "-")),
        flag,
        version_path: parts.join("/"),
        doc_type: None,
        file_name: name.to_owned(),
        warnings,
    })
}

fn parse_extended(parts: &[&str]) -> Result<StoredName, String> {
    check_folders(parts)?;
    let folder = parts[5];
    let n = split_name(folder, true).map_err(|e| format!("content folder: {e}"))?;
    let mut warnings = Vec::new();
    let flag = check_name(&n, parts, &mut warnings)?;
    let file = parts[6];
    if file.is_empty() {
        return Err("empty file name".into());
    }
    let c: Vec<&str> = parts[4].split('^').collect();
    let part = |i: usize| c.get(i).filter(|s| !s.is_empty()).map(|s| s.to_string());
    let doc_type = DocType {
        code: part(0),
        name: part(1),
        system: part(2),
        std_code: part(3),
        std_name: part(4),
        std_system: part(5),
    };
    if doc_type.code.is_none() && doc_type.std_code.is_none() {
        return Err(format!(
            "document-type folder {:?} names neither a local nor a standard code",
            parts[4]
        ));
    }
    Ok(StoredName {
        storage: Storage::Extended,
        patient_id: n.pid.to_owned(),
        care_date: opt(n.date, "-"),
        data_type: n.kind.to_owned(),
        order_no: opt(n.order, NO_ORDER),
        issued_at: n.time.to_owned(),
        department: n.dept.and_then(|d| opt(d, "-")),
        flag,
        version_path: parts[..6].join("/"),
        doc_type: Some(doc_type),
        file_name: file.to_owned(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patient ID, care date, data type, order number and flag; or the error's text.
    type Expect<'a> = Result<(&'a str, Option<&'a str>, &'a str, Option<&'a str>, u8), &'a str>;

    #[track_caller]
    fn check(path: &str, expect: Expect) {
        match (parse(path), expect) {
            (Ok(n), Ok((pid, date, kind, order, flag))) => {
                assert_eq!(
                    (
                        n.patient_id.as_str(),
                        n.care_date.as_deref(),
                        n.data_type.as_str(),
                        n.order_no.as_deref(),
                        n.flag
                    ),
                    (pid, date, kind, order, flag)
                );
            }
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn standard_names() {
        check(
            "999/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1",
            Ok(("9999013", None, "ADT-00", None, 1)),
        );
        check("999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_2", Ok(("9999013", Some("20110701"), "OMP-01", Some("000000011000185"), 2)));
        check("999/901/9999013/20111220/OMG-11/9999013_20111220_OMG-11_2011122000300_20111220224447339_24_0", Ok(("9999013", Some("20111220"), "OMG-11", Some("2011122000300"), 0)));
        check("999/901/9999013/20111013/OMD/9999013_20111013_OMD_123456789012345_20111014232213000_01_1", Ok(("9999013", Some("20111013"), "OMD", Some("123456789012345"), 1)));
    }

    #[test]
    fn misfiled_and_malformed_names() {
        check(
            "999/902/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1",
            Err("belongs under 999/901/"),
        );
        check("999/901/9999013/20110701/OMP-02/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1", Err("data-type folder"));
        check("999/901/9999013/20110702/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1", Err("date folder"));
        check("999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_3", Err("condition flag"));
        check(
            "999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_01_1",
            Err("6 '_'-separated fields"),
        );
        check("999/901/9999013/2011-07/OMP-01/x", Err("date folder"));
        check("999/901/9999013/OMP-01/x", Err("5 folder levels"));
        check(
            "99/901/9999013/-/ADT-00/9999013_-_ADT-00_999999999999999_20111220224447339_-_1",
            Err("belongs under"),
        );
    }

    #[test]
    fn extended_storage_accepts_six_fields() {
        let p = "012/345/0123456789/20160101/L-OBSERVATIONS^OBSERVATIONS^99ZL01/0123456789_20160101_L-OBSERVATIONS^OBSERVATIONS^99ZL01_000000020160101_201601011500321_1/main_document.hl7";
        let n = parse(p).unwrap();
        assert_eq!(n.storage, Storage::Extended);
        assert_eq!(n.flag, 1);
        assert_eq!(n.department, None);
        assert_eq!(n.file_name, "main_document.hl7");
        assert_eq!(n.doc_type.unwrap().code.as_deref(), Some("L-OBSERVATIONS"));
        assert!(n.version_path.ends_with("_1"));
    }
}
