//! Terminals' screen lock (field notes, section 3; K-MIX R's rule: a password screen lock or an
//! automatic logoff after at most 5 minutes idle).
//!
//! The reporters (`edge/reporters/screenlock.ps1` for Windows, `screenlock.sh` for Linux
//! desktops) send the raw settings they read; the appliance classifies them here, so every rule
//! is tested on captured outputs and the reporters stay small:
//!
//! - Windows: `reg query` of `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System`
//!   (`InactivityTimeoutSecs`, REG_DWORD, 0 = off) and of the per-user screensaver policy
//!   `HKCU\Software\Policies\Microsoft\Windows\Control Panel\Desktop` (`ScreenSaveActive`,
//!   `ScreenSaverIsSecure`, `ScreenSaveTimeOut` in seconds).
//! - GNOME: `gsettings get` of `org.gnome.desktop.session idle-delay` (0 = never),
//!   `org.gnome.desktop.screensaver lock-enabled` and `lock-delay`.

use serde::{Deserialize, Serialize};

pub use crate::posture::Report;

use super::{Outcome, Status};

/// What a reporter posts.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Posted {
    pub os: String,
    #[serde(default)]
    pub host: String,
    /// Windows: the two `reg query` outputs (a key that does not exist is sent empty).
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub user: String,
    /// GNOME: the three `gsettings get` outputs.
    #[serde(default)]
    pub idle_delay: String,
    #[serde(default)]
    pub lock_enabled: String,
    #[serde(default)]
    pub lock_delay: String,
}

/// A value from `reg query` output: `    Name    REG_TYPE    data`.
pub fn reg_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[0].eq_ignore_ascii_case(name) && f[1].starts_with("REG_") {
            let d = f[2];
            match d.strip_prefix("0x").or_else(|| d.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => d.trim().parse().ok(),
            }
        } else {
            None
        }
    })
}

/// A `gsettings get` number (`uint32 300` or `300`).
pub fn gsettings_number(text: &str) -> Option<u64> {
    text.split_whitespace().last()?.parse().ok()
}

fn judge(lock: Option<u64>, max: u64, how: String, fix: &str) -> Report {
    match lock {
        None => Report {
            outcome: Outcome::new(Status::Fail, format!("no screen lock: {how}"), fix),
            lock_secs: None,
        },
        Some(s) if s > max => Report {
            outcome: Outcome::new(
                Status::Fail,
                format!("locks after {s} s idle, more than {max} s ({how})"),
                fix,
            ),
            lock_secs: Some(s),
        },
        Some(s) => Report {
            outcome: Outcome::pass(format!("locks after {s} s idle ({how})")),
            lock_secs: Some(s),
        },
    }
}

pub fn windows(machine: &str, user: &str, max: u64) -> Report {
    let inactivity = reg_value(machine, "InactivityTimeoutSecs").filter(|&s| s > 0);
    let active = reg_value(user, "ScreenSaveActive") == Some(1);
    let secure = reg_value(user, "ScreenSaverIsSecure") == Some(1);
    let saver = reg_value(user, "ScreenSaveTimeOut").filter(|&s| s > 0 && active && secure);
    let lock = [inactivity, saver].into_iter().flatten().min();
    let how = format!(
        "InactivityTimeoutSecs {}, screensaver {}",
        inactivity
            .map(|s| s.to_string())
            .unwrap_or_else(|| "off".into()),
        match (active, secure, reg_value(user, "ScreenSaveTimeOut")) {
            (true, true, Some(t)) => format!("{t} s with password"),
            (true, false, _) => "without password".into(),
            _ => "off".into(),
        }
    );
    let fix = format!(
        "この Windows 端末は {max} 秒以内に画面がロックされません。グループポリシー「対話型ログオン: コンピューターの非アクティブ状態の制限」を {max} 秒以下（0 以外）にするか、パスワード付きスクリーンセーバーを {max} 秒以下に設定してください。"
    );
    judge(lock, max, how, &fix)
}

