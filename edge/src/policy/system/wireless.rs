//! The Wi-Fi check: every network the appliance can see and the one it uses, from `iw`,
//! `wpa_cli` or `nmcli`, judged by `policy::wifi`.

use crate::policy::wifi::{self, Network};
use crate::policy::{Context, Outcome, Status};

fn from_verdict(v: wifi::Verdict) -> Status {
    match v {
        wifi::Verdict::Pass => Status::Pass,
        wifi::Verdict::Warn => Status::Warn,
        wifi::Verdict::Fail => Status::Fail,
    }
}

/// The wireless interfaces `iw dev` lists.
pub fn iw_interfaces(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Interface "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The association from `iw dev <if> link`: SSID and BSSID, or None when not connected.
pub fn parse_iw_link(text: &str) -> Option<(String, String)> {
    let first = text.lines().next()?;
    let bssid = first
        .strip_prefix("Connected to ")?
        .split_whitespace()
        .next()?
        .to_string();
    let ssid = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("SSID:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Some((ssid, bssid))
}

/// Wi-Fi: every network the appliance can see and the one it uses.
pub fn wifi(ctx: &Context) -> Outcome {
    let p = &ctx.probe;
    let dev = p.output("iw-dev", &["iw", "dev"]);
    let nmcli = || {
        p.output(
            "nmcli-wifi",
            &["nmcli", "-t", "-f", "IN-USE,SSID,SECURITY", "dev", "wifi"],
        )
    };
    let (networks, in_use, is_ap): (Vec<Network>, Option<Network>, bool) = match &dev {
        Ok(text) => {
            let ifs = iw_interfaces(text);
            if ifs.is_empty() {
                return Outcome::pass("no Wi-Fi interface (wired only)");
            }
            let is_ap = wifi::iw_dev_is_ap(text);
            let mut nets = Vec::new();
            let mut scanned = false;
            for i in &ifs {
                if let Ok(s) = p.output("iw-scan", &["iw", "dev", i, "scan"]) {
                    nets.extend(wifi::parse_iw_scan(&s));
                    scanned = true;
                }
            }
            if !scanned {
                match nmcli() {
                    Ok(s) => nets = wifi::parse_nmcli(&s),
                    Err(e) => return Outcome::error(format!("cannot scan for Wi-Fi networks: {e}"), "無線LANの走査ができません。アプライアンスの再起動で直らなければネットワーク事務局に連絡してください。"),
                }
            }
            let mut in_use = None;
            let mut ap = is_ap;
            for i in &ifs {
                if let Ok(s) = p.output("wpa-cli-status", &["wpa_cli", "-i", i, "status"]) {
                    let (n, a) = wifi::parse_wpa_status(&s);
                    ap |= a;
                    in_use = in_use.or(n);
                } else if let Some((ssid, bssid)) = p
                    .output("iw-link", &["iw", "dev", i, "link"])
                    .ok()
                    .as_deref()
                    .and_then(parse_iw_link)
                {
                    for n in nets.iter_mut() {
                        if n.bssid.eq_ignore_ascii_case(&bssid)
                            || (n.bssid.is_empty() && n.ssid == ssid)
                        {
                            n.in_use = true;
                        }
                    }
                }
            }
            (nets, in_use, ap)
        }
        Err(_) => match nmcli() {
            Ok(s) => (wifi::parse_nmcli(&s), None, false),
            Err(_) => {
                let radios = std::fs::read_dir("/sys/class/net")
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter(|e| e.path().join("wireless").exists())
                            .count()
                    })
                    .unwrap_or(0);
                if ctx.probe.dir.is_none() && radios == 0 {
                    return Outcome::pass("no Wi-Fi interface (wired only)");
                }
                return Outcome::error(
                    "a Wi-Fi interface exists but neither `iw` nor `nmcli` can read it",
                    "無線LANの状態を読めません。ネットワーク事務局に連絡してください。",
                );
            }
        },
    };
    let expected = wifi::Expected {
        ssids: ctx.settings.ssids.clone(),
        floor: ctx.settings.wifi_floor,
    };
    let (verdict, findings) = wifi::assess(&networks, in_use.as_ref(), is_ap, &expected);
    let counted: Vec<&wifi::Finding> = findings
        .iter()
        .filter(|f| f.counts && f.verdict != wifi::Verdict::Pass)
        .collect();
    let summary = match counted.first() {
        None => format!(
            "{} networks seen; the facility's are WPA2 or better",
            findings.len()
        ),
        Some(f) => f.reason.clone(),
    };
    let mut remediation: Vec<String> = Vec::new();
    for f in &counted {
        if !remediation.contains(&f.remediation) {
            remediation.push(f.remediation.clone());
        }
    }
    let details = findings
        .iter()
        .map(|f| {
            format!(
                "{:?}{} {}",
                f.verdict,
                if f.counts {
                    ""
                } else {
                    " (neighbour, not counted)"
                },
                f.reason
            )
        })
        .collect();
    Outcome::new(from_verdict(verdict), summary, remediation.join(" ")).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wifi_through_the_probe_folder() {
        let dir = tempfile::tempdir().unwrap();
        let wifi_fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wifi");
        std::fs::copy(
            wifi_fx.join("iw-dev-managed.txt"),
            dir.path().join("iw-dev.txt"),
        )
        .unwrap();
        // The scan without its last network (an open twin of the facility's network).
        let scan = std::fs::read_to_string(wifi_fx.join("iw-scan-mixed.txt")).unwrap();
        std::fs::write(
            dir.path().join("iw-scan.txt"),
            &scan[..scan.find("BSS 02:11:22:33:44:0b").unwrap()],
        )
        .unwrap();
        std::fs::write(
            dir.path().join("iw-link.txt"),
            "Connected to 02:11:22:33:44:01 (on wlan0)\n\tSSID: tsunagi-clinic\n",
        )
        .unwrap();
        let ctx = |ssids: Vec<String>| Context {
            settings: crate::config::PolicySettings {
                ssids,
                ..Default::default()
            },
            state_dir: dir.path().into(),
            identity_dir: dir.path().into(),
            own_ports: vec![],
            probe: crate::policy::Probe {
                dir: Some(dir.path().into()),
            },
        };
        let o = wifi(&ctx(vec![]));
        assert_eq!(
            o.status,
            Status::Pass,
            "the network in use is WPA2-CCMP: {o:?}"
        );
        assert!(
            o.details
                .iter()
                .any(|d| d.contains("cafe-free") && d.contains("not counted")),
            "{:?}",
            o.details
        );
        std::fs::write(dir.path().join("iw-scan.txt"), &scan).unwrap();
        let o = wifi(&ctx(vec!["tsunagi-clinic".into()]));
        assert_eq!(
            o.status,
            Status::Fail,
            "an open network named like the facility's is an evil twin: {o:?}"
        );
        assert!(o.remediation.contains("なりすまし"), "{}", o.remediation);
        std::fs::copy(wifi_fx.join("iw-dev-ap.txt"), dir.path().join("iw-dev.txt")).unwrap();
        let o = wifi(&ctx(vec!["tsunagi-clinic".into()]));
        assert_eq!(
            o.status,
            Status::Fail,
            "the appliance in AP mode fails: {o:?}"
        );
        std::fs::remove_file(dir.path().join("iw-dev.txt")).unwrap();
        std::fs::remove_file(dir.path().join("iw-scan.txt")).unwrap();
        assert_eq!(
            wifi(&ctx(vec![])).status,
            Status::Error,
            "nothing readable with a probe folder is an error, not a pass"
        );
    }
}
