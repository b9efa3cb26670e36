//! `tsunagi-hub`: parses the command line and runs it; logs go to stderr.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match hub::cli::run(hub::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tsunagi-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
