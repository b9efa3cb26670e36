//! `serve`: the appliances' and operators' listeners, the metrics listener, the background
//! tasks (snapshots, the CRL's upkeep, the indexer, the fleet view) and the shutdown on SIGTERM
//! or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use provisioning::Ca;

use super::args::ServeArgs;
use super::{ca_dir, hub_key};
use crate::api;
use crate::state::{Hub, Settings};
use crate::tls::Revocations;
use crate::{copy, now, registry, snapshot};

/// The lock a serving hub holds on its CA folder, so that the issuing CA is not replaced under
/// it (`ca rotate-issuing` and `ca withdraw-issuing` take it too). Released when the process ends.
pub(super) fn serve_lock(ca_dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = ca_dir.join("serve.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.try_lock().map_err(|_| {
        format!(
            "a hub is serving from {} (it holds {})",
            ca_dir.display(),
            path.display()
        )
    })?;
    Ok(f)
}

pub(super) fn serve(data: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    let _lock = serve_lock(&ca_dir(&data))
        .map_err(|e| anyhow::anyhow!("{e}: only one hub serves from a data folder"))?;
    let mut ca = Ca::load(&ca_dir(&data)).map_err(anyhow::Error::msg)?;
    if ca
        .ensure_lan(&args.lan_domain, now())
        .map_err(anyhow::Error::msg)?
    {
        tracing::info!(domain = %args.lan_domain, "made the LAN issuing CA, name-constrained to the LAN domain and private addresses");
    }
    let key = hub_key(&data)?;
    let lifetime = shared::time::parse_duration(&args.client_cert_lifetime)
        .map_err(|e| anyhow::anyhow!("--client-cert-lifetime: {e}"))?;
    let snapshot_every = shared::time::parse_duration(&args.snapshot_every)
        .map_err(|e| anyhow::anyhow!("--snapshot-every: {e}"))?
        .max(1);
    let crl_validity = shared::time::parse_duration(&args.crl_validity)
        .map_err(|e| anyhow::anyhow!("--crl-validity: {e}"))?;
    if !(3..=90 * 86_400).contains(&crl_validity) {
        anyhow::bail!("--crl-validity must be between 3s and 90d");
    }
    let revoked = Arc::new(Revocations::new(
        ca.dir().join(provisioning::ca::CRL),
        ca.issuing_ders(),
    ));
    let tls = crate::tls::server_config(&ca, &args.names, revoked.clone(), now())?;
    let fingerprint = ca.fingerprint();
    let settings = Settings {
        client_cert_lifetime: lifetime,
        max_body: args.max_body,
        snapshots_kept: args.snapshots_kept,
    };
    let idle = shared::time::parse_duration(&args.session_idle)
        .map_err(|e| anyhow::anyhow!("--session-idle: {e}"))?;
    if !(1..=300).contains(&idle) {
        anyhow::bail!("--session-idle must be between 1s and 5m (the networks' rule is at most 5 minutes idle)");
    }
    let emergency = shared::time::parse_duration(&args.emergency_for)
        .map_err(|e| anyhow::anyhow!("--emergency-for: {e}"))?;
    if !(60..=24 * 3600).contains(&emergency) {
        anyhow::bail!("--emergency-for must be between 1m and 24h");
    }
    let portal_settings = crate::portal::Settings {
        idle: std::time::Duration::from_secs(idle as u64),
        emergency_minutes: emergency / 60,
    };
    let alert_offline = shared::time::parse_duration(&args.alert_offline)
        .map_err(|e| anyhow::anyhow!("--alert-offline: {e}"))?;
    let fleet_settings = crate::fleet::Settings {
        offline_after: std::time::Duration::from_secs(alert_offline.max(1) as u64),
        lag_segments: args.alert_lag,
        cert_days: 30,
        webhook: args.alert_webhook.clone(),
    };
    if let Some(w) = &fleet_settings.webhook {
        if !w.starts_with("http://") {
            anyhow::bail!("--alert-webhook {w}: only http:// (a relay on the operators' network) is supported");
        }
    }
    let fleet = Arc::new(crate::fleet::Fleet::open(
        data.join(crate::fleet::FILE),
        &key.derive("fleet"),
        fleet_settings,
    )?);
    let broker = match &args.broker {
        None => None,
        Some(url) => {
            let (host, port) =
                shared::fleet::parse_broker(url).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
            let dir = args
                .broker_dir
                .clone()
                .unwrap_or_else(|| data.join("broker"));
            Some(crate::fleet::Connect {
                host,
                port,
                tls: crate::broker::client_tls(&ca, &dir)?,
            })
        }
    };
    let hub = Arc::new(Hub::new(data.clone(), ca, key, revoked, settings)?);
    let portal = Arc::new(
        crate::portal::Portal::new(hub.clone(), portal_settings).with_fleet(fleet.clone()),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let operators = tokio::net::TcpListener::bind(&args.operator_listen).await.with_context(|| format!("cannot listen on {} (--operator-listen)", args.operator_listen))?;
        let op_addr = operators.local_addr()?;
        let metrics = tokio::net::TcpListener::bind(&args.metrics_listen).await.with_context(|| format!("cannot listen on {} (--metrics-listen)", args.metrics_listen))?;
        let metrics_addr = metrics.local_addr()?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), data = %data.display(), listen = %addr, client_cert_lifetime = lifetime, snapshot_every, "tsunagi-hub serving");
        // Whoever started the hub may stop reading its output; that must not stop the hub.
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on https://{addr}");
        let _ = writeln!(out, "root fingerprint (SHA-256): {fingerprint}");
        let _ = writeln!(out, "operators on https://{op_addr}/login");
        let _ = writeln!(out, "metrics on http://{metrics_addr}/metrics");
        let _ = out.flush();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let snapshots = tokio::spawn(snapshot_loop(hub.clone(), snapshot_every));
        let crl = tokio::spawn(crl_upkeep(hub.clone(), crl_validity, args.broker_dir.clone().unwrap_or_else(|| data.join("broker"))));
        let indexer = tokio::spawn(hub.clone().index_loop());
        let fleet_tasks = [
            tokio::spawn(crate::fleet::serve_metrics(metrics, fleet.clone(), stop_rx.clone())),
            tokio::spawn(crate::fleet::upkeep(fleet.clone(), hub.clone())),
        ];
        let mqtt = broker.map(|c| tokio::spawn(crate::fleet::run(fleet.clone(), c, stop_rx.clone())));
        let (appliances, operators_app) = api::entrances(hub.clone(), crate::portal::router(portal));
        let server = tokio::spawn(api::serve(listener, api::Listener::Appliances, tls.clone(), appliances, stop_rx.clone()));
        let op_server = tokio::spawn(api::serve(operators, api::Listener::Operators, tls, operators_app, stop_rx));
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        snapshots.abort();
        crl.abort();
        indexer.abort();
        if let Some(m) = mqtt {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), m).await;
        }
        for t in fleet_tasks {
            t.abort();
        }
        let _ = fleet.flush();
        let _ = server.await;
        let _ = op_server.await;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Every `every` seconds, snapshots each copy that moved, keeps the newest snapshots and drops the
