//! The appliance's own checks (field notes, section 3): Wi-Fi, an encrypted data partition, an
//! nftables input policy of drop, time synchronised, security updates recent, no unexpected
//! listening sockets, and its certificate far from expiry.
//!
//! Each check is a parser of a command's text output (tested on captured outputs) and a thin
//! function that runs the command through [`Probe`].

use std::net::IpAddr;

use super::wifi::{self, Network};
use super::{Context, Outcome, Status};

const DAY: i64 = 86_400;

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

/// A mounted filesystem from `lsblk -J`, and whether it sits on dm-crypt.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub target: String,
    pub device: String,
    pub encrypted: bool,
    pub read_only: bool,
}

/// Every mount point in `lsblk -J -o NAME,TYPE,RO,MOUNTPOINTS` output (also `MOUNTPOINT`, from
/// older util-linux), with whether a `crypt` device lies on its path.
pub fn parse_lsblk(json: &str) -> Result<Vec<Mount>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("lsblk output is not JSON: {e}"))?;
    fn walk(node: &serde_json::Value, crypt: bool, out: &mut Vec<Mount>) {
        let ty = node.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let crypt = crypt || ty == "crypt";
        let ro = match node.get("ro") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "1",
            Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
            _ => false,
        };
        let name = node
            .get("name")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let mut points: Vec<String> = Vec::new();
        if let Some(a) = node.get("mountpoints").and_then(|m| m.as_array()) {
            points.extend(a.iter().filter_map(|p| p.as_str().map(String::from)));
        }
        if let Some(p) = node.get("mountpoint").and_then(|m| m.as_str()) {
            points.push(p.to_string());
        }
        for p in points {
            out.push(Mount {
                target: p,
                device: name.clone(),
                encrypted: crypt,
                read_only: ro,
            });
        }
        if let Some(children) = node.get("children").and_then(|c| c.as_array()) {
            for c in children {
                walk(c, crypt, out);
            }
        }
    }
    let mut out = Vec::new();
    for d in v
        .get("blockdevices")
        .and_then(|b| b.as_array())
        .ok_or("lsblk output has no blockdevices")?
    {
        walk(d, false, &mut out);
    }
    Ok(out)
}

/// The mounts that must be encrypted: writable ones other than /boot and the EFI partition
/// (swap included: it holds memory pages).
pub fn must_be_encrypted(m: &Mount) -> bool {
    let boot = |dir: &str| m.target == dir || m.target.starts_with(&format!("{dir}/"));
    !m.read_only && !boot("/boot") && !boot("/efi")
}

/// The decision for the data partition, from the mounts and the mount point holding the state
/// folder (`findmnt -n -o TARGET -T <state_dir>`).
pub fn assess_disks(mounts: &[Mount], state_target: &str) -> Outcome {
    let plain: Vec<&Mount> = mounts
        .iter()
        .filter(|m| must_be_encrypted(m) && !m.encrypted)
        .collect();
    let state = mounts.iter().find(|m| m.target == state_target);
    let remediation = "データ領域が暗号化されていません。このアプライアンスを使い続けず、ネットワーク事務局に交換を依頼してください（盗難時に患者情報が読まれます）。";
    match state {
        None => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is on {state_target}, which is not an encrypted block device"
            ),
            remediation,
        ),
        Some(m) if !m.encrypted => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is on {} ({}), not encrypted",
                m.target, m.device
            ),
            remediation,
        ),
        Some(m) if !plain.is_empty() => Outcome::new(
            Status::Fail,
            format!(
                "the state folder is encrypted ({}), but {} is not",
                m.device,
                plain
                    .iter()
                    .map(|p| format!("{} ({})", p.target, p.device))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            remediation,
        ),
        Some(m) => Outcome::pass(format!(
            "the state folder and every writable mount are on dm-crypt ({} on {})",
            m.target, m.device
        )),
    }
    .with_details(
        mounts
            .iter()
            .map(|m| {
                format!(
                    "{} {} {}{}",
                    m.target,
                    m.device,
                    if m.encrypted { "encrypted" } else { "plain" },
                    if m.read_only { " read-only" } else { "" }
                )
            })
            .collect(),
    )
}

