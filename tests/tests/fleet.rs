//! Fleet telemetry and posture as operators and clinics meet them: a real Mosquitto configured by
//! `tsunagi-hub broker setup`, a real hub, real appliances, `mosquitto_pub` as an intruder,
//! real `gsettings` behind the Linux screen-lock reporter, and headless Chromium on the hub's
//! fleet page and through the appliance's proxy. Screenshots go to `target/test-artefacts/fleet/`.

mod common;

// A crate root looks for `mod x;` at tests/x.rs, which cargo would build as a test of its own:
// the submodules name their files.
#[path = "fleet/ca.rs"]
mod ca;
#[path = "fleet/operators.rs"]
mod operators;
#[path = "fleet/terminals.rs"]
mod terminals;

use std::path::Path;

use common::browser::Browser;
use common::net::{Appliance, Broker, Hub};

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

/// An operator signed in to the hub's fleet page: the one window on each appliance (`/metrics`
/// holds aggregates only).
struct Ops {
    b: Browser,
    op: String,
}

impl Ops {
    /// Creates the operator `login` and signs in.
    fn start(hub: &Hub, login_as: &str) -> Ops {
        hub.user(login_as, "operator", "", FIRST);
        let op = hub.operator_url();
        let mut b = Browser::start(
            common::browser::artefacts(&format!("fleet-{login_as}")),
            &hub.spki_pin(),
        );
        login(&mut b, &op, login_as);
        Ops { b, op }
    }

    /// The appliance's row on the fleet page (state, posture, the row's text), or `None` when
    /// the hub knows no such appliance.
    fn row(&mut self, facility: &str, appliance: &str) -> Option<(String, String, String)> {
        self.b.goto(&format!("{}/fleet", self.op));
        let sel = format!("#fleet tr[data-facility='{facility}'][data-appliance='{appliance}']");
        let got = self.b.eval(&format!(
            "(r => r ? [r.dataset.state, r.dataset.posture, r.innerText] : null)(document.querySelector({}))",
            serde_json::to_string(&sel).unwrap()
        ));
        let got = got.as_array()?;
        let s = |i: usize| got[i].as_str().unwrap_or("").to_string();
        Some((s(0), s(1), s(2)))
    }

    /// Whether the page shows the appliance online; `None` when it shows no such appliance.
    fn up(&mut self, facility: &str, appliance: &str) -> Option<bool> {
        self.row(facility, appliance).map(|r| r.0 == "online")
    }

    fn posture_is(&mut self, facility: &str, appliance: &str, state: &str) -> bool {
        self.row(facility, appliance).is_some_and(|r| r.1 == state)
    }
}

fn login(b: &mut Browser, base: &str, user: &str) {
    common::browser::first_login(b, base, user, FIRST, NEW);
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
