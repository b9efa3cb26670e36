//! First boot of an appliance image: the box is not enrolled yet, but the image names its hub
//! and the network root (`hub.url`, `hub.fingerprint`). The edge then serves one page on the LAN
//! (plain HTTP on `proxy.plain_listen`; port 80 is redirected to it) and writes to the console
//! where that page is. The facility's administrator opens it, enters the one-time token from the
//! network office and the name the clinic's browsers will use for the box; the edge enrols with
//! the hub, restores the facility's copy when the hub holds one (a replacement box), and then
//! starts as usual.
//!
//! The page is plain HTTP because no certificate exists yet. The token it carries is single-use,
//! short-lived and bound to the facility, and the hub is trusted only through the pinned root.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, Mutex};

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::proxy::{fields, page, Body};

/// Where the console text goes: agetty shows `/run/issue.d/*.issue` above the login prompt
/// (the image links `/run/issue.d/tsunagi.issue` to this file in the service's runtime folder).
pub const CONSOLE_FILE: &str = "console.issue";

struct Page {
    hub: String,
    fingerprint: String,
    dir: PathBuf,
    appliance: String,
    store: crate::secrets::KeyStore,
    /// Held while an enrolment runs, so two submissions cannot race.
    busy: Mutex<()>,
    done: mpsc::Sender<Identity>,
}

/// The appliance's LAN addresses as agetty prints them: `\4` is the first IPv4 address.
fn console_text(port: u16, failed: Option<&str>) -> String {
    let port = if port == 80 || port == 8080 {
        String::new()
    } else {
        format!(":{port}")
    };
    let mut s = String::from(
        "\n tsunagi appliance: not enrolled yet / 未登録です\n\n\
         \x20 On a computer in this clinic, open / 院内のパソコンで次を開いてください:\n\n",
    );
    s.push_str(&format!("      http://\\4{port}/\n\n"));
    s.push_str("  and enter the one-time token from the network office.\n  ネットワーク事務局から届いた登録用トークンを入力してください。\n");
    if let Some(f) = failed {
        s.push_str(&format!("\n  last attempt / 前回の登録: {f}\n"));
    }
    s.push('\n');
    s
}

fn write_console(dir: Option<&Path>, text: &str) {
    if let Some(d) = dir {
        let p = d.join(CONSOLE_FILE);
        if let Err(e) = provisioning::secret::write_atomic(&p, text.as_bytes(), 0o644) {
            tracing::warn!(error = %e, path = %p.display(), "cannot write the console text");
        }
    }
}

/// Serves the enrolment page until the box is enrolled (returns the identity) or `stop` fires
/// (returns `None`).
pub async fn enrol(
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Identity>> {
    let hub = cfg
        .hub_url
        .clone()
        .context("hub.url is not set: the image must name its hub to enrol on first boot")?;
    let fingerprint = cfg
        .hub_fingerprint
        .clone()
        .context("hub.fingerprint is not set")?;
    let listen = cfg
        .proxy
        .plain_listen
        .clone()
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (proxy.plain_listen) for the enrolment page")
        })?;
    let addr = listener.local_addr()?;
    let runtime = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from);
    write_console(runtime.as_deref(), &console_text(addr.port(), None));
    let (tx, mut rx) = mpsc::channel(1);
    let page = Arc::new(Page {
        hub,
        fingerprint,
        dir: cfg.identity_dir(),
        appliance: identity::default_appliance(),
        store: cfg.key_store.clone(),
        busy: Mutex::new(()),
        done: tx,
    });
    tracing::info!(listen = %addr, "not enrolled: the enrolment page is served on the LAN");
    println!("enrolment page on http://{addr}/");
    crate::notify::ready(&format!(
        "not enrolled: enrolment page on port {}",
        addr.port()
    ));
    let (serve_stop, serve_rx) = tokio::sync::watch::channel(false);
    let service = {
        let (page, runtime) = (page.clone(), runtime.clone());
        move |conn: &serve::Conn| {
            let (page, runtime, local, peer) =
                (page.clone(), runtime.clone(), conn.local, conn.peer);
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let (page, runtime) = (page.clone(), runtime.clone());
                async move {
                    Ok::<_, Infallible>(page.answer(req, local, peer, runtime.as_deref()).await)
                }
            })
        }
    };
    let server = tokio::spawn(serve::serve(
        listener,
        None,
        crate::proxy::PLAIN_LIMITS,
        service,
        serve_rx,
    ));
    let out = tokio::select! {
        id = rx.recv() => id,
        _ = stop.changed() => None,
    };
    // The page that said "enrolled" is answered before the listener goes (the drain).
    let _ = serve_stop.send(true);
    let _ = server.await;
    let Some(id) = out else { return Ok(None) };
    write_console(
        runtime.as_deref(),
        &format!(
            "\n tsunagi appliance: enrolled for facility {} / 登録済み\n\n",
            id.cert.facility
        ),
    );
    Ok(Some(id))
}

