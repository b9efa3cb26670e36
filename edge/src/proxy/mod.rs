//! The LAN proxy: the facility's browsers reach the hub's portal through the appliance, which
//! holds the facility's identity, so no terminal needs a certificate of its own.
//!
//! - HTTPS on the LAN with a server certificate the network CA issued for the appliance's LAN
//!   names (`identity::LAN`, reloaded when renewed); TLS 1.2 and 1.3 with AEAD suites only.
//! - Plain HTTP serves one page that explains how to trust the network's root, and the root.
//! - Each request goes on to the hub over mutual TLS as the facility, on a small pool of kept-alive
//!   connections. Bodies stream both ways. Headers from the LAN that claim an identity are
//!   stripped; the appliance names the terminal itself (`x-tsunagi-terminal`).
//! - Sessions idle for longer than `proxy.idle` end here too, whatever the hub would allow.
//! - Each terminal carries a cookie the appliance set; `TerminalPolicy` may allow, warn or refuse it.
//! - When the hub cannot be reached, the offline view (`offline.rs`) serves the facility's own
//!   records from the store, read-only, to its own staff, and keeps an audit of it for the hub.

mod offline;
pub use offline::fields;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::client;
use crate::config::ProxySettings;
use crate::identity::{self, Identity};
use crate::local;
use crate::policy::{Terminal, TerminalPolicy, Verdict};
use crate::store::Key;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// The largest request body the proxy passes on (forms and uploads; the portal takes no more).
pub const MAX_UPLOAD: usize = 8 << 20;
/// The hub's session cookie, whose idle time the proxy also watches.
pub const HUB_SESSION: &str = "__Host-tsunagi";
/// The cookie that names a terminal to the appliance.
pub const TERMINAL_COOKIE: &str = "__Host-tsunagi-terminal";
/// How often the offline verifiers are fetched again while the hub is reachable: a password
/// changed or an account disabled on the hub reaches the appliance within this.
pub const VERIFIERS_EVERY: Duration = Duration::from_secs(15);
/// How long the proxy waits for the hub's answer to begin, once the request is sent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Where a terminal is enrolled (served by the appliance itself, never passed to the hub).
pub const ENROL_PATH: &str = "/_tsunagi/terminal";
/// Where the terminals' screen-lock reporters enrol and post (`policy::screenlock`).
pub const POSTURE_PATH: &str = "/_tsunagi/posture";
/// The header the proxy tells the hub a warned terminal in (`warn`).
pub const POSTURE_HEADER: &str = "x-tsunagi-posture";
const ENROL_COOKIE: &str = "__Host-tsunagi-enrol";
/// The header the appliance names the terminal in, for the hub's audit log.
pub const TERMINAL_HEADER: &str = "x-tsunagi-terminal";

/// The most entries any of the proxy's in-memory books (sessions' last use, offline login
/// failures) holds.
pub const MAX_TRACKED: usize = 10_000;

/// Keeps `map` under `cap` entries: at the cap, drops what `keep` does not want, and if that is
/// not enough, everything. What LAN devices can make the proxy remember stays bounded.
pub fn bound<K, V>(map: &mut HashMap<K, V>, cap: usize, keep: impl Fn(&V) -> bool) {
    if map.len() >= cap {
        map.retain(|_, v| keep(v));
        if map.len() >= cap {
            map.clear();
        }
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A page answer with the portal's security headers.
pub fn page(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    view::harden(h);
    r
}

pub fn redirect(to: &str) -> Response<Body> {
    let mut r = page(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub use view::cookie;

pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// HTML-escapes text for the few pages the proxy writes without a template.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn random_token() -> String {
    shared::chain::hex(&provisioning::secret::random32())
}

pub use shared::time::now_ms;

// ---------------------------------------------------------------------------------------------
// What LAN requests may not carry.

/// The proxy's own answer to a path that is not the portal's (online: the offline view's page
/// would say the hub is down).
fn not_here() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>このページはありません — tsunagi</title><link rel=\"stylesheet\" href=\"/static/portal.css\"></head><body><header class=\"bar\"><a class=\"brand\" href=\"/\">tsunagi 地域医療連携</a></header><main><h1 id=\"error-title\">このページはありません</h1><p id=\"error-message\">アドレスを確認し、ポータルのトップページから開き直してください。</p><p><a href=\"/\">ポータルのトップページへ</a></p></main></body></html>",
    )
}

/// Whether a request header from the LAN claims an identity (or steers the proxy), and so must
/// never reach the hub from a browser.
pub fn claims_identity(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-tsunagi-")
        || n.starts_with("x-forwarded-")
        || n.starts_with("x-ssl-")
        || n.starts_with("x-client-")
        || n.starts_with("ssl-client")
        || n.starts_with("x-remote-")
        || n.starts_with("x-auth")
        || matches!(
            n,
            "forwarded"
                | "x-real-ip"
                | "x-user"
                | "remote-user"
                | "x-authenticated-user"
                | "authorization"
                | "proxy-authorization"
                | "client-cert"
                | "client-cert-chain"
                | "x-arr-clientcert"
                | "true-client-ip"
                | "cf-connecting-ip"
        )
}

/// Hop-by-hop headers, which belong to one connection and are not passed on.
fn hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for n in listed {
        headers.remove(n.as_str());
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        headers.remove(n);
    }
}

