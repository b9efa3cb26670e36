//! The pages of the network office and the facility administrators: consent and publication,
//! patient linking, emergency access, the inbox, the access history with its CSV downloads, and
//! staff accounts.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::page::urlencode;
use super::{
    authed, field, hl7_time, jst, jst_ms, now_ms, render, sex_label, Ctx, Error, Nav, Params,
    Portal, Result, Term,
};
use crate::account::{self, Role};
use crate::audit::{self, View};
use crate::consent::{self, Consent, Scope, State as Publication};
use crate::index::{self, Entry};
use crate::now;

/// Who may record consent for an entry: the office, or the administrator of the owning facility.
fn may_set_consent(ctx: &Ctx, e: &Entry) -> bool {
    ctx.user.role == Role::Office
        || (ctx.user.role == Role::FacilityAdmin && ctx.user.facility == e.facility)
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    nav: Option<Nav>,
    entry: Entry,
    facility_name: String,
    birth: String,
    sex: &'static str,
    consent: Consent,
    updated: String,
    published: String,
    states: Vec<(&'static str, &'static str, bool)>,
    message: String,
}

async fn entry_for(p: &Arc<Portal>, ctx: &Ctx, id: i64) -> Result<Entry> {
    let e = p
        .read(move |c| Ok(index::get(c, id)?))
        .await?
        .ok_or_else(|| Error::NotFound("その患者は索引にありません。".into()))?;
    if !may_set_consent(ctx, &e) {
        let mut ev = ctx.event("consent", &e.regional_id);
        ev.outcome = "denied".into();
        ev.detail = format!("entry={id}");
        p.audit(ev).await?;
        tracing::warn!(login = %ctx.user.login, entry = id, "consent page refused: another facility's patient");
        return Err(Error::Forbidden(
            "同意・公開を設定できるのは、その患者の記録を持つ施設の管理者と事務局だけです。".into(),
        ));
    }
    Ok(e)
}

async fn consent_page(
    p: &Arc<Portal>,
    ctx: &Ctx,
    entry: Entry,
    shown: Option<Consent>,
    message: String,
) -> Result<Response> {
    let id = entry.id;
    let stored = p.read(move |c| Ok(consent::get(c, id)?)).await?;
    let consent = shown
        .or_else(|| stored.as_ref().map(|s| s.consent.clone()))
        .unwrap_or_default();
    let page = ConsentPage {
        nav: Some(ctx.nav.clone()),
        facility_name: p.facility_name(&entry.facility).await,
        birth: hl7_time(&entry.birth_date),
        sex: sex_label(&entry.sex),
        states: Publication::ALL
            .iter()
            .map(|s| (s.code(), s.label(), *s == consent.state))
            .collect(),
        updated: stored
            .as_ref()
            .map(|s| format!("{}（{}）", jst(s.updated_at), s.updated_by))
            .unwrap_or_else(|| "未登録".into()),
        published: stored
            .as_ref()
            .and_then(|s| s.published_at)
            .map(jst)
            .unwrap_or_else(|| "—".into()),
        consent,
        entry,
        message,
    };
    render(&page)
}

pub async fn consent_form(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let entry = entry_for(&p, &ctx, id).await?;
    let mut e = ctx.event("view", &entry.regional_id);
    e.owners = vec![entry.facility.clone()];
    e.detail = format!("consent form {}/{}", entry.facility, entry.patient_id);
    p.audit(e).await?;
    consent_page(&p, &ctx, entry, None, String::new()).await
}

