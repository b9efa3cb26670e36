//! Recording a patient's consent and publication for an index entry, by the office or the
//! administrator of the facility that holds the record.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use crate::account::Role;
use crate::audit;
use crate::consent::{self, Consent, Scope, State as Publication};
use crate::index::{self, Entry};
use crate::now;
use crate::portal::{
    authed, field, hl7_time, jst, now_ms, render, sex_label, Ctx, Error, Nav, Params, Portal,
    Result, Term,
};

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
