//! The LAN proxy as a clinic meets it: a real hub, a real appliance running its proxy, and a real
//! headless Chromium on the clinic's side. Through the proxy: log in, search, open a patient.
//! The hub stops: the offline view with its banner, the same patient, an offline login. The hub
//! comes back: the portal again, and the offline accesses in the hub's audit log. Also what a
//! terminal may not do (forge identity headers), what the hub refuses (its portal without a
//! client certificate), the TLS both listen with (checked with `openssl s_client`), the plain
//! page that offers the network's root, and the proxy's own idle limit. Screenshots go to
//! `target/test-artefacts/proxy/`.

mod common;
#[path = "proxy/documents.rs"]
mod documents;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::browser::{artefacts, login, Browser};
use common::net::{wait_for, Appliance, Hub};
use tests::gen::{self, Patient, Spec};

const A: &str = "3710000001";
const A_NAME: &str = "つなぎ内科クリニック";
const PID: &str = "0000770001";
const FIRST: &str = "Init-pass1";
const NEW: &str = "Chosen-pass2";

/// A clinic whose appliance ingested and synced a small practice with a known patient, running
/// its daemon with the LAN proxy on.
fn clinic(hub: &Hub, proxy: &str) -> (tempfile::TempDir, Appliance) {
    let tree = tempfile::tempdir().unwrap();
    let mut spec = Spec::small(21);
    spec.days = 60;
    let me = Patient {
        pid: PID.into(),
        family: ("山田", "ﾔﾏﾀﾞ"),
        given: ("太郎", "ﾀﾛｳ"),
        birth: "19580412".into(),
        sex: "M",
        visits: Some(6),
        allergic: true,
    };
    gen::generate_with(&spec, tree.path(), &[me]);
    let roots = [tree.path().join("standard"), tree.path().join("extended")];
    let refs: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
    let mut edge = Appliance::with_proxy(hub, &refs, A, A_NAME, "box-1", proxy);
    edge.ingest(&refs);
    assert!(edge.sync().status.success());
    edge.start(&[]);
    edge.wait_for_proxy();
    (tree, edge)
}

/// The first login and the forced password change.
fn first_login(b: &mut Browser, base: &str, user: &str) {
    common::browser::first_login(b, base, user, FIRST, NEW);
}

/// The first cell of each row of the tab on screen (the drug, the test, …).
fn first_cells(b: &mut Browser) -> Vec<String> {
    let mut v = b.texts("#records tr.record td:nth-child(3)");
    v.sort();
    v
}