pub async fn consent(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let entry = entry_for(&p, &ctx, id).await?;
    let state = Publication::parse(field(&f, "state"))
        .ok_or_else(|| Error::BadRequest("公開状態を選んでください。".into()))?;
    let scope = Scope::parse(field(&f, "scope"))
        .ok_or_else(|| Error::BadRequest("公開範囲を選んでください。".into()))?;
    let k = Consent {
        state,
        scope,
        comprehensive: field(&f, "comprehensive") == "1",
        facilities: field(&f, "facilities")
            .split([',', ' ', '\n', '\r', '、'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        consent_date: field(&f, "consent_date").to_string(),
        form_ref: field(&f, "form_ref").to_string(),
    };
    if let Err(m) = consent::check(&k, &entry.facility) {
        return consent_page(&p, &ctx, entry, Some(k), m).await;
    }
    let owner_name = p.facility_name(&entry.facility).await;
    let mut e = ctx.event("consent", &entry.regional_id);
    e.owners = vec![entry.facility.clone()];
    e.detail = format!(
        "entry={}/{} state={} scope={} comprehensive={} to={} date={} form={}",
        entry.facility,
        entry.patient_id,
        k.state.code(),
        k.scope.code(),
        k.comprehensive,
        k.facilities.join(","),
        k.consent_date,
        k.form_ref
    );
    let (en, kk, by, t, at) = (
        entry.clone(),
        k.clone(),
        ctx.user.login.clone(),
        now(),
        now_ms(),
    );
    let told = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let told = consent::set(&tx, &en, &kk, &by, t, &owner_name)?;
            e.outcome = if told.is_empty() {
                "ok".into()
            } else {
                format!("ok; notified {}", told.join(","))
            };
            audit::append(&tx, at, &e)?;
            tx.commit()?;
            Ok(told)
        })
        .await?;
    tracing::info!(facility = %entry.facility, regional_id = %entry.regional_id, state = k.state.code(), notified = told.len(), "consent recorded");
    let msg = if told.is_empty() {
        "同意・公開の設定を保存しました。".to_string()
    } else {
        format!(
            "同意・公開の設定を保存し、{}施設に通知しました。",
            told.len()
        )
    };
    consent_page(&p, &ctx, entry, None, msg).await
}

pub struct Proposal {
    pub a: Entry,
    pub b: Entry,
    pub a_name: String,
    pub b_name: String,
    pub birth: String,
    pub sex: &'static str,
}

#[derive(Template)]
#[template(path = "links.html")]
struct LinksPage {
    nav: Option<Nav>,
    proposals: Vec<Proposal>,
    message: String,
}

pub async fn links(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(ctx.user.role == Role::Office, "名寄せ")?;
    let found = p.read(|c| Ok(index::proposals(c, 200)?)).await?;
    let mut e = ctx.event("view", "");
    e.detail = format!("link proposals ({})", found.len());
    p.audit(e).await?;
    let mut proposals = Vec::new();
    for (a, b) in found {
        proposals.push(Proposal {
            a_name: p.facility_name(&a.facility).await,
            b_name: p.facility_name(&b.facility).await,
            birth: hl7_time(&a.birth_date),
            sex: sex_label(&a.sex),
            a,
            b,
        });
    }
    render(&LinksPage {
        nav: Some(ctx.nav),
        proposals,
        message: links_notice(field(&q, "m"), field(&q, "rid")),
    })
}

/// The notice after a linking action. The address carries only a code and a regional ID, which
/// is shown only when it is one; no text from the address is ever shown as it is.
fn links_notice(code: &str, rid: &str) -> String {
    let rid = if !rid.is_empty()
        && rid.len() <= 40
        && rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        rid
    } else {
        ""
    };
    match code {
        "linked" => format!("紐付けました（地域患者ID {rid}）。"),
        "rejected" => "候補を却下しました。".into(),
        "unlinked" => format!("紐付けを解除しました（新しい地域患者ID {rid}）。"),
        _ => String::new(),
    }
}

/// `3710000001/12345` to an index entry id.
async fn entry_ref(p: &Arc<Portal>, s: &str) -> Result<i64> {
    if let Ok(id) = s.parse::<i64>() {
        return Ok(id);
    }
    let (f, pid) = s.split_once('/').ok_or_else(|| {
        Error::BadRequest(format!("「{s}」は 施設コード/患者ID の形ではありません。"))
    })?;
    let (f, pid) = (f.trim().to_string(), pid.trim().to_string());
    let shown = s.to_string();
    p.read(move |c| Ok(index::by_facility_pid(c, &f, &pid)?))
        .await?
        .map(|e| e.id)
        .ok_or_else(|| Error::BadRequest(format!("「{shown}」の患者は索引にありません。")))
}

