//! Uploads the outbox to the hub in order. Each batch is as large as the link carried in about two
//! seconds last time (so a slow link gets small batches and a fast one large), paced under an
//! optional bandwidth limit. Failures back off exponentially with jitter; the backlog waits in the
//! outbox for as long as the hub is away. Acknowledged segments are pruned after the retention.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::config::SyncSettings;
use crate::identity::{self, Identity};
use crate::outbox;
use crate::store::Handle;

/// Smallest batch budget: even a poor link gets whole segments through.
const MIN_BUDGET: usize = 64 << 10;
/// Seconds of link time a batch aims at.
const BATCH_SECONDS: f64 = 2.0;

#[derive(Debug, Deserialize)]
struct Position {
    seq: u64,
    hash: String,
}

#[derive(Debug, Deserialize)]
struct Refused {
    error: String,
    message: String,
    seq: Option<u64>,
    hash: Option<String>,
}

fn stamp() -> String {
    shared::time::rfc3339(shared::time::now())
}

/// Runs `f` on the store's thread without blocking the async runtime.
pub async fn ask<T: Send + 'static>(
    store: &Arc<Handle>,
    f: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let s = store.clone();
    Ok(tokio::task::spawn_blocking(move || s.call(f)).await??)
}

fn hash32(hex: &str) -> anyhow::Result<[u8; 32]> {
    shared::chain::unhex(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("the hub sent a malformed hash"))
}

pub use shared::backoff::Backoff;

/// What one upload round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Nothing to send: the hub holds everything.
    CaughtUp,
    Sent {
        segments: usize,
        bytes: usize,
    },
}

pub struct Syncer {
    store: Arc<Handle>,
    pub identity: Identity,
    hub: Option<String>,
    /// Built from the identity once, and again after a renewal.
    client: crate::client::Client,
    settings: SyncSettings,
    budget: usize,
    asked_hub: bool,
    pub rounds: u64,
}

impl Syncer {
    pub fn new(
        store: Arc<Handle>,
        identity: Identity,
        hub: Option<String>,
        settings: SyncSettings,
    ) -> anyhow::Result<Syncer> {
        let budget = (256 << 10).min(settings.max_batch_bytes);
        let client = identity.client(hub.as_deref())?;
        Ok(Syncer {
            store,
            identity,
            hub,
            client,
            settings,
            budget,
            asked_hub: false,
            rounds: 0,
        })
    }

    /// Learns where the hub's copy stands. A hub behind our record (restored from an older backup)
    /// gets the segments again from its position; a hub ahead of this store means the store is not
    /// the one the hub's copy came from, and syncing stops until someone restores.
    async fn ask_hub(&mut self) -> anyhow::Result<()> {
        let reply = self.client.get("/v1/position").await?;
        if !reply.status.is_success() {
            anyhow::bail!("the hub refused: {}", reply.message());
        }
        let p: Position = reply.json()?;
        let hash = hash32(&p.hash)?;
        let (head, head_hash) = ask(&self.store, |c| outbox::head(c)).await??;
        if p.seq > head {
            anyhow::bail!(
                "the hub's copy of this facility is at segment {} but this store only reaches {head}: this store is not the one the copy came from; restore from the hub (`tsunagi-edge restore`) instead of syncing",
                p.seq
            );
        }
        if p.seq == head && hash != head_hash {
            anyhow::bail!("the hub's copy and this store both reach segment {head} but differ: the chains forked; a person must look");
        }
        let at = stamp();
        ask(&self.store, move |c| {
            outbox::record_ack(c, p.seq, &hash, &at).and_then(|_| set_hub(c, p.seq, &hash))
        })
        .await??;
        self.asked_hub = true;
        Ok(())
    }