pub fn gnome(idle_delay: &str, lock_enabled: &str, lock_delay: &str, max: u64) -> Report {
    let idle = gsettings_number(idle_delay);
    let enabled = lock_enabled.trim() == "true";
    let delay = gsettings_number(lock_delay).unwrap_or(0);
    let lock = match (idle, enabled) {
        (Some(i), true) if i > 0 => Some(i + delay),
        _ => None,
    };
    let how = format!(
        "idle-delay {}, lock-enabled {}, lock-delay {delay}",
        idle.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
        enabled
    );
    let fix = format!(
        "この端末は {max} 秒以内に画面がロックされません。設定 → プライバシー → 画面ロック で「自動画面ロック」をオンにし、「ブランクスクリーンの遅延」と「自動画面ロックの遅延」の合計を {max} 秒以下にしてください。"
    );
    judge(lock, max, how, &fix)
}

/// Classifies a posted report; an unknown operating system or unreadable values are an error.
pub fn classify(p: &Posted, max: u64) -> Report {
    match p.os.as_str() {
        "windows" => windows(&p.machine, &p.user, max),
        "linux" if !p.idle_delay.trim().is_empty() => gnome(&p.idle_delay, &p.lock_enabled, &p.lock_delay, max),
        "linux" => Report { outcome: Outcome::error("the reporter could not read GNOME's settings (no gsettings or no desktop session)", "画面ロックの設定を読めませんでした。デスクトップにログインした利用者の権限で報告スクリプトを実行してください。"), lock_secs: None },
        o => Report { outcome: Outcome::error(format!("unknown operating system {o:?} in a screen-lock report"), "報告スクリプトが古いか壊れています。docs/policy.md の最新のものに入れ替えてください。"), lock_secs: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/screenlock")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn windows_registry_outputs_are_classified() {
        let m300 = fixture("reg-machine-300.txt");
        let m0 = fixture("reg-machine-0.txt");
        let u_secure_600 = fixture("reg-user-saver-600-secure.txt");
        let u_secure_240 = fixture("reg-user-saver-240-secure.txt");
        let u_insecure = fixture("reg-user-saver-insecure.txt");
        assert_eq!(reg_value(&m300, "InactivityTimeoutSecs"), Some(300));
        let r = windows(&m300, "", 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Pass, Some(300)),
            "{r:?}"
        );
        let r = windows(&m0, &u_secure_600, 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Fail, Some(600)),
            "0 is off, and 600 s is too long: {r:?}"
        );
        let r = windows(&m0, &u_secure_240, 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Pass, Some(240)),
            "{r:?}"
        );
        let r = windows(&m0, &u_insecure, 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Fail, None),
            "a screensaver without a password is no lock: {r:?}"
        );
        assert!(r.outcome.remediation.contains("300 秒以下"));
        let r = windows("", "", 300);
        assert_eq!(r.outcome.status, Status::Fail, "no policy at all: {r:?}");
        let r = windows(&fixture("reg-machine-900.txt"), &u_secure_240, 300);
        assert_eq!(
            r.lock_secs,
            Some(240),
            "the earlier of the two locks counts"
        );
        assert_eq!(
            windows(&fixture("reg-machine-900.txt"), "", 900)
                .outcome
                .status,
            Status::Pass,
            "the limit is configurable (CIS uses 900 s)"
        );
    }

    #[test]
    fn gnome_gsettings_outputs_are_classified() {
        let r = gnome("uint32 300", "true", "uint32 0", 300);
        assert_eq!((r.outcome.status, r.lock_secs), (Status::Pass, Some(300)));
        let r = gnome("uint32 240", "true", "uint32 120", 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Fail, Some(360)),
            "blanking plus the lock delay: {r:?}"
        );
        let r = gnome("uint32 0", "true", "uint32 0", 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Fail, None),
            "idle-delay 0 never blanks"
        );
        let r = gnome("uint32 120", "false", "uint32 0", 300);
        assert_eq!(
            r.outcome.status,
            Status::Fail,
            "blanking without a lock is no lock"
        );
        let p: Posted = serde_json::from_str(&fixture("gsettings-report.json")).unwrap();
        let r = classify(&p, 300);
        assert_eq!(
            (r.outcome.status, r.lock_secs),
            (Status::Pass, Some(180)),
            "{r:?}"
        );
        assert_eq!(
            classify(
                &Posted {
                    os: "linux".into(),
                    ..Default::default()
                },
                300
            )
            .outcome
            .status,
            Status::Error
        );
        assert_eq!(
            classify(
                &Posted {
                    os: "beos".into(),
                    ..Default::default()
                },
                300
            )
            .outcome
            .status,
            Status::Error
        );
    }
}