pub async fn link_action(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(ctx.user.role == Role::Office, "名寄せ")?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let a = entry_ref(&p, field(&f, "a")).await?;
    let b = if action == "unlink" {
        a
    } else {
        entry_ref(&p, field(&f, "b")).await?
    };
    if action != "unlink" && a == b {
        return Err(Error::BadRequest(
            "同じ患者どうしは紐付けできません。".into(),
        ));
    }
    let (by, t, at, ev) = (
        ctx.user.login.clone(),
        now(),
        now_ms(),
        ctx.event("link", ""),
    );
    let act = action.clone();
    let result = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (ea, eb) = (index::get(&tx, a)?, index::get(&tx, b)?);
            let (Some(ea), Some(eb)) = (ea, eb) else {
                return Ok(Err("その患者は索引にありません。".to_string()));
            };
            let mut e = ev;
            e.owners = vec![ea.facility.clone(), eb.facility.clone()];
            e.owners.dedup();
            e.detail = format!(
                "{}/{} {}/{}",
                ea.facility, ea.patient_id, eb.facility, eb.patient_id
            );
            let message = match act.as_str() {
                "confirm" | "manual" => {
                    let rid = index::link(&tx, a, b)?.unwrap_or_default();
                    e.action = "link".into();
                    e.patient = rid.clone();
                    e.detail = format!("{} -> {rid} ({act})", e.detail);
                    format!("m=linked&rid={}", urlencode(&rid))
                }
                "reject" => {
                    index::reject(&tx, a, b, &by, t)?;
                    e.action = "link-reject".into();
                    "m=rejected".to_string()
                }
                "unlink" => match index::unlink(&tx, a)? {
                    Some(rid) => {
                        e.action = "unlink".into();
                        e.patient = ea.regional_id.clone();
                        e.detail = format!("{}/{} -> {rid}", ea.facility, ea.patient_id);
                        format!("m=unlinked&rid={}", urlencode(&rid))
                    }
                    None => {
                        return Ok(Err(
                            "この患者はほかの施設の患者と紐付いていません。".to_string()
                        ))
                    }
                },
                _ => return Ok(Err("不明な操作です。".to_string())),
            };
            audit::append(&tx, at, &e)?;
            tx.commit()?;
            Ok(Ok(message))
        })
        .await?;
    match result {
        Ok(m) => Ok(Redirect::to(&format!("/links?{m}")).into_response()),
        Err(m) => Err(Error::BadRequest(m)),
    }
}

#[derive(Template)]
#[template(path = "emergency.html")]
struct EmergencyPage {
    nav: Option<Nav>,
    minutes: i64,
    message: String,
    /// What was entered, kept for the second step.
    rid: String,
    reason: String,
    /// The second step, when other facilities hold the patient's refusal (非公開): their names
    /// (shown to a doctor, who alone may open them), or None for the first step.
    refusals: Option<Vec<String>>,
    doctor: bool,
    /// Whether anything but refused entries would open without the life-at-stake statement.
    others: bool,
}

fn may_break_glass(ctx: &Ctx) -> Result<()> {
    ctx.require(
        ctx.nav.core && ctx.user.role.breaks_glass(),
        "緊急閲覧（中核病院の医師・看護師・薬剤師のみ）",
    )
}

pub async fn emergency_form(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_break_glass(&ctx)?;
    let doctor = ctx.user.role == Role::Doctor;
    render(&EmergencyPage {
        nav: Some(ctx.nav),
        minutes: p.settings.emergency_minutes,
        message: String::new(),
        rid: String::new(),
        reason: String::new(),
        refusals: None,
        doctor,
        others: true,
    })
}

