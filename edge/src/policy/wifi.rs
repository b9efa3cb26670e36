//! The Wi-Fi check: classifies every network the appliance can see and the one it uses, from the
//! output of whichever tools the box has (`iw dev <if> scan`, `iw dev`, `wpa_cli status`,
//! `nmcli -t -f IN-USE,SSID,SECURITY dev wifi`), by the rules of the field notes (section 3):
//!
//! - FAIL: open (without OWE), WEP, WPA1 only, TKIP as a pairwise cipher, the appliance itself in
//!   access-point mode, a facility SSID seen open or weaker than configured (an evil twin).
//! - WARN: TKIP as the group cipher, WPA2/WPA3 transition mode. (The MHLW guideline still allows
//!   WPA2-TKIP: it is reported, never passed in silence.)
//! - PASS: WPA2-CCMP with PSK or 802.1X, WPA3-SAE, OWE.
//!
//! The facility's verdict comes from its own networks (the one in use and the configured SSIDs)
//! and the appliance's own mode; a neighbour's open café network is listed, not held against it.
//! Parsing is text only, so every rule is tested on captured outputs.

use serde::Serialize;

/// The security levels are settings vocabulary (`policy.wifi_floor`), so they live in `config`.
pub use crate::config::Security;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One network as seen in a scan (or as `nmcli` lists it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub ssid: String,
    pub bssid: String,
    pub in_use: bool,
    pub security: Security,
    /// TKIP as the group cipher.
    pub tkip_group: bool,
    /// Both PSK and SAE offered (WPA2/WPA3 transition mode).
    pub transition: bool,
}

/// A finding: what, how bad, why, and what a clinic can do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub ssid: String,
    pub verdict: Verdict,
    /// Whether it counts for the facility (its own networks and the appliance's mode).
    pub counts: bool,
    pub reason: String,
    pub remediation: String,
}

fn cipher_list(line: &str) -> Vec<String> {
    line.split(':')
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect()
}

/// Parses `iw dev <if> scan` output.
pub fn parse_iw_scan(text: &str) -> Vec<Network> {
    struct Acc {
        bssid: String,
        in_use: bool,
        ssid: String,
        privacy: bool,
        rsn: Option<(Vec<String>, Vec<String>, Vec<String>)>,
        wpa: bool,
    }
    fn finish(a: Acc) -> Network {
        let (security, tkip_group, transition) = match &a.rsn {
            Some((group, pairwise, auth)) => {
                let sae = auth.iter().any(|s| s.contains("SAE"));
                let psk = auth
                    .iter()
                    .any(|s| s == "PSK" || s == "FT/PSK" || s.contains("PSK/SHA"));
                let owe = auth.iter().any(|s| s == "OWE");
                let sec = if pairwise.iter().any(|c| c == "TKIP") {
                    Security::Wpa2Tkip
                } else if owe {
                    Security::Owe
                } else if sae && !psk {
                    Security::Wpa3
                } else {
                    Security::Wpa2
                };
                (sec, group.iter().any(|c| c == "TKIP"), sae && psk)
            }
            None if a.wpa => (Security::Wpa1, false, false),
            None if a.privacy => (Security::Wep, false, false),
            None => (Security::Open, false, false),
        };
        Network {
            ssid: a.ssid,
            bssid: a.bssid,
            in_use: a.in_use,
            security,
            tkip_group,
            transition,
        }
    }
    let mut out = Vec::new();
    let mut cur: Option<Acc> = None;
    // Which element the cipher lines that follow belong to.
    let mut in_rsn = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("BSS ") {
            if let Some(a) = cur.take() {
                out.push(finish(a));
            }
            let bssid = rest.split(['(', ' ']).next().unwrap_or("").to_string();
            cur = Some(Acc {
                bssid,
                in_use: rest.contains("-- associated"),
                ssid: String::new(),
                privacy: false,
                rsn: None,
                wpa: false,
            });
            in_rsn = false;
            continue;
        }
        let Some(a) = cur.as_mut() else { continue };
        // A line at the element level other than RSN's own ends the RSN element.
        if !line.starts_with("\t\t") && !line.starts_with("\tRSN") {
            in_rsn = false;
        }
        let t = line.trim_start();
        if let Some(s) = t.strip_prefix("SSID:") {
            a.ssid = s.trim().to_string();
        } else if let Some(c) = t.strip_prefix("capability:") {
            a.privacy = c.split_whitespace().any(|w| w == "Privacy");
        } else if t.starts_with("RSN:") {
            a.rsn = Some((vec![], vec![], vec![]));
            in_rsn = true;
        } else if t.starts_with("WPA:") {
            a.wpa = true;
            in_rsn = false;
        }
        if in_rsn {
            let item = t.trim_start_matches(['*', ' ', '\t']);
            if let Some((g, p, au)) = a.rsn.as_mut() {
                if item.starts_with("Group cipher") {
                    *g = cipher_list(item);
                } else if item.starts_with("Pairwise ciphers") {
                    *p = cipher_list(item);
                } else if item.starts_with("Authentication suites") {
                    *au = cipher_list(item);
                }
            }
        }
    }
    if let Some(a) = cur.take() {
        out.push(finish(a));
    }
    out
}

