//! The fleet view: every appliance's liveness and state, from the MQTT broker.
//!
//! - Liveness is the broker's: an appliance's retained `presence` (its own `online`, its last
//!   will `offline`/`lost` published by the broker after 1.5× the keep-alive, or `shutdown`).
//! - State is its retained `status` (version, sync position and backlog, quarantine, posture,
//!   certificate expiry); the lag is measured against the hub's own copy of the facility.
//! - Posture events, presence changes, commands and their acknowledgements, and alerts are kept
//!   in `fleet.db` (SQLCipher) as each appliance's history.
//! - Alerts (offline too long, lag too large, a failed check, a certificate expiring within 30
//!   days) show on the page and go to a webhook when they start and when they end.
//! - `/metrics` serves the same in Prometheus' text format.
//!
//! The hub keeps a persistent session at the broker, so events sent while it is down wait there.

mod appliance;
mod history;
mod metrics;
mod mqtt;
mod upkeep;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rumqttc::AsyncClient;
use serde::Serialize;

use crate::now;

pub use appliance::Appliance;
pub use history::{Row, FILE, MIGRATIONS};
pub use metrics::serve_metrics;
pub use mqtt::{run, Connect};
pub use upkeep::upkeep;

/// Where Mosquitto says how long it has been up.
pub const UPTIME: &str = "$SYS/broker/uptime";

/// Alert thresholds and where alerts go.
#[derive(Debug, Clone)]
pub struct Settings {
    pub offline_after: Duration,
    pub lag_segments: u64,
    pub cert_days: i64,
    pub webhook: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            offline_after: Duration::from_secs(15 * 60),
            lag_segments: 1000,
            cert_days: 30,
            webhook: None,
        }
    }
}

/// The broker connection as the hub sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerState {
    pub configured: bool,
    pub connected: bool,
    pub since: i64,
    pub why: String,
}

