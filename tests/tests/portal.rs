//! The portal as its users meet it: a real hub with two facilities' appliances synced into it, and
//! a real headless Chromium clicking through login, the forced password change, search, the
//! patient page and its tabs, the calendar, linking, consent, the other facility's data
//! appearing, the lab trend, emergency access and the access history's CSV. Screenshots go to
//! `target/test-artefacts/portal/`.

mod common;

// A crate root looks for `mod x;` at tests/x.rs, which cargo would build as a test of its own:
// the submodules name their files.
#[path = "portal/journey.rs"]
mod journey;
#[path = "portal/reading.rs"]
mod reading;
#[path = "portal/session.rs"]
mod session;

use std::path::Path;

use common::browser::Browser;
use common::net::{wait_for, Appliance, Hub};
use tests::gen::{self, Patient, Spec};

const A: &str = "3710000001";
const A_NAME: &str = "つなぎ内科クリニック";
const B: &str = "3710000002";
const B_NAME: &str = "さぬき中央病院";
const C: &str = "3710000003";
const FIRST: &str = "Init-pass1";
const NEW: &str = "Chosen-pass2";

/// The person both facilities have seen, under each facility's own patient ID.
fn shared_person(pid: &str) -> Patient {
    Patient {
        pid: pid.into(),
        family: ("山田", "ﾔﾏﾀﾞ"),
        given: ("太郎", "ﾀﾛｳ"),
        birth: "19580412".into(),
        sex: "M",
        visits: Some(6),
        allergic: true,
    }
}

/// A hub with facilities A and B, each with its own appliance that ingested and synced a small
/// clinic including the shared person, and the index caught up; and facility C's appliance,
/// with no records. Every appliance runs its LAN proxy, through which its staff use the portal.
fn region() -> (Hub, Vec<(tempfile::TempDir, Appliance)>) {
    let hub = Hub::start(&[]);
    let mut boxes = Vec::new();
    for (facility, name, pid, seed) in
        [(A, A_NAME, "0000770001", 11), (B, B_NAME, "0000880002", 12)]
    {
        let tree = tempfile::tempdir().unwrap();
        let mut spec = Spec::small(seed);
        spec.days = 60;
        gen::generate_with(&spec, tree.path(), &[shared_person(pid)]);
        let roots = [tree.path().join("standard"), tree.path().join("extended")];
        let root_refs: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
        let edge =
            Appliance::with_proxy(&hub, &root_refs, facility, name, &format!("box-{seed}"), "");
        edge.ingest(&root_refs);
        let out = edge.sync();
        assert!(
            out.status.success(),
            "sync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        boxes.push((tree, edge));
    }
    boxes.push((
        tempfile::tempdir().unwrap(),
        Appliance::with_proxy(&hub, &[], C, "高松救命センター", "box-13", ""),
    ));
    for (_, edge) in boxes.iter_mut() {
        edge.start(&[]);
    }
    for (_, edge) in &boxes {
        edge.wait_for_proxy();
    }
    let db = hub.region();
    wait_for(60, "the index to take in both facilities", || {
        let n = |f: &str| {
            db.query_row(
                "SELECT count(*) FROM patient WHERE facility = ?1",
                [f],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
        };
        n(A) == 13 && n(B) == 13
    });
    (hub, boxes)
}

/// A verifier as the hub wrote them before PHC strings: `argon2id$m=…,t=…$<salt hex>$<hash hex>`.
fn legacy_verifier(password: &str) -> String {
    let salt = [5u8; 16];
    let mut out = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap(),
    )
    .hash_password_into(password.as_bytes(), &salt, &mut out)
    .unwrap();
    format!(
        "argon2id$m=19456,t=2${}${}",
        shared::chain::hex(&salt),
        shared::chain::hex(&out)
    )
}

fn login(b: &mut Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("#login", user);
    b.fill("#password", password);
    b.click("#submit");
}

/// The first login: the portal sends the person to the password change before anything else.
fn first_login(b: &mut Browser, base: &str, user: &str, shot: Option<&str>) {
    login(b, base, user, FIRST);
    assert_eq!(
        b.path(),
        "/password",
        "{user}: first login must go to the password change"
    );
    assert!(b.text("#forced").contains("初回ログイン"));
    // Nothing else is reachable until the password is changed.
    b.goto(&format!("{base}/search?name=x"));
    assert_eq!(b.path(), "/password");
    // The rules are enforced: the same password again, or one without digits, is refused.
    b.fill("#current", FIRST);
    b.fill("#new", FIRST);
    b.fill("#again", FIRST);
    b.click("#submit");
    assert!(
        b.text("#message").contains("前回"),
        "reuse refused: {}",
        b.text("#message")
    );
    b.fill("#current", FIRST);
    b.fill("#new", "onlyletters");
    b.fill("#again", "onlyletters");
    b.click("#submit");
    assert!(
        b.text("#message").contains("数字"),
        "{}",
        b.text("#message")
    );
    b.fill("#current", FIRST);
    b.fill("#new", NEW);
    b.fill("#again", NEW);
    if let Some(name) = shot {
        b.screenshot(name);
    }
    b.click("#submit");
    assert_eq!(b.path(), "/", "{user}: home after the change");
}

fn logout(b: &mut Browser) {
    b.click("#logout");
    assert_eq!(b.path(), "/login");
}

fn search(b: &mut Browser, base: &str, field: &str, value: &str) -> Vec<String> {
    b.goto(&format!("{base}/search"));
    b.fill(&format!("#{field}"), value);
    b.click("#search");
    b.texts("#results tbody tr")
}
