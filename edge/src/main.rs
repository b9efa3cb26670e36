//! `tsunagi-edge`: the appliance's one binary; see `edge::cli` for its subcommands.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The reader thread allocates parsed rows that the store thread frees; glibc's allocator makes
/// those frees wait on a lock (a fifth of ingest time, measured with perf). mimalloc frees to the
/// owning thread's heap without one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    init_logging();
    match edge::cli::run(edge::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, or to the journal with its priorities and fields when `TSUNAGI_LOG=journal`
/// (the image's unit sets it). No patient data is ever logged, whichever the destination.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if std::env::var("TSUNAGI_LOG").as_deref() == Ok("journal") {
        match tracing_journald::layer() {
            Ok(j) => {
                tracing_subscriber::registry().with(filter()).with(j.with_syslog_identifier("tsunagi-edge".into())).init();
                return;
            }
            Err(e) => eprintln!("warning: TSUNAGI_LOG=journal but the journal cannot be reached ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter())
        .init();
}
