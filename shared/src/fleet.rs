//! Fleet telemetry over MQTT: the topics and the JSON both sides agree on.
//!
//! Every topic sits under the facility code, which is the client certificate's CN and so the
//! broker's user name (`use_identity_as_username`): the broker's ACL lets an appliance write only
//! under `tsunagi/<its facility>/…` and read only its own facility's commands.
//!
//! | topic                                   | from      | retained | what                          |
//! |-----------------------------------------|-----------|----------|-------------------------------|
//! | `tsunagi/<facility>/<appliance>/presence` | appliance (and its last will) | yes | [`Presence`] |
//! | `tsunagi/<facility>/<appliance>/status` | appliance | yes      | [`Status`], on change and every few minutes |
//! | `tsunagi/<facility>/<appliance>/event`  | appliance | no       | [`Event`]s: posture state changes |
//! | `tsunagi/<facility>/<appliance>/ack`    | appliance | no       | [`Ack`] of a command          |
//! | `tsunagi/<facility>/<appliance>/cmd`    | hub       | no       | [`Command`]                   |

use serde::{Deserialize, Serialize};

pub const ROOT: &str = "tsunagi";
pub const PRESENCE: &str = "presence";
pub const STATUS: &str = "status";
pub const EVENT: &str = "event";
pub const ACK: &str = "ack";
pub const CMD: &str = "cmd";

/// The broker user name of the hub's own client (never a facility code, which is 10 digits).
pub const HUB_USER: &str = "tsunagi-hub";

/// `mqtts://host:port` (port 8883 when left out) → host and port. Only TLS: telemetry goes to
/// the broker with a client certificate.
pub fn parse_broker(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("mqtts://").ok_or_else(|| {
        format!("{url:?} must start with mqtts:// (telemetry is sent only over TLS)")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port"))?,
        ),
        _ => (rest, 8883),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

pub fn topic(facility: &str, appliance: &str, leaf: &str) -> String {
    format!("{ROOT}/{facility}/{appliance}/{leaf}")
}

/// (facility, appliance, leaf) of a fleet topic.
pub fn parse_topic(t: &str) -> Option<(&str, &str, &str)> {
    let mut it = t.split('/');
    if it.next()? != ROOT {
        return None;
    }
    let (f, a, l) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || f.is_empty() || a.is_empty() {
        return None;
    }
    Some((f, a, l))
}

/// Online or offline. The broker publishes the appliance's last will (`offline`, `why: lost`)
/// when its connection ends without a goodbye; a clean stop says `shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncStatus {
    /// The last segment the hub acknowledged, and the store's newest.
    pub acked_seq: u64,
    pub head_seq: u64,
    pub backlog: u64,
    pub backlog_bytes: i64,
    #[serde(default)]
    pub last_ack_at: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One check as the fleet sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub check: String,
    /// compliant, in-grace, non-compliant, error.
    pub state: String,
    pub summary: String,
    #[serde(default)]
    pub remediation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Terminals {
    pub total: u32,
    pub compliant: u32,
    pub in_grace: u32,
    pub non_compliant: u32,
    pub unknown: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PostureSummary {
    pub state: String,
    pub checks: Vec<CheckSummary>,
    pub terminals: Terminals,
}

/// An appliance's retained status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    pub version: String,
    pub at: i64,
    pub started_at: i64,
    pub sync: SyncStatus,
    pub quarantine: u64,
    pub posture: PostureSummary,
    pub cert_not_after: i64,
    #[serde(default)]
    pub lan_cert_not_after: Option<i64>,
    /// The newest posture events (the event topic carries each; these cover a lost one).
    #[serde(default)]
    pub recent_events: Vec<Event>,
    /// Seconds between statuses at most: a status older than twice this is silence.
    #[serde(default)]
    pub every: u64,
}

/// A posture state change on an appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub at: i64,
    pub subject: String,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    pub summary: String,
}

/// A command from the hub's operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Send the outbox again from after this segment (the hub's copy was restored from a backup).
    SyncFrom { id: String, seq: u64 },
    /// Renew the client certificate now.
    Renew { id: String },
    /// Run every posture check now.
    Check { id: String },
}

impl Command {
    pub fn id(&self) -> &str {
        match self {
            Command::SyncFrom { id, .. } | Command::Renew { id } | Command::Check { id } => id,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::SyncFrom { .. } => "sync-from",
            Command::Renew { .. } => "renew",
            Command::Check { .. } => "check",
        }
    }
}

/// An appliance's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: String,
    pub ok: bool,
    pub detail: String,
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_commands_round_trip() {
        let t = topic("1234567890", "box-1", STATUS);
        assert_eq!(parse_topic(&t), Some(("1234567890", "box-1", "status")));
        assert_eq!(parse_topic("tsunagi/1/2/3/4"), None);
        assert_eq!(parse_topic("other/1/2/3"), None);
        let c = Command::SyncFrom {
            id: "c1".into(),
            seq: 7,
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"{"command":"sync-from","id":"c1","seq":7}"#);
        assert_eq!(serde_json::from_str::<Command>(&j).unwrap(), c);
        assert!(serde_json::from_str::<Command>(r#"{"command":"format-disk","id":"x"}"#).is_err());
    }
}
