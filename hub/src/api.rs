//! The hub's HTTPS API for appliances: enrolment (the only route without a client certificate),
//! renewal, the copy's position, segment upload, and restore. Served over the TLS of `tls.rs`; the
//! facility is the one in the verified client certificate, never one named in a request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use provisioning::{Ca, Identity, Purpose};

use crate::copy::{self, Refusal};
use crate::db::{self, Worker};
use crate::key::Key;
use crate::region::{self, Readers};
use crate::snapshot::{self, Target};
use crate::tls::Revocations;
use crate::{now, registry};
use shared::api::{EnrollRequest, ErrorBody, Issued, LanRequest, ProxyRequest, RenewRequest};
use shared::chain::ChainError;

/// Settings `serve` was started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_cert_lifetime: i64,
    pub max_body: usize,
    pub snapshots_kept: usize,
}

/// Everything a request handler may need.
pub struct Hub {
    pub data: PathBuf,
    pub ca: Ca,
    pub key: Key,
    pub registry: Worker,
    pub revoked: Arc<Revocations>,
    pub settings: Settings,
    /// The regional database's writer, and readers for searches and pages.
    pub region: Worker,
    pub region_readers: Readers,
    copies: Mutex<HashMap<String, Arc<Worker>>>,
    copy_readers: Mutex<HashMap<String, Arc<Readers>>>,
    /// Facilities whose copy moved, for the indexer (`index_loop`).
    index_tx: tokio::sync::mpsc::UnboundedSender<String>,
    index_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Certificate serials whose first use the registry has been told of (`still_valid`).
    used: Mutex<std::collections::HashSet<String>>,
}

/// The verified identity of the connection a request came on, if it presented a certificate.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Identity>);

/// The address a request's connection came from.
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Appliances: the API, and the portal for people behind an appliance (mutual TLS).
    Appliances,
    /// The hub's own operators and the network office: the portal with a login, no API.
    Operators,
}

/// How a request reached the hub: which certificate its connection presented, on which listener.
#[derive(Clone, Debug)]
pub enum Channel {
    /// An appliance's own certificate (`Purpose::Appliance`): the API, never the portal.
    Appliance(Identity),
    /// Through a facility's LAN proxy, whose portal-only certificate this is: the portal, never
    /// the API.
    Proxy(Identity),
    /// On the operators' listener.
    Operators,
    /// On the appliances' listener without a client certificate: enrolment only.
    Unauthenticated,
}

/// The router each kind of connection is served: a connection reaches only the routes of its
/// entrance, so a certificate lent to the LAN proxy cannot reach the API, whatever the path says.
#[derive(Clone)]
pub struct Entrances {
    /// An appliance's own certificate: the API.
    pub appliance: Router,
    /// An appliance's portal-proxy certificate: the portal.
    pub proxy: Router,
    /// No certificate on the appliances' listener: enrolment, and a page saying where the portal is.
    pub stranger: Router,
    /// The operators' listener: the portal.
    pub operators: Router,
}

impl Hub {
    pub fn new(
        data: PathBuf,
        ca: Ca,
        key: Key,
        revoked: Arc<Revocations>,
        settings: Settings,
    ) -> anyhow::Result<Hub> {
        let conn = db::open(
            &data.join(registry::FILE),
            &key.derive("registry"),
            registry::MIGRATIONS,
        )?;
        let registry = db::worker("registry", conn)?;
        let region = db::worker("region", region::open(&data, &key.derive("region"))?)?;
        let region_readers = Readers::new(data.join(region::FILE), key.derive("region"));
        let (index_tx, index_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Hub {
            data,
            ca,
            key,
            registry,
            revoked,
            settings,
            region,
            region_readers,
            copies: Mutex::new(HashMap::new()),
            copy_readers: Mutex::new(HashMap::new()),
            index_tx,
            index_rx: Mutex::new(Some(index_rx)),
            used: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Read-only connections to a facility's copy, for the portal.
    pub fn copy_readers(&self, facility: &str) -> Arc<Readers> {
        let mut open = self.copy_readers.lock().unwrap_or_else(|e| e.into_inner());
        open.entry(facility.to_string())
            .or_insert_with(|| {
                Arc::new(Readers::new(
                    self.copy_path(facility),
                    self.key.derive(&format!("copy:{facility}")),
                ))
            })
            .clone()
    }

    /// Asks the indexer to take in what a facility's copy gained.
    pub fn reindex(&self, facility: &str) {
        let _ = self.index_tx.send(facility.to_string());
    }

    /// Indexes every copy once, then each copy again whenever it moves, until the hub stops.
    pub async fn index_loop(self: Arc<Self>) {
        let Some(mut rx) = self
            .index_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        for f in self.facilities() {
            self.reindex(&f);
        }
        while let Some(first) = rx.recv().await {
            let mut due = std::collections::BTreeSet::from([first]);
            while let Ok(f) = rx.try_recv() {
                due.insert(f);
            }
            for f in due {
                if let Err(e) = self.index_facility(&f).await {
                    tracing::error!(facility = %f, error = %format!("{e:#}"), "indexing failed; will retry at the next segment");
                }
            }
        }
    }

    /// Takes in what one facility's copy gained since the last run.
    pub async fn index_facility(&self, facility: &str) -> anyhow::Result<usize> {
        self.copy(facility)?;
        let copy = reader(self, facility)?;
        let f = facility.to_string();
        let n = self
            .region
            .call(move |region| -> anyhow::Result<usize> {
                Ok(crate::index::catch_up(region, &copy, &f, now())?)
            })
            .await??;
        if n > 0 {
            tracing::info!(facility = %facility, patients = n, "patients indexed");
        }
        Ok(n)
    }

    pub fn copy_path(&self, facility: &str) -> PathBuf {
        copy_path(&self.data, facility)
    }

    pub fn snapshot_dir(&self, facility: &str) -> PathBuf {
        snapshot_dir(&self.data, facility)
    }

    /// The worker that owns the facility's copy, opening (and creating) the copy on first use.
    pub fn copy(&self, facility: &str) -> anyhow::Result<Arc<Worker>> {
        let mut open = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = open.get(facility) {
            return Ok(w.clone());
        }
        let conn = db::open(
            &self.copy_path(facility),
            &self.key.derive(&format!("copy:{facility}")),
            shared::schema::MIGRATIONS,
        )?;
        let w = Arc::new(db::worker(&format!("copy-{facility}"), conn)?);
        open.insert(facility.to_string(), w.clone());
        Ok(w)
    }

    /// The facilities that have a copy.
    pub fn facilities(&self) -> Vec<String> {
        facilities(&self.data)
    }
}

pub fn copy_path(data: &std::path::Path, facility: &str) -> PathBuf {
    data.join("copies").join(format!("{facility}.db"))
}

pub fn snapshot_dir(data: &std::path::Path, facility: &str) -> PathBuf {
    data.join("snapshots").join(facility)
}

pub fn facilities(data: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data.join("copies"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".db")
                .map(str::to_owned)
        })
        .filter(|f| provisioning::token::check_facility(f).is_ok())
        .collect();
    out.sort();
    out
}

/// An API error: a status, a short machine-readable code and a message for the person reading the
/// appliance's log. Internal failures are logged here and answered without detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Where the copy stands, for a refused batch: seq, hash, the seq it expects.
    position: Option<(u64, String, u64)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            position: None,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{e:#}"), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the hub failed internally; it has logged why",
        )
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        anyhow::Error::from(e).into()
    }
}