/// Starts an emergency access. When another facility holds the patient's refusal (非公開), the
/// first post shows a second step instead: the access may start without the refused records, or,
/// for a doctor who states that the patient's life is at stake, with them (`open=life` and the
/// `life` box ticked).
pub async fn emergency(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_break_glass(&ctx)?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let rid = field(&f, "regional_id").to_uppercase();
    let reason = field(&f, "reason").to_string();
    let minutes = p.settings.emergency_minutes;
    let doctor = ctx.user.role == Role::Doctor;
    let page = |m: &str, refusals: Option<Vec<String>>, others: bool| {
        render(&EmergencyPage {
            nav: Some(ctx.nav.clone()),
            minutes,
            message: m.into(),
            rid: rid.clone(),
            reason: reason.clone(),
            refusals,
            doctor,
            others,
        })
    };
    if reason.chars().count() < 4 || reason.chars().count() > 400 {
        return page(
            "緊急閲覧の理由を4文字以上400文字以内で入力してください。",
            None,
            true,
        );
    }
    let (r, fac) = (rid.clone(), ctx.user.facility.clone());
    let (entries, refused) = p
        .read(move |c| Ok((index::by_regional(c, &r)?, consent::refusals(c, &r, &fac)?)))
        .await?;
    if entries.is_empty() {
        return page(
            "その地域患者IDの患者は見つかりません。地域患者IDを確かめてください。",
            None,
            true,
        );
    }
    let fac = ctx.user.facility.clone();
    let others = entries
        .iter()
        .any(|e| e.facility != fac && !refused.contains(&e.facility));
    let life = match field(&f, "open") {
        _ if refused.is_empty() => false,
        "life" if !doctor => return Err(Error::Forbidden("非公開の記録の緊急閲覧は、医師だけが行えます。".into())),
        "life" if field(&f, "life") != "yes" => {
            return page("非公開の記録を開くには、患者の生命に危険があることを確認する欄にチェックを入れてください。", Some(names(&p, &refused).await), others)
        }
        "life" => true,
        "without" if others => false,
        "without" => return page("この患者の他施設の記録は、すべて非公開です。", Some(names(&p, &refused).await), others),
        _ => return page("", Some(names(&p, &refused).await), others),
    };
    let fname = p.facility_name(&ctx.user.facility).await;
    let (login, t, at) = (ctx.user.login.clone(), now(), now_ms());
    let mut e = ctx.event("emergency-start", &rid);
    e.reason = reason.clone();
    e.owners = entries
        .iter()
        .map(|x| x.facility.clone())
        .filter(|x| x != &fac && (life || !refused.contains(x)))
        .collect();
    e.owners.sort();
    e.owners.dedup();
    e.detail = format!("DCM 110127 Emergency Override Started; purpose ETREAT; {minutes} minutes");
    if life {
        e.detail.push_str(&format!(
            "; life at stake: the patient's refusal (非公開) at {} overridden after confirmation",
            refused.join(",")
        ));
    } else if !refused.is_empty() {
        e.detail.push_str(&format!(
            "; the patient's refusal (非公開) at {} honoured",
            refused.join(",")
        ));
    }
    let r = rid.clone();
    let mut names = std::collections::HashMap::new();
    for code in &refused {
        names.insert(code.clone(), p.facility_name(code).await);
    }
    let (ends, told) = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = consent::start_emergency(
                &tx, &fac, &fname, &login, &r, &reason, minutes, life, &names, t,
            )?;
            audit::append(&tx, at, &e)?;
            tx.commit()?;
            Ok(out)
        })
        .await?;
    if life {
        tracing::warn!(login = %ctx.user.login, regional_id = %rid, until = ends, notified = told.len(), refusals = refused.len(), "emergency access started over the patient's refusal: life at stake");
    } else {
        tracing::warn!(login = %ctx.user.login, regional_id = %rid, until = ends, notified = told.len(), "emergency access started");
    }
    Ok(Redirect::to(&format!("/patient/{rid}")).into_response())
}

async fn names(p: &Portal, codes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for c in codes {
        out.push(p.facility_name(c).await);
    }
    out
}

