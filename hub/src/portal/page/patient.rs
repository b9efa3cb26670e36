//! The patient page with its tabs, every visible facility's records together, and the document
//! download; also the consent check (`visible`) every patient page goes through.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::helpers::urlencode;
use crate::consent::{self, Basis};
use crate::index::Entry;
use crate::portal::{
    authed, field, hl7_time, jst, render, sex_label, Ctx, Error, Nav, Params, Portal, Result, Term,
};
use crate::record::{self, Tab};
use crate::{account, now};

/// A facility holding records of the patient, as the page header lists it.
pub struct Holder {
    pub entry: Entry,
    pub facility_name: String,
    pub basis: &'static str,
    pub birth: String,
    pub sex: &'static str,
    pub basic: Vec<(&'static str, String)>,
    pub consent_link: bool,
}

pub struct Line {
    pub facility_name: String,
    pub at: String,
    pub cells: Vec<String>,
    pub trend: Option<String>,
    pub download: Option<String>,
    /// For a PDF: the same file shown in the browser.
    pub open: Option<String>,
    pub mark: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    nav: Option<Nav>,
    header: view::patient::Header,
    rid: String,
    holders: Vec<Holder>,
    tabs: Vec<(&'static str, &'static str, bool)>,
    tab_label: &'static str,
    /// The heading of the links column (推移, ファイル), empty for a tab without links.
    links_heading: &'static str,
    columns: &'static [&'static str],
    lines: Vec<Line>,
    notes: Vec<String>,
    emergency_until: Option<String>,
}

/// The patient header of a page (`view::patient::Header`): the viewer's own facility's entry
/// names the patient when there is one, every facility with records is listed with why it is
/// visible, and the allergies of those whose records the viewer may read are warned of.
/// `read` holds the allergens the page read with its rows (one list an entry of `seen`, in its
/// order), so each copy is opened once.
pub(super) async fn header_with(
    p: &Arc<Portal>,
    ctx: &Ctx,
    rid: &str,
    seen: &[(Entry, Basis)],
    read: Vec<Vec<String>>,
) -> Result<view::patient::Header> {
    let named = seen
        .iter()
        .find(|(e, _)| e.facility == ctx.user.facility)
        .or(seen.first())
        .map(|(e, _)| e.clone())
        .unwrap_or_default();
    let mut h = view::patient::Header::new(
        &named.name_kanji,
        &named.name_kana,
        &named.sex,
        &named.birth_date,
        view::fmt::today_jst(),
    );
    h.regional_id = rid.to_string();
    // Registrations that disagree are said, so a doctor checks it is one person.
    let differs = |f: &dyn Fn(&Entry) -> String| seen.windows(2).any(|w| f(&w[0].0) != f(&w[1].0));
    if differs(&|e| view::names::kanji_norm(&e.name_kanji)) {
        h.mismatch.push("氏名");
    }
    if differs(&|e| e.birth_date.clone()) {
        h.mismatch.push("生年月日");
    }
    if differs(&|e| e.sex.clone()) {
        h.mismatch.push("性別");
    }
    h.hidden_for_role = !ctx.user.role.clinical();
    let mut read = read.into_iter();
    for (entry, basis) in seen {
        h.holders.push(view::patient::Holder {
            facility: p.facility_name(&entry.facility).await,
            patient_id: entry.patient_id.clone(),
            basis: basis.label().to_string(),
        });
        let found = read.next().unwrap_or_default();
        if !basis.clinical() && ctx.user.role.clinical() {
            h.unchecked.push(p.facility_name(&entry.facility).await);
        }
        if basis.clinical() && ctx.user.role.clinical() {
            h.add_allergies(found);
        }
    }
    Ok(h)
}