impl From<sqlkit::Error> for ApiError {
    fn from(e: sqlkit::Error) -> ApiError {
        anyhow::Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (seq, hash, expected) = match self.position {
            Some((s, h, e)) => (Some(s), Some(h), Some(e)),
            None => (None, None, None),
        };
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            seq,
            hash,
            expected,
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The verified facility of the request, refusing a connection without a certificate, and a
/// certificate revoked or expired since the connection was made.
fn authed(peer: &Peer, hub: &Hub) -> ApiResult<Identity> {
    let id = peer.0.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_certificate",
            "a client certificate from the network CA is required; enrol the appliance first",
        )
    })?;
    if id.purpose != Purpose::Appliance {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_certificate", "this certificate is for the portal only; the API takes the appliance's own certificate"));
    }
    still_valid(hub, &id).map_err(|(code, m)| ApiError::new(StatusCode::FORBIDDEN, code, m))?;
    Ok(id)
}

/// A certificate verified at the handshake may since have been revoked or have expired.
pub fn still_valid(hub: &Hub, id: &Identity) -> Result<(), (&'static str, String)> {
    hub.revoked.check(id).map_err(|e| ("revoked", e))?;
    if now() > id.not_after {
        return Err((
            "expired",
            "the client certificate has expired; enrol the appliance again".into(),
        ));
    }
    hub.note_use(&id.serial);
    Ok(())
}

/// How many first uses the hub remembers having written; past it, it forgets and writes again
/// (the write is idempotent).
const USED_REMEMBERED: usize = 100_000;

impl Hub {
    /// Records in the registry, once per serial, that a certificate has been used: a renewal
    /// replaces the certificate before it only once the appliance presents the new one, which is
    /// what `ca withdraw-issuing` goes by.
    fn note_use(&self, serial: &str) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains(serial) {
            return;
        }
        if used.len() >= USED_REMEMBERED {
            used.clear();
        }
        used.insert(serial.to_string());
        let (serial, t) = (serial.to_string(), now());
        self.registry.send(move |c| {
            if let Err(e) = registry::mark_used(c, &serial, t) {
                tracing::error!(error = %e, "cannot record a certificate's first use");
            }
        });
    }
}

/// The largest JSON body of the API's small requests (enrolment, renewal: CSRs and names).
pub const MAX_SMALL_BODY: usize = 64 << 10;

/// The routers of each entrance of the two listeners.
pub fn entrances(hub: Arc<Hub>, portal: Router) -> (Entrances, Entrances) {
    let appliances = Entrances {
        appliance: router(hub.clone()),
        proxy: portal.clone(),
        stranger: stranger_router(hub),
        operators: not_found_router(),
    };
    let operators = Entrances {
        appliance: not_found_router(),
        proxy: not_found_router(),
        stranger: not_found_router(),
        operators: portal,
    };
    (appliances, operators)
}

fn not_found_router() -> Router {
    Router::new()
        .fallback(not_found)
        .layer(axum::middleware::map_response(no_store))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// What a connection without a certificate reaches: enrolment, a clear refusal of the rest of the
/// API, and a page that tells a person who opened the hub directly where the portal is.
pub fn stranger_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(
            "/v1/enroll",
            post(enroll).layer(axum::middleware::from_fn(bounded::<MAX_SMALL_BODY, 30>)),
        )
        .fallback(stranger)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SMALL_BODY))
        .layer(axum::middleware::map_response(no_store))
        .with_state(hub)
}

/// The appliance API's routes (method, path), as `router` serves them.
pub const API: &[(&str, &str)] = &[
    ("POST", "/v1/enroll"),
    ("POST", "/v1/renew"),
    ("GET", "/v1/position"),
    ("POST", "/v1/segments"),
    ("GET", "/v1/restore/plan"),
    ("GET", "/v1/restore"),
    ("GET", "/v1/ping"),
    ("GET", "/v1/verifiers"),
    ("POST", "/v1/offline-accesses"),
];

async fn stranger(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if API.iter().any(|(_, p)| *p == path) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_certificate",
            "a client certificate from the network CA is required; enrol the appliance first",
        )
        .into_response();
    }
    if !shared::route::is_portal_path(path) {
        return not_found().await.into_response();
    }
    let mut r = if path == "/static/portal.css" {
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            view::PORTAL_CSS,
        )
            .into_response()
    } else {
        crate::portal::Error::Forbidden("ポータルは施設の tsunagi アプライアンス経由でのみ利用できます。端末のブラウザからアプライアンスのアドレスを開いてください。ネットワーク事務局・運用者は運用者用の入口を使ってください。".into()).into_response()
    };
    view::harden(r.headers_mut());
    r
}