impl Page {
    async fn answer(
        &self,
        req: Request<Incoming>,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        runtime: Option<&Path>,
    ) -> Response<Body> {
        // The name the browser used is the natural LAN name of the box.
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h).to_string());
        let default_name = host
            .filter(|h| {
                provisioning::cert::check_host_name(h).is_ok()
                    || h.parse::<std::net::IpAddr>().is_ok()
            })
            .or(local.map(|a| a.ip().to_string()))
            .unwrap_or_default();
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/static/portal.css") => {
                page(StatusCode::OK, "text/css; charset=utf-8", view::PORTAL_CSS)
            }
            (&Method::GET | &Method::HEAD, _) => self.form(StatusCode::OK, &default_name, None),
            (&Method::POST, "/enrol") => {
                // A page elsewhere must not be able to submit a token to the box.
                let origin = req
                    .headers()
                    .get(hyper::header::ORIGIN)
                    .and_then(|o| o.to_str().ok())
                    .map(str::to_string);
                let host = req
                    .headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // A browser names the page that submits (Origin, and Sec-Fetch-Site in Chromium);
                // `null` is a sandboxed frame, a file or a data: page, never this page, so it is
                // refused like any other. A tool that sends neither is not a browser another site
                // could drive.
                let cross_site = req
                    .headers()
                    .get("sec-fetch-site")
                    .is_some_and(|v| v.as_bytes() != b"same-origin" && v.as_bytes() != b"none");
                let foreign = origin
                    .is_some_and(|o| o.split_once("://").map(|(_, h)| h) != Some(host.as_str()));
                if cross_site || foreign {
                    return self.form(StatusCode::FORBIDDEN, &default_name, Some("別のページからの送信は受け付けません。/ Submissions from other pages are refused."));
                }
                let (_, body) = req.into_parts();
                let Ok(bytes) = Limited::new(body, 8 << 10)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                else {
                    return self.form(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &default_name,
                        Some("送信内容が大きすぎます。/ The form is too large."),
                    );
                };
                let f = fields(std::str::from_utf8(&bytes).unwrap_or(""));
                self.submit(&f, &default_name, peer, runtime).await
            }
            _ => self.form(StatusCode::NOT_FOUND, &default_name, None),
        }
    }

    async fn submit(
        &self,
        f: &HashMap<String, String>,
        default_name: &str,
        peer: SocketAddr,
        runtime: Option<&Path>,
    ) -> Response<Body> {
        let field = |k: &str| f.get(k).map(|s| s.trim().to_string()).unwrap_or_default();
        let token = field("token");
        let name = field("name");
        let appliance = match field("appliance") {
            a if a.is_empty() => self.appliance.clone(),
            a => a,
        };
        if token.is_empty() {
            return self.form(
                StatusCode::BAD_REQUEST,
                default_name,
                Some("登録用トークンを入力してください。/ Enter the enrolment token."),
            );
        }
        let names: Vec<String> = name
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return self.form(StatusCode::BAD_REQUEST, default_name, Some("この機器の名前（アドレス）を入力してください。/ Enter the name browsers use for this box."));
        }
        let Ok(_guard) = self.busy.try_lock() else {
            return self.form(StatusCode::CONFLICT, default_name, Some("登録処理中です。しばらくしてから開き直してください。/ An enrolment is running; reload in a minute."));
        };
        tracing::info!(from = %peer.ip(), appliance = %appliance, "enrolment submitted on the LAN page");
        match identity::enroll(
            &self.dir,
            &self.hub,
            &token,
            &self.fingerprint,
            &appliance,
            &names,
            &self.store,
        )
        .await
        {
            Ok(id) => {
                let enrolled = Enrolled {
                    facility: id.cert.facility.clone(),
                    portal: format!("https://{}/", names[0]),
                };
                let _ = self.done.send(id).await;
                self.render(
                    StatusCode::OK,
                    &EnrolPage {
                        enrolled: Some(enrolled),
                        message: None,
                        hub: &self.hub,
                        name: default_name,
                        appliance: &self.appliance,
                        fingerprint: &self.fingerprint,
                    },
                )
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(error = %msg, "enrolment failed");
                write_console(runtime, &console_text(8080, Some(&msg)));
                self.form(
                    StatusCode::BAD_REQUEST,
                    default_name,
                    Some(&format!("登録できませんでした / Enrolment failed: {msg}")),
                )
            }
        }
    }

    fn form(
        &self,
        status: StatusCode,
        default_name: &str,
        message: Option<&str>,
    ) -> Response<Body> {
        self.render(
            status,
            &EnrolPage {
                enrolled: None,
                message,
                hub: &self.hub,
                name: default_name,
                appliance: &self.appliance,
                fingerprint: &self.fingerprint,
            },
        )
    }

    fn render(&self, status: StatusCode, p: &EnrolPage<'_>) -> Response<Body> {
        use askama::Template;
        match p.render() {
            Ok(html) => page(status, "text/html; charset=utf-8", html),
            Err(e) => {
                tracing::error!(error = %e, "the enrolment page cannot be rendered");
                page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "the enrolment page cannot be rendered",
                )
            }
        }
    }
}