    /// Sends one batch, or reports that there is nothing to send.
    pub async fn round(&mut self) -> anyhow::Result<Round> {
        if !self.asked_hub {
            self.ask_hub().await?;
        }
        let ((hub_seq, _), (head, _)) = ask(&self.store, |c| {
            Ok::<_, rusqlite::Error>((outbox::hub_position(c)?, outbox::head(c)?))
        })
        .await??;
        if head <= hub_seq {
            return Ok(Round::CaughtUp);
        }
        let budget = self.budget;
        let segs = ask(
            &self.store,
            move |c| -> rusqlite::Result<Vec<outbox::Segment>> {
                let mut out = Vec::new();
                let mut bytes = 0;
                let mut after = hub_seq;
                'more: loop {
                    let page = outbox::segments_after(c, after, 64)?;
                    if page.is_empty() {
                        break;
                    }
                    for s in page {
                        if !out.is_empty() && bytes + s.wire_len() > budget {
                            break 'more;
                        }
                        bytes += s.wire_len();
                        after = s.seq;
                        out.push(s);
                    }
                }
                Ok(out)
            },
        )
        .await??;
        match segs.first() {
            Some(s) if s.seq == hub_seq + 1 => {}
            _ => anyhow::bail!("segment {} is no longer held by this store, but the hub needs it: restore from the hub", hub_seq + 1),
        }
        let batch = Bytes::from(shared::wire::encode_batch(
            &self.identity.cert.facility,
            &segs,
        ));
        let (n, bytes) = (segs.len(), batch.len());
        drop(segs);
        let t0 = Instant::now();
        let reply = self
            .client
            .call(
                Method::POST,
                "/v1/segments",
                "application/octet-stream",
                batch,
            )
            .await;
        let elapsed = t0.elapsed();
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.budget = (self.budget / 2).max(MIN_BUDGET);
                return Err(e);
            }
        };
        self.rounds += 1;
        match reply.status {
            StatusCode::OK => {
                let p: Position = reply.json()?;
                let hash = hash32(&p.hash)?;
                let at = stamp();
                ask(&self.store, move |c| {
                    outbox::record_ack(c, p.seq, &hash, &at)
                })
                .await??;
                let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
                let mut next = (rate * BATCH_SECONDS) as usize;
                if let Some(limit) = self.settings.bandwidth_limit {
                    next = next.min((limit as f64 * BATCH_SECONDS) as usize);
                    let due = Duration::from_secs_f64(bytes as f64 / limit as f64);
                    if due > elapsed {
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
                self.budget = next.clamp(MIN_BUDGET, self.settings.max_batch_bytes);
                Ok(Round::Sent { segments: n, bytes })
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                self.budget = (self.budget / 4).max(MIN_BUDGET);
                anyhow::bail!("the hub refused a batch of {bytes} bytes as too large; sending smaller batches")
            }
            StatusCode::CONFLICT => {
                let r: Refused = reply.json()?;
                if r.error == "gap" {
                    // The hub is somewhere else than we thought: resend from where it is.
                    self.asked_hub = false;
                    let (seq, hash) =
                        (r.seq.unwrap_or(0), hash32(r.hash.as_deref().unwrap_or(""))?);
                    tracing::warn!(
                        hub = seq,
                        sent_from = hub_seq + 1,
                        "the hub's copy is elsewhere than recorded; resending from its position"
                    );
                    ask(&self.store, move |c| set_hub(c, seq, &hash)).await??;
                    return Ok(Round::Sent { segments: 0, bytes });
                }
                anyhow::bail!(
                    "the hub refused segment {}: {} ({})",
                    hub_seq + 1,
                    r.message,
                    r.error
                )
            }
            s => anyhow::bail!("the hub answered {s}: {}", reply.message()),
        }
    }

    /// Uploads until caught up; the first failure ends it. For `tsunagi-edge sync --once`.
    pub async fn until_caught_up(&mut self) -> anyhow::Result<(u64, usize)> {
        let (mut segments, mut bytes) = (0u64, 0usize);
        loop {
            match self.round().await {
                Ok(Round::CaughtUp) => return Ok((segments, bytes)),
                Ok(Round::Sent {
                    segments: s,
                    bytes: b,
                }) => {
                    segments += s as u64;
                    bytes += b;
                }
                Err(e) => {
                    let (msg, at) = (format!("{e:#}"), stamp());
                    let _ = ask(&self.store, move |c| outbox::record_failure(c, &msg, &at)).await;
                    return Err(e);
                }
            }
        }
    }

    /// The daemon's loop: rounds, renewal, backoff and pruning, until `stop` turns true.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut last_prune: Option<Instant> = None;
        let mut renew_after = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            if Instant::now() >= renew_after {
                match identity::renew_if_due(
                    &mut self.identity,
                    self.hub.as_deref(),
                    shared::time::now(),
                )
                .await
                {
                    Ok(true) => match self.identity.client(self.hub.as_deref()) {
                        Ok(c) => {
                            self.client = c;
                            tracing::info!(serial = %self.identity.cert.serial, "certificate renewed");
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "the renewed identity cannot be used")
                        }
                    },
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; retrying in a minute");
                        renew_after = Instant::now() + Duration::from_secs(60);
                    }
                }
            }
            let wait = match self.round().await {
                Ok(Round::Sent { .. }) => {
                    backoff.reset();
                    Duration::ZERO
                }
                Ok(Round::CaughtUp) => {
                    backoff.reset();
                    if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                        let cutoff = shared::time::rfc3339(
                            shared::time::now() - self.settings.retention.as_secs() as i64,
                        );
                        match ask(&self.store, move |c| outbox::prune(c, &cutoff)).await {
                            Ok(Ok(n)) if n > 0 => tracing::info!(
                                segments = n,
                                "pruned acknowledged segments past the retention"
                            ),
                            Ok(Err(e)) => tracing::warn!(error = %e, "pruning failed"),
                            _ => {}
                        }
                        last_prune = Some(Instant::now());
                    }
                    self.settings.interval
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    let (msg, at) = (format!("{e:#}"), stamp());
                    tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "sync failed");
                    let _ = ask(&self.store, move |c| outbox::record_failure(c, &msg, &at)).await;
                    wait
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Sets the recorded hub position without touching acknowledgement times.
fn set_hub(c: &rusqlite::Connection, seq: u64, hash: &[u8; 32]) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE sync_state SET hub_seq = ?1, hub_hash = ?2 WHERE one = 1",
        rusqlite::params![seq as i64, &hash[..]],
    )?;
    Ok(())
}

/// Loads the identity and makes a syncer, or says why sync cannot run.
pub fn syncer(
    store: Arc<Handle>,
    identity_dir: &std::path::Path,
    hub: Option<String>,
    settings: SyncSettings,
) -> anyhow::Result<Syncer> {
    let id = Identity::load(identity_dir).context("sync needs an enrolled appliance")?;
    Syncer::new(store, id, hub, settings)
}
