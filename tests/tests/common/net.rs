//! A real hub and real appliances on 127.0.0.1 for the sync tests: the binaries, a test CA made
//! by `tsunagi-hub ca init`, temporary folders, and helpers to read both sides' databases.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FACILITY: &str = "3712345678";

fn bin(name: &str) -> Command {
    Command::new(tests::run::bin(name))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
            key.raw_literal()
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
            key.raw_literal()
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

/// An appliance: a state folder with a store key and a configuration file.
/// A real Mosquitto configured by `tsunagi-hub broker setup`, on a free port of 127.0.0.1.
pub struct Broker {
    pub dir: PathBuf,
    pub addr: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start(hub: &Hub) -> Broker {
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = hub.data().join("broker");
        ok(hub
            .cmd("broker")
            .args(["setup", "--listen", &addr])
            .output()
            .unwrap());
        let mut b = Broker {
            dir,
            addr,
            child: None,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        self.child = Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mosquitto (the Debian package) is installed by scripts/setup.sh"),
        );
        wait_for(10, "mosquitto to listen", || {
            std::net::TcpStream::connect(&self.addr).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("mqtts://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// `mosquitto_pub` with a client certificate and key (PEM files).
    pub fn publish(&self, cert: &Path, key: &Path, topic: &str, message: &str) -> Output {
        self.publish_as(cert, key, "intruder", topic, message)
    }

    /// `mosquitto_pub` asking for the client ID `id`.
    pub fn publish_as(
        &self,
        cert: &Path,
        key: &Path,
        id: &str,
        topic: &str,
        message: &str,
    ) -> Output {
        let (host, port) = self.addr.rsplit_once(':').unwrap();
        Command::new("mosquitto_pub")
            .args([
                "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", message, "-i", id,
            ])
            .arg("--cafile")
            .arg(self.dir.join("ca.pem"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    /// The LAN proxy's HTTPS and plain-HTTP addresses, once enabled.
    pub proxy: Option<(String, String)>,
}

/// A port free on 127.0.0.1 right now.
/// A loopback address for one appliance's LAN, its own within this test binary (127.0.0.2 and
/// up): the hub holds localhost and 127.0.0.1, and a private address belongs to one facility.
pub fn lan_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("127.0.0.{}", 2 + NEXT.fetch_add(1, Ordering::Relaxed) % 240)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free on 127.0.0.1, below the kernel's ephemeral range (32768 and up), for a server a
/// test stops and starts again on the same address: while it is down, no `bind(0)` in a test
/// running beside it can be handed its port (which once made a hub restart fail in CI).
pub fn stable_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in 0..1000u64 {
        let port = 20000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1");
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

/// The base64 SHA-256 of the first certificate's public key in a PEM file.
pub fn spki_pin_of(pem: &[u8]) -> String {
    let certs = provisioning::cert::certs_from_pem(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    base64(&shared::chain::content_hash(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Polls `f` until it is true, failing the test with `what` after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The copy equals the store, table by table and row by row, ids included.
pub fn assert_same(hub: &Hub, edge: &Appliance) {
    let (a, b) = (super::dump(&edge.store()), super::dump(&hub.copy(FACILITY)));
    for ((t, ra), (_, rb)) in a.iter().zip(b.iter()) {
        assert_eq!(
            ra.len(),
            rb.len(),
            "table {t}: {} rows at the edge, {} in the copy",
            ra.len(),
            rb.len()
        );
        assert!(
            ra == rb,
            "table {t} differs between the edge and the hub's copy"
        );
    }
    assert!(
        a.iter().map(|(_, r)| r.len()).sum::<usize>() > 0,
        "nothing was compared"
    );
}