/// The first-boot page: the enrolment form, or what happened once it was sent. Its look is the
/// portal's stylesheet, served beside it at `/static/portal.css` (the page's CSP allows no inline
/// style).
#[derive(askama::Template)]
#[template(path = "firstboot.html")]
struct EnrolPage<'a> {
    enrolled: Option<Enrolled>,
    message: Option<&'a str>,
    hub: &'a str,
    name: &'a str,
    appliance: &'a str,
    fingerprint: &'a str,
}

struct Enrolled {
    facility: String,
    portal: String,
}

/// After enrolment: restores the facility's copy when the hub holds one and this box has no store
/// yet (a replacement). Returns what was restored, if anything.
pub async fn restore_if_any(
    id: &Identity,
    cfg: &Config,
    key: &crate::store::Key,
) -> anyhow::Result<Option<crate::restore::Restored>> {
    if cfg.store_dir().exists() {
        return Ok(None);
    }
    let target = crate::restore::Target::default();
    let plan = crate::restore::plan(id, cfg.hub_url.as_deref(), &target).await?;
    if plan.head.seq == 0 && plan.snapshot.is_none() {
        tracing::info!(facility = %id.cert.facility, "the hub holds no copy of this facility yet: starting with an empty store");
        return Ok(None);
    }
    tracing::info!(facility = %id.cert.facility, to_seq = plan.to_seq, "restoring the facility's copy from the hub");
    crate::notify::status(&format!(
        "restoring facility {} from the hub",
        id.cert.facility
    ));
    let r =
        crate::restore::restore(id, cfg.hub_url.as_deref(), &target, &cfg.store_dir(), key).await?;
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_console_names_the_page_with_agettys_address_escape() {
        let t = super::console_text(8080, None);
        assert!(t.contains("http://\\4/"), "{t}");
        let t = super::console_text(9000, Some("token expired"));
        assert!(
            t.contains("http://\\4:9000/") && t.contains("token expired"),
            "{t}"
        );
    }
}
