//! The offline view: while the hub cannot be reached, the facility's own staff log in with the
//! verifiers the hub last handed over and read their own facility's records from the store —
//! search, and the patient page with its tabs — read-only, under a banner that says since when
//! the hub is unreachable. Every access is recorded in `offline.db` before it is served, and
//! handed to the hub's audit log when the hub is back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};

use super::{cookie, now_ms, page, random_token, redirect, set_cookie, Body};
use crate::local::{self, Local};
use crate::policy::Terminal;
use crate::store::Key;
use view::fmt::{hl7_time, jst, sex_label};
use view::record::{self, Tab};

const SESSION: &str = "__Host-tsunagi-offline";
const PRE: &str = "__Host-tsunagi-offline-login";
/// Failed logins before a login is locked, and for how long.
const LOCK_AFTER: u32 = 6;
const LOCK_FOR: Duration = Duration::from_secs(30 * 60);
/// Roles that may read clinical records (as the hub's `Role::clinical`); the hub hands over no
/// others, and a verifier of another role is refused here too.
const READERS: &[&str] = &["facility-admin", "doctor", "nurse", "pharmacist"];

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
#[template(path = "offline_login.html")]
struct LoginPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    csrf: String,
    message: String,
    login: String,
}

struct Hit {
    patient_id: String,
    link: String,
    kanji: String,
    kana: String,
    birth: String,
    sex: &'static str,
}

#[derive(Template)]
#[template(path = "offline_search.html")]
struct SearchPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    patient_id: String,
    name: String,
    birth_date: String,
    message: String,
    searched: bool,
    hits: Vec<Hit>,
}

#[derive(Template)]
#[template(path = "offline_patient.html")]
struct PatientPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    patient_id: String,
    link: String,
    kanji: String,
    kana: String,
    birth: String,
    sex: &'static str,
    basic: Vec<(&'static str, String)>,
    tabs: Vec<(&'static str, &'static str, bool)>,
    tab_label: &'static str,
    columns: &'static [&'static str],
    lines: Vec<(String, Vec<String>)>,
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

