//! The operators' fleet view: every appliance with its liveness, version, sync, quarantine,
//! posture and certificate; filter and search; a detail page with history and commands.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::{authed, field, jst, render, Error, Nav, Params, Portal, Result, Term};
use crate::account::Role;
use crate::fleet::{Appliance, Fleet};
use crate::now;

fn fleet_of(p: &Portal) -> Result<Arc<Fleet>> {
    p.fleet
        .clone()
        .ok_or_else(|| Error::NotFound("フリート表示は構成されていません。".into()))
}

pub struct Line {
    pub facility: String,
    pub facility_name: String,
    pub appliance: String,
    pub state: &'static str,
    pub state_label: String,
    pub since: String,
    pub why: String,
    pub version: String,
    pub sync: String,
    pub lag: String,
    pub backlog: String,
    pub quarantine: String,
    pub posture: String,
    pub cert: String,
    pub alerts: Vec<String>,
}

fn days(t: i64) -> String {
    let d = (t - now()) / 86_400;
    format!("{}（残り{}日）", jst(t).get(..10).unwrap_or(""), d)
}

fn line(a: &Appliance, name: String, alerts: Vec<String>) -> Line {
    let (state, label) = match a.online {
        Some(true) => ("online", "オンライン".to_string()),
        Some(false) => ("offline", "オフライン".to_string()),
        None => ("unknown", "不明".to_string()),
    };
    let s = a.status.as_ref();
    Line {
        facility: a.facility.clone(),
        facility_name: name,
        appliance: a.appliance.clone(),
        state,
        state_label: label,
        since: if a.since > 0 {
            jst(a.since)
        } else {
            "-".into()
        },
        why: a.why.clone(),
        version: s.map(|s| s.version.clone()).unwrap_or_else(|| "-".into()),
        sync: s
            .map(|s| format!("{} / {}", s.sync.acked_seq, s.sync.head_seq))
            .unwrap_or_else(|| "-".into()),
        lag: a.lag().map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
        backlog: s
            .map(|s| format!("{} ({} B)", s.sync.backlog, s.sync.backlog_bytes))
            .unwrap_or_else(|| "-".into()),
        quarantine: s
            .map(|s| s.quarantine.to_string())
            .unwrap_or_else(|| "-".into()),
        posture: a.posture().to_string(),
        cert: s
            .map(|s| days(s.cert_not_after))
            .unwrap_or_else(|| "-".into()),
        alerts,
    }
}

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    nav: Option<Nav>,
    lines: Vec<Line>,
    q: String,
    state: String,
    total: usize,
    online: usize,
    offline: usize,
    alerting: usize,
    broker: String,
    broker_ok: bool,
}

pub async fn list(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Query(f): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(
        matches!(ctx.user.role, Role::Office | Role::Operator),
        "フリート表示",
    )?;
    let fleet = fleet_of(&p)?;
    let (q, state) = (
        field(&f, "q").trim().to_string(),
        field(&f, "state").to_string(),
    );
    let firing = fleet.firing();
    let all = fleet.list();
    let mut lines = Vec::new();
    for a in &all {
        let name = p.facility_name(&a.facility).await;
        let alerts: Vec<String> = firing
            .iter()
            .filter(|x| x.0 == a.facility && x.1 == a.appliance)
            .map(|x| x.2.to_string())
            .collect();
        let l = line(a, name, alerts);
        let hit = q.is_empty()
            || [&l.facility, &l.facility_name, &l.appliance, &l.version]
                .iter()
                .any(|s| s.contains(&q));
        let fits = match state.as_str() {
            "online" | "offline" | "unknown" => l.state == state,
            "alert" => !l.alerts.is_empty(),
            "non-compliant" => l.posture != "compliant",
            _ => true,
        };
        if hit && fits {
            lines.push(l);
        }
    }
    // The ones that need someone first: alerts, then offline, then the rest.
    lines.sort_by_key(|l| {
        (
            l.alerts.is_empty(),
            l.state == "online",
            l.facility.clone(),
            l.appliance.clone(),
        )
    });
    let b = fleet.broker();
    let broker = if !b.configured {
        "ブローカー未設定（--broker）".to_string()
    } else if b.connected {
        format!("ブローカー接続中（{} から）", jst(b.since))
    } else {
        format!(
            "ブローカーに接続できません（{} から）: {} — 各アプライアンスの生存は不明です",
            jst(b.since),
            b.why
        )
    };
    render(&FleetPage {
        nav: Some(ctx.nav),
        total: all.len(),
        online: all.iter().filter(|a| a.online == Some(true)).count(),
        offline: all.iter().filter(|a| a.online == Some(false)).count(),
        alerting: firing
            .iter()
            .map(|x| (&x.0, &x.1))
            .collect::<std::collections::HashSet<_>>()
            .len(),
        lines,
        q,
        state,
        broker_ok: b.connected,
        broker,
    })
}