/// archived segments the oldest kept snapshot already contains.
/// Keeps the CRL current: once a third of its validity has passed (or when it cannot be read or
/// checked), writes it again from the registry, signed, with a fresh next update, and asks the
/// broker to read it. Peers that check CRL dates (Mosquitto's OpenSSL) refuse everyone once a
/// CRL lapses, so this runs for as long as the hub does.
async fn crl_upkeep(hub: Arc<Hub>, validity: i64, broker_dir: PathBuf) {
    let every = std::time::Duration::from_secs((validity / 6).clamp(1, 3600) as u64);
    loop {
        let due = match hub.revoked.current() {
            // Written by `cert revoke` or an earlier run with another validity: this run's rules.
            Ok(c) => {
                c.next_update() - now() < validity * 2 / 3
                    || c.next_update() - now() > validity + 60
            }
            Err(_) => true,
        };
        if due {
            let h = hub.clone();
            let written = hub
                .registry
                .call(move |c| -> anyhow::Result<usize> {
                    let (entries, number) = registry::crl_entries(c)?;
                    h.ca.write_crl_valid_for(&entries, number, now(), validity)
                        .map_err(anyhow::Error::msg)?;
                    Ok(entries.len())
                })
                .await;
            match written {
                Ok(Ok(n)) => {
                    tracing::info!(
                        entries = n,
                        valid_for_s = validity,
                        "CRL rewritten before it lapses"
                    );
                    crate::broker::reload(&broker_dir);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot rewrite the CRL; it lapses at its next update unless this is fixed")
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot rewrite the CRL"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn snapshot_loop(hub: Arc<Hub>, every: i64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every as u64));
    tick.tick().await;
    loop {
        tick.tick().await;
        for f in hub.facilities() {
            let (dir, k, keep) = (
                hub.snapshot_dir(&f),
                hub.key.derive(&format!("copy:{f}")),
                hub.settings.snapshots_kept,
            );
            let result = match hub.copy(&f) {
                Ok(w) => w
                    .call(move |c| -> anyhow::Result<Option<u64>> {
                        let taken = snapshot::take(c, &dir, &k)?;
                        if let Some(oldest) = snapshot::retain(&dir, &k, keep)? {
                            copy::prune_archive(c, oldest)?;
                        }
                        Ok(taken.map(|p| p.seq))
                    })
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r),
                Err(e) => Err(e),
            };
            match result {
                Ok(Some(seq)) => tracing::info!(facility = %f, seq, "snapshot taken"),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(facility = %f, error = %format!("{e:#}"), "snapshot failed")
                }
            }
        }
    }
}
