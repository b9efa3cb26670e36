//! An appliance for the tests: a state folder with a store key and a configuration file, enrolled
//! with the hub, its daemon, its LAN proxy and readers of its store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{bin, free_port, lan_ip, ok, spki_pin_of, wait_for, Hub, FACILITY};

/// An appliance: a state folder with a store key and a configuration file.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    /// The LAN proxy's HTTPS and plain-HTTP addresses, once enabled.
    pub proxy: Option<(String, String)>,
}

impl Appliance {
    /// `sync` is extra TOML for the `[sync]` table; `roots` go into `[ingest]`.
    pub fn new(roots: &[&Path], sync: &str) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("store.key");
        ok(bin("tsunagi-edge")
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap());
        let roots: Vec<String> = roots
            .iter()
            .map(|r| format!("{:?}", r.display().to_string()))
            .collect();
        let toml = format!(
            "state_dir = {:?}\nkey_file = {:?}\n[ingest]\nroots = [{}]\nrescan = \"1s\"\n[sync]\ninterval = \"1s\"\nbackoff_min = \"1s\"\nbackoff_max = \"2s\"\n{sync}\n",
            dir.path().display().to_string(),
            key.display().to_string(),
            roots.join(", ")
        );
        let config = dir.path().join("edge.toml");
        std::fs::write(&config, toml).unwrap();
        Appliance {
            dir,
            config,
            child: None,
            proxy: None,
        }
    }

    /// Turns on the LAN proxy (before enrolment, so the LAN certificate comes with it): HTTPS and
    /// plain HTTP on free ports of its own loopback address (`lan_ip`), the appliance's "LAN" on
    /// this one machine.
    pub fn enable_proxy(&mut self, extra: &str) {
        let ip = lan_ip();
        let (https, plain) = (
            format!("{ip}:{}", free_port()),
            format!("{ip}:{}", free_port()),
        );
        let mut toml = std::fs::read_to_string(&self.config).unwrap();
        toml.push_str(&format!("[proxy]\nlisten = {https:?}\nplain_listen = {plain:?}\nnames = [{ip:?}]\nhub_timeout = \"1s\"\n{extra}\n"));
        std::fs::write(&self.config, toml).unwrap();
        self.proxy = Some((https, plain));
    }

    /// The proxy as the facility's browsers open it.
    pub fn proxy_url(&self) -> String {
        format!("https://{}", self.proxy.as_ref().expect("proxy enabled").0)
    }

    /// The address the appliance's LAN certificate names.
    pub fn lan_ip(&self) -> String {
        let https = &self.proxy.as_ref().expect("proxy enabled").0;
        https
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default()
    }

    pub fn plain_addr(&self) -> String {
        self.proxy.as_ref().expect("proxy enabled").1.clone()
    }

    /// Waits until the daemon's proxy accepts connections.
    pub fn wait_for_proxy(&self) {
        let addr = self.proxy.as_ref().expect("proxy enabled").0.clone();
        wait_for(60, "the appliance's LAN proxy", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    /// The base64 SHA-256 of the LAN certificate's public key, for Chromium's pin list.
    pub fn lan_spki_pin(&self) -> String {
        spki_pin_of(
            &std::fs::read(self.dir.path().join("identity").join(edge::identity::LAN)).unwrap(),
        )
    }

    /// The appliance's offline data (verifiers and accesses), opened with its key.
    pub fn offline(&self) -> edge::local::Local {
        let key = edge::store::read_key(&self.dir.path().join("store.key")).unwrap();
        edge::local::Local::open(self.dir.path(), &key).unwrap()
    }

    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = bin("tsunagi-edge");
        c.arg(sub).arg("--config").arg(&self.config);
        c
    }

    pub fn enroll(&self, hub: &Hub, token: &str, appliance: &str) -> Output {
        self.cmd("enroll")
            .args([
                "--hub",
                &hub.url(),
                "--token",
                token,
                "--ca-fingerprint",
                &hub.fingerprint,
                "--appliance",
                appliance,
            ])
            .output()
            .unwrap()
    }

    /// An appliance enrolled for `facility` under the facility's `name`.
    pub fn enrolled_as(
        hub: &Hub,
        roots: &[&Path],
        facility: &str,
        name: &str,
        appliance: &str,
    ) -> Appliance {
        let a = Appliance::new(roots, "");
        ok(a.enroll(hub, &hub.token_named(facility, name, "1d"), appliance));
        a
    }

    /// An appliance with its LAN proxy on, enrolled for `facility` under the facility's `name`.
    pub fn with_proxy(
        hub: &Hub,
        roots: &[&Path],
        facility: &str,
        name: &str,
        appliance: &str,
        proxy: &str,
    ) -> Appliance {
        let mut a = Appliance::new(roots, "");
        a.enable_proxy(proxy);
        ok(a.enroll(hub, &hub.token_named(facility, name, "1d"), appliance));
        a
    }

    pub fn enrolled(hub: &Hub, roots: &[&Path], sync: &str) -> Appliance {
        let a = Appliance::new(roots, sync);
        ok(a.enroll(hub, &hub.token(FACILITY, "1d"), "box-1"));
        a
    }

    /// `ingest --once` over the configured roots.
    pub fn ingest(&self, roots: &[&Path]) -> String {
        let mut c = self.cmd("ingest");
        for r in roots {
            c.arg("--root").arg(r);
        }
        ok(c.args(["--once", "--batch-files", "16"]).output().unwrap())
    }

    pub fn sync(&self) -> Output {
        self.cmd("sync").output().unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(self.cmd("status").arg("--json").output().unwrap())).unwrap()
    }

    pub fn store(&self) -> rusqlite::Connection {
        let key = edge::store::read_key(&self.dir.path().join("store.key")).unwrap();
        edge::store::open_read_only(&self.dir.path().join("store"), &key).unwrap()
    }

    pub fn head(&self) -> u64 {
        self.store()
            .query_row("SELECT seq FROM outbox_head", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }

    pub fn identity_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("identity/identity.pem")).unwrap()
    }

    /// Starts the daemon, with extra environment.
    pub fn start(&mut self, env: &[(&str, &str)]) {
        let mut c = self.cmd("run");
        for (k, v) in env {
            c.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.child = Some(c.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    }

    /// Where the daemon's log (its standard error) goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("edge.log")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Adds TOML to the configuration.
    pub fn configure(&self, toml: &str) {
        let mut t = std::fs::read_to_string(&self.config).unwrap();
        t.push_str(toml);
        std::fs::write(&self.config, t).unwrap();
    }

    /// Stops the daemon with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "run exited with {status}");
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill();
    }
}
