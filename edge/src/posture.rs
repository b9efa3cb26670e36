//! The vocabulary of the appliance's posture: what a check found ([`Status`], [`Outcome`]), its
//! gated [`State`], what is kept of each check and terminal, and the audited [`Event`]s. Only
//! types: the checks are in `policy`, their book in `offline.db` is in `local`.

use serde::{Deserialize, Serialize};

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

/// A terminal's last screen-lock report: when, its status, summary and remediation, and since
/// when it has been failing.
pub type LastReport = (i64, Status, String, String, Option<i64>);

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

/// A terminal's classified report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// After how many idle seconds the terminal locks, if it does.
    pub lock_secs: Option<u64>,
}

/// A state from its stored code.
pub(crate) fn state_from(s: &str) -> Option<State> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}
