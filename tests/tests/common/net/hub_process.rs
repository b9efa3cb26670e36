//! The hub for the tests: a real `tsunagi-hub` serving on ports of 127.0.0.1 with a fresh CA and
//! key, and readers of its regional database and facility copies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{bin, ok, spki_pin_of, stable_port};

pub struct Hub {
    pub dir: tempfile::TempDir,
    pub addr: String,
    /// The operators' listener (the portal for the office, without an appliance).
    pub operator_addr: String,
    pub fingerprint: String,
    /// Prometheus' /metrics (plain HTTP).
    pub metrics_addr: String,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Hub {
    /// A hub with a fresh CA and key, serving on free ports that stay its own across restarts
    /// ([`stable_port`]).
    pub fn start(extra: &[&str]) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let local = || format!("127.0.0.1:{}", stable_port());
        let mut h = Hub {
            dir,
            addr: String::new(),
            operator_addr: local(),
            fingerprint: String::new(),
            metrics_addr: local(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        ok(h.cmd("keygen").output().unwrap());
        ok(h.cmd("ca")
            .args(["init", "--network", "test"])
            .output()
            .unwrap());
        h.fingerprint = ok(h.cmd("ca").arg("fingerprint").output().unwrap())
            .trim()
            .to_string();
        h.serve(&local());
        h
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = bin("tsunagi-hub");
        c.arg("--data").arg(self.dir.path()).arg(sub);
        c
    }

    fn serve(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = self
            .cmd("serve")
            .args([
                "--listen",
                listen,
                "--operator-listen",
                &self.operator_addr,
                "--metrics-listen",
                &self.metrics_addr,
            ])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for _ in 0..4 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            lines.push(line);
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let log_path = self.log_path();
        let said = || {
            panic!(
                "hub said {lines:?}; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        };
        self.addr = lines[0]
            .trim()
            .strip_prefix("listening on https://")
            .unwrap_or_else(said)
            .to_string();
        self.operator_addr = lines[2]
            .trim()
            .strip_prefix("operators on https://")
            .and_then(|s| s.strip_suffix("/login"))
            .unwrap_or_else(said)
            .to_string();
        self.metrics_addr = lines[3]
            .trim()
            .strip_prefix("metrics on http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .unwrap_or_else(said)
            .to_string();
        self.child = Some(child);
    }

    /// Where the hub's log (its standard error) goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("hub.log")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The operators' listener: the portal for the network office.
    pub fn operator_url(&self) -> String {
        format!("https://{}", self.operator_addr)
    }

    /// Kills the hub at once (SIGKILL), as a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Serves again with these extra arguments (after `broker setup`, say).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Prometheus' text from /metrics.
    pub fn metrics(&self) -> String {
        tests::run::metrics(&self.metrics_addr)
    }

    /// One sample's value from /metrics (`name{labels}`), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        tests::run::sample(&self.metrics(), series)
    }

    /// Starts the hub again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.addr.clone();
        self.serve(&addr);
    }

    pub fn token(&self, facility: &str, valid: &str) -> String {
        self.token_named(facility, "テスト診療所", valid)
    }

    pub fn token_named(&self, facility: &str, name: &str, valid: &str) -> String {
        let out = ok(self
            .cmd("token")
            .args([
                "create",
                "--facility",
                facility,
                "--name",
                name,
                "--valid",
                valid,
            ])
            .output()
            .unwrap());
        out.lines()
            .find_map(|l| l.strip_prefix("token:"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The regional database (index, consent, accounts, audit), opened for reading and writing
    /// with the hub's key.
    pub fn region(&self) -> rusqlite::Connection {
        let key = hub::key::read(&self.data().join("hub.key"))
            .unwrap()
            .derive("region");
        let c = rusqlite::Connection::open(self.data().join("region.db")).unwrap();
        c.execute_batch(&format!(
            "PRAGMA key = \"{}\"; PRAGMA busy_timeout = 5000;",
            key.raw_literal().as_str()
        ))
        .unwrap();
        c
    }

    /// The base64 SHA-256 of the served certificate's public key, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub fn spki_pin(&self) -> String {
        spki_pin_of(&std::fs::read(self.data().join("ca").join(hub::tls::SERVED)).unwrap())
    }

    /// Adds a portal user whose first password is `password`.
    pub fn user(&self, login: &str, role: &str, facility: &str, password: &str) {
        let f = self.data().join(format!("{login}.pw"));
        std::fs::write(&f, password).unwrap();
        ok(self
            .cmd("user")
            .args([
                "add",
                "--login",
                login,
                "--name",
                &format!("{login} さん"),
                "--role",
                role,
                "--facility",
                facility,
                "--password-file",
            ])
            .arg(&f)
            .output()
            .unwrap());
        std::fs::remove_file(f).unwrap();
    }

    /// The facility's copy, opened with the key the hub derives for it.
    pub fn copy(&self, facility: &str) -> rusqlite::Connection {
        let key = hub::key::read(&self.data().join("hub.key"))
            .unwrap()
            .derive(&format!("copy:{facility}"));
        let c = rusqlite::Connection::open_with_flags(
            self.data().join("copies").join(format!("{facility}.db")),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        c.execute_batch(&format!(
            "PRAGMA key = \"{}\"; PRAGMA busy_timeout = 5000;",
            key.raw_literal().as_str()
        ))
        .unwrap();
        c
    }

    pub fn copy_seq(&self, facility: &str) -> u64 {
        if !self
            .data()
            .join("copies")
            .join(format!("{facility}.db"))
            .exists()
        {
            return 0;
        }
        self.copy(facility)
            .query_row("SELECT seq FROM outbox_head", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0) as u64
    }

    /// `copy verify`: the exit status and the report.
    pub fn verify(&self, facility: &str) -> (bool, String) {
        let out = self
            .cmd("copy")
            .args(["verify", "--facility", facility])
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
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}