/// Removes identity claims and hop-by-hop headers from a LAN request; returns what was removed.
pub fn strip_request(headers: &mut HeaderMap) -> Vec<String> {
    hop_by_hop(headers);
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| claims_identity(n))
        .cloned()
        .collect();
    for n in &claimed {
        headers.remove(n);
    }
    claimed
        .into_iter()
        .map(|n| n.as_str().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The hub: pooled mutual-TLS connections.

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

// ---------------------------------------------------------------------------------------------
// Whether the hub is reachable.

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

// ---------------------------------------------------------------------------------------------
// The LAN server certificate.

/// Serves the LAN certificate from `identity::LAN`, reading it again whenever the file changes.
#[derive(Debug)]
pub struct LanCert {
    path: PathBuf,
    cache: Mutex<Option<(SystemTime, Arc<CertifiedKey>)>>,
}

impl LanCert {
    pub fn new(path: PathBuf) -> LanCert {
        LanCert {
            path,
            cache: Mutex::new(None),
        }
    }

    fn load(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(|| format!("{} is missing", self.path.display()))?;
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, k)) = c.as_ref() {
            if *s == stamp {
                return Ok(k.clone());
            }
        }
        let pem = provisioning::secret::read(&self.path).map_err(anyhow::Error::msg)?;
        let chain = provisioning::cert::certs_from_pem(&pem).map_err(anyhow::Error::msg)?;
        let key = provisioning::cert::key_from_pem(&pem).map_err(anyhow::Error::msg)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).context("the LAN key")?;
        let ck = Arc::new(CertifiedKey::new(chain, signer));
        *c = Some((stamp, ck.clone()));
        Ok(ck)
    }
}

impl ResolvesServerCert for LanCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.load() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "no LAN certificate to serve");
                None
            }
        }
    }
}

