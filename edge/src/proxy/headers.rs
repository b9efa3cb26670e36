//! What LAN requests may not carry: headers that claim an identity (or steer the proxy) and
//! hop-by-hop headers are stripped before a request goes on to the hub.

use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Response, StatusCode};

use super::{page, Body};

/// The proxy's own answer to a path that is not the portal's (online: the offline view's page
/// would say the hub is down).
pub(super) fn not_here() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>このページはありません — tsunagi</title><link rel=\"stylesheet\" href=\"/static/portal.css\"></head><body><header class=\"bar\"><a class=\"brand\" href=\"/\">tsunagi 地域医療連携</a></header><main><h1 id=\"error-title\">このページはありません</h1><p id=\"error-message\">アドレスを確認し、ポータルのトップページから開き直してください。</p><p><a href=\"/\">ポータルのトップページへ</a></p></main></body></html>",
    )
}

/// Whether a request header from the LAN claims an identity (or steers the proxy), and so must
/// never reach the hub from a browser.
pub fn claims_identity(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-tsunagi-")
        || n.starts_with("x-forwarded-")
        || n.starts_with("x-ssl-")
        || n.starts_with("x-client-")
        || n.starts_with("ssl-client")
        || n.starts_with("x-remote-")
        || n.starts_with("x-auth")
        || matches!(
            n,
            "forwarded"
                | "x-real-ip"
                | "x-user"
                | "remote-user"
                | "x-authenticated-user"
                | "authorization"
                | "proxy-authorization"
                | "client-cert"
                | "client-cert-chain"
                | "x-arr-clientcert"
                | "true-client-ip"
                | "cf-connecting-ip"
        )
}

/// Hop-by-hop headers, which belong to one connection and are not passed on.
pub(super) fn hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for n in listed {
        headers.remove(n.as_str());
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        headers.remove(n);
    }
}

/// Removes identity claims and hop-by-hop headers from a LAN request; returns what was removed.
pub fn strip_request(headers: &mut HeaderMap) -> Vec<String> {
    hop_by_hop(headers);
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| claims_identity(n))
        .cloned()
        .collect();
    for n in &claimed {
        headers.remove(n);
    }
    claimed
        .into_iter()
        .map(|n| n.as_str().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn identity_claims_and_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-tsunagi-terminal", "forged"),
            ("x-tsunagi-facility", "3710000002"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-ssl-client-cert", "x"),
            ("authorization", "Basic eA=="),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("cookie", "__Host-tsunagi=abc"),
            ("accept-language", "ja"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let claimed = strip_request(&mut h);
        assert_eq!(claimed.len(), 7, "{claimed:?}");
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["accept-language", "cookie"]);
    }
}
