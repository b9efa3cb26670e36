//! One appliance as the hub knows it, and the liveness rule (`Appliance::as_of`): an `online`
//! nobody repeated since the broker restarted, or gone silent, is not believed; its lag and alerts.

use serde::Serialize;
use shared::fleet::Status;

use super::Settings;

/// One appliance as the hub knows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Appliance {
    pub facility: String,
    pub appliance: String,
    /// None until a presence message arrived.
    pub online: Option<bool>,
    /// When the current online/offline state began (as the hub saw it).
    pub since: i64,
    pub why: String,
    pub keep_alive: u64,
    pub status: Option<Status>,
    pub status_received: i64,
    pub last_message: i64,
    /// The hub's copy of the facility: its segment, when known.
    pub copy_seq: Option<u64>,
    /// When the appliance said it came online (its own clock).
    pub said_online: Option<i64>,
}

impl Appliance {
    /// The appliance as of `now`, given when the broker last started: an `online` that the
    /// appliance said before the broker started (a retained message the broker kept across its
    /// restart, which no last will follows) or without a status for twice its period is not
    /// believed. Greengrass's daily status is the anti-pattern: dead boxes shown healthy.
    pub fn as_of(mut self, now: i64, broker_started: Option<i64>) -> Appliance {
        if self.online != Some(true) {
            return self;
        }
        if let (Some(started), Some(said)) = (broker_started, self.said_online) {
            if said + 5 < started {
                self.online = None;
                self.why = format!(
                    "has not reconnected since the broker restarted at {}",
                    shared::time::rfc3339(started)
                );
                return self;
            }
        }
        if let Some(s) = &self.status {
            let every = if s.every == 0 { 180 } else { s.every } as i64;
            let last = s.at.min(self.status_received);
            if now - last > 2 * every + 30 {
                self.online = None;
                self.why = format!("silent: no status since {}", shared::time::rfc3339(last));
                self.since = last;
            }
        }
        self
    }

    /// Segments the hub's copy is behind the appliance's store.
    pub fn lag(&self) -> Option<u64> {
        let s = self.status.as_ref()?;
        Some(
            s.sync
                .head_seq
                .saturating_sub(self.copy_seq.unwrap_or(s.sync.acked_seq)),
        )
    }

    pub fn posture(&self) -> &str {
        self.status
            .as_ref()
            .map(|s| s.posture.state.as_str())
            .unwrap_or("unknown")
    }

    /// The alerts this appliance raises now: (kind, detail).
    pub fn alerts(&self, s: &Settings, now: i64) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.online == Some(false) && now - self.since >= s.offline_after.as_secs() as i64 {
            out.push((
                "offline",
                format!("offline for {} min ({})", (now - self.since) / 60, self.why),
            ));
        }
        if let Some(l) = self.lag() {
            if l > s.lag_segments {
                out.push(("lag", format!("the hub's copy is {l} segments behind")));
            }
        }
        if let Some(st) = &self.status {
            let failed: Vec<String> = st
                .posture
                .checks
                .iter()
                .filter(|c| c.state == "non-compliant" || c.state == "error")
                .map(|c| format!("{} {}", c.check, c.state))
                .collect();
            if !failed.is_empty() {
                out.push(("posture", failed.join(", ")));
            }
            let left = st.cert_not_after - now;
            if left < s.cert_days * 86_400 {
                out.push((
                    "certificate",
                    format!(
                        "the client certificate expires {}",
                        shared::time::rfc3339(st.cert_not_after)
                    ),
                ));
            }
        }
        out
    }
}