/// Ends the request's own emergency access to a patient early (DCM 110138).
pub async fn emergency_end(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let rid = field(&f, "regional_id").to_uppercase();
    let (fac, login, t, at) = (
        ctx.user.facility.clone(),
        ctx.user.login.clone(),
        now(),
        now_ms(),
    );
    let mut e = ctx.event("emergency-stop", &rid);
    e.detail = "DCM 110138 Emergency Override Stopped".into();
    let r = rid.clone();
    let ended = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ended = consent::end_emergency(&tx, &fac, &login, &r, t)?;
            if ended {
                audit::append(&tx, at, &e)?;
            }
            tx.commit()?;
            Ok(ended)
        })
        .await?;
    if !ended {
        return Err(Error::BadRequest("終了する緊急閲覧はありません。".into()));
    }
    tracing::info!(login = %ctx.user.login, regional_id = %rid, "emergency access ended");
    Ok(Redirect::to("/?m=emergency-ended").into_response())
}

pub struct Msg {
    pub at: String,
    pub subject: String,
    pub body: String,
    pub read: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    nav: Option<Nav>,
    messages: Vec<Msg>,
}

pub async fn inbox(State(p): State<Arc<Portal>>, t: Term, headers: HeaderMap) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(
        ctx.user.role.in_facility() || ctx.user.role == Role::Office,
        "受信箱",
    )?;
    let (f, t) = (ctx.user.facility.clone(), now());
    let list = p.read(move |c| Ok(consent::inbox(c, &f, 200)?)).await?;
    let f = ctx.user.facility.clone();
    p.write(move |c| Ok(consent::mark_read(c, &f, t)?)).await?;
    let messages = list
        .into_iter()
        .map(|m| Msg {
            at: jst(m.at),
            subject: m.subject,
            body: m.body,
            read: m.read,
        })
        .collect();
    render(&InboxPage {
        nav: Some(ctx.nav),
        messages,
    })
}

/// The history views: which slice, its label, and who may see it.
fn view_of(code: &str, ctx: &Ctx) -> Result<(View, &'static str)> {
    let office = ctx.user.role == Role::Office;
    let admin = matches!(ctx.user.role, Role::FacilityAdmin) || office;
    match code {
        "mine" | "" if ctx.user.role.in_facility() && !admin => Ok((View::Mine, "自分の閲覧履歴")),
        "staff" | "" if admin && !office => Ok((View::Staff, "自施設職員の閲覧履歴")),
        "ours" if admin && !office => Ok((View::OurRecords, "自施設の記録を閲覧した履歴")),
        "published" if admin && !office => Ok((View::Published, "自施設の公開履歴")),
        "all" | "" if office => Ok((View::All, "全操作の記録")),
        _ => Err(Error::Forbidden(
            "この履歴は、この利用者の権限では閲覧できません。".into(),
        )),
    }
}

/// `YYYY-MM` to its first and next month's first millisecond, Japan time.
fn month_range(m: &str) -> Option<(i64, i64)> {
    let (y, mo) = m.split_once('-')?;
    let (y, mo): (i64, u32) = (y.parse().ok()?, mo.parse().ok()?);
    if !(1..=12).contains(&mo) || !(2000..=2200).contains(&y) {
        return None;
    }
    let start = shared::time::days_from_civil(y, mo, 1);
    let end = if mo == 12 {
        shared::time::days_from_civil(y + 1, 1, 1)
    } else {
        shared::time::days_from_civil(y, mo + 1, 1)
    };
    Some((
        (start * 86_400 - 9 * 3600) * 1000,
        (end * 86_400 - 9 * 3600) * 1000,
    ))
}

fn this_month() -> String {
    let (y, m, _) = shared::time::civil_from_days((now() + 9 * 3600).div_euclid(86_400));
    format!("{y:04}-{m:02}")
}

pub struct HistoryRow {
    pub at: String,
    pub login: String,
    pub facility: String,
    pub terminal: String,
    pub action: String,
    pub patient: String,
    pub owners: String,
    pub detail: String,
    pub reason: String,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    nav: Option<Nav>,
    views: Vec<(&'static str, &'static str, bool)>,
    view: String,
    label: &'static str,
    month: String,
    patient: String,
    rows: Vec<HistoryRow>,
    csv_month: String,
    csv_patient: String,
}

