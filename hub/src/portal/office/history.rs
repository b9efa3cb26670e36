//! The access history: each role's views of the audit log by month or patient, and their CSV
//! downloads.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use crate::account::Role;
use crate::audit::{self, View};
use crate::now;
use crate::portal::page::urlencode;
use crate::portal::{authed, field, jst_ms, render, Ctx, Error, Nav, Params, Portal, Result, Term};

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