/// The entries of a regional patient the request may see, refusing (and auditing the refusal)
/// when it may see none. A clerk or a non-clinical role sees only basic information.
pub(super) async fn visible(
    p: &Arc<Portal>,
    ctx: &Ctx,
    rid: &str,
    what: &str,
) -> Result<Vec<(Entry, Basis)>> {
    ctx.require(ctx.user.role.views_patients(), "患者記録の閲覧")?;
    let (r, f, t) = (rid.to_string(), ctx.user.facility.clone(), now());
    let login = ctx.user.role.breaks_glass().then(|| ctx.user.login.clone());
    let seen = p
        .read(move |c| {
            Ok(consent::visible(
                c,
                &r,
                consent::Viewer {
                    facility: &f,
                    emergency_login: login.as_deref(),
                },
                t,
            )?)
        })
        .await?;
    if seen.is_empty() {
        let mut e = ctx.event(
            if what == "download" {
                "download"
            } else {
                "view"
            },
            rid,
        );
        e.detail = what.into();
        e.outcome = "denied".into();
        p.audit(e).await?;
        tracing::warn!(login = %ctx.user.login, regional_id = %rid, "patient record refused: no consent");
        return Err(Error::Forbidden("この患者の記録を閲覧する権限がありません（同意による公開がないか、地域患者IDが違います）。".into()));
    }
    Ok(seen)
}

pub(super) fn owners(seen: &[(Entry, Basis)]) -> Vec<String> {
    let mut o: Vec<String> = seen.iter().map(|(e, _)| e.facility.clone()).collect();
    o.sort();
    o.dedup();
    o
}

const ROWS_PER_FACILITY: usize = 2_000;

pub async fn patient(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let tab = Tab::parse(field(&q, "tab")).unwrap_or(Tab::Visits);
    let seen = visible(&p, &ctx, &rid, "view").await?;
    let mut holders = Vec::new();
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    let mut emergency_until = None;
    let mut allergies = Vec::new();
    for (entry, basis) in &seen {
        let name = p.facility_name(&entry.facility).await;
        let clinical = basis.clinical() && ctx.user.role.clinical();
        let pid = entry.patient_id.clone();
        let (basic, rows, found) = p
            .read_copy(&entry.facility, move |c| {
                let basic = record::basic(c, &pid)?;
                let (rows, found) = if clinical {
                    (
                        record::tab(c, tab, &pid, ROWS_PER_FACILITY)?,
                        record::allergens(c, &pid)?,
                    )
                } else {
                    (vec![], vec![])
                };
                Ok((basic, rows, found))
            })
            .await?;
        allergies.push(found);
        if rows.len() == ROWS_PER_FACILITY {
            notes.push(format!(
                "{name}: 新しい順に{ROWS_PER_FACILITY}件まで表示しています。"
            ));
        }
        if !clinical {
            notes.push(format!(
                "{name}: 基本情報のみ閲覧できます（{}）。",
                if basis.clinical() {
                    "この職種では診療情報を閲覧できません"
                } else {
                    "公開範囲が基本情報"
                }
            ));
        }
        if let Basis::Emergency { until, refused } = basis {
            if *refused {
                notes.push(format!("{name}: 患者は非公開（閲覧拒否）の意思を示しています。生命の危険があるとして開いています。"));
            }
            emergency_until = Some(jst(*until));
        }
        for r in rows {
            lines.push(Line {
                facility_name: name.clone(),
                at: hl7_time(&r.at),
                trend: (tab == Tab::Lab && !r.code.is_empty())
                    .then(|| format!("/patient/{rid}/trend?code={}", urlencode(&r.code))),
                download: r
                    .file_id
                    .map(|f| format!("/patient/{rid}/document/{}/{f}", entry.id)),
                open: r
                    .file_id
                    .filter(|_| r.viewable)
                    .map(|f| format!("/patient/{rid}/document/{}/{f}?view=inline", entry.id)),
                mark: r.mark,
                cells: r.cells,
            });
        }
        holders.push(Holder {
            facility_name: name,
            basis: basis.label(),
            birth: view::fmt::birth(&entry.birth_date),
            sex: sex_label(&entry.sex),
            basic,
            consent_link: entry.facility == ctx.user.facility
                && ctx.user.role == account::Role::FacilityAdmin,
            entry: entry.clone(),
        });
    }
    // Every facility's rows together, newest first, each with its source.
    lines.sort_by(|a, b| b.at.cmp(&a.at));
    let mut e = ctx.event("view", &rid);
    e.owners = owners(&seen);
    e.detail = format!("tab={}", tab.code());
    if emergency_until.is_some() {
        e.reason = "emergency".into();
    }
    if seen
        .iter()
        .any(|(_, b)| matches!(b, Basis::Emergency { refused: true, .. }))
    {
        e.reason = "emergency; life at stake, over the patient's refusal (非公開)".into();
    }
    p.audit(e).await?;
    let header = header_with(&p, &ctx, &rid, &seen, allergies).await?;
    render(&PatientPage {
        nav: Some(ctx.nav),
        header,
        tabs: Tab::ALL
            .iter()
            .map(|t| (t.code(), t.label(), *t == tab))
            .collect(),
        tab_label: tab.label(),
        links_heading: match tab {
            Tab::Lab => "推移",
            Tab::Documents => "ファイル",
            _ => "",
        },
        columns: tab.columns(),
        rid,
        holders,
        lines,
        notes,
        emergency_until,
    })
}

