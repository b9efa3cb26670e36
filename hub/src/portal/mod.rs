//! The web portal that doctors, pharmacists, facility administrators and the network office use:
//! server-rendered pages (askama templates, no JavaScript), sessions and CSRF, and the access rule
//! of `consent::visible` on every patient page. Every search, view, download and change is audited
//! before its answer leaves the hub.

mod fleetview;
mod office;
mod page;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::account::{self, Role, User};
use crate::api::{Channel, Hub, Remote};
use crate::audit;

pub use session::Sessions;

/// The first line of the access-history CSV.
pub use office::CSV_HEADER;

/// Settings of the portal.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sessions end after this long without a request.
    pub idle: Duration,
    /// How long an emergency access lasts.
    pub emergency_minutes: i64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            idle: Duration::from_secs(300),
            emergency_minutes: crate::consent::EMERGENCY_MINUTES,
        }
    }
}

pub struct Portal {
    pub hub: Arc<Hub>,
    pub sessions: Sessions,
    pub settings: Settings,
    names: Mutex<(Option<Instant>, HashMap<String, String>)>,
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Failed logins that touch no account (unknown IDs, other entrances).
    pub strangers: account::Strangers,
    /// Login attempts per terminal and entrance and minute.
    pub throttle: account::Throttle,
    /// Password hashing (argon2id, 19 MiB and tens of milliseconds each) runs at most this many
    /// at a time, so a flood of logins neither exhausts memory nor starves other people's pages.
    hashing: tokio::sync::Semaphore,
}

/// How many password hashes run at once (`Portal::hash`).
pub const HASHING_AT_ONCE: usize = 2;
/// How long a login waits for its turn to hash before it is told to try again.
pub const HASHING_WAIT: Duration = Duration::from_secs(10);

impl Portal {
    pub fn new(hub: Arc<Hub>, settings: Settings) -> Portal {
        Portal {
            hub,
            sessions: Sessions::new(settings.idle),
            settings,
            names: Mutex::new((None, HashMap::new())),
            fleet: None,
            strangers: account::Strangers::default(),
            throttle: account::Throttle::default(),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
        }
    }

    /// The fleet view behind the operators' pages and the facilities' posture banner.
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::Fleet>) -> Portal {
        self.fleet = Some(fleet);
        self
    }

    /// A facility's name from the registry, or its code. The names are re-read at most once a
    /// minute, or after 5 seconds when a code is not among them (a facility just registered).
    pub async fn facility_name(&self, code: &str) -> String {
        if code.is_empty() {
            return "地域連携ネットワーク事務局".into();
        }
        let stale = {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            match names.0 {
                None => true,
                Some(t) => {
                    t.elapsed() >= Duration::from_secs(60)
                        || (!names.1.contains_key(code) && t.elapsed() >= Duration::from_secs(5))
                }
            }
        };
        if stale {
            if let Ok(Ok(list)) = self
                .hub
                .registry
                .call(|c| crate::registry::facility_names(c))
                .await
            {
                let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
                *names = (Some(Instant::now()), list.into_iter().collect());
            }
        }
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .get(code)
            .cloned()
            .unwrap_or_else(|| code.to_string())
    }

    /// Runs `f` on a pooled read-only connection to `region.db`, off the async threads.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let p = self.clone();
        Ok(
            tokio::task::spawn_blocking(move || p.hub.region_readers.with(f))
                .await
                .map_err(|e| anyhow::anyhow!(e))??,
        )
    }

    /// Runs `f` on a pooled read-only connection to a facility's copy.
    pub async fn read_copy<T: Send + 'static>(
        self: &Arc<Self>,
        facility: &str,
        f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let readers = self.hub.copy_readers(facility);
        Ok(tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| anyhow::anyhow!(e))??)
    }

    /// Runs password hashing (`f`) on a blocking thread, at most `HASHING_AT_ONCE` at a time; a
    /// request that cannot have its turn within `HASHING_WAIT` is told the portal is busy.
    pub async fn hash<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _turn = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Busy)?;
        Ok(tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| anyhow::anyhow!(e))?)
    }

    /// Writes on the region database's own thread.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        Ok(self.hub.region.call(f).await??)
    }

    /// Appends an audit event in its own transaction. If it cannot be written, the action fails.
    pub async fn audit(&self, e: audit::Event) -> Result<(), Error> {
        let at = now_ms();
        self.write(move |c| Ok(audit::record(c, at, &e)?))
            .await
            .map(|_| ())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What went wrong, as the person at the browser sees it.
#[derive(Debug)]
pub enum Error {
    /// Not logged in, or the session ended: back to the login page with a reason.
    Login(&'static str),
    /// Logged in but must change the password first.
    MustChange,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// Too many logins at once: try again shortly.
    Busy,
    Internal,
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        tracing::error!(error = %format!("{e:#}"), "portal internal error");
        Error::Internal
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        anyhow::Error::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Error::Login(m) => return Redirect::to(&format!("/login?m={m}")).into_response(),
            Error::MustChange => return Redirect::to("/password").into_response(),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "アクセスできません", m.as_str()),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "見つかりません", m.as_str()),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "入力を確認してください", m.as_str()),
            Error::Busy => (StatusCode::SERVICE_UNAVAILABLE, "混み合っています", "ただいまログインが集中しています。10秒ほど待ってから、もう一度お試しください。"),
            Error::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "システムエラー", "処理中にエラーが発生しました。記録されていますので、時間をおいて再度お試しください。続く場合はネットワーク事務局へ連絡してください。"),
        };
        let body = ErrorPage {
            nav: None,
            title,
            message,
        }
        .render()
        .unwrap_or_else(|_| title.to_string());
        (status, Html(body)).into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A form's or a query string's fields.
