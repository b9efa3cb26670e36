//! The proxy's upkeep: the hub checked every few seconds and, while it is reachable, the offline
//! verifiers kept current and the accesses served offline handed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Proxy, VERIFIERS_EVERY};
use crate::client;
use crate::identity::Identity;
use crate::local;

impl Proxy {
    /// While running: checks the hub every few seconds; when it is reachable, keeps the offline
    /// verifiers current and hands in the accesses served offline.
    pub async fn maintain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut last_verifiers: Option<Instant> = None;
        loop {
            tracing::trace!("checking the hub");
            // Nothing here may hang the upkeep: each exchange has its own deadline.
            let limit = self.settings.hub_timeout + Duration::from_secs(10);
            let reachable = tokio::time::timeout(limit, self.upstream.ping())
                .await
                .unwrap_or(false);
            if reachable {
                if self.health.up() {
                    last_verifiers = None;
                }
                if last_verifiers.is_none_or(|t| t.elapsed() >= VERIFIERS_EVERY) {
                    match tokio::time::timeout(Duration::from_secs(30), self.refresh_verifiers())
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the hub did not answer in 30 s")))
                    {
                        Ok(n) => {
                            tracing::debug!(users = n, "offline verifiers refreshed");
                            last_verifiers = Some(Instant::now());
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot refresh the offline verifiers")
                        }
                    }
                }
                tracing::trace!("handing in offline accesses");
                if let Err(e) =
                    tokio::time::timeout(Duration::from_secs(60), self.upload_accesses())
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the hub did not answer in 60 s")))
                {
                    tracing::warn!(error = %format!("{e:#}"), "cannot hand the offline accesses to the hub yet");
                }
            } else {
                self.health.down("the hub does not answer its ping");
            }
            let local = self.local.clone();
            if let Ok(Ok(ids)) = tokio::task::spawn_blocking(move || local.terminal_ids()).await {
                *self.terminals.write().unwrap_or_else(|e| e.into_inner()) =
                    ids.into_iter().collect();
            }
            let policy = self.policy.clone();
            let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
            let pause = if self.health.offline_since().is_some() {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn client(&self) -> anyhow::Result<client::Client> {
        Identity::load(&self.identity_dir)?.client(self.upstream.hub_url())
    }

    async fn refresh_verifiers(&self) -> anyhow::Result<usize> {
        #[derive(serde::Deserialize)]
        struct List {
            users: Vec<local::Verifier>,
        }
        let r = self.client()?.get("/v1/verifiers").await?;
        if !r.status.is_success() {
            anyhow::bail!("the hub refused the verifiers: {}", r.message());
        }
        let list: List = r.json()?;
        let local = self.local.clone();
        let n = list.users.len();
        tokio::task::spawn_blocking(move || {
            local.replace_verifiers(&list.users, shared::time::now())
        })
        .await??;
        Ok(n)
    }

    async fn upload_accesses(&self) -> anyhow::Result<()> {
        loop {
            let local = self.local.clone();
            let batch = tokio::task::spawn_blocking(move || local.pending(1000)).await??;
            let Some(top) = batch.last().map(|a| a.seq) else {
                return Ok(());
            };
            let r = self
                .client()?
                .post_json("/v1/offline-accesses", &batch)
                .await?;
            if !r.status.is_success() {
                anyhow::bail!("the hub refused the offline accesses: {}", r.message());
            }
            let local = self.local.clone();
            tokio::task::spawn_blocking(move || local.uploaded(top)).await??;
            tracing::info!(
                accesses = batch.len(),
                "offline accesses handed to the hub's audit log"
            );
        }
    }
}
