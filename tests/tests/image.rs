//! The appliance image's checks that run on every CI run (`image/tools/check.sh`), with the
//! image's own systemd and nft from the trixie tools tree: the units verify cleanly, the edge's
//! sandbox scores 2.0 or better, the firewall parses, and mkosi accepts the configuration.
//! The full build and boot test is `just image-test` (image/tools/image-test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(units: Option<&Path>) -> (bool, String) {
    check_with(units, None)
}

fn check_with(units: Option<&Path>, mkosi_conf: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(root().join("image/tools/check.sh"));
    if let Some(u) = units {
        c.arg("--units").arg(u);
    }
    if let Some(f) = mkosi_conf {
        c.arg("--mkosi-conf").arg(f);
    }
    c.env("TSUNAGI_EDGE_BIN", root().join("target/debug/tsunagi-edge"));
    let out = c.output().expect("image/tools/check.sh runs");
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
fn units_verify_the_edge_scores_two_or_better_and_mkosi_accepts_the_config() {
    let (ok, out) = check(None);
    assert!(ok, "{out}");
    assert!(
        out.contains("systemd 257"),
        "not the image's systemd: {out}"
    );
    let units_dir = root().join("image/mkosi.extra/usr/lib/systemd/system");
    for e in std::fs::read_dir(&units_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("tsunagi-") && !name.ends_with(".d") {
            assert!(
                out.contains(&format!("PASS  verify {name}")),
                "{name} was not verified: {out}"
            );
        }
    }
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("PASS  security tsunagi-edge.service: exposure ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure score: {out}"));
    assert!(score <= 2.0, "exposure {score}: {out}");
    for p in [
        "mkosi summary (",
        "mkosi summary --profile=test (",
        "mkosi summary --profile=test,broken (",
        "nft -c firewall.nft",
    ] {
        assert!(out.contains(&format!("PASS  {p}")), "{p}: {out}");
    }
    // Factory reset needs these in the initrd (mkosi.conf hands them over on the signed command line).
    assert!(out.contains("PASS  initrd drop-in for systemd-cryptsetup@root.service: After=systemd-repart.service"), "{out}");
    assert!(
        out.contains(
            "PASS  initrd drop-in for systemd-repart.service: ExecStartPost=-udevadm settle"
        ),
        "{out}"
    );
}

#[test]
fn without_its_initrd_drop_in_the_root_would_be_mounted_before_a_factory_reset() {
    let dir = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(root().join("image/mkosi.conf")).unwrap();
    // The image's mkosi.conf without the drop-in that orders the root's unlock after systemd-repart.
    let without: String = conf
        .lines()
        .filter(|l| !l.contains("systemd-cryptsetup@root.service~"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, conf, "the drop-in is in image/mkosi.conf");
    let file = dir.path().join("mkosi.conf");
    std::fs::write(&file, &without).unwrap();
    let (ok, out) = check_with(None, Some(&file));
    assert!(
        !ok && out.contains("FAIL  the root is not unlocked after systemd-repart"),
        "{out}"
    );
    // A drop-in that systemd does not accept fails too.
    let bad = conf.replace(
        "W1VuaXRdCkFmdGVyPXN5c3RlbWQtcmVwYXJ0LnNlcnZpY2UK",
        "W1VuaXRdCkFmdGVyeD1zeXN0ZW1kLXJlcGFydC5zZXJ2aWNlCg==",
    );
    assert_ne!(bad, conf);
    std::fs::write(&file, &bad).unwrap();
    let (ok, out) = check_with(None, Some(&file));
    assert!(
        !ok && out.contains("FAIL  initrd drop-in for systemd-cryptsetup@root.service")
            && out.contains("Unknown key"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  the root is not unlocked after systemd-repart"),
        "{out}"
    );
}

#[test]
fn a_misspelt_directive_or_a_weakened_sandbox_fails_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        root().join("image/mkosi.extra/usr/lib/systemd/system/tsunagi-edge.service"),
    )
    .unwrap();
    // systemd only warns about an unknown key (exit code 0): the gate must still fail.
    std::fs::write(
        dir.path().join("tsunagi-edge.service"),
        unit.replace("ProtectSystem=strict", "ProtectSystm=strict"),
    )
    .unwrap();
    let (ok, out) = check(Some(dir.path()));
    assert!(
        !ok && out.contains("FAIL  verify tsunagi-edge.service") && out.contains("Unknown key"),
        "{out}"
    );
    // Without its sandbox the edge scores far worse than 2.0.
    let bare: String = unit
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Private")
                && !l.starts_with("SystemCall")
                && !l.starts_with("Restrict")
                && !l.starts_with("Capability")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("tsunagi-edge.service"), bare).unwrap();
    let (ok, out) = check(Some(dir.path()));
    assert!(
        !ok && out.contains("FAIL  security tsunagi-edge.service"),
        "{out}"
    );
}
