//! The LAN proxy: the facility's browsers reach the hub's portal through the appliance, which
//! holds the facility's identity, so no terminal needs a certificate of its own.
//!
//! - HTTPS on the LAN with a server certificate the network CA issued for the appliance's LAN
//!   names (`identity::LAN`, reloaded when renewed); TLS 1.2 and 1.3 with AEAD suites only.
//! - Plain HTTP serves one page that explains how to trust the network's root, and the root.
//! - Each request goes on to the hub over mutual TLS as the facility, on a small pool of kept-alive
//!   connections. Bodies stream both ways. Headers from the LAN that claim an identity are
//!   stripped; the appliance names the terminal itself (`x-tsunagi-terminal`).
//! - Sessions idle for longer than `proxy.idle` end here too, whatever the hub would allow.
//! - Each terminal carries a cookie the appliance set; `TerminalPolicy` may allow, warn or refuse it.
//! - When the hub cannot be reached, the offline view (`offline`) serves the facility's own
//!   records from the store, read-only, to its own staff, and keeps an audit of it for the hub.

mod enrol;
mod handler;
mod headers;
mod listen;
mod maintain;
mod offline;
mod tls;
mod upstream;

pub use handler::Proxy;
pub use headers::strip_request;
pub use listen::{start, PLAIN_LIMITS};
pub use offline::fields;
pub use tls::{lan_tls, LanCert};
pub use upstream::{Health, UpError, Upstream};

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// The largest request body the proxy passes on (forms and uploads; the portal takes no more).
pub const MAX_UPLOAD: usize = 8 << 20;
/// The hub's session cookie, whose idle time the proxy also watches.
pub const HUB_SESSION: &str = "__Host-tsunagi";
/// The cookie that names a terminal to the appliance.
pub const TERMINAL_COOKIE: &str = "__Host-tsunagi-terminal";
/// How often the offline verifiers are fetched again while the hub is reachable: a password
/// changed or an account disabled on the hub reaches the appliance within this.
pub const VERIFIERS_EVERY: Duration = Duration::from_secs(15);
/// How long the proxy waits for the hub's answer to begin, once the request is sent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Where a terminal is enrolled (served by the appliance itself, never passed to the hub).
pub const ENROL_PATH: &str = "/_tsunagi/terminal";
/// Where the terminals' screen-lock reporters enrol and post (`policy::screenlock`).
pub const POSTURE_PATH: &str = "/_tsunagi/posture";
/// The header the proxy tells the hub a warned terminal in (`warn`).
pub const POSTURE_HEADER: &str = "x-tsunagi-posture";
const ENROL_COOKIE: &str = "__Host-tsunagi-enrol";
/// The header the appliance names the terminal in, for the hub's audit log.
pub const TERMINAL_HEADER: &str = "x-tsunagi-terminal";

/// The most entries any of the proxy's in-memory books (sessions' last use, offline login
/// failures) holds.
pub const MAX_TRACKED: usize = 10_000;

/// Keeps `map` under `cap` entries: at the cap, drops what `keep` does not want, and if that is
/// not enough, everything. What LAN devices can make the proxy remember stays bounded.
pub fn bound<K, V>(map: &mut HashMap<K, V>, cap: usize, keep: impl Fn(&V) -> bool) {
    if map.len() >= cap {
        map.retain(|_, v| keep(v));
        if map.len() >= cap {
            map.clear();
        }
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A page answer with the portal's security headers.
pub fn page(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    view::harden(h);
    r
}

pub fn redirect(to: &str) -> Response<Body> {
    let mut r = page(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub use view::cookie;

/// A `Set-Cookie` header (`view::set_cookie`: Secure, HttpOnly, SameSite=Strict, Path=/).
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
    HeaderValue::from_str(&view::set_cookie(name, value, age))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// HTML-escapes text for the few pages the proxy writes without a template.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn random_token() -> String {
    shared::chain::hex(&provisioning::secret::random32())
}

pub use shared::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderMap;

    #[test]
    fn books_stay_bounded() {
        let mut m: HashMap<u32, bool> = HashMap::new();
        for i in 0..10 * MAX_TRACKED as u32 {
            bound(&mut m, MAX_TRACKED, |locked| *locked);
            m.insert(i, i % 1000 == 0);
        }
        assert!(m.len() <= MAX_TRACKED, "{}", m.len());
        // What is worth keeping survives a trim.
        let mut m: HashMap<u32, bool> = (0..MAX_TRACKED as u32).map(|i| (i, i < 10)).collect();
        bound(&mut m, MAX_TRACKED, |locked| *locked);
        assert_eq!(m.len(), 10);
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-tsunagi=tok; __Host-tsunagi-terminal=t"),
        );
        assert_eq!(cookie(&h, HUB_SESSION).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, TERMINAL_COOKIE).as_deref(), Some("t"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
