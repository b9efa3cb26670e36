//! Enrolment, sync and restore end to end: the real `tsunagi-hub` and `tsunagi-edge` on
//! 127.0.0.1 with a CA made for each test.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::net::{assert_same, wait_for, Appliance, Hub, FACILITY};
use edge::client::{self, Client};
use hyper::{Method, StatusCode};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn generated(seed: u64, patients: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = tests::gen::Spec {
        patients,
        ..tests::gen::Spec::small(seed)
    };
    tests::gen::generate(&spec, dir.path());
    let root = dir.path().join("standard");
    (dir, root)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_hubs_copy_equals_the_store_row_for_row() {
    let hub = Hub::start(&[]);
    let fixture = common::fixture();
    let (_g, clinic) = generated(3, 40);
    let edge = Appliance::enrolled(&hub, &[&fixture, &clinic], "");
    edge.ingest(&[&fixture]);
    let out = edge.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same(&hub, &edge);
    edge.ingest(&[&fixture, &clinic]);
    assert!(
        edge.head() > 3,
        "the generated clinic must make several segments"
    );
    assert!(edge.sync().status.success());
    assert_same(&hub, &edge);
    assert_eq!(hub.copy_seq(FACILITY), edge.head());
    let s = edge.status();
    assert_eq!(s["hub"]["seq"], s["outbox"]["seq"]);
    assert_eq!(s["hub"]["hash"], s["outbox"]["hash"]);
    assert_eq!(s["hub"]["backlog"], 0);
    let (good, report) = hub.verify(FACILITY);
    assert!(good, "{report}");
    // The copy on disk is encrypted: no patient name in its bytes.
    let name = common::rows(
        &edge.store(),
        "SELECT family_kanji FROM patient WHERE family_kanji IS NOT NULL LIMIT 1",
    )[0][0]
        .clone();
    let bytes = std::fs::read(hub.data().join("copies").join(format!("{FACILITY}.db"))).unwrap();
    assert!(
        !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
        "the copy holds a patient name in clear"
    );
}

#[test]
fn tokens_work_once_and_expire() {
    let hub = Hub::start(&[]);
    let token = hub.token(FACILITY, "7d");
    let a = Appliance::new(&[], "");
    assert!(a.enroll(&hub, &token, "box-1").status.success());
    let b = Appliance::new(&[], "");
    let reused = b.enroll(&hub, &token, "box-2");
    assert!(!reused.status.success());
    assert!(
        stderr(&reused).contains("already been used"),
        "{}",
        stderr(&reused)
    );
    let short = hub.token(FACILITY, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let expired = b.enroll(&hub, &short, "box-2");
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    let wrong_pin = b
        .cmd("enroll")
        .args([
            "--hub",
            &hub.url(),
            "--token",
            &hub.token(FACILITY, "1d"),
            "--ca-fingerprint",
            &"ab".repeat(32),
            "--appliance",
            "box-2",
        ])
        .output()
        .unwrap();
    assert!(
        !wrong_pin.status.success() && stderr(&wrong_pin).contains("TLS"),
        "{}",
        stderr(&wrong_pin)
    );
    assert!(!b.dir.path().join("identity/identity.pem").exists());
}

/// A client presenting `identity` (PEM chain and key), trusting the hub's root.
fn client(hub: &Hub, identity: Option<&[u8]>) -> Client {
    Client::new(
        &hub.url(),
        client::tls_config(
            &hub.fingerprint,
            identity.map(|p| client::ClientAuth::from_pem(p).unwrap()),
        )
        .unwrap(),
    )
    .unwrap()
}

fn post(c: &Client, body: Vec<u8>) -> Result<(StatusCode, String), String> {
    rt().block_on(c.call(
        Method::POST,
        "/v1/segments",
        "application/octet-stream",
        Bytes::from(body),
    ))
    .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
    .map_err(|e| format!("{e:#}"))
}

fn segments(edge: &Appliance) -> Vec<shared::wire::Segment> {
    edge::outbox::segments_after(&edge.store(), 0, 1000).unwrap()
}

/// A client certificate for `facility` from the CA in `ca_dir`, valid over the given times.
fn issue(ca_dir: &Path, facility: &str, not_before: i64, not_after: i64) -> Vec<u8> {
    let ca = provisioning::Ca::load(ca_dir).unwrap();
    let (key, csr) = provisioning::ca::new_key_and_csr("forged").unwrap();
    let issued = ca
        .issue_from_csr(
            &csr,
            facility,
            "forged",
            provisioning::Purpose::Appliance,
            not_before,
            not_after,
        )
        .unwrap();
    format!("{}{key}", issued.chain_pem).into_bytes()
}

#[test]
fn the_hub_refuses_what_it_must() {
    let hub = Hub::start(&[]);
    let fixture = common::fixture();
    let (_g, clinic) = generated(5, 10);
    let edge = Appliance::enrolled(&hub, &[&fixture], "");
    edge.ingest(&[&fixture]);
    edge.ingest(&[&fixture, &clinic]);
    let segs = segments(&edge);
    assert!(segs.len() >= 2);
    let me = client(&hub, Some(&edge.identity_pem()));
    let batch = |s: &[shared::wire::Segment]| shared::wire::encode_batch(FACILITY, s);

    // No client certificate: the TLS handshake passes (enrolment needs that), the API does not.
    let (status, body) = post(&client(&hub, None), batch(&segs[..1])).unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A certificate from another CA fails the handshake.
    let other = tempfile::tempdir().unwrap();
    provisioning::Ca::init(other.path(), "other", hub::now()).unwrap();
    let foreign = issue(other.path(), FACILITY, hub::now() - 60, hub::now() + 3600);
    assert!(
        post(&client(&hub, Some(&foreign)), batch(&segs[..1])).is_err(),
        "a foreign certificate must be refused"
    );

    // An expired certificate from the right CA fails too.
    let expired = issue(
        &hub.data().join("ca"),
        FACILITY,
        hub::now() - 7200,
        hub::now() - 3600,
    );
    assert!(
        post(&client(&hub, Some(&expired)), batch(&segs[..1])).is_err(),
        "an expired certificate must be refused"
    );

    // A flipped bit is refused as corrupt, and nothing is applied.
    let mut flipped = segs[0].clone();
    flipped.body[10] ^= 0x01;
    let (status, body) = post(&me, batch(&[flipped])).unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("corrupt"), "{body}");
    assert_eq!(hub.copy_seq(FACILITY), 0);

    // A gap is refused with the number the hub expects.
    let (status, body) = post(&me, batch(&segs[1..2])).unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("\"expected\":1"), "{body}");

    // Facility A's certificate sending a batch that claims facility B.
    let claims_b = shared::wire::encode_batch("3799999999", &segs[..1]);
    let (status, body) = post(&me, claims_b).unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!hub.data().join("copies/3799999999.db").exists());

    // The real thing, then a replay: the same segment again changes nothing; an altered old one
    // is a conflict.
    assert_eq!(post(&me, batch(&segs)).unwrap().0, StatusCode::OK);
    let before = common::dump(&hub.copy(FACILITY));
    let (status, body) = post(&me, batch(&segs[..1])).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!("\"seq\":{}", segs.len())), "{body}");
    assert_eq!(
        common::dump(&hub.copy(FACILITY)),
        before,
        "a replay must not apply twice"
    );
    let mut altered = segs[0].clone();
    altered.body.push(0);
    altered.hash = shared::chain::segment_hash(&altered.prev_hash, altered.seq, &altered.body);
    let (status, body) = post(&me, batch(&[altered])).unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("conflict"), "{body}");

    // Too large: refused from the declared length, before the body is read.
    let (status, _) =
        post(&me, vec![0u8; 65 << 20]).unwrap_or((StatusCode::PAYLOAD_TOO_LARGE, String::new()));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Revocation takes effect on the running hub at once.
    let serial = provisioning::Identity::from_der(
        &provisioning::cert::certs_from_pem(&edge.identity_pem()).unwrap()[0],
    )
    .unwrap()
    .serial;
    let out = hub
        .cmd("cert")
        .args(["revoke", "--serial", &serial])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Refused at the handshake for a new session, or by the request check on a resumed one.
    assert!(
        post(&me, batch(&segs[..1])).map_or(true, |(s, _)| s == StatusCode::FORBIDDEN),
        "a revoked certificate must be refused"
    );
    assert!(
        post(&client(&hub, Some(&edge.identity_pem())), batch(&segs[..1])).is_err(),
        "a new connection with a revoked certificate must fail its handshake"
    );
    let synced = edge.sync();
    assert!(!synced.status.success());
    assert_same(&hub, &edge);
}