/// TLS 1.2 and 1.3 only, with ring's suites (all AEAD with forward secrecy), HTTP/1.1.
pub fn lan_tls(cert: Arc<LanCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    cert.load()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

// ---------------------------------------------------------------------------------------------
// The proxy.

pub struct Proxy {
    pub settings: ProxySettings,
    pub upstream: Upstream,
    pub health: Health,
    pub local: Arc<local::Local>,
    offline: offline::Offline,
    policy: Arc<dyn TerminalPolicy>,
    identity_dir: PathBuf,
    /// Hub sessions (by a hash of the cookie) and when they were last used through this proxy.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Enrolled terminals (by a hash of the cookie) and their names, read again from `offline.db`
    /// every few seconds so `terminal forget` in another process takes effect.
    terminals: std::sync::RwLock<HashMap<[u8; 32], String>>,
}

impl Proxy {
    pub fn new(
        settings: ProxySettings,
        identity_dir: &Path,
        hub_url: Option<String>,
        store_dir: &Path,
        key: &Key,
        local: Arc<local::Local>,
        policy: Arc<dyn TerminalPolicy>,
    ) -> anyhow::Result<Proxy> {
        let id = Identity::load(identity_dir)?;
        let upstream = Upstream::new(identity_dir, hub_url, settings.hub_timeout)?;
        let offline = offline::Offline::new(
            store_dir,
            key.clone(),
            local.clone(),
            id.enrolment.facility_name.clone(),
            settings.idle,
        );
        let terminals = std::sync::RwLock::new(local.terminal_ids()?.into_iter().collect());
        Ok(Proxy {
            settings,
            upstream,
            health: Health::default(),
            local,
            offline,
            policy,
            identity_dir: identity_dir.to_owned(),
            sessions: Mutex::new(HashMap::new()),
            terminals,
        })
    }

    /// Answers one request from the LAN.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        if req.uri().path() == POSTURE_PATH {
            return self.posture_report(req, remote).await;
        }
        let (id, new) = match cookie(req.headers(), TERMINAL_COOKIE) {
            Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => (v, false),
            _ => (random_token(), true),
        };
        let enrolled = if new {
            None
        } else {
            self.terminals
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&shared::chain::content_hash(id.as_bytes()))
                .cloned()
        };
        let mut terminal = Terminal {
            id,
            addr: remote.ip(),
            new,
            enrolled,
            warned: false,
        };
        if req.uri().path() == ENROL_PATH {
            return self.enrol_terminal(req, &mut terminal).await;
        }
        let verdict = self.policy.check(&terminal);
        terminal.warned = matches!(verdict, Verdict::Warn(_));
        let mut resp = match &verdict {
            // The refusal page's stylesheet is served all the same.
            Verdict::Refuse(why) if req.uri().path() != "/static/portal.css" => {
                tracing::warn!(terminal = %terminal.label(), why = %why, "terminal refused by posture policy");
                self.offline.error_page(
                    StatusCode::FORBIDDEN,
                    "この端末からは利用できません",
                    why,
                    None,
                )
            }
            _ => self.route(req, &terminal).await,
        };
        if let Verdict::Warn(why) = &verdict {
            tracing::debug!(terminal = %terminal.label(), why = %why, "terminal allowed with a posture warning");
        }
        if terminal.new {
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(TERMINAL_COOKIE, &terminal.id, Some(10 * 365 * 86_400)),
            );
        }
        resp
    }

    /// A screen-lock reporter: `{"code": …}` enrols it (with a one-time terminal code) and
    /// answers its token; a report with `Authorization: Bearer <token>` is classified and kept.
    async fn posture_report(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let json = |status: StatusCode, v: serde_json::Value| {
            page(status, "application/json", v.to_string())
        };
        if req.method() != hyper::Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "POST a report (see docs/policy.md)"}),
            );
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({"error": "a report is at most 64 KB"}),
                )
            }
        };
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("the report is not JSON: {e}")}),
                )
            }
        };
        let now = shared::time::now();
        if let Some(code) = value.get("code").and_then(|c| c.as_str()) {
            let fresh = random_token();
            let (local, hash, code) = (
                self.local.clone(),
                shared::chain::content_hash(fresh.as_bytes()),
                code.to_string(),
            );
            return match tokio::task::spawn_blocking(move || {
                local.enrol_reporter(&code, &hash, now)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            {
                Some(name) => {
                    tracing::info!(name = %name, from = %remote.ip(), "screen-lock reporter enrolled");
                    json(
                        StatusCode::OK,
                        serde_json::json!({"token": fresh, "terminal": name}),
                    )
                }
                None => {
                    tracing::warn!(from = %remote.ip(), "screen-lock reporter enrolment refused: wrong, used or expired code");
                    json(
                        StatusCode::FORBIDDEN,
                        serde_json::json!({"error": "the code is wrong, used or expired: ask the facility administrator for a new one (tsunagi-edge terminal code)"}),
                    )
                }
            };
        }
        let Some(token) = token else {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "no reporter token: enrol the reporter first with a code from tsunagi-edge terminal code"}),
            );
        };
        let (local, hash) = (
            self.local.clone(),
            shared::chain::content_hash(token.as_bytes()),
        );
        let name = match tokio::task::spawn_blocking(move || local.reporter_name(&hash))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
        {
            Some(n) => n,
            None => {
                tracing::warn!(from = %remote.ip(), "screen-lock report with an unknown token refused");
                return json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unknown reporter token: enrol the reporter again with a new code"}),
                );
            }
        };
        let posted: crate::policy::screenlock::Posted = match serde_json::from_value(value) {
            Ok(p) => p,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("the report does not have the expected fields: {e}")}),
                )
            }
        };
        let policy = self.policy.clone();
        match tokio::task::spawn_blocking(move || policy.report(&name, &posted)).await {
            Ok(Ok(v)) => json(StatusCode::OK, v),
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "a screen-lock report could not be kept");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"error": format!("the report could not be kept: {e:#}")}),
                )
            }
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "internal error"}),
            ),
        }
    }

    /// The page where a terminal is enrolled with a one-time code from the facility
    /// administrator. A terminal enrolled gets a fresh cookie id, so an id seen before enrolment
    /// does not carry the name.
    async fn enrol_terminal(
        &self,
        req: Request<Incoming>,
        terminal: &mut Terminal,
    ) -> Response<Body> {
        let mut message = match &terminal.enrolled {
            Some(n) => format!("この端末は「{n}」として登録されています。"),
            None => "この端末はまだ登録されていません。施設の管理者から受け取った登録コードを入力してください。".to_string(),
        };
        if req.method() == hyper::Method::POST {
            let (parts, body) = req.into_parts();
            let form = Limited::new(body, 4096)
                .collect()
                .await
                .ok()
                .map(|b| offline::fields(&String::from_utf8_lossy(&b.to_bytes())));
            let code = form
                .as_ref()
                .and_then(|f| f.get("code").cloned())
                .unwrap_or_default();
            let fresh = random_token();
            let (local, id, now) = (
                self.local.clone(),
                shared::chain::content_hash(fresh.as_bytes()),
                shared::time::now(),
            );
            let sent_from_here = cookie(&parts.headers, ENROL_COOKIE).is_some_and(|c| {
                form.as_ref()
                    .and_then(|f| f.get("csrf"))
                    .is_some_and(|t| view::password::same_bytes(t.as_bytes(), c.as_bytes()))
            });
            let taken = if sent_from_here {
                tokio::task::spawn_blocking(move || local.enrol_terminal(&code, &id, now))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            } else {
                None
            };
            match taken {
                Some(name) => {
                    tracing::info!(terminal = %format!("t-{}@{}", &fresh[..12], terminal.addr), name = %name, "terminal enrolled");
                    self.terminals
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, name.clone());
                    terminal.id = fresh;
                    terminal.new = true;
                    terminal.enrolled = Some(name.clone());
                    message = format!("この端末を「{name}」として登録しました。");
                }
                None => {
                    tracing::warn!(terminal = %terminal.label(), "terminal enrolment refused: wrong, used or expired code");
                    message = "登録コードが違うか、使用済みか、期限切れです。施設の管理者に新しいコードを発行してもらってください。".into();
                }
            }
        }
        let csrf = random_token();
        let html = format!(
            "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>端末の登録 — tsunagi</title><link rel=\"stylesheet\" href=\"/static/portal.css\"></head><body><header class=\"bar\"><a class=\"brand\" href=\"/\">tsunagi 地域医療連携</a></header><main><h1>端末の登録</h1><p class=\"notice\" id=\"message\">{}</p><form method=\"post\" action=\"{ENROL_PATH}\" class=\"card narrow\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><label>登録コード <input name=\"code\" id=\"code\" required maxlength=\"64\" autocomplete=\"off\"></label><button id=\"submit\">登録する</button></form><p><a href=\"/\">ポータルへ</a></p></main></body></html>",
            escape(&message)
        );
        let mut r = page(StatusCode::OK, "text/html; charset=utf-8", html);
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(ENROL_COOKIE, &csrf, None));
        if terminal.new {
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(TERMINAL_COOKIE, &terminal.id, Some(10 * 365 * 86_400)),
            );
        }
        r
    }

    async fn route(&self, req: Request<Incoming>, terminal: &Terminal) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == "/static/portal.css" && self.health.offline_since().is_some() {
            return page(StatusCode::OK, "text/css; charset=utf-8", view::PORTAL_CSS);
        }
        if let Some(since) = self.health.offline_since() {
            return self.offline.handle(req, terminal, since).await;
        }
        if path.starts_with("/offline/") || path == "/offline" {
            return redirect("/");
        }
        // Only the portal's own pages go on to the hub, in the one form the portal writes them:
        // the appliance API, odd encodings and other methods stop here.
        if !shared::route::is_portal_path(&path)
            || !matches!(
                *req.method(),
                hyper::Method::GET | hyper::Method::HEAD | hyper::Method::POST
            )
            || req.uri().authority().is_some()
        {
            tracing::info!(terminal = %terminal.label(), method = %req.method(), "a request outside the portal's routes stopped at the proxy");
            return not_here();
        }
        match self.forward(req, terminal).await {
            Ok(r) => r,
            Err(UpError::Unreachable(why)) => {
                self.health.down(&why);
                redirect("/offline/")
            }
            Err(UpError::Failed(why)) => {
                tracing::warn!(path = %path, error = %why, "a request to the hub failed");
                self.offline.error_page(
                    StatusCode::BAD_GATEWAY,
                    "ハブとの通信に失敗しました",
                    "もう一度お試しください。続く場合は施設の管理者に連絡してください。",
                    None,
                )
            }
        }
    }

    /// Passes a request on to the hub, as this facility, and streams the answer back.
    async fn forward(
        &self,
        req: Request<Incoming>,
        terminal: &Terminal,
    ) -> Result<Response<Body>, UpError> {
        let (mut parts, body) = req.into_parts();
        let claimed = strip_request(&mut parts.headers);
        if !claimed.is_empty() {
            tracing::warn!(terminal = %terminal.label(), headers = ?claimed, "identity headers from the LAN stripped");
        }
        if parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_UPLOAD)
        {
            return Ok(self.offline.error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "送信するデータが大きすぎます",
                &format!("一度に送れるのは {} MB までです。", MAX_UPLOAD >> 20),
                None,
            ));
        }
        if let Some(s) = cookie(&parts.headers, HUB_SESSION) {
            if self.idle_expired(&s) {
                tracing::info!(terminal = %terminal.label(), "session ended at the proxy after the idle time");
                let mut r = redirect("/login?m=expired");
                r.headers_mut()
                    .append(header::SET_COOKIE, set_cookie(HUB_SESSION, "", Some(0)));
                return Ok(r);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&terminal.label()) {
            parts.headers.insert(TERMINAL_HEADER, v);
        }
        if terminal.warned {
            parts
                .headers
                .insert(POSTURE_HEADER, HeaderValue::from_static("warn"));
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = pq
            .parse()
            .map_err(|_| UpError::Failed("bad request target".into()))?;
        parts.version = hyper::Version::HTTP_11;
        let body = Limited::new(body, MAX_UPLOAD).boxed();
        // A hub that takes the request but never answers must not hold the terminal forever.
        let resp = tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.upstream.send(Request::from_parts(parts, body)),
        )
        .await
        .map_err(|_| UpError::Failed("the hub did not answer in time".into()))??;
        let (mut parts, body) = resp.into_parts();
        hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed(),
        ))
    }

    /// Whether a hub session has gone unused through this proxy for longer than the idle time;
    /// otherwise records its use now.
    fn idle_expired(&self, session: &str) -> bool {
        let k = shared::chain::content_hash(session.as_bytes());
        let mut m = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Any LAN device can send any cookie: the book stays bounded whatever they send. A session
        // forgotten here only restarts its idle clock; the hub keeps its own.
        let idle = self.settings.idle;
        bound(&mut m, MAX_TRACKED, |t| now.duration_since(*t) <= idle);
        match m.get(&k) {
            Some(t) if now.duration_since(*t) > self.settings.idle => {
                m.remove(&k);
                true
            }
            _ => {
                m.insert(k, now);
                false
            }
        }
    }

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

