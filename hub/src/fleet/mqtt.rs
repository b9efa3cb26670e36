//! The hub's MQTT client: the loop that subscribes to every appliance's topics and reconnects
//! (`run`), what each message does to the fleet (`Fleet::take`), and the commands it publishes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use shared::fleet::{self, Ack, Command, Presence, Status};

use super::{Appliance, BrokerState, Fleet, UPTIME};
use crate::now;

impl Fleet {
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
        self.flush_later();
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
