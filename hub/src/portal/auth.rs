//! Who a request is and where it came from: the logged-in person with their session (`authed`,
//! `Ctx`, `Nav`), the terminal and channel (`Term`), and which entrance a person may use.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::{session, Error, Portal, Result};
use crate::account::{self, Role, User};
use crate::audit;
use crate::state::{Channel, Remote};

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
    /// Seconds without a request before the session ends: the page blanks itself then.
    pub idle: u64,
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
        idle: p.sessions.idle().as_secs(),
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
    // What the appliance says of this terminal, in words that say what to do and whom to ask.
    let terminal = headers
        .get(POSTURE_HEADER)
        .filter(|_| matches!(channel, Channel::Proxy(_)))
        .and_then(|v| match v.as_bytes() {
            b"unenrolled" => Some("この端末は施設の端末として登録されていません。施設の管理者に登録コードの発行を依頼し、この端末のブラウザで /_tsunagi/terminal を開いて登録してください。"),
            b"unreported" => Some("この端末から画面ロックなどの状態が届いていません。施設の管理者に、この端末の画面ロック報告（reporters/screenlock）の設定を確認してもらってください。"),
            b"in-grace" => Some("この端末は画面ロックなどのセキュリティ基準を満たしていません（猶予期間中）。期限までに設定を直すよう、施設の管理者に連絡してください。"),
            b"non-compliant" => Some("この端末は画面ロックなどのセキュリティ基準を満たしていません。設定を直すよう、施設の管理者に連絡してください。"),
            b"warn" => Some("この端末はセキュリティ基準（画面ロック等）を満たしていないか、確認できていません。施設の管理者に確認してください。"),
            _ => None,
        });
    if let Some(t) = terminal {
        parts.push(t.to_string());
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
