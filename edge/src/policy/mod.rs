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

pub mod screenlock;
pub mod system;
pub mod wifi;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::{Enforce, PolicySettings};
use crate::proxy::local::Local;
use crate::proxy::{Terminal, TerminalPolicy, Verdict};

/// A check's raw outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Allowed but deprecated (TKIP as a group cipher, a certificate renewal overdue): compliant,
    /// and reported.
    Warn,
    Fail,
    /// The check could not run or read its input.
    Error,
}

/// A check's gated state, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Compliant,
    InGrace,
    NonCompliant,
    Error,
}

impl State {
    pub fn code(self) -> &'static str {
        match self {
            State::Compliant => "compliant",
            State::InGrace => "in-grace",
            State::NonCompliant => "non-compliant",
            State::Error => "error",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Compliant => "適合",
            State::InGrace => "猶予期間中",
            State::NonCompliant => "不適合",
            State::Error => "確認できません",
        }
    }
}

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// One line, in English, for logs and operators (no patient data ever reaches a check).
    pub summary: String,
    /// What the clinic can do, in Japanese; empty when nothing is needed.
    pub remediation: String,
    /// The individual findings (each network, each listening socket…).
    #[serde(default)]
    pub details: Vec<String>,
}

impl Outcome {
    pub fn pass(summary: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Pass,
            summary: summary.into(),
            remediation: String::new(),
            details: Vec::new(),
        }
    }

    pub fn new(
        status: Status,
        summary: impl Into<String>,
        remediation: impl Into<String>,
    ) -> Outcome {
        Outcome {
            status,
            summary: summary.into(),
            remediation: remediation.into(),
            details: Vec::new(),
        }
    }

    pub fn error(summary: impl Into<String>, remediation: impl Into<String>) -> Outcome {
        Outcome::new(Status::Error, summary, remediation)
    }

    pub fn with_details(mut self, d: Vec<String>) -> Outcome {
        self.details = d;
        self
    }
}

/// A check's kept state: its last outcome, gated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    pub check: String,
    pub state: State,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub checked_at: i64,
    pub expires_at: i64,
    /// When the check started failing (its grace period runs from here).
    pub failing_since: Option<i64>,
}

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

/// A terminal's last screen-lock report: when, its status, summary and remediation, and since
/// when it has been failing.
pub type LastReport = (i64, Status, String, String, Option<i64>);

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

/// The appliance's posture: every check's state (as of now), the terminals, and the merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Posture {
    pub state: State,
    pub checks: Vec<CheckState>,
    pub terminals: Vec<TerminalState>,
    pub at: i64,
}

/// A terminal's screen-lock state as the proxy enforces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TerminalState {
    pub name: String,
    pub state: State,
    /// `unknown` when the terminal never reported or its report expired.
    pub known: bool,
    pub summary: String,
    pub remediation: String,
    pub reported_at: Option<i64>,
    pub failing_since: Option<i64>,
}

/// A state change, as audited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub at: i64,
    /// `check:<name>` or `terminal:<name>`.
    pub subject: String,
    pub from: Option<State>,
    pub to: State,
    pub summary: String,
}

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS posture_check (
    name  TEXT PRIMARY KEY,
    state TEXT NOT NULL            -- CheckState as JSON
);
-- Every change of a check's or a terminal's state, kept until the hub has it.
CREATE TABLE IF NOT EXISTS posture_event (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    subject TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    summary TEXT NOT NULL,
    sent    INTEGER NOT NULL DEFAULT 0
);
-- Screen-lock reporters: the SHA-256 of each one's token, and the terminal it speaks for.
CREATE TABLE IF NOT EXISTS reporter (
    token       BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL
);
-- The last report of each terminal.
CREATE TABLE IF NOT EXISTS terminal_report (
    name          TEXT PRIMARY KEY,
    at            INTEGER NOT NULL,
    status        TEXT NOT NULL,
    summary       TEXT NOT NULL,
    remediation   TEXT NOT NULL,
    lock_secs     INTEGER,
    failing_since INTEGER
);
"#;

