//! The command line of `tsunagi-edge`: raw flags (with environment overrides) in, typed work out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::ingest::{self, watch, Options, Scope, Summary};
use crate::store::{self, Handle, Key};
use crate::{restore, sync};

/// Exit code of `ingest --once` when an alarm was raised (mass disappearance, ransomware surge,
/// an unreadable root): the data is safe, but a person must look.
pub const EXIT_ALARM: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "tsunagi-edge",
    version,
    about = "The tsunagi appliance: mirrors the facility's SS-MIX2 export into an encrypted store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The daemon's configuration file; the store and key are taken from it unless given below.
    #[arg(long, env = "TSUNAGI_CONFIG")]
    pub config: Option<PathBuf>,
    /// The store folder (created when absent).
    #[arg(long, env = "TSUNAGI_STORE")]
    pub store: Option<PathBuf>,
    /// The key file: 64 hex characters, readable by its owner only (see `keygen`).
    #[arg(long, env = "TSUNAGI_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store folder and key file, from the flags or else the configuration.
    fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cfg = self.config.as_deref().map(load_config).transpose()?;
        let store = self
            .store
            .clone()
            .or_else(|| cfg.as_ref().map(Config::store_dir));
        let key = self
            .key_file
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.key_file.clone()));
        match (store, key) {
            (Some(s), Some(k)) => Ok((s, k)),
            _ => {
                anyhow::bail!("say which store: --config FILE, or --store DIR with --key-file FILE")
            }
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ConfigArg {
    /// The daemon's configuration file (TOML; see docs/sync.md).
    #[arg(long, env = "TSUNAGI_CONFIG")]
    pub config: PathBuf,
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path, &|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mirror one or more SS-MIX2 roots into the store; keeps watching unless --once.
    Ingest {
        #[command(flatten)]
        store: StoreArgs,
        /// An SS-MIX2 storage root (repeat for volumes split by date or type).
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
        /// Scan once, print a summary and exit.
        #[arg(long)]
        once: bool,
        /// Print summaries as JSON, one object a line.
        #[arg(long)]
        json: bool,
        /// Seconds between full rescans while watching.
        #[arg(long, default_value_t = 300, env = "TSUNAGI_RESCAN_SECS")]
        rescan_secs: u64,
        /// Files a transaction (and outbox segment) holds at most.
        #[arg(long, default_value_t = 512, env = "TSUNAGI_BATCH_FILES")]
        batch_files: usize,
    },
    /// Write the stored SS-MIX2 tree back out, byte for byte, into a new or empty folder.
    #[command(name = "export-ssmix2")]
    ExportSsmix2 {
        #[command(flatten)]
        store: StoreArgs,
        /// Where the standard storage tree goes.
        #[arg(long)]
        to: PathBuf,
        /// Where the extended storage tree goes (needed when the store holds extended files).
        #[arg(long)]
        extended_to: Option<PathBuf>,
    },
    /// Show what the store holds: rows per table, quarantine, alarms, outbox position.
    Status {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create a new random store key file (owner-only; never overwrites).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// The daemon: ingest the configured roots and sync the outbox to the hub until stopped.
    Run(ConfigArg),
    /// Enrol this appliance with the hub using a one-time token from the network office.
    Enroll {
        #[command(flatten)]
        config: ConfigArg,
        /// The hub, as https://host:port.
        #[arg(long)]
        hub: String,
        #[arg(long)]
        token: String,
        /// The SHA-256 fingerprint of the network's root, given with the token.
        #[arg(long)]
        ca_fingerprint: String,
        /// This appliance's id in its certificate (default: the host name).
        #[arg(long)]
        appliance: Option<String>,
    },
    /// Upload the outbox to the hub now, until it holds everything, then exit.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Renew this appliance's certificate now.
    Renew(ConfigArg),
    /// Run every posture check now and show the appliance's and the terminals' states (exit 0
    /// compliant or in grace, 1 non-compliant, 2 a check could not run).
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
        /// Show the kept states without running the checks.
        #[arg(long)]
        no_run: bool,
    },
    /// The facility's terminals, as the LAN proxy knows them.
    Terminal {
        #[command(subcommand)]
        command: TerminalCommand,
    },
    /// Build this facility's store from the hub's copy (a replacement appliance, or a point in time).
    Restore {
        #[command(flatten)]
        config: ConfigArg,
        /// Restore to this segment number.
        #[arg(long, conflicts_with = "to_time")]
        to_seq: Option<u64>,
        /// Restore to the last change captured at or before this time (RFC 3339, UTC).
        #[arg(long)]
        to_time: Option<String>,
        /// Print the plan (snapshot, segments, what is left out) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TerminalCommand {
    /// A one-time code that enrols one terminal: open https://<appliance>/_tsunagi/terminal on it
    /// and enter the code.
    Code {
        #[command(flatten)]
        config: ConfigArg,
        /// The terminal's name, for example 受付PC1.
        #[arg(long)]
        name: String,
        /// How long the code stays valid.
        #[arg(long, default_value = "1d")]
        valid: String,
    },
    /// The enrolled terminals.
    List(ConfigArg),
    /// Forget the terminals enrolled under a name (a terminal replaced or given away).
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
    },
}

fn terminal(command: TerminalCommand) -> anyhow::Result<ExitCode> {
    let open = |c: &ConfigArg| -> anyhow::Result<crate::local::Local> {
        let cfg = load_config(&c.config)?;
        crate::local::Local::open(&cfg.state_dir, &crate::store::read_key(&cfg.key_file)?)
    };
    match command {
        TerminalCommand::Code {
            config,
            name,
            valid,
        } => {
            let secs = shared::time::parse_duration(&valid)
                .map_err(|e| anyhow::anyhow!("--valid: {e}"))?;
            let now = shared::time::now();
            let code = open(&config)?.terminal_code(&name, now, now + secs)?;
            println!("code: {code}");
            println!(
                "valid until {}; on the terminal, open https://<this appliance>{} and enter it",
                shared::time::rfc3339(now + secs),
                crate::proxy::ENROL_PATH
            );
        }
        TerminalCommand::List(config) => {
            for (name, at) in open(&config)?.terminals()? {
                println!("{name}\tenrolled {}", shared::time::rfc3339(at));
            }
        }
        TerminalCommand::Forget { config, name } => {
            let n = open(&config)?.forget_terminal(&name)?;
            println!("forgot {n} terminal(s) named {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => {
            store::generate_key_file(&out)
                .with_context(|| format!("cannot create key file {}", out.display()))?;
            eprintln!("wrote a new store key to {} (mode 600); keep a copy somewhere safe: without it the store cannot be read", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest {
            store,
            roots,
            once,
            json,
            rescan_secs,
            batch_files,
        } => {
            let (store, key_file) = store.resolve()?;
            let key = crate::store::read_key(&key_file)?;
            let handle = Handle::start(&store, &key)?;
            tracing::info!(version = env!("CARGO_PKG_VERSION"), store = %store.display(), roots = roots.len(), once, rescan_secs, "tsunagi-edge ingest starting");
            let mut opts = Options::new(roots);
            opts.batch_files = batch_files.max(1);
            let print = |s: &Summary| {
                if json {
                    println!("{}", serde_json::to_string(s).expect("summary serialises"));
                } else {
                    print_summary(s);
                }
            };
            if once {
                let s = ingest::scan(&handle, &opts, &Scope::Full)?;
                print(&s);
                return Ok(if s.alarms.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_ALARM)
                });
            }
            let pace = watch::Pace {
                rescan: Duration::from_secs(rescan_secs.max(1)),
                ..Default::default()
            };
            watch::run(
                &handle,
                &opts,
                &pace,
                || false,
                |s| {
                    if s.ingested + s.quarantined + s.missing + s.renamed + s.reappeared > 0
                        || !s.alarms.is_empty()
                    {
                        print(s);
                    }
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportSsmix2 {
            store,
            to,
            extended_to,
        } => {
            let (store, key_file) = store.resolve()?;
            let key = crate::store::read_key(&key_file)?;
            let conn = store::open_read_only(&store, &key)?;
            let e = crate::export::export(&conn, &to, extended_to.as_deref())?;
            println!(
                "exported {} files ({} bytes) to {}",
                e.files,
                e.bytes,
                to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { store, json } => {
            let (store, key_file) = store.resolve()?;
            let key = crate::store::read_key(&key_file)?;
            let conn = store::open_read_only(&store, &key)?;
            let s = crate::status::read(&conn).map_err(|e| store::Error::classify(e, &store))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{s}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(c) => run_daemon(load_config(&c.config)?),
        Command::Terminal { command } => terminal(command),
        Command::Check {
            config,
            json,
            no_run,
        } => check(&load_config(&config.config)?, json, no_run),
        Command::Enroll {
            config,
            hub,
            token,
            ca_fingerprint,
            appliance,
        } => {
            let cfg = load_config(&config.config)?;
            let appliance = appliance.unwrap_or_else(identity::default_appliance);
            let id = runtime()?.block_on(identity::enroll(
                &cfg.identity_dir(),
                &hub,
                &token,
                &ca_fingerprint,
                &appliance,
                &cfg.proxy.names,
                &cfg.key_store,
            ))?;
            println!(
                "enrolled appliance {} for facility {} {}",
                id.cert.appliance, id.cert.facility, id.enrolment.facility_name
            );
            println!(
                "certificate {} valid until {}",
                id.cert.serial,
                shared::time::rfc3339(id.cert.not_after)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Renew(c) => {
            let cfg = load_config(&c.config)?;
            let mut id = Identity::load(&cfg.identity_dir())?;
            runtime()?.block_on(identity::renew(&mut id, cfg.hub_url.as_deref()))?;
            println!(
                "renewed: certificate {} valid until {}",
                id.cert.serial,
                shared::time::rfc3339(id.cert.not_after)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { config } => {
            let cfg = load_config(&config.config)?;
            let key = crate::store::read_key(&cfg.key_file)?;
            let handle = Arc::new(Handle::start(&cfg.store_dir(), &key)?);
            let rt = runtime()?;
            let (n, bytes) = rt.block_on(async {
                identity::settle(&cfg.identity_dir(), cfg.hub_url.as_deref()).await?;
                sync::syncer(
                    handle.clone(),
                    &cfg.identity_dir(),
                    cfg.hub_url.clone(),
                    cfg.sync.clone(),
                )?
                .until_caught_up()
                .await
            })?;
            let (seq, _) = handle.call(|c| crate::outbox::hub_position(c))??;
            println!("sent {n} segments ({bytes} bytes); the hub's copy is at segment {seq}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            config,
            to_seq,
            to_time,
            dry_run,
        } => {
            let cfg = load_config(&config.config)?;
            let id = Identity::load(&cfg.identity_dir())?;
            let target = restore::Target { to_seq, to_time };
            let rt = runtime()?;
            if dry_run {
                let plan = rt.block_on(restore::plan(&id, cfg.hub_url.as_deref(), &target))?;
                print!("restore plan for facility {}:\n{plan}", id.cert.facility);
                return Ok(ExitCode::SUCCESS);
            }
            let key = crate::store::read_key(&cfg.key_file)?;
            let r = rt.block_on(restore::restore(
                &id,
                cfg.hub_url.as_deref(),
                &target,
                &cfg.store_dir(),
                &key,
            ))?;
            println!(
                "restored facility {} to segment {} ({} snapshot chunks, {} segments, {} bytes received) into {}",
                id.cert.facility, r.seq, r.snapshot_frames, r.segments, r.bytes, cfg.store_dir().display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The daemon: the ingest watcher on its own thread, sync (once enrolled) on the async runtime,
/// until SIGTERM or SIGINT; then both finish what they are doing and stop.
fn run_daemon(mut cfg: Config) -> anyhow::Result<ExitCode> {
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

/// The posture checks' context for this configuration.
fn policy_context(cfg: &Config) -> crate::policy::Context {
    let port = |a: &Option<String>| {
        a.as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
    };
    crate::policy::Context {
        settings: cfg.policy.clone(),
        state_dir: cfg.state_dir.clone(),
        identity_dir: cfg.identity_dir(),
        own_ports: [port(&cfg.proxy.listen), port(&cfg.proxy.plain_listen)]
            .into_iter()
            .flatten()
            .collect(),
        probe: crate::policy::Probe {
            dir: cfg.policy.probe_dir.clone(),
        },
    }
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

fn check(cfg: &Config, json: bool, no_run: bool) -> anyhow::Result<ExitCode> {
    let key = crate::store::read_key(&cfg.key_file)?;
    let local = crate::local::Local::open(&cfg.state_dir, &key)?;
    let now = shared::time::now();
    let p = if no_run {
        crate::policy::current(&local, now, &cfg.policy)?
    } else {
        crate::policy::run_due(&policy_context(cfg), &local, now, true)?.0
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "appliance posture: {} ({})",
            p.state.label(),
            p.state.code()
        );
        for c in &p.checks {
            println!(
                "  {:<16} {:<14} {}",
                c.check,
                c.state.code(),
                c.outcome.summary
            );
            if (c.state != crate::policy::State::Compliant
                || c.outcome.status == crate::policy::Status::Warn)
                && !c.outcome.remediation.is_empty()
            {
                println!("  {:<16} {:<14} → {}", "", "", c.outcome.remediation);
            }
        }
        println!("terminals: {}", p.terminals.len());
        for t in &p.terminals {
            println!(
                "  {:<16} {:<14} {}",
                t.name,
                if t.known { t.state.code() } else { "unknown" },
                t.summary
            );
        }
        let events = local.recent_events(5)?;
        if !events.is_empty() {
            println!("recent changes:");
            for e in events {
                println!(
                    "  {} {} {} → {}: {}",
                    shared::time::rfc3339(e.at),
                    e.subject,
                    e.from.map(|s| s.code()).unwrap_or("-"),
                    e.to.code(),
                    e.summary
                );
            }
        }
    }
    Ok(ExitCode::from(match p.state {
        crate::policy::State::Compliant | crate::policy::State::InGrace => 0,
        crate::policy::State::NonCompliant => 1,
        crate::policy::State::Error => 2,
    }))
}

fn print_summary(s: &Summary) {
    println!(
        "seen {}  ingested {}  unchanged {}  superseded {}  deleted {}  renamed {}  quarantined {} (+{} unchanged)  missing {}  reappeared {}  ignored {}  segments {} (head {})",
        s.seen, s.ingested, s.unchanged, s.superseded, s.deleted, s.renamed, s.quarantined, s.still_quarantined, s.missing, s.reappeared, s.ignored, s.segments, s.last_seq
    );
    for a in &s.alarms {
        println!("ALARM: {a}");
    }
}
