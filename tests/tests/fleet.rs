//! Fleet telemetry and posture as operators and clinics meet them: a real Mosquitto configured by
//! `tsunagi-hub broker setup`, a real hub, real appliances, `mosquitto_pub` as an intruder,
//! real `gsettings` behind the Linux screen-lock reporter, and headless Chromium on the hub's
//! fleet page and through the appliance's proxy. Screenshots go to `target/test-artefacts/fleet/`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{artefacts, Browser};
use common::net::{wait_for, Appliance, Broker, Hub};

const A: &str = "3710000001";
const B: &str = "3710000002";
const FIRST: &str = "Init-pass1";
const NEW: &str = "Chosen-pass2";
const KEEP_ALIVE: u64 = 4;

/// Outputs of the appliance's own checks, as a privileged helper would record them: a compliant
/// box (LUKS, input policy drop, NTP synchronised, nothing unexpected listening, no Wi-Fi).
fn compliant_probe(dir: &Path) {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/fixtures/system");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fx.join("lsblk-luks.json"), dir.join("lsblk.txt")).unwrap();
    std::fs::copy(fx.join("nft-drop.txt"), dir.join("nft-ruleset.txt")).unwrap();
    std::fs::write(dir.join("findmnt-state.txt"), "/var\n").unwrap();
    std::fs::write(
        dir.join("timedatectl.txt"),
        "NTP=yes\nNTPSynchronized=yes\n",
    )
    .unwrap();
    std::fs::write(dir.join("ss-listening.txt"), "udp   UNCONN 0      0             0.0.0.0:68         0.0.0.0:*\ntcp   LISTEN 0      4096        127.0.0.1:631        0.0.0.0:*\n").unwrap();
    std::fs::write(dir.join("iw-dev.txt"), "").unwrap();
    std::fs::write(dir.join("update-stamp"), "").unwrap();
}

fn telemetry(edge: &Appliance, broker: &Broker, probe: &Path, policy: &str) {
    edge.configure(&format!(
        "[telemetry]\nbroker = {:?}\nkeep_alive = \"{KEEP_ALIVE}s\"\nstatus_every = \"5s\"\n[policy]\nprobe_dir = {:?}\ninterval = \"2s\"\nupdate_stamps = [{:?}]\n{policy}\n",
        broker.url(),
        probe.display().to_string(),
        probe.join("update-stamp").display().to_string()
    ));
}

fn up(hub: &Hub, facility: &str, appliance: &str) -> Option<f64> {
    hub.metric(&format!(
        "tsunagi_appliance_up{{facility=\"{facility}\",appliance=\"{appliance}\"}}"
    ))
}

fn posture_is(hub: &Hub, facility: &str, appliance: &str, state: &str) -> bool {
    hub.metric(&format!("tsunagi_appliance_posture{{facility=\"{facility}\",appliance=\"{appliance}\",state=\"{state}\"}}")) == Some(1.0)
}

fn login(b: &mut Browser, base: &str, user: &str) {
    common::browser::first_login(b, base, user, FIRST, NEW);
}

/// A webhook receiver on 127.0.0.1: every POST body it got.
fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            g.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("http://{addr}/hooks/tsunagi"), got)
}

/// The appliance's identity file split into what `mosquitto_pub` takes: the chain and the key.
fn split_identity(edge: &Appliance, into: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pem = String::from_utf8(edge.identity_pem()).unwrap();
    let key_at = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("identity.pem holds the key");
    let (cert, key) = (into.join("cert.pem"), into.join("key.pem"));
    std::fs::write(&cert, &pem[..key_at]).unwrap();
    std::fs::write(&key, &pem[key_at..]).unwrap();
    (cert, key)
}

