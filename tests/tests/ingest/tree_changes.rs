//! The tree changing under the ingest: malformed files quarantined and retried, flags that
//! supersede and delete, PPR-01 lists replaced, files that vanish or are rewritten into garbage.

use std::path::Path;

use tests::gen::{generate, Spec};

use crate::common::{copy_tree, diff_r, fixture, Edge};

#[test]
fn malformed_files_are_quarantined_with_reasons_and_retried_when_fixed() {
    let e = Edge::new();
    let g = tempfile::tempdir().unwrap();
    let w = generate(
        &Spec {
            malformed: 5,
            ..Spec::small(4)
        },
        g.path(),
    );
    let root = g.path().join("standard");
    let (s, code) = e.ingest(&[&root], &[]);
    assert_eq!(code, 0);
    assert_eq!(s["quarantined"], 5);
    assert_eq!(s["ingested"].as_u64().unwrap(), w.files - w.documents - 5);
    let reasons: Vec<String> = e
        .query("SELECT reason FROM quarantine ORDER BY rel_path")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for want in [
        "not ISO-2022-JP",
        "not MSH",
        "no HL7 message",
        "data-type folder",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "no reason mentions {want:?}: {reasons:?}"
        );
    }
    let status = String::from_utf8(e.run(&mut e.cmd("status")).stdout).unwrap();
    assert!(
        status.contains("quarantine: 5 file(s)") && status.contains("not ISO-2022-JP"),
        "{status}"
    );

    // Unchanged, they are not read again; fixed, they are taken in.
    let (s, _) = e.ingest(&[&root], &[]);
    assert_eq!(
        (s["quarantined"].as_u64(), s["still_quarantined"].as_u64()),
        (Some(0), Some(5))
    );
    let bad = e.one("SELECT rel_path FROM quarantine WHERE reason LIKE '%not MSH%'");
    let good = std::fs::read(fixture().join("999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1")).unwrap();
    std::fs::write(root.join(&bad), good).unwrap();
    let (s, _) = e.ingest(&[&root], &[]);
    assert_eq!(s["ingested"], 1);
    assert_eq!(e.one("SELECT count(*) FROM quarantine"), "4");
    assert_eq!(e.one(&format!("SELECT count(*) FROM medication_order m JOIN source_file f ON f.id = m.file_id WHERE f.rel_path = '{bad}'")), "3");
}

fn omp01(dir: &Path, time: &str, flag: char) -> std::path::PathBuf {
    dir.join(format!(
        "999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_{time}_01_{flag}"
    ))
}