/// The policy of a PDF shown inline: its viewer, and nothing that could run in the portal's origin.
pub const PDF_CSP: &str = "default-src 'none'; object-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn document(
    State(p): State<Arc<Portal>>,
    t: Term,
    headers: HeaderMap,
    Path((rid, entry_id, file)): Path<(String, i64, i64)>,
    Query(q): Query<Params>,
) -> Result<Response> {
    let ctx = authed(&p, &headers, t, false).await?;
    let seen = visible(&p, &ctx, &rid, "download").await?;
    let Some((entry, _)) = seen
        .iter()
        .find(|(e, b)| e.id == entry_id && b.clinical() && ctx.user.role.clinical())
    else {
        let mut e = ctx.event("download", &rid);
        e.outcome = "denied".into();
        p.audit(e).await?;
        return Err(Error::Forbidden(
            "この文書を閲覧する権限がありません。".into(),
        ));
    };
    let pid = entry.patient_id.clone();
    let doc = p
        .read_copy(&entry.facility, move |c| {
            Ok(match record::document(c, &pid, file)? {
                Some(d) => Some((d, record::begins_with(c, file, b"%PDF-")?)),
                None => None,
            })
        })
        .await?;
    let Some(((file_name, media_type, size), is_pdf)) = doc else {
        return Err(Error::NotFound("文書が見つかりません。".into()));
    };
    // A PDF may be shown in the browser's own viewer; anything else is only downloaded, so no
    // stored file is ever rendered as a page of the portal's origin.
    let inline = field(&q, "view") == "inline" && media_type == "application/pdf" && is_pdf;
    // A document is never a subresource of a page: no <script>, <link> or <img> may load one.
    if headers
        .get("sec-fetch-dest")
        .is_some_and(|d| !matches!(d.as_bytes(), b"document" | b"empty" | b"iframe"))
    {
        return Err(Error::Forbidden(
            "文書はページの一部として読み込めません。".into(),
        ));
    }
    let mut e = ctx.event("download", &rid);
    e.owners = vec![entry.facility.clone()];
    e.detail = format!(
        "document file={file} bytes={size}{}",
        if inline { " shown" } else { "" }
    );
    p.audit(e).await?;
    // The bytes stream from the copy in chunks on a blocking thread; a large scan is never held whole.
    let readers = p.hub.copy_readers(&entry.facility);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let sent = readers.with(|c| {
            Ok(record::stream_file(c, file, 256 << 10, |b| {
                tx.blocking_send(bytes::Bytes::from(b)).is_ok()
            })?)
        });
        if let Err(e) = sent {
            tracing::error!(error = %format!("{e:#}"), file, "document stream failed");
        }
    });
    let disposition = format!(
        "{}; filename=\"document\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        urlencode(&file_name)
    );
    let body = axum::body::Body::new(crate::state::ChannelBody(rx, Some(size.max(0) as u64)));
    // Only a PDF shown inline keeps its type; anything else goes as bytes, so a stored file can
    // never be loaded as a script or a stylesheet of the portal's origin, whatever type the
    // facility's record gave it.
    let served = if inline {
        media_type
    } else {
        "application/octet-stream".to_string()
    };
    let mut r = (
        [
            (header::CONTENT_TYPE, served),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response();
    if inline {
        // The browser's PDF viewer is a plugin frame of its own; nothing else may run or load.
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(PDF_CSP),
        );
    }
    Ok(r)
}
