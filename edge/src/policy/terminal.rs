//! A terminal as the proxy knows it, and the hook that decides per request whether it may use
//! the portal ([`TerminalPolicy`]); the posture's [`super::TerminalGate`] is the one the
//! appliance runs.

use std::net::IpAddr;

/// A terminal as the proxy knows it: the id in its cookie, and where it connects from.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub id: String,
    pub addr: IpAddr,
    /// Whether the terminal came without the cookie (first visit, or cookies cleared).
    pub new: bool,
    /// The name the facility administrator enrolled it under (`tsunagi-edge terminal code`),
    /// or None for a terminal nobody enrolled.
    pub enrolled: Option<String>,
    /// Set when the posture policy warns about the terminal; the hub then shows a banner.
    pub warned: bool,
}

impl Terminal {
    /// How the terminal is named in audit logs: the start of its id and its address.
    pub fn label(&self) -> String {
        format!("t-{}@{}", &self.id[..self.id.len().min(12)], self.addr)
    }
}

/// What the posture policy says of a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Served, with the reason logged and sent to the browser in `x-tsunagi-posture`.
    Warn(String),
    /// Not served: the reason is shown to the person at the terminal.
    Refuse(String),
}

/// The hook the posture checks plug into: decides, per request, whether a terminal may use the
/// portal. The default allows every terminal; the policy work fills this in.
pub trait TerminalPolicy: Send + Sync {
    fn check(&self, t: &Terminal) -> Verdict;
    /// For a warned terminal, what the hub's banner should say, as a code the hub turns into
    /// words (`unenrolled`, `unreported`, `in-grace`, `non-compliant`: hub `portal::auth`);
    /// `warn` when the policy cannot say more.
    fn warning(&self, _t: &Terminal) -> &'static str {
        "warn"
    }
    /// Called every few seconds to read the terminals' states again.
    fn reload(&self) {}
    /// Takes a screen-lock report from the terminal enrolled as `name`; answers what the
    /// terminal's state now is, as JSON for the reporter to show.
    fn report(
        &self,
        name: &str,
        posted: &super::screenlock::Posted,
    ) -> anyhow::Result<serde_json::Value> {
        let _ = (name, posted);
        anyhow::bail!("this appliance takes no screen-lock reports")
    }
}

pub struct AllowAll;

impl TerminalPolicy for AllowAll {
    fn check(&self, _: &Terminal) -> Verdict {
        Verdict::Allow
    }
}
