//! The proxy and its request handler: the terminal's cookie and posture verdict, then the
//! portal's routes passed on to the hub, or the offline view while the hub cannot be reached.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::headers::{hop_by_hop, not_here};
use super::{
    bound, cookie, offline, page, random_token, redirect, set_cookie, strip_request, Body,
    BoxError, Health, UpError, Upstream, ANSWER_TIMEOUT, ENROL_PATH, HUB_SESSION, MAX_TRACKED,
    MAX_UPLOAD, POSTURE_HEADER, POSTURE_PATH, TERMINAL_COOKIE, TERMINAL_HEADER,
};
use crate::config::ProxySettings;
use crate::identity::Identity;
use crate::local;
use crate::policy::{Terminal, TerminalPolicy, Verdict};
use crate::store::Key;

pub struct Proxy {
    pub settings: ProxySettings,
    pub upstream: Upstream,
    pub health: Health,
    pub local: Arc<local::Local>,
    offline: offline::Offline,
    pub(super) policy: Arc<dyn TerminalPolicy>,
    pub(super) identity_dir: PathBuf,
    /// Hub sessions (by a hash of the cookie) and when they were last used through this proxy.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Enrolled terminals (by a hash of the cookie) and their names, read again from `offline.db`
    /// every few seconds so `terminal forget` in another process takes effect.
    pub(super) terminals: std::sync::RwLock<HashMap<[u8; 32], String>>,
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
                // The route, not the path: a path names a patient's record and its documents.
                let route = path.split('/').nth(1).unwrap_or("");
                tracing::warn!(route = %route, error = %why, "a request to the hub failed");
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
                let mut r = redirect("/login");
                let h = r.headers_mut();
                h.append(header::SET_COOKIE, set_cookie(HUB_SESSION, "", Some(0)));
                // The login says why, and returns to the page asked for, as the hub's own do.
                h.append(
                    header::SET_COOKIE,
                    set_cookie(shared::route::NOTICE_COOKIE, "expired", Some(120)),
                );
                if parts.method == hyper::Method::GET {
                    // Remembered as the hub remembers (view::remembered).
                    let target = parts.uri.path_and_query().and_then(view::remembered);
                    if let Some(target) = target {
                        h.append(
                            header::SET_COOKIE,
                            set_cookie(shared::route::NEXT_COOKIE, &target, Some(120)),
                        );
                    }
                }
                return Ok(r);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&terminal.label()) {
            parts.headers.insert(TERMINAL_HEADER, v);
        }
        if terminal.warned {
            parts.headers.insert(
                POSTURE_HEADER,
                HeaderValue::from_static(self.policy.warning(terminal)),
            );
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AllowAll;

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