const HISTORY_LIMIT: i64 = 100_000;

async fn history_rows(
    p: &Arc<Portal>,
    ctx: &Ctx,
    q: &Params,
) -> Result<(View, &'static str, String, String, Vec<audit::Row>)> {
    let (view, label) = view_of(field(q, "view"), ctx)?;
    let month = match field(q, "month") {
        "" => this_month(),
        m => m.to_string(),
    };
    let patient = field(q, "patient").to_uppercase();
    let (from, to) = if !patient.is_empty() && field(q, "month").is_empty() {
        (0, i64::MAX)
    } else {
        month_range(&month)
            .ok_or_else(|| Error::BadRequest("月は 2026-11 の形で指定してください。".into()))?
    };
    let key = if view == View::Mine {
        ctx.user.login.clone()
    } else {
        ctx.user.facility.clone()
    };
    let (v, f, pt) = (view.clone(), key, patient.clone());
    let rows = p
        .read(move |c| {
            Ok(audit::query(
                c,
                &v,
                &f,
                from,
                to,
                (!pt.is_empty()).then_some(pt.as_str()),
                HISTORY_LIMIT,
            )?)
        })
        .await?;
    Ok((view, label, month, patient, rows))
}

fn action_label(a: &str) -> &str {
    match a {
        "login" => "ログイン",
        "logout" => "ログアウト",
        "search" => "検索",
        "view" => "閲覧",
        "download" => "ダウンロード",
        "consent" => "同意・公開",
        "link" => "名寄せ",
        "unlink" => "名寄せ解除",
        "link-reject" => "名寄せ却下",
        "emergency-start" => "緊急閲覧",
        "emergency-stop" => "緊急閲覧終了",
        "password-change" => "パスワード変更",
        "user-add" => "利用者登録",
        "user-disable" => "利用者無効化",
        "user-enable" => "利用者有効化",
        "user-reset" => "パスワード再設定",
        x => x,
    }
}

pub async fn history(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let (view, label, month, patient, rows) = history_rows(&p, &ctx, &q).await?;
    let code = field(&q, "view").to_string();
    let office = ctx.user.role == Role::Office;
    let mut views = vec![];
    if office {
        views.push(("all", "全操作の記録", true));
    } else if ctx.user.role == Role::FacilityAdmin {
        views.push(("staff", "自施設職員の閲覧履歴", view == View::Staff));
        views.push((
            "ours",
            "自施設の記録を閲覧した履歴",
            view == View::OurRecords,
        ));
        views.push(("published", "自施設の公開履歴", view == View::Published));
    } else {
        views.push(("mine", "自分の閲覧履歴", true));
    }
    let mut shown = Vec::new();
    for r in rows.iter().rev().take(1000) {
        shown.push(HistoryRow {
            at: jst_ms(r.at),
            login: r.event.login.clone(),
            facility: p.facility_name(&r.event.facility).await,
            terminal: r.event.terminal.clone(),
            action: action_label(&r.event.action).to_string(),
            patient: r.event.patient.clone(),
            owners: r.event.owners.join(", "),
            detail: r.event.detail.clone(),
            reason: r.event.reason.clone(),
            outcome: r.event.outcome.clone(),
        });
    }
    let csv_month = format!(
        "/history.csv?view={}&month={}",
        urlencode(&code),
        urlencode(&month)
    );
    let csv_patient = if patient.is_empty() {
        String::new()
    } else {
        format!(
            "/history.csv?view={}&patient={}",
            urlencode(&code),
            urlencode(&patient)
        )
    };
    render(&HistoryPage {
        nav: Some(ctx.nav),
        views,
        view: code,
        label,
        month,
        patient,
        rows: shown,
        csv_month,
        csv_patient,
    })
}

