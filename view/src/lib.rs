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

/// The portal's one stylesheet.
pub const PORTAL_CSS: &str = include_str!("../portal.css");
