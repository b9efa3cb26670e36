//! Emergency access (break-glass) at a core hospital: starting it, with the second step when the
//! patient's refusal is on record elsewhere, and ending it early.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use crate::account::Role;
use crate::portal::{authed, field, now_ms, render, Ctx, Error, Nav, Params, Portal, Result, Term};
use crate::{audit, consent, index, now};

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
    Ok(crate::portal::session::redirect_with_notice(
        "/",
        "emergency-ended",
    ))
}
