//! Patient linking (名寄せ) by the office: the proposals, and confirming, rejecting, linking by
//! hand or unlinking entries.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use crate::account::Role;
use crate::audit;
use crate::index::{self, Entry};
use crate::now;
use crate::portal::page::urlencode;
use crate::portal::{
    authed, field, hl7_time, now_ms, render, sex_label, Error, Nav, Params, Portal, Result, Term,
};

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
