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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rusqlite::params;
use serde::Serialize;
use shared::fleet::{self, Ack, Command, Presence, Status};

use crate::now;

pub const FILE: &str = "fleet.db";

/// Where Mosquitto says how long it has been up.
pub const UPTIME: &str = "$SYS/broker/uptime";

pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE history (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    facility  TEXT NOT NULL,
    appliance TEXT NOT NULL,
    kind      TEXT NOT NULL,      -- presence, posture, command, ack, alert, resolved
    detail    TEXT NOT NULL,
    edge_seq  INTEGER             -- a posture event's number on the appliance
);
CREATE INDEX history_by_appliance ON history (facility, appliance, id);
CREATE UNIQUE INDEX history_edge_event ON history (facility, appliance, edge_seq) WHERE edge_seq IS NOT NULL;
"#];

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

/// A row of an appliance's history.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub at: i64,
    pub kind: String,
    pub detail: String,
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

    fn note(
        &self,
        at: i64,
        facility: &str,
        appliance: &str,
        kind: &str,
        detail: String,
        edge_seq: Option<i64>,
    ) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((
                at,
                facility.into(),
                appliance.into(),
                kind.into(),
                detail,
                edge_seq,
            ));
    }

    /// Writes the waiting history rows in one transaction.
    pub fn flush(&self) -> anyhow::Result<usize> {
        let rows: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        self.history.call_blocking(move |c| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO history (at, facility, appliance, kind, detail, edge_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
                for (at, f, a, k, d, s) in &rows {
                    st.execute(params![at, f, a, k, d, s])?;
                }
            }
            tx.commit()
        })??;
        Ok(n)
    }

    /// An appliance's history, newest first.
    pub fn history(&self, facility: &str, appliance: &str, limit: i64) -> anyhow::Result<Vec<Row>> {
        let _ = self.flush();
        let (facility, appliance) = (facility.to_string(), appliance.to_string());
        Ok(self.history.call_blocking(move |c| {
            let mut st = c.prepare_cached("SELECT at, kind, detail FROM history WHERE facility = ?1 AND appliance = ?2 ORDER BY id DESC LIMIT ?3")?;
            let rows = st.query_map(params![facility, appliance, limit], |r| {
                Ok(Row {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })??)
    }

    /// Takes one message from the broker.
    pub fn take(&self, topic: &str, payload: &[u8], at: i64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if topic == UPTIME {
            // "1234 seconds"
            if let Some(up) = std::str::from_utf8(payload)
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<i64>().ok())
            {
                let started = at - up;
                // Only a restart moves it by more than the clock's jitter.
                if (self.broker_started.load(Ordering::Relaxed) - started).abs() > 3 {
                    self.broker_started.store(started, Ordering::Relaxed);
                }
            }
            return;
        }
        let Some((facility, appliance, leaf)) = fleet::parse_topic(topic) else {
            return;
        };
        let key = (facility.to_string(), appliance.to_string());
        match leaf {
            fleet::PRESENCE => {
                let Ok(p) = serde_json::from_slice::<Presence>(payload) else {
                    return tracing::warn!(topic, "an unreadable presence message; ignored");
                };
                let online = p.state == "online";
                let why = if online {
                    String::new()
                } else {
                    match p.why.as_deref() {
                        Some("lost") => {
                            "connection lost (no keep-alive: power, network or crash)".to_string()
                        }
                        Some("shutdown") => "stopped cleanly".to_string(),
                        Some(w) => w.to_string(),
                        None => "offline".into(),
                    }
                };
                let changed = {
                    let mut map = self.appliances.write().unwrap_or_else(|e| e.into_inner());
                    let a = map.entry(key).or_insert_with(|| Appliance {
                        facility: facility.into(),
                        appliance: appliance.into(),
                        ..Default::default()
                    });
                    a.last_message = at;
                    if let Some(k) = p.keep_alive {
                        a.keep_alive = k;
                    }
                    if online {
                        a.said_online = p.at;
                    }
                    let changed = a.online != Some(online);
                    if changed {
                        a.online = Some(online);
                        a.since = if online {
                            p.at.unwrap_or(at).min(at)
                        } else {
                            at
                        };
                    }
                    if changed || !online {
                        a.why = why.clone();
                    }
                    changed
                };
                if changed {
                    tracing::info!(facility, appliance, state = %p.state, why = %why, "appliance presence");
                    self.note(
                        at,
                        facility,
                        appliance,
                        "presence",
                        if online {
                            "online".into()
                        } else {
                            format!("offline: {why}")
                        },
                        None,
                    );
                }
            }
            fleet::STATUS => {
                let Ok(s) = serde_json::from_slice::<Status>(payload) else {
                    return tracing::warn!(topic, "an unreadable status message; ignored");
                };
                for e in &s.recent_events {
                    self.note(
                        e.at,
                        facility,
                        appliance,
                        "posture",
                        format!(
                            "{} {} → {}: {}",
                            e.subject,
                            e.from.as_deref().unwrap_or("-"),
                            e.to,
                            e.summary
                        ),
                        Some(e.seq),
                    );
                }
                let mut map = self.appliances.write().unwrap_or_else(|e| e.into_inner());
                let a = map.entry(key).or_insert_with(|| Appliance {
                    facility: facility.into(),
                    appliance: appliance.into(),
                    ..Default::default()
                });
                a.status = Some(s);
                a.status_received = at;
                a.last_message = at;
            }
            fleet::EVENT => {
                if let Ok(e) = serde_json::from_slice::<fleet::Event>(payload) {
                    self.note(
                        e.at,
                        facility,
                        appliance,
                        "posture",
                        format!(
                            "{} {} → {}: {}",
                            e.subject,
                            e.from.as_deref().unwrap_or("-"),
                            e.to,
                            e.summary
                        ),
                        Some(e.seq),
                    );
                }
            }
            fleet::ACK => {
                if let Ok(a) = serde_json::from_slice::<Ack>(payload) {
                    tracing::info!(facility, appliance, id = %a.id, ok = a.ok, "command acknowledged");
                    self.note(
                        at,
                        facility,
                        appliance,
                        "ack",
                        format!(
                            "{} {}: {}",
                            a.id,
                            if a.ok { "ok" } else { "failed" },
                            a.detail
                        ),
                        None,
                    );
                }
            }
            _ => {}
        }
    }

    /// Sends a command to an appliance (only while it is online: a command to a dead box would
    /// run whenever it comes back, which no operator expects).
    pub async fn command(
        &self,
        facility: &str,
        appliance: &str,
        cmd: &Command,
    ) -> Result<(), String> {
        match self.get(facility, appliance) {
            Some(a) if a.online == Some(true) => {}
            Some(_) => {
                return Err(
                    "the appliance is offline: commands are sent only while it is reachable".into(),
                )
            }
            None => return Err("no such appliance".into()),
        }
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("the hub is not connected to the broker")?;
        let payload = serde_json::to_vec(cmd).map_err(|e| e.to_string())?;
        client
            .publish(
                fleet::topic(facility, appliance, fleet::CMD),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .map_err(|e| format!("the broker did not take the command: {e}"))?;
        self.note(
            now(),
            facility,
            appliance,
            "command",
            format!(
                "{} {}",
                cmd.id(),
                serde_json::to_string(cmd).unwrap_or_default()
            ),
            None,
        );
        let _ = self.flush();
        Ok(())
    }

    /// The hub lost the broker: every appliance's liveness is unknown until the broker hands
    /// back their presence.
    fn broker_lost(&self, at: i64) {
        for a in self
            .appliances
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            if a.online.is_some() {
                a.online = None;
                a.since = at;
                a.why = "the hub lost its connection to the broker".into();
            }
        }
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

    /// Prometheus' text format.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let list = self.list();
        let now = now();
        let mut o = String::new();
        let b = self.broker();
        let _ = writeln!(o, "# HELP tsunagi_broker_connected Whether the hub is connected to the MQTT broker.\n# TYPE tsunagi_broker_connected gauge\ntsunagi_broker_connected {}", b.connected as u8);
        let _ = writeln!(o, "# HELP tsunagi_fleet_messages_total MQTT messages the hub took.\n# TYPE tsunagi_fleet_messages_total counter\ntsunagi_fleet_messages_total {}", self.messages.load(Ordering::Relaxed));
        let count = |f: &dyn Fn(&Appliance) -> bool| list.iter().filter(|a| f(a)).count();
        let _ = writeln!(o, "# HELP tsunagi_fleet_appliances Appliances by liveness.\n# TYPE tsunagi_fleet_appliances gauge");
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"online\"}} {}",
            count(&|a| a.online == Some(true))
        );
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"offline\"}} {}",
            count(&|a| a.online == Some(false))
        );
        let _ = writeln!(
            o,
            "tsunagi_fleet_appliances{{state=\"unknown\"}} {}",
            count(&|a| a.online.is_none())
        );
        let _ = writeln!(o, "# HELP tsunagi_fleet_reporting Appliances whose status the hub holds.\n# TYPE tsunagi_fleet_reporting gauge\ntsunagi_fleet_reporting {}", count(&|a| a.status.is_some()));
        let _ = writeln!(o, "# HELP tsunagi_fleet_alerts Alerts firing, by kind.\n# TYPE tsunagi_fleet_alerts gauge");
        let firing = self.firing();
        for k in ["offline", "lag", "posture", "certificate"] {
            let _ = writeln!(
                o,
                "tsunagi_fleet_alerts{{kind=\"{k}\"}} {}",
                firing.iter().filter(|f| f.2 == k).count()
            );
        }
        let lbl = |a: &Appliance| {
            format!(
                "facility=\"{}\",appliance=\"{}\"",
                esc(&a.facility),
                esc(&a.appliance)
            )
        };
        let _ = writeln!(o, "# HELP tsunagi_appliance_up Whether the appliance is connected to the broker.\n# TYPE tsunagi_appliance_up gauge");
        for a in &list {
            let _ = writeln!(
                o,
                "tsunagi_appliance_up{{{}}} {}",
                lbl(a),
                (a.online == Some(true)) as u8
            );
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_sync_backlog_segments Segments the appliance has not had acknowledged.\n# TYPE tsunagi_appliance_sync_backlog_segments gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_sync_backlog_segments{{{}}} {}",
                    lbl(a),
                    s.sync.backlog
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_sync_lag_segments Segments the hub's copy is behind the appliance.\n# TYPE tsunagi_appliance_sync_lag_segments gauge");
        for a in &list {
            if let Some(l) = a.lag() {
                let _ = writeln!(o, "tsunagi_appliance_sync_lag_segments{{{}}} {l}", lbl(a));
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_quarantine_files Files the appliance could not ingest.\n# TYPE tsunagi_appliance_quarantine_files gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_quarantine_files{{{}}} {}",
                    lbl(a),
                    s.quarantine
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_posture The appliance's posture (1 for its current state).\n# TYPE tsunagi_appliance_posture gauge");
        for a in &list {
            if a.status.is_some() {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_posture{{{},state=\"{}\"}} 1",
                    lbl(a),
                    esc(a.posture())
                );
            }
        }
        let _ = writeln!(o, "# HELP tsunagi_appliance_cert_expiry_seconds Seconds until the client certificate expires.\n# TYPE tsunagi_appliance_cert_expiry_seconds gauge");
        for a in &list {
            if let Some(s) = &a.status {
                let _ = writeln!(
                    o,
                    "tsunagi_appliance_cert_expiry_seconds{{{}}} {}",
                    lbl(a),
                    s.cert_not_after - now
                );
            }
        }
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where the hub's MQTT client connects, and with what.
pub struct Connect {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Runs the hub's MQTT client until `stop`: subscribes to every appliance's topics (again after
/// every connection), takes their messages, reconnects with backoff and jitter.
pub async fn run(fleet: Arc<Fleet>, c: Connect, mut stop: tokio::sync::watch::Receiver<bool>) {
    fleet.started.store(true, Ordering::Relaxed);
    {
        let mut b = fleet.broker.write().unwrap_or_else(|e| e.into_inner());
        *b = BrokerState {
            configured: true,
            connected: false,
            since: now(),
            why: "connecting".into(),
        };
    }
    let mut opts = MqttOptions::new(fleet::HUB_USER, c.host.clone(), c.port);
    opts.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_max_packet_size(256 << 10, 64 << 10)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            c.tls.clone(),
        )));
    let (client, mut el) = AsyncClient::new(opts, 1024);
    el.network_options.set_connection_timeout(10);
    *fleet.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
    let mut backoff =
        shared::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut first_failure = true;
    loop {
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    backoff.reset();
                    first_failure = true;
                    tracing::info!(broker = %format!("{}:{}", c.host, c.port), session_present = a.session_present, "connected to the broker");
                    *fleet.broker.write().unwrap_or_else(|e| e.into_inner()) = BrokerState { configured: true, connected: true, since: now(), why: String::new() };
                    // The broker's uptime first: it decides which retained `online` to believe.
                    let topics = [UPTIME.to_string()].into_iter().chain([fleet::PRESENCE, fleet::STATUS, fleet::EVENT, fleet::ACK].map(|leaf| format!("{}/+/+/{leaf}", fleet::ROOT)));
                    for t in topics {
                        if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                            tracing::error!(error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => fleet.take(&p.topic, &p.payload, now()),
                Ok(_) => {}
                Err(e) => {
                    let was = fleet.broker().connected;
                    if was {
                        // Without the broker nobody's liveness is known: say so rather than
                        // show the last state as if it were current.
                        fleet.broker_lost(now());
                    }
                    *fleet.broker.write().unwrap_or_else(|e| e.into_inner()) = BrokerState { configured: true, connected: false, since: if was { now() } else { fleet.broker().since }, why: e.to_string() };
                    if was || first_failure {
                        tracing::warn!(error = %e, "the broker connection failed; appliances' liveness is unknown until it is back");
                    }
                    first_failure = false;
                    let wait = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => {
                let _ = client.disconnect().await;
                return;
            }
        }
    }
}

/// Every few seconds: writes history, reads the copies' positions, evaluates alerts and sends
/// them to the webhook.
pub async fn upkeep(fleet: Arc<Fleet>, hub: Arc<crate::api::Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        if n % 5 == 1 {
            let mut positions = HashMap::new();
            let facilities: std::collections::HashSet<String> =
                fleet.list().into_iter().map(|a| a.facility).collect();
            for f in hub
                .facilities()
                .into_iter()
                .filter(|f| facilities.contains(f))
            {
                if let Ok(w) = hub.copy(&f) {
                    if let Ok(Ok(p)) = w.call(|c| crate::copy::position(c)).await {
                        positions.insert(f, p.seq);
                    }
                }
            }
            fleet.set_copy_positions(&positions);
        }
        let (started, ended) = fleet.evaluate(now());
        let f2 = fleet.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f2.flush()).await {
            tracing::error!(error = %format!("{e:#}"), "the fleet history cannot be written");
        }
        for (f, a, k, d) in &started {
            tracing::warn!(facility = %f, appliance = %a, kind = k, detail = %d, "fleet alert");
        }
        if let Some(url) = fleet.settings.webhook.clone() {
            let mut items: Vec<serde_json::Value> = started.iter().map(|(f, a, k, d)| serde_json::json!({"state": "firing", "kind": k, "facility": f, "appliance": a, "detail": d, "at": now()})).collect();
            items.extend(ended.iter().map(|(f, a, k)| serde_json::json!({"state": "resolved", "kind": k, "facility": f, "appliance": a, "at": now()})));
            if !items.is_empty() {
                let body =
                    serde_json::json!({"source": "tsunagi-hub", "alerts": items}).to_string();
                if let Err(e) = post_webhook(&url, body).await {
                    fleet.webhook_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(webhook = %url, error = %e, "the alert webhook failed");
                }
            }
        }
    }
}

/// POSTs JSON to an `http://` webhook (a relay on the operators' network forwards it on).
async fn post_webhook(url: &str, body: String) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// webhooks (to a relay on the operators' network) are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    Ok(())
}

/// Serves `/metrics` in plain HTTP (bind it to loopback or the operators' network).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    fleet: Arc<Fleet>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let f = fleet.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    f.metrics(),
                )
            }
        }),
    );
    // Plain HTTP for a scraper: a header deadline, at most 32 connections at once, one request
    // per connection, 30 s at most; nothing a stranger on the network can hold open.
    let limits = serve::Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        lifetime: Some(Duration::from_secs(30)),
        max_connections: 32,
        per_peer: 4,
        keep_alive: false,
        drain: Duration::from_secs(2),
        ..serve::Limits::web("metrics")
    };
    let service = move |_: &serve::Conn| {
        use tower::ServiceExt;
        let app = app.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(req.map(axum::body::Body::new))
        })
    };
    serve::serve(listener, None, limits, service, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(m.contains("tsunagi_appliance_sync_lag_segments{facility=\"1234567890\",appliance=\"box-1\"} 55"), "{m}");
        assert!(m.contains("tsunagi_appliance_posture{facility=\"1234567890\",appliance=\"box-1\",state=\"non-compliant\"} 1"));
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
