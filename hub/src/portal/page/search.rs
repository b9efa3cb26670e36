//! Patient search in the regional index, within what the person's facility (or the office) may
//! find, audited with its conditions and the number of hits.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::index::{self, Entry};
use crate::portal::{authed, field, render, sex_label, Nav, Params, Portal, Result, Term};
use crate::{account, now};

/// One search result as shown.
pub struct Hit {
    pub entry: Entry,
    pub facility_name: String,
    pub basis: &'static str,
    pub birth: String,
    pub age: String,
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
        regional_id: view::fmt::ascii_width(field(&q, "regional_id"))
            .trim()
            .to_uppercase(),
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
    if birth.chars().count() > 20 {
        page.message =
            "生年月日は20文字以内で入力してください（例: 1976-11-08、S51.11.08）。".into();
        return render(&page);
    }
    if !birth.is_empty() {
        let (y, m, d) = view::fmt::today_jst();
        let today = format!("{y:04}{m:02}{d:02}");
        match view::fmt::parse_day(birth) {
            Some(d) if d > today => {
                page.message =
                    format!("生年月日「{birth}」は今日より後の日付です。入力を確かめてください。");
                return render(&page);
            }
            Some(d) => query.birth_date = d,
            None => {
                page.message = format!(
                    "生年月日「{birth}」を日付として読めませんでした。1976-11-08、1976/11/8、S51.11.08、昭和51年11月8日 のように入力してください。"
                );
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
        // The form opened from the menu says nothing; an empty search says what to enter.
        if q.contains_key("patient_id")
            || q.contains_key("name")
            || q.contains_key("birth_date")
            || q.contains_key("regional_id")
        {
            page.message =
                "患者ID、地域患者ID、氏名、生年月日のいずれかを入力して検索してください。".into();
        }
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
    let today = view::fmt::today_jst();
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
            birth: view::fmt::birth(&entry.birth_date),
            age: view::fmt::age(&entry.birth_date, today).unwrap_or_default(),
            sex: sex_label(&entry.sex),
            entry,
        });
    }
    page.searched = true;
    page.more = more;
    render(&page)
}