/// The appliance API: what an appliance's own certificate reaches.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(
            "/v1/enroll",
            post(enroll).layer(axum::middleware::from_fn(bounded::<MAX_SMALL_BODY, 30>)),
        )
        .route(
            "/v1/renew",
            post(renew).layer(axum::middleware::from_fn(bounded::<MAX_SMALL_BODY, 30>)),
        )
        .route("/v1/position", get(position))
        .route(
            "/v1/segments",
            post(segments).layer(axum::middleware::from_fn(bounded::<{ usize::MAX }, 600>)),
        )
        .route("/v1/restore/plan", get(restore_plan))
        .route("/v1/restore", get(restore))
        .route("/v1/ping", get(ping))
        .route("/v1/verifiers", get(verifiers))
        .route(
            "/v1/offline-accesses",
            post(offline_accesses)
                .layer(axum::extract::DefaultBodyLimit::max(8 << 20))
                .layer(axum::middleware::from_fn(bounded::<{ 8 << 20 }, 120>)),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SMALL_BODY))
        .layer(axum::middleware::map_response(no_store))
        .with_state(hub)
}

/// Refuses at once a body whose declared length is over `LIMIT` (a body without a length stops at
/// the route's `DefaultBodyLimit`), and gives the request `SECS` seconds to arrive and be
/// answered: a body sent slowly holds its connection no longer than that.
async fn bounded<const LIMIT: usize, const SECS: u64>(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > LIMIT as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("this request may carry at most {LIMIT} bytes"),
        )
        .into_response();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(SECS), next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "too_slow",
            format!("the request did not arrive within {SECS} s; send it again"),
        )
        .into_response(),
    }
}

/// No answer of the API is kept by a cache on the way.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// A certificate's start, set a little in the past to forgive an appliance whose clock is behind:
/// five minutes, or a quarter of a (test-short) lifetime.
fn not_before(hub: &Hub, t: i64) -> i64 {
    t - (hub.settings.client_cert_lifetime / 4).min(300)
}

/// The registry's row for a certificate issued to an appliance at `t`. Certificates issued
/// together share `t`: revoking the appliance's own certificate revokes the others with it.
fn cert_row(
    issued: &provisioning::ca::Issued,
    facility: &str,
    appliance: &str,
    not_before: i64,
    t: i64,
    how: &str,
) -> registry::Cert {
    registry::Cert {
        serial: issued.serial.clone(),
        facility: facility.to_string(),
        appliance: appliance.to_string(),
        not_before,
        not_after: issued.not_after,
        issued_at: t,
        how: how.into(),
        revoked_at: None,
        issuer: Some(issued.issuer.clone()),
    }
}

/// Issues the LAN proxy's portal-only client certificate, as of `t`.
fn issue_proxy(
    hub: &Hub,
    facility: &str,
    appliance: &str,
    req: &ProxyRequest,
    t: i64,
) -> ApiResult<(String, registry::Cert)> {
    let key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let nb = not_before(hub, t);
    let issued = hub
        .ca
        .issue_client(
            &key,
            facility,
            appliance,
            Purpose::PortalProxy,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, facility, appliance, nb, t, "proxy");
    Ok((issued.chain_pem, cert))
}

/// Checks a request for the appliance's LAN server certificate: names its facility's browsers
/// may use for it and nothing else (`Ca::check_lan_names`: since those browsers trust the
/// network root, a name outside the facility's part of the LAN domain and private addresses, or
/// one of the hub's or broker's names, would let an appliance pose as another site), and a
/// valid CSR.
fn check_lan_request(hub: &Hub, facility: &str, lan: &LanRequest) -> ApiResult<()> {
    hub.ca
        .check_lan_names(facility, &lan.names)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))?;
    provisioning::ca::parse_csr(&lan.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))
        .map(|_| ())
}

/// At most this many renewals an appliance in 24 hours.
pub const RENEWALS_PER_DAY: i64 = 10;

/// Checks (and with `claim`, records) that the private addresses a LAN certificate would carry
/// are this facility's: the first facility to be issued one holds it (`registry::lan_addresses`).
async fn claim_lan_addresses(
    hub: &Hub,
    facility: &str,
    names: &[String],
    claim: bool,
) -> ApiResult<()> {
    let (f, n, t) = (facility.to_string(), names.to_vec(), now());
    hub.registry
        .call(move |c| registry::lan_addresses(c, &f, &n, claim, t))
        .await??
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))
}

/// Issues the appliance's LAN server certificate, as of `t`: `Ca::issue_lan` checks the names,
/// and the private addresses it carries are then claimed for the facility (a certificate refused
/// there is never handed out or recorded).
async fn issue_lan(
    hub: &Hub,
    facility: &str,
    appliance: &str,
    lan: &LanRequest,
    t: i64,
) -> ApiResult<(String, registry::Cert)> {
    let key = provisioning::ca::parse_csr(&lan.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let nb = not_before(hub, t);
    let issued = hub
        .ca
        .issue_lan(
            &key,
            facility,
            &lan.names,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_lan_names", e))?;
    claim_lan_addresses(hub, facility, &lan.names, true).await?;
    let cert = cert_row(&issued, facility, appliance, nb, t, "lan");
    Ok((issued.chain_pem, cert))
}

/// Reads a request body that states its versions: an appliance newer than this hub is told to
/// upgrade the hub (409 `upgrade_hub`) before its body is held to this hub's type, and a body
/// with a field nobody defined is refused by name (400 `bad_request`).
fn versioned<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> ApiResult<T> {
    let v: shared::api::Versions = serde_json::from_value(body.clone()).unwrap_or_default();
    shared::api::hub_takes(v.protocol, v.schema)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "upgrade_hub", e))?;
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body is not what this hub reads: {e}"),
        )
    })
}