// ---------------------------------------------------------------------------------------------
// Listeners.

/// The LAN proxy's HTTPS listener: what the clinic's browsers get. A portal page may wait on the
/// hub for up to its own deadline, so a connection may be quiet for two minutes.
pub const LAN_LIMITS: serve::Limits = serve::Limits {
    max_connections: 512,
    per_peer: 64,
    ..serve::Limits::web("lan")
};

/// The plain-HTTP pages (the root's page, first boot's enrolment page): small answers only.
pub const PLAIN_LIMITS: serve::Limits = serve::Limits {
    idle: Duration::from_secs(30),
    max_connections: 64,
    per_peer: 8,
    ..serve::Limits::web("plain")
};

/// Serves HTTPS on `listener` until `stop` (`serve::serve`: deadlines, a connection cap, drain).
pub async fn serve_lan(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = move |conn: &serve::Conn| {
        let (proxy, addr) = (proxy.clone(), conn.peer);
        hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, addr).await) }
        })
    };
    serve::serve(listener, Some(tls), LAN_LIMITS, service, stop).await
}

/// The plain-HTTP page: how to trust the network's root, and the root itself. Nothing else.
pub struct TrustPage {
    pub root_pem: String,
    pub fingerprint: String,
    pub portal: String,
}

#[derive(askama::Template)]
#[template(path = "trust.html")]
struct TrustHtml<'a> {
    fingerprint: &'a str,
    portal: &'a str,
}

