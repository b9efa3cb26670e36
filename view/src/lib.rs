//! What the portal shows, shared by the hub's portal and the appliance's offline view: the
//! record queries of the patient page (`record`), the password verifiers (`password`), cookies
//! and the stylesheet. Both sides read the same clinical schema, so both show the same rows.

#![forbid(unsafe_code)]

pub mod fmt;
pub mod lab;
pub mod names;
pub mod password;
pub mod patient;
pub mod record;

/// A cookie's value from a request's Cookie headers (the hub's sessions, the appliance's proxy).
/// Parsed by the `cookie` crate (RFC 6265); a malformed pair is skipped, not guessed at.
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `Set-Cookie` value for a session-like cookie: `__Host-` rules (Secure, Path=/, no Domain),
/// HttpOnly, SameSite=Strict, and `Max-Age` when given (0 removes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>) -> String {
    let mut c = cookie::Cookie::new(name, value);
    c.set_secure(true);
    c.set_http_only(true);
    c.set_path("/");
    c.set_same_site(cookie::SameSite::Strict);
    if let Some(s) = max_age {
        c.set_max_age(cookie::time::Duration::seconds(s));
    }
    c.to_string()
}

/// The security headers on every portal page, from the hub or from the appliance: no caching of
/// patient data, no sniffing, no framing, no referrer, and a CSP that allows no script but the
/// portal's own file (`/static/portal.js`, never inline).
pub fn harden(h: &mut http::HeaderMap) {
    use http::header::{self, HeaderValue};
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
}

/// The cookie value that remembers the page a request asked for, for the login to return to
/// (`shared::route::NEXT_COOKIE`; the hub's `session::return_target` decides at the login whether
/// it does): percent-encoded, a search without its words, nothing for the home page, the login or
/// a target over 512 bytes. The hub and the appliance's proxy both remember this way.
pub fn remembered(pq: &http::uri::PathAndQuery) -> Option<String> {
    let kept = if pq.path() == "/search" {
        pq.path()
    } else {
        pq.as_str()
    };
    (kept != "/" && !kept.starts_with("/login") && kept.len() <= 512)
        .then(|| fmt::percent_encode(kept))
}

/// The portal's one stylesheet.
pub const PORTAL_CSS: &str = include_str!("../portal.css");

/// The portal's one script: it blanks a page when its session's idle time has run out.
pub const PORTAL_JS: &str = include_str!("../portal.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_remembered_without_a_searchs_words() {
        let r = |s: &str| remembered(&s.parse().unwrap());
        assert_eq!(
            r("/patient/R1?tab=lab").as_deref(),
            Some("%2Fpatient%2FR1%3Ftab%3Dlab")
        );
        assert_eq!(r("/search?name=%E5%B1%B1").as_deref(), Some("%2Fsearch"));
        assert_eq!(r("/"), None);
        assert_eq!(r("/login?x=1"), None);
        assert_eq!(r(&format!("/patient/{}", "R".repeat(600))), None);
    }

    #[test]
    fn cookies_are_read_by_name_and_written_with_host_rules() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; __Host-tsunagi=abc; b".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "c=3".parse().unwrap());
        assert_eq!(cookie(&h, "__Host-tsunagi").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c").as_deref(), Some("3"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(cookie(&h, "__Host"), None);
        let s = set_cookie("__Host-tsunagi", "v", Some(0));
        for part in [
            "__Host-tsunagi=v",
            "Secure",
            "HttpOnly",
            "Path=/",
            "SameSite=Strict",
            "Max-Age=0",
        ] {
            assert!(s.contains(part), "{s}");
        }
        assert!(!set_cookie("n", "v", None).contains("Max-Age"));
    }
}
