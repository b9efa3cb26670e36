//! What the portal shows, shared by the hub's portal and the appliance's offline view: the
//! record queries of the patient page (`record`), the password verifiers (`password`), cookies
//! and the stylesheet. Both sides read the same clinical schema, so both show the same rows.

#![forbid(unsafe_code)]

pub mod fmt;
pub mod names;
pub mod password;
pub mod record;

/// A cookie's value from a request's Cookie headers (the hub's sessions, the appliance's proxy).
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The security headers on every portal page, from the hub or from the appliance: no caching of
/// patient data, no sniffing, no framing, no referrer, and a CSP that allows no script at all.
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
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
}

/// The portal's one stylesheet.
pub const PORTAL_CSS: &str = include_str!("../portal.css");