fn state_from(s: &str) -> Option<State> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// The posture's book in `offline.db`.
impl Local {
    pub fn check_states(&self) -> anyhow::Result<HashMap<String, CheckState>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, state FROM posture_check")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows
                .filter_map(Result::ok)
                .filter_map(|(n, j)| Some((n, serde_json::from_str(&j).ok()?)))
                .collect())
        })
    }

    /// Keeps a check's new state, and audits the change (if it is one) in the same transaction.
    pub fn keep_check(&self, s: &CheckState, prev: Option<State>) -> anyhow::Result<Option<Event>> {
        let json = serde_json::to_string(s)?;
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("INSERT INTO posture_check (name, state) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET state = excluded.state", params![s.check, json])?;
            let ev = if prev != Some(s.state) { Some(insert_event(&tx, s.checked_at, &format!("check:{}", s.check), prev, s.state, &s.outcome.summary)?) } else { None };
            tx.commit()?;
            Ok(ev)
        })
    }

    pub fn record_event(
        &self,
        at: i64,
        subject: &str,
        from: Option<State>,
        to: State,
        summary: &str,
    ) -> anyhow::Result<Event> {
        let (subject, summary) = (subject.to_string(), summary.to_string());
        self.with(move |c| insert_event(c, at, &subject, from, to, &summary))
    }

    fn events(&self, filter_and_order: &'static str, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.with(move |c| {
            let mut st = c.prepare(&format!("SELECT seq, at, subject, from_state, to_state, summary FROM posture_event {filter_and_order} LIMIT ?1"))?;
            let rows = st.query_map([limit], |r| {
                Ok(Event { seq: r.get(0)?, at: r.get(1)?, subject: r.get(2)?, from: r.get::<_, Option<String>>(3)?.as_deref().and_then(state_from), to: state_from(&r.get::<_, String>(4)?).unwrap_or(State::Error), summary: r.get(5)? })
            })?;
            rows.collect()
        })
    }

    /// Events not yet handed to telemetry, oldest first.
    pub fn unsent_events(&self, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.events("WHERE sent = 0 ORDER BY seq", limit)
    }

    pub fn events_sent(&self, upto: i64) -> anyhow::Result<()> {
        self.with(move |c| {
            c.execute("UPDATE posture_event SET sent = 1 WHERE seq <= ?1", [upto])
                .map(|_| ())
        })
    }

    /// The most recent events, newest first (for `tsunagi-edge check`).
    pub fn recent_events(&self, limit: i64) -> anyhow::Result<Vec<Event>> {
        self.events("ORDER BY seq DESC", limit)
    }

    /// Takes a terminal's one-time code (the same codes browsers use) for a screen-lock reporter,
    /// and stores the hash of the reporter's new token. Returns the terminal's name.
    pub fn enrol_reporter(
        &self,
        code: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let token_hash = *token_hash;
        self.take_terminal_code(code, now, move |tx, name| {
            tx.execute(
                "INSERT INTO reporter (token, name, enrolled_at) VALUES (?1, ?2, ?3)",
                params![&token_hash[..], name, now],
            )
            .map(|_| ())
        })
    }

    pub fn reporter_name(&self, token_hash: &[u8; 32]) -> anyhow::Result<Option<String>> {
        let token_hash = *token_hash;
        self.with(move |c| {
            c.query_row(
                "SELECT name FROM reporter WHERE token = ?1",
                [&token_hash[..]],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Keeps a terminal's report (its failing-since carried over while it keeps failing).
    pub fn keep_report(
        &self,
        name: &str,
        at: i64,
        o: &screenlock::Report,
    ) -> anyhow::Result<Option<i64>> {
        let (name, o) = (name.to_string(), o.clone());
        self.with(move |c| {
            let name = name.as_str();
            let tx = c.transaction()?;
            let prev: Option<Option<i64>> = tx.query_row("SELECT failing_since FROM terminal_report WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            let since = match o.outcome.status {
                Status::Fail => Some(prev.flatten().unwrap_or(at)),
                _ => None,
            };
            tx.execute(
                "INSERT INTO terminal_report (name, at, status, summary, remediation, lock_secs, failing_since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET at = excluded.at, status = excluded.status, summary = excluded.summary, remediation = excluded.remediation, lock_secs = excluded.lock_secs, failing_since = excluded.failing_since",
                params![name, at, serde_json::to_value(o.outcome.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(), o.outcome.summary, o.outcome.remediation, o.lock_secs.map(|s| s as i64), since],
            )?;
            tx.commit()?;
            Ok(since)
        })
    }

    /// Every terminal the facility enrolled (by browser or reporter), with its last report.
    pub fn terminal_reports(&self) -> anyhow::Result<Vec<(String, Option<LastReport>)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT n.name, r.at, r.status, r.summary, r.remediation, r.failing_since FROM
                   (SELECT name FROM terminal UNION SELECT name FROM reporter UNION SELECT name FROM terminal_report) n
                 LEFT JOIN terminal_report r ON r.name = n.name ORDER BY n.name",
            )?;
            let rows = st.query_map([], |r| {
                let at: Option<i64> = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    match at {
                        None => None,
                        Some(at) => Some((at, serde_json::from_value(serde_json::Value::String(r.get::<_, String>(2)?)).unwrap_or(Status::Error), r.get(3)?, r.get(4)?, r.get(5)?)),
                    },
                ))
            })?;
            rows.collect()
        })
    }
}

