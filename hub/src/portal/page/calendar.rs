//! A patient's calendar: a month or a week of every visible facility's events.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::helpers::{iso, parse_date};
use super::patient::{header_with, owners, visible};
use crate::portal::{authed, field, render, Error, Nav, Params, Portal, Result, Term};
use crate::{now, record};

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
    header: view::patient::Header,
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
    // The header's allergens are read with the events: one read a copy.
    let mut allergies = Vec::with_capacity(seen.len());
    for (entry, basis) in &seen {
        if !(basis.clinical() && ctx.user.role.clinical()) {
            allergies.push(vec![]);
            continue;
        }
        let name = p.facility_name(&entry.facility).await;
        let (pid, from, to) = (entry.patient_id.clone(), ymd(first), ymd(last));
        let (events, found) = p
            .read_copy(&entry.facility, move |c| {
                Ok((
                    record::events(c, &pid, &from, &to)?,
                    record::allergens(c, &pid)?,
                ))
            })
            .await?;
        allergies.push(found);
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
    let header = header_with(&p, &ctx, &rid, &seen, allergies).await?;
    render(&CalendarPage {
        nav: Some(ctx.nav),
        header,
        rid,
        title,
        week,
        weeks,
        prev,
        next,
        date: iso(day),
    })
}
