//! The offline view's sessions: login against the verifiers the hub last handed over, with
//! failed logins locked out for a while, and logout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use askama::Template;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};

use super::{fields, get, Offline, Session, Who};
use crate::local;
use crate::policy::Terminal;
use crate::proxy::{bound, cookie, random_token, redirect, set_cookie, Body, MAX_TRACKED};
use view::fmt::jst;

const SESSION: &str = "__Host-tsunagi-offline";
const PRE: &str = "__Host-tsunagi-offline-login";
/// Failed logins before a login is locked, and for how long.
const LOCK_AFTER: u32 = 6;
const LOCK_FOR: Duration = Duration::from_secs(30 * 60);
/// Roles that may read clinical records (as the hub's `Role::clinical`); the hub hands over no
/// others, and a verifier of another role is refused here too.
const READERS: &[&str] = &["facility-admin", "doctor", "nurse", "pharmacist"];

#[derive(Template)]
#[template(path = "offline_login.html")]
struct LoginPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    csrf: String,
    message: String,
    login: String,
}

impl Offline {
    /// The logged-in person of a request, if any; touches the session.
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<Who> {
        let token = cookie(headers, SESSION)?;
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.idle;
        s.retain(|_, v| v.last.elapsed() <= idle);
        let v = s.get_mut(&token)?;
        v.last = Instant::now();
        Some(Who {
            login: v.login.clone(),
            name: v.name.clone(),
            csrf: v.csrf.clone(),
        })
    }

    pub(super) async fn login_form(
        &self,
        message: &str,
        login: &str,
        since: i64,
    ) -> Response<Body> {
        let csrf = random_token();
        let mut message = message.to_string();
        if message.is_empty() && self.local.call(local::count_verifiers).await.unwrap_or(0) == 0 {
            message = "この端末でオフラインにログインできる利用者の情報が、まだハブから届いていません。接続が戻るまでお待ちください。".into();
        }
        let mut r = self.render(
            &LoginPage {
                who: None,
                facility: &self.facility,
                since: jst(since),
                csrf: csrf.clone(),
                message,
                login: login.into(),
            },
            StatusCode::OK,
        );
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(PRE, &csrf, None));
        r
    }

    async fn form(req: Request<Incoming>) -> Option<(HeaderMap, HashMap<String, String>)> {
        let (parts, body) = req.into_parts();
        let bytes = Limited::new(body, 16 << 10)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some((parts.headers, fields(std::str::from_utf8(&bytes).ok()?)))
    }

    pub(super) async fn login(
        &self,
        req: Request<Incoming>,
        terminal: &Terminal,
        since: i64,
    ) -> Response<Body> {
        let Some((headers, f)) = Self::form(req).await else {
            return self
                .login_form("入力を読み取れませんでした。", "", since)
                .await;
        };
        let pre = cookie(&headers, PRE).unwrap_or_default();
        if pre.is_empty() || !view::password::same_bytes(pre.as_bytes(), get(&f, "csrf").as_bytes())
        {
            return self.error_page(StatusCode::FORBIDDEN, "アクセスできません", "ログイン画面の有効期限が切れたか、不正な送信です。ログイン画面を開き直してください。", Some(since));
        }
        let login = get(&f, "login").to_string();
        let password = f.get("password").cloned().unwrap_or_default();
        if login.is_empty() || login.len() > 64 {
            return self
                .login_form("IDまたはパスワードが違います。", "", since)
                .await;
        }
        let (count, locked) = {
            let mut fl = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded whatever IDs are typed: locks that still run are kept.
            bound(&mut fl, MAX_TRACKED, |(_, at)| {
                at.is_some_and(|t| t.elapsed() < LOCK_FOR)
            });
            let e = fl.entry(login.clone()).or_insert((0, None));
            if e.1.is_some_and(|t| t.elapsed() >= LOCK_FOR) {
                *e = (0, None);
            }
            (e.0, e.1.is_some())
        };
        if locked {
            self.audit(&login, terminal, "offline-login", "", "locked")
                .await;
            return self.login_form("失敗が続いたため、このIDはこのアプライアンスでロックされています。30分後に再度お試しください。", &login, since).await;
        }
        let local = self.local.clone();
        let l = login.clone();
        let found = tokio::task::spawn_blocking(move || -> Option<(local::Verifier, bool)> {
            let v = local.verifier(&l).ok().flatten();
            // Unknown IDs cost the same argon2 time as known ones.
            let verifier = v.as_ref().map(|v| v.verifier.clone()).unwrap_or_else(|| "argon2id$m=19456,t=2$00000000000000000000000000000000$0000000000000000000000000000000000000000000000000000000000000000".into());
            let ok = view::password::verify(&verifier, &password);
            v.map(|v| (v, ok))
        })
        .await
        .ok()
        .flatten();
        match found {
            Some((v, true)) if READERS.contains(&v.role.as_str()) => {
                if !self
                    .audit(&login, terminal, "offline-login", "", "ok")
                    .await
                {
                    return self.unrecorded(since);
                }
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&login);
                tracing::info!(login = %login, terminal = %terminal.label(), "logged in offline");
                let token = random_token();
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        token.clone(),
                        Session {
                            login,
                            name: v.name,
                            csrf: random_token(),
                            last: Instant::now(),
                        },
                    );
                let mut r = redirect("/offline/");
                r.headers_mut()
                    .append(header::SET_COOKIE, set_cookie(SESSION, &token, None));
                r.headers_mut()
                    .append(header::SET_COOKIE, set_cookie(PRE, "", Some(0)));
                r
            }
            _ => {
                let n = {
                    let mut fl = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                    let e = fl.entry(login.clone()).or_insert((0, None));
                    e.0 += 1;
                    if e.0 >= LOCK_AFTER {
                        e.1 = Some(Instant::now());
                    }
                    e.0
                };
                self.audit(
                    &login,
                    terminal,
                    "offline-login",
                    "",
                    if n >= LOCK_AFTER {
                        "locked"
                    } else {
                        "wrong-password"
                    },
                )
                .await;
                if count + 1 >= 3 {
                    tokio::time::sleep(Duration::from_secs(1 << (count + 1 - 2).min(3))).await;
                }
                self.login_form("IDまたはパスワードが違います。", &login, since)
                    .await
            }
        }
    }

    pub(super) async fn logout(
        &self,
        req: Request<Incoming>,
        terminal: &Terminal,
    ) -> Response<Body> {
        let Some((headers, f)) = Self::form(req).await else {
            return redirect("/offline/login");
        };
        let token = cookie(&headers, SESSION).unwrap_or_default();
        let ended = {
            let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            match s.get(&token) {
                Some(v)
                    if view::password::same_bytes(
                        v.csrf.as_bytes(),
                        get(&f, "csrf").as_bytes(),
                    ) =>
                {
                    s.remove(&token).map(|v| v.login)
                }
                _ => None,
            }
        };
        if let Some(login) = ended {
            self.audit(&login, terminal, "offline-logout", "", "ok")
                .await;
        }
        let mut r = redirect("/offline/login");
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(SESSION, "", Some(0)));
        r
    }
}