fn insert_event(
    c: &rusqlite::Connection,
    at: i64,
    subject: &str,
    from: Option<State>,
    to: State,
    summary: &str,
) -> rusqlite::Result<Event> {
    c.execute(
        "INSERT INTO posture_event (at, subject, from_state, to_state, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, subject, from.map(State::code), to.code(), summary],
    )?;
    Ok(Event {
        seq: c.last_insert_rowid(),
        at,
        subject: subject.to_string(),
        from,
        to,
        summary: summary.to_string(),
    })
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

// ---------------------------------------------------------------------------------------------
// Enforcement at the proxy.

/// The proxy's terminal policy: a terminal's state from its screen-lock reports, and what the
/// configuration says to do with it. Reports are cached and read again with the terminal list.
pub struct TerminalGate {
    settings: PolicySettings,
    /// name → last report.
    reports: RwLock<HashMap<String, LastReport>>,
    /// name → last state seen, to audit changes.
    seen: RwLock<HashMap<String, State>>,
    local: Arc<Local>,
}

impl TerminalGate {
    pub fn new(settings: PolicySettings, local: Arc<Local>) -> anyhow::Result<TerminalGate> {
        // The last state audited for each terminal, so a restart does not audit them all again.
        let seen = local.with(|c| {
            let mut st = c.prepare("SELECT subject, to_state FROM posture_event WHERE seq IN (SELECT max(seq) FROM posture_event WHERE subject LIKE 'terminal:%' GROUP BY subject)")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows.filter_map(Result::ok).filter_map(|(s, t)| Some((s.strip_prefix("terminal:")?.to_string(), state_from(&t)?))).collect::<HashMap<_, _>>())
        })?;
        let g = TerminalGate {
            settings,
            reports: RwLock::new(HashMap::new()),
            seen: RwLock::new(seen),
            local,
        };
        g.reload()?;
        Ok(g)
    }

    /// Reads the reports again, and audits every terminal whose state changed (a report expiring
    /// makes a terminal unknown).
    pub fn reload(&self) -> anyhow::Result<()> {
        let rows = self.local.terminal_reports()?;
        let now = shared::time::now();
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        let mut reports = HashMap::new();
        for (name, r) in rows {
            let st = terminal_state(&name, r.as_ref(), now, &self.settings);
            let before = seen.get(&name).copied();
            if before != Some(st.state) {
                self.local.record_event(
                    now,
                    &format!("terminal:{name}"),
                    before,
                    st.state,
                    &st.summary,
                )?;
                seen.insert(name.clone(), st.state);
            }
            if let Some(r) = r {
                reports.insert(name, r);
            }
        }
        *self.reports.write().unwrap_or_else(|e| e.into_inner()) = reports;
        Ok(())
    }

    pub fn state_of(&self, name: Option<&str>) -> TerminalState {
        let now = shared::time::now();
        match name {
            None => TerminalState {
                name: String::new(),
                state: State::Error,
                known: false,
                summary: "unknown: the terminal is not enrolled".into(),
                remediation: "この端末は登録されていません。施設の管理者に登録コードを発行してもらい、/_tsunagi/terminal で登録してください。".into(),
                reported_at: None,
                failing_since: None,
            },
            Some(n) => terminal_state(n, self.reports.read().unwrap_or_else(|e| e.into_inner()).get(n), now, &self.settings),
        }
    }
}

impl TerminalPolicy for TerminalGate {
    fn check(&self, t: &Terminal) -> Verdict {
        let st = self.state_of(t.enrolled.as_deref());
        let what = match (st.known, st.state) {
            (_, State::Compliant) => return Verdict::Allow,
            (true, State::InGrace) => Enforce::Warn,
            (true, State::NonCompliant) => self.settings.noncompliant_terminal,
            _ => self.settings.unknown_terminal,
        };
        let why = format!(
            "{} {}",
            st.state.label(),
            if st.remediation.is_empty() {
                &st.summary
            } else {
                &st.remediation
            }
        );
        match what {
            Enforce::Allow => Verdict::Allow,
            Enforce::Warn => Verdict::Warn(why),
            Enforce::Refuse => Verdict::Refuse(why),
        }
    }

