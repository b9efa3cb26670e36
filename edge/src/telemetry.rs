//! Telemetry to the hub's operators over MQTT (rumqttc, mutual TLS with the appliance's client
//! certificate), after the field notes (section 2):
//!
//! - liveness is the broker's: a keep-alive, and a retained last will `offline` (`why: lost`)
//!   that the broker publishes when the connection dies; a clean stop publishes `shutdown`;
//! - state is a separate retained status ([`shared::fleet::Status`]), published when it changes
//!   and at least every `telemetry.status_every`;
//! - a persistent session (clean session off); rumqttc drops unacknowledged packets when the
//!   broker answers `session_present = false`, so after every connection the appliance
//!   subscribes again and republishes its unsent posture events itself;
//! - rumqttc has no reconnect backoff: this loop waits with exponential backoff and jitter;
//! - commands (sync from a sequence, renew the certificate now, run the checks now) are answered
//!   on the ack topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use shared::fleet::{self, Ack, Command, Presence};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::local::Local;
use crate::outbox;
use crate::policy::{Posture, State};
use crate::store::Handle;
use crate::sync::{ask, Backoff};
use shared::time::now;

/// A request to run every check now; the answer is the new posture.
pub type CheckNow = oneshot::Sender<anyhow::Result<Posture>>;

/// What the telemetry loop reads from the rest of the daemon.
pub struct Parts {
    pub store: Arc<Handle>,
    pub local: Arc<Local>,
    pub posture: watch::Receiver<Option<Posture>>,
    pub checks_now: mpsc::Sender<CheckNow>,
    /// `telemetry.status_every`, told to the hub in every status.
    pub status_every: Duration,
}

fn state_code(s: State) -> String {
    s.code().to_string()
}

/// The fleet's view of the posture.
pub fn summary(p: &Posture) -> fleet::PostureSummary {
    let mut t = fleet::Terminals::default();
    for term in &p.terminals {
        t.total += 1;
        match (term.known, term.state) {
            (false, _) => t.unknown += 1,
            (true, State::Compliant) => t.compliant += 1,
            (true, State::InGrace) => t.in_grace += 1,
            (true, State::NonCompliant) => t.non_compliant += 1,
            (true, State::Error) => t.unknown += 1,
        }
    }
    fleet::PostureSummary {
        state: state_code(p.state),
        checks: p
            .checks
            .iter()
            .map(|c| fleet::CheckSummary {
                check: c.check.clone(),
                state: state_code(c.state),
                summary: c.outcome.summary.clone(),
                remediation: c.outcome.remediation.clone(),
            })
            .collect(),
        terminals: t,
    }
}

fn to_wire(e: &crate::policy::Event) -> fleet::Event {
    fleet::Event {
        seq: e.seq,
        at: e.at,
        subject: e.subject.clone(),
        from: e.from.map(state_code),
        to: state_code(e.to),
        summary: e.summary.clone(),
    }
}

/// The status as of now.
pub async fn status(
    parts: &Parts,
    id: &Identity,
    started_at: i64,
) -> anyhow::Result<fleet::Status> {
    let (sync, quarantine) = ask(
        &parts.store,
        |c| -> rusqlite::Result<(fleet::SyncStatus, u64)> {
            let (hub_seq, _) = outbox::hub_position(c)?;
            let (head, _) = outbox::head(c)?;
            let (acked_at, last_error): (Option<String>, Option<String>) = c.query_row(
                "SELECT acked_at, last_error FROM sync_state WHERE one = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let bytes: i64 = c.query_row(
                "SELECT coalesce(sum(length(body)), 0) FROM outbox WHERE seq > ?1",
                [hub_seq as i64],
                |r| r.get(0),
            )?;
            let q: i64 = c.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
            Ok((
                fleet::SyncStatus {
                    acked_seq: hub_seq,
                    head_seq: head,
                    backlog: head.saturating_sub(hub_seq),
                    backlog_bytes: bytes,
                    last_ack_at: acked_at,
                    last_error,
                },
                q as u64,
            ))
        },
    )
    .await??;
    let local = parts.local.clone();
    let recent = tokio::task::spawn_blocking(move || local.recent_events(20)).await??;
    let lan = crate::identity::lan_cert_not_after(&id.dir);
    Ok(fleet::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        at: now(),
        started_at,
        sync,
        quarantine,
        posture: parts
            .posture
            .borrow()
            .as_ref()
            .map(summary)
            .unwrap_or_else(|| fleet::PostureSummary {
                state: "error".into(),
                checks: vec![],
                terminals: Default::default(),
            }),
        cert_not_after: id.cert.not_after,
        lan_cert_not_after: lan,
        recent_events: recent.iter().map(to_wire).collect(),
        every: parts.status_every.as_secs(),
    })
}

