//! The entrances against the appliance API's routes and the portal's route table: each
//! connection reaches its own routes only, and the portal answers every role as its table says.

use super::*;
use tower::ServiceExt;

use axum::body::Body;
use provisioning::{Ca, Purpose};

use crate::now;
use crate::state::{Channel, Remote, Settings};
use crate::tls::Revocations;

fn hub(dir: &std::path::Path) -> Arc<Hub> {
    let mut ca = Ca::init(&dir.join("ca"), "test", now()).unwrap();
    ca.ensure_lan("tsunagi.internal", now()).unwrap();
    let revoked = Arc::new(Revocations::new(
        dir.join("ca").join(provisioning::ca::CRL),
        ca.issuing_ders(),
    ));
    let settings = Settings {
        client_cert_lifetime: 86_400,
        max_body: 1 << 20,
        snapshots_kept: 1,
    };
    Arc::new(
        Hub::new(
            dir.to_owned(),
            ca,
            crate::key::Key::from_bytes([7; 32]),
            revoked,
            settings,
        )
        .unwrap(),
    )
}

/// A portal route with sample values for its `{…}` segments.
fn sample(route: &str) -> String {
    route
        .split('/')
        .map(|seg| match seg {
            "{rid}" => "R0000001",
            "{entry}" | "{file}" => "1",
            "{login}" => "dr-a",
            "{action}" => "reset",
            "{facility}" => "3710000001",
            "{appliance}" => "box-1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn status(app: &Router, method: &str, path: &str, channel: &Channel) -> StatusCode {
    let peer = match channel {
        Channel::Appliance(id) | Channel::Proxy(id) => Peer(Some(id.clone())),
        _ => Peer(None),
    };
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    req.extensions_mut().insert(peer);
    req.extensions_mut().insert(channel.clone());
    req.extensions_mut()
        .insert(Remote("127.0.0.1:1".parse().unwrap()));
    app.clone().oneshot(req).await.unwrap().status()
}

/// Every entrance against every route: each reaches its own routes and answers 404 for the
/// rest, and a path in no table is 404 everywhere. The portal's routes are the shared list
/// the LAN proxy forwards, so the hub and the proxy cannot drift apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entrance_reaches_its_routes_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path());
    let issuer = hub.ca.issuing_subject();
    let portal = crate::portal::router(Arc::new(crate::portal::Portal::new(
        hub.clone(),
        crate::portal::Settings::default(),
    )));
    let (appliances, operators) = entrances(hub, portal);
    let id = |purpose| Identity {
        facility: "3710000001".into(),
        appliance: "box-1".into(),
        serial: "01".into(),
        not_before: 0,
        not_after: i64::MAX / 2,
        purpose,
        issuer: issuer.clone(),
    };
    let (as_appliance, as_proxy) = (
        Channel::Appliance(id(Purpose::Appliance)),
        Channel::Proxy(id(Purpose::PortalProxy)),
    );
    for route in shared::route::PORTAL {
        let path = sample(route);
        assert!(shared::route::is_portal_path(&path), "{path}");
        for method in ["GET", "POST"] {
            let s = status(&appliances.proxy, method, &path, &as_proxy).await;
            assert!(
                s != StatusCode::NOT_FOUND || route.contains('{'),
                "{method} {path} through the proxy: {s}"
            );
            assert_eq!(
                status(&appliances.appliance, method, &path, &as_appliance).await,
                StatusCode::NOT_FOUND,
                "{method} {path} on the appliance certificate"
            );
            let s = status(&operators.operators, method, &path, &Channel::Operators).await;
            assert!(
                s != StatusCode::NOT_FOUND || route.contains('{'),
                "{method} {path} on the operators' listener: {s}"
            );
            let s = status(
                &appliances.stranger,
                method,
                &path,
                &Channel::Unauthenticated,
            )
            .await;
            // The refusal page's stylesheet is served to anyone; every page is refused.
            let want = if *route == "/static/portal.css" {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(s, want, "{method} {path} without a certificate");
        }
        // A portal route with a parameter is routed (not a 404 for its shape) for the portal.
        let s = status(&appliances.proxy, "GET", &path, &as_proxy).await;
        assert!(
            matches!(
                s,
                StatusCode::SEE_OTHER | StatusCode::OK | StatusCode::METHOD_NOT_ALLOWED
            ),
            "GET {path} through the proxy, not logged in: {s}"
        );
    }
    for (method, path) in API {
        assert_eq!(
            status(&appliances.proxy, method, path, &as_proxy).await,
            StatusCode::NOT_FOUND,
            "{method} {path} on the proxy certificate"
        );
        assert_eq!(
            status(&operators.operators, method, path, &Channel::Operators).await,
            StatusCode::NOT_FOUND,
            "{method} {path} on the operators' listener"
        );
        let s = status(&appliances.appliance, method, path, &as_appliance).await;
        assert!(
            s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} on the appliance certificate: {s}"
        );
        let s = status(
            &appliances.stranger,
            method,
            path,
            &Channel::Unauthenticated,
        )
        .await;
        let want = if *path == "/v1/enroll" {
            s.is_client_error() && s != StatusCode::NOT_FOUND && s != StatusCode::UNAUTHORIZED
        } else {
            s == StatusCode::UNAUTHORIZED
        };
        assert!(want, "{method} {path} without a certificate: {s}");
    }
    for path in [
        "/nothing",
        "/v1/nothing",
        "/v2/restore",
        "//v1/restore",
        "/v1/restore/",
        "/admin",
    ] {
        for (app, ch) in [
            (&appliances.appliance, &as_appliance),
            (&appliances.proxy, &as_proxy),
            (&appliances.stranger, &Channel::Unauthenticated),
            (&operators.operators, &Channel::Operators),
        ] {
            assert_eq!(
                status(app, "GET", path, ch).await,
                StatusCode::NOT_FOUND,
                "{path} on {ch:?}"
            );
        }
    }
}

/// One portal request as a browser sends it: the status, the body and the cookies set.
async fn browse(
    app: &Router,
    channel: &Channel,
    method: &str,
    path: &str,
    cookie: &str,
    form: &str,
) -> (StatusCode, String, Vec<String>) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    let mut req = req.body(Body::from(form.to_string())).unwrap();
    let peer = match channel {
        Channel::Appliance(id) | Channel::Proxy(id) => Peer(Some(id.clone())),
        _ => Peer(None),
    };
    req.extensions_mut().insert(peer);
    req.extensions_mut().insert(channel.clone());
    req.extensions_mut()
        .insert(Remote("127.0.0.1:1".parse().unwrap()));
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let cookies = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), cookies)
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// Logs `login` in at `app` through the login form; the session cookie and its CSRF token.
async fn log_in(app: &Router, channel: &Channel, login: &str) -> (String, String) {
    let (_, page, cookies) = browse(app, channel, "GET", "/login", "", "").await;
    let pre = cookies
        .into_iter()
        .find(|c| c.starts_with("__Host-tsunagi-login="))
        .expect("a pre-login cookie");
    let form = format!("csrf={}&login={login}&password=Pass-word1", csrf_of(&page));
    let (status, _, cookies) = browse(app, channel, "POST", "/login", &pre, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{login} logs in");
    let session = cookies
        .into_iter()
        .find(|c| c.starts_with("__Host-tsunagi="))
        .expect("a session cookie");
    let (_, home, _) = browse(app, channel, "GET", "/", &session, "").await;
    (session, csrf_of(&home))
}

/// The portal's route table against every role at its own entrance (each facility role
/// through its appliance's proxy certificate, the office and operators on their listener) and
/// against nobody logged in at every entrance: a role the table lets through is never refused
/// (403), a role it does not is always refused, whatever the method; nobody logged in is sent
/// to the login page. A session taken to the other entrance is refused there and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_its_table_says() {
    use crate::account::Role;
    use crate::portal::{Who, ROUTES};
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path());
    let issuer = hub.ca.issuing_subject();
    let a = "3710000001";
    let rid = {
        let c = crate::region::open(
            dir.path(),
            &crate::key::Key::from_bytes([7; 32]).derive("region"),
        )
        .unwrap();
        let v = crate::account::hash_password("Pass-word1");
        for (login, role, facility) in [
            ("adm", Role::FacilityAdmin, a),
            ("dr-a", Role::Doctor, a),
            ("ns-a", Role::Nurse, a),
            ("ph-a", Role::Pharmacist, a),
            ("clerk", Role::Clerk, a),
            ("office", Role::Office, ""),
            ("ops-1", Role::Operator, ""),
        ] {
            crate::account::add(&c, login, login, facility, role, &v, "test", now())
                .unwrap()
                .unwrap();
        }
        c.execute("UPDATE user SET must_change = 0", []).unwrap();
        crate::consent::set_core(&c, a, true, now()).unwrap();
        let d = crate::index::Demographics {
            patient_id: "0001".into(),
            family_kanji: "山田".into(),
            given_kanji: "太郎".into(),
            family_kana: "ヤマダ".into(),
            given_kana: "タロウ".into(),
            birth_date: "19600101".into(),
            sex: "M".into(),
        };
        let id = crate::index::upsert(&c, a, &d, now()).unwrap();
        assert_eq!(id, 1, "the sample entry");
        crate::index::get(&c, id).unwrap().unwrap().regional_id
    };
    let portal = crate::portal::router(Arc::new(crate::portal::Portal::new(
        hub.clone(),
        crate::portal::Settings::default(),
    )));
    let (appliances, operators) = entrances(hub, portal);
    let proxy = Channel::Proxy(Identity {
        facility: a.into(),
        appliance: "box-1".into(),
        serial: "01".into(),
        not_before: 0,
        not_after: i64::MAX / 2,
        purpose: Purpose::PortalProxy,
        issuer: issuer.clone(),
    });
    let path_of = |route: &str| {
        sample(route)
            .replace("R0000001", &rid)
            .replace("/dr-a/", "/nobody-x/")
    };
    assert_eq!(
        ROUTES.iter().map(|r| r.path).collect::<Vec<_>>(),
        shared::route::PORTAL.to_vec(),
        "the table is the proxy's list"
    );

    // Nobody logged in: the login page and the stylesheet, and for the rest a way to log in.
    for (app, ch) in [
        (&appliances.proxy, &proxy),
        (&operators.operators, &Channel::Operators),
    ] {
        for route in ROUTES {
            for (method, who) in [("GET", route.get), ("POST", route.post)] {
                let Some(who) = who else { continue };
                let (s, _, _) = browse(app, ch, method, &path_of(route.path), "", "").await;
                if who == Who::Anyone {
                    assert_ne!(
                        s,
                        StatusCode::SEE_OTHER,
                        "{method} {} needs no login",
                        route.path
                    );
                } else {
                    assert_eq!(
                        s,
                        StatusCode::SEE_OTHER,
                        "{method} {} without a login on {ch:?}",
                        route.path
                    );
                }
            }
        }
    }
    let people = [
        ("adm", Role::FacilityAdmin),
        ("dr-a", Role::Doctor),
        ("ns-a", Role::Nurse),
        ("ph-a", Role::Pharmacist),
        ("clerk", Role::Clerk),
        ("office", Role::Office),
        ("ops-1", Role::Operator),
    ];
    let mut walked = 0;
    for (login, role) in people {
        let (own, own_ch, other, other_ch) = if role.in_facility() {
            (
                &appliances.proxy,
                &proxy,
                &operators.operators,
                &Channel::Operators,
            )
        } else {
            (
                &operators.operators,
                &Channel::Operators,
                &appliances.proxy,
                &proxy,
            )
        };
        let (session, csrf) = log_in(own, own_ch, login).await;
        for route in ROUTES {
            for (method, who) in [("GET", route.get), ("POST", route.post)] {
                let Some(who) = who else { continue };
                if matches!(route.path, "/login" | "/logout") && method == "POST" {
                    continue; // the login form and the end of the session, below
                }
                let (s, body, _) = browse(
                    own,
                    own_ch,
                    method,
                    &path_of(route.path),
                    &session,
                    &format!("csrf={csrf}"),
                )
                .await;
                assert_ne!(
                    s,
                    StatusCode::SEE_OTHER,
                    "{login}: {method} {} lost the session",
                    route.path
                );
                if who.lets(role) {
                    assert_ne!(
                        s,
                        StatusCode::FORBIDDEN,
                        "{login} ({role:?}) refused {method} {}: {body}",
                        route.path
                    );
                } else {
                    assert_eq!(
                        s,
                        StatusCode::FORBIDDEN,
                        "{login} ({role:?}) let through {method} {}",
                        route.path
                    );
                }
                walked += 1;
            }
        }
        // The session at the other entrance: refused, and over at its own too.
        let (s, _, _) = browse(other, other_ch, "GET", "/", &session, "").await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{login}'s session at the other entrance"
        );
        let (s, _, _) = browse(own, own_ch, "GET", "/", &session, "").await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{login}'s session ended");
        // And logging out ends a session.
        let (session, csrf) = log_in(own, own_ch, login).await;
        let (s, _, _) = browse(
            own,
            own_ch,
            "POST",
            "/logout",
            &session,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        let (s, _, _) = browse(own, own_ch, "GET", "/", &session, "").await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{login} logged out");
    }
    assert!(
        walked > 7 * 25,
        "{walked} role × route × method answers checked"
    );
}

