//! The hub as the LAN proxy reaches it: a pool of kept-alive mutual-TLS connections on the
//! proxy's portal-only certificate, and whether the hub is reachable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use rustls::pki_types::ServerName;

use super::{full, Body};
use crate::client;
use crate::identity::{self, Identity};

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Why a request could not be passed on.
#[derive(Debug)]
pub enum UpError {
    /// The hub could not be reached at all: the proxy goes offline.
    Unreachable(String),
    /// The hub was reached but the exchange failed.
    Failed(String),
}

/// The hub as the LAN proxy reaches it: on the proxy's own portal-only certificate
/// (`identity::PROXY`), never the appliance's identity.
pub struct Upstream {
    host: String,
    port: u16,
    authority: HeaderValue,
    identity_dir: PathBuf,
    fingerprint: String,
    hub_url: Option<String>,
    timeout: Duration,
    tls: Mutex<Option<(SystemTime, Arc<rustls::ClientConfig>)>>,
    idle: Mutex<Vec<Sender>>,
}

impl Upstream {
    pub fn new(
        identity_dir: &Path,
        hub_url: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Upstream> {
        let id = Identity::load(identity_dir)?;
        let url = hub_url.clone().unwrap_or_else(|| id.enrolment.hub.clone());
        let (host, port) = client::host_port(&url)?;
        let authority = HeaderValue::from_str(&format!("{host}:{port}")).context("hub address")?;
        let fingerprint = id.enrolment.fingerprint.clone();
        Ok(Upstream {
            host,
            port,
            authority,
            identity_dir: identity_dir.to_owned(),
            fingerprint,
            hub_url,
            timeout,
            tls: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The client TLS configuration, reloaded when the proxy's certificate changes (a renewal).
    fn tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let stamp = std::fs::metadata(self.identity_dir.join(identity::PROXY))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut t = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, c)) = t.as_ref() {
            if *s == stamp {
                return Ok(c.clone());
            }
        }
        let cfg = identity::proxy_tls_config(&self.identity_dir, &self.fingerprint)?;
        if t.is_some() {
            // New identity: connections made with the old one are not reused.
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        *t = Some((stamp, cfg.clone()));
        Ok(cfg)
    }

    async fn connect(&self) -> Result<Sender, UpError> {
        let tls = self
            .tls()
            .map_err(|e| UpError::Unreachable(format!("{e:#}")))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| UpError::Unreachable(e.to_string()))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot reach the hub at {}:{}: {e}", self.host, self.port))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with the hub failed: {e}"))
        };
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| UpError::Unreachable("the hub did not answer in time".into()))?
            .map_err(UpError::Unreachable)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| UpError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// A pooled connection ready for a request, or a new one.
    async fn sender(&self) -> Result<Sender, UpError> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.retain(|s| !s.is_closed());
                let ready = idle.iter().position(|s| s.is_ready());
                ready.map(|i| idle.swap_remove(i))
            };
            match candidate {
                Some(s) if s.is_ready() => return Ok(s),
                Some(_) => continue,
                None => return self.connect().await,
            }
        }
    }

    fn put_back(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 32 {
            idle.push(s);
        }
    }

    /// Sends `req` to the hub. A pooled connection the hub has closed meanwhile is retried once on
    /// a fresh one (the request was not sent on it).
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpError> {
        req.headers_mut()
            .insert(header::HOST, self.authority.clone());
        for attempt in 0..2 {
            let mut s = self.sender().await?;
            match s.try_send_request(req).await {
                Ok(resp) => {
                    // The connection is ready again once this response's body has been read.
                    self.put_back(s);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if attempt == 0 => req = back,
                    _ => return Err(UpError::Failed(e.into_error().to_string())),
                },
            }
        }
        Err(UpError::Failed("the hub closed the connection".into()))
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
