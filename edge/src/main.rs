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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match edge::cli::run(edge::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