/// `%`-encodes everything but unreserved characters, for a patient ID in a path.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `%XX` (and `+` as a space, for form fields); None for broken escapes or non-UTF-8.
pub fn decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The fields of a query string or an urlencoded form.
pub fn fields(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter_map(|(k, v)| Some((decode(k, true)?, decode(v, true)?)))
        .filter(|(k, _)| !k.is_empty())
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

    /// The logged-in person of a request, if any; touches the session.
    fn session(&self, headers: &HeaderMap) -> Option<Who> {
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
                match decode(&p["/offline/patient/".len()..], false) {
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

    async fn login_form(&self, message: &str, login: &str, since: i64) -> Response<Body> {
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

    async fn login(
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
            super::bound(&mut fl, super::MAX_TRACKED, |(_, at)| {
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

    async fn logout(&self, req: Request<Incoming>, terminal: &Terminal) -> Response<Body> {
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

    /// Opens the store read-only on a blocking thread and runs `f` on it.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (dir, key) = (self.store_dir.clone(), self.key.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
            let c = crate::store::open_read_only(&dir, &key)?;
            Ok(f(&c)?)
        })
        .await?
    }

    async fn search(
        &self,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
        terminal: &Terminal,
        since: i64,
        searched: bool,
    ) -> Response<Body> {
        let Some(who) = self.session(headers) else {
            return redirect("/offline/login");
        };
        let login = who.login.clone();
        let (pid, name, birth) = (
            get(q, "patient_id").to_string(),
            get(q, "name").to_string(),
            get(q, "birth_date").to_string(),
        );
        let mut p = SearchPage {
            who: Some(who),
            facility: &self.facility,
            since: jst(since),
            patient_id: pid.clone(),
            name: name.clone(),
            birth_date: birth.clone(),
            message: String::new(),
            searched: false,
            hits: vec![],
        };
        if !searched {
            return self.render(&p, StatusCode::OK);
        }
        if pid.is_empty() && name.is_empty() && birth.is_empty() {
            p.message = "患者ID、氏名、生年月日のいずれかを入れてください。".into();
            return self.render(&p, StatusCode::OK);
        }
        if !self
            .audit(&login, terminal, "offline-search", &pid, "ok")
            .await
        {
            return self.unrecorded(since);
        }
        let birth8: String = birth.chars().filter(char::is_ascii_digit).collect();
        let (qkanji, qkana) = (
            view::names::kanji_norm(&name),
            view::names::kana_norm(&name),
        );
        let rows = self
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT patient_id, trim(coalesce(family_kanji, '') || ' ' || coalesce(given_kanji, '')), trim(coalesce(family_kana, '') || ' ' || coalesce(given_kana, '')),
                            coalesce(birth_date, ''), coalesce(sex, '')
                     FROM patient WHERE id IN (SELECT max(id) FROM patient GROUP BY patient_id) ORDER BY patient_id",
                )?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "offline search failed");
                return self.error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "システムエラー",
                    "記録を読み出せませんでした。",
                    Some(since),
                );
            }
        };
        p.hits = rows
            .into_iter()
            .filter(|(id, kanji, kana, b, _)| {
                (pid.is_empty() || *id == pid)
                    && (birth8.is_empty() || b.starts_with(&birth8))
                    && (name.is_empty()
                        || view::names::kanji_norm(kanji).contains(&qkanji)
                        || (!qkana.is_empty() && view::names::kana_norm(kana).contains(&qkana)))
            })
            .take(100)
            .map(|(id, kanji, kana, b, sex)| Hit {
                link: encode(&id),
                patient_id: id,
                kanji,
                kana: kana_shown(&kana),
                birth: hl7_time(&b),
                sex: sex_label(&sex),
            })
            .collect();
        p.searched = true;
        self.render(&p, StatusCode::OK)
    }

    async fn patient(
        &self,
        headers: &HeaderMap,
        pid: &str,
        q: &HashMap<String, String>,
        terminal: &Terminal,
        since: i64,
    ) -> Response<Body> {
        let Some(who) = self.session(headers) else {
            return redirect("/offline/login");
        };
        let login = who.login.clone();
        let tab = Tab::parse(get(q, "tab")).unwrap_or(Tab::Visits);
        if !self
            .audit(&login, terminal, "offline-view", pid, "ok")
            .await
        {
            return self.unrecorded(since);
        }
        let id = pid.to_string();
        let found = self
            .read(move |c| {
                let head: Option<(String, String, String, String)> = c
                    .query_row(
                        "SELECT trim(coalesce(family_kanji, '') || ' ' || coalesce(given_kanji, '')), trim(coalesce(family_kana, '') || ' ' || coalesce(given_kana, '')),
                                coalesce(birth_date, ''), coalesce(sex, '')
                         FROM patient WHERE patient_id = ?1 ORDER BY id DESC LIMIT 1",
                        [&id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map(Some)
                    .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
                let Some(head) = head else { return Ok(None) };
                let basic = record::basic(c, &id)?;
                let lines = record::tab(c, tab, &id, 500)?;
                Ok(Some((head, basic, lines)))
            })
            .await;
        match found {
            Ok(Some(((kanji, kana, birth, sex), basic, lines))) => {
                let p = PatientPage {
                    who: Some(who),
                    facility: &self.facility,
                    since: jst(since),
                    patient_id: pid.to_string(),
                    link: encode(pid),
                    kanji,
                    kana: kana_shown(&kana),
                    birth: hl7_time(&birth),
                    sex: sex_label(&sex),
                    basic,
                    tabs: Tab::ALL
                        .iter()
                        .map(|t| (t.code(), t.label(), *t == tab))
                        .collect(),
                    tab_label: tab.label(),
                    columns: tab.columns(),
                    lines: lines
                        .into_iter()
                        .map(|l| (hl7_time(&l.at), l.cells))
                        .collect(),
                };
                self.render(&p, StatusCode::OK)
            }
            Ok(None) => self.error_page(
                StatusCode::NOT_FOUND,
                "見つかりません",
                "この施設の記録にその患者IDはありません。",
                Some(since),
            ),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "offline patient page failed");
                self.error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "システムエラー",
                    "記録を読み出せませんでした。",
                    Some(since),
                )
            }
        }
    }
}

/// A kana name as the portal shows it: full-width katakana with the sound marks joined, family
/// and given names apart.
fn kana_shown(s: &str) -> String {
    s.split([' ', '\u{3000}'])
        .filter(|p| !p.is_empty())
        .map(view::names::kana_norm)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_forms_round_trip() {
        assert_eq!(encode("0000 77/01"), "0000%2077%2F01");
        assert_eq!(
            decode(&encode("患者/01"), false).as_deref(),
            Some("患者/01")
        );
        assert_eq!(decode("%zz", false), None);
        let f = fields("login=dr-a&password=a%2Bb+c&csrf=");
        assert_eq!(
            (get(&f, "login"), f["password"].as_str(), get(&f, "csrf")),
            ("dr-a", "a+b c", "")
        );
        assert_eq!(kana_shown("ﾔﾏﾀﾞ ﾀﾛｳ"), "ヤマダ タロウ");
        assert_eq!(kana_shown("ヤマタ゛\u{3000}タロウ"), "ヤマダ タロウ");
    }
}
