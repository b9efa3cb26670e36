//! Enforcement at the proxy: the `TerminalGate`, the proxy's terminal policy from the terminals'
//! screen-lock reports and what the configuration says to do with them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{
    screenlock, terminal_state, LastReport, State, Terminal, TerminalPolicy, TerminalState, Verdict,
};
use crate::config::{Enforce, PolicySettings};
use crate::local::Local;
use crate::posture::state_from;

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
    fn warning(&self, t: &Terminal) -> &'static str {
        let st = self.state_of(t.enrolled.as_deref());
        match (st.known, st.state) {
            (false, _) if t.enrolled.is_none() => "unenrolled",
            (false, _) => "unreported",
            (true, State::InGrace) => "in-grace",
            (true, State::NonCompliant) => "non-compliant",
            _ => "unreported",
        }
    }

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
    use crate::policy::{Outcome, Status};
    use std::time::Duration;

    fn settings() -> PolicySettings {
        PolicySettings {
            grace: Duration::from_secs(100),
            report_expiry: Duration::from_secs(60),
            ..Default::default()
        }
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
        // The hub's banner is told what to say: an enrolled terminal that never reported.
        assert_eq!(gate.warning(&t), "unreported");
        let stranger = Terminal {
            enrolled: None,
            ..t.clone()
        };
        assert_eq!(gate.warning(&stranger), "unenrolled");
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
        assert_eq!(gate.warning(&t), "in-grace");
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
