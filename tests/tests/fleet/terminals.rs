//! Terminals' screen lock: the Linux reporter with real `gsettings`, its enrolment, and the
//! appliance's proxy serving or refusing the terminal by what it reports.

use std::path::Path;
use std::process::Command;

use super::{compliant_probe, login, telemetry, Ops, A, FIRST};
use crate::common::browser::{artefacts, Browser};
use crate::common::net::{wait_for, Appliance, Broker, Hub};

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
    let mut ops = Ops::start(&hub, "ops1");
    wait_for(30, "box-1's compliant posture at the hub", || {
        ops.posture_is(A, "box-1", "compliant")
    });
    edge.wait_for_proxy();
    hub.user("dr-a", "doctor", A, FIRST);
    let base = edge.proxy_url();
    let mut b = Browser::start(artefacts("fleet"), &edge.lan_spki_pin());

    // A terminal nobody enrolled is unknown: warned by default, and the hub shows the banner.
    login(&mut b, &base, "dr-a");
    // It says what to do and whom to ask.
    assert!(
        b.text("#posture").contains("登録されていません")
            && b.text("#posture").contains("施設の管理者")
            && b.text("#posture").contains("/_tsunagi/terminal"),
        "an unknown terminal is warned: {}",
        b.text("#posture")
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
        ops.posture_is(A, "box-1", "non-compliant")
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
