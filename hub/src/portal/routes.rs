//! The portal's routing table, with who passes each route's permission check, and the layers
//! every request goes through: the entrance gate, the request deadline and the security headers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{fleetview, office, page, Error, Portal};
use crate::account::Role;
use crate::state::Channel;

/// Refuses portal requests that came neither through an appliance (with a certificate that is
/// still valid) nor on the operators' listener.
async fn gate(
    axum::extract::State(p): axum::extract::State<Arc<Portal>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refused = match req.extensions().get::<Channel>() {
        Some(Channel::Operators) => None,
        Some(Channel::Proxy(id)) => crate::state::still_valid(&p.hub, id).err().map(|(_, why)| {
            tracing::warn!(appliance = %id.appliance, facility = %id.facility, why = %why, "portal request refused: the appliance's certificate is no longer valid");
            "この施設のアプライアンスの証明書が失効しているか期限切れです。施設の管理者またはネットワーク事務局に連絡してください。".to_string()
        }),
        _ => Some("ポータルは施設の tsunagi アプライアンス経由でのみ利用できます。端末のブラウザからアプライアンスのアドレスを開いてください。ネットワーク事務局・運用者は運用者用の入口を使ってください。".to_string()),
    };
    match refused {
        None => next.run(req).await,
        Some(m) => Error::Forbidden(m).into_response(),
    }
}

/// Security headers on every portal answer: no caching of patient data, no framing, no scripts
/// from anywhere.
async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    // An answer that set its own policy (a PDF shown inline) keeps it; every other gets the
    // portal's.
    let own = h
        .get(header::CONTENT_SECURITY_POLICY)
        .filter(|v| v.as_bytes() == page::PDF_CSP.as_bytes())
        .cloned();
    view::harden(h);
    if let Some(csp) = own {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    r
}

/// How long a portal request may take to arrive and be answered (a body sent slowly holds its
/// connection no longer; a download streams after its answer has begun and is not cut).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Error::BadRequest("送信に時間がかかりすぎたため、処理を中止しました。通信状態を確認して、もう一度お試しください。".into()).into_response(),
    }
}

/// Who gets past a route's permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone, logged in or not.
    Anyone,
    /// Anyone logged in.
    LoggedIn,
    /// These roles, logged in; everyone else is refused (403).
    Only(&'static [Role]),
}

impl Who {
    pub fn lets(self, role: Role) -> bool {
        match self {
            Who::Anyone | Who::LoggedIn => true,
            Who::Only(roles) => roles.contains(&role),
        }
    }
}

/// A facility's staff.
const STAFF: &[Role] = &[
    Role::FacilityAdmin,
    Role::Doctor,
    Role::Nurse,
    Role::Pharmacist,
    Role::Clerk,
];
/// Who may read clinical records (a clerk sees basic information only).
const CLINICAL: &[Role] = &[
    Role::FacilityAdmin,
    Role::Doctor,
    Role::Nurse,
    Role::Pharmacist,
];
const STAFF_AND_OFFICE: &[Role] = &[
    Role::FacilityAdmin,
    Role::Doctor,
    Role::Nurse,
    Role::Pharmacist,
    Role::Clerk,
    Role::Office,
];
const MANAGERS: &[Role] = &[Role::Office, Role::FacilityAdmin];
const OFFICE: &[Role] = &[Role::Office];
const FLEET: &[Role] = &[Role::Office, Role::Operator];
/// At a core hospital (a facility that is not one is refused whatever the role).
const BREAKS_GLASS: &[Role] = &[Role::Doctor, Role::Nurse, Role::Pharmacist];
/// The office, and the administrator of the facility that owns the entry (another facility's
/// administrator is refused).
const CONSENT: &[Role] = &[Role::Office, Role::FacilityAdmin];

/// One route of the portal: its path (one of `shared::route::PORTAL`, which the LAN proxy
/// forwards), its handlers, and who passes its permission check for each method. The router is
/// built from this table, and `api::tests::every_route_answers_every_role_as_its_table_says`
/// walks it against every role at its entrance.
pub struct Route {
    pub path: &'static str,
    pub get: Option<Who>,
    pub post: Option<Who>,
    handlers: fn() -> axum::routing::MethodRouter<Arc<Portal>>,
}

