//! Posture checks: the networks' security rules, checked by the appliance itself instead of a PDF
//! every clinic is trusted to follow (field notes, section 3).
//!
//! - Every check ([`CHECKS`]) runs on its own schedule and its result expires: a result older
//!   than its expiry counts as an error, never as the last good answer.
//! - A check's raw outcome ([`Status`]: pass, warn, fail, error) becomes a gated [`State`]:
//!   a failure is `in-grace` for `policy.grace`, then `non-compliant`; a check that cannot run is
//!   `error`. States merge by severity, the worst wins (compliant < in grace < non-compliant <
//!   error): a check that cannot run fails closed.
//! - Every failing check carries remediation text a clinic can act on, in Japanese.
//! - Every change of a check's state is written to `offline.db` (`posture_event`) before the new
//!   state is kept, and telemetry hands the events to the hub's fleet history.
//!
//! Terminals report their screen-lock settings through the proxy (`screenlock`); the proxy's
//! [`TerminalGate`] turns their reports into allow, warn or refuse.

mod gate;
pub mod screenlock;
pub mod system;
mod terminal;
pub mod wifi;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::posture::{
    CheckState, Event, LastReport, Outcome, Posture, State, Status, TerminalState,
};
pub use gate::TerminalGate;
pub use terminal::{AllowAll, Terminal, TerminalPolicy, Verdict};

use crate::config::PolicySettings;
use crate::local::Local;

/// Gates an outcome: a failure is in grace until `grace` after it first failed.
pub fn gate(
    check: &str,
    prev: Option<&CheckState>,
    outcome: Outcome,
    now: i64,
    expiry: Duration,
    grace: Duration,
) -> CheckState {
    let (state, failing_since) = match outcome.status {
        Status::Pass | Status::Warn => (State::Compliant, None),
        Status::Error => (State::Error, prev.and_then(|p| p.failing_since)),
        Status::Fail => {
            let since = prev.and_then(|p| p.failing_since).unwrap_or(now);
            (
                if now - since < grace.as_secs() as i64 {
                    State::InGrace
                } else {
                    State::NonCompliant
                },
                Some(since),
            )
        }
    };
    CheckState {
        check: check.to_string(),
        state,
        outcome,
        checked_at: now,
        expires_at: now + expiry.as_secs() as i64,
        failing_since,
    }
}

/// The state as of `now`: an expired result is an error, and a failure whose grace ran out since
/// it was checked is non-compliant.
pub fn as_of(s: &CheckState, now: i64, grace: Duration) -> CheckState {
    let mut s = s.clone();
    if now > s.expires_at {
        s.state = State::Error;
        s.outcome.summary = format!(
            "no result since {} (the check did not run in time): {}",
            shared::time::rfc3339(s.checked_at),
            s.outcome.summary
        );
        s.outcome.remediation = "アプライアンスの点検が時間内に実行されていません。電源と時刻を確認し、直らなければネットワーク事務局に連絡してください。".into();
    } else if s.state == State::InGrace
        && s.failing_since
            .is_some_and(|f| now - f >= grace.as_secs() as i64)
    {
        s.state = State::NonCompliant;
    }
    s
}

/// The worst state among `states`; compliant when there are none.
pub fn merge<'a>(states: impl IntoIterator<Item = &'a State>) -> State {
    states
        .into_iter()
        .copied()
        .max()
        .unwrap_or(State::Compliant)
}

/// Everything a check may look at: the settings, the appliance's folders, how to run commands.
pub struct Context {
    pub settings: PolicySettings,
    pub state_dir: PathBuf,
    pub identity_dir: PathBuf,
    /// Ports the appliance itself serves on the LAN (the proxy's two listeners).
    pub own_ports: Vec<u16>,
    pub probe: Probe,
}

/// Runs a command for a check, or reads what a helper recorded of it in `policy.probe_dir`
/// (a file named after the output, for example `nft-list-ruleset.txt`).
pub struct Probe {
    pub dir: Option<PathBuf>,
}

