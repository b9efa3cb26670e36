//! The command line of `tsunagi-edge`: raw flags (with environment overrides) in, typed work out.

mod args;
mod commands;
mod daemon;

pub use args::{Cli, Command, ConfigArg, TerminalCommand};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use commands::{check, terminal};
use daemon::run_daemon;

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::ingest::{self, watch, Options, Scope, Summary};
use crate::store::{self, Handle};
use crate::{restore, sync};

/// Exit code of `ingest --once` when an alarm was raised (mass disappearance, ransomware surge,
/// an unreadable root): the data is safe, but a person must look.
pub const EXIT_ALARM: u8 = 3;

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path, &|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
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

fn print_summary(s: &Summary) {
    println!(
        "seen {}  ingested {}  unchanged {}  superseded {}  deleted {}  renamed {}  quarantined {} (+{} unchanged)  missing {}  reappeared {}  ignored {}  segments {} (head {})",
        s.seen, s.ingested, s.unchanged, s.superseded, s.deleted, s.renamed, s.quarantined, s.still_quarantined, s.missing, s.reappeared, s.ignored, s.segments, s.last_seq
    );
    for a in &s.alarms {
        println!("ALARM: {a}");
    }
}
