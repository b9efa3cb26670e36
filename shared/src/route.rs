//! The portal's paths, written once for both sides: the hub builds its portal router from the
//! same list (a test holds them together), and the appliance's LAN proxy forwards a path to the
//! hub only when it is one of them, in canonical form. Everything else a LAN browser asks for
//! (the appliance API above all) stops at the proxy.

/// The cookie that carries which notice the next portal page shows (a code such as `expired`,
/// never text): the hub sets it on its redirects, and so does the appliance's proxy when it ends
/// a session itself.
pub const NOTICE_COOKIE: &str = "__Host-tsunagi-notice";
/// The cookie that remembers the page asked for before a login, to return to after it.
pub const NEXT_COOKIE: &str = "__Host-tsunagi-next";

/// The portal's routes as axum writes them (`{name}` is one path segment).
pub const PORTAL: &[&str] = &[
    "/",
    "/login",
    "/logout",
    "/password",
    "/search",
    "/patient/{rid}",
    "/patient/{rid}/calendar",
    "/patient/{rid}/trend",
    "/patient/{rid}/document/{entry}/{file}",
    "/consent/{entry}",
    "/links",
    "/links/{action}",
    "/emergency",
    "/emergency/end",
    "/inbox",
    "/history",
    "/history.csv",
    "/admin/users",
    "/admin/users/{login}/{action}",
    "/fleet",
    "/fleet/{facility}/{appliance}",
    "/fleet/{facility}/{appliance}/command",
    "/static/portal.css",
    "/static/portal.js",
];

/// Whether one segment of a request path may stand for a `{name}`: the characters IDs, codes and
/// login names are made of, and never `.` or `..`.
fn plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `path` (the path of a request target, without its query) is one of the portal's
/// routes, written the one way the portal writes it: no percent-encoding, no empty, `.` or `..`
/// segments, no backslash. A path that could mean something else to another parser is not.
pub fn is_portal_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let have: Vec<&str> = path[1..].split('/').collect();
    PORTAL.iter().any(|pattern| {
        let want: Vec<&str> = pattern[1..].split('/').collect();
        want.len() == have.len()
            && want.iter().zip(&have).all(|(w, h)| {
                if w.starts_with('{') {
                    plain_segment(h)
                } else {
                    w == h
                }
            })
    })
}

#[cfg(test)]
mod tests {
    use super::is_portal_path;

    fn check(path: &str, expect: bool) {
        assert_eq!(is_portal_path(path), expect, "{path}");
    }

    #[test]
    fn only_the_portal_in_canonical_form() {
        for p in [
            "/",
            "/login",
            "/patient/R00012",
            "/patient/R1/document/12/3",
            "/admin/users/dr.sato/reset",
            "/history.csv",
            "/static/portal.css",
        ] {
            check(p, true);
        }
        for p in [
            "",
            "/v1/restore",
            "//v1/restore",
            "/%761/restore",
            "/v1%2frestore",
            "/patient/..",
            "/patient/.",
            "/patient/%2e%2e",
            "/patient/R1/../../v1/restore",
            "/patient//calendar",
            "/patient/R1/",
            "/login/",
            "//",
            "/static/portal.css/../../v1/position",
            "/patient/a\\b",
            "/patient/R%31",
            "https://hub/v1/restore",
            "*",
            "/_tsunagi/terminal",
        ] {
            check(p, false);
        }
    }
}
