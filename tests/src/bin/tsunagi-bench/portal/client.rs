//! The hub in process as an appliance reaches it: opened from its data folder, its portal router
//! with the appliance's identity attached, and requests through the real login and password forms.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use hub::state::{Hub, Settings};

use super::{encode, NEW_PASSWORD, PASSWORD};

pub(super) fn open_hub(data: &Path) -> anyhow::Result<Arc<Hub>> {
    let ca = provisioning::Ca::load(&data.join("ca")).map_err(anyhow::Error::msg)?;
    let key = hub::key::read(&data.join("hub.key"))?;
    let revoked = Arc::new(hub::tls::Revocations::new(
        data.join("ca").join(provisioning::ca::CRL),
        ca.issuing_ders(),
    ));
    let settings = Settings {
        client_cert_lifetime: 90 * 86_400,
        max_body: 64 << 20,
        snapshots_kept: 7,
    };
    Ok(Arc::new(Hub::new(
        data.to_owned(),
        ca,
        key,
        revoked,
        settings,
    )?))
}

fn cookie_of(resp: &axum::response::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))?
                .split(';')
                .next()
                .map(str::to_owned)
        })
}

async fn body_text(resp: axum::response::Response) -> String {
    String::from_utf8_lossy(
        &resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
    )
    .into_owned()
}

fn csrf_in(html: &str) -> Option<String> {
    html.split("name=\"csrf\" value=\"")
        .nth(1)?
        .split('"')
        .next()
        .map(str::to_owned)
}

/// The portal as a facility's appliance reaches it: every request carries the appliance's
/// verified identity, as the hub's TLS listener attaches it.
pub(super) fn app_for(portal: &Arc<hub::portal::Portal>, facility: &str) -> Router {
    app_at(portal, facility, "bench")
}

/// The same, through the appliance `appliance` of the facility.
pub(super) fn app_at(portal: &Arc<hub::portal::Portal>, facility: &str, appliance: &str) -> Router {
    let id = provisioning::Identity {
        facility: facility.into(),
        appliance: appliance.into(),
        serial: "01".into(),
        not_before: 0,
        not_after: i64::MAX / 2,
        purpose: provisioning::Purpose::PortalProxy,
        issuer: portal.hub.ca.issuing_subject(),
    };
    hub::portal::router(portal.clone()).layer(axum::Extension(hub::state::Channel::Proxy(id)))
}

async fn call(app: &Router, req: Request<Body>) -> anyhow::Result<axum::response::Response> {
    Ok(app.clone().oneshot(req).await?)
}

/// Logs a person in through the real forms (first login and the forced change) and returns the
/// session cookie.
pub(super) async fn session(app: &Router, login: &str) -> anyhow::Result<String> {
    let r = call(app, Request::get("/login").body(Body::empty())?).await?;
    let pre = cookie_of(&r, "__Host-tsunagi-login").context("no login cookie")?;
    let csrf = csrf_in(&body_text(r).await).context("no login token")?;
    let form = format!("csrf={csrf}&login={login}&password={PASSWORD}");
    let r = call(
        app,
        Request::post("/login")
            .header(header::COOKIE, format!("__Host-tsunagi-login={pre}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))?,
    )
    .await?;
    let s = cookie_of(&r, "__Host-tsunagi").context("login failed")?;
    let cookie = format!("__Host-tsunagi={s}");
    let r = call(
        app,
        Request::get("/password")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())?,
    )
    .await?;
    let csrf = csrf_in(&body_text(r).await).context("no session token")?;
    let form = format!("csrf={csrf}&current={PASSWORD}&new={NEW_PASSWORD}&again={NEW_PASSWORD}");
    let r = call(
        app,
        Request::post("/password")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))?,
    )
    .await?;
    anyhow::ensure!(
        r.status() == StatusCode::SEE_OTHER,
        "password change answered {}",
        r.status()
    );
    Ok(cookie)
}

/// Times one GET; returns milliseconds and the body.
pub(super) async fn timed_get(
    app: &Router,
    cookie: &str,
    uri: &str,
) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let r = call(
        app,
        Request::get(uri)
            .header(header::COOKIE, cookie)
            .body(Body::empty())?,
    )
    .await?;
    let status = r.status();
    let body = body_text(r).await;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(status == StatusCode::OK, "{uri} answered {status}");
    Ok((ms, body))
}

/// One login attempt through the real form: the pre-login cookie and token come from GET /login
/// (not timed), then the POST is timed. Milliseconds, the status and the body.
pub(super) async fn timed_login(
    app: &Router,
    terminal: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<(f64, StatusCode, String)> {
    let r = call(app, Request::get("/login").body(Body::empty())?).await?;
    let pre = cookie_of(&r, "__Host-tsunagi-login").context("no login cookie")?;
    let csrf = csrf_in(&body_text(r).await).context("no login token")?;
    let form = format!(
        "csrf={csrf}&login={}&password={}",
        encode(login),
        encode(password)
    );
    let t = Instant::now();
    let r = call(
        app,
        Request::post("/login")
            .header(header::COOKIE, format!("__Host-tsunagi-login={pre}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hub::portal::TERMINAL_HEADER, terminal)
            .body(Body::from(form))?,
    )
    .await?;
    let status = r.status();
    let body = body_text(r).await;
    Ok((t.elapsed().as_secs_f64() * 1e3, status, body))
}
