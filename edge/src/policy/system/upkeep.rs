//! The checks that the appliance is kept current: time synchronised, security updates recent,
//! and its certificate far from expiry.

use crate::policy::{Context, Outcome, Status};

const DAY: i64 = 86_400;

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
    use crate::policy::system::fixture;
    use crate::policy::system::network::{assess_listeners, parse_ss};
    use crate::policy::system::wireless::parse_iw_link;

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
}