/// A history row waiting to be written: at, facility, appliance, kind, detail, the edge's seq.
type HistoryRow = (i64, String, String, String, String, Option<i64>);
/// An alert by facility, appliance and kind.
pub type AlertKey = (String, String, &'static str);
/// An alert that started, with what it says.
pub type AlertStarted = (String, String, &'static str, String);

pub struct Fleet {
    pub settings: Settings,
    appliances: RwLock<BTreeMap<(String, String), Appliance>>,
    broker: RwLock<BrokerState>,
    client: Mutex<Option<AsyncClient>>,
    /// Alerts firing: (facility, appliance, kind) → since.
    firing: Mutex<HashMap<(String, String, &'static str), i64>>,
    /// The thread that owns `fleet.db`.
    history: crate::db::Worker,
    /// History rows waiting to be written (written in batches, off the MQTT loop).
    pending: Mutex<VecDeque<HistoryRow>>,
    pub messages: AtomicU64,
    pub webhook_failures: AtomicU64,
    started: AtomicBool,
    broker_started: std::sync::atomic::AtomicI64,
}

impl Fleet {
    pub fn open(path: PathBuf, key: &crate::key::Key, settings: Settings) -> anyhow::Result<Fleet> {
        let conn = crate::db::open(&path, key, MIGRATIONS)?;
        Ok(Fleet {
            settings,
            appliances: RwLock::new(BTreeMap::new()),
            broker: RwLock::new(BrokerState::default()),
            client: Mutex::new(None),
            firing: Mutex::new(HashMap::new()),
            history: crate::db::worker("fleet", conn)?,
            pending: Mutex::new(VecDeque::new()),
            messages: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            started: AtomicBool::new(false),
            broker_started: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Every appliance, as of now (see [`Appliance::as_of`]).
    pub fn list(&self) -> Vec<Appliance> {
        let (now, started) = (now(), self.broker_started());
        self.appliances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .map(|a| a.as_of(now, started))
            .collect()
    }

    pub fn get(&self, facility: &str, appliance: &str) -> Option<Appliance> {
        let a = self
            .appliances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(facility.to_string(), appliance.to_string()))
            .cloned()?;
        Some(a.as_of(now(), self.broker_started()))
    }

    /// When the broker started, from its `$SYS/broker/uptime`.
    pub fn broker_started(&self) -> Option<i64> {
        let v = self.broker_started.load(Ordering::Relaxed);
        (v > 0).then_some(v)
    }

    pub fn broker(&self) -> BrokerState {
        self.broker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The worst posture among a facility's appliances (for the portal's banner), or None when
    /// the fleet has not heard from any.
    pub fn facility_posture(&self, facility: &str) -> Option<String> {
        let rank = |s: &str| match s {
            "compliant" => 0,
            "in-grace" => 1,
            "non-compliant" => 2,
            _ => 3,
        };
        self.appliances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| a.facility == facility && a.status.is_some())
            .map(|a| a.posture().to_string())
            .max_by_key(|s| rank(s))
    }

    pub fn firing(&self) -> Vec<(String, String, &'static str, i64)> {
        let mut v: Vec<_> = self
            .firing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((f, a, k), s)| (f.clone(), a.clone(), *k, *s))
            .collect();
        v.sort();
        v
    }

    /// Reads the hub's copies' positions into the appliances (for the lag).
    pub fn set_copy_positions(&self, positions: &HashMap<String, u64>) {
        for a in self
            .appliances
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            a.copy_seq = positions.get(&a.facility).copied();
        }
    }

    /// Compares the alerts now with those firing; returns the ones that started and ended.
    pub fn evaluate(&self, now: i64) -> (Vec<AlertStarted>, Vec<AlertKey>) {
        let mut current = HashMap::new();
        for a in self.list() {
            for (k, d) in a.alerts(&self.settings, now) {
                current.insert((a.facility.clone(), a.appliance.clone(), k), d);
            }
        }
        let mut firing = self.firing.lock().unwrap_or_else(|e| e.into_inner());
        let mut started = Vec::new();
        for (k, d) in &current {
            if !firing.contains_key(k) {
                firing.insert(k.clone(), now);
                started.push((k.0.clone(), k.1.clone(), k.2, d.clone()));
            }
        }
        let ended: Vec<_> = firing
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        for k in &ended {
            firing.remove(k);
        }
        drop(firing);
        for (f, a, k, d) in &started {
            self.note(now, f, a, "alert", format!("{k}: {d}"), None);
        }
        for (f, a, k) in &ended {
            self.note(now, f, a, "resolved", k.to_string(), None);
        }
        (started, ended.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::fleet::{self, Status};

    fn fleet(s: Settings) -> (tempfile::TempDir, Fleet) {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::key::Key::from_bytes([5; 32]).derive("fleet");
        let f = Fleet::open(dir.path().join(FILE), &key, s).unwrap();
        (dir, f)
    }

    fn status(posture: &str, at: i64, cert_not_after: i64, head: u64, acked: u64) -> Vec<u8> {
        let s = Status {
            version: "0.1.0".into(),
            at,
            started_at: 1,
            sync: fleet::SyncStatus {
                acked_seq: acked,
                head_seq: head,
                backlog: head - acked,
                ..Default::default()
            },
            quarantine: 2,
            posture: fleet::PostureSummary {
                state: posture.into(),
                checks: vec![fleet::CheckSummary {
                    check: "firewall".into(),
                    state: posture.into(),
                    summary: "x".into(),
                    remediation: String::new(),
                }],
                terminals: Default::default(),
            },
            cert_not_after,
            lan_cert_not_after: None,
            recent_events: vec![fleet::Event {
                seq: 1,
                at: 5,
                subject: "check:firewall".into(),
                from: None,
                to: posture.into(),
                summary: "x".into(),
            }],
            every: 60,
        };
        serde_json::to_vec(&s).unwrap()
    }

    #[test]
    fn presence_status_alerts_and_history() {
        let (_d, f) = fleet(Settings {
            offline_after: Duration::from_secs(60),
            lag_segments: 10,
            cert_days: 30,
            webhook: None,
        });
        let t0 = now();
        let t = fleet::topic("1234567890", "box-1", fleet::PRESENCE);
        let status_topic = fleet::topic("1234567890", "box-1", fleet::STATUS);
        f.take(
            &t,
            format!(r#"{{"state":"online","at":{t0},"keep_alive":5}}"#).as_bytes(),
            t0,
        );
        f.take(
            &status_topic,
            &status("compliant", t0, t0 + 90 * 86_400, 50, 45),
            t0 + 1,
        );
        let a = f.get("1234567890", "box-1").unwrap();
        assert_eq!((a.online, a.keep_alive, a.lag()), (Some(true), 5, Some(5)));
        assert!(f.evaluate(t0 + 10).0.is_empty());
        f.take(&t, br#"{"state":"offline","why":"lost"}"#, t0 + 20);
        assert!(f.evaluate(t0 + 50).0.is_empty(), "not yet offline for long");
        let (started, _) = f.evaluate(t0 + 81);
        assert_eq!(
            started.iter().map(|s| s.2).collect::<Vec<_>>(),
            vec!["offline"]
        );
        assert!(f.evaluate(t0 + 90).0.is_empty(), "an alert starts once");
        f.take(
            &t,
            format!(r#"{{"state":"online","at":{t0}}}"#).as_bytes(),
            t0 + 100,
        );
        f.take(
            &status_topic,
            &status("non-compliant", t0, t0 + 10 * 86_400, 100, 45),
            t0 + 101,
        );
        let (started, ended) = f.evaluate(t0 + 102);
        let mut kinds: Vec<_> = started.iter().map(|s| s.2).collect();
        kinds.sort();
        assert_eq!(kinds, vec!["certificate", "lag", "posture"]);
        assert_eq!(
            ended.iter().map(|e| e.2).collect::<Vec<_>>(),
            vec!["offline"]
        );
        // The same posture event twice (in a status and on the event topic) is kept once.
        f.take(
            &fleet::topic("1234567890", "box-1", fleet::EVENT),
            br#"{"seq":1,"at":5,"subject":"check:firewall","to":"compliant","summary":"x"}"#,
            t0 + 103,
        );
        let h = f.history("1234567890", "box-1", 100).unwrap();
        assert_eq!(h.iter().filter(|r| r.kind == "posture").count(), 1, "{h:?}");
        assert!(h
            .iter()
            .any(|r| r.kind == "presence" && r.detail.contains("connection lost")));
        assert!(h
            .iter()
            .any(|r| r.kind == "resolved" && r.detail == "offline"));
        let m = f.metrics();
        assert!(
            m.contains("tsunagi_fleet_appliances{state=\"online\"} 1"),
            "{m}"
        );
        assert!(m.contains("tsunagi_fleet_sync_lag_segments 55"), "{m}");
        assert!(m.contains("tsunagi_fleet_sync_behind 1"), "{m}");
        assert!(
            m.contains("tsunagi_fleet_posture{state=\"non-compliant\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("tsunagi_fleet_certificates_expiring{within=\"30d\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("tsunagi_fleet_certificates_expiring{within=\"expired\"} 0")
                && m.contains("tsunagi_fleet_posture{state=\"unknown\"} 0"),
            "{m}"
        );
        assert!(m.contains("tsunagi_fleet_alerts{kind=\"lag\"} 1"), "{m}");
        assert!(m.ends_with("# EOF\n"), "{m}");
        assert!(
            !m.contains("1234567890") && !m.contains("box-1"),
            "no series names a facility or an appliance: {m}"
        );
        assert_eq!(
            f.facility_posture("1234567890").as_deref(),
            Some("non-compliant")
        );
        assert_eq!(f.facility_posture("0000000000"), None);
        f.take("tsunagi/x/y/status", b"not json", 1);
        f.take("elsewhere", b"{}", 1);
    }

    #[test]
    fn an_online_nobody_has_confirmed_is_not_believed() {
        let (_d, f) = fleet(Settings::default());
        let t0 = now();
        let t = fleet::topic("1234567890", "box-1", fleet::PRESENCE);
        f.take(
            &t,
            format!(r#"{{"state":"online","at":{}}}"#, t0 - 100).as_bytes(),
            t0,
        );
        f.take(
            &fleet::topic("1234567890", "box-1", fleet::STATUS),
            &status("compliant", t0 - 10, t0 + 90 * 86_400, 1, 1),
            t0,
        );
        f.take(UPTIME, b"1000 seconds", t0);
        assert_eq!(
            f.get("1234567890", "box-1").unwrap().online,
            Some(true),
            "it said online after the broker started 1000 s ago"
        );
        // The broker restarted 20 s ago, keeping the retained `online` of a box that has not
        // come back since: unknown, not online.
        f.take(UPTIME, b"20 seconds", t0);
        let a = f.get("1234567890", "box-1").unwrap();
        assert_eq!(a.online, None);
        assert!(
            a.why
                .contains("has not reconnected since the broker restarted"),
            "{}",
            a.why
        );
        f.take(
            &t,
            format!(r#"{{"state":"online","at":{t0}}}"#).as_bytes(),
            t0,
        );
        assert_eq!(
            f.get("1234567890", "box-1").unwrap().online,
            Some(true),
            "it came back"
        );
        // Silent for longer than twice its status period (60 s in `status`) plus 30 s.
        f.take(
            &fleet::topic("1234567890", "box-1", fleet::STATUS),
            &status("compliant", t0 - 151, t0 + 90 * 86_400, 1, 1),
            t0 - 151,
        );
        let a = f.get("1234567890", "box-1").unwrap();
        assert_eq!(
            a.online, None,
            "a box that stopped reporting is not shown healthy"
        );
        assert!(a.why.starts_with("silent"), "{}", a.why);
    }
}