impl TrustPage {
    pub fn answer(&self, path: &str) -> Response<Body> {
        use askama::Template;
        match path {
            "/" | "/index.html" => match (TrustHtml {
                fingerprint: &self.fingerprint,
                portal: &self.portal,
            })
            .render()
            {
                Ok(html) => page(StatusCode::OK, "text/html; charset=utf-8", html),
                Err(_) => page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "error",
                ),
            },
            "/root.crt" => {
                let mut r = page(
                    StatusCode::OK,
                    "application/x-x509-ca-cert",
                    self.root_pem.clone(),
                );
                r.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"tsunagi-root.crt\""),
                );
                r
            }
            "/static/portal.css" => {
                page(StatusCode::OK, "text/css; charset=utf-8", view::PORTAL_CSS)
            }
            _ => {
                let mut r = page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", format!("The portal is served over HTTPS only: {}\nポータルは HTTPS でのみ利用できます。準備の手順は http のトップページにあります。\n", self.portal));
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
        }
    }
}

pub async fn serve_plain(
    page: Arc<TrustPage>,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = move |_: &serve::Conn| {
        let page = page.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let page = page.clone();
            async move {
                Ok::<_, Infallible>(
                    if req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD {
                        page.answer(req.uri().path())
                    } else {
                        page.answer("/not-here")
                    },
                )
            }
        })
    };
    serve::serve(listener, None, PLAIN_LIMITS, service, stop).await
}

