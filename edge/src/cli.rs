//! The command line of `tsunagi-edge`: raw flags (with environment overrides) in, typed work out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::ingest::{self, watch, Options, Scope, Summary};
use crate::store::{self, Handle, Key};

/// Exit code of `ingest --once` when an alarm was raised (mass disappearance, ransomware surge,
/// an unreadable root): the data is safe, but a person must look.
pub const EXIT_ALARM: u8 = 3;

#[derive(Parser, Debug)]
#[command(name = "tsunagi-edge", version, about = "The tsunagi appliance: mirrors the facility's SS-MIX2 export into an encrypted store")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The store folder (created when absent).
    #[arg(long, env = "TSUNAGI_STORE")]
    pub store: PathBuf,
    /// The key file: 64 hex characters, readable by its owner only (see `keygen`).
    #[arg(long, env = "TSUNAGI_KEY_FILE")]
    pub key_file: PathBuf,
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
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => {
            store::generate_key_file(&out).with_context(|| format!("cannot create key file {}", out.display()))?;
            eprintln!("wrote a new store key to {} (mode 600); keep a copy somewhere safe: without it the store cannot be read", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { store, roots, once, json, rescan_secs, batch_files } => {
            let key = Key::from_file(&store.key_file)?;
            let handle = Handle::start(&store.store, &key)?;
            tracing::info!(version = env!("CARGO_PKG_VERSION"), store = %store.store.display(), roots = roots.len(), once, rescan_secs, "tsunagi-edge ingest starting");
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
                return Ok(if s.alarms.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ALARM) });
            }
            let pace = watch::Pace { rescan: Duration::from_secs(rescan_secs.max(1)), ..Default::default() };
            watch::run(&handle, &opts, &pace, || false, |s| {
                if s.ingested + s.quarantined + s.missing + s.renamed + s.reappeared > 0 || !s.alarms.is_empty() {
                    print(s);
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportSsmix2 { store, to, extended_to } => {
            let key = Key::from_file(&store.key_file)?;
            let conn = store::open_read_only(&store.store, &key)?;
            let e = crate::export::export(&conn, &to, extended_to.as_deref())?;
            println!("exported {} files ({} bytes) to {}", e.files, e.bytes, to.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { store, json } => {
            let key = Key::from_file(&store.key_file)?;
            let conn = store::open_read_only(&store.store, &key)?;
            let s = crate::status::read(&conn).map_err(|e| store::Error::classify(e, &store.store))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{s}");
            }
            Ok(ExitCode::SUCCESS)
        }
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
