//! The TLS client key inside a TPM2 (a real swtpm on 127.0.0.1): enrolment makes the key in the
//! TPM and signs the CSR there, mutual TLS to the real hub signs in the TPM, a renewal keeps the
//! key, the key survives a TPM restart, and another TPM cannot use it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::net::{free_port, Appliance, Hub, FACILITY};

struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    fn start(state: &Path, port: u16) -> Swtpm {
        std::fs::create_dir_all(state).unwrap();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm runs (./scripts/setup.sh installs it)");
        common::net::wait_for(10, "swtpm", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Swtpm { child, port }
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two consecutive free ports (swtpm's server and control).
fn port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

#[test]
fn the_client_key_lives_in_the_tpm_and_works_only_with_it() {
    let hub = Hub::start(&[]);
    let states = tempfile::tempdir().unwrap();
    let port = port_pair();
    let tpm = Swtpm::start(&states.path().join("a"), port);
    let a = Appliance::new(&[], "");
    let mut toml = std::fs::read_to_string(&a.config).unwrap();
    toml.push_str(&format!(
        "[identity]\nkey_store = \"tpm\"\ntpm_tcti = {:?}\n",
        tpm.tcti()
    ));
    std::fs::write(&a.config, toml).unwrap();

    let out = a.enroll(&hub, &hub.token(FACILITY, "1d"), "tpm-box");
    assert!(out.status.success(), "{}", text(&out));
    let id = a.dir.path().join("identity");
    let pem = std::fs::read_to_string(id.join("identity.pem")).unwrap();
    assert!(
        pem.contains("BEGIN CERTIFICATE") && !pem.contains("PRIVATE KEY"),
        "the key must not be on disk: {pem}"
    );
    let stored = std::fs::read_to_string(id.join("identity.tpm.json")).unwrap();
    assert!(
        stored.contains(&tpm.tcti()) && stored.contains("material"),
        "{stored}"
    );
    assert_eq!(
        std::fs::metadata(id.join("identity.tpm.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Mutual TLS with the hub, signed in the TPM by a fresh process.
    let out = a.sync();
    assert!(out.status.success(), "{}", text(&out));
    // A renewal keeps the TPM key (a new certificate for the same key).
    let out = a.cmd("renew").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(id.join("identity.tpm.json")).unwrap(),
        stored,
        "the renewal must keep the TPM key"
    );
    assert_ne!(
        std::fs::read_to_string(id.join("identity.pem")).unwrap(),
        pem,
        "the renewal brings a new certificate"
    );
    assert!(a.sync().status.success());

    // Another TPM (a disk moved to another box, or a cleared TPM) cannot use the key.
    drop(tpm);
    let other = Swtpm::start(&states.path().join("b"), port);
    let out = a.sync();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not load in this TPM"),
        "{}",
        text(&out)
    );
    drop(other);

    // The same TPM again (its state kept, as across a reboot): the key works.
    let _tpm = Swtpm::start(&states.path().join("a"), port);
    let out = a.sync();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn without_its_tpm_the_box_says_so_and_enrols_nothing() {
    let hub = Hub::start(&[]);
    let a = Appliance::new(&[], "");
    let port = port_pair();
    let mut toml = std::fs::read_to_string(&a.config).unwrap();
    toml.push_str(&format!(
        "[identity]\nkey_store = \"tpm\"\ntpm_tcti = \"swtpm:host=127.0.0.1,port={port}\"\n"
    ));
    std::fs::write(&a.config, toml).unwrap();
    let out = a.enroll(&hub, &hub.token(FACILITY, "1d"), "no-tpm");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot open the TPM at swtpm:host=127.0.0.1"),
        "{}",
        text(&out)
    );
    assert!(!a.dir.path().join("identity/identity.pem").exists());
}