impl Probe {
    /// The command's standard output, or an error naming what failed.
    pub fn output(&self, name: &str, cmd: &[&str]) -> Result<String, String> {
        if let Some(d) = &self.dir {
            let p = d.join(format!("{name}.txt"));
            return std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
        }
        let out = std::process::Command::new("timeout")
            .arg("20")
            .args(cmd)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", cmd[0]))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code().unwrap_or(-1);
            let err: String = err
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(300)
                .collect();
            return Err(format!("`{}` exited with {code}: {err}", cmd.join(" ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// One check: its name, how often it runs (as a multiple of `policy.interval`), and the function.
pub struct Check {
    pub name: &'static str,
    pub every: u32,
    pub run: fn(&Context) -> Outcome,
}

/// The appliance's own checks, in the order they are shown.
pub const CHECKS: &[Check] = &[
    Check {
        name: "wifi",
        every: 1,
        run: system::wifi,
    },
    Check {
        name: "disk-encryption",
        every: 6,
        run: system::disk_encryption,
    },
    Check {
        name: "firewall",
        every: 1,
        run: system::firewall,
    },
    Check {
        name: "time-sync",
        every: 2,
        run: system::time_sync,
    },
    Check {
        name: "updates",
        every: 12,
        run: system::updates,
    },
    Check {
        name: "listening",
        every: 1,
        run: system::listening,
    },
    Check {
        name: "certificate",
        every: 12,
        run: system::certificate,
    },
];

/// A result expires after three of its runs were missed.
pub fn expiry_of(c: &Check, interval: Duration) -> Duration {
    interval * c.every * 3
}

/// A terminal's state from its last report, as of `now`.
pub fn terminal_state(
    name: &str,
    report: Option<&LastReport>,
    now: i64,
    s: &PolicySettings,
) -> TerminalState {
    match report {
        Some((at, status, summary, remediation, since)) if now - at <= s.report_expiry.as_secs() as i64 => {
            let state = match status {
                Status::Pass | Status::Warn => State::Compliant,
                Status::Error => State::Error,
                Status::Fail => {
                    if since.is_some_and(|f| now - f < s.grace.as_secs() as i64) {
                        State::InGrace
                    } else {
                        State::NonCompliant
                    }
                }
            };
            TerminalState { name: name.into(), state, known: true, summary: summary.clone(), remediation: remediation.clone(), reported_at: Some(*at), failing_since: *since }
        }
        other => TerminalState {
            name: name.into(),
            state: State::Error,
            known: false,
            summary: match other {
                Some((at, ..)) => format!("unknown: the last screen-lock report is from {}", shared::time::rfc3339(*at)),
                None => "unknown: no screen-lock report yet".into(),
            },
            remediation: "この端末の画面ロック設定が報告されていません。端末に画面ロック報告スクリプト (screenlock) を設定してください（docs/policy.md）。".into(),
            reported_at: other.map(|r| r.0),
            failing_since: None,
        },
    }
}

/// Runs the checks that are due (all of them when `all`), keeps and audits their states, and
/// returns the posture as of now with the events it wrote.
pub fn run_due(
    ctx: &Context,
    local: &Local,
    now: i64,
    all: bool,
) -> anyhow::Result<(Posture, Vec<Event>)> {
    let prev = local.check_states()?;
    let mut events = Vec::new();
    let mut checks = Vec::new();
    for c in CHECKS {
        let p = prev.get(c.name);
        // A check that could not run is tried again at the base interval (at most a minute),
        // not its own: an appliance enrolled a moment ago must not wait an hour to say so.
        let due = all
            || p.is_none_or(|p| {
                let age = now - p.checked_at;
                age >= (ctx.settings.interval * c.every).as_secs() as i64
                    || (p.state == State::Error
                        && age
                            >= ctx.settings.interval.min(Duration::from_secs(60)).as_secs() as i64)
            });
        let s = if due {
            let outcome = (c.run)(ctx);
            let s = gate(
                c.name,
                p,
                outcome,
                now,
                expiry_of(c, ctx.settings.interval),
                ctx.settings.grace,
            );
            let before = p.map(|p| as_of(p, now, ctx.settings.grace).state);
            if before != Some(s.state) {
                tracing::info!(check = c.name, from = before.map(State::code).unwrap_or("-"), to = s.state.code(), summary = %s.outcome.summary, "posture check changed state");
            }
            if let Some(ev) = local.keep_check(&s, before)? {
                events.push(ev);
            }
            s
        } else {
            p.cloned().expect("not due only when present")
        };
        checks.push(as_of(&s, now, ctx.settings.grace));
    }
    let posture = posture_of(checks, local, now, &ctx.settings)?;
    Ok((posture, events))
}

/// The posture from kept states (no check runs).
pub fn current(local: &Local, now: i64, s: &PolicySettings) -> anyhow::Result<Posture> {
    let prev = local.check_states()?;
    let checks = CHECKS
        .iter()
        .map(|c| match prev.get(c.name) {
            Some(p) => as_of(p, now, s.grace),
            None => CheckState {
                check: c.name.into(),
                state: State::Error,
                outcome: Outcome::error(
                    "not run yet",
                    "点検がまだ実行されていません。`tsunagi-edge check` を実行してください。",
                ),
                checked_at: 0,
                expires_at: 0,
                failing_since: None,
            },
        })
        .collect();
    posture_of(checks, local, now, s)
}

fn posture_of(
    checks: Vec<CheckState>,
    local: &Local,
    now: i64,
    s: &PolicySettings,
) -> anyhow::Result<Posture> {
    let terminals: Vec<TerminalState> = local
        .terminal_reports()?
        .iter()
        .map(|(n, r)| terminal_state(n, r.as_ref(), now, s))
        .collect();
    // The appliance's own state is its checks'; terminals are enforced one by one at the proxy.
    let state = merge(checks.iter().map(|c| &c.state));
    Ok(Posture {
        state,
        checks,
        terminals,
        at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_in_grace_then_non_compliant_and_errors_are_worst() {
        let grace = Duration::from_secs(100);
        let exp = Duration::from_secs(50);
        let fail = || Outcome::new(Status::Fail, "x", "y");
        let a = gate("c", None, fail(), 1000, exp, grace);
        assert_eq!((a.state, a.failing_since), (State::InGrace, Some(1000)));
        let b = gate("c", Some(&a), fail(), 1099, exp, grace);
        assert_eq!(
            b.state,
            State::InGrace,
            "the grace period runs from the first failure"
        );
        let c = gate("c", Some(&b), fail(), 1100, exp, grace);
        assert_eq!(c.state, State::NonCompliant);
        let d = gate("c", Some(&c), Outcome::pass("ok"), 1101, exp, grace);
        assert_eq!((d.state, d.failing_since), (State::Compliant, None));
        let e = gate("c", Some(&d), fail(), 1102, exp, grace);
        assert_eq!(
            e.failing_since,
            Some(1102),
            "a new failure starts a new grace period"
        );
        let w = gate(
            "c",
            None,
            Outcome::new(Status::Warn, "tkip group", "r"),
            1,
            exp,
            grace,
        );
        assert_eq!(
            w.state,
            State::Compliant,
            "a warning is compliant, and reported"
        );
        assert_eq!(
            as_of(&b, 1100, grace).state,
            State::NonCompliant,
            "grace runs out between runs"
        );
        assert_eq!(
            as_of(&d, 1101 + 51, grace).state,
            State::Error,
            "an expired result is an error, not the last good answer"
        );
        assert_eq!(merge(&[State::Compliant, State::InGrace]), State::InGrace);
        assert_eq!(
            merge(&[State::NonCompliant, State::Error, State::Compliant]),
            State::Error
        );
        assert_eq!(
            merge(&[State::NonCompliant, State::InGrace]),
            State::NonCompliant
        );
        assert_eq!(merge(&[]), State::Compliant);
    }

    #[test]
    fn checks_are_kept_and_every_change_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local::open(dir.path(), &crate::store::Key::from_bytes([3; 32])).unwrap();
        let s = gate(
            "firewall",
            None,
            Outcome::new(Status::Fail, "no drop", "r"),
            10,
            Duration::from_secs(60),
            Duration::from_secs(100),
        );
        assert!(local.keep_check(&s, None).unwrap().is_some());
        let s2 = gate(
            "firewall",
            Some(&s),
            Outcome::new(Status::Fail, "no drop", "r"),
            20,
            Duration::from_secs(60),
            Duration::from_secs(100),
        );
        assert!(
            local.keep_check(&s2, Some(s.state)).unwrap().is_none(),
            "the same state is not a change"
        );
        let s3 = gate(
            "firewall",
            Some(&s2),
            Outcome::pass("drop"),
            30,
            Duration::from_secs(60),
            Duration::from_secs(100),
        );
        let ev = local.keep_check(&s3, Some(s2.state)).unwrap().unwrap();
        assert_eq!(
            (ev.from, ev.to, ev.subject.as_str()),
            (Some(State::InGrace), State::Compliant, "check:firewall")
        );
        assert_eq!(local.check_states().unwrap()["firewall"], s3);
        let unsent = local.unsent_events(10).unwrap();
        assert_eq!(unsent.len(), 2);
        local.events_sent(unsent[0].seq).unwrap();
        assert_eq!(local.unsent_events(10).unwrap().len(), 1);
    }
}