pub fn disk_encryption(ctx: &Context) -> Outcome {
    let lsblk = match ctx
        .probe
        .output("lsblk", &["lsblk", "-J", "-o", "NAME,TYPE,RO,MOUNTPOINTS"])
        .and_then(|t| parse_lsblk(&t))
    {
        Ok(m) => m,
        Err(e) => {
            return Outcome::error(
                format!("cannot list block devices: {e}"),
                "ディスクの状態を読めません。ネットワーク事務局に連絡してください。",
            )
        }
    };
    let dir = ctx.state_dir.display().to_string();
    let target = match ctx.probe.output(
        "findmnt-state",
        &["findmnt", "-n", "-o", "TARGET", "-T", &dir],
    ) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            return Outcome::error(
                format!("cannot find the mount of {dir}: {e}"),
                "ディスクの状態を読めません。ネットワーク事務局に連絡してください。",
            )
        }
    };
    assess_disks(&lsblk, &target)
}

/// Whether `nft list ruleset` has a base chain on the input hook whose policy is drop, and the
/// input chains it found (`table/chain policy`).
pub fn parse_nft(text: &str) -> (bool, Vec<String>) {
    let mut table = String::new();
    let mut chain = String::new();
    let mut found = Vec::new();
    let mut drop = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = t.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if t.starts_with("type filter hook input") {
            let policy = t
                .split("policy")
                .nth(1)
                .map(|p| p.trim().trim_end_matches(';').trim().to_string())
                .unwrap_or_else(|| "accept".into());
            drop |= policy == "drop";
            found.push(format!("{table}/{chain} policy {policy}"));
        }
    }
    (drop, found)
}

pub fn firewall(ctx: &Context) -> Outcome {
    let text = match ctx.probe.output("nft-ruleset", &["nft", "list", "ruleset"]) {
        Ok(t) => t,
        Err(e) => return Outcome::error(format!("cannot read the nftables ruleset: {e}"), "ファイアウォールの状態を読めません（権限または nftables がありません）。ネットワーク事務局に連絡してください。"),
    };
    let (drop, chains) = parse_nft(&text);
    let remediation = "アプライアンスのファイアウォール（受信を既定で拒否）が読み込まれていません。再起動しても直らなければ、ネットワーク事務局に連絡してください。";
    if drop {
        Outcome::pass(format!("input policy drop ({})", chains.join(", "))).with_details(chains)
    } else if chains.is_empty() {
        Outcome::new(
            Status::Fail,
            "no nftables chain on the input hook: every connection is accepted",
            remediation,
        )
    } else {
        Outcome::new(
            Status::Fail,
            format!("no input chain drops by default ({})", chains.join(", ")),
            remediation,
        )
        .with_details(chains)
    }
}

/// From `timedatectl show -p NTP -p NTPSynchronized`: (NTP on, synchronised).
pub fn parse_timedatectl(text: &str) -> (Option<bool>, Option<bool>) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim() == "yes")
    };
    (get("NTP"), get("NTPSynchronized"))
}

pub fn time_sync(ctx: &Context) -> Outcome {
    let text = match ctx.probe.output(
        "timedatectl",
        &["timedatectl", "show", "-p", "NTP", "-p", "NTPSynchronized"],
    ) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::error(
                format!("cannot ask systemd about time synchronisation: {e}"),
                "時刻同期の状態を読めません。ネットワーク事務局に連絡してください。",
            )
        }
    };
    match parse_timedatectl(&text) {
        (_, Some(true)) => Outcome::pass("the clock is synchronised (NTP)"),
        (Some(false), _) => Outcome::new(Status::Fail, "time synchronisation is turned off", "時刻同期が無効です。時刻がずれると証明書と監査記録の時刻が信用できません。ネットワーク事務局に連絡してください。"),
        (_, Some(false)) => Outcome::new(Status::Fail, "the clock is not synchronised", "時刻が同期していません。NTP (UDP 123) への通信がファイアウォールで止められていないか確認してください。"),
        _ => Outcome::error("timedatectl did not say whether the clock is synchronised", "時刻同期の状態を読めません。ネットワーク事務局に連絡してください。"),
    }
}

/// The age of the newest update stamp, judged against the configured maximum.
pub fn assess_updates(newest: Option<(String, i64)>, now: i64, max_age: i64) -> Outcome {
    match newest {
        None => Outcome::error("no update stamp found (none of policy.update_stamps exists)", "更新の記録が見つかりません。自動更新が動いているかネットワーク事務局に確認してください。"),
        Some((path, at)) if now - at > max_age => Outcome::new(
            Status::Fail,
            format!("the last update was {} days ago ({path}), more than {} days", (now - at) / DAY, max_age / DAY),
            "セキュリティ更新が適用されていません。アプライアンスがインターネット（更新サーバ）に届くか確認し、再起動してください。直らなければネットワーク事務局に連絡してください。",
        ),
        Some((path, at)) => Outcome::pass(format!("updated {} days ago ({path})", (now - at) / DAY)),
    }
}