#[test]
fn flags_supersede_delete_and_ppr01_replaces_the_list() {
    let e = Edge::new();
    let root = e.dir.path().join("tree");
    copy_tree(&fixture(), &root);
    e.ingest(&[&root], &[]);
    let doses =
        |e: &Edge| e.query("SELECT dose FROM medication_order WHERE drug_code = '108665201'");
    assert_eq!(doses(&e), [["1"]]);

    // Update: the gateway renames the current file to flag 2, then writes the new one as flag 1.
    let old = omp01(&root, "20110701224603984", '1');
    let bytes = std::fs::read(&old).unwrap();
    std::fs::rename(&old, omp01(&root, "20110701224603984", '2')).unwrap();
    // The dose field follows the drug: `^HOT9|1|` becomes `^HOT9|2|` in the first RXE only.
    let changed = String::from_utf8_lossy(&bytes).replacen("^HOT9|1||TAB", "^HOT9|2||TAB", 1);
    std::fs::write(omp01(&root, "20110702090000000", '1'), changed.as_bytes()).unwrap();
    let (s, _) = e.ingest(&[&root], &[]);
    assert_eq!(
        (
            s["renamed"].as_u64(),
            s["ingested"].as_u64(),
            s["superseded"].as_u64(),
            s["missing"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(0))
    );
    assert_eq!(doses(&e), [["2"]], "only the current version has rows");
    assert_eq!(
        e.one("SELECT count(*) FROM source_file WHERE data_type = 'OMP-01'"),
        "2",
        "both versions are kept"
    );

    // Cancel: every version renamed to flag 0 and a tombstone written: the record's rows go.
    std::fs::rename(
        omp01(&root, "20110702090000000", '1'),
        omp01(&root, "20110702090000000", '0'),
    )
    .unwrap();
    std::fs::rename(
        omp01(&root, "20110701224603984", '2'),
        omp01(&root, "20110701224603984", '0'),
    )
    .unwrap();
    std::fs::write(
        omp01(&root, "20110703090000000", '0'),
        b"MSH|^~\\&|HIS|S|GW|R|20110703090000||RDE^O11^RDE_O11|9|P|2.5\rORC|CA|000000011000185\r",
    )
    .unwrap();
    let (s, _) = e.ingest(&[&root], &[]);
    assert_eq!(
        (s["renamed"].as_u64(), s["deleted"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        e.one("SELECT count(*) FROM medication_order WHERE kind = 'prescription'"),
        "0"
    );
    assert_eq!(
        e.one("SELECT count(*) FROM source_file WHERE data_type = 'OMP-01' AND flag = 0"),
        "3"
    );

    // PPR-01: a newer file holds the whole new list; the old one's diagnoses disappear.
    let ppr_dir = root.join("999/901/9999013/-/PPR-01");
    let old = ppr_dir.join("9999013_-_PPR-01_999999999999999_20111209163030000_01_1");
    let text = String::from_utf8_lossy(&std::fs::read(&old).unwrap()).into_owned();
    std::fs::rename(
        &old,
        ppr_dir.join("9999013_-_PPR-01_999999999999999_20111209163030000_01_2"),
    )
    .unwrap();
    let newer = text
        .trim_end_matches('\x1c')
        .replace("K297", "K259")
        .replace("20054174", "20051234")
        + "PRB|AD|20120101|20059316^^MDCDX2|2||||||I10\r";
    std::fs::write(
        ppr_dir.join("9999013_-_PPR-01_999999999999999_20120101090000000_01_1"),
        newer,
    )
    .unwrap();
    e.ingest(&[&root], &[]);
    assert_eq!(
        e.query("SELECT code, icd10 FROM diagnosis ORDER BY id"),
        [["20051234", "K259"], ["20059316", "I10"]]
    );

    // The whole history still exports as it stands in the tree.
    let out = e.dir.path().join("export");
    e.run(e.cmd("export-ssmix2").arg("--to").arg(&out));
    diff_r(&root.join("999"), &out.join("999"));
}

#[test]
fn vanished_files_stay_and_rewrites_into_garbage_never_overwrite() {
    let e = Edge::new();
    let g = tempfile::tempdir().unwrap();
    generate(
        &Spec {
            patients: 40,
            ..Spec::small(5)
        },
        g.path(),
    );
    let root = g.path().join("standard");
    e.ingest(&[&root], &[]);
    let before = e.dump();
    let files: Vec<String> = e
        .query("SELECT rel_path FROM source_file ORDER BY rel_path")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();

    // One file disappears: marked missing, its rows stay.
    std::fs::remove_file(root.join(&files[0])).unwrap();
    let (s, code) = e.ingest(&[&root], &[]);
    assert_eq!((s["missing"].as_u64(), code), (Some(1), 0));
    assert_eq!(
        e.one(&format!(
            "SELECT missing_since IS NOT NULL FROM source_file WHERE rel_path = '{}'",
            files[0]
        )),
        "1"
    );
    let rows_now: usize = e.dump().iter().skip(1).map(|(_, r)| r.len()).sum();
    let rows_before: usize = before.iter().skip(1).map(|(_, r)| r.len()).sum();
    assert_eq!(rows_now, rows_before);

    // Twelve files rewritten into random bytes: quarantined, stored versions kept, a loud alarm.
    for f in &files[1..13] {
        std::fs::write(
            root.join(f),
            (0..300u32)
                .map(|i| (i * 131 % 251) as u8 | 0x80)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
    }
    let (s, code) = e.ingest(&[&root], &[]);
    assert_eq!(code, 3, "an alarm exits with 3");
    assert_eq!(s["rewritten_unreadable"], 12);
    assert!(
        s["alarms"][0]
            .as_str()
            .unwrap()
            .contains("possible ransomware"),
        "{s}"
    );
    assert_eq!(e.one("SELECT count(*) FROM quarantine"), "12");
    let same: Vec<_> = e.dump().into_iter().map(|(t, r)| (t, r.len())).collect();
    let was: Vec<_> = before.iter().map(|(t, r)| (t.clone(), r.len())).collect();
    assert_eq!(same, was);
    for f in &files[1..13] {
        let stored = e.one(&format!(
            "SELECT hex(sha256) FROM source_file WHERE rel_path = '{f}'"
        ));
        let orig = before[0].1.iter().find(|r| &r[1] == f).unwrap();
        assert_eq!(stored.to_lowercase(), orig[12], "{f} was overwritten");
    }
    let status = String::from_utf8(e.run(&mut e.cmd("status")).stdout).unwrap();
    assert!(status.contains("possible ransomware"), "{status}");

    // Most of the tree vanishes at once: a mass-disappearance alarm, and nothing is deleted.
    for f in &files[20..] {
        let _ = std::fs::remove_file(root.join(f));
    }
    let (s, code) = e.ingest(&[&root], &[]);
    assert_eq!(code, 3);
    assert!(
        s["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("mass disappearance")),
        "{s}"
    );
    assert_eq!(
        e.one("SELECT count(*) FROM source_file"),
        files.len().to_string()
    );

    // The root itself is gone (an unmounted share): nothing more is marked missing.
    let missing_before = e.one("SELECT count(*) FROM source_file WHERE missing_since IS NOT NULL");
    std::fs::rename(&root, g.path().join("unmounted")).unwrap();
    let (s, code) = e.ingest(&[&root], &[]);
    assert_eq!(code, 3);
    assert!(
        s["alarms"][0]
            .as_str()
            .unwrap()
            .contains("not a readable folder"),
        "{s}"
    );
    assert_eq!(
        e.one("SELECT count(*) FROM source_file WHERE missing_since IS NOT NULL"),
        missing_before
    );
}
