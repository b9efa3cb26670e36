//! The command line's arguments: the subcommands and their flags, with environment overrides.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::load_config;
use crate::config::Config;

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
    pub(super) fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
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