#[test]
fn operators_see_the_fleet_live_and_the_broker_holds_each_facility_to_its_own_topics() {
    let mut hub = Hub::start(&[]);
    let mut broker = Broker::start(&hub);
    let (hook, alerts) = webhook();
    hub.restart_with(&[
        "--broker",
        &broker.url(),
        "--alert-offline",
        "2s",
        "--alert-webhook",
        &hook,
    ]);
    let probe = tempfile::tempdir().unwrap();
    compliant_probe(probe.path());
    let mut edge = Appliance::enrolled_as(&hub, &[], A, "つなぎ内科クリニック", "box-1");
    telemetry(&edge, &broker, probe.path(), "");
    edge.start(&[]);
    wait_for(30, "the hub to see box-1 online", || {
        up(&hub, A, "box-1") == Some(1.0)
    });
    wait_for(30, "box-1's compliant posture to reach the hub", || {
        posture_is(&hub, A, "box-1", "compliant")
    });
    let m = hub.metrics();
    assert!(
        m.contains(&format!(
            "tsunagi_appliance_cert_expiry_seconds{{facility=\"{A}\",appliance=\"box-1\"}}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "tsunagi_appliance_sync_backlog_segments{{facility=\"{A}\",appliance=\"box-1\"}} 0"
        )),
        "{m}"
    );

    // Another appliance of A, with its own valid certificate, tries to speak for facility B and
    // for its sibling box-1: the broker drops both. Then, as a control, its own topic arrives.
    let other = Appliance::enrolled_as(&hub, &[], A, "つなぎ内科クリニック", "box-own");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = split_identity(&other, certs.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!(r#"{{"state":"online","at":{now}}}"#);
    let forged = forged.as_str();
    let out = broker.publish(&cert, &key, &format!("tsunagi/{B}/box-9/presence"), forged);
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = format!(r#"{{"state":"offline","at":{now}}}"#);
    assert!(broker
        .publish(
            &cert,
            &key,
            &format!("tsunagi/{A}/box-1/presence"),
            &offline
        )
        .status
        .success());
    // Naming the hub's client ID (or any other) gets it its own all the same: the hub's
    // subscription is not knocked off, however often it tries.
    for _ in 0..5 {
        let _ = broker.publish_as(
            &cert,
            &key,
            shared::fleet::HUB_USER,
            &format!("tsunagi/{A}/box-own/event"),
            "{}",
        );
    }
    let out = broker.publish(
        &cert,
        &key,
        &format!("tsunagi/{A}/box-own/presence"),
        forged,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(10, "the control message under box-own's own topic", || {
        up(&hub, A, "box-own") == Some(1.0)
    });
    let log = broker.log();
    assert!(
        log.contains(&format!("{A}/box-own")),
        "the broker names the intruder by its certificate: {log}"
    );
    assert!(
        !log.contains(&format!(
            "Client {} already connected",
            shared::fleet::HUB_USER
        )),
        "the hub's session was taken over: {log}"
    );
    assert_eq!(
        up(&hub, A, "box-1"),
        Some(1.0),
        "a sibling's presence is not box-own's to write"
    );
    assert_eq!(
        up(&hub, B, "box-9"),
        None,
        "a message published under another facility's topic must never reach the hub"
    );
    assert!(
        !hub.metrics().contains(B),
        "nothing of facility B reached the hub"
    );

    // The operators' page: the box is online and compliant.
    hub.user("ops1", "operator", "", FIRST);
    let op = hub.operator_url();
    let mut b = Browser::start(artefacts("fleet"), &hub.spki_pin());
    login(&mut b, &op, "ops1");
    b.goto(&format!("{op}/fleet"));
    let row = "#fleet tr[data-appliance='box-1']";
    assert_eq!(
        b.eval(&format!("document.querySelector(\"{row}\").dataset.state")),
        "online"
    );
    assert_eq!(
        b.eval(&format!(
            "document.querySelector(\"{row}\").dataset.posture"
        )),
        "compliant"
    );
    b.screenshot("fleet-online");

    // A command goes to the box and its acknowledgement comes back: the firewall ruleset
    // changes, the operator asks for the checks now, the answer names the failing check, and
    // the posture event shows in the box's history.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/fixtures/system/nft-accept.txt"),
        probe.path().join("nft-ruleset.txt"),
    )
    .unwrap();
    b.goto(&format!("{op}/fleet/{A}/box-1"));
    b.click("#cmd-check");
    assert!(
        b.text("#message").contains("コマンド"),
        "{}",
        b.text("#message")
    );
    let mut history = String::new();
    wait_for(30, "the acknowledgement in the box's history", || {
        b.goto(&format!("{op}/fleet/{A}/box-1"));
        history = b.text("#history");
        history.contains("ok: posture in-grace (firewall in-grace)")
    });
    assert!(
        history.contains("check:firewall compliant → in-grace"),
        "{history}"
    );
    assert!(
        b.text("#checks")
            .contains("no input chain drops by default"),
        "the check's finding is on the page"
    );
    b.screenshot("fleet-detail-ack");
    let audit = hub
        .region()
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'fleet-command' AND login = 'ops1'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(audit, 1, "the command is in the audit log");

    // kill -9: the broker sees the connection go and publishes the last will.
    let t0 = Instant::now();
    edge.kill();
    wait_for(
        KEEP_ALIVE * 3 / 2 + 1,
        "box-1 offline after kill -9",
        || up(&hub, A, "box-1") == Some(0.0),
    );
    assert!(
        t0.elapsed() <= Duration::from_millis(KEEP_ALIVE * 1500),
        "offline within 1.5× the keep-alive after kill -9, took {:?}",
        t0.elapsed()
    );
    wait_for(10, "the offline alert", || {
        hub.metric("tsunagi_fleet_alerts{kind=\"offline\"}") == Some(1.0)
    });
    wait_for(10, "the offline alert at the webhook", || {
        alerts.lock().unwrap().iter().any(|b| {
            b.contains("\"state\":\"firing\"")
                && b.contains("\"kind\":\"offline\"")
                && b.contains("box-1")
        })
    });
    b.goto(&format!("{op}/fleet?state=offline"));
    assert_eq!(
        b.eval(&format!("document.querySelector(\"{row}\").dataset.state")),
        "offline"
    );
    assert!(b.text(row).contains("connection lost"), "{}", b.text(row));
    assert!(
        b.text(row).contains("offline"),
        "the alert shows on the row"
    );
    b.screenshot("fleet-offline");
    // A command to an offline box is refused at the hub, not queued.
    b.goto(&format!("{op}/fleet/{A}/box-1"));
    assert_eq!(
        b.count("#cmd-check"),
        0,
        "no command buttons for an offline box"
    );

    // A box that freezes (no FIN, as a power cut or a dead switch) is caught by the keep-alive.
    edge.start(&[]);
    wait_for(30, "box-1 online again", || {
        up(&hub, A, "box-1") == Some(1.0)
    });
    wait_for(10, "the offline alert to resolve", || {
        hub.metric("tsunagi_fleet_alerts{kind=\"offline\"}") == Some(0.0)
    });
    wait_for(10, "the resolution at the webhook", || {
        alerts
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("\"state\":\"resolved\"") && b.contains("\"kind\":\"offline\""))
    });
    let pid = nix::unistd::Pid::from_raw(edge.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    wait_for(KEEP_ALIVE * 3, "box-1 offline after it froze", || {
        up(&hub, A, "box-1") == Some(0.0)
    });
    let took = t0.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Debian 12's Mosquitto (2.0.11) sweeps keep-alives every 6 s (`last_keepalive_check + 5 <
    // now`), in whole seconds: a silent box is offline 1.5× its keep-alive after its last packet,
    // seen at the next sweep.
    assert!(took <= Duration::from_millis(KEEP_ALIVE * 1500 + 7200), "offline within 1.5× the keep-alive (plus the broker's sweep) of a frozen box, took {took:?}");
    assert!(
        took >= Duration::from_secs(KEEP_ALIVE),
        "not before the keep-alive ran out ({took:?})"
    );
    wait_for(30, "box-1 back after it thawed", || {
        up(&hub, A, "box-1") == Some(1.0)
    });

    // The broker restarts: the box and the hub reconnect by themselves and resubscribe, and a
    // command still goes through.
    broker.restart();
    // The hub said box-1's liveness was unknown while the broker was away (not its last state);
    // online again means box-1 said so since.
    wait_for(60, "box-1 online after the broker restarted", || {
        hub.metric("tsunagi_broker_connected") == Some(1.0) && up(&hub, A, "box-1") == Some(1.0)
    });
    b.goto(&format!("{op}/fleet/{A}/box-1"));
    b.click("#cmd-check");
    wait_for(
        30,
        "a second acknowledgement after the broker restart",
        || {
            b.goto(&format!("{op}/fleet/{A}/box-1"));
            b.text("#history").matches("ok: posture").count() >= 2
        },
    );

    // Revoked: the hub rewrites the CRL and has the broker read it; the box cannot come back.
    edge.kill();
    let out = hub
        .cmd("cert")
        .args(["revoke", "--facility", A])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("asked the MQTT broker"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for(10, "box-1 offline", || up(&hub, A, "box-1") == Some(0.0));
    edge.start(&[]);
    wait_for(20, "the revoked box to be refused", || {
        std::fs::read_to_string(edge.log_path())
            .unwrap()
            .contains("CertificateRevoked")
    });
    assert_eq!(
        up(&hub, A, "box-1"),
        Some(0.0),
        "a revoked appliance never shows online"
    );
    assert!(
        broker.log().contains("certificate verify failed"),
        "{}",
        broker.log()
    );
}

/// The Linux reporter, with real `gsettings` (its keyfile backend) in a fresh desktop profile.
fn reporter(home: &Path, root: &Path, args: &[&str], idle: Option<u32>) -> (bool, String) {
    let gs = |a: &[&str]| {
        let out = Command::new("gsettings")
            .args(a)
            .env("GSETTINGS_BACKEND", "keyfile")
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gsettings {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if let Some(s) = idle {
        gs(&[
            "set",
            "org.gnome.desktop.session",
            "idle-delay",
            &s.to_string(),
        ]);
        gs(&[
            "set",
            "org.gnome.desktop.screensaver",
            "lock-enabled",
            "true",
        ]);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/reporters/screenlock.sh");
    let out = Command::new("sh")
        .arg(script)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GSETTINGS_BACKEND", "keyfile")
        .env("TSUNAGI_CA", root)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn terminals_report_their_screen_lock_and_the_proxy_enforces_it() {
    let mut hub = Hub::start(&[]);
    let broker = Broker::start(&hub);
    hub.restart_with(&["--broker", &broker.url()]);
    let probe = tempfile::tempdir().unwrap();
    compliant_probe(probe.path());
    let mut edge = Appliance::with_proxy(&hub, &[], A, "つなぎ内科クリニック", "box-1", "");
    telemetry(&edge, &broker, probe.path(), "grace = \"0s\"");
    edge.start(&[]);
    wait_for(30, "box-1's compliant posture at the hub", || {
        posture_is(&hub, A, "box-1", "compliant")
    });
    edge.wait_for_proxy();
    hub.user("dr-a", "doctor", A, FIRST);
    let base = edge.proxy_url();
    let mut b = Browser::start(artefacts("fleet"), &edge.lan_spki_pin());

    // A terminal nobody enrolled is unknown: warned by default, and the hub shows the banner.
    login(&mut b, &base, "dr-a");
    assert!(
        b.text("#posture").contains("この端末はセキュリティ基準"),
        "an unknown terminal is warned"
    );
    b.screenshot("terminal-unknown-warned");

    // The administrator enrols the terminal in the browser and its reporter, under one name.
    let code = |name: &str| {
        let out = Command::new(tests::run::bin("tsunagi-edge"))
            .args(["terminal", "code", "--config"])
            .arg(&edge.config)
            .args(["--name", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("code: "))
            .unwrap()
            .to_string()
    };
    b.goto(&format!("{base}/_tsunagi/terminal"));
    b.fill("#code", &code("診察室2"));
    b.click("#submit");
    assert!(b.text("#message").contains("診察室2"));
    let home = tempfile::tempdir().unwrap();
    let root = hub.data().join("ca/root.crt");
    let (ok, out) = reporter(home.path(), &root, &["report"], None);
    assert!(!ok && out.contains("not enrolled"), "{out}");
    let (ok, out) = reporter(home.path(), &root, &["enrol", &base, "wrong-code"], None);
    assert!(!ok && out.contains("wrong, used or expired"), "{out}");
    let (ok, out) = reporter(
        home.path(),
        &root,
        &["enrol", &base, &code("診察室2")],
        None,
    );
    assert!(ok, "{out}");
    let conf = home.path().join(".config/tsunagi/reporter");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600,
        "the token is owner-only"
    );

    // GNOME blanks after 600 s: non-compliant, and with no grace the proxy refuses the terminal.
    let (ok, out) = reporter(home.path(), &root, &["report"], Some(600));
    assert!(ok, "{out}");
    assert!(
        out.contains("\"state\":\"non-compliant\"") && out.contains("locks after 600 s"),
        "{out}"
    );
    b.goto(&format!("{base}/search"));
    assert!(
        b.text("body").contains("この端末からは利用できません"),
        "{}",
        b.text("body")
    );
    assert!(
        b.text("body").contains("300 秒以下"),
        "the refusal says what to change"
    );
    b.screenshot("terminal-refused");

    // Fixed to 240 s: compliant, served, no banner.
    let (ok, out) = reporter(home.path(), &root, &["report"], Some(240));
    assert!(ok && out.contains("\"state\":\"compliant\""), "{out}");
    b.goto(&format!("{base}/"));
    assert_eq!(b.path(), "/");
    assert_eq!(b.count("#posture"), 0, "a compliant terminal has no banner");

    // The appliance's own firewall stops dropping: the facility's staff see it on the portal.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/fixtures/system/nft-accept.txt"),
        probe.path().join("nft-ruleset.txt"),
    )
    .unwrap();
    wait_for(30, "box-1's non-compliant posture at the hub", || {
        posture_is(&hub, A, "box-1", "non-compliant")
    });
    b.goto(&format!("{base}/"));
    assert!(
        b.text("#posture")
            .contains("施設のセキュリティ点検: 不適合"),
        "{}",
        b.text("#posture")
    );
    b.screenshot("facility-non-compliant");
    // The appliance's own posture is not the terminal's: the terminal is still served.
    assert_eq!(b.path(), "/");

    // A token that is not the reporter's is refused.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&root)
        .args([
            "-H",
            "Authorization: Bearer 00",
            "--data",
            "{\"os\":\"linux\"}",
            &format!("{base}/_tsunagi/posture"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unknown reporter token"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Every change of the terminal's state was audited on the appliance.
    let out = edge.cmd("check").arg("--json").output().unwrap();
    let p: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(p["state"], "non-compliant", "the firewall, from above: {p}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "check exits 1 when non-compliant"
    );
    let fw = p["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "firewall")
        .unwrap();
    assert!(
        fw["remediation"]
            .as_str()
            .unwrap()
            .contains("ファイアウォール"),
        "{fw}"
    );
    let t = p["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "診察室2")
        .unwrap();
    assert_eq!(t["state"], "compliant");
    let events: Vec<(String, String)> = edge
        .offline()
        .recent_events(50)
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == "terminal:診察室2")
        .map(|e| {
            (
                e.from.map(|s| s.code().to_string()).unwrap_or_default(),
                e.to.code().to_string(),
            )
        })
        .collect();
    assert!(
        events.contains(&("non-compliant".into(), "compliant".into())),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.1 == "non-compliant"), "{events:?}");
}

/// The next update of the CRL the hub's CA folder holds (Unix seconds).
fn crl_next_update(hub: &Hub) -> i64 {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateRevocationListDer::from_pem_file(
        hub.data().join("ca").join(provisioning::ca::CRL),
    )
    .unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    crl.next_update().unwrap().timestamp()
}

/// Mosquitto refuses every client once its CRL's next update has passed, so a CRL written once
/// would take the fleet dark a month after the last revocation. The running hub writes it again
/// well before it lapses and has the broker read it: with a CRL valid for 6 s, appliances still
/// connect 20 s on. With the hub stopped, the same short CRL lapses and the broker refuses them,
/// which is what the refresh prevents.
#[test]
fn the_crl_never_lapses_while_the_hub_runs() {
    let mut hub = Hub::start(&[]);
    let broker = Broker::start(&hub);
    hub.restart_with(&["--crl-validity", "6s"]);
    let edge = Appliance::enrolled_as(&hub, &[], A, "つなぎ内科クリニック", "box-1");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = split_identity(&edge, certs.path());
    let topic = format!("tsunagi/{A}/box-1/event");
    let first = crl_next_update(&hub);
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        crl_next_update(&hub) > first + 10,
        "the hub rewrote the CRL ahead of its next update"
    );
    let out = broker.publish(&cert, &key, &topic, "{}");
    assert!(
        out.status.success(),
        "20 s after a 6 s CRL the broker still takes the appliance: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the hub, a short CRL lapses and the broker refuses everyone.
    hub.kill();
    let ca = provisioning::Ca::load(&hub.data().join("ca")).unwrap();
    ca.write_crl_valid_for(&[], 1_000_000, tests_now(), 3)
        .unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(6));
    let out = broker.publish(&cert, &key, &topic, "{}");
    assert!(
        !out.status.success(),
        "a lapsed CRL must make the broker refuse the handshake"
    );
    // The hub, started again, sees the lapsed CRL, writes a current one and tells the broker.
    hub.restart_with(&["--crl-validity", "6s"]);
    wait_for(20, "the broker to take the appliance again", || {
        broker.publish(&cert, &key, &topic, "{}").status.success()
    });
}

fn tests_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `curl` at the hub's appliance API with a client certificate: whether the hub takes it.
fn hub_takes(hub: &Hub, cert: &Path, key: &Path) -> (bool, String) {
    let root = hub.data().join("ca").join("root.crt");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&root)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(format!("{}/v1/position", hub.url()))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.starts_with("200"), said)
}

fn ca_list(hub: &Hub) -> Vec<serde_json::Value> {
    let out = hub.cmd("ca").args(["list", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The issuing CA is replaced under the same root without enrolling anyone again: the
/// appliances' certificates from the old one keep working at the hub and at the broker until
/// they renew, new ones come from the new one, the old one cannot be withdrawn while a
/// certificate of it is in use, and once it is withdrawn a certificate it issued is refused
/// everywhere. Neither step runs while a hub serves from the folder.
#[test]
fn the_issuing_ca_is_replaced_without_enrolling_anyone_again() {
    let mut hub = Hub::start(&[]);
    let mut broker = Broker::start(&hub);
    hub.restart_with(&["--broker", &broker.url()]);
    let mut edge = Appliance::with_proxy(&hub, &[], A, "つなぎ内科クリニック", "box-1", "");
    let old_certs = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = split_identity(&edge, old_certs.path());
    let topic = format!("tsunagi/{A}/box-1/event");
    assert!(hub_takes(&hub, &old_cert, &old_key).0);
    let before = ca_list(&hub);
    assert_eq!(before.len(), 1);
    let old = before[0]["serial"].as_str().unwrap().to_string();
    assert_eq!(
        before[0]["in_use"], 2,
        "box-1's own certificate and its proxy's: {before:?}"
    );

    let out = hub.cmd("ca").arg("rotate-issuing").output().unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("stop `tsunagi-hub serve` first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.kill();
    let out = hub.cmd("ca").arg("rotate-issuing").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("replaced:       {old}")) && said.contains("withdraw-issuing"),
        "{said}"
    );
    // Run again with no options, it keeps the folder's address and names.
    let out = hub.cmd("broker").arg("setup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    broker.restart();
    hub.restart();
    let fingerprint =
        String::from_utf8_lossy(&hub.cmd("ca").arg("fingerprint").output().unwrap().stdout)
            .trim()
            .to_string();
    assert_eq!(
        fingerprint, hub.fingerprint,
        "the root, which every appliance pins, is the same"
    );
    let after = ca_list(&hub);
    assert_eq!(
        (
            after.len(),
            after[0]["current"].as_bool(),
            after[1]["serial"].as_str()
        ),
        (2, Some(true), Some(old.as_str())),
        "{after:?}"
    );

    // The old certificate still works at both, through the old CA's own CRL.
    let (ok, said) = hub_takes(&hub, &old_cert, &old_key);
    assert!(
        ok,
        "the hub takes a certificate of the replaced CA until it is withdrawn: {said}"
    );
    let out = broker.publish(&old_cert, &old_key, &topic, "{}");
    assert!(
        out.status.success(),
        "the broker too: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new appliance gets its certificate from the new CA, and it works at both.
    let newer = Appliance::enrolled_as(&hub, &[], A, "つなぎ内科クリニック", "box-2");
    let new_certs = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = split_identity(&newer, new_certs.path());
    let chain = std::fs::read(&new_cert).unwrap();
    let new_ca = provisioning::Ca::load(&hub.data().join("ca")).unwrap();
    assert!(provisioning::cert::issued_by(
        &chain,
        &new_ca.issuing_cas()[0].der
    ));
    assert!(hub_takes(&hub, &new_cert, &new_key).0);
    assert!(broker
        .publish(
            &new_cert,
            &new_key,
            &format!("tsunagi/{A}/box-2/event"),
            "{}"
        )
        .status
        .success());

    // Not withdrawn while box-1's certificates from it are in use.
    hub.kill();
    let out = hub
        .cmd("ca")
        .args(["withdraw-issuing", "--serial", &old])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("still in use") && e.contains(&format!("{A} box-1")),
        "{e}"
    );
    hub.restart();
    let out = edge.cmd("renew").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The renewal presented the appliance's new certificate; its proxy has not been used since,
    // so the proxy's old certificate is what it would present: still in use.
    hub.kill();
    let out = hub
        .cmd("ca")
        .args(["withdraw-issuing", "--serial", &old])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("1 certificates")
            && e.contains(&format!("{A} box-1 proxy")),
        "{e}"
    );
    hub.restart();
    edge.start(&[]);
    edge.wait_for_proxy();
    let root = hub.data().join("ca").join("root.crt");
    wait_for(
        30,
        "a page through the proxy on its new certificate",
        || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(&root)
                .arg(format!("{}/login", edge.proxy_url()))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout) == "200"
        },
    );
    edge.stop();
    hub.kill();
    let out = hub
        .cmd("ca")
        .args(["withdraw-issuing", "--serial", &old])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.restart();
    assert_eq!(ca_list(&hub).len(), 1);

    // Withdrawn: the old certificate is refused by the hub and by the broker; the renewed one and
    // the new appliance's are taken.
    let (ok, said) = hub_takes(&hub, &old_cert, &old_key);
    assert!(
        !ok,
        "the hub refuses a certificate of a withdrawn CA: {said}"
    );
    let out = broker.publish(&old_cert, &old_key, &topic, "{}");
    assert!(!out.status.success(), "the broker refuses it too");
    let renewed = tempfile::tempdir().unwrap();
    let (cert, key) = split_identity(&edge, renewed.path());
    assert!(
        hub_takes(&hub, &cert, &key).0,
        "box-1's renewed certificate"
    );
    assert!(broker.publish(&cert, &key, &topic, "{}").status.success());
    assert!(hub_takes(&hub, &new_cert, &new_key).0);
    let out = edge.sync();
    assert!(
        out.status.success(),
        "box-1 syncs as before: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
