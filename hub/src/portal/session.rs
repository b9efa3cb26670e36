//! Portal sessions, held in memory: a random token in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict), a per-session CSRF token for every form, and an idle timeout (5 minutes by
//! the networks' rule). A hub restart logs everyone out, which is the safe direction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "__Host-tsunagi";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const PRE_COOKIE: &str = "__Host-tsunagi-login";

#[derive(Debug, Clone)]
pub struct Session {
    pub login: String,
    pub csrf: String,
    pub terminal: String,
    pub must_change: bool,
    last_seen: Instant,
}

pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// A new random token, hex.
pub fn token() -> String {
    shared::chain::hex(&provisioning::secret::random32())
}

/// Compares two secrets in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    crate::account::same_bytes(a.as_bytes(), b.as_bytes())
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Starts a session and returns its token.
    pub fn create(&self, login: &str, terminal: &str, must_change: bool) -> String {
        let t = token();
        let s = Session {
            login: login.into(),
            csrf: token(),
            terminal: terminal.into(),
            must_change,
            last_seen: Instant::now(),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        map.insert(key(&t), s);
        t
    }

    /// The live session of `token`, refreshed; an idle one is ended and not returned.
    pub fn touch(&self, token: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(token);
        let s = map.get_mut(&k)?;
        if s.last_seen.elapsed() >= self.idle {
            map.remove(&k);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    pub fn password_changed(&self, token: &str) {
        if let Some(s) = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key(token))
        {
            s.must_change = false;
        }
    }

    pub fn end(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(token));
    }

    /// Ends every session of a person (disabled, or password reset).
    pub fn end_all(&self, login: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.login != login);
    }
}

pub use view::cookie;

/// A `Set-Cookie` value for a session-scoped secure cookie.
pub fn set_cookie(name: &str, value: &str) -> String {
    view::set_cookie(name, value, None)
}

pub fn clear_cookie(name: &str) -> String {
    view::set_cookie(name, "", Some(0))
}

/// The page a person asked for before the login, to return to after it.
pub use shared::route::NEXT_COOKIE;
/// Adds a `Set-Cookie` (one of this module's values) to a response.
pub fn add_cookie(r: &mut axum::response::Response, cookie: String) {
    if let Ok(v) = cookie.parse() {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
}

/// Which notice the next page shows (`expired`, `logout`, `password`, …): a code in a short-lived
/// cookie of this origin, never text from the URL, so a link cannot put words on a page.
pub use shared::route::NOTICE_COOKIE;

/// A `Set-Cookie` value that lives two minutes: long enough for a redirect and a login form.
pub fn flash_cookie(name: &str, value: &str) -> String {
    view::set_cookie(name, value, Some(120))
}

/// A redirect to `to` that carries the notice `code` for the page there.
pub fn redirect_with_notice(to: &str, code: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = axum::response::Redirect::to(to).into_response();
    add_cookie(&mut r, flash_cookie(NOTICE_COOKIE, code));
    r
}

/// The notice code a request carries, if any (the page that shows it clears it).
pub fn notice(headers: &axum::http::HeaderMap) -> String {
    cookie(headers, NOTICE_COOKIE)
        .filter(|c| c.len() <= 32 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .unwrap_or_default()
}

/// Where to go after a login: the page asked for, when it is one of the portal's own pages in
/// canonical form (`shared::route::is_portal_path`: no `//`, `.` or `..`, no encoding) that only
/// shows something (a patient, a search, the calendar), never another origin, the login, the
/// password form, or a page that acts or downloads (the inbox marks notices read, a document or
/// the CSV downloads).
pub fn return_target(headers: &axum::http::HeaderMap) -> Option<String> {
    let raw = cookie(headers, NEXT_COOKIE)?;
    let target = percent_encoding::percent_decode_str(&raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    if target.len() > 512 || target.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let path = target.split('?').next().unwrap_or("");
    const SHOWS: [&str; 4] = ["/search", "/patient/", "/history", "/fleet"];
    let shows = SHOWS
        .iter()
        .any(|p| path == p.trim_end_matches('/') || path.starts_with(p))
        && !path.contains("/document/")
        && !path.ends_with(".csv");
    (shared::route::is_portal_path(path) && shows).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_returns_only_to_the_portals_own_pages_that_only_show() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::COOKIE,
                format!("{NEXT_COOKIE}={}", view::fmt::percent_encode(v))
                    .parse()
                    .unwrap(),
            );
            return_target(&h)
        };
        assert_eq!(
            with("/patient/R0000000001?tab=lab").as_deref(),
            Some("/patient/R0000000001?tab=lab")
        );
        assert_eq!(with("/search").as_deref(), Some("/search"));
        assert_eq!(
            with("/patient/R1/calendar").as_deref(),
            Some("/patient/R1/calendar")
        );
        for forged in [
            "//evil.example/",
            "/\\evil.example",
            "///evil.example",
            "/.//evil.example",
            "/x/../password",
            "/%2e%2e/login",
            "https://evil.example/",
            "evil.example",
            "/login",
            "/logout",
            "/password",
            "/inbox",
            "/history.csv",
            "/patient/R1/document/2/3",
            "/admin/users/dr/disable",
            "/emergency/end",
            "/patient/R1\n",
            "/",
        ] {
            assert_eq!(with(forged), None, "{forged:?}");
        }
        assert_eq!(with(&format!("/patient/{}", "R".repeat(600))), None);
    }

    #[test]
    fn sessions_expire_when_idle_and_end_per_person() {
        let s = Sessions::new(Duration::from_millis(200));
        let a = s.create("dr1", "t", true);
        let b = s.create("dr2", "t", false);
        assert_eq!(s.touch(&a).unwrap().login, "dr1");
        assert!(s.touch("not-a-token").is_none());
        s.end_all("dr2");
        assert!(s.touch(&b).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.touch(&a).is_none(), "idle past the limit");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn cookies_are_read_from_any_header() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; __Host-tsunagi=xyz".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, PRE_COOKIE), None);
    }
}