#[test]
fn kill_9_of_hub_or_edge_mid_upload_loses_nothing_and_applies_nothing_twice() {
    let mut hub = Hub::start(&[]);
    let (_g, clinic) = generated(7, 150);
    // A slow link: 40 kB/s, so the upload takes long enough to be cut in the middle.
    let mut edge = Appliance::enrolled(
        &hub,
        &[&clinic],
        "bandwidth_limit = \"40k\"\nmax_batch_bytes = 65536",
    );
    edge.ingest(&[&clinic]);
    let head = edge.head();
    assert!(head >= 10, "need many segments, got {head}");
    edge.start(&[]);
    wait_for(60, "the first segments at the hub", || {
        hub.copy_seq(FACILITY) > 0
    });
    hub.kill();
    let at_kill = hub.copy_seq(FACILITY);
    assert!(
        at_kill < head,
        "the upload finished before the kill; slow it down"
    );
    hub.restart();
    wait_for(120, "progress after the hub's restart", || {
        hub.copy_seq(FACILITY) > at_kill
    });
    edge.kill();
    let mid = hub.copy_seq(FACILITY);
    assert!(mid < head, "the upload finished before the edge was killed");
    edge.start(&[]);
    wait_for(300, "the copy to catch up", || {
        hub.copy_seq(FACILITY) == head
    });
    edge.stop();
    assert_same(&hub, &edge);
    let (good, report) = hub.verify(FACILITY);
    assert!(good, "{report}");
}