/// Parses `nmcli -t -f IN-USE,SSID,SECURITY dev wifi` (ciphers are not shown there, so TKIP
/// cannot be told apart from CCMP: reported as WPA2).
pub fn parse_nmcli(text: &str) -> Vec<Network> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (inuse, ssid, sec) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            let words: Vec<&str> = sec.split_whitespace().collect();
            let has = |w: &str| words.contains(&w);
            let security = if has("OWE") {
                Security::Owe
            } else if has("WPA3") && !has("WPA2") {
                Security::Wpa3
            } else if has("WPA2") || has("WPA3") {
                Security::Wpa2
            } else if has("WPA1") {
                Security::Wpa1
            } else if has("WEP") {
                Security::Wep
            } else {
                Security::Open
            };
            Some(Network {
                ssid: ssid.to_string(),
                bssid: String::new(),
                in_use: inuse.trim() == "*",
                security,
                tkip_group: false,
                transition: has("WPA2") && has("WPA3"),
            })
        })
        .collect()
}

/// The association in use from `wpa_cli status`, and whether the interface is an access point.
pub fn parse_wpa_status(text: &str) -> (Option<Network>, bool) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
            .unwrap_or("")
    };
    let ap = get("mode").eq_ignore_ascii_case("AP");
    if get("wpa_state") != "COMPLETED" {
        return (None, ap);
    }
    let km = get("key_mgmt").to_ascii_uppercase();
    let pairwise = get("pairwise_cipher").to_ascii_uppercase();
    let security = if km == "NONE" {
        if pairwise.contains("WEP") {
            Security::Wep
        } else {
            Security::Open
        }
    } else if km.contains("OWE") {
        Security::Owe
    } else if pairwise.contains("TKIP") {
        Security::Wpa2Tkip
    } else if km.starts_with("WPA-") || km == "WPA-PSK" {
        Security::Wpa1
    } else if km.contains("SAE") && !km.contains("PSK") {
        Security::Wpa3
    } else {
        Security::Wpa2
    };
    let net = Network {
        ssid: get("ssid").to_string(),
        bssid: get("bssid").to_string(),
        in_use: true,
        security,
        tkip_group: get("group_cipher").eq_ignore_ascii_case("TKIP"),
        transition: km.contains("SAE") && km.contains("PSK"),
    };
    (Some(net), ap)
}

/// Whether `iw dev` shows an interface in access-point mode.
pub fn iw_dev_is_ap(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "type AP")
}

/// One network's own verdict and why.
pub fn classify(n: &Network) -> (Verdict, String, String) {
    let name = if n.ssid.is_empty() {
        "(hidden)".to_string()
    } else {
        n.ssid.clone()
    };
    match n.security {
        Security::Open => (Verdict::Fail, format!("{name}: open network (no encryption)"), "暗号化のない無線LANは使わないでください。WPA2 (AES/CCMP) 以上に設定してください。".into()),
        Security::Wep => (Verdict::Fail, format!("{name}: WEP"), "WEP は数分で解読されます。アクセスポイントを WPA2 (AES/CCMP) 以上に設定し直してください。".into()),
        Security::Wpa1 => (Verdict::Fail, format!("{name}: WPA1 only"), "WPA (第1世代) のみの設定です。WPA2 (AES/CCMP) 以上に変更してください。".into()),
        Security::Wpa2Tkip => (Verdict::Fail, format!("{name}: TKIP allowed as a pairwise cipher"), "暗号方式に TKIP が許可されています（厚労省ガイドラインでは許容ですが非推奨）。AES (CCMP) のみに設定してください。".into()),
        _ if n.tkip_group => (Verdict::Warn, format!("{name}: TKIP as the group cipher"), "グループ暗号が TKIP です。アクセスポイントを AES (CCMP) のみに設定してください。".into()),
        _ if n.transition => (Verdict::Warn, format!("{name}: WPA2/WPA3 transition mode"), "WPA2/WPA3 移行モードです。すべての端末が対応したら WPA3 のみにしてください。".into()),
        Security::Wpa2 => (Verdict::Pass, format!("{name}: WPA2-CCMP"), String::new()),
        Security::Wpa3 => (Verdict::Pass, format!("{name}: WPA3-SAE"), String::new()),
        Security::Owe => (Verdict::Pass, format!("{name}: OWE (enhanced open)"), String::new()),
    }
}

