//! `tsunagi-edge run`, the daemon: the ingest watcher, sync, the posture checks, telemetry and
//! the LAN proxy, wired together until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{policy_context, print_summary, runtime};
use crate::config::Config;
use crate::identity::{self, Identity};
use crate::ingest::{watch, Options};
use crate::store::{Handle, Key};
use crate::sync;

/// The daemon: the ingest watcher on its own thread, sync (once enrolled) on the async runtime,
/// until SIGTERM or SIGINT; then both finish what they are doing and stop.
pub(super) fn run_daemon(mut cfg: Config) -> anyhow::Result<ExitCode> {
    let key = crate::store::read_key(&cfg.key_file)?;
    let rt = runtime()?;
    if !Identity::is_enrolled(&cfg.identity_dir()) && cfg.hub_fingerprint.is_some() {
        // First boot of an image: the enrolment page until the box is enrolled, then the
        // facility's copy from the hub, then the usual start.
        let Some(id) = rt.block_on(async {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let signalled = terminated()?;
            tokio::spawn(async move {
                signalled.await;
                let _ = tx.send(true);
            });
            crate::firstboot::enrol(&cfg, rx).await
        })?
        else {
            crate::notify::stopping();
            return Ok(ExitCode::SUCCESS);
        };
        if let Some(r) = rt.block_on(crate::firstboot::restore_if_any(&id, &cfg, &key))? {
            tracing::info!(facility = %id.cert.facility, seq = r.seq, segments = r.segments, bytes = r.bytes, "restored the facility's copy");
        }
    }
    let enrolled = Identity::load(&cfg.identity_dir()).ok();
    if cfg.proxy.names.is_empty() {
        // An image learns its LAN names on the enrolment page.
        cfg.proxy.names = enrolled
            .as_ref()
            .map(|i| i.enrolment.lan_names.clone())
            .unwrap_or_default();
    }
    let store = Arc::new(Handle::start(&cfg.store_dir(), &key)?);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        state = %cfg.state_dir.display(),
        roots = cfg.roots.len(),
        facility = enrolled.as_ref().map(|i| i.cert.facility.as_str()).unwrap_or("not enrolled"),
        hub = cfg.hub_url.as_deref().or(enrolled.as_ref().map(|i| i.enrolment.hub.as_str())).unwrap_or("-"),
        bandwidth_limit = cfg.sync.bandwidth_limit.unwrap_or(0),
        "tsunagi-edge run starting"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = if cfg.roots.is_empty() {
        tracing::warn!("no SS-MIX2 roots configured (ingest.roots): only syncing");
        None
    } else {
        let (store, stop) = (store.clone(), stop.clone());
        let mut opts = Options::new(cfg.roots.clone());
        opts.batch_files = cfg.batch_files;
        let pace = watch::Pace {
            rescan: cfg.rescan,
            ..Default::default()
        };
        Some(
            std::thread::Builder::new()
                .name("ingest".into())
                .spawn(move || {
                    watch::run(
                        &store,
                        &opts,
                        &pace,
                        || stop.load(Ordering::Relaxed),
                        |s| {
                            if s.ingested + s.quarantined + s.missing + s.renamed + s.reappeared > 0
                                || !s.alarms.is_empty()
                            {
                                print_summary(s);
                            }
                        },
                    )
                })?,
        )
    };
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let sync_task = {
            let (store, cfg, mut rx) = (store.clone(), cfg.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    if Identity::is_enrolled(&cfg.identity_dir()) {
                        if let Err(e) = identity::settle(&cfg.identity_dir(), cfg.hub_url.as_deref()).await {
                            tracing::warn!(error = %format!("{e:#}"), "a pending certificate renewal could not be settled");
                        }
                        match sync::syncer(store.clone(), &cfg.identity_dir(), cfg.hub_url.clone(), cfg.sync.clone()) {
                            Ok(s) => return s.run(rx).await,
                            Err(e) => tracing::error!(error = %format!("{e:#}"), "sync cannot start"),
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                        _ = rx.changed() => return,
                    }
                }
            })
        };
        let local = Arc::new(crate::local::Local::open(&cfg.state_dir, &key)?);
        let (posture_tx, posture_rx) = tokio::sync::watch::channel(None);
        let (checks_tx, checks_rx) = tokio::sync::mpsc::channel(4);
        let policy_task = {
            let (cfg, rx, local) = (cfg.clone(), rx.clone(), local.clone());
            tokio::spawn(async move { run_policy(cfg, local, posture_tx, checks_rx, rx).await })
        };
        let telemetry_task = {
            let parts = crate::telemetry::Parts { store: store.clone(), local: local.clone(), posture: posture_rx, checks_now: checks_tx, status_every: cfg.telemetry.status_every };
            let (cfg, rx) = (cfg.clone(), rx.clone());
            tokio::spawn(async move { crate::telemetry::run(cfg, parts, rx).await })
        };
        let proxy_task = cfg.proxy.listen.is_some().then(|| {
            let (cfg, rx, key, local) = (cfg.clone(), rx.clone(), key.clone(), local.clone());
            tokio::spawn(async move { run_proxy(cfg, key, local, rx).await })
        });
        drop(rx);
        crate::notify::ready(&match &enrolled {
            Some(i) => format!("serving facility {} ({} roots)", i.cert.facility, cfg.roots.len()),
            None => "not enrolled: run `tsunagi-edge enroll`".to_string(),
        });
        terminated()?.await;
        tracing::info!("stopping: finishing the current batch and upload");
        crate::notify::stopping();
        stop.store(true, Ordering::Relaxed);
        let _ = tx.send(true);
        let _ = sync_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), telemetry_task).await;
        policy_task.abort();
        if let Some(p) = proxy_task {
            p.abort();
        }
        anyhow::Ok(())
    })?;
    if let Some(t) = ingest {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("the ingest thread panicked"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT (the handlers are installed at once, so no signal is missed).
fn terminated() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

/// The LAN proxy, once the appliance is enrolled and has its LAN certificate.
async fn run_proxy(
    cfg: Config,
    key: Key,
    local: Arc<crate::local::Local>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let dir = cfg.identity_dir();
    let proxy = loop {
        match prepare_proxy(&cfg, &key, local.clone()).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the LAN proxy cannot start yet; trying again in 10 s")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.changed() => return,
        }
    };
    match crate::proxy::start(proxy, &dir, stop).await {
        Ok(addr) => {
            tracing::info!(listen = %addr, names = ?cfg.proxy.names, plain = cfg.proxy.plain_listen.as_deref().unwrap_or("-"), "LAN proxy serving");
            println!("proxy on https://{addr}");
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "the LAN proxy cannot start"),
    }
}

async fn prepare_proxy(
    cfg: &Config,
    key: &Key,
    local: Arc<crate::local::Local>,
) -> anyhow::Result<Arc<crate::proxy::Proxy>> {
    let dir = cfg.identity_dir();
    let mut id = Identity::load(&dir)?;
    if let Err(e) = identity::ensure_lan(&mut id, &cfg.proxy.names, cfg.hub_url.as_deref()).await {
        if identity::lan_cert_names(&dir).is_none() {
            return Err(e.context("no LAN certificate yet, and the hub cannot issue one now"));
        }
        tracing::warn!(error = %format!("{e:#}"), "the LAN certificate could not be brought up to date; serving the current one");
    }
    // Without its own portal-only certificate the proxy does not start: it never lends the
    // appliance's identity to the LAN.
    identity::ensure_proxy(&mut id, cfg.hub_url.as_deref())
        .await
        .context(
            "the LAN proxy has no portal-only certificate, and the hub cannot issue one now",
        )?;
    let gate = Arc::new(crate::policy::TerminalGate::new(
        cfg.policy.clone(),
        local.clone(),
    )?);
    let p = crate::proxy::Proxy::new(
        cfg.proxy.clone(),
        &dir,
        cfg.hub_url.clone(),
        &cfg.store_dir(),
        key,
        local,
        gate,
    )?;
    Ok(Arc::new(p))
}

/// The checks on their schedule inside `run`, and on demand (a command from the hub).
async fn run_policy(
    cfg: Config,
    local: Arc<crate::local::Local>,
    posture: tokio::sync::watch::Sender<Option<crate::policy::Posture>>,
    mut now_rx: tokio::sync::mpsc::Receiver<crate::telemetry::CheckNow>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ctx = Arc::new(policy_context(&cfg));
    let tick = cfg.policy.interval.min(Duration::from_secs(15));
    let mut reply: Option<crate::telemetry::CheckNow> = None;
    loop {
        let all = reply.is_some();
        let (ctx2, local2) = (ctx.clone(), local.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::policy::run_due(&ctx2, &local2, shared::time::now(), all)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the checks panicked: {e}"))
        .and_then(|r| r);
        match r {
            Ok((p, _)) => {
                if let Some(tx) = reply.take() {
                    let _ = tx.send(Ok(p.clone()));
                }
                posture.send_if_modified(|old| {
                    let changed = old.as_ref().is_none_or(|o| {
                        o.state != p.state
                            || o.checks
                                .iter()
                                .map(|c| c.state)
                                .ne(p.checks.iter().map(|c| c.state))
                            || o.terminals != p.terminals
                    });
                    *old = Some(p);
                    changed
                });
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the posture checks failed to run");
                if let Some(tx) = reply.take() {
                    let _ = tx.send(Err(e));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            r = now_rx.recv() => match r {
                Some(tx) => reply = Some(tx),
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}
