//! The offline view's record pages: search, and the patient page with its tabs, read from the
//! store read-only, each access recorded before it is served.

use std::collections::HashMap;

use askama::Template;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};

use super::{encode, get, Offline, Who};
use crate::policy::Terminal;
use crate::proxy::{redirect, Body};
use view::fmt::{hl7_time, jst, sex_label};
use view::names::kana_shown;
use view::record::{self, Tab};

struct Hit {
    patient_id: String,
    link: String,
    kanji: String,
    kana: String,
    birth: String,
    sex: &'static str,
}

#[derive(Template)]
#[template(path = "offline_search.html")]
struct SearchPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    patient_id: String,
    name: String,
    birth_date: String,
    message: String,
    searched: bool,
    hits: Vec<Hit>,
}

#[derive(Template)]
#[template(path = "offline_patient.html")]
struct PatientPage<'a> {
    who: Option<Who>,
    facility: &'a str,
    since: String,
    link: String,
    header: view::patient::Header,
    basic: Vec<(&'static str, String)>,
    tabs: Vec<(&'static str, &'static str, bool)>,
    tab_label: &'static str,
    columns: &'static [&'static str],
    lines: Vec<(String, Vec<String>, Option<&'static str>)>,
}

impl Offline {
    /// Opens the store read-only on a blocking thread and runs `f` on it.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (dir, key) = (self.store_dir.clone(), self.key.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
            let c = crate::store::open_read_only(&dir, &key)?;
            Ok(f(&c)?)
        })
        .await?
    }

    pub(super) async fn search(
        &self,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
        terminal: &Terminal,
        since: i64,
        searched: bool,
    ) -> Response<Body> {
        let Some(who) = self.session(headers) else {
            return redirect("/offline/login");
        };
        let login = who.login.clone();
        let (pid, name, birth) = (
            get(q, "patient_id").to_string(),
            get(q, "name").to_string(),
            get(q, "birth_date").to_string(),
        );
        let mut p = SearchPage {
            who: Some(who),
            facility: &self.facility,
            since: jst(since),
            patient_id: pid.clone(),
            name: name.clone(),
            birth_date: birth.clone(),
            message: String::new(),
            searched: false,
            hits: vec![],
        };
        if !searched {
            return self.render(&p, StatusCode::OK);
        }
        if [&pid, &name, &birth].iter().any(|s| s.chars().count() > 40) {
            p.message = "検索条件は40文字以内で入力してください。".into();
            return self.render(&p, StatusCode::OK);
        }
        if pid.is_empty() && name.is_empty() && birth.is_empty() {
            p.message = "患者ID、氏名、生年月日のいずれかを入れてください。".into();
            return self.render(&p, StatusCode::OK);
        }
        if !self
            .audit(&login, terminal, "offline-search", &pid, "ok")
            .await
        {
            return self.unrecorded(since);
        }
        // What people type: 和暦 or 西暦, full width, an ID without its leading zeros.
        let birth8 = if birth.trim().is_empty() {
            String::new()
        } else {
            match view::fmt::parse_day(&birth) {
                Some(d) => d,
                None => {
                    p.message = format!("生年月日「{birth}」を日付として読めませんでした。1976-11-08、S51.11.08 のように入力してください。");
                    return self.render(&p, StatusCode::OK);
                }
            }
        };
        let pid_forms = view::fmt::patient_id_forms(&pid);
        let (qkanji, qkana) = (
            view::names::kanji_norm(&name),
            view::names::kana_norm(&name),
        );
        let rows = self
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT patient_id, trim(coalesce(family_kanji, '') || ' ' || coalesce(given_kanji, '')), trim(coalesce(family_kana, '') || ' ' || coalesce(given_kana, '')),
                            coalesce(birth_date, ''), coalesce(sex, '')
                     FROM patient WHERE id IN (SELECT max(id) FROM patient GROUP BY patient_id) ORDER BY patient_id",
                )?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "offline search failed");
                return self.error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "システムエラー",
                    "記録を読み出せませんでした。",
                    Some(since),
                );
            }
        };
        p.hits = rows
            .into_iter()
            .filter(|(id, kanji, kana, b, _)| {
                (pid.is_empty() || pid_forms.contains(id))
                    && (birth8.is_empty() || b.starts_with(&birth8))
                    && (name.is_empty()
                        || view::names::kanji_norm(kanji).contains(&qkanji)
                        || (!qkana.is_empty() && view::names::kana_norm(kana).contains(&qkana)))
            })
            .take(100)
            .map(|(id, kanji, kana, b, sex)| Hit {
                link: encode(&id),
                patient_id: id,
                kanji,
                kana: kana_shown(&kana),
                birth: hl7_time(&b),
                sex: sex_label(&sex),
            })
            .collect();
        p.searched = true;
        self.render(&p, StatusCode::OK)
    }

    pub(super) async fn patient(
        &self,
        headers: &HeaderMap,
        pid: &str,
        q: &HashMap<String, String>,
        terminal: &Terminal,
        since: i64,
    ) -> Response<Body> {
        let Some(who) = self.session(headers) else {
            return redirect("/offline/login");
        };
        let login = who.login.clone();
        let tab = Tab::parse(get(q, "tab")).unwrap_or(Tab::Visits);
        if !self
            .audit(&login, terminal, "offline-view", pid, "ok")
            .await
        {
            return self.unrecorded(since);
        }
        let id = pid.to_string();
        let found = self
            .read(move |c| {
                let head: Option<(String, String, String, String)> = c
                    .query_row(
                        "SELECT trim(coalesce(family_kanji, '') || ' ' || coalesce(given_kanji, '')), trim(coalesce(family_kana, '') || ' ' || coalesce(given_kana, '')),
                                coalesce(birth_date, ''), coalesce(sex, '')
                         FROM patient WHERE patient_id = ?1 ORDER BY id DESC LIMIT 1",
                        [&id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map(Some)
                    .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
                let Some(head) = head else { return Ok(None) };
                let basic = record::basic(c, &id)?;
                let allergies = record::allergens(c, &id)?;
                let lines = record::tab(c, tab, &id, 500)?;
                Ok(Some((head, basic, allergies, lines)))
            })
            .await;
        match found {
            Ok(Some(((kanji, kana, birth, sex), basic, allergies, lines))) => {
                let mut header =
                    view::patient::Header::new(&kanji, &kana, &sex, &birth, view::fmt::today_jst());
                header.holders.push(view::patient::Holder {
                    facility: self.facility.clone(),
                    patient_id: pid.to_string(),
                    basis: String::new(),
                });
                header.add_allergies(allergies);
                let p = PatientPage {
                    who: Some(who),
                    facility: &self.facility,
                    since: jst(since),
                    link: encode(pid),
                    header,
                    basic,
                    tabs: Tab::ALL
                        .iter()
                        .map(|t| (t.code(), t.label(), *t == tab))
                        .collect(),
                    tab_label: tab.label(),
                    columns: tab.columns(),
                    lines: lines
                        .into_iter()
                        .map(|l| (hl7_time(&l.at), l.cells, l.mark))
                        .collect(),
                };
                self.render(&p, StatusCode::OK)
            }
            Ok(None) => self.error_page(
                StatusCode::NOT_FOUND,
                "見つかりません",
                "この施設の記録にその患者IDはありません。",
                Some(since),
            ),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "offline patient page failed");
                self.error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "システムエラー",
                    "記録を読み出せませんでした。",
                    Some(since),
                )
            }
        }
    }
}