#[test]
fn through_the_proxy_then_offline_and_back() {
    let mut hub = Hub::start(&[]);
    let (tree, edge) = clinic(&hub, "");
    hub.user("dr-a", "doctor", A, FIRST);
    let db = hub.region();
    wait_for(60, "the index to take in the clinic", || {
        db.query_row(
            "SELECT count(*) FROM patient WHERE facility = ?1",
            [A],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 13
    });
    let base = edge.proxy_url();
    let pin = [hub.spki_pin(), edge.lan_spki_pin()].join(",");
    let dir = artefacts("proxy");
    let mut b = Browser::start(dir, &pin);
    // This terminal forges identity headers on every request; none may reach the hub.
    b.extra_headers(&[
        ("X-Tsunagi-Terminal", "forged-terminal"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Tsunagi-Facility", "3710000002"),
        ("Forwarded", "for=203.0.113.9"),
    ]);

    // Online, through the proxy: log in, search, open the patient.
    first_login(&mut b, &base, "dr-a");
    // The appliance API typed into the browser stops at the proxy, with a page that says what to do.
    b.goto(&format!("{base}/v1/restore"));
    assert!(
        b.text("body").contains("このページはありません"),
        "{}",
        b.text("body")
    );
    b.screenshot("00-api-stops-at-the-proxy");
    b.goto(&format!("{base}/search"));
    b.fill("#name", "山田 太郎");
    b.click("#search");
    let hits = b.texts("#results tbody tr");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].contains(PID));
    b.screenshot("01-online-search");
    b.click("#results a.patient-link");
    let rid = b.text("#rid");
    b.click("#tab-prescription");
    let online = first_cells(&mut b);
    assert!(!online.is_empty(), "the patient has prescriptions");
    assert!(b.texts("#records td.source").iter().all(|s| s == A_NAME));
    b.screenshot("02-online-patient");

    // A document, downloaded through the proxy (the hub streams it from the copy), byte for byte.
    let letter = find(&tree.path().join("extended"), "referral.pdf")
        .expect("the generated clinic has a referral letter");
    let owner = letter
        .strip_prefix(tree.path().join("extended"))
        .unwrap()
        .iter()
        .nth(2)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    b.goto(&format!("{base}/search?patient_id={owner}"));
    b.click("#results a.patient-link");
    b.click("#tab-documents");
    let links = b.eval("Array.from(document.querySelectorAll('#records a.download-link')).map(a => a.getAttribute('href'))");
    let wanted = std::fs::read(&letter).unwrap();
    let mut got = Vec::new();
    for (i, _) in links.as_array().unwrap().iter().enumerate() {
        let file = b.download_nth("#records a.download-link", i);
        got.push(std::fs::read(file).unwrap());
    }
    assert!(
        got.contains(&wanted),
        "the letter came through byte for byte ({} downloads)",
        got.len()
    );
    documents::the_letter_opens_in_the_viewer_and_nothing_else_inline(
        &mut b, &base, &edge, &links, &wanted,
    );

    // The hub's audit names the appliance and the terminal it saw, never what the terminal claimed.
    let terminals: Vec<String> = hub
        .region()
        .prepare("SELECT DISTINCT terminal FROM audit WHERE login = 'dr-a'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!terminals.is_empty());
    for t in &terminals {
        assert!(
            t.starts_with("box-1/t-") && t.ends_with("@127.0.0.1"),
            "{t}"
        );
        assert!(!t.contains("forged") && !t.contains("203.0.113.9"), "{t}");
    }
    let facilities: Vec<String> = hub
        .region()
        .prepare("SELECT DISTINCT facility FROM audit WHERE login = 'dr-a'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(facilities, vec![A.to_string()]);
    let log = std::fs::read_to_string(edge.log_path()).unwrap();
    assert!(
        log.contains("identity headers from the LAN stripped"),
        "the appliance logs the forgery"
    );

    // The hub hands the appliance dr-a's verifier (after the password change), and only it.
    let start = std::time::Instant::now();
    while edge.offline().verifier("dr-a").unwrap().is_none() {
        assert!(
            start.elapsed().as_secs() < 40,
            "dr-a's verifier never reached the appliance:\n{}",
            std::fs::read_to_string(edge.log_path()).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(edge.offline().verifier_count().unwrap(), 1);

    // The hub stops: the offline view, with its banner.
    hub.kill();
    b.goto(&format!("{base}/search"));
    assert_eq!(b.path(), "/offline/login");
    let banner = b.text("#offline-banner");
    assert!(
        banner.contains("接続できません") && banner.contains("から"),
        "{banner}"
    );
    b.screenshot("03-offline-login");
    login_offline(&mut b, "dr-a", "wrong-pass9");
    assert!(b.text("#message").contains("違います"));
    login_offline(&mut b, "dr-a", NEW);
    assert_eq!(b.path(), "/offline/");
    // By the birth date in 和暦 and the ID without its zeros, as the portal takes them.
    b.fill("#birth_date", "S33.4.12");
    b.fill("#patient_id", PID.trim_start_matches('0'));
    b.click("#search");
    let hits = b.texts("#results tbody tr");
    assert!(hits.len() == 1 && hits[0].contains(PID), "{hits:?}");
    // An ID longer than any is refused before anything is read.
    let long = format!("{base}/offline/search?patient_id={}1", "0".repeat(4000));
    b.goto(&long);
    let said = b.text("#message");
    assert!(said.contains("40文字以内"), "{said}");
    b.goto(&format!("{base}/offline/"));
    b.fill("#name", "ﾔﾏﾀﾞ ﾀﾛｳ");
    b.click("#search");
    let hits = b.texts("#results tbody tr");
    assert_eq!(hits.len(), 1, "{hits:?}");
    b.click("#results a.patient-link");
    // The same patient header as the portal's: name, kana as the portal shows it, both
    // calendars, the facility's ID and the allergy warning.
    assert_eq!(b.text("#ph-name"), "山田 太郎");
    assert_eq!(
        b.text("#ph-kana"),
        "ヤマダ タロウ",
        "kana shown as the portal shows it"
    );
    assert_eq!(b.text("#ph-birth"), "S33/04/12（1958/04/12）");
    assert!(b.text("#ph-age").ends_with("ヶ月"), "{}", b.text("#ph-age"));
    assert!(
        b.text("#ph-holders").contains(PID),
        "{}",
        b.text("#ph-holders")
    );
    assert!(b.text("#ph-allergy").contains("ペニシリン"));
    assert!(b
        .eval("document.title")
        .as_str()
        .unwrap()
        .starts_with("山田 太郎"));
    b.click("#tab-prescription");
    assert_eq!(
        first_cells(&mut b),
        online,
        "offline shows the same prescriptions as the portal did"
    );
    assert!(b.texts("#records td.source").iter().all(|s| s == A_NAME));
    assert!(b.text("#offline-banner").contains("接続できません"));
    b.screenshot("04-offline-patient");
    // The rest of the portal waits for the hub.
    b.goto(&format!("{base}/patient/{rid}"));
    assert_eq!(b.path(), "/offline/");

    // The hub comes back: the portal again, and the offline accesses in its audit log.
    hub.restart();
    wait_for(30, "the proxy to find the hub again", || {
        b.goto(&format!("{base}/"));
        !b.path().starts_with("/offline")
    });
    login(&mut b, &base, "dr-a", NEW);
    assert_eq!(b.path(), "/");
    b.screenshot("05-back-online");
    let db = hub.region();
    wait_for(30, "the offline accesses in the hub's audit log", || {
        db.query_row(
            "SELECT count(*) FROM audit WHERE login = 'dr-a' AND action = 'offline-view'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            >= 2
    });
    let rows: Vec<(String, String, String, String, String)> = db
        .prepare("SELECT action, outcome, patient, terminal, facility FROM audit WHERE action LIKE 'offline-%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let has = |action: &str, outcome: &str| rows.iter().any(|r| r.0 == action && r.1 == outcome);
    assert!(
        has("offline-login", "wrong-password")
            && has("offline-login", "ok")
            && has("offline-search", "ok"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "offline-view" && r.2 == rid),
        "the offline view is recorded under the regional ID: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.3.starts_with("box-1/t-") && r.3.ends_with("(offline)") && r.4 == A),
        "{rows:?}"
    );
    // Handed over once: waiting longer adds nothing.
    let n = rows.len();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let again: i64 = db
        .query_row(
            "SELECT count(*) FROM audit WHERE action LIKE 'offline-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(again as usize, n);
    let out = hub.cmd("audit").arg("verify").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // No patient's name in either side's log.
    let logs = std::fs::read_to_string(edge.log_path()).unwrap()
        + &std::fs::read_to_string(hub.log_path()).unwrap();
    for name in ["山田", "ヤマダ", "ﾔﾏﾀﾞ", "太郎"] {
        assert!(!logs.contains(name), "a log names the patient: {name}");
    }
}

fn login_offline(b: &mut Browser, user: &str, password: &str) {
    if b.path() != "/offline/login" {
        let origin = b.url().split("/offline").next().unwrap().to_string();
        b.goto(&format!("{origin}/offline/login"));
    }
    b.fill("#login", user);
    b.fill("#password", password);
    b.click("#submit");
}

/// `openssl s_client` against `addr` with `args`; true when a session was established.
fn handshake(addr: &str, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (install it with ./scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !text.contains("Cipher is (NONE)")
}

/// An HTTP/1.1 GET through `openssl s_client` (no client certificate): the status line.
fn tls_get_status(addr: &str, path: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    out.lines().next().unwrap_or("").to_string()
}

/// A plain HTTP GET: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

#[test]
fn tls_entrances_the_root_page_and_the_proxys_idle_limit() {
    let hub = Hub::start(&[]);
    let mut edge = Appliance::with_proxy(&hub, &[], A, A_NAME, "box-2", "idle = \"3s\"");
    edge.start(&[]);
    edge.wait_for_proxy();
    let proxy = edge.proxy.clone().unwrap().0;
    let root = edge.dir.path().join("identity").join("root.pem");
    let root = root.to_str().unwrap();

    // TLS below 1.2 and weak ciphers are refused everywhere; strong TLS 1.2 and 1.3 verify to the
    // network root (and, at the proxy, to the LAN name).
    for addr in [
        hub.addr.as_str(),
        hub.operator_addr.as_str(),
        proxy.as_str(),
    ] {
        assert!(
            !handshake(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
            "{addr}: TLS 1.1 accepted"
        );
        assert!(
            !handshake(addr, &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]),
            "{addr}: TLS 1.0 accepted"
        );
        assert!(!handshake(addr, &["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA:DES-CBC3-SHA:ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256:@SECLEVEL=0"]), "{addr}: a weak or non-forward-secret cipher accepted");
        assert!(
            handshake(
                addr,
                &[
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-ECDSA-AES128-GCM-SHA256",
                    "-CAfile",
                    root,
                    "-verify_return_error"
                ]
            ),
            "{addr}: TLS 1.2 with a strong cipher refused"
        );
        assert!(
            handshake(addr, &["-tls1_3", "-CAfile", root, "-verify_return_error"]),
            "{addr}: TLS 1.3 refused"
        );
    }
    assert!(
        handshake(
            &proxy,
            &[
                "-tls1_3",
                "-CAfile",
                root,
                "-verify_return_error",
                "-verify_ip",
                &edge.lan_ip()
            ]
        ),
        "the LAN certificate names the appliance"
    );
    assert!(
        !handshake(
            &proxy,
            &[
                "-tls1_3",
                "-CAfile",
                root,
                "-verify_return_error",
                "-verify_hostname",
                "localhost"
            ]
        ),
        "and never the hub's names"
    );
    assert!(!handshake(
        &proxy,
        &[
            "-tls1_3",
            "-CAfile",
            root,
            "-verify_return_error",
            "-verify_hostname",
            "www.example.com"
        ]
    ));

    // The hub's portal without a client certificate: refused. Through the proxy: served.
    assert!(
        tls_get_status(&hub.addr, "/login").starts_with("HTTP/1.1 403"),
        "{}",
        tls_get_status(&hub.addr, "/login")
    );
    assert!(tls_get_status(&proxy, "/login").starts_with("HTTP/1.1 200"));
    assert!(tls_get_status(&hub.operator_addr, "/login").starts_with("HTTP/1.1 200"));
    // The operators' listener serves no appliance API.
    assert!(tls_get_status(&hub.operator_addr, "/v1/position").starts_with("HTTP/1.1 404"));

    // The plain page: how to trust the root, the root itself, and nothing else.
    let (status, body) = http_get(&edge.plain_addr(), "/");
    let page = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains(&hub.fingerprint)
            && page.contains("/root.crt")
            && page.contains(&format!(
                "https://{}:{}/",
                edge.lan_ip(),
                proxy.rsplit(':').next().unwrap()
            )),
        "{page}"
    );
    let (status, body) = http_get(&edge.plain_addr(), "/root.crt");
    assert_eq!((status, body), (200, std::fs::read(root).unwrap()));
    for path in ["/login", "/search?name=x", "/offline/", "/v1/position"] {
        assert_eq!(
            http_get(&edge.plain_addr(), path).0,
            404,
            "{path} over plain HTTP"
        );
    }

    // The facility administrator enrols a terminal with a one-time code; the code works once.
    let mut b = Browser::start(
        artefacts("proxy-idle"),
        &[hub.spki_pin(), edge.lan_spki_pin()].join(","),
    );
    let out = Command::new(tests::run::bin("tsunagi-edge"))
        .args(["terminal", "code", "--config"])
        .arg(&edge.config)
        .args(["--name", "受付PC1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let code = said
        .lines()
        .find_map(|l| l.strip_prefix("code: "))
        .unwrap()
        .trim()
        .to_string();
    b.goto(&format!("{}/_tsunagi/terminal", edge.proxy_url()));
    assert!(b.text("#message").contains("まだ登録されていません"));
    b.fill("#code", &code);
    b.click("#submit");
    assert!(
        b.text("#message").contains("「受付PC1」として登録しました"),
        "{}",
        b.text("#message")
    );
    b.goto(&format!("{}/_tsunagi/terminal", edge.proxy_url()));
    assert!(
        b.text("#message")
            .contains("「受付PC1」として登録されています"),
        "{}",
        b.text("#message")
    );
    b.fill("#code", &code);
    b.click("#submit");
    assert!(
        b.text("#message").contains("使用済み"),
        "{}",
        b.text("#message")
    );
    let listed = Command::new(tests::run::bin("tsunagi-edge"))
        .args(["terminal", "list", "--config"])
        .arg(&edge.config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("受付PC1"));

    // The proxy ends a session idle for longer than its own limit (3 s here), though the hub's
    // is 5 minutes.
    hub.user("ns-a", "nurse", A, FIRST);
    first_login(&mut b, &edge.proxy_url(), "ns-a");
    b.goto(&format!("{}/search", edge.proxy_url()));
    assert_eq!(b.path(), "/search");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    b.goto(&format!("{}/search", edge.proxy_url()));
    assert_eq!(b.path(), "/login");
    assert!(
        b.text("#message").contains("一定時間"),
        "{}",
        b.text("#message")
    );
    assert!(std::fs::read_to_string(edge.log_path())
        .unwrap()
        .contains("session ended at the proxy"));
}

fn find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}