async fn enroll(
    State(hub): State<Arc<Hub>>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<Issued>> {
    // An appliance newer than this hub is refused before anything is spent on it: it could send
    // rows this hub cannot keep.
    let req: EnrollRequest = versioned(body)?;
    provisioning::token::check_appliance(&req.appliance)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_appliance", e))?;
    let public_key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    // Everything the request asks for is checked before the one-time token is spent on it (the
    // LAN names against the facility the token is for, if it is one that can still be used).
    let hash = provisioning::token::hash(&req.token);
    let t = now();
    if let Some(l) = &req.lan {
        if let Some(facility) = hub
            .registry
            .call(move |c| registry::token_facility(c, &hash, t))
            .await??
        {
            check_lan_request(&hub, &facility, l)?;
            claim_lan_addresses(&hub, &facility, &l.names, false).await?;
        }
    }
    if let Some(p) = &req.proxy {
        provisioning::ca::parse_csr(&p.csr)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    }
    let taken = hub
        .registry
        .call(move |c| registry::take_token(c, &hash, t))
        .await??;
    let (facility, facility_name) = taken.map_err(|e| {
        tracing::warn!(appliance = %req.appliance, error = %e, "enrolment refused");
        ApiError::new(StatusCode::FORBIDDEN, "bad_token", e.to_string())
    })?;
    let nb = not_before(&hub, t);
    let lan = match &req.lan {
        Some(l) => Some(issue_lan(&hub, &facility, &req.appliance, l, t).await?),
        None => None,
    };
    let proxy = match &req.proxy {
        Some(p) => Some(issue_proxy(&hub, &facility, &req.appliance, p, t)?),
        None => None,
    };
    let issued = hub
        .ca
        .issue_client(
            &public_key,
            &facility,
            &req.appliance,
            Purpose::Appliance,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, &facility, &req.appliance, nb, t, "enrol");
    let serial = issued.serial.clone();
    let extra: Vec<registry::Cert> = lan
        .iter()
        .chain(proxy.iter())
        .map(|l| l.1.clone())
        .collect();
    hub.registry
        .call(move |c| {
            registry::record_cert(c, &cert)?;
            for l in &extra {
                registry::record_cert(c, l)?;
            }
            registry::token_used_by(c, &hash, &serial)
        })
        .await??;
    tracing::info!(facility = %facility, appliance = %req.appliance, serial = %issued.serial, "appliance enrolled");
    Ok(Json(Issued {
        chain_pem: issued.chain_pem,
        root_pem: hub.ca.root_pem().to_string(),
        facility,
        facility_name,
        appliance: req.appliance,
        serial: issued.serial,
        not_after: issued.not_after,
        lan_chain_pem: lan.map(|l| l.0),
        proxy_chain_pem: proxy.map(|p| p.0),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    }))
}

async fn renew(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<Issued>> {
    let id = authed(&peer, &hub)?;
    let req: RenewRequest = versioned(body)?;
    let public_key = provisioning::ca::parse_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_csr", e))?;
    let t = now();
    // An appliance renews at two thirds of its lifetime, when its LAN names change, or when told
    // to; a stolen identity minting certificates by the dozen is not that.
    let (f, a) = (id.facility.clone(), id.appliance.clone());
    let recent = hub
        .registry
        .call(move |c| registry::renewals_since(c, &f, &a, t - 86_400))
        .await??;
    if recent >= RENEWALS_PER_DAY {
        tracing::warn!(facility = %id.facility, appliance = %id.appliance, recent, "renewal refused: too many in a day");
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_renewals", format!("this appliance renewed {recent} times in the last 24 hours; try again tomorrow, or ask the network office")));
    }
    let nb = not_before(&hub, t);
    let lan = match &req.lan {
        Some(l) => Some(issue_lan(&hub, &id.facility, &id.appliance, l, t).await?),
        None => None,
    };
    let proxy = match &req.proxy {
        Some(p) => Some(issue_proxy(&hub, &id.facility, &id.appliance, p, t)?),
        None => None,
    };
    let issued = hub
        .ca
        .issue_client(
            &public_key,
            &id.facility,
            &id.appliance,
            Purpose::Appliance,
            nb,
            t + hub.settings.client_cert_lifetime,
        )
        .map_err(anyhow::Error::msg)?;
    let cert = cert_row(&issued, &id.facility, &id.appliance, nb, t, "renew");
    let f = id.facility.clone();
    let extra: Vec<registry::Cert> = lan
        .iter()
        .chain(proxy.iter())
        .map(|l| l.1.clone())
        .collect();
    let name = hub
        .registry
        .call(move |c| {
            registry::record_cert(c, &cert)?;
            for l in &extra {
                registry::record_cert(c, l)?;
            }
            registry::facility_name(c, &f)
        })
        .await??;
    tracing::info!(facility = %id.facility, appliance = %id.appliance, old = %id.serial, new = %issued.serial, "certificate renewed");
    Ok(Json(Issued {
        chain_pem: issued.chain_pem,
        root_pem: hub.ca.root_pem().to_string(),
        facility: id.facility,
        facility_name: name.unwrap_or_default(),
        appliance: id.appliance,
        serial: issued.serial,
        not_after: issued.not_after,
        lan_chain_pem: lan.map(|l| l.0),
        proxy_chain_pem: proxy.map(|p| p.0),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    }))
}

/// A cheap answer that proves the hub is up and still accepts this appliance.
async fn ping(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    Ok(Json(json!({ "facility": id.facility, "at": now() })))
}

/// The password verifiers of the appliance's own facility's staff, for logins while the hub is down.
async fn verifiers(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    let (f, h) = (id.facility.clone(), hub.clone());
    let list = tokio::task::spawn_blocking(move || {
        h.region_readers
            .with(move |c| Ok(crate::offline::verifiers(c, &f, now())?))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))??;
    tracing::debug!(facility = %id.facility, appliance = %id.appliance, users = list.len(), "verifiers handed to the appliance");
    Ok(Json(json!({ "facility": id.facility, "users": list })))
}

/// Accesses an appliance served while the hub was down, into the audit log.
async fn offline_accesses(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Json(batch): Json<Vec<crate::offline::Access>>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = authed(&peer, &hub)?;
    if batch.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many",
            "send at most 10000 accesses at a time",
        ));
    }
    let (f, a) = (id.facility.clone(), id.appliance.clone());
    let taken = hub
        .region
        .call(move |c| crate::offline::take(c, &f, &a, &batch))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_accesses", e))?;
    if taken > 0 {
        tracing::info!(facility = %id.facility, appliance = %id.appliance, accesses = taken, "offline accesses taken into the audit log");
    }
    Ok(Json(json!({ "taken": taken })))
}