/// Starts the proxy's listeners and its upkeep; returns the bound HTTPS address.
pub async fn start(
    proxy: Arc<Proxy>,
    identity_dir: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let settings = proxy.settings.clone();
    let listen = settings.listen.clone().context("proxy.listen is not set")?;
    let tls = lan_tls(Arc::new(LanCert::new(identity_dir.join(identity::LAN))))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (proxy.listen)"))?;
    let addr = listener.local_addr()?;
    if let Some(plain) = &settings.plain_listen {
        let l = tokio::net::TcpListener::bind(plain)
            .await
            .with_context(|| format!("cannot listen on {plain} (proxy.plain_listen)"))?;
        let id = Identity::load(identity_dir)?;
        let root_pem = std::fs::read_to_string(identity_dir.join("root.pem"))
            .context("the network root (root.pem) is missing")?;
        let port = if addr.port() == 443 {
            String::new()
        } else {
            format!(":{}", addr.port())
        };
        let portal = format!(
            "https://{}{port}/",
            settings
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| addr.ip().to_string())
        );
        let page = Arc::new(TrustPage {
            root_pem,
            fingerprint: id.enrolment.fingerprint.clone(),
            portal,
        });
        tokio::spawn(serve_plain(page, l, stop.clone()));
    }
    tokio::spawn(proxy.clone().maintain(stop.clone()));
    tokio::spawn(serve_lan(proxy, listener, tls, stop));
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AllowAll;

    #[test]
    fn identity_claims_and_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-tsunagi-terminal", "forged"),
            ("x-tsunagi-facility", "3710000002"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-ssl-client-cert", "x"),
            ("authorization", "Basic eA=="),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("cookie", "__Host-tsunagi=abc"),
            ("accept-language", "ja"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let claimed = strip_request(&mut h);
        assert_eq!(claimed.len(), 7, "{claimed:?}");
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["accept-language", "cookie"]);
    }

    #[test]
    fn books_stay_bounded() {
        let mut m: HashMap<u32, bool> = HashMap::new();
        for i in 0..10 * MAX_TRACKED as u32 {
            bound(&mut m, MAX_TRACKED, |locked| *locked);
            m.insert(i, i % 1000 == 0);
        }
        assert!(m.len() <= MAX_TRACKED, "{}", m.len());
        // What is worth keeping survives a trim.
        let mut m: HashMap<u32, bool> = (0..MAX_TRACKED as u32).map(|i| (i, i < 10)).collect();
        bound(&mut m, MAX_TRACKED, |locked| *locked);
        assert_eq!(m.len(), 10);
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-tsunagi=tok; __Host-tsunagi-terminal=t"),
        );
        assert_eq!(cookie(&h, HUB_SESSION).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, TERMINAL_COOKIE).as_deref(), Some("t"));
        assert_eq!(cookie(&h, "b"), None);
    }

    struct RefuseNew;
    impl TerminalPolicy for RefuseNew {
        fn check(&self, t: &Terminal) -> Verdict {
            if t.new {
                Verdict::Refuse("unregistered".into())
            } else {
                Verdict::Allow
            }
        }
    }

    #[test]
    fn the_posture_hook_sees_each_terminal() {
        let t = Terminal {
            id: "ab".repeat(32),
            addr: "192.168.1.5".parse().unwrap(),
            new: true,
            enrolled: None,
            warned: false,
        };
        assert_eq!(RefuseNew.check(&t), Verdict::Refuse("unregistered".into()));
        assert_eq!(AllowAll.check(&t), Verdict::Allow);
        assert_eq!(t.label(), "t-abababababab@192.168.1.5");
    }
}
