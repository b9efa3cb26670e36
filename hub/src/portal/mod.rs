//! The web portal that doctors, pharmacists, facility administrators and the network office use:
//! server-rendered pages (askama templates, no JavaScript), sessions and CSRF, and the access rule
//! of `consent::visible` on every patient page. Every search, view, download and change is audited
//! before its answer leaves the hub.

mod auth;
mod error;
mod fleetview;
mod office;
mod page;
mod routes;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::response::{Html, IntoResponse, Response};

use crate::account;
use crate::audit;
use crate::state::Hub;

pub use auth::{
    authed, entrance_fits, entrance_key, terminal, Ctx, Nav, Term, POSTURE_HEADER, TERMINAL_HEADER,
};
pub use error::{Error, Result};
pub use routes::{router, Route, Who, REQUEST_DEADLINE, ROUTES};
pub use session::Sessions;

/// The first line of the access-history CSV.
pub use office::CSV_HEADER;

/// Settings of the portal.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sessions end after this long without a request.
    pub idle: Duration,
    /// How long an emergency access lasts.
    pub emergency_minutes: i64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            idle: Duration::from_secs(300),
            emergency_minutes: crate::consent::EMERGENCY_MINUTES,
        }
    }
}

pub struct Portal {
    pub hub: Arc<Hub>,
    pub sessions: Sessions,
    pub settings: Settings,
    names: Mutex<(Option<Instant>, HashMap<String, String>)>,
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Failed logins that touch no account (unknown IDs, other entrances).
    pub strangers: account::Strangers,
    /// Login attempts per terminal and entrance and minute.
    pub throttle: account::Throttle,
    /// Password hashing (argon2id, 19 MiB and tens of milliseconds each) runs at most this many
    /// at a time, so a flood of logins neither exhausts memory nor starves other people's pages.
    hashing: tokio::sync::Semaphore,
}

/// How many password hashes run at once (`Portal::hash`).
pub const HASHING_AT_ONCE: usize = 2;
/// How long a login waits for its turn to hash before it is told to try again.
pub const HASHING_WAIT: Duration = Duration::from_secs(10);

impl Portal {
    pub fn new(hub: Arc<Hub>, settings: Settings) -> Portal {
        Portal {
            hub,
            sessions: Sessions::new(settings.idle),
            settings,
            names: Mutex::new((None, HashMap::new())),
            fleet: None,
            strangers: account::Strangers::default(),
            throttle: account::Throttle::default(),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
        }
    }

    /// The fleet view behind the operators' pages and the facilities' posture banner.
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::Fleet>) -> Portal {
        self.fleet = Some(fleet);
        self
    }

    /// A facility's name from the registry, or its code. The names are re-read at most once a
    /// minute, or after 5 seconds when a code is not among them (a facility just registered).
    pub async fn facility_name(&self, code: &str) -> String {
        if code.is_empty() {
            return "地域連携ネットワーク事務局".into();
        }
        let stale = {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            match names.0 {
                None => true,
                Some(t) => {
                    t.elapsed() >= Duration::from_secs(60)
                        || (!names.1.contains_key(code) && t.elapsed() >= Duration::from_secs(5))
                }
            }
        };
        if stale {
            if let Ok(Ok(list)) = self
                .hub
                .registry
                .call(|c| crate::registry::facility_names(c))
                .await
            {
                let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
                *names = (Some(Instant::now()), list.into_iter().collect());
            }
        }
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .get(code)
            .cloned()
            .unwrap_or_else(|| code.to_string())
    }

    /// Runs `f` on a pooled read-only connection to `region.db`, off the async threads.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let p = self.clone();
        Ok(
            tokio::task::spawn_blocking(move || p.hub.region_readers.with(f))
                .await
                .map_err(|e| anyhow::anyhow!(e))??,
        )
    }

    /// Runs `f` on a pooled read-only connection to a facility's copy.
    pub async fn read_copy<T: Send + 'static>(
        self: &Arc<Self>,
        facility: &str,
        f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let readers = self.hub.copy_readers(facility);
        Ok(tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| anyhow::anyhow!(e))??)
    }

    /// Runs password hashing (`f`) on a blocking thread, at most `HASHING_AT_ONCE` at a time; a
    /// request that cannot have its turn within `HASHING_WAIT` is told the portal is busy.
    pub async fn hash<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _turn = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Busy)?;
        Ok(tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| anyhow::anyhow!(e))?)
    }

    /// Writes on the region database's own thread.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        Ok(self.hub.region.call(f).await??)
    }

    /// Appends an audit event in its own transaction. If it cannot be written, the action fails.
    pub async fn audit(&self, e: audit::Event) -> Result<(), Error> {
        let at = now_ms();
        self.write(move |c| Ok(audit::record(c, at, &e)?))
            .await
            .map(|_| ())
    }
}

pub use shared::time::now_ms;

/// A form's or a query string's fields.
pub type Params = HashMap<String, String>;

/// A field's value, trimmed; empty when absent.
pub fn field<'a>(f: &'a Params, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

/// Renders a template into a response.
pub fn render(t: &impl Template) -> Result<Response> {
    Ok(Html(t.render().map_err(|e| anyhow::anyhow!("template: {e}"))?).into_response())
}

pub use view::fmt::{hl7_time, jst, sex_label};

/// `2026-11-21 19:30:05` of Unix milliseconds, Japan time.
pub fn jst_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    format!("{}:{:02}", jst(secs), (secs + 9 * 3600).rem_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_hashing_runs_a_few_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let ca = provisioning::Ca::init(&dir.path().join("ca"), "test", crate::now()).unwrap();
        let revoked = Arc::new(crate::tls::Revocations::new(
            dir.path().join("ca").join(provisioning::ca::CRL),
            ca.issuing_ders(),
        ));
        let settings = crate::state::Settings {
            client_cert_lifetime: 86_400,
            max_body: 1 << 20,
            snapshots_kept: 1,
        };
        let hub = Arc::new(
            Hub::new(
                dir.path().to_owned(),
                ca,
                crate::key::Key::from_bytes([7; 32]),
                revoked,
                settings,
            )
            .unwrap(),
        );
        let p = Arc::new(Portal::new(hub, Settings::default()));
        let (running, most) = (
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        );
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (p, running, most) = (p.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                p.hash(move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    let v = account::hash_password("Pass-word1");
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    v
                })
                .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            HASHING_AT_ONCE,
            "at most {HASHING_AT_ONCE} hashes at once, and that many in parallel"
        );
    }

    #[test]
    fn times_are_shown_in_japan_time() {
        assert_eq!(jst(1_795_249_845), "2026-11-21 17:30");
        assert_eq!(jst_ms(1_795_249_845_123), "2026-11-21 17:30:45");
        assert_eq!(hl7_time("20261121093000"), "2026/11/21 09:30");
        assert_eq!(hl7_time("20261121"), "2026/11/21");
        assert_eq!(hl7_time(""), "");
    }
}