/// What the facility configured: its SSIDs and the weakest security they may have.
#[derive(Debug, Clone)]
pub struct Expected {
    pub ssids: Vec<String>,
    pub floor: Security,
}

/// All findings, and the facility's verdict (the worst of what counts).
pub fn assess(
    networks: &[Network],
    in_use: Option<&Network>,
    appliance_is_ap: bool,
    expected: &Expected,
) -> (Verdict, Vec<Finding>) {
    let mut out = Vec::new();
    if appliance_is_ap {
        out.push(Finding {
            ssid: String::new(),
            verdict: Verdict::Fail,
            counts: true,
            reason: "the appliance's own Wi-Fi interface is in access-point mode".into(),
            remediation: "アプライアンスや端末をアクセスポイントにしないでください。設定を確認し、ネットワーク事務局に連絡してください。".into(),
        });
    }
    let in_use_ssid = in_use
        .map(|n| n.ssid.clone())
        .or_else(|| networks.iter().find(|n| n.in_use).map(|n| n.ssid.clone()));
    let mut seen = Vec::new();
    for n in in_use.into_iter().chain(networks.iter()) {
        let key = (n.ssid.clone(), n.bssid.clone(), n.security);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let ours = expected.ssids.contains(&n.ssid);
        let (mut verdict, mut reason, mut remediation) = classify(n);
        if ours && n.security < expected.floor {
            verdict = Verdict::Fail;
            reason = format!("{reason}; the facility's network {} is configured for {:?} or better — possibly an impostor (evil twin)", n.ssid, expected.floor);
            remediation = format!("施設の無線LAN「{}」と同じ名前で、設定より弱いネットワークが見えています。なりすましの可能性があります。接続せず、ネットワーク事務局に連絡してください。", n.ssid);
        }
        let counts = ours
            || n.in_use
            || (in_use_ssid.as_deref() == Some(n.ssid.as_str()) && n.security < Security::Wpa2);
        out.push(Finding {
            ssid: n.ssid.clone(),
            verdict,
            counts,
            reason,
            remediation,
        });
    }
    let overall = out
        .iter()
        .filter(|f| f.counts)
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    (overall, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/wifi")
                .join(name),
        )
        .unwrap()
    }

    fn by_ssid<'a>(v: &'a [Network], ssid: &str) -> &'a Network {
        v.iter()
            .find(|n| n.ssid == ssid)
            .unwrap_or_else(|| panic!("{ssid} not parsed"))
    }

    #[test]
    fn every_security_type_in_a_scan_is_classified() {
        let nets = parse_iw_scan(&fixture("iw-scan-mixed.txt"));
        assert_eq!(nets.len(), 11);
        let v = |ssid: &str| classify(by_ssid(&nets, ssid)).0;
        assert_eq!(by_ssid(&nets, "tsunagi-clinic").security, Security::Wpa2);
        assert!(by_ssid(&nets, "tsunagi-clinic").in_use);
        assert_eq!(
            (
                v("tsunagi-clinic"),
                v("cafe-free"),
                v("old-printer"),
                v("legacy-wpa")
            ),
            (Verdict::Pass, Verdict::Fail, Verdict::Fail, Verdict::Fail)
        );
        assert_eq!(by_ssid(&nets, "old-printer").security, Security::Wep);
        assert_eq!(by_ssid(&nets, "legacy-wpa").security, Security::Wpa1);
        assert_eq!(
            (by_ssid(&nets, "ward-tkip").security, v("ward-tkip")),
            (Security::Wpa2Tkip, Verdict::Fail),
            "TKIP as a pairwise cipher fails"
        );
        assert_eq!(
            v("reception"),
            Verdict::Warn,
            "TKIP as the group cipher warns"
        );
        assert_eq!(
            v("staff-transition"),
            Verdict::Warn,
            "transition mode warns"
        );
        assert_eq!(
            (by_ssid(&nets, "staff-wpa3").security, v("staff-wpa3")),
            (Security::Wpa3, Verdict::Pass)
        );
        assert_eq!(v("hospital-eap"), Verdict::Pass, "WPA2 with 802.1X");
        assert_eq!(
            (by_ssid(&nets, "guest-owe").security, v("guest-owe")),
            (Security::Owe, Verdict::Pass)
        );
    }

    #[test]
    fn the_facility_fails_on_an_evil_twin_not_on_a_neighbours_cafe() {
        let nets = parse_iw_scan(&fixture("iw-scan-mixed.txt"));
        let expected = Expected {
            ssids: vec!["tsunagi-clinic".into()],
            floor: Security::Wpa2,
        };
        let (overall, findings) = assess(&nets, None, false, &expected);
        assert_eq!(
            overall,
            Verdict::Fail,
            "an open tsunagi-clinic is in the scan"
        );
        let twin = findings
            .iter()
            .find(|f| f.ssid == "tsunagi-clinic" && f.verdict == Verdict::Fail)
            .unwrap();
        assert!(twin.reason.contains("evil twin") && twin.remediation.contains("なりすまし"));
        assert!(
            findings
                .iter()
                .any(|f| f.ssid == "cafe-free" && f.verdict == Verdict::Fail && !f.counts),
            "listed, not counted"
        );
        // Without the twin, the neighbours' weak networks do not fail the facility.
        let clean: Vec<Network> = nets
            .iter()
            .filter(|n| !(n.ssid == "tsunagi-clinic" && n.security == Security::Open))
            .cloned()
            .collect();
        assert_eq!(assess(&clean, None, false, &expected).0, Verdict::Pass);
        // A floor of WPA3 makes the WPA2 facility network itself fail.
        assert_eq!(
            assess(
                &clean,
                None,
                false,
                &Expected {
                    ssids: vec!["tsunagi-clinic".into()],
                    floor: Security::Wpa3
                }
            )
            .0,
            Verdict::Fail
        );
    }

    #[test]
    fn the_association_in_use_and_access_point_mode() {
        let expected = Expected {
            ssids: vec![],
            floor: Security::Wpa2,
        };
        let (net, ap) = parse_wpa_status(&fixture("wpa-cli-status-wpa2.txt"));
        assert!(!ap);
        assert_eq!(net.as_ref().unwrap().security, Security::Wpa2);
        assert_eq!(assess(&[], net.as_ref(), false, &expected).0, Verdict::Pass);
        let (net, _) = parse_wpa_status(&fixture("wpa-cli-status-tkip.txt"));
        assert_eq!(net.as_ref().unwrap().security, Security::Wpa2Tkip);
        assert_eq!(assess(&[], net.as_ref(), false, &expected).0, Verdict::Fail);
        let (net, _) = parse_wpa_status(&fixture("wpa-cli-status-open.txt"));
        assert_eq!(assess(&[], net.as_ref(), false, &expected).0, Verdict::Fail);
        let (_, ap) = parse_wpa_status(&fixture("wpa-cli-status-ap.txt"));
        assert!(ap);
        assert!(iw_dev_is_ap(&fixture("iw-dev-ap.txt")));
        assert!(!iw_dev_is_ap(&fixture("iw-dev-managed.txt")));
        let (overall, findings) = assess(&[], None, true, &expected);
        assert_eq!(overall, Verdict::Fail);
        assert!(findings[0].reason.contains("access-point"));
    }

    #[test]
    fn nmcli_lists_the_same_networks_alike() {
        let nets = parse_nmcli(&fixture("nmcli-wifi.txt"));
        assert_eq!(nets.len(), 10);
        let s = |ssid: &str| nets.iter().find(|n| n.ssid == ssid).unwrap().security;
        assert_eq!(
            (
                s("cafe-free"),
                s("old-printer"),
                s("legacy-wpa"),
                s("staff-wpa3"),
                s("guest-owe")
            ),
            (
                Security::Open,
                Security::Wep,
                Security::Wpa1,
                Security::Wpa3,
                Security::Owe
            )
        );
        assert!(
            nets.iter()
                .find(|n| n.ssid == "staff-transition")
                .unwrap()
                .transition
        );
        assert!(nets
            .iter()
            .any(|n| n.ssid == "tsunagi-clinic" && n.in_use && n.security == Security::Wpa2));
        let expected = Expected {
            ssids: vec!["tsunagi-clinic".into()],
            floor: Security::Wpa2,
        };
        assert_eq!(
            assess(&nets, None, false, &expected).0,
            Verdict::Fail,
            "the open twin of the facility's SSID"
        );
    }
}