#[test]
fn a_day_without_the_hub_then_catching_up() {
    let mut hub = Hub::start(&[]);
    let (_g, clinic) = generated(11, 60);
    let live = tempfile::tempdir().unwrap();
    let mut edge = Appliance::enrolled(&hub, &[live.path()], "");
    hub.kill();
    edge.start(&[]);
    // The day's work arrives in four parts (patients' folders) while the hub is away.
    let ls = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let mut parts: Vec<std::path::PathBuf> = ls(&clinic)
        .iter()
        .flat_map(|a| ls(a))
        .flat_map(|b| ls(&b))
        .collect();
    parts.sort();
    let n = parts.len();
    assert!(n >= 4);
    for chunk in parts.chunks(n.div_ceil(4)) {
        for p in chunk {
            common::merge_tree(p, &live.path().join(p.strip_prefix(&clinic).unwrap()));
        }
        let want = edge
            .store()
            .query_row("SELECT count(*) FROM source_file", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        wait_for(60, "the watcher to ingest the part", || {
            edge.store()
                .query_row("SELECT count(*) FROM source_file", [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
                > want
        });
    }
    wait_for(60, "the last part", || {
        let s = edge.status();
        s["files"]["current"].as_i64().unwrap() > 0 && s["hub"]["last_error"].is_string()
    });
    let s = edge.status();
    assert_eq!(s["hub"]["seq"], 0, "nothing can have reached the hub");
    assert!(s["hub"]["backlog"].as_u64().unwrap() >= 4);
    hub.restart();
    wait_for(120, "the copy to catch up", || {
        let s = edge.status();
        s["hub"]["backlog"] == 0 && hub.copy_seq(FACILITY) == s["outbox"]["seq"].as_u64().unwrap()
    });
    edge.stop();
    assert_same(&hub, &edge);
    assert!(edge.status()["hub"]["last_error"].is_null());
}

#[test]
fn a_replacement_appliance_restores_and_carries_on() {
    let hub = Hub::start(&[]);
    let fixture = common::fixture();
    let (_g, clinic) = generated(13, 30);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ssmix2");
    common::merge_tree(&fixture.join("999"), &root.join("999"));
    let tree = &root;
    let old = Appliance::enrolled(&hub, &[tree], "");
    old.ingest(&[tree]);
    assert!(old.sync().status.success());
    let out = hub
        .cmd("copy")
        .args(["snapshot", "--facility", FACILITY])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let at_snapshot = old.head();
    common::merge_tree(&clinic, tree);
    old.ingest(&[tree]);
    assert!(old.sync().status.success());
    let head = old.head();
    assert!(head > at_snapshot);

    // The box dies. Its replacement enrols with a new token and restores.
    let new = Appliance::new(&[tree], "");
    assert!(new
        .enroll(&hub, &hub.token(FACILITY, "1d"), "box-2")
        .status
        .success());
    let plan = new.cmd("restore").arg("--dry-run").output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains(&format!("snapshot:  segment {at_snapshot}")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("{}..{head}", at_snapshot + 1)),
        "{plan}"
    );
    assert!(plan.contains("left out:  nothing"), "{plan}");
    assert!(
        !new.dir.path().join("store/edge.db").exists(),
        "a dry run changes nothing"
    );
    let out = new.cmd("restore").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(new.head(), head);
    assert_same(&hub, &new);
    let exported = tempfile::tempdir().unwrap();
    let out = new
        .cmd("export-ssmix2")
        .arg("--to")
        .arg(exported.path().join("t"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    common::diff_r(tree, &exported.path().join("t"));

    // It carries on from the same sequence: new work reaches the hub as the next segments.
    let (_g2, more) = generated(17, 5);
    common::merge_tree(&more, tree);
    new.ingest(&[tree]);
    assert!(new.head() > head);
    let out = new.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.copy_seq(FACILITY), new.head());
    assert_same(&hub, &new);

    // Point in time: back to the snapshot's segment, with the plan naming what is left out.
    let third = Appliance::new(&[], "");
    assert!(third
        .enroll(&hub, &hub.token(FACILITY, "1d"), "box-3")
        .status
        .success());
    let plan = third
        .cmd("restore")
        .args(["--dry-run", "--to-seq", &at_snapshot.to_string()])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains(&format!("{} segments after it", new.head() - at_snapshot)),
        "{plan}"
    );
    let out = third
        .cmd("restore")
        .args(["--to-seq", &at_snapshot.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let fixture_only = tempfile::tempdir().unwrap();
    let out = third
        .cmd("export-ssmix2")
        .arg("--to")
        .arg(fixture_only.path().join("t"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    common::diff_r(&fixture.join("999"), &fixture_only.path().join("t/999"));
}

#[test]
fn renewal_at_two_thirds_and_across_a_power_cut() {
    let hub = Hub::start(&["--client-cert-lifetime", "12s"]);
    let mut edge = Appliance::enrolled(&hub, &[], "");
    let first = edge.identity_pem();
    // A power cut right after the new certificate arrived: the old identity is still in place.
    let cut = edge
        .cmd("renew")
        .env("TSUNAGI_FAILPOINT", "after-renew-fetch")
        .output()
        .unwrap();
    assert!(!cut.status.success());
    assert_eq!(edge.identity_pem(), first);
    assert!(edge.dir.path().join("identity/identity.next.pem").exists());
    // The next start confirms the pending certificate with the hub and swaps it in.
    let out = edge.sync();
    assert!(out.status.success(), "{}", stderr(&out));
    let second = edge.identity_pem();
    assert_ne!(second, first);
    assert!(!edge.dir.path().join("identity/identity.next.pem").exists());
    // The daemon renews by itself at two thirds of the 12 s lifetime.
    edge.start(&[]);
    wait_for(30, "an automatic renewal", || edge.identity_pem() != second);
    edge.stop();
    let list = String::from_utf8_lossy(
        &hub.cmd("cert")
            .args(["list", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let certs: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(
        certs
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["how"] == "renew")
            .count()
            >= 2,
        "{list}"
    );
}