pub fn updates(ctx: &Context) -> Outcome {
    let newest = ctx
        .settings
        .update_stamps
        .iter()
        .filter_map(|p| {
            let m = std::fs::metadata(p).ok()?.modified().ok()?;
            Some((
                p.display().to_string(),
                m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64,
            ))
        })
        .max_by_key(|(_, t)| *t);
    assess_updates(
        newest,
        shared::time::now(),
        ctx.settings.updates_max_age.as_secs() as i64,
    )
}

/// A listening socket from `ss -H -ltnu` (protocol, address, port).
#[derive(Debug, PartialEq, Eq)]
pub struct Listener {
    pub proto: String,
    pub addr: String,
    pub port: u16,
}

pub fn parse_ss(text: &str) -> Vec<Listener> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Netid State Recv-Q Send-Q Local Peer [Process]
            let (proto, local) = if f.len() >= 5 && (f[0] == "tcp" || f[0] == "udp") {
                (f[0], f[4])
            } else {
                return None;
            };
            let (addr, port) = local.rsplit_once(':')?;
            Some(Listener {
                proto: proto.into(),
                addr: addr
                    .trim_matches(['[', ']'])
                    .split('%')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

fn loopback(addr: &str) -> bool {
    let a = addr.trim_start_matches("::ffff:");
    a.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn assess_listeners(ls: &[Listener], allowed: &[u16]) -> Outcome {
    let unexpected: Vec<&Listener> = ls
        .iter()
        .filter(|l| !loopback(&l.addr))
        .filter(|l| !allowed.contains(&l.port))
        .filter(|l| !(l.proto == "udp" && (l.port == 68 || l.port == 546)))
        .collect();
    let details = ls
        .iter()
        .map(|l| {
            format!(
                "{} {}:{}{}",
                l.proto,
                l.addr,
                l.port,
                if unexpected.contains(&l) {
                    " UNEXPECTED"
                } else {
                    ""
                }
            )
        })
        .collect();
    if unexpected.is_empty() {
        Outcome::pass(format!(
            "{} listening sockets, none unexpected on the LAN",
            ls.len()
        ))
        .with_details(details)
    } else {
        Outcome::new(
            Status::Fail,
            format!("unexpected listening sockets: {}", unexpected.iter().map(|l| format!("{} {}:{}", l.proto, l.addr, l.port)).collect::<Vec<_>>().join(", ")),
            "アプライアンスで想定外のポートが開いています。不正なソフトウェアの可能性があります。ネットワーク事務局に連絡してください。",
        )
        .with_details(details)
    }
}

pub fn listening(ctx: &Context) -> Outcome {
    match ctx.probe.output("ss-listening", &["ss", "-H", "-ltnu"]) {
        Ok(t) => {
            let mut allowed = ctx.own_ports.clone();
            allowed.extend(&ctx.settings.allowed_ports);
            assess_listeners(&parse_ss(&t), &allowed)
        }
        Err(e) => Outcome::error(
            format!("cannot list listening sockets: {e}"),
            "開いているポートを確認できません。ネットワーク事務局に連絡してください。",
        ),
    }
}

/// The client certificate's remaining life: more than 30 days passes; renewal runs at two thirds
/// of its life, so under 30 days means renewal is failing (warn), under 7 days fails.
pub fn assess_certificate(not_after: i64, now: i64) -> Outcome {
    let left = not_after - now;
    let when = shared::time::rfc3339(not_after);
    if left <= 0 {
        Outcome::new(Status::Fail, format!("the client certificate expired at {when}"), "証明書の期限が切れています。ハブと同期できません。ネットワーク事務局に再登録を依頼してください。")
    } else if left < 7 * DAY {
        Outcome::new(Status::Fail, format!("the client certificate expires in {} days ({when})", left / DAY), "証明書の期限が迫っていて、更新が失敗しています。ハブへの接続を確認し、ネットワーク事務局に連絡してください。")
    } else if left < 30 * DAY {
        Outcome::new(
            Status::Warn,
            format!(
                "the client certificate expires in {} days ({when}); renewal is overdue",
                left / DAY
            ),
            "証明書の更新が遅れています。ハブへの接続を確認してください。",
        )
    } else {
        Outcome::pass(format!(
            "the client certificate is valid for {} more days",
            left / DAY
        ))
    }
}

pub fn certificate(ctx: &Context) -> Outcome {
    match crate::identity::Identity::load(&ctx.identity_dir) {
        Ok(id) => assess_certificate(id.cert.not_after, shared::time::now()),
        Err(e) => Outcome::error(format!("{e:#}"), "アプライアンスが登録されていません。ネットワーク事務局から登録トークンを受け取り、登録してください。"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/system")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn disks_on_luks_pass_and_a_plain_data_partition_fails() {
        let m = parse_lsblk(&fixture("lsblk-luks.json")).unwrap();
        assert!(m.iter().any(|x| x.target == "/var" && x.encrypted));
        assert!(
            m.iter().any(|x| x.target == "/usr" && x.read_only),
            "dm-verity /usr is read-only, so it need not be encrypted"
        );
        assert_eq!(assess_disks(&m, "/var").status, Status::Pass);
        let m = parse_lsblk(&fixture("lsblk-plain.json")).unwrap();
        let o = assess_disks(&m, "/");
        assert_eq!(o.status, Status::Fail, "{o:?}");
        assert!(o.summary.contains("not encrypted"));
        assert!(!o.remediation.is_empty());
        let m = parse_lsblk(&fixture("lsblk-swap-plain.json")).unwrap();
        let o = assess_disks(&m, "/");
        assert_eq!(o.status, Status::Fail, "plain swap leaks memory: {o:?}");
        assert!(o.summary.contains("[SWAP]"));
        assert_eq!(
            assess_disks(&m, "/overlay").status,
            Status::Fail,
            "a folder not on a block device is not encrypted"
        );
    }

    #[test]
    fn the_firewall_must_drop_input_by_default() {
        let (drop, chains) = parse_nft(&fixture("nft-drop.txt"));
        assert!(drop, "{chains:?}");
        let (drop, chains) = parse_nft(&fixture("nft-accept.txt"));
        assert!(!drop);
        assert_eq!(chains, vec!["inet filter/input policy accept".to_string()]);
        assert_eq!(parse_nft(""), (false, vec![]));
    }

    #[test]
    fn time_updates_sockets_and_certificates() {
        assert_eq!(
            parse_timedatectl("NTP=yes\nNTPSynchronized=yes\n"),
            (Some(true), Some(true))
        );
        assert_eq!(
            parse_timedatectl("NTP=no\nNTPSynchronized=no\n"),
            (Some(false), Some(false))
        );
        assert_eq!(
            assess_updates(Some(("s".into(), 0)), 15 * DAY, 14 * DAY).status,
            Status::Fail
        );
        assert_eq!(
            assess_updates(Some(("s".into(), 2 * DAY)), 15 * DAY, 14 * DAY).status,
            Status::Pass
        );
        assert_eq!(assess_updates(None, 0, 1).status, Status::Error);
        let ls = parse_ss(&fixture("ss-listening.txt"));
        assert_eq!(ls.len(), 7);
        let o = assess_listeners(&ls, &[443, 80]);
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.summary.contains("tcp 0.0.0.0:22") && o.summary.contains(":5353"),
            "{}",
            o.summary
        );
        assert!(
            !o.summary.contains("631") && !o.summary.contains(":68"),
            "loopback and DHCP are fine: {}",
            o.summary
        );
        assert_eq!(
            assess_listeners(&ls, &[443, 80, 22, 5353]).status,
            Status::Pass
        );
        assert_eq!(assess_certificate(100 * DAY, 0).status, Status::Pass);
        assert_eq!(assess_certificate(20 * DAY, 0).status, Status::Warn);
        assert_eq!(assess_certificate(3 * DAY, 0).status, Status::Fail);
        assert_eq!(assess_certificate(0, 1).status, Status::Fail);
        assert_eq!(
            parse_iw_link(
                "Connected to 02:00:00:00:01:00 (on wlan0)\n\tSSID: tsunagi-clinic\n\tfreq: 2412\n"
            ),
            Some(("tsunagi-clinic".into(), "02:00:00:00:01:00".into()))
        );
        assert_eq!(parse_iw_link("Not connected.\n"), None);
    }

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
            probe: super::super::Probe {
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
