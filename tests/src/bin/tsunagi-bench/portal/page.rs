//! The patient-page benchmark: one person with ten years of records at three facilities, ingested
//! and synced to a real hub, linked and published, each tab of their page timed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::Context;
use hub::index;
use tests::gen::{self, Spec};

use super::client::{app_for, open_hub, session, timed_get};
use super::login::login_bench;
use super::{pct, Latency, PASSWORD};
use crate::sync::run;

pub(super) async fn page_bench(
    bin_dir: &Path,
    data: &Path,
) -> anyhow::Result<(Vec<Latency>, String, Vec<Latency>)> {
    let work = data.join("page");
    let edge = bin_dir.join("tsunagi-edge");
    let key = data.join("edge.key");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    if !key.exists() {
        run(Command::new(&edge).args(["keygen", "--out"]).arg(&key))?;
    }
    let hub_dir = work.join("hub");
    let codes = ["3710000101", "3710000102", "3710000103"];
    {
        let server = crate::sync::Hub::start(bin_dir, &hub_dir)?;
        for (i, code) in codes.iter().enumerate() {
            // Ten years of monthly visits at each facility, beside a few other patients.
            let spec = Spec {
                patients: 20,
                days: 3_650,
                visits: 30,
                seed: 40 + i as u64,
                malformed: 0,
                start_day: 16_801,
            };
            let me = gen::Patient {
                pid: format!("00{}4242", i + 1),
                family: ("香川", "カガワ"),
                given: ("次郎", "ジロウ"),
                birth: "19450505".into(),
                sex: "M",
                visits: Some(120),
                allergic: false,
            };
            let tree = work.join(format!("tree-{code}"));
            eprintln!("portal: ten years at facility {code}");
            gen::generate_with(&spec, &tree, &[me]);
            let config = server.appliance_for(
                &edge,
                &work.join(format!("edge-{code}")),
                &key,
                &format!("bench-{i}"),
                code,
            )?;
            run(Command::new(&edge)
                .arg("ingest")
                .arg("--config")
                .arg(&config)
                .arg("--root")
                .arg(tree.join("standard"))
                .arg("--root")
                .arg(tree.join("extended"))
                .arg("--once"))?;
            run(Command::new(&edge).arg("sync").arg("--config").arg(&config))?;
        }
    }
    let pw = work.join("pw");
    std::fs::write(&pw, PASSWORD)?;
    run(Command::new(bin_dir.join("tsunagi-hub"))
        .arg("--data")
        .arg(&hub_dir)
        .args([
            "user",
            "add",
            "--login",
            "dr-page",
            "--name",
            "bench",
            "--role",
            "doctor",
            "--facility",
            codes[0],
            "--password-file",
        ])
        .arg(&pw))?;
    let hub = open_hub(&hub_dir)?;
    for c in codes {
        hub.index_facility(c).await?;
    }
    // Link the person's three entries and publish the other two to the first facility.
    let key = hub::key::read(&hub_dir.join("hub.key"))?;
    let c = hub::region::open(&hub_dir, &key.derive("region"))?;
    let ids: Vec<i64> = codes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            c.query_row(
                "SELECT id FROM patient WHERE facility = ?1 AND patient_id = ?2",
                rusqlite::params![f, format!("00{}4242", i + 1)],
                |r| r.get(0),
            )
        })
        .collect::<Result<_, _>>()?;
    index::link(&c, ids[0], ids[1])?;
    let rid = index::link(&c, ids[0], ids[2])?.context("link")?;
    for id in &ids[1..] {
        let e = index::get(&c, *id)?.context("entry")?;
        let k = hub::consent::Consent {
            state: hub::consent::State::Public,
            scope: hub::consent::Scope::Clinical,
            comprehensive: false,
            facilities: vec![codes[0].into()],
            consent_date: "2026-11-01".into(),
            form_ref: "bench".into(),
        };
        hub::consent::set(&c, &e, &k, "bench", 0, "bench")?;
    }
    let mut counts = Vec::new();
    for (i, f) in codes.iter().enumerate() {
        let copy = rusqlite::Connection::open(hub.copy_path(f))?;
        copy.execute_batch(&format!(
            "PRAGMA key = \"{}\";",
            key.derive(&format!("copy:{f}")).raw_literal().as_str()
        ))?;
        let pid = format!("00{}4242", i + 1);
        let n = |t: &str| -> rusqlite::Result<i64> {
            copy.query_row(
                &format!("SELECT count(*) FROM {t} WHERE patient_id = ?1"),
                [&pid],
                |r| r.get(0),
            )
        };
        counts.push(format!(
            "{f}: {} visits, {} prescription and injection lines, {} lab results",
            n("encounter")?,
            n("medication_order")?,
            n("lab_result")?
        ));
    }
    let portal = Arc::new(hub::portal::Portal::new(
        hub.clone(),
        hub::portal::Settings::default(),
    ));
    let app = app_for(&portal, codes[0]);
    let cookie = session(&app, "dr-page").await?;
    let login = login_bench(bin_dir, &hub_dir, &portal, codes[0], codes[1], 60).await?;
    let mut out = Vec::new();
    let runs = 40;
    let mut pages: Vec<(String, String)> = [
        "visits",
        "allergy",
        "diagnosis",
        "prescription",
        "injection",
        "lab",
        "documents",
    ]
    .iter()
    .map(|t| (format!("tab {t}"), format!("/patient/{rid}?tab={t}")))
    .collect();
    pages.push((
        "calendar (month)".into(),
        format!("/patient/{rid}/calendar?view=month&date=2024-06-01"),
    ));
    let (_, lab) = timed_get(&app, &cookie, &format!("/patient/{rid}?tab=lab")).await?;
    if let Some(href) = lab
        .split("href=\"")
        .find(|s| s.contains("/trend?code="))
        .and_then(|s| s.split('"').next())
    {
        pages.push(("lab trend".into(), href.replace("&amp;", "&")));
    }
    for (what, uri) in pages {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..runs {
            let (ms, body) = timed_get(&app, &cookie, &uri).await?;
            times.push(ms);
            rows = body.matches("class=\"record\"").count()
                + body.matches("class=\"event\"").count()
                + body.matches("class=\"dot\"").count();
        }
        out.push(Latency {
            what,
            n: runs,
            p50: pct(times.clone(), 0.5),
            p99: pct(times, 0.99),
            note: format!("{rows} rows, events or points shown"),
        });
    }
    Ok((out, counts.join("; "), login))
}
