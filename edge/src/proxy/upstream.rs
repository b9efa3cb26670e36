//! The hub as the LAN proxy reaches it: a pool of kept-alive mutual-TLS connections on the
//! proxy's portal-only certificate, and whether the hub is reachable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::{full, Body};
use crate::identity::{self, Identity};

type Client = serve::client::Client<Body>;

/// Why a request could not be passed on.
#[derive(Debug)]
pub enum UpError {
    /// The hub could not be reached at all: the proxy goes offline.
    Unreachable(String),
    /// The hub was reached but the exchange failed.
    Failed(String),
}

/// The hub as the LAN proxy reaches it: on the proxy's own portal-only certificate
/// (`identity::PROXY`), never the appliance's identity, through one pooled client
/// (`serve::client`) that is built again when that certificate changes.
pub struct Upstream {
    url: String,
    identity_dir: PathBuf,
    fingerprint: String,
    hub_url: Option<String>,
    timeout: Duration,
    client: Mutex<Option<(SystemTime, Arc<Client>)>>,
}

impl Upstream {
    pub fn new(
        identity_dir: &Path,
        hub_url: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Upstream> {
        let id = Identity::load(identity_dir)?;
        let url = hub_url.clone().unwrap_or_else(|| id.enrolment.hub.clone());
        serve::client::origin(&url).map_err(anyhow::Error::msg)?;
        let fingerprint = id.enrolment.fingerprint.clone();
        Ok(Upstream {
            url,
            identity_dir: identity_dir.to_owned(),
            fingerprint,
            hub_url,
            timeout,
            client: Mutex::new(None),
        })
    }

    /// The client, built again when the proxy's certificate changes (a renewal): connections made
    /// with the old one are not reused.
    fn client(&self) -> anyhow::Result<Arc<Client>> {
        let stamp = std::fs::metadata(self.identity_dir.join(identity::PROXY))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, client)) = c.as_ref() {
            if *s == stamp {
                return Ok(client.clone());
            }
        }
        let tls = identity::proxy_tls_config(&self.identity_dir, &self.fingerprint)?;
        let client = Arc::new(
            Client::https(
                &self.url,
                tls,
                serve::client::Options {
                    connect: self.timeout,
                    max_idle: 32,
                    ..serve::client::Options::default()
                },
            )
            .map_err(anyhow::Error::msg)?,
        );
        *c = Some((stamp, client.clone()));
        Ok(client)
    }

    /// Sends `req` to the hub.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpError> {
        let client = self
            .client()
            .map_err(|e| UpError::Unreachable(format!("{e:#}")))?;
        client.send(req).await.map_err(|e| match e {
            serve::client::Error::Connect(m) => UpError::Unreachable(format!(
                "cannot reach the hub at {}: {m}",
                client.authority()
            )),
            serve::client::Error::Failed(m) => UpError::Failed(m),
        })
    }

    /// Whether the hub answers the portal on the proxy's certificate (the stylesheet: public,
    /// small, and served only to a valid proxy certificate).
    pub async fn ping(&self) -> bool {
        let req = Request::get("/static/portal.css")
            .body(full(Bytes::new()))
            .expect("request");
        match self.send(req).await {
            Ok(r) => {
                let ok = r.status().is_success();
                let _ = r.into_body().collect().await;
                ok
            }
            Err(_) => false,
        }
    }

    pub fn hub_url(&self) -> Option<&str> {
        self.hub_url.as_deref()
    }
}

/// Online, or offline since a moment (Unix seconds).
#[derive(Default)]
pub struct Health {
    offline_since: Mutex<Option<i64>>,
}

impl Health {
    pub fn offline_since(&self) -> Option<i64> {
        *self.offline_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the hub unreachable; returns true when that is news.
    pub fn down(&self, why: &str) -> bool {
        let mut s = self.offline_since.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(shared::time::now());
            tracing::warn!(why = %why, "the hub cannot be reached: serving the offline view");
            true
        } else {
            false
        }
    }

    /// Marks the hub reachable; returns true when that is news.
    pub fn up(&self) -> bool {
        let mut s = self.offline_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = s.take() {
            tracing::info!(
                offline_for_s = shared::time::now() - since,
                "the hub is reachable again: back to the portal"
            );
            true
        } else {
            false
        }
    }
}
