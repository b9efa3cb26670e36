//! End-to-end tests of `tsunagi-edge ingest`, `status` and `export-ssmix2` on real SS-MIX2 bytes:
//! the NHO fixture and generated corpora, through the real binary and the real SQLCipher store.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use tests::gen::{generate, Spec};

#[test]
fn fixture_lands_in_its_columns_and_exports_byte_for_byte() {
    let e = Edge::new();
    let (s, code) = e.ingest(&[&fixture()], &[]);
    assert_eq!(code, 0);
    assert_eq!(s["seen"], 19);
    assert_eq!(s["ingested"], 19);
    assert_eq!(s["quarantined"], 0);
    assert_eq!(
        e.one("SELECT count(*) FROM source_file WHERE decode_warnings IS NOT NULL"),
        "0",
        "the fixture must decode without a warning"
    );
    assert_eq!(e.one("SELECT count(*) FROM quarantine"), "0");

    // Concrete values in their columns.
    // JIS 0x215D decodes to U+FF0D as in WHATWG and CP932 (Python's codec gives U+2212).
    assert_eq!(e.query("SELECT family_kana, given_kana, family_kanji, birth_date, sex, postal_code FROM patient")[0],
        ["カンジャ", "タロウ", "患者", "19480405", "M", "422-8033"]);
    assert_eq!(
        e.one("SELECT address FROM patient"),
        "静岡県静岡市登呂１－３－５"
    );
    assert_eq!(
        e.one("SELECT insurer_number || ' ' || plan_name FROM patient_insurance"),
        "67999991 国民健康保険退職者"
    );
    assert_eq!(e.query("SELECT drug_name, dose, unit, usage_code, usage_text, days, route, dispense_amount FROM medication_order WHERE drug_code = '108665201'")[0],
        ["ダーゼン錠（５mg)", "1", "錠", "1013044400000000", "内服・経口・１日３回朝昼夕食後", "5", "口", "15"]);
    assert_eq!(
        e.one("SELECT count(*) FROM medication_order WHERE kind = 'prescription'"),
        "3"
    );
    assert_eq!(e.query("SELECT component, drug_code, dose, unit FROM medication_order WHERE kind = 'injection' ORDER BY id LIMIT 2"),
        [["B", "620007329", "1", "本"], ["A", "620002559", "1", "アンプル"]]);
    assert_eq!(e.query("SELECT name, value, unit, reference_range, status, specimen FROM lab_result WHERE code = '3A010000002327101'")[0],
        ["総蛋白", "7.2", "g/dl", "6.70-8.3", "F", "血清"]);
    assert_eq!(e.query("SELECT code, name, icd10, diagnosis_type, is_main, outcome, exchange_code FROM diagnosis")[0],
        ["20054174", "胃炎", "K297", "外来時", "1", "回復せず", "TSQF"]);
    assert_eq!(
        e.query("SELECT allergen, severity FROM allergy WHERE source = 'IAM' ORDER BY seq"),
        [
            ["スギ", "軽度"],
            ["ソバ", "中等度"],
            ["ハウスダスト", "軽度"],
            ["アリナミン", "中等度"]
        ]
    );
    assert_eq!(e.query("SELECT data_type, ward, room, prior_room, admit_at, discharge_at FROM encounter ORDER BY data_type"), [
        ["ADT-22", "32", "302", "NULL", "201111201600", "NULL"],
        ["ADT-42", "32", "305", "302", "NULL", "NULL"],
        ["ADT-52", "41", "460", "NULL", "NULL", "201112201200"],
    ]);
    assert_eq!(
        e.one("SELECT study_uid FROM exam_report WHERE kind = 'radiology' LIMIT 1"),
        "1.2.392.1114.20045.43233.5.300001"
    );
    assert_eq!(
        e.one("SELECT value FROM exam_observation WHERE kind = 'physiology' AND name = '心拍数'"),
        "67"
    );
    assert_eq!(e.one("SELECT instruction FROM diet_order"), "塩分控えめ");
    assert_eq!(
        e.one(
            "SELECT drug_name FROM administration WHERE kind = 'prescription' ORDER BY id LIMIT 1"
        ),
        "ダーゼン錠（５mg)"
    );

    // The tree comes back out byte for byte.
    let out = e.dir.path().join("export");
    e.run(e.cmd("export-ssmix2").arg("--to").arg(&out));
    diff_r(&fixture().join("999"), &out.join("999"));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "only the storage tree is exported"
    );

    // Into a folder that is not empty, export refuses rather than overwrite.
    let again = e
        .cmd("export-ssmix2")
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn rescan_of_an_unchanged_tree_writes_nothing() {
    let e = Edge::new();
    let g = tempfile::tempdir().unwrap();
    generate(&Spec::small(3), g.path());
    let roots = [g.path().join("standard"), g.path().join("extended")];
    let roots: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
    let (first, _) = e.ingest(&roots, &[]);
    assert!(first["ingested"].as_u64().unwrap() > 40);
    let before = e.dump();
    let head = e.one("SELECT seq || hash FROM outbox_head");
    let db = e.store.join("edge.db");
    let size = std::fs::metadata(&db).unwrap().len();
    let (second, code) = e.ingest(&roots, &[]);
    assert_eq!(code, 0);
    assert_eq!(second["ingested"], 0);
    assert_eq!(second["segments"], 0);
    assert_eq!(second["unchanged"], first["seen"]);
    assert_eq!(e.dump(), before);
    assert_eq!(e.one("SELECT seq || hash FROM outbox_head"), head);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
}