pub type Params = HashMap<String, String>;

/// A field's value, trimmed; empty when absent.
pub fn field<'a>(f: &'a Params, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

/// Renders a template into a response.
pub fn render(t: &impl Template) -> Result<Response> {
    Ok(Html(t.render().map_err(|e| anyhow::anyhow!("template: {e}"))?).into_response())
}

/// The header bar every logged-in page shows.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    pub facility: String,
    pub role: String,
    pub csrf: String,
    pub views_patients: bool,
    pub office: bool,
    pub admin: bool,
    pub core: bool,
    /// The hub's operators and the office see the fleet.
    pub fleet: bool,
    /// A banner about posture: this terminal's (from its appliance) or the facility's.
    pub posture: Option<String>,
}

/// A logged-in request: the person, their session and where they are.
pub struct Ctx {
    pub user: User,
    pub token: String,
    pub csrf: String,
    pub terminal: String,
    pub nav: Nav,
}

impl Ctx {
    pub fn event(&self, action: &str, patient: &str) -> audit::Event {
        audit::Event {
            login: self.user.login.clone(),
            facility: self.user.facility.clone(),
            terminal: self.terminal.clone(),
            action: action.into(),
            patient: patient.into(),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    /// Refuses a form whose CSRF token is missing or wrong.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<()> {
        match sent {
            Some(t) if session::same(t, &self.csrf) => Ok(()),
            _ => {
                tracing::warn!(login = %self.user.login, terminal = %self.terminal, "form refused: missing or wrong CSRF token");
                Err(Error::Forbidden("フォームの有効期限が切れたか、不正な送信です。画面を開き直してからもう一度操作してください。".into()))
            }
        }
    }

    pub fn require(&self, ok: bool, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{what}は、この利用者の権限（{}）では行えません。",
                self.user.role.label()
            )))
        }
    }
}

/// Where a request came from (see `terminal`) and on which channel, as an extractor.
pub struct Term {
    pub terminal: String,
    pub channel: Channel,
}

/// The header an appliance names the LAN terminal in. Only an appliance's authenticated
/// connection may set it; the appliance strips it from what its LAN sends.
pub const TERMINAL_HEADER: &str = "x-tsunagi-terminal";

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Term {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Term, Self::Rejection> {
        let channel = parts
            .extensions
            .get::<Channel>()
            .cloned()
            .unwrap_or(Channel::Unauthenticated);
        let remote = parts.extensions.get::<Remote>().copied();
        let named = parts
            .headers
            .get(TERMINAL_HEADER)
            .and_then(|v| v.to_str().ok());
        Ok(Term {
            terminal: terminal(&channel, remote.as_ref(), named),
            channel,
        })
    }
}