async fn position(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<copy::Position>> {
    let id = authed(&peer, &hub)?;
    let pos = hub
        .copy(&id.facility)?
        .call(|c| copy::position(c))
        .await??;
    Ok(Json(pos))
}

async fn segments(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<copy::Position>> {
    let id = authed(&peer, &hub)?;
    let limit = hub.settings.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a batch may hold at most {limit} bytes; send fewer segments at a time"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let (claimed, segs) = shared::wire::decode_batch(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_batch", e))?;
    if claimed != id.facility {
        tracing::warn!(facility = %id.facility, claimed = %claimed, serial = %id.serial, "batch claims another facility");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_facility",
            format!(
                "this appliance's certificate is for facility {}, but the batch claims {claimed}",
                id.facility
            ),
        ));
    }
    let n = segs.len();
    let result = hub
        .copy(&id.facility)?
        .call(move |c| copy::apply_batch(c, &segs))
        .await??;
    match result {
        Ok(pos) => {
            tracing::debug!(facility = %id.facility, segments = n, seq = pos.seq, "segments applied");
            hub.reindex(&id.facility);
            Ok(Json(pos))
        }
        Err((pos, refusal)) => {
            tracing::warn!(facility = %id.facility, seq = pos.seq, reason = %refusal, "segment refused");
            let code = match refusal {
                Refusal::Chain(ChainError::Gap { .. }) => "gap",
                Refusal::Chain(ChainError::Broken { .. }) => "broken_chain",
                Refusal::Chain(ChainError::Corrupt { .. } | ChainError::BadRow { .. }) => "corrupt",
                Refusal::Conflict { .. } => "conflict",
                Refusal::Unappliable { .. } => "unappliable",
                Refusal::Newer { .. } => "upgrade_hub",
            };
            let mut e = ApiError::new(StatusCode::CONFLICT, code, refusal.to_string());
            e.position = Some((pos.seq, shared::chain::hex(&pos.hash), pos.seq + 1));
            Err(e)
        }
    }
}

#[derive(Deserialize, Default)]
pub struct RestoreQuery {
    to_seq: Option<u64>,
    to_time: Option<String>,
}

fn target(q: &RestoreQuery) -> Target {
    match (&q.to_seq, &q.to_time) {
        (Some(n), _) => Target::Seq(*n),
        (None, Some(t)) => Target::Time(t.clone()),
        _ => Target::Head,
    }
}

/// A reader on the facility's copy, separate from its writer, for plans and restore streams.
fn reader(hub: &Hub, facility: &str) -> anyhow::Result<rusqlite::Connection> {
    db::open_read_only(
        &hub.copy_path(facility),
        &hub.key.derive(&format!("copy:{facility}")),
        shared::schema::MIGRATIONS,
    )
}

/// Opens a reader on the facility's copy and works out the plan, on a blocking thread: it reads
/// the copy and opens every snapshot.
async fn plan_for(
    hub: &Arc<Hub>,
    facility: &str,
    q: RestoreQuery,
) -> ApiResult<(rusqlite::Connection, snapshot::Plan, Key)> {
    hub.copy(facility)?;
    let (h, facility) = (hub.clone(), facility.to_string());
    tokio::task::spawn_blocking(move || {
        let key = h.key.derive(&format!("copy:{facility}"));
        let c = reader(&h, &facility).map_err(ApiError::from)?;
        let plan = snapshot::plan(&c, &h.snapshot_dir(&facility), &key, &target(&q))
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "no_plan", format!("{e:#}")))?;
        Ok((c, plan, key))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?
}

async fn restore_plan(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<RestoreQuery>,
) -> ApiResult<Json<shared::api::Plan>> {
    let id = authed(&peer, &hub)?;
    let (c, plan, _) = plan_for(&hub, &id.facility, q).await?;
    let schema =
        shared::schema::synced_version(c.query_row("PRAGMA user_version", [], |r| r.get(0))?);
    Ok(Json(plan.wire(schema)))
}

async fn restore(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<RestoreQuery>,
) -> ApiResult<Response> {
    let id = authed(&peer, &hub)?;
    let (c, plan, key) = plan_for(&hub, &id.facility, q).await?;
    tracing::info!(facility = %id.facility, appliance = %id.appliance, to = plan.to_seq, base = plan.base_seq, "restore started");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = snapshot::stream(&c, &plan, &key, |b| {
            tx.blocking_send(Bytes::from(b)).is_ok()
        }) {
            tracing::error!(error = %format!("{e:#}"), "restore stream failed");
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::new(ChannelBody(rx, None)))
        .map_err(|e| anyhow::anyhow!(e))?)
}

/// A response body fed by a channel, so a large restore or download streams instead of sitting
/// in memory. With a known length, the answer carries it, so a stream cut short is seen as such.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>, pub Option<u64>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.1 {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// The limits of the hub's two TLS listeners. The appliances' one carries sync bodies and restore
/// streams (a snapshot is built before its first byte goes out), so it allows a connection five
/// quiet minutes; the operators' two.
pub fn limits(kind: Listener) -> serve::Limits {
    match kind {
        Listener::Appliances => serve::Limits {
            idle: std::time::Duration::from_secs(300),
            max_connections: 4096,
            per_peer: 512,
            ..serve::Limits::web("appliances")
        },
        Listener::Operators => serve::Limits {
            max_connections: 256,
            per_peer: 64,
            ..serve::Limits::web("operators")
        },
    }
}

