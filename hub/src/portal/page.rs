//! The pages every member of staff uses: login and logout, the password change, the home page,
//! patient search, and the patient page with its tabs, calendar, lab trend and document download.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::{
    authed, field, hl7_time, jst, now_ms, render, session, sex_label, Ctx, Error, Nav, Params,
    Portal, Result, Term,
};
use crate::account::{self, Login};
use crate::consent::{self, Basis};
use crate::index::{self, Entry};
use crate::record::{self, Tab};
use crate::{audit, now};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    csrf: String,
    message: String,
    login: String,
}

fn login_message(m: &str) -> &'static str {
    match m {
        "expired" => {
            "一定時間操作がなかったため、ログアウトしました。もう一度ログインしてください。"
        }
        "disabled" => "このIDは無効になっています。施設の管理者または事務局に連絡してください。",
        "logout" => "ログアウトしました。",
        _ => "",
    }
}

fn login_page(message: &str, login: &str) -> Result<Response> {
    let csrf = session::token();
    let mut r = render(&LoginPage {
        nav: None,
        csrf: csrf.clone(),
        message: message.into(),
        login: login.into(),
    })?;
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::PRE_COOKIE, &csrf)
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    Ok(r)
}

pub async fn login_form(Query(q): Query<Params>) -> Result<Response> {
    login_page(login_message(field(&q, "m")), "")
}