#[test]
fn generated_corpus_round_trips_and_the_outbox_replays_it() {
    let e = Edge::new();
    let g = tempfile::tempdir().unwrap();
    let w = generate(
        &Spec {
            patients: 60,
            ..Spec::small(9)
        },
        g.path(),
    );
    assert!(
        w.superseded > 0 && w.deleted > 0 && w.documents > 0,
        "{w:?}"
    );
    let (s, _) = e.ingest(
        &[&g.path().join("standard"), &g.path().join("extended")],
        &["--batch-files", "50"],
    );
    assert_eq!(s["seen"].as_u64().unwrap(), w.files);
    assert_eq!(s["quarantined"], 0);
    assert_eq!(s["superseded"].as_u64().unwrap(), w.superseded);
    assert_eq!(s["deleted"].as_u64().unwrap(), w.deleted);
    assert!(s["segments"].as_u64().unwrap() > 5);
    assert_eq!(
        e.one("SELECT count(*) FROM source_file WHERE decode_warnings IS NOT NULL"),
        "0"
    );
    assert_eq!(
        e.one("SELECT count(*) FROM document")
            .parse::<u64>()
            .unwrap(),
        w.documents
    );

    let out = e.dir.path().join("export");
    let missing_ext = e
        .cmd("export-ssmix2")
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing_ext.stderr).contains("--extended-to"));
    e.run(
        e.cmd("export-ssmix2")
            .arg("--to")
            .arg(out.join("standard"))
            .arg("--extended-to")
            .arg(out.join("extended")),
    );
    diff_r(g.path(), &out);

    // Replaying every outbox segment into an empty schema gives the same clinical content.
    let conn = e.conn();
    let segs = edge::outbox::segments_after(&conn, 0, 100_000).unwrap();
    shared::chain::verify(0, shared::chain::GENESIS, &segs).unwrap();
    let replica = rusqlite::Connection::open_in_memory().unwrap();
    for m in shared::schema::MIGRATIONS {
        replica.execute_batch(m).unwrap();
    }
    edge::outbox::apply(&replica, &segs).unwrap();
    assert_eq!(dump(&replica), e.dump());
}

#[test]
fn kill_9_mid_ingest_then_restart_gives_the_uninterrupted_store() {
    let g = tempfile::tempdir().unwrap();
    generate(
        &Spec {
            patients: 400,
            ..Spec::small(11)
        },
        g.path(),
    );
    let std_root = g.path().join("standard");

    let reference = Edge::new();
    reference.ingest(&[&std_root], &["--batch-files", "64"]);

    let e = Edge::new();
    let mut child = e
        .cmd("ingest")
        .arg("--root")
        .arg(&std_root)
        .args(["--once", "--batch-files", "64"])
        .spawn()
        .unwrap();
    // Wait until some batches are committed, then kill without warning.
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let committed = e.store.join("edge.db").exists()
            && edge::store::open_read_only(&e.store, &edge::store::read_key(&e.key).unwrap())
                .ok()
                .and_then(|c| {
                    c.query_row("SELECT seq FROM outbox_head", [], |r| r.get::<_, i64>(0))
                        .ok()
                })
                .unwrap_or(0)
                >= 3;
        if committed || started.elapsed().as_secs() > 60 {
            break;
        }
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the ingest finished before it could be killed; the corpus is too small"
    );
    let partial: i64 = e.one("SELECT count(*) FROM source_file").parse().unwrap();
    let total: i64 = reference
        .one("SELECT count(*) FROM source_file")
        .parse()
        .unwrap();
    assert!(
        partial > 0 && partial < total,
        "killed at {partial} of {total}"
    );

    let (s, code) = e.ingest(&[&std_root], &["--batch-files", "64"]);
    assert_eq!(code, 0);
    assert_eq!(s["ingested"].as_i64().unwrap(), total - partial);
    assert_eq!(
        e.dump(),
        reference.dump(),
        "the restarted store differs from the uninterrupted one"
    );
    let segs = edge::outbox::segments_after(&e.conn(), 0, 100_000).unwrap();
    shared::chain::verify(0, shared::chain::GENESIS, &segs).unwrap();
}

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