fn csv_cell(s: &str) -> String {
    // Quote every cell; a leading = + - @ is neutralised so a spreadsheet never runs it.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub const CSV_HEADER: &str =
    "日時,利用者ID,利用者の施設,端末,操作,地域患者ID,記録の施設,詳細,理由,結果";

pub async fn history_csv(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let (view, _, month, patient, rows) = history_rows(&p, &ctx, &q).await?;
    // UTF-8 with a byte-order mark, so Excel on a clinic PC opens it in the right encoding.
    let mut out = String::from("\u{feff}");
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in &rows {
        let e = &r.event;
        let cells = [
            jst_ms(r.at),
            e.login.clone(),
            e.facility.clone(),
            e.terminal.clone(),
            action_label(&e.action).to_string(),
            e.patient.clone(),
            e.owners.join(" "),
            e.detail.clone(),
            e.reason.clone(),
            e.outcome.clone(),
        ];
        out.push_str(
            &cells
                .iter()
                .map(|c| csv_cell(c))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    // The name is built only of what was checked: the month's digits, or a regional ID's letters,
    // digits and hyphens; anything else would rewrite the header.
    let safe = |s: &str| {
        !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name = if patient.is_empty() {
        format!("access-{month}.csv")
    } else if safe(&patient) {
        format!("access-{patient}.csv")
    } else {
        "access-patient.csv".to_string()
    };
    let mut e = ctx.event("download", &patient);
    e.detail = format!(
        "history csv view={view:?} month={month} rows={}",
        rows.len()
    );
    p.audit(e).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response())
}

pub struct UserRow {
    pub login: String,
    pub name: String,
    pub facility: String,
    pub role: &'static str,
    pub state: String,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Option<Nav>,
    office: bool,
    users: Vec<UserRow>,
    roles: Vec<(&'static str, &'static str)>,
    message: String,
    issued: Option<(String, String)>,
}

fn may_manage(ctx: &Ctx) -> Result<()> {
    ctx.require(
        matches!(ctx.user.role, Role::Office | Role::FacilityAdmin),
        "利用者の管理",
    )
}

/// Roles an administrator may give: the office any; a facility administrator its own staff.
fn grantable(ctx: &Ctx) -> Vec<Role> {
    if ctx.user.role == Role::Office {
        Role::ALL.to_vec()
    } else {
        vec![Role::Doctor, Role::Nurse, Role::Pharmacist, Role::Clerk]
    }
}

async fn users_page(
    p: &Arc<Portal>,
    ctx: &Ctx,
    message: String,
    issued: Option<(String, String)>,
) -> Result<Response> {
    let office = ctx.user.role == Role::Office;
    let f = (!office).then(|| ctx.user.facility.clone());
    let list = p.read(move |c| Ok(account::list(c, f.as_deref())?)).await?;
    let t = now();
    let mut users = Vec::new();
    for u in list {
        let state = if u.disabled_at.is_some() {
            "無効".to_string()
        } else if u.locked_until.is_some_and(|x| x > t) {
            "ロック中".to_string()
        } else if u.must_change {
            "初回パスワード変更待ち".to_string()
        } else {
            format!("有効（パスワード期限 {}）", jst(u.password_expires_at()))
        };
        users.push(UserRow {
            facility: p.facility_name(&u.facility).await,
            role: u.role.label(),
            disabled: u.disabled_at.is_some(),
            login: u.login,
            name: u.name,
            state,
        });
    }
    let roles = grantable(ctx)
        .into_iter()
        .map(|r| (r.code(), r.label()))
        .collect();
    render(&UsersPage {
        nav: Some(ctx.nav.clone()),
        office,
        users,
        roles,
        message,
        issued,
    })
}

pub async fn users(State(p): State<Arc<Portal>>, t: Term, headers: HeaderMap) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    users_page(&p, &ctx, String::new(), None).await
}

pub async fn user_add(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let role = Role::parse(field(&f, "role")).map_err(Error::BadRequest)?;
    if !grantable(&ctx).contains(&role) {
        return Err(Error::Forbidden(format!(
            "{}の利用者は、この権限では登録できません。",
            role.label()
        )));
    }
    // A facility administrator always adds to its own facility, whatever the form says.
    let facility = if ctx.user.role == Role::Office {
        field(&f, "facility").to_string()
    } else {
        ctx.user.facility.clone()
    };
    let (login, name) = (
        field(&f, "login").to_lowercase(),
        field(&f, "name").to_string(),
    );
    let temp = account::temporary_password();
    let t2 = temp.clone();
    let verifier = p.hash(move || account::hash_password(&t2)).await?;
    let (by, t, at) = (ctx.user.login.clone(), now(), now_ms());
    let mut e = ctx.event("user-add", "");
    e.detail = format!("login={login} facility={facility} role={}", role.code());
    let (l, fa) = (login.clone(), facility.clone());
    let result = p
        .write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let r = account::add(&tx, &l, &name, &fa, role, &verifier, &by, t)?;
            if r.is_ok() {
                audit::append(&tx, at, &e)?;
            }
            tx.commit()?;
            Ok(r)
        })
        .await?;
    match result {
        Ok(()) => users_page(&p, &ctx, format!("利用者 {login} を登録しました。仮パスワードを本人に渡してください（初回ログイン時に変更が必要です）。"), Some((login, temp))).await,
        Err(err) => users_page(&p, &ctx, format!("登録できません: {err}"), None).await,
    }
}

