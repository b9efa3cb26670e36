//! The CA behind the fleet: the CRL the running hub keeps from lapsing, and the issuing CA
//! replaced under the same root without enrolling anyone again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{split_identity, A};
use crate::common::net::{wait_for, Appliance, Broker, Hub};

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
