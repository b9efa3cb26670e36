//! End-to-end tests of `tsunagi-edge ingest`, `status` and `export-ssmix2` on real SS-MIX2 bytes:
//! the NHO fixture and generated corpora, through the real binary and the real SQLCipher store.

mod common;

// A crate root looks for `mod x;` at tests/x.rs, which cargo would build as a test of its own:
// the submodules name their files.
#[path = "ingest/round_trip.rs"]
mod round_trip;
#[path = "ingest/tree_changes.rs"]
mod tree_changes;

use std::process::Command;

use common::*;
use tests::gen::{generate, Spec};

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