pub struct Hist {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

pub struct CheckLine {
    pub check: String,
    pub state: String,
    pub summary: String,
    pub remediation: String,
}

#[derive(Template)]
#[template(path = "fleet_detail.html")]
struct DetailPage {
    nav: Option<Nav>,
    l: Line,
    keep_alive: u64,
    started: String,
    status_at: String,
    last_error: String,
    checks: Vec<CheckLine>,
    terminals: String,
    history: Vec<Hist>,
    csrf: String,
    message: String,
    online: bool,
}

pub async fn detail(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((facility, appliance)): Path<(String, String)>,
    Query(f): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(
        matches!(ctx.user.role, Role::Office | Role::Operator),
        "フリート表示",
    )?;
    let fleet = fleet_of(&p)?;
    let a = fleet
        .get(&facility, &appliance)
        .ok_or_else(|| Error::NotFound("そのアプライアンスはまだ報告していません。".into()))?;
    let alerts = fleet
        .firing()
        .into_iter()
        .filter(|x| x.0 == facility && x.1 == appliance)
        .map(|x| x.2.to_string())
        .collect();
    let name = p.facility_name(&facility).await;
    let (fl, fa) = (facility.clone(), appliance.clone());
    let f2 = fleet.clone();
    let history = tokio::task::spawn_blocking(move || f2.history(&fl, &fa, 200))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))??;
    let s = a.status.clone();
    render(&DetailPage {
        nav: Some(ctx.nav),
        keep_alive: a.keep_alive,
        started: s.as_ref().map(|s| jst(s.started_at)).unwrap_or_else(|| "-".into()),
        status_at: if a.status_received > 0 { jst(a.status_received) } else { "-".into() },
        last_error: s.as_ref().and_then(|s| s.sync.last_error.clone()).unwrap_or_default(),
        checks: s.as_ref().map(|s| s.posture.checks.iter().map(|c| CheckLine { check: c.check.clone(), state: c.state.clone(), summary: c.summary.clone(), remediation: c.remediation.clone() }).collect()).unwrap_or_default(),
        terminals: s.as_ref().map(|s| { let t = &s.posture.terminals; format!("{} 台（適合 {}、猶予中 {}、不適合 {}、不明 {}）", t.total, t.compliant, t.in_grace, t.non_compliant, t.unknown) }).unwrap_or_else(|| "-".into()),
        history: history.into_iter().map(|r| Hist { at: jst(r.at), kind: r.kind, detail: r.detail }).collect(),
        csrf: ctx.csrf.clone(),
        message: match (field(&f, "m"), field(&f, "id")) {
            ("sent", id) if id.len() <= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => format!("コマンド {id} を送りました。応答は履歴に表示されます。"),
            ("failed", _) => "コマンドを送れませんでした。理由は監査ログに記録されています。ブローカーへの接続を確認してから、もう一度送ってください。".into(),
            _ => String::new(),
        },
        online: a.online == Some(true),
        l: line(&a, name, alerts),
    })
}

pub async fn command(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((facility, appliance)): Path<(String, String)>,
    Form(f): Form<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    ctx.require(
        matches!(ctx.user.role, Role::Office | Role::Operator),
        "フリートへのコマンド",
    )?;
    ctx.check_csrf(f.get("csrf").map(String::as_str))?;
    let fleet = fleet_of(&p)?;
    let id = format!("c-{}", &provisioning::token::generate()[..10]);
    let cmd = match field(&f, "command") {
        "check" => shared::fleet::Command::Check { id: id.clone() },
        "renew" => shared::fleet::Command::Renew { id: id.clone() },
        "sync-from" => {
            let seq = field(&f, "seq").trim().parse::<u64>().map_err(|_| {
                Error::BadRequest("送り直す起点のセグメント番号を数字で入れてください。".into())
            })?;
            shared::fleet::Command::SyncFrom {
                id: id.clone(),
                seq,
            }
        }
        _ => return Err(Error::BadRequest("コマンドを選んでください。".into())),
    };
    let mut ev = ctx.event("fleet-command", "");
    ev.detail = format!("{facility}/{appliance} {} {id}", cmd.name());
    let sent = fleet.command(&facility, &appliance, &cmd).await;
    if let Err(why) = &sent {
        ev.outcome = "failed".into();
        ev.detail = format!("{} ({why})", ev.detail);
    }
    p.audit(ev).await?;
    let m = match sent {
        Ok(()) => format!("m=sent&id={id}"),
        Err(_) => "m=failed".to_string(),
    };
    Ok(Redirect::to(&format!(
        "/fleet/{}/{}?{m}",
        super::page::urlencode(&facility),
        super::page::urlencode(&appliance)
    ))
    .into_response())
}