/// The part of a status whose change is worth a publish (not its time).
fn fingerprint(s: &fleet::Status) -> String {
    let mut s = s.clone();
    s.at = 0;
    serde_json::to_string(&s).unwrap_or_default()
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Runs telemetry until `stop`: connects, publishes, answers commands, reconnects with backoff.
pub async fn run(cfg: Config, parts: Parts, mut stop: watch::Receiver<bool>) {
    let Some((host, port)) = cfg.telemetry.broker.clone() else {
        return;
    };
    let started_at = now();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let id = match Identity::load(&cfg.identity_dir()) {
            Ok(id) => id,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        match session(
            &cfg,
            &parts,
            &id,
            &host,
            port,
            started_at,
            &mut backoff,
            &mut stop,
        )
        .await
        {
            Ok(End::Stopped) => return,
            Ok(End::Renewed) => tracing::info!("telemetry reconnects with the renewed certificate"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "telemetry cannot run; trying again in a minute");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

enum End {
    Stopped,
    Renewed,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one MQTT session's inputs, taken apart by the loop that restarts it"
)]
async fn session(
    cfg: &Config,
    parts: &Parts,
    id: &Identity,
    host: &str,
    port: u16,
    started_at: i64,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<End> {
    let (facility, appliance) = (id.cert.facility.clone(), id.cert.appliance.clone());
    let t = |leaf: &str| fleet::topic(&facility, &appliance, leaf);
    let keep_alive = cfg.telemetry.keep_alive;
    // The broker forces the client ID to the certificate's CN; asking for the same keeps the
    // persistent session the appliance expects.
    let mut opts = MqttOptions::new(
        provisioning::cert::mqtt_user(&facility, &appliance),
        host,
        port,
    );
    opts.set_keep_alive(keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(256 << 10, 256 << 10)
        .set_last_will(LastWill::new(
            t(fleet::PRESENCE),
            json(&Presence {
                state: "offline".into(),
                why: Some("lost".into()),
                at: None,
                keep_alive: Some(keep_alive.as_secs()),
            }),
            QoS::AtLeastOnce,
            true,
        ))
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            id.tls_config()?,
        )));
    let (client, mut el) = AsyncClient::new(opts, 256);
    el.network_options.set_connection_timeout(10);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut posture = parts.posture.clone();
    let mut connected = false;
    let mut last_fp = String::new();
    let mut last_publish: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(16);
    loop {
        let mut publish_status = false;
        tokio::select! {
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    backoff.reset();
                    connected = true;
                    if let Some(since) = failing_since.take() {
                        tracing::info!(broker = %format!("{host}:{port}"), after_s = since.elapsed().as_secs(), session_present = c.session_present, "telemetry connected again");
                    } else {
                        tracing::info!(broker = %format!("{host}:{port}"), session_present = c.session_present, "telemetry connected");
                    }
                    // Subscriptions do not survive a lost session: subscribe every time, and
                    // before saying online, so a command sent on seeing us online finds us.
                    client.subscribe(t(fleet::CMD), QoS::AtLeastOnce).await?;
                    let online = Presence { state: "online".into(), why: None, at: Some(now()), keep_alive: Some(keep_alive.as_secs()) };
                    client.publish(t(fleet::PRESENCE), QoS::AtLeastOnce, true, json(&online)).await?;
                    publish_events(&client, parts, &t(fleet::EVENT)).await;
                    last_fp.clear();
                    publish_status = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t(fleet::CMD) => {
                    match serde_json::from_slice::<Command>(&p.payload) {
                        Ok(cmd) => {
                            tracing::info!(command = cmd.name(), id = %cmd.id(), "command from the hub");
                            let (cfg, tx, checks_now, store) = (cfg.clone(), ack_tx.clone(), parts.checks_now.clone(), parts.store.clone());
                            tokio::spawn(async move {
                                let ack = answer(&cfg, &store, &checks_now, cmd).await;
                                let _ = tx.send(ack).await;
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "a command from the hub could not be read; ignored"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    connected = false;
                    let wait = backoff.next_delay();
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(broker = %format!("{host}:{port}"), error = %e, retry_in_ms = wait.as_millis() as u64, "telemetry disconnected");
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, "telemetry still disconnected");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return Ok(End::Stopped),
                    }
                }
            },
            Some(ack) = ack_rx.recv() => {
                tracing::info!(id = %ack.id, ok = ack.ok, detail = %ack.detail, "command answered");
                client.publish(t(fleet::ACK), QoS::AtLeastOnce, false, json(&ack)).await?;
                publish_status = true;
            }
            _ = tick.tick() => {
                if connected {
                    publish_events(&client, parts, &t(fleet::EVENT)).await;
                }
                publish_status = true;
                // A renewed certificate: reconnect with it (the broker may refuse the old one soon).
                if let Ok(cur) = Identity::load(&id.dir) {
                    if cur.cert.serial != id.cert.serial {
                        let _ = client.disconnect().await;
                        return Ok(End::Renewed);
                    }
                }
            }
            Ok(()) = posture.changed() => publish_status = true,
            _ = stop.changed() => {
                if connected {
                    let bye = Presence { state: "offline".into(), why: Some("shutdown".into()), at: Some(now()), keep_alive: Some(keep_alive.as_secs()) };
                    let _ = client.publish(t(fleet::PRESENCE), QoS::AtLeastOnce, true, json(&bye)).await;
                    let _ = client.disconnect().await;
                    // Let the goodbye and the disconnect go out.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async { while el.poll().await.is_ok() {} }).await;
                }
                return Ok(End::Stopped);
            }
        }
        if publish_status && connected {
            match status(parts, id, started_at).await {
                Ok(s) => {
                    let fp = fingerprint(&s);
                    if fp != last_fp
                        || last_publish.is_none_or(|t| t.elapsed() >= cfg.telemetry.status_every)
                    {
                        client
                            .publish(t(fleet::STATUS), QoS::AtLeastOnce, true, json(&s))
                            .await?;
                        last_fp = fp;
                        last_publish = Some(Instant::now());
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "the status cannot be read"),
            }
        }
    }
}

/// Publishes the posture events the hub has not had yet (QoS 1; the hub ignores repeats).
async fn publish_events(client: &AsyncClient, parts: &Parts, topic: &str) {
    let local = parts.local.clone();
    let Ok(Ok(events)) = tokio::task::spawn_blocking(move || local.unsent_events(100)).await else {
        return;
    };
    let mut last = None;
    for e in &events {
        if client
            .publish(topic, QoS::AtLeastOnce, false, json(&to_wire(e)))
            .await
            .is_err()
        {
            break;
        }
        last = Some(e.seq);
    }
    if let Some(seq) = last {
        let local = parts.local.clone();
        let _ = tokio::task::spawn_blocking(move || local.events_sent(seq)).await;
    }
}

/// Carries out a command and says how it went.
async fn answer(
    cfg: &Config,
    store: &Arc<Handle>,
    checks_now: &mpsc::Sender<CheckNow>,
    cmd: Command,
) -> Ack {
    let id = cmd.id().to_string();
    let r: anyhow::Result<String> = async {
        match cmd {
            Command::Check { .. } => {
                let (tx, rx) = oneshot::channel();
                checks_now
                    .send(tx)
                    .await
                    .map_err(|_| anyhow::anyhow!("the posture checks are not running"))?;
                let p = rx
                    .await
                    .map_err(|_| anyhow::anyhow!("the posture checks stopped"))??;
                let failing: Vec<String> = p
                    .checks
                    .iter()
                    .filter(|c| c.state != State::Compliant)
                    .map(|c| format!("{} {}", c.check, c.state.code()))
                    .collect();
                Ok(format!(
                    "posture {}{}",
                    p.state.code(),
                    if failing.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", failing.join(", "))
                    }
                ))
            }
            Command::Renew { .. } => {
                let mut id = Identity::load(&cfg.identity_dir())?;
                identity::renew(&mut id, cfg.hub_url.as_deref()).await?;
                Ok(format!(
                    "renewed: serial {}, valid until {}",
                    id.cert.serial,
                    shared::time::rfc3339(id.cert.not_after)
                ))
            }
            Command::SyncFrom { seq, .. } => {
                let r = ask(store, move |c| outbox::rewind_hub(c, seq)).await??;
                r.map_err(anyhow::Error::msg)
            }
        }
    }
    .await;
    match r {
        Ok(detail) => Ack {
            id,
            ok: true,
            detail,
            at: now(),
        },
        Err(e) => Ack {
            id,
            ok: false,
            detail: format!("{e:#}"),
            at: now(),
        },
    }
}