pub async fn login(
    State(p): State<Arc<Portal>>,
    term: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let terminal = term.terminal.clone();
    let pre = session::cookie(&headers, session::PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !session::same(&pre, field(&f, "csrf")) {
        return Err(Error::Forbidden(
            "ログイン画面の有効期限が切れたか、不正な送信です。ログイン画面を開き直してください。"
                .into(),
        ));
    }
    // An ID no account can have is not looked up, and only its start is kept (in memory and in
    // the audit log), however long what was typed.
    if !p
        .throttle
        .allow(&super::entrance_key(&term.channel), &terminal, now())
    {
        tracing::warn!(terminal = %terminal, "login attempts over the limit: answered without checking");
        let mut r = login_page(
            "ログインの試行が多すぎます。1分ほど待ってから、もう一度お試しください。",
            "",
        )?;
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(r);
    }
    let typed = field(&f, "login");
    let possible = account::check_login(typed).is_ok();
    let login: String = if possible {
        typed.to_string()
    } else {
        typed.chars().take(32).collect()
    };
    let password = f.get("password").cloned().unwrap_or_default();
    let t = now();
    let l = login.clone();
    let user = if possible {
        p.read(move |c| Ok(account::get(c, &l)?)).await?
    } else {
        None
    };
    let facility = user
        .as_ref()
        .map(|u| u.facility.clone())
        .unwrap_or_default();
    let fits = user
        .as_ref()
        .is_some_and(|u| super::entrance_fits(u, &term.channel).is_ok());
    let known = user.is_some();
    // argon2 runs on a blocking thread, not on the region database's writer, and runs the same
    // for every attempt, whoever's ID it names.
    let check = p
        .hash(move || account::check_attempt(user.as_ref(), &password, t))
        .await?;
    // A disabled account whose password was wrong is treated as any stranger's attempt.
    let disabled_wrong = check == account::Check::Disabled { right: false };
    let outcome = if fits && !disabled_wrong {
        let l = login.clone();
        p.write(move |c| Ok(account::record_login(c, &l, check, t)?))
            .await?
    } else {
        // An unknown ID, or an account whose entrance this is not (another facility's appliance,
        // the wrong listener): nothing is recorded on any account, and the answer is exactly what
        // a wrong password at a real account gets here, counted per entrance and ID.
        let entrance = super::entrance_key(&term.channel);
        p.strangers.fail(&entrance, &login, t)
    };
    let mut e = audit::Event {
        login: login.clone(),
        facility,
        terminal: terminal.clone(),
        action: "login".into(),
        ..Default::default()
    };
    let answer = match outcome {
        // `Strangers` never lets anyone in; were it to, the attempt is still refused.
        Login::Ok { .. } if !fits || disabled_wrong => "IDまたはパスワードが違います。".to_string(),
        Login::Wrong { delay } if !fits || disabled_wrong => {
            e.outcome = if disabled_wrong {
                "disabled"
            } else if known {
                "wrong-entrance"
            } else {
                "wrong-password"
            }
            .into();
            p.audit(e).await?;
            if known && !disabled_wrong {
                tracing::warn!(login = %login, terminal = %terminal, "login refused: not this user's entrance");
            }
            tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
            "IDまたはパスワードが違います。".to_string()
        }
        Login::Ok { must_change } => {
            e.outcome = "ok".into();
            p.audit(e).await?;
            tracing::info!(login = %login, terminal = %terminal, "logged in");
            let token = p.sessions.create(&login, &terminal, must_change);
            let mut r = Redirect::to(if must_change { "/password" } else { "/" }).into_response();
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(session::COOKIE, &token)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            h.append(
                header::SET_COOKIE,
                session::clear_cookie(session::PRE_COOKIE)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            return Ok(r);
        }
        Login::Wrong { delay } => {
            e.outcome = "wrong-password".into();
            p.audit(e).await?;
            // Slow down repeated guessing; other people's requests are not held up.
            tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
            "IDまたはパスワードが違います。".to_string()
        }
        Login::Locked { until } => {
            e.outcome = "locked".into();
            p.audit(e).await?;
            format!("失敗が続いたため、このIDはロックされています。{} 以降に再度お試しいただくか、施設の管理者または事務局に解除を依頼してください。", jst(until))
        }
        Login::Disabled => {
            e.outcome = "disabled".into();
            p.audit(e).await?;
            login_message("disabled").to_string()
        }
    };
    login_page(&answer, &login)
}

pub async fn logout(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    p.sessions.end(&ctx.token);
    p.audit(ctx.event("logout", "")).await?;
    let mut r = Redirect::to("/login?m=logout").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(session::COOKIE)
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    Ok(r)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    nav: Option<Nav>,
    forced: bool,
    expired: bool,
    message: String,
}

pub async fn password_form(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    password_page(&ctx, "")
}

fn password_page(ctx: &Ctx, message: &str) -> Result<Response> {
    let expired = now() >= ctx.user.password_expires_at();
    render(&PasswordPage {
        nav: Some(ctx.nav.clone()),
        forced: ctx.user.must_change || expired,
        expired,
        message: message.into(),
    })
}

pub async fn password(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, true).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let (current, new, again) = (
        f.get("current").cloned().unwrap_or_default(),
        f.get("new").cloned().unwrap_or_default(),
        f.get("again").cloned().unwrap_or_default(),
    );
    if new != again {
        return password_page(&ctx, "新しいパスワードが確認欄と一致しません。");
    }
    // argon2 is deliberately slow: keep it off the async threads.
    let user = ctx.user.clone();
    let checked = p
        .hash(move || -> Result<String, &'static str> {
            if !account::verify_password(&user.pw, &current) {
                return Err("現在のパスワードが違います。");
            }
            account::check_new_password(&user, &new)?;
            Ok(account::hash_password(&new))
        })
        .await?;
    let verifier = match checked {
        Ok(v) => v,
        Err(m) => return password_page(&ctx, m),
    };
    let (login, t, at) = (ctx.user.login.clone(), now(), now_ms());
    let e = ctx.event("password-change", "");
    p.write(move |c| {
        let tx = c.transaction()?;
        account::set_password(&tx, &login, &verifier, t)?;
        audit::append(&tx, at, &e)?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    p.sessions.password_changed(&ctx.token);
    Ok(Redirect::to("/?m=password").into_response())
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Option<Nav>,
    notices: Vec<String>,
    unread: i64,
}

pub async fn home(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let mut notices = Vec::new();
    match field(&q, "m") {
        "password" => notices.push("パスワードを変更しました。".to_string()),
        "emergency-ended" => notices.push("緊急閲覧を終了しました。".to_string()),
        _ => {}
    }
    let left = ctx.user.password_expires_at() - now();
    if left <= account::EXPIRY_NOTICE {
        notices.push(format!(
            "パスワードの有効期限は {} です（残り{}日）。期限までに変更してください。",
            jst(ctx.user.password_expires_at()),
            (left / 86_400).max(0)
        ));
    }
    let f = ctx.user.facility.clone();
    let unread = p.read(move |c| Ok(consent::unread(c, &f)?)).await?;
    render(&HomePage {
        nav: Some(ctx.nav),
        notices,
        unread,
    })
}

/// One search result as shown.
pub struct Hit {
    pub entry: Entry,
    pub facility_name: String,
    pub basis: &'static str,
    pub birth: String,
    pub sex: &'static str,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    nav: Option<Nav>,
    patient_id: String,
    regional_id: String,
    name: String,
    birth_date: String,
    searched: bool,
    hits: Vec<Hit>,
    more: bool,
    office: bool,
    message: String,
}

/// `YYYY-MM-DD` or `YYYYMMDD` to `YYYYMMDD`.
pub fn parse_date(s: &str) -> Option<String> {
    let d: String = s.chars().filter(|c| *c != '-' && *c != '/').collect();
    let ok = d.len() == 8
        && d.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&d[4..6].parse::<u32>().ok()?)
        && (1..=31).contains(&d[6..8].parse::<u32>().ok()?);
    ok.then_some(d)
}

pub async fn search(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let office = ctx.user.role == account::Role::Office;
    ctx.require(ctx.user.role.views_patients() || office, "患者の検索")?;
    let mut query = index::Query {
        patient_id: field(&q, "patient_id").into(),
        regional_id: field(&q, "regional_id").to_uppercase(),
        name: field(&q, "name").into(),
        birth_date: String::new(),
    };
    let mut page = SearchPage {
        nav: Some(ctx.nav.clone()),
        patient_id: field(&q, "patient_id").into(),
        regional_id: field(&q, "regional_id").into(),
        name: field(&q, "name").into(),
        birth_date: field(&q, "birth_date").into(),
        searched: false,
        hits: vec![],
        more: false,
        office,
        message: String::new(),
    };
    let birth = field(&q, "birth_date");
    if !birth.is_empty() {
        match parse_date(birth) {
            Some(d) => query.birth_date = d,
            None => {
                page.message = "生年月日は 1960-01-31 の形で入力してください。".into();
                return render(&page);
            }
        }
    }
    if [&query.patient_id, &query.regional_id, &query.name]
        .iter()
        .any(|s| s.chars().count() > 40)
    {
        page.message = "検索条件は40文字以内で入力してください。".into();
        return render(&page);
    }
    if query.is_empty() {
        return render(&page);
    }
    let scope = if office {
        index::Scope::Office
    } else {
        index::Scope::Facility {
            code: ctx.user.facility.clone(),
            now: now(),
            emergency_login: ctx.user.role.breaks_glass().then(|| ctx.user.login.clone()),
        }
    };
    let qq = query.clone();
    let (found, more) = p.read(move |c| Ok(index::search(c, &qq, &scope)?)).await?;
    let mut e = ctx.event("search", "");
    e.detail = format!(
        "patient_id={} regional_id={} name={} birth_date={}",
        query.patient_id, query.regional_id, query.name, query.birth_date
    );
    e.outcome = format!("{} hits{}", found.len(), if more { "+" } else { "" });
    p.audit(e).await?;
    for entry in found {
        let basis = if office {
            "—"
        } else if entry.facility == ctx.user.facility {
            "自施設"
        } else {
            "公開・緊急"
        };
        page.hits.push(Hit {
            facility_name: p.facility_name(&entry.facility).await,
            basis,
            birth: hl7_time(&entry.birth_date),
            sex: sex_label(&entry.sex),
            entry,
        });
    }
    page.searched = true;
    page.more = more;
    render(&page)
}

/// A facility holding records of the patient, as the page header lists it.
pub struct Holder {
    pub entry: Entry,
    pub facility_name: String,
    pub basis: &'static str,
    pub birth: String,
    pub sex: &'static str,
    pub basic: Vec<(&'static str, String)>,
    pub consent_link: bool,
}

pub struct Line {
    pub facility_name: String,
    pub at: String,
    pub cells: Vec<String>,
    pub trend: Option<String>,
    pub download: Option<String>,
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    nav: Option<Nav>,
    rid: String,
    holders: Vec<Holder>,
    tabs: Vec<(&'static str, &'static str, bool)>,
    tab_label: &'static str,
    columns: &'static [&'static str],
    lines: Vec<Line>,
    notes: Vec<String>,
    emergency_until: Option<String>,
}

/// The entries of a regional patient the request may see, refusing (and auditing the refusal)
/// when it may see none. A clerk or a non-clinical role sees only basic information.
async fn visible(p: &Arc<Portal>, ctx: &Ctx, rid: &str, what: &str) -> Result<Vec<(Entry, Basis)>> {
    ctx.require(ctx.user.role.views_patients(), "患者記録の閲覧")?;
    let (r, f, t) = (rid.to_string(), ctx.user.facility.clone(), now());
    let login = ctx.user.role.breaks_glass().then(|| ctx.user.login.clone());
    let seen = p
        .read(move |c| {
            Ok(consent::visible(
                c,
                &r,
                consent::Viewer {
                    facility: &f,
                    emergency_login: login.as_deref(),
                },
                t,
            )?)
        })
        .await?;
    if seen.is_empty() {
        let mut e = ctx.event(
            if what == "download" {
                "download"
            } else {
                "view"
            },
            rid,
        );
        e.detail = what.into();
        e.outcome = "denied".into();
        p.audit(e).await?;
        tracing::warn!(login = %ctx.user.login, regional_id = %rid, "patient record refused: no consent");
        return Err(Error::Forbidden("この患者の記録を閲覧する権限がありません（同意による公開がないか、地域患者IDが違います）。".into()));
    }
    Ok(seen)
}

fn owners(seen: &[(Entry, Basis)]) -> Vec<String> {
    let mut o: Vec<String> = seen.iter().map(|(e, _)| e.facility.clone()).collect();
    o.sort();
    o.dedup();
    o
}

const ROWS_PER_FACILITY: usize = 2_000;

pub async fn patient(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let tab = Tab::parse(field(&q, "tab")).unwrap_or(Tab::Visits);
    let seen = visible(&p, &ctx, &rid, "view").await?;
    let mut holders = Vec::new();
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    let mut emergency_until = None;
    for (entry, basis) in &seen {
        let name = p.facility_name(&entry.facility).await;
        let clinical = basis.clinical() && ctx.user.role.clinical();
        let pid = entry.patient_id.clone();
        let (basic, rows) = p
            .read_copy(&entry.facility, move |c| {
                let basic = record::basic(c, &pid)?;
                let rows = if clinical {
                    record::tab(c, tab, &pid, ROWS_PER_FACILITY)?
                } else {
                    vec![]
                };
                Ok((basic, rows))
            })
            .await?;
        if rows.len() == ROWS_PER_FACILITY {
            notes.push(format!(
                "{name}: 新しい順に{ROWS_PER_FACILITY}件まで表示しています。"
            ));
        }
        if !clinical {
            notes.push(format!(
                "{name}: 基本情報のみ閲覧できます（{}）。",
                if basis.clinical() {
                    "この職種では診療情報を閲覧できません"
                } else {
                    "公開範囲が基本情報"
                }
            ));
        }
        if let Basis::Emergency { until, refused } = basis {
            if *refused {
                notes.push(format!("{name}: 患者は非公開（閲覧拒否）の意思を示しています。生命の危険があるとして開いています。"));
            }
            emergency_until = Some(jst(*until));
        }
        for r in rows {
            lines.push(Line {
                facility_name: name.clone(),
                at: hl7_time(&r.at),
                trend: (tab == Tab::Lab && !r.code.is_empty())
                    .then(|| format!("/patient/{rid}/trend?code={}", urlencode(&r.code))),
                download: r
                    .file_id
                    .map(|f| format!("/patient/{rid}/document/{}/{f}", entry.id)),
                cells: r.cells,
            });
        }
        holders.push(Holder {
            facility_name: name,
            basis: basis.label(),
            birth: hl7_time(&entry.birth_date),
            sex: sex_label(&entry.sex),
            basic,
            consent_link: entry.facility == ctx.user.facility
                && ctx.user.role == account::Role::FacilityAdmin,
            entry: entry.clone(),
        });
    }
    // Every facility's rows together, newest first, each with its source.
    lines.sort_by(|a, b| b.at.cmp(&a.at));
    let mut e = ctx.event("view", &rid);
    e.owners = owners(&seen);
    e.detail = format!("tab={}", tab.code());
    if emergency_until.is_some() {
        e.reason = "emergency".into();
    }
    if seen
        .iter()
        .any(|(_, b)| matches!(b, Basis::Emergency { refused: true, .. }))
    {
        e.reason = "emergency; life at stake, over the patient's refusal (非公開)".into();
    }
    p.audit(e).await?;
    render(&PatientPage {
        nav: Some(ctx.nav),
        tabs: Tab::ALL
            .iter()
            .map(|t| (t.code(), t.label(), *t == tab))
            .collect(),
        tab_label: tab.label(),
        columns: tab.columns(),
        rid,
        holders,
        lines,
        notes,
        emergency_until,
    })
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct Day {
    pub label: String,
    pub in_month: bool,
    pub today: bool,
    pub events: Vec<String>,
}

#[derive(Template)]
#[template(path = "calendar.html")]
struct CalendarPage {
    nav: Option<Nav>,
    rid: String,
    title: String,
    week: bool,
    weeks: Vec<Vec<Day>>,
    prev: String,
    next: String,
    date: String,
}

/// Today's day number in Japan time.
fn today() -> i64 {
    (now() + 9 * 3600).div_euclid(86_400)
}

fn ymd(day: i64) -> String {
    let (y, m, d) = shared::time::civil_from_days(day);
    format!("{y:04}{m:02}{d:02}")
}

fn iso(day: i64) -> String {
    let (y, m, d) = shared::time::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

pub async fn calendar(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let week = field(&q, "view") == "week";
    let day = match field(&q, "date") {
        "" => today(),
        s => {
            let d = parse_date(s).ok_or_else(|| {
                Error::BadRequest("日付は 2026-11-21 の形で指定してください。".into())
            })?;
            shared::time::days_from_civil(
                d[0..4].parse().unwrap_or(1970),
                d[4..6].parse().unwrap_or(1),
                d[6..8].parse().unwrap_or(1),
            )
        }
    };
    let (y, m, _) = shared::time::civil_from_days(day);
    // Weeks start on Sunday; 1970-01-01 was a Thursday.
    let sunday = |d: i64| d - (d + 4).rem_euclid(7);
    let (first, last, title, prev, next) = if week {
        let s = sunday(day);
        (
            s,
            s + 6,
            format!("{} 〜 {}", iso(s), iso(s + 6)),
            iso(s - 7),
            iso(s + 7),
        )
    } else {
        let start = shared::time::days_from_civil(y, m, 1);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let end = shared::time::days_from_civil(ny, nm, 1) - 1;
        let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        (
            sunday(start),
            sunday(end) + 6,
            format!("{y}年{m}月"),
            iso(shared::time::days_from_civil(py, pm, 1)),
            iso(end + 1),
        )
    };
    let seen = visible(&p, &ctx, &rid, "calendar").await?;
    let mut by_day: HashMap<String, Vec<String>> = HashMap::new();
    for (entry, basis) in &seen {
        if !(basis.clinical() && ctx.user.role.clinical()) {
            continue;
        }
        let name = p.facility_name(&entry.facility).await;
        let (pid, from, to) = (entry.patient_id.clone(), ymd(first), ymd(last));
        let events = p
            .read_copy(&entry.facility, move |c| {
                Ok(record::events(c, &pid, &from, &to)?)
            })
            .await?;
        for ev in events {
            let text = if ev.count > 1 {
                format!("{name}: {} ×{}", ev.what, ev.count)
            } else {
                format!("{name}: {}", ev.what)
            };
            by_day.entry(ev.day).or_default().push(text);
        }
    }
    let t0 = today();
    let weeks = (first..=last)
        .map(|d| {
            let (_, dm, dd) = shared::time::civil_from_days(d);
            let mut events = by_day.remove(&ymd(d)).unwrap_or_default();
            events.sort();
            Day {
                label: if week {
                    format!("{dm}/{dd}")
                } else {
                    dd.to_string()
                },
                in_month: week || dm == m,
                today: d == t0,
                events,
            }
        })
        .collect::<Vec<_>>()
        .chunks(7)
        .map(|w| {
            w.iter()
                .map(|d| Day {
                    label: d.label.clone(),
                    in_month: d.in_month,
                    today: d.today,
                    events: d.events.clone(),
                })
                .collect()
        })
        .collect();
    let mut e = ctx.event("view", &rid);
    e.owners = owners(&seen);
    e.detail = format!(
        "calendar {} {}",
        if week { "week" } else { "month" },
        iso(day)
    );
    p.audit(e).await?;
    render(&CalendarPage {
        nav: Some(ctx.nav),
        rid,
        title,
        week,
        weeks,
        prev,
        next,
        date: iso(day),
    })
}

pub struct Series {
    pub facility_name: String,
    pub color: &'static str,
    pub points: String,
    pub dots: Vec<(f64, f64, String)>,
}

#[derive(Template)]
#[template(path = "trend.html")]
struct TrendPage {
    nav: Option<Nav>,
    rid: String,
    name: String,
    unit: String,
    series: Vec<Series>,
    table: Vec<(String, String, String)>,
    y_labels: Vec<(f64, String)>,
    x_labels: Vec<(f64, String)>,
}

const COLORS: [&str; 6] = [
    "#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#555555",
];

pub async fn trend(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    // Who may look comes before what they asked for.
    ctx.require(ctx.user.role.views_patients(), "患者記録の閲覧")?;
    let code = field(&q, "code").to_string();
    if code.is_empty() || code.len() > 64 {
        return Err(Error::BadRequest(
            "検査項目のコードを指定してください。".into(),
        ));
    }
    let seen = visible(&p, &ctx, &rid, "trend").await?;
    let mut all: Vec<(String, Vec<record::Point>)> = Vec::new();
    for (entry, basis) in &seen {
        if !(basis.clinical() && ctx.user.role.clinical()) {
            continue;
        }
        let (pid, c2) = (entry.patient_id.clone(), code.clone());
        let pts = p
            .read_copy(&entry.facility, move |c| Ok(record::trend(c, &pid, &c2)?))
            .await?;
        if !pts.is_empty() {
            all.push((p.facility_name(&entry.facility).await, pts));
        }
    }
    let (name, unit) = all
        .iter()
        .flat_map(|(_, v)| v.first())
        .map(|pt| (pt.name.clone(), pt.unit.clone()))
        .next()
        .unwrap_or_default();
    let values: Vec<f64> = all
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.value))
        .collect();
    let times: Vec<String> = all
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.at.chars().take(8).collect::<String>()))
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let (lo, hi) = if values.is_empty() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo - (hi - lo) * 0.1, hi + (hi - lo) * 0.1)
    };
    let days = |s: &str| -> f64 {
        shared::time::days_from_civil(
            s.get(0..4).and_then(|x| x.parse().ok()).unwrap_or(1970),
            s.get(4..6).and_then(|x| x.parse().ok()).unwrap_or(1),
            s.get(6..8).and_then(|x| x.parse().ok()).unwrap_or(1),
        ) as f64
    };
    let (t0, t1) = times
        .iter()
        .map(|s| days(s))
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (t0, t1) = if times.is_empty() {
        (0.0, 1.0)
    } else if t1 - t0 < 1.0 {
        (t0 - 1.0, t1 + 1.0)
    } else {
        (t0, t1)
    };
    // The plot area is 60..740 by 20..280 in a 800 x 320 view box, leaving room for the labels.
    let x = |s: &str| 60.0 + (days(s) - t0) / (t1 - t0) * 680.0;
    let y = |v: f64| 280.0 - (v - lo) / (hi - lo) * 260.0;
    let mut series = Vec::new();
    let mut table = Vec::new();
    for (i, (fname, pts)) in all.iter().enumerate() {
        let coords: Vec<(f64, f64, String)> = pts
            .iter()
            .map(|pt| {
                (
                    x(&pt.at),
                    y(pt.value),
                    format!("{} {} {}", hl7_time(&pt.at), pt.text, pt.unit),
                )
            })
            .collect();
        series.push(Series {
            facility_name: fname.clone(),
            color: COLORS[i % COLORS.len()],
            points: coords
                .iter()
                .map(|(a, b, _)| format!("{a:.1},{b:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            dots: coords,
        });
        for pt in pts {
            table.push((
                hl7_time(&pt.at),
                fname.clone(),
                format!("{} {}", pt.text, pt.unit),
            ));
        }
    }
    table.sort_by(|a, b| b.0.cmp(&a.0));
    let y_labels = (0..=4)
        .map(|i| lo + (hi - lo) * i as f64 / 4.0)
        .map(|v| (y(v), format!("{v:.1}")))
        .collect();
    let x_labels = if times.is_empty() {
        vec![]
    } else {
        (0..=3)
            .map(|i| t0 + (t1 - t0) * i as f64 / 3.0)
            .map(|d| (60.0 + (d - t0) / (t1 - t0) * 680.0, iso(d.round() as i64)))
            .collect()
    };
    let mut e = ctx.event("view", &rid);
    e.owners = owners(&seen);
    e.detail = format!("trend code={code}");
    p.audit(e).await?;
    render(&TrendPage {
        nav: Some(ctx.nav),
        rid,
        name,
        unit,
        series,
        table,
        y_labels,
        x_labels,
    })
}

pub async fn document(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((rid, entry_id, file)): Path<(String, i64, i64)>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let seen = visible(&p, &ctx, &rid, "download").await?;
    let Some((entry, _)) = seen
        .iter()
        .find(|(e, b)| e.id == entry_id && b.clinical() && ctx.user.role.clinical())
    else {
        let mut e = ctx.event("download", &rid);
        e.outcome = "denied".into();
        p.audit(e).await?;
        return Err(Error::Forbidden(
            "この文書を閲覧する権限がありません。".into(),
        ));
    };
    let pid = entry.patient_id.clone();
    let doc = p
        .read_copy(&entry.facility, move |c| {
            Ok(record::document(c, &pid, file)?)
        })
        .await?;
    let Some((file_name, media_type, size)) = doc else {
        return Err(Error::NotFound("文書が見つかりません。".into()));
    };
    let mut e = ctx.event("download", &rid);
    e.owners = vec![entry.facility.clone()];
    e.detail = format!("document file={file} bytes={size}");
    p.audit(e).await?;
    // The bytes stream from the copy in chunks on a blocking thread; a large scan is never held whole.
    let readers = p.hub.copy_readers(&entry.facility);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let sent = readers.with(|c| {
            Ok(record::stream_file(c, file, 256 << 10, |b| {
                tx.blocking_send(bytes::Bytes::from(b)).is_ok()
            })?)
        });
        if let Err(e) = sent {
            tracing::error!(error = %format!("{e:#}"), file, "document stream failed");
        }
    });
    let disposition = format!(
        "attachment; filename=\"document\"; filename*=UTF-8''{}",
        urlencode(&file_name)
    );
    let body = axum::body::Body::new(crate::api::ChannelBody(rx, Some(size.max(0) as u64)));
    Ok((
        [
            (header::CONTENT_TYPE, media_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_urls() {
        assert_eq!(super::parse_date("1960-01-31").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("19600131").as_deref(), Some("19600131"));
        assert_eq!(super::parse_date("1960-13-01"), None);
        assert_eq!(super::parse_date("' OR 1=1"), None);
        assert_eq!(super::urlencode("a b/検"), "a%20b%2F%E6%A4%9C");
    }
}
