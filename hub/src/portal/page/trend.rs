//! The trend of one lab test across every visible facility, drawn as an SVG chart with its table.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::helpers::iso;
use super::patient::{header, owners, visible};
use crate::portal::{authed, field, hl7_time, render, Error, Nav, Params, Portal, Result, Term};
use crate::record;

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
    header: view::patient::Header,
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
    let header = header(&p, &ctx, &rid, &seen).await?;
    render(&TrendPage {
        nav: Some(ctx.nav),
        header,
        rid,
        name,
        unit,
        series,
        table,
        y_labels,
        x_labels,
    })
}
