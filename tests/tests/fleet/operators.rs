//! The operators' view of a live fleet: presence, posture, commands and alerts through a real
//! broker that holds each facility to its own topics, kill -9, a frozen box, a broker restart
//! and a revoked appliance.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{compliant_probe, split_identity, telemetry, Ops, A, B, KEEP_ALIVE};
use crate::common::net::{wait_for, Appliance, Broker, Hub};

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
    let mut ops = Ops::start(&hub, "ops1");
    let op = ops.op.clone();
    wait_for(30, "the hub to see box-1 online", || {
        ops.up(A, "box-1") == Some(true)
    });
    wait_for(30, "box-1's compliant posture to reach the hub", || {
        ops.posture_is(A, "box-1", "compliant")
    });
    // The row names the certificate's expiry and an empty backlog; the metrics count the
    // appliance without naming it.
    let (_, _, row) = ops.row(A, "box-1").unwrap();
    assert!(row.contains("残り"), "{row}");
    assert!(row.contains("0 (0 B)"), "{row}");
    wait_for(10, "the aggregates to count box-1", || {
        hub.metric("tsunagi_fleet_appliances{state=\"online\"}") == Some(1.0)
            && hub.metric("tsunagi_fleet_posture{state=\"compliant\"}") == Some(1.0)
            && hub.metric("tsunagi_fleet_sync_backlog_segments") == Some(0.0)
    });
    let m = hub.metrics();
    assert!(!m.contains(A) && !m.contains("box-1"), "{m}");

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
        ops.up(A, "box-own") == Some(true)
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
        ops.up(A, "box-1"),
        Some(true),
        "a sibling's presence is not box-own's to write"
    );
    assert_eq!(
        ops.up(B, "box-9"),
        None,
        "a message published under another facility's topic must never reach the hub"
    );
    assert!(
        !ops.b.text("#fleet").contains(B),
        "nothing of facility B reached the hub"
    );
    assert_eq!(
        hub.metric("tsunagi_fleet_appliances{state=\"online\"}"),
        Some(2.0),
        "box-1 and box-own, nobody else"
    );

    // The operators' page: the box is online and compliant.
    ops.b.goto(&format!("{op}/fleet"));
    let row = "#fleet tr[data-appliance='box-1']";
    assert_eq!(
        ops.b
            .eval(&format!("document.querySelector(\"{row}\").dataset.state")),
        "online"
    );
    assert_eq!(
        ops.b.eval(&format!(
            "document.querySelector(\"{row}\").dataset.posture"
        )),
        "compliant"
    );
    ops.b.screenshot("fleet-online");

    // A command goes to the box and its acknowledgement comes back: the firewall ruleset
    // changes, the operator asks for the checks now, the answer names the failing check, and
    // the posture event shows in the box's history.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/fixtures/system/nft-accept.txt"),
        probe.path().join("nft-ruleset.txt"),
    )
    .unwrap();
    ops.b.goto(&format!("{op}/fleet/{A}/box-1"));
    ops.b.click("#cmd-check");
    assert!(
        ops.b.text("#message").contains("コマンド"),
        "{}",
        ops.b.text("#message")
    );
    let mut history = String::new();
    wait_for(30, "the acknowledgement in the box's history", || {
        ops.b.goto(&format!("{op}/fleet/{A}/box-1"));
        history = ops.b.text("#history");
        history.contains("ok: posture in-grace (firewall in-grace)")
    });
    assert!(
        history.contains("check:firewall compliant → in-grace"),
        "{history}"
    );
    assert!(
        ops.b
            .text("#checks")
            .contains("no input chain drops by default"),
        "the check's finding is on the page"
    );
    ops.b.screenshot("fleet-detail-ack");
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
        || ops.up(A, "box-1") == Some(false),
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
    ops.b.goto(&format!("{op}/fleet?state=offline"));
    assert_eq!(
        ops.b
            .eval(&format!("document.querySelector(\"{row}\").dataset.state")),
        "offline"
    );
    assert!(
        ops.b.text(row).contains("connection lost"),
        "{}",
        ops.b.text(row)
    );
    assert!(
        ops.b.text(row).contains("offline"),
        "the alert shows on the row"
    );
    ops.b.screenshot("fleet-offline");
    // A command to an offline box is refused at the hub, not queued.
    ops.b.goto(&format!("{op}/fleet/{A}/box-1"));
    assert_eq!(
        ops.b.count("#cmd-check"),
        0,
        "no command buttons for an offline box"
    );

    // A box that freezes (no FIN, as a power cut or a dead switch) is caught by the keep-alive.
    edge.start(&[]);
    wait_for(30, "box-1 online again", || {
        ops.up(A, "box-1") == Some(true)
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
        ops.up(A, "box-1") == Some(false)
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
        ops.up(A, "box-1") == Some(true)
    });

    // The broker restarts: the box and the hub reconnect by themselves and resubscribe, and a
    // command still goes through.
    broker.restart();
    // The hub said box-1's liveness was unknown while the broker was away (not its last state);
    // online again means box-1 said so since.
    wait_for(60, "box-1 online after the broker restarted", || {
        hub.metric("tsunagi_broker_connected") == Some(1.0) && ops.up(A, "box-1") == Some(true)
    });
    ops.b.goto(&format!("{op}/fleet/{A}/box-1"));
    ops.b.click("#cmd-check");
    wait_for(
        30,
        "a second acknowledgement after the broker restart",
        || {
            ops.b.goto(&format!("{op}/fleet/{A}/box-1"));
            ops.b.text("#history").matches("ok: posture").count() >= 2
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
    wait_for(10, "box-1 offline", || ops.up(A, "box-1") == Some(false));
    edge.start(&[]);
    wait_for(20, "the revoked box to be refused", || {
        std::fs::read_to_string(edge.log_path())
            .unwrap()
            .contains("CertificateRevoked")
    });
    assert_eq!(
        ops.up(A, "box-1"),
        Some(false),
        "a revoked appliance never shows online"
    );
    assert!(
        broker.log().contains("certificate verify failed"),
        "{}",
        broker.log()
    );
}