pub async fn user_action(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((login, action)): Path<(String, String)>,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    may_manage(&ctx)?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let l = login.clone();
    let target = p
        .read(move |c| Ok(account::get(c, &l)?))
        .await?
        .ok_or_else(|| Error::NotFound(format!("利用者 {login} はいません。")))?;
    if ctx.user.role != Role::Office
        && (target.facility != ctx.user.facility || !grantable(&ctx).contains(&target.role))
    {
        return Err(Error::Forbidden(
            "他施設の利用者や管理者は、この権限では変更できません。".into(),
        ));
    }
    if target.login == ctx.user.login {
        return Err(Error::BadRequest(
            "自分自身のIDはここでは変更できません。".into(),
        ));
    }
    let (t, at) = (now(), now_ms());
    let mut e = ctx.event("", "");
    e.detail = format!("login={login}");
    let temp = account::temporary_password();
    let t2 = temp.clone();
    let verifier = p.hash(move || account::hash_password(&t2)).await?;
    let (l, act) = (login.clone(), action.clone());
    p.write(move |c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match act.as_str() {
            "disable" => {
                account::disable(&tx, &l, t)?.map_err(anyhow::Error::from)?;
                e.action = "user-disable".into();
            }
            "enable" => {
                account::enable(&tx, &l)?.map_err(anyhow::Error::from)?;
                e.action = "user-enable".into();
            }
            "reset" => {
                account::reset(&tx, &l, &verifier, t)?.map_err(anyhow::Error::from)?;
                e.action = "user-reset".into();
            }
            other => anyhow::bail!("unknown user action {other}"),
        }
        audit::append(&tx, at, &e)?;
        tx.commit()?;
        Ok(())
    })
    .await?;
    p.sessions.end_all(&login);
    match action.as_str() {
        "reset" => {
            users_page(
                &p,
                &ctx,
                format!("{login} のパスワードを再設定しました。"),
                Some((login, temp)),
            )
            .await
        }
        "disable" => {
            users_page(
                &p,
                &ctx,
                format!("{login} を無効にしました。ログイン中の画面も終了しました。"),
                None,
            )
            .await
        }
        _ => users_page(&p, &ctx, format!("{login} を有効にしました。"), None).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_and_csv_cells() {
        let (a, b) = super::month_range("2026-11").unwrap();
        assert_eq!(super::jst_ms(a), "2026-11-01 00:00:00");
        assert_eq!(super::jst_ms(b - 1), "2026-11-30 23:59:59");
        assert!(super::month_range("2026-13").is_none());
        assert_eq!(
            super::csv_cell("=HYPERLINK(\"x\")"),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(super::csv_cell("a,b"), "\"a,b\"");
    }
}
