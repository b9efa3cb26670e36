//! What the appliance exposes on the LAN: an nftables input policy of drop, and no unexpected
//! listening sockets.

use std::net::IpAddr;

use crate::policy::{Context, Outcome, Status};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::system::fixture;

    #[test]
    fn the_firewall_must_drop_input_by_default() {
        let (drop, chains) = parse_nft(&fixture("nft-drop.txt"));
        assert!(drop, "{chains:?}");
        let (drop, chains) = parse_nft(&fixture("nft-accept.txt"));
        assert!(!drop);
        assert_eq!(chains, vec!["inet filter/input policy accept".to_string()]);
        assert_eq!(parse_nft(""), (false, vec![]));
    }
}
