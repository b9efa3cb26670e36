//! The trend of one lab test across every visible facility, drawn as an SVG chart with its table.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::helpers::iso;
use super::patient::{header_with, owners, visible};
use crate::portal::{authed, field, hl7_time, render, Error, Nav, Params, Portal, Result, Term};
use crate::record;

pub struct Series {
    pub facility_name: String,
    pub color: &'static str,
    pub points: String,
    /// x, y, the tooltip, and the class that marks an out-of-range result (`dot high`).
    pub dots: Vec<(f64, f64, String, String)>,
}

/// One result in the table under the chart.
pub struct Row {
    pub at: String,
    pub facility: String,
    pub value: String,
    pub range: String,
    pub judgement: String,
    pub mark: Option<&'static str>,
}

/// The reference band, as drawn: its top and bottom in the view box and its text.
pub struct Band {
    pub top: f64,
    pub bottom: f64,
    pub text: String,
}

/// Axis bounds and a step of 1, 2, 2.5 or 5 times a power of ten that cover `lo..hi` in about
/// five ticks: 0.5..1.2 → 0.4..1.2 by 0.2, not 0.5, 0.7, 0.9.
pub fn nice_ticks(lo: f64, hi: f64) -> (f64, f64, f64) {
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let rough = (hi - lo) / 4.0;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * mag);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

/// A tick's label: as many decimals as the step needs, no more.
fn tick_label(v: f64, step: f64) -> String {
    let mut decimals = 0usize;
    while decimals < 6 {
        let scaled = step * 10f64.powi(decimals as i32);
        if (scaled.round() - scaled).abs() < 1e-6 {
            break;
        }
        decimals += 1;
    }
    format!("{v:.decimals$}")
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
    table: Vec<Row>,
    band: Option<Band>,
    scale_note: String,
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
    // The header's allergens are read with the points: one read a copy.
    let mut allergies = Vec::with_capacity(seen.len());
    for (entry, basis) in &seen {
        if !(basis.clinical() && ctx.user.role.clinical()) {
            allergies.push(vec![]);
            continue;
        }
        let (pid, c2) = (entry.patient_id.clone(), code.clone());
        let (pts, found) = p
            .read_copy(&entry.facility, move |c| {
                Ok((record::trend(c, &pid, &c2)?, record::allergens(c, &pid)?))
            })
            .await?;
        allergies.push(found);
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
    // One band and one unit only when every result shares them: facilities (or one facility over
    // the years) may use other ranges or units, and a band drawn under another's points would
    // mislead. Otherwise the page says so, and each row keeps its own range.
    let mut scales = all
        .iter()
        .flat_map(|(_, v)| v.iter())
        .map(|pt| (&pt.range, &pt.unit));
    let first = scales.next();
    let shared_scale = scales.all(|s| Some(s) == first);
    let band_range = all
        .iter()
        .flat_map(|(_, v)| v.first())
        .next()
        .filter(|_| shared_scale)
        .and_then(|pt| {
            let (l, h) = view::lab::reference(&pt.range)?;
            Some((l.map(|b| b.value), h.map(|b| b.value), pt.range.clone()))
        });
    let scale_note = if shared_scale {
        String::new()
    } else {
        "施設または時期により基準値・単位が異なるため、基準値の帯は表示していません。各結果の基準値は表をご覧ください。".to_string()
    };
    let (lo, hi) = values
        .iter()
        .chain(
            band_range
                .iter()
                .flat_map(|(l, h, _)| l.iter().chain(h.iter())),
        )
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let (lo, hi, step) = if values.is_empty() {
        (0.0, 1.0, 0.25)
    } else {
        nice_ticks(lo, hi)
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
    let band = band_range.map(|(l, h, text)| Band {
        top: y(h.unwrap_or(hi)),
        bottom: y(l.unwrap_or(lo)),
        text,
    });
    let mut series = Vec::new();
    let mut table = Vec::new();
    for (i, (fname, pts)) in all.iter().enumerate() {
        let coords: Vec<(f64, f64, String, String)> = pts
            .iter()
            .map(|pt| {
                let word = pt.judged.map(|j| j.word).unwrap_or("");
                (
                    x(&pt.at),
                    y(pt.value),
                    format!("{} {} {} {word}", hl7_time(&pt.at), pt.text, pt.unit),
                    match pt.judged {
                        Some(j) => format!("dot {}", j.class),
                        None => "dot".into(),
                    },
                )
            })
            .collect();
        series.push(Series {
            facility_name: fname.clone(),
            color: COLORS[i % COLORS.len()],
            points: coords
                .iter()
                .map(|(a, b, _, _)| format!("{a:.1},{b:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            dots: coords,
        });
        for pt in pts {
            table.push(Row {
                at: hl7_time(&pt.at),
                facility: fname.clone(),
                value: match pt.judged {
                    Some(j) => format!("{} {} {}", j.arrow, pt.text, pt.unit),
                    None => format!("{} {}", pt.text, pt.unit),
                },
                range: pt.range.clone(),
                judgement: pt.judged.map(|j| j.word).unwrap_or("").to_string(),
                mark: pt.judged.map(|j| j.class),
            });
        }
    }
    table.sort_by(|a, b| b.at.cmp(&a.at));
    let ticks = ((hi - lo) / step).round() as i64;
    let y_labels = (0..=ticks)
        .map(|i| lo + step * i as f64)
        .map(|v| (y(v), tick_label(v, step)))
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
    let header = header_with(&p, &ctx, &rid, &seen, allergies).await?;
    render(&TrendPage {
        nav: Some(ctx.nav),
        header,
        rid,
        name,
        unit,
        series,
        table,
        band,
        scale_note,
        y_labels,
        x_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_step_evenly_by_one_two_or_five() {
        let near = |(a, b, c): (f64, f64, f64), (x, y, z): (f64, f64, f64)| {
            (a - x).abs() < 1e-9 && (b - y).abs() < 1e-9 && (c - z).abs() < 1e-9
        };
        let (lo, hi, step) = nice_ticks(0.5, 1.2);
        assert!(near((lo, hi, step), (0.4, 1.2, 0.2)), "{lo} {hi} {step}");
        let labels: Vec<String> = (0..=((hi - lo) / step).round() as i64)
            .map(|i| tick_label(lo + step * i as f64, step))
            .collect();
        assert_eq!(labels, ["0.4", "0.6", "0.8", "1.0", "1.2"]);
        assert!(near(nice_ticks(8.1, 42.9), (0.0, 50.0, 10.0)));
        assert!(near(nice_ticks(3.3, 8.6), (2.0, 10.0, 2.0)));
        assert!(near(nice_ticks(5.0, 5.0), (4.0, 6.0, 0.5)));
        assert_eq!(tick_label(97.5, 2.5), "97.5");
        assert_eq!(tick_label(1200.0, 500.0), "1200");
    }
}