pub const ROUTES: &[Route] = &[
    Route {
        path: "/",
        get: Some(Who::LoggedIn),
        post: None,
        handlers: || get(page::home),
    },
    Route {
        path: "/login",
        get: Some(Who::Anyone),
        post: Some(Who::Anyone),
        handlers: || get(page::login_form).post(page::login),
    },
    Route {
        path: "/logout",
        get: None,
        post: Some(Who::LoggedIn),
        handlers: || post(page::logout),
    },
    Route {
        path: "/password",
        get: Some(Who::LoggedIn),
        post: Some(Who::LoggedIn),
        handlers: || get(page::password_form).post(page::password),
    },
    Route {
        path: "/search",
        get: Some(Who::Only(STAFF_AND_OFFICE)),
        post: None,
        handlers: || get(page::search),
    },
    Route {
        path: "/patient/{rid}",
        get: Some(Who::Only(STAFF)),
        post: None,
        handlers: || get(page::patient),
    },
    Route {
        path: "/patient/{rid}/calendar",
        get: Some(Who::Only(STAFF)),
        post: None,
        handlers: || get(page::calendar),
    },
    Route {
        path: "/patient/{rid}/trend",
        get: Some(Who::Only(STAFF)),
        post: None,
        handlers: || get(page::trend),
    },
    Route {
        path: "/patient/{rid}/document/{entry}/{file}",
        get: Some(Who::Only(CLINICAL)),
        post: None,
        handlers: || get(page::document),
    },
    Route {
        path: "/consent/{entry}",
        get: Some(Who::Only(CONSENT)),
        post: Some(Who::Only(CONSENT)),
        handlers: || get(office::consent_form).post(office::consent),
    },
    Route {
        path: "/links",
        get: Some(Who::Only(OFFICE)),
        post: None,
        handlers: || get(office::links),
    },
    Route {
        path: "/links/{action}",
        get: None,
        post: Some(Who::Only(OFFICE)),
        handlers: || post(office::link_action),
    },
    Route {
        path: "/emergency",
        get: Some(Who::Only(BREAKS_GLASS)),
        post: Some(Who::Only(BREAKS_GLASS)),
        handlers: || get(office::emergency_form).post(office::emergency),
    },
    Route {
        path: "/emergency/end",
        get: None,
        post: Some(Who::LoggedIn),
        handlers: || post(office::emergency_end),
    },
    Route {
        path: "/inbox",
        get: Some(Who::Only(STAFF_AND_OFFICE)),
        post: None,
        handlers: || get(office::inbox),
    },
    Route {
        path: "/history",
        get: Some(Who::Only(STAFF_AND_OFFICE)),
        post: None,
        handlers: || get(office::history),
    },
    Route {
        path: "/history.csv",
        get: Some(Who::Only(STAFF_AND_OFFICE)),
        post: None,
        handlers: || get(office::history_csv),
    },
    Route {
        path: "/admin/users",
        get: Some(Who::Only(MANAGERS)),
        post: Some(Who::Only(MANAGERS)),
        handlers: || get(office::users).post(office::user_add),
    },
    Route {
        path: "/admin/users/{login}/{action}",
        get: None,
        post: Some(Who::Only(MANAGERS)),
        handlers: || post(office::user_action),
    },
    Route {
        path: "/fleet",
        get: Some(Who::Only(FLEET)),
        post: None,
        handlers: || get(fleetview::list),
    },
    Route {
        path: "/fleet/{facility}/{appliance}",
        get: Some(Who::Only(FLEET)),
        post: None,
        handlers: || get(fleetview::detail),
    },
    Route {
        path: "/fleet/{facility}/{appliance}/command",
        get: None,
        post: Some(Who::Only(FLEET)),
        handlers: || post(fleetview::command),
    },
    Route {
        path: "/static/portal.css",
        get: Some(Who::Anyone),
        post: None,
        handlers: || get(stylesheet),
    },
    Route {
        path: "/static/portal.js",
        get: Some(Who::Anyone),
        post: None,
        handlers: || get(script),
    },
];

pub fn router(p: Arc<Portal>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.path, (route.handlers)())
        })
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(remember_target))
        .layer(axum::middleware::from_fn_with_state(p.clone(), gate))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::map_response(harden))
        .with_state(p)
}

/// A page the portal does not have, said in Japanese with the way home (not an empty 404).
async fn not_found() -> Response {
    Error::NotFound(
        "お探しのページはありません。アドレスが正しいか確認し、メニューから開き直してください。"
            .into(),
    )
    .into_response()
}

/// A page asked for the wrong way (`GET /logout`): said in Japanese, still a 405.
async fn wrong_method() -> Response {
    let mut r = Error::NotFound(
        "このページはこの方法では開けません。メニューやボタンから開き直してください。".into(),
    )
    .into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// A page asked for by someone whose session ended is remembered (in a short-lived cookie of this
/// origin) so that the login returns to it. Only when the request came from the portal itself
/// and carried the session that ended: a link from another site (which carries no session under
/// SameSite=Strict) cannot choose where a login lands. A search's query (names, birth dates) is
/// not kept.
async fn remember_target(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let h = req.headers();
    let ours = h
        .get("sec-fetch-site")
        .is_none_or(|v| v.as_bytes() == b"same-origin" || v.as_bytes() == b"none")
        && super::session::cookie(h, super::session::COOKIE).is_some();
    let asked = (req.method() == axum::http::Method::GET && ours)
        .then(|| req.uri().path_and_query().and_then(view::remembered))
        .flatten();
    let mut r = next.run(req).await;
    let to_login = r
        .headers()
        .get(header::LOCATION)
        .is_some_and(|l| l.as_bytes() == b"/login");
    if let (true, Some(target)) = (to_login, asked) {
        let cookie = super::session::flash_cookie(super::session::NEXT_COOKIE, &target);
        super::session::add_cookie(&mut r, cookie);
    }
    r
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        view::PORTAL_JS,
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        view::PORTAL_CSS,
    )
}