/// A guesser at one terminal gets 12 attempts a minute, answered at once after that, while
/// the clinic's other terminals log in as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_throttled_per_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path());
    let issuer = hub.ca.issuing_subject();
    {
        let c = crate::region::open(
            dir.path(),
            &crate::key::Key::from_bytes([7; 32]).derive("region"),
        )
        .unwrap();
        crate::account::add(
            &c,
            "dr-a",
            "dr-a",
            "3710000001",
            crate::account::Role::Doctor,
            &crate::account::hash_password("Pass-word1"),
            "test",
            now(),
        )
        .unwrap()
        .unwrap();
        c.execute("UPDATE user SET must_change = 0", []).unwrap();
    }
    let portal = Arc::new(crate::portal::Portal::new(
        hub.clone(),
        crate::portal::Settings::default(),
    ));
    let (appliances, _) = entrances(hub, crate::portal::router(portal.clone()));
    let proxy = Channel::Proxy(Identity {
        facility: "3710000001".into(),
        appliance: "box-1".into(),
        serial: "01".into(),
        not_before: 0,
        not_after: i64::MAX / 2,
        purpose: Purpose::PortalProxy,
        issuer: issuer.clone(),
    });
    let attempt = |terminal: &'static str, password: &'static str| {
        let (app, ch) = (appliances.proxy.clone(), proxy.clone());
        async move {
            let (_, page, cookies) = browse(&app, &ch, "GET", "/login", "", "").await;
            let pre = cookies
                .into_iter()
                .find(|c| c.starts_with("__Host-tsunagi-login="))
                .unwrap();
            let mut req = axum::http::Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, pre)
                .header(crate::portal::TERMINAL_HEADER, terminal)
                .body(Body::from(format!(
                    "csrf={}&login=dr-a&password={password}",
                    csrf_of(&page)
                )))
                .unwrap();
            req.extensions_mut().insert(Peer(None));
            req.extensions_mut().insert(ch.clone());
            req.extensions_mut()
                .insert(Remote("127.0.0.1:1".parse().unwrap()));
            let r = app.oneshot(req).await.unwrap();
            let status = r.status();
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // Every attempt counts, right or wrong (right ones in between keep the account's own
    // slow-down out of the way).
    let mut refused = 0;
    for i in 0..crate::account::Throttle::PER_TERMINAL + 3 {
        let (s, body) = attempt(
            "t-guess",
            if i % 2 == 0 {
                "Pass-word1"
            } else {
                "Wrong-pass1"
            },
        )
        .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(body.contains("ログインの試行が多すぎます"), "{body}");
            refused += 1;
        } else {
            assert!(
                i < crate::account::Throttle::PER_TERMINAL,
                "attempt {i} was checked"
            );
        }
    }
    assert_eq!(refused, 3);
    let (s, _) = attempt("t-colleague", "Pass-word1").await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "another terminal of the clinic logs in"
    );
}