/// Serves `app` over TLS on `listener` (`serve::serve`: deadlines, a connection cap, drain on
/// stop), with the connection's verified identity attached to every request and the router
/// chosen by it (its entrance), until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    kind: Listener,
    tls: Arc<rustls::ServerConfig>,
    app: Entrances,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt;
    let service = move |conn: &serve::Conn| {
        let peer = Peer(
            conn.certs
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| Identity::from_der(c).ok()),
        );
        let (channel, app) = match (kind, &peer.0) {
            (Listener::Operators, _) => (Channel::Operators, app.operators.clone()),
            (Listener::Appliances, Some(id)) if id.purpose == Purpose::PortalProxy => {
                (Channel::Proxy(id.clone()), app.proxy.clone())
            }
            (Listener::Appliances, Some(id)) => {
                (Channel::Appliance(id.clone()), app.appliance.clone())
            }
            (Listener::Appliances, None) => (Channel::Unauthenticated, app.stranger.clone()),
        };
        let addr = conn.peer;
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            req.extensions_mut().insert(channel.clone());
            req.extensions_mut().insert(Remote(addr));
            app.clone().oneshot(req.map(Body::new))
        })
    };
    serve::serve(listener, Some(tls), limits(kind), service, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn hub(dir: &std::path::Path) -> Arc<Hub> {
        let mut ca = Ca::init(&dir.join("ca"), "test", now()).unwrap();
        ca.ensure_lan("tsunagi.internal", now()).unwrap();
        let revoked = Arc::new(Revocations::new(
            dir.join("ca").join(provisioning::ca::CRL),
            ca.issuing_ders(),
        ));
        let settings = Settings {
            client_cert_lifetime: 86_400,
            max_body: 1 << 20,
            snapshots_kept: 1,
        };
        Arc::new(
            Hub::new(
                dir.to_owned(),
                ca,
                crate::key::Key::from_bytes([7; 32]),
                revoked,
                settings,
            )
            .unwrap(),
        )
    }

    /// A portal route with sample values for its `{…}` segments.
    fn sample(route: &str) -> String {
        route
            .split('/')
            .map(|seg| match seg {
                "{rid}" => "R0000001",
                "{entry}" | "{file}" => "1",
                "{login}" => "dr-a",
                "{action}" => "reset",
                "{facility}" => "3710000001",
                "{appliance}" => "box-1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn status(app: &Router, method: &str, path: &str, channel: &Channel) -> StatusCode {
        let peer = match channel {
            Channel::Appliance(id) | Channel::Proxy(id) => Peer(Some(id.clone())),
            _ => Peer(None),
        };
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(channel.clone());
        req.extensions_mut()
            .insert(Remote("127.0.0.1:1".parse().unwrap()));
        app.clone().oneshot(req).await.unwrap().status()
    }

    /// Every entrance against every route: each reaches its own routes and answers 404 for the
    /// rest, and a path in no table is 404 everywhere. The portal's routes are the shared list
    /// the LAN proxy forwards, so the hub and the proxy cannot drift apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_entrance_reaches_its_routes_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let issuer = hub.ca.issuing_subject();
        let portal = crate::portal::router(Arc::new(crate::portal::Portal::new(
            hub.clone(),
            crate::portal::Settings::default(),
        )));
        let (appliances, operators) = entrances(hub, portal);
        let id = |purpose| Identity {
            facility: "3710000001".into(),
            appliance: "box-1".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: i64::MAX / 2,
            purpose,
            issuer: issuer.clone(),
        };
        let (as_appliance, as_proxy) = (
            Channel::Appliance(id(Purpose::Appliance)),
            Channel::Proxy(id(Purpose::PortalProxy)),
        );
        for route in shared::route::PORTAL {
            let path = sample(route);
            assert!(shared::route::is_portal_path(&path), "{path}");
            for method in ["GET", "POST"] {
                let s = status(&appliances.proxy, method, &path, &as_proxy).await;
                assert!(
                    s != StatusCode::NOT_FOUND || route.contains('{'),
                    "{method} {path} through the proxy: {s}"
                );
                assert_eq!(
                    status(&appliances.appliance, method, &path, &as_appliance).await,
                    StatusCode::NOT_FOUND,
                    "{method} {path} on the appliance certificate"
                );
                let s = status(&operators.operators, method, &path, &Channel::Operators).await;
                assert!(
                    s != StatusCode::NOT_FOUND || route.contains('{'),
                    "{method} {path} on the operators' listener: {s}"
                );
                let s = status(
                    &appliances.stranger,
                    method,
                    &path,
                    &Channel::Unauthenticated,
                )
                .await;
                // The refusal page's stylesheet is served to anyone; every page is refused.
                let want = if *route == "/static/portal.css" {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(s, want, "{method} {path} without a certificate");
            }
            // A portal route with a parameter is routed (not a 404 for its shape) for the portal.
            let s = status(&appliances.proxy, "GET", &path, &as_proxy).await;
            assert!(
                matches!(
                    s,
                    StatusCode::SEE_OTHER | StatusCode::OK | StatusCode::METHOD_NOT_ALLOWED
                ),
                "GET {path} through the proxy, not logged in: {s}"
            );
        }
        for (method, path) in API {
            assert_eq!(
                status(&appliances.proxy, method, path, &as_proxy).await,
                StatusCode::NOT_FOUND,
                "{method} {path} on the proxy certificate"
            );
            assert_eq!(
                status(&operators.operators, method, path, &Channel::Operators).await,
                StatusCode::NOT_FOUND,
                "{method} {path} on the operators' listener"
            );
            let s = status(&appliances.appliance, method, path, &as_appliance).await;
            assert!(
                s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} on the appliance certificate: {s}"
            );
            let s = status(
                &appliances.stranger,
                method,
                path,
                &Channel::Unauthenticated,
            )
            .await;
            let want = if *path == "/v1/enroll" {
                s.is_client_error() && s != StatusCode::NOT_FOUND && s != StatusCode::UNAUTHORIZED
            } else {
                s == StatusCode::UNAUTHORIZED
            };
            assert!(want, "{method} {path} without a certificate: {s}");
        }
        for path in [
            "/nothing",
            "/v1/nothing",
            "/v2/restore",
            "//v1/restore",
            "/v1/restore/",
            "/admin",
        ] {
            for (app, ch) in [
                (&appliances.appliance, &as_appliance),
                (&appliances.proxy, &as_proxy),
                (&appliances.stranger, &Channel::Unauthenticated),
                (&operators.operators, &Channel::Operators),
            ] {
                assert_eq!(
                    status(app, "GET", path, ch).await,
                    StatusCode::NOT_FOUND,
                    "{path} on {ch:?}"
                );
            }
        }
    }

    /// One portal request as a browser sends it: the status, the body and the cookies set.
    async fn browse(
        app: &Router,
        channel: &Channel,
        method: &str,
        path: &str,
        cookie: &str,
        form: &str,
    ) -> (StatusCode, String, Vec<String>) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !cookie.is_empty() {
            req = req.header(header::COOKIE, cookie);
        }
        let mut req = req.body(Body::from(form.to_string())).unwrap();
        let peer = match channel {
            Channel::Appliance(id) | Channel::Proxy(id) => Peer(Some(id.clone())),
            _ => Peer(None),
        };
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(channel.clone());
        req.extensions_mut()
            .insert(Remote("127.0.0.1:1".parse().unwrap()));
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let cookies = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::to_owned)
            .collect();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), cookies)
    }

    fn csrf_of(html: &str) -> String {
        html.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    }

    /// Logs `login` in at `app` through the login form; the session cookie and its CSRF token.
    async fn log_in(app: &Router, channel: &Channel, login: &str) -> (String, String) {
        let (_, page, cookies) = browse(app, channel, "GET", "/login", "", "").await;
        let pre = cookies
            .into_iter()
            .find(|c| c.starts_with("__Host-tsunagi-login="))
            .expect("a pre-login cookie");
        let form = format!("csrf={}&login={login}&password=Pass-word1", csrf_of(&page));
        let (status, _, cookies) = browse(app, channel, "POST", "/login", &pre, &form).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{login} logs in");
        let session = cookies
            .into_iter()
            .find(|c| c.starts_with("__Host-tsunagi="))
            .expect("a session cookie");
        let (_, home, _) = browse(app, channel, "GET", "/", &session, "").await;
        (session, csrf_of(&home))
    }

    /// The portal's route table against every role at its own entrance (each facility role
    /// through its appliance's proxy certificate, the office and operators on their listener) and
    /// against nobody logged in at every entrance: a role the table lets through is never refused
    /// (403), a role it does not is always refused, whatever the method; nobody logged in is sent
    /// to the login page. A session taken to the other entrance is refused there and ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_answers_every_role_as_its_table_says() {
        use crate::account::Role;
        use crate::portal::{Who, ROUTES};
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let issuer = hub.ca.issuing_subject();
        let a = "3710000001";
        let rid = {
            let c = crate::region::open(
                dir.path(),
                &crate::key::Key::from_bytes([7; 32]).derive("region"),
            )
            .unwrap();
            let v = crate::account::hash_password("Pass-word1");
            for (login, role, facility) in [
                ("adm", Role::FacilityAdmin, a),
                ("dr-a", Role::Doctor, a),
                ("ns-a", Role::Nurse, a),
                ("ph-a", Role::Pharmacist, a),
                ("clerk", Role::Clerk, a),
                ("office", Role::Office, ""),
                ("ops-1", Role::Operator, ""),
            ] {
                crate::account::add(&c, login, login, facility, role, &v, "test", now())
                    .unwrap()
                    .unwrap();
            }
            c.execute("UPDATE user SET must_change = 0", []).unwrap();
            crate::consent::set_core(&c, a, true, now()).unwrap();
            let d = crate::index::Demographics {
                patient_id: "0001".into(),
                family_kanji: "山田".into(),
                given_kanji: "太郎".into(),
                family_kana: "ヤマダ".into(),
                given_kana: "タロウ".into(),
                birth_date: "19600101".into(),
                sex: "M".into(),
            };
            let id = crate::index::upsert(&c, a, &d, now()).unwrap();
            assert_eq!(id, 1, "the sample entry");
            crate::index::get(&c, id).unwrap().unwrap().regional_id
        };
        let portal = crate::portal::router(Arc::new(crate::portal::Portal::new(
            hub.clone(),
            crate::portal::Settings::default(),
        )));
        let (appliances, operators) = entrances(hub, portal);
        let proxy = Channel::Proxy(Identity {
            facility: a.into(),
            appliance: "box-1".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: i64::MAX / 2,
            purpose: Purpose::PortalProxy,
            issuer: issuer.clone(),
        });
        let path_of = |route: &str| {
            sample(route)
                .replace("R0000001", &rid)
                .replace("/dr-a/", "/nobody-x/")
        };
        assert_eq!(
            ROUTES.iter().map(|r| r.path).collect::<Vec<_>>(),
            shared::route::PORTAL.to_vec(),
            "the table is the proxy's list"
        );

        // Nobody logged in: the login page and the stylesheet, and for the rest a way to log in.
        for (app, ch) in [
            (&appliances.proxy, &proxy),
            (&operators.operators, &Channel::Operators),
        ] {
            for route in ROUTES {
                for (method, who) in [("GET", route.get), ("POST", route.post)] {
                    let Some(who) = who else { continue };
                    let (s, _, _) = browse(app, ch, method, &path_of(route.path), "", "").await;
                    if who == Who::Anyone {
                        assert_ne!(
                            s,
                            StatusCode::SEE_OTHER,
                            "{method} {} needs no login",
                            route.path
                        );
                    } else {
                        assert_eq!(
                            s,
                            StatusCode::SEE_OTHER,
                            "{method} {} without a login on {ch:?}",
                            route.path
                        );
                    }
                }
            }
        }
        let people = [
            ("adm", Role::FacilityAdmin),
            ("dr-a", Role::Doctor),
            ("ns-a", Role::Nurse),
            ("ph-a", Role::Pharmacist),
            ("clerk", Role::Clerk),
            ("office", Role::Office),
            ("ops-1", Role::Operator),
        ];
        let mut walked = 0;
        for (login, role) in people {
            let (own, own_ch, other, other_ch) = if role.in_facility() {
                (
                    &appliances.proxy,
                    &proxy,
                    &operators.operators,
                    &Channel::Operators,
                )
            } else {
                (
                    &operators.operators,
                    &Channel::Operators,
                    &appliances.proxy,
                    &proxy,
                )
            };
            let (session, csrf) = log_in(own, own_ch, login).await;
            for route in ROUTES {
                for (method, who) in [("GET", route.get), ("POST", route.post)] {
                    let Some(who) = who else { continue };
                    if matches!(route.path, "/login" | "/logout") && method == "POST" {
                        continue; // the login form and the end of the session, below
                    }
                    let (s, body, _) = browse(
                        own,
                        own_ch,
                        method,
                        &path_of(route.path),
                        &session,
                        &format!("csrf={csrf}"),
                    )
                    .await;
                    assert_ne!(
                        s,
                        StatusCode::SEE_OTHER,
                        "{login}: {method} {} lost the session",
                        route.path
                    );
                    if who.lets(role) {
                        assert_ne!(
                            s,
                            StatusCode::FORBIDDEN,
                            "{login} ({role:?}) refused {method} {}: {body}",
                            route.path
                        );
                    } else {
                        assert_eq!(
                            s,
                            StatusCode::FORBIDDEN,
                            "{login} ({role:?}) let through {method} {}",
                            route.path
                        );
                    }
                    walked += 1;
                }
            }
            // The session at the other entrance: refused, and over at its own too.
            let (s, _, _) = browse(other, other_ch, "GET", "/", &session, "").await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{login}'s session at the other entrance"
            );
            let (s, _, _) = browse(own, own_ch, "GET", "/", &session, "").await;
            assert_eq!(s, StatusCode::SEE_OTHER, "{login}'s session ended");
            // And logging out ends a session.
            let (session, csrf) = log_in(own, own_ch, login).await;
            let (s, _, _) = browse(
                own,
                own_ch,
                "POST",
                "/logout",
                &session,
                &format!("csrf={csrf}"),
            )
            .await;
            assert_eq!(s, StatusCode::SEE_OTHER);
            let (s, _, _) = browse(own, own_ch, "GET", "/", &session, "").await;
            assert_eq!(s, StatusCode::SEE_OTHER, "{login} logged out");
        }
        assert!(
            walked > 7 * 25,
            "{walked} role × route × method answers checked"
        );
    }

    /// A guesser at one terminal gets 12 attempts a minute, answered at once after that, while
    /// the clinic's other terminals log in as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_attempts_are_throttled_per_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path());
        let issuer = hub.ca.issuing_subject();
        {
            let c = crate::region::open(
                dir.path(),
                &crate::key::Key::from_bytes([7; 32]).derive("region"),
            )
            .unwrap();
            crate::account::add(
                &c,
                "dr-a",
                "dr-a",
                "3710000001",
                crate::account::Role::Doctor,
                &crate::account::hash_password("Pass-word1"),
                "test",
                now(),
            )
            .unwrap()
            .unwrap();
            c.execute("UPDATE user SET must_change = 0", []).unwrap();
        }
        let portal = Arc::new(crate::portal::Portal::new(
            hub.clone(),
            crate::portal::Settings::default(),
        ));
        let (appliances, _) = entrances(hub, crate::portal::router(portal.clone()));
        let proxy = Channel::Proxy(Identity {
            facility: "3710000001".into(),
            appliance: "box-1".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: i64::MAX / 2,
            purpose: Purpose::PortalProxy,
            issuer: issuer.clone(),
        });
        let attempt = |terminal: &'static str, password: &'static str| {
            let (app, ch) = (appliances.proxy.clone(), proxy.clone());
            async move {
                let (_, page, cookies) = browse(&app, &ch, "GET", "/login", "", "").await;
                let pre = cookies
                    .into_iter()
                    .find(|c| c.starts_with("__Host-tsunagi-login="))
                    .unwrap();
                let mut req = axum::http::Request::post("/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::COOKIE, pre)
                    .header(crate::portal::TERMINAL_HEADER, terminal)
                    .body(Body::from(format!(
                        "csrf={}&login=dr-a&password={password}",
                        csrf_of(&page)
                    )))
                    .unwrap();
                req.extensions_mut().insert(Peer(None));
                req.extensions_mut().insert(ch.clone());
                req.extensions_mut()
                    .insert(Remote("127.0.0.1:1".parse().unwrap()));
                let r = app.oneshot(req).await.unwrap();
                let status = r.status();
                let body = http_body_util::BodyExt::collect(r.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        // Every attempt counts, right or wrong (right ones in between keep the account's own
        // slow-down out of the way).
        let mut refused = 0;
        for i in 0..crate::account::Throttle::PER_TERMINAL + 3 {
            let (s, body) = attempt(
                "t-guess",
                if i % 2 == 0 {
                    "Pass-word1"
                } else {
                    "Wrong-pass1"
                },
            )
            .await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                assert!(body.contains("ログインの試行が多すぎます"), "{body}");
                refused += 1;
            } else {
                assert!(
                    i < crate::account::Throttle::PER_TERMINAL,
                    "attempt {i} was checked"
                );
            }
        }
        assert_eq!(refused, 3);
        let (s, _) = attempt("t-colleague", "Pass-word1").await;
        assert_eq!(
            s,
            StatusCode::SEE_OTHER,
            "another terminal of the clinic logs in"
        );
    }
}
