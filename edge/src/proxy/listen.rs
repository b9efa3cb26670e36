//! The proxy's listeners: HTTPS for the LAN, and the plain-HTTP page that explains how to trust
//! the network's root; `start` brings them up with the proxy's upkeep.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::{lan_tls, page, Body, LanCert, Proxy};
use crate::identity::{self, Identity};

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
