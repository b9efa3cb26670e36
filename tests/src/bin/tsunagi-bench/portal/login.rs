//! The login benchmark: what a failed login costs by what was tried, against a right login, so
//! that the time does not tell which login IDs exist.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;

use super::client::{app_at, timed_login};
use super::{pct, Latency, NEW_PASSWORD, PASSWORD};
use crate::sync::run;

/// What a login costs, by what the attacker tried: a wrong password, an ID nobody has, another
/// facility's appliance with the right password, against a right login. Each failure uses an ID
/// of its own, so no lock delay is in the figures, and each attempt a terminal of its own and
/// each kind an appliance of its own, so the login throttle (12 a minute a terminal, 120 an
/// appliance) does not answer in the password check's place.
pub(super) async fn login_bench(
    bin_dir: &Path,
    hub_dir: &Path,
    portal: &Arc<hub::portal::Portal>,
    own: &str,
    other: &str,
    runs: usize,
) -> anyhow::Result<Vec<Latency>> {
    let pw = hub_dir.with_file_name("login-pw");
    std::fs::write(&pw, PASSWORD)?;
    for i in 0..runs {
        run(Command::new(bin_dir.join("tsunagi-hub"))
            .arg("--data")
            .arg(hub_dir)
            .args([
                "user",
                "add",
                "--login",
                &format!("dr-w{i}"),
                "--name",
                "bench",
                "--role",
                "doctor",
                "--facility",
                own,
                "--password-file",
            ])
            .arg(&pw))?;
    }
    let apps: Vec<(Router, Router)> = (0..5)
        .map(|k| {
            (
                app_at(portal, own, &format!("bench-login-{k}")),
                app_at(portal, other, &format!("bench-login-{k}")),
            )
        })
        .collect();
    const REFUSED: &str = "IDまたはパスワードが違います。";
    let mut out = Vec::new();
    // What is tried, where, the login ID and password of attempt k, and whether it succeeds.
    type Kind<'a> = (
        &'a str,
        &'a Router,
        &'a dyn Fn(usize) -> (String, String),
        bool,
    );
    let kinds: [Kind; 5] = [
        (
            "right ID and password",
            &apps[0].0,
            &|_| ("dr-page".to_string(), NEW_PASSWORD.to_string()),
            true,
        ),
        (
            "known ID, wrong password",
            &apps[1].0,
            &|i| (format!("dr-w{i}"), "Wrong-pass9".to_string()),
            false,
        ),
        (
            "unknown ID",
            &apps[2].0,
            &|i| (format!("nobody{i}"), "Wrong-pass9".to_string()),
            false,
        ),
        (
            "right password, another facility's appliance",
            &apps[3].1,
            &|i| (format!("dr-w{i}"), PASSWORD.to_string()),
            false,
        ),
        (
            "an ID that cannot exist (64 characters)",
            &apps[4].0,
            &|i| {
                (
                    format!("{i:0>8}{}", "x".repeat(56)),
                    "Wrong-pass9".to_string(),
                )
            },
            false,
        ),
    ];
    // Round-robin over the kinds, so whatever else the machine does falls on all of them alike.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for i in 0..runs {
        for (k, (what, app, who, ok)) in kinds.iter().enumerate() {
            let (login, password) = who(i);
            let (ms, status, body) = timed_login(app, &format!("t-{i}"), &login, &password).await?;
            if *ok {
                anyhow::ensure!(status == StatusCode::SEE_OTHER, "{what}: answered {status}");
            } else {
                anyhow::ensure!(
                    body.contains(REFUSED),
                    "{what}: the answer is not the one every failed login gets"
                );
            }
            times[k].push(ms);
        }
    }
    for ((what, _, _, ok), t) in kinds.iter().zip(times) {
        out.push(Latency {
            what: (*what).into(),
            n: runs,
            p50: pct(t.clone(), 0.5),
            p99: pct(t, 0.99),
            note: if *ok {
                "a session".into()
            } else {
                format!("「{REFUSED}」")
            },
        });
    }
    Ok(out)
}