    fn reload(&self) {
        if let Err(e) = TerminalGate::reload(self) {
            tracing::warn!(error = %format!("{e:#}"), "terminal reports cannot be read: keeping the last ones");
        }
    }

    fn report(&self, name: &str, posted: &screenlock::Posted) -> anyhow::Result<serde_json::Value> {
        let r = screenlock::classify(posted, self.settings.screen_lock_max.as_secs());
        let now = shared::time::now();
        self.local.keep_report(name, now, &r)?;
        TerminalGate::reload(self)?;
        let st = self.state_of(Some(name));
        tracing::info!(terminal = %name, status = ?r.outcome.status, lock_secs = r.lock_secs.unwrap_or(0), state = st.state.code(), "screen-lock report");
        Ok(
            serde_json::json!({"terminal": name, "state": st.state.code(), "label": st.state.label(), "summary": r.outcome.summary, "remediation": r.outcome.remediation, "lock_secs": r.lock_secs}),
        )
    }
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

    fn settings() -> PolicySettings {
        PolicySettings {
            grace: Duration::from_secs(100),
            report_expiry: Duration::from_secs(60),
            ..Default::default()
        }
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

    #[test]
    fn terminals_are_unknown_until_they_report_and_after_their_report_expires() {
        let dir = tempfile::tempdir().unwrap();
        let local =
            Arc::new(Local::open(dir.path(), &crate::store::Key::from_bytes([4; 32])).unwrap());
        let s = settings();
        let code = local.terminal_code("受付PC1", 0, i64::MAX).unwrap();
        let token = [7u8; 32];
        assert_eq!(
            local.enrol_reporter(&code, &token, 1).unwrap().as_deref(),
            Some("受付PC1")
        );
        assert_eq!(
            local.enrol_reporter(&code, &[8; 32], 1).unwrap(),
            None,
            "a code works once"
        );
        let gate = TerminalGate::new(s.clone(), local.clone()).unwrap();
        let t = Terminal {
            id: "a".repeat(64),
            addr: "192.168.1.5".parse().unwrap(),
            new: false,
            enrolled: Some("受付PC1".into()),
            warned: false,
        };
        assert!(
            matches!(gate.check(&t), Verdict::Warn(_)),
            "unknown terminals are warned by default"
        );
        let now = shared::time::now();
        let bad = screenlock::Report {
            outcome: Outcome::new(Status::Fail, "lock after 900 s", "r"),
            lock_secs: Some(900),
        };
        assert_eq!(local.keep_report("受付PC1", now, &bad).unwrap(), Some(now));
        gate.reload().unwrap();
        assert!(
            matches!(gate.check(&t), Verdict::Warn(_)),
            "in grace: warned"
        );
        assert_eq!(
            local.keep_report("受付PC1", now + 1, &bad).unwrap(),
            Some(now),
            "failing since the first failing report"
        );
        let s_strict = PolicySettings {
            grace: Duration::ZERO,
            ..settings()
        };
        let strict = TerminalGate::new(s_strict, local.clone()).unwrap();
        assert!(
            matches!(strict.check(&t), Verdict::Refuse(_)),
            "non-compliant after grace: refused"
        );
        let good = screenlock::Report {
            outcome: Outcome::pass("lock after 300 s"),
            lock_secs: Some(300),
        };
        local.keep_report("受付PC1", now + 2, &good).unwrap();
        strict.reload().unwrap();
        assert_eq!(strict.check(&t), Verdict::Allow);
        local.keep_report("受付PC1", now - 61, &good).unwrap();
        strict.reload().unwrap();
        assert!(
            matches!(strict.check(&t), Verdict::Warn(_)),
            "a stale report is unknown again"
        );
        let nobody = Terminal {
            enrolled: None,
            ..t.clone()
        };
        assert!(matches!(strict.check(&nobody), Verdict::Warn(_)));
        let changes: Vec<_> = local
            .recent_events(20)
            .unwrap()
            .into_iter()
            .filter(|e| e.subject == "terminal:受付PC1")
            .map(|e| e.to)
            .collect();
        assert!(
            changes.contains(&State::Compliant) && changes.contains(&State::NonCompliant),
            "{changes:?}"
        );
        let before = local.recent_events(100).unwrap().len();
        TerminalGate::new(settings(), local.clone()).unwrap();
        assert_eq!(
            local.recent_events(100).unwrap().len(),
            before,
            "a restart audits no change that did not happen"
        );
    }
}
