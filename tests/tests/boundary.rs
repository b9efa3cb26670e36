//! The trust boundaries attacked as an attacker would: a device on the clinic LAN with no login,
//! going through the appliance's proxy, and whoever holds one of the facility's certificates,
//! going to the hub directly. Every request is written byte for byte and sent with
//! `openssl s_client`, so odd request targets and framings reach the listeners as written.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::net::{Appliance, Hub};

const A: &str = "3710000001";

/// Sends `request` as written over TLS to `addr`, presenting the certificate chain and key in
/// `identity` when given; the whole answer as text.
fn raw(addr: &str, identity: Option<&Path>, request: &[u8]) -> String {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-quiet", "-ign_eof", "-connect", addr]);
    if let Some(p) = identity {
        c.arg("-cert")
            .arg(p)
            .arg("-key")
            .arg(p)
            .arg("-cert_chain")
            .arg(p);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (./scripts/setup.sh installs it)");
    child.stdin.take().unwrap().write_all(request).unwrap();
    // A listener that holds the connection open after answering must not hang the test.
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(20));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.wait().unwrap();
    drop(watchdog);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post(target: &str, body: &str) -> Vec<u8> {
    format!("POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

/// The hub, and one clinic whose appliance synced the NHO sample and runs its proxy.
fn clinic() -> (Hub, Appliance) {
    let hub = Hub::start(&[]);
    let fixture = common::fixture();
    let mut edge = Appliance::with_proxy(&hub, &[&fixture], A, "つなぎ内科クリニック", "box-1", "");
    edge.ingest(&[&fixture]);
    assert!(edge.sync().status.success());
    edge.start(&[]);
    edge.wait_for_proxy();
    (hub, edge)
}

fn identity(edge: &Appliance, file: &str) -> PathBuf {
    edge.dir.path().join("identity").join(file)
}

/// The API paths that gave a LAN device the facility's copy, its position, the staff's password
/// verifiers, a certificate, and writes into the copy and the audit log.
const API: &[(&str, &str)] = &[
    ("GET", "/v1/restore"),
    ("GET", "/v1/restore?to_seq=1"),
    ("GET", "/v1/restore/plan"),
    ("GET", "/v1/position"),
    ("GET", "/v1/verifiers"),
    ("GET", "/v1/ping"),
    ("POST", "/v1/renew"),
    ("POST", "/v1/segments"),
    ("POST", "/v1/offline-accesses"),
    ("POST", "/v1/enroll"),
];

fn request(method: &str, target: &str) -> Vec<u8> {
    if method == "POST" {
        post(target, "{}")
    } else {
        get(target)
    }
}

#[test]
fn the_lan_reaches_the_portal_and_nothing_else() {
    let (hub, edge) = clinic();
    let proxy = edge.proxy_url().trim_start_matches("https://").to_string();
    let hub_addr = hub
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();

    // The portal's login page is there for the clinic's browsers.
    let login = raw(&proxy, None, &get("/login"));
    assert_eq!(status(&login), 200, "{login}");

    // The appliance API is not, under any spelling of its paths.
    let mut targets: Vec<(String, String)> = API
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    for t in [
        "//v1/restore",
        "/%761/restore",
        "/v1%2frestore",
        "/v1%2Frestore",
        "/patient/../v1/restore",
        "/patient/%2e%2e/v1/restore",
        "/static/portal.css/../../v1/restore",
        "/./v1/restore",
        "/login/../v1/restore",
        "/v1/restore#",
        "/V1/restore",
    ] {
        targets.push(("GET".into(), t.into()));
    }
    targets.push(("GET".into(), format!("https://{hub_addr}/v1/restore")));
    targets.push(("GET".into(), "https://localhost/v1/restore".into()));
    for (m, t) in &targets {
        let a = raw(&proxy, None, &request(m, t));
        let code = status(&a);
        assert!(
            code == 404 || code == 400,
            "{m} {t} through the LAN proxy answered {code}:\n{a}"
        );
        assert!(
            !a.contains("application/octet-stream")
                && !a.contains("\"seq\"")
                && !a.contains("argon2"),
            "{m} {t} leaked:\n{a}"
        );
    }
    for m in ["CONNECT", "PUT", "DELETE", "OPTIONS", "TRACE"] {
        let a = raw(
            &proxy,
            None,
            format!("{m} /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(matches!(status(&a), 400 | 404 | 405), "{m} /login: {a}");
    }

    // Both Content-Length and Transfer-Encoding: a request smuggled in the body never becomes a
    // request of its own at the hub.
    let smuggled = "0\r\n\r\nGET /v1/restore HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let both = format!("POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{smuggled}", smuggled.len());
    let a = raw(&proxy, None, both.as_bytes());
    assert!(!a.contains("application/octet-stream"), "{a}");
    let te_twice = format!("POST /login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nConnection: close\r\n\r\n{smuggled}");
    let a = raw(&proxy, None, te_twice.as_bytes());
    assert!(!a.contains("application/octet-stream"), "{a}");

    // Nothing of it reached the hub's API: no restore was started, no certificate renewed.
    let log = std::fs::read_to_string(hub.log_path()).unwrap();
    assert!(
        !log.contains("restore started") && !log.contains("certificate renewed"),
        "the hub served the API to the LAN:\n{log}"
    );
}

#[test]
fn each_certificate_reaches_only_its_own_routes_at_the_hub() {
    let (hub, edge) = clinic();
    let hub_addr = hub
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let proxy_cert = identity(&edge, "proxy.pem");
    let appliance_cert = identity(&edge, "identity.pem");
    assert!(proxy_cert.exists() && appliance_cert.exists());

    // The proxy's certificate, taken off the box, opens the portal and none of the API.
    assert_eq!(
        status(&raw(&hub_addr, Some(&proxy_cert), &get("/login"))),
        200
    );
    for (m, p) in API {
        let a = raw(&hub_addr, Some(&proxy_cert), &request(m, p));
        assert_eq!(
            status(&a),
            404,
            "{m} {p} with the proxy's certificate:\n{a}"
        );
    }
    // The appliance's own certificate does the API and none of the portal.
    let pos = raw(&hub_addr, Some(&appliance_cert), &get("/v1/position"));
    assert_eq!(status(&pos), 200, "{pos}");
    assert!(
        pos.to_ascii_lowercase().contains("cache-control: no-store"),
        "{pos}"
    );
    for p in ["/login", "/", "/search?q=x", "/history.csv"] {
        let a = raw(&hub_addr, Some(&appliance_cert), &get(p));
        assert_eq!(
            status(&a),
            404,
            "{p} with the appliance's certificate:\n{a}"
        );
    }
    // Without a certificate: enrolment only; the API refuses, the portal says where it is.
    let a = raw(&hub_addr, None, &get("/v1/position"));
    assert_eq!(status(&a), 401, "{a}");
    assert!(
        a.to_ascii_lowercase().contains("cache-control: no-store"),
        "{a}"
    );
    let a = raw(&hub_addr, None, &post("/v1/renew", "{}"));
    assert_eq!(status(&a), 401, "{a}");
    assert_eq!(status(&raw(&hub_addr, None, &get("/login"))), 403);
    assert_eq!(status(&raw(&hub_addr, None, &get("/no-such-page"))), 404);
    // A body far over the limit on the one open route is refused without being read whole.
    let big = format!("POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{", 64 << 20);
    assert_eq!(status(&raw(&hub_addr, None, big.as_bytes())), 413);
}

/// How long a listener at `addr` keeps a connection whose request headers never finish: a plain
/// TCP connection (`tls` false) or one through `openssl s_client`.
fn held_for(addr: &str, tls: bool) -> std::time::Duration {
    let half = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
    let started = std::time::Instant::now();
    if tls {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(half).unwrap();
        // stdin stays open: the request is never finished. The listener must end it.
        let mut out = Vec::new();
        let _ = child.stdout.take().unwrap().read_to_end(&mut out);
        let took = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        drop(stdin);
        took
    } else {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(40)))
            .unwrap();
        s.write_all(half).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        started.elapsed()
    }
}

#[test]
fn half_sent_requests_are_closed_by_every_hub_listener() {
    let hub = Hub::start(&[]);
    let appliances = hub
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let ta = std::thread::spawn(move || held_for(&appliances, true));
    let to = std::thread::spawn({
        let o = hub.operator_addr.clone();
        move || held_for(&o, true)
    });
    let metrics = held_for(&hub.metrics_addr, false);
    let (a, o) = (ta.join().unwrap(), to.join().unwrap());
    for (name, took, limit) in [
        ("appliances", a, 15),
        ("operators", o, 15),
        ("metrics", metrics, 10),
    ] {
        assert!(
            took.as_secs() + 1 >= limit && took.as_secs() <= limit + 10,
            "{name}: a half-sent request was held {took:?} (limit {limit} s)"
        );
    }
}

#[test]
fn a_refused_enrolment_does_not_spend_the_token() {
    let hub = Hub::start(&[]);
    let hub_addr = hub
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let token = hub.token(A, "1d");
    let (_, csr) = provisioning::ca::new_key_and_csr("box-1").unwrap();
    // A public name, the hub's own names (it serves on localhost and 127.0.0.1 here), another
    // facility's LAN name and a bare name in the LAN domain are all refused, and say why.
    for (name, why) in [
        ("www.example.com", "outside this facility"),
        ("127.0.0.1", "not an address"),
        ("localhost", "outside this facility"),
        ("box-1.3710000002.tsunagi.internal", "outside this facility"),
        ("box-1.tsunagi.internal", "outside this facility"),
        ("8.8.8.8", "not an address"),
    ] {
        let body = serde_json::json!({ "token": token, "csr": csr, "appliance": "box-1", "lan": { "csr": csr, "names": [name] } }).to_string();
        let a = raw(&hub_addr, None, &post("/v1/enroll", &body));
        assert_eq!(status(&a), 400, "{name}: {a}");
        assert!(
            a.contains("bad_lan_names")
                && a.contains(why)
                && a.to_ascii_lowercase()
                    .contains("x-content-type-options: nosniff"),
            "{name}: {a}"
        );
    }
    // An appliance newer than the hub (its protocol or its store's schema) is refused before
    // anything is spent, and told what to upgrade; a field nobody defined is refused too.
    for (protocol, schema) in [
        (shared::api::PROTOCOL + 1, shared::schema::VERSION),
        (shared::api::PROTOCOL, shared::schema::VERSION + 1),
    ] {
        let body = serde_json::json!({ "token": token, "csr": csr, "appliance": "box-1", "protocol": protocol, "schema": schema }).to_string();
        let a = raw(&hub_addr, None, &post("/v1/enroll", &body));
        assert_eq!(status(&a), 409, "{a}");
        assert!(
            a.contains("upgrade_hub") && a.contains("upgrade the hub"),
            "{a}"
        );
    }
    let body =
        serde_json::json!({ "token": token, "csr": csr, "appliance": "box-1", "role": "admin" })
            .to_string();
    let a = raw(&hub_addr, None, &post("/v1/enroll", &body));
    assert_eq!(status(&a), 400, "{a}");
    assert!(
        a.contains("bad_request") && a.contains("unknown field `role`"),
        "{a}"
    );
    // The same token still enrols the box.
    let edge = Appliance::new(&[], "");
    let out = edge.enroll(&hub, &token, "box-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And with its own certificate the box cannot renew into those names either, not even the
    // broker's if it sits on a private address.
    let me = edge.dir.path().join("identity").join("identity.pem");
    for name in [
        "127.0.0.1",
        "localhost",
        "box-1.3710000002.tsunagi.internal",
        "www.example.com",
    ] {
        let body =
            serde_json::json!({ "csr": csr, "lan": { "csr": csr, "names": [name] } }).to_string();
        let a = raw(&hub_addr, Some(&me), &post("/v1/renew", &body));
        assert_eq!(status(&a), 400, "renew with {name}: {a}");
        assert!(a.contains("bad_lan_names"), "{a}");
    }
    // An appliance upgraded past its hub says so at renewal, and is told to upgrade the hub.
    let body =
        serde_json::json!({ "csr": csr, "protocol": shared::api::PROTOCOL + 1, "new_field": 1 })
            .to_string();
    let a = raw(&hub_addr, Some(&me), &post("/v1/renew", &body));
    assert_eq!(status(&a), 409, "{a}");
    assert!(a.contains("upgrade_hub"), "{a}");
    let body = serde_json::json!({ "csr": csr, "lan": { "csr": csr, "names": ["box-1.3710000001.tsunagi.internal", "192.168.10.5"] } }).to_string();
    let a = raw(&hub_addr, Some(&me), &post("/v1/renew", &body));
    assert_eq!(status(&a), 200, "its own names: {a}");
    // A private address is one facility's: another facility's appliance, enrolling or renewing,
    // is refused it, and gets it once the office releases it.
    let other = Appliance::new(&[], "");
    let token_b = hub.token("3710000002", "1d");
    let body = serde_json::json!({ "token": token_b, "csr": csr, "appliance": "box-b", "lan": { "csr": csr, "names": ["192.168.10.5"] } }).to_string();
    let a = raw(&hub_addr, None, &post("/v1/enroll", &body));
    assert_eq!(status(&a), 400, "{a}");
    assert!(
        a.contains("192.168.10.5 is already the LAN address of another facility"),
        "{a}"
    );
    assert!(
        other.enroll(&hub, &token_b, "box-b").status.success(),
        "the token was not spent"
    );
    let theirs = other.dir.path().join("identity").join("identity.pem");
    let body = serde_json::json!({ "csr": csr, "lan": { "csr": csr, "names": ["192.168.10.5"] } })
        .to_string();
    let a = raw(&hub_addr, Some(&theirs), &post("/v1/renew", &body));
    assert_eq!(status(&a), 400, "renewing into another's address: {a}");
    assert!(hub
        .cmd("cert")
        .args(["release-address", "--address", "192.168.10.5"])
        .status()
        .unwrap()
        .success());
    let a = raw(&hub_addr, Some(&theirs), &post("/v1/renew", &body));
    assert_eq!(status(&a), 200, "released: {a}");
    // Renewals are counted: a stolen identity does not mint certificates by the dozen.
    let mut last = String::new();
    for _ in 0..12 {
        last = raw(
            &hub_addr,
            Some(&me),
            &post("/v1/renew", &serde_json::json!({ "csr": csr }).to_string()),
        );
        if status(&last) != 200 {
            break;
        }
    }
    assert_eq!(status(&last), 429, "{last}");
    assert!(last.contains("too_many_renewals"), "{last}");
}
