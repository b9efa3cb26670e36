//! Ingest and export end to end: the NHO fixture in its columns and back out byte for byte, a
//! rescan that writes nothing, a generated corpus replayed from the outbox, and a kill -9.

use std::path::Path;
use std::process::Command;

use tests::gen::{generate, Spec};

use crate::common::{diff_r, dump, fixture, Edge};

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