/// Where a request comes from, for the audit log: the appliance and the LAN terminal it names,
/// or the address of the connection. A terminal name is believed only from an appliance.
pub fn terminal(channel: &Channel, remote: Option<&Remote>, named: Option<&str>) -> String {
    let ip = remote
        .map(|r| r.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let clean = |s: &str| {
        s.len() <= 80
            && !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
    };
    match channel {
        Channel::Proxy(id) => match named {
            Some(n) if clean(n) => format!("{}/{n}", id.appliance),
            _ => format!("{}@{ip}", id.appliance),
        },
        Channel::Operators => format!("operators@{ip}"),
        Channel::Appliance(id) => format!("{}@{ip}", id.appliance),
        Channel::Unauthenticated => ip,
    }
}

/// The entrance a login attempt came through, as `Strangers` counts it: the appliance (facility
/// and box), the operators' listener, or none.
pub fn entrance_key(channel: &Channel) -> String {
    match channel {
        Channel::Proxy(id) => format!("{}/{}", id.facility, id.appliance),
        Channel::Operators => "operators".into(),
        Channel::Appliance(_) | Channel::Unauthenticated => "none".into(),
    }
}

/// Whether a person may use the portal through this entrance: a facility's staff only through
/// their own facility's appliance; the network office and operators only on their own listener.
pub fn entrance_fits(user: &User, channel: &Channel) -> std::result::Result<(), &'static str> {
    match channel {
        Channel::Proxy(id) if user.role.in_facility() && user.facility == id.facility => Ok(()),
        Channel::Proxy(_) if !user.role.in_facility() => Err("事務局・運用者のIDは、運用者用の入口からログインしてください。"),
        Channel::Proxy(_) => Err("この利用者IDは、この施設の端末からは利用できません。所属施設の端末からログインしてください。"),
        Channel::Operators if !user.role.in_facility() => Ok(()),
        Channel::Operators => Err("施設の利用者は、所属施設の端末（tsunagi アプライアンス経由）からログインしてください。"),
        Channel::Appliance(_) | Channel::Unauthenticated => Err("ポータルは施設の tsunagi アプライアンス経由でのみ利用できます。"),
    }
}

