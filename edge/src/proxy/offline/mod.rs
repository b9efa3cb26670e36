//! The offline view: while the hub cannot be reached, the facility's own staff log in with the
//! verifiers the hub last handed over and read their own facility's records from the store —
//! search, and the patient page with its tabs — read-only, under a banner that says since when
//! the hub is unreachable. Every access is recorded in `offline.db` before it is served, and
//! handed to the hub's audit log when the hub is back.

mod login;
mod records;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{now_ms, page, redirect, Body};
use crate::local::Local;
use crate::policy::Terminal;
use crate::store::Key;
use view::fmt::jst;

struct Session {
    login: String,
    name: String,
    csrf: String,
    last: Instant,
}

pub struct Offline {
    store_dir: PathBuf,
    key: Key,
    local: Arc<Local>,
    facility: String,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

pub struct Who {
    pub login: String,
    pub name: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "offline_error.html")]
struct ErrorPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    title: &'a str,
    message: &'a str,
}

/// A patient ID `%`-encoded for a path, as the hub's portal encodes it.
pub use view::fmt::percent_encode as encode;

/// Decodes a `%`-encoded path segment; None for a broken escape (refused rather than read as
/// text) or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    if (0..b.len()).any(|i| b[i] == b'%' && !(hex(i + 1) && hex(i + 2))) {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The fields of a query string or an urlencoded form (`form_urlencoded`, as browsers write them).
pub fn fields(s: &str) -> HashMap<String, String> {
    form_urlencoded::parse(s.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

impl Offline {
    pub fn new(
        store_dir: &Path,
        key: Key,
        local: Arc<Local>,
        facility: String,
        idle: Duration,
    ) -> Offline {
        Offline {
            store_dir: store_dir.to_owned(),
            key,
            local,
            facility,
            idle,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn render(&self, t: &impl Template, status: StatusCode) -> Response<Body> {
        match t.render() {
            Ok(html) => page(status, "text/html; charset=utf-8", html),
            Err(e) => {
                tracing::error!(error = %e, "offline template failed");
                page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "error",
                )
            }
        }
    }

    /// An error page; with `since`, under the offline banner.
    pub fn error_page(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        since: Option<i64>,
    ) -> Response<Body> {
        let since = since.map(jst).unwrap_or_default();
        self.render(
            &ErrorPage {
                who: None,
                facility: &self.facility,
                since,
                title,
                message,
            },
            status,
        )
    }

    /// Records an access; if it cannot be recorded it is not served.
    async fn audit(
        &self,
        login: &str,
        terminal: &Terminal,
        action: &str,
        patient_id: &str,
        outcome: &str,
    ) -> bool {
        let (local, login, t, action, pid, outcome) = (
            self.local.clone(),
            login.to_string(),
            terminal.label(),
            action.to_string(),
            patient_id.to_string(),
            outcome.to_string(),
        );
        match tokio::task::spawn_blocking(move || {
            local.record(now_ms(), &login, &t, &action, &pid, &outcome)
        })
        .await
        {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "an offline access cannot be recorded: refusing it");
                false
            }
            Err(_) => false,
        }
    }

    fn unrecorded(&self, since: i64) -> Response<Body> {
        self.error_page(StatusCode::SERVICE_UNAVAILABLE, "記録できないため表示できません", "アクセスの記録を保存できませんでした。アプライアンスの空き容量などを管理者に確認してもらってください。", Some(since))
    }

    pub async fn handle(
        &self,
        req: Request<Incoming>,
        terminal: &Terminal,
        since: i64,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = fields(req.uri().query().unwrap_or(""));
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/offline/login") => self.login_form("", "", since).await,
            (Method::POST, "/offline/login") => self.login(req, terminal, since).await,
            (Method::POST, "/offline/logout") => self.logout(req, terminal).await,
            (Method::GET, "/offline/" | "/offline/search") => {
                self.search(
                    req.headers(),
                    &query,
                    terminal,
                    since,
                    path.ends_with("search"),
                )
                .await
            }
            (Method::GET, p) if p.starts_with("/offline/patient/") => {
                match decode(&p["/offline/patient/".len()..]) {
                    Some(pid) => {
                        self.patient(req.headers(), &pid, &query, terminal, since)
                            .await
                    }
                    None => self.error_page(
                        StatusCode::BAD_REQUEST,
                        "入力を確認してください",
                        "患者IDが正しくありません。",
                        Some(since),
                    ),
                }
            }
            // Everything else of the portal waits for the hub.
            _ => redirect("/offline/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_forms_round_trip() {
        assert_eq!(encode("0000 77/01"), "0000%2077%2F01");
        assert_eq!(decode(&encode("患者/01")).as_deref(), Some("患者/01"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("a%2"), None);
        let f = fields("login=dr-a&password=a%2Bb+c&csrf=");
        assert_eq!(
            (get(&f, "login"), f["password"].as_str(), get(&f, "csrf")),
            ("dr-a", "a+b c", "")
        );
    }
}
