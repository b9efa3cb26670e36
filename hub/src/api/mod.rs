//! The hub's HTTPS API for appliances: enrolment (the only route without a client certificate),
//! renewal, the copy's position, segment upload, and restore. Served over the TLS of `tls.rs`; the
//! facility is the one in the verified client certificate, never one named in a request.

mod enrol;
mod error;
mod listen;
mod restore;
mod sync;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use provisioning::Identity;

use crate::state::Hub;
use enrol::{enroll, renew};
use restore::{restore, restore_plan};
use sync::{offline_accesses, ping, position, segments, verifiers};

pub use enrol::RENEWALS_PER_DAY;
pub use error::ApiError;
pub use listen::{limits, serve, Listener};
pub use restore::RestoreQuery;

/// The verified identity of the connection a request came on, if it presented a certificate.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Identity>);

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

#[cfg(test)]
mod tests;