#[test]
fn the_store_is_useless_without_its_key() {
    let e = Edge::new();
    e.ingest(&[&fixture()], &[]);
    // No patient name, in UTF-8 or in ISO-2022-JP, in any file of the store.
    let kana_utf8 = "カンジャ".as_bytes().to_vec();
    let kana_jis = encoding_rs::ISO_2022_JP.encode("カンジャ").0[3..11].to_vec();
    let kanji_jis = encoding_rs::ISO_2022_JP.encode("患者").0[3..7].to_vec();
    for entry in std::fs::read_dir(&e.store).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [
            &kana_utf8,
            &kana_jis,
            &kanji_jis,
            &b"SQLite format 3"[..].to_vec(),
            &b"RXE||108665201"[..].to_vec(),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "plaintext {needle:?} in the store"
            );
        }
    }
    // Another key: a clear error.
    let other = e.dir.path().join("other.key");
    e.run(
        Command::new(tests::run::bin("tsunagi-edge"))
            .args(["keygen", "--out"])
            .arg(&other),
    );
    let out = Command::new(tests::run::bin("tsunagi-edge"))
        .args(["status", "--store"])
        .arg(&e.store)
        .arg("--key-file")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be opened with this key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key file others can read: refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&e.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = e.cmd("status").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_disk_stops_ingest_and_keeps_what_was_committed() {
    use edge::ingest::{scan, Options, Scope};
    use edge::store::{Handle, Key};
    let dir = tempfile::tempdir().unwrap();
    let key = Key::from_bytes([3; 32]);
    let handle = Handle::start(&dir.path().join("s"), &key).unwrap();
    scan(&handle, &Options::new(vec![fixture()]), &Scope::Full).unwrap();
    // The file system "fills": SQLite may not grow the database by more than a few pages.
    handle
        .call(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            c.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 4))
                .unwrap();
        })
        .unwrap();
    let g = tempfile::tempdir().unwrap();
    generate(&Spec::small(8), g.path());
    let err = scan(
        &handle,
        &Options::new(vec![g.path().join("standard")]),
        &Scope::Full,
    )
    .unwrap_err();
    assert!(matches!(err, edge::store::Error::Full { .. }), "{err}");
    assert!(err.to_string().contains("is full") && err.to_string().contains("free space"));
    drop(handle);
    let conn = edge::store::open_read_only(&dir.path().join("s"), &key).unwrap();
    assert_eq!(
        rows(
            &conn,
            "SELECT count(*) FROM source_file WHERE patient_id = '9999013'"
        )[0][0],
        "19"
    );
    assert_eq!(rows(&conn, "PRAGMA integrity_check")[0][0], "ok");
    let out = tempfile::tempdir().unwrap();
    edge::export::export(&conn, &out.path().join("x"), None).unwrap();
}

#[test]
fn watching_picks_up_new_files() {
    let e = Edge::new();
    let root = e.dir.path().join("tree");
    copy_tree(&fixture(), &root);
    let mut child = e
        .cmd("ingest")
        .arg("--root")
        .arg(&root)
        .args(["--json", "--rescan-secs", "3600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = |e: &Edge| -> i64 {
        edge::store::open_read_only(&e.store, &edge::store::read_key(&e.key).unwrap())
            .ok()
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM source_file", [], |r| r.get(0))
                    .ok()
            })
            .unwrap_or(0)
    };
    let wait_for = |n: i64| {
        let t = std::time::Instant::now();
        while count(&e) < n && t.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        count(&e)
    };
    assert_eq!(wait_for(19), 19);
    // A new patient folder and file appear, as the gateway writes them.
    let src = fixture().join("999/901/9999013/20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1");
    let dir = root.join("999/901/9999013/20120101/OMP-01");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        &src,
        dir.join("9999013_20120101_OMP-01_000000011000999_20120101090000000_01_1"),
    )
    .unwrap();
    let got = wait_for(20);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, 20, "the watcher did not pick up the new file");
}

/// The fixtures travel inside the repository, so a clone anywhere runs the suite: every file is
/// present byte for byte as its SHA256SUMS line says, the licences beside them.
#[test]
fn fixtures_are_carried_whole_in_the_repository() {
    let dir = tests::run::fixtures_dir();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("tests/fixtures/SHA256SUMS");
    let mut n = 0;
    for line in sums.lines() {
        let (want, path) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            shared::chain::hex(&shared::chain::content_hash(&bytes)),
            want,
            "{path} changed"
        );
        n += 1;
    }
    assert!(n >= 29, "{n} files listed");
    for f in [
        "ssmix2/nho-sample/LICENSE",
        "ssmix2/nho-sample/NOTICE.md",
        "uke/LICENSE",
        "uke/NOTICE.md",
    ] {
        assert!(sums.contains(&format!("./{f}\n")), "{f} is not listed");
    }
}