/// Refuses portal requests that came neither through an appliance (with a certificate that is
/// still valid) nor on the operators' listener.
async fn gate(
    axum::extract::State(p): axum::extract::State<Arc<Portal>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refused = match req.extensions().get::<Channel>() {
        Some(Channel::Operators) => None,
        Some(Channel::Proxy(id)) => crate::api::still_valid(&p.hub, id).err().map(|(_, why)| {
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

/// The logged-in person of a request, checked against the database on every request: a
/// disabled account or one whose password was reset by the office ends at once.
pub async fn authed(
    p: &Arc<Portal>,
    headers: &HeaderMap,
    term: Term,
    allow_must_change: bool,
) -> Result<Ctx> {
    let Term { terminal, channel } = term;
    let token = session::cookie(headers, session::COOKIE).ok_or(Error::Login("login"))?;
    let s = p.sessions.touch(&token).ok_or(Error::Login("expired"))?;
    let login = s.login.clone();
    // One trip to the database per request: the account and whether its facility is a core hospital.
    let found = p
        .read(move |c| {
            let Some(u) = account::get(c, &login)? else {
                return Ok(None);
            };
            let core = crate::consent::is_core(c, &u.facility)?;
            Ok(Some((u, core)))
        })
        .await?;
    let Some((user, core)) = found else {
        p.sessions.end(&token);
        return Err(Error::Login("login"));
    };
    if user.disabled_at.is_some() {
        p.sessions.end_all(&user.login);
        return Err(Error::Login("disabled"));
    }
    if let Err(m) = entrance_fits(&user, &channel) {
        // A session cookie carried to another entrance is not honoured there, and ends.
        tracing::warn!(login = %user.login, terminal = %terminal, "session used at another entrance: ended");
        p.sessions.end(&token);
        return Err(Error::Forbidden(m.into()));
    }
    if (s.must_change || user.must_change) && !allow_must_change {
        return Err(Error::MustChange);
    }
    let nav = Nav {
        user: user.name.clone(),
        facility: p.facility_name(&user.facility).await,
        role: user.role.label().into(),
        csrf: s.csrf.clone(),
        views_patients: user.role.views_patients(),
        office: user.role == Role::Office,
        admin: matches!(user.role, Role::Office | Role::FacilityAdmin),
        core: core && user.role.clinical(),
        fleet: matches!(user.role, Role::Office | Role::Operator),
        posture: posture_banner(p, &user, &channel, headers),
    };
    Ok(Ctx {
        csrf: s.csrf,
        token,
        terminal,
        user,
        nav,
    })
}

/// What the portal says about posture to a facility's staff: their terminal was warned by the
/// appliance's policy, or the facility's appliance is not compliant.
fn posture_banner(
    p: &Portal,
    user: &User,
    channel: &Channel,
    headers: &HeaderMap,
) -> Option<String> {
    if !user.role.in_facility() {
        return None;
    }
    let mut parts = Vec::new();
    if matches!(channel, Channel::Proxy(_))
        && headers
            .get(POSTURE_HEADER)
            .is_some_and(|v| v.as_bytes() == b"warn")
    {
        parts.push("この端末はセキュリティ基準（画面ロック等）を満たしていないか、確認できていません。施設の管理者に確認してください。".to_string());
    }
    match p.fleet.as_ref().and_then(|f| f.facility_posture(&user.facility)).as_deref() {
        Some("in-grace") => parts.push("施設のセキュリティ点検: 猶予期間中の不適合があります（期限までに対応してください）。".into()),
        Some("non-compliant") => parts.push("施設のセキュリティ点検: 不適合です。施設の管理者はアプライアンスの点検結果を確認してください。".into()),
        Some("error") => parts.push("施設のセキュリティ点検: 確認できない項目があります。".into()),
        _ => {}
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The header an appliance sets on a request from a terminal its policy warned about.
pub const POSTURE_HEADER: &str = "x-tsunagi-posture";

/// Security headers on every portal answer: no caching of patient data, no framing, no scripts
/// from anywhere.
async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    view::harden(h);
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
];

pub fn router(p: Arc<Portal>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.path, (route.handlers)())
        })
        .layer(axum::middleware::from_fn_with_state(p.clone(), gate))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::map_response(harden))
        .with_state(p)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        view::PORTAL_CSS,
    )
}

pub use view::fmt::{hl7_time, jst, sex_label};

/// `2026-11-21 19:30:05` of Unix milliseconds, Japan time.
pub fn jst_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    format!("{}:{:02}", jst(secs), (secs + 9 * 3600).rem_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_hashing_runs_a_few_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let ca = provisioning::Ca::init(&dir.path().join("ca"), "test", crate::now()).unwrap();
        let revoked = Arc::new(crate::tls::Revocations::new(
            dir.path().join("ca").join(provisioning::ca::CRL),
            ca.issuing_ders(),
        ));
        let settings = crate::api::Settings {
            client_cert_lifetime: 86_400,
            max_body: 1 << 20,
            snapshots_kept: 1,
        };
        let hub = Arc::new(
            Hub::new(
                dir.path().to_owned(),
                ca,
                crate::key::HubKey::from_bytes([7; 32]),
                revoked,
                settings,
            )
            .unwrap(),
        );
        let p = Arc::new(Portal::new(hub, Settings::default()));
        let (running, most) = (
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        );
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (p, running, most) = (p.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                p.hash(move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    let v = account::hash_password("Pass-word1");
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    v
                })
                .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            HASHING_AT_ONCE,
            "at most {HASHING_AT_ONCE} hashes at once, and that many in parallel"
        );
    }

    #[test]
    fn times_are_shown_in_japan_time() {
        assert_eq!(jst(1_795_249_845), "2026-11-21 17:30");
        assert_eq!(jst_ms(1_795_249_845_123), "2026-11-21 17:30:45");
        assert_eq!(hl7_time("20261121093000"), "2026/11/21 09:30");
        assert_eq!(hl7_time("20261121"), "2026/11/21");
        assert_eq!(hl7_time(""), "");
    }
}
