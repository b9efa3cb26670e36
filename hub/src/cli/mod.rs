//! The command line of `tsunagi-hub`: the CA, enrolment tokens, certificates, the server, and the
//! failover copies. Everything lives under one data folder.

mod args;
mod broker;
mod ca;
mod certs;
mod copy;
mod serve;

pub use args::{
    BrokerCommand, CaCommand, CertCommand, Cli, Command, CopyCommand, ServeArgs, TokenCommand,
};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::db;
use crate::key::{self, Key};

fn ca_dir(data: &Path) -> PathBuf {
    data.join("ca")
}

fn hub_key(data: &Path) -> anyhow::Result<Key> {
    crate::key::read(&data.join("hub.key"))
}

fn registry(data: &Path) -> anyhow::Result<rusqlite::Connection> {
    db::open(
        &data.join(crate::registry::FILE),
        &hub_key(data)?.derive("registry"),
        crate::registry::MIGRATIONS,
    )
}

fn time(t: i64) -> String {
    shared::time::rfc3339(t)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = cli.data;
    match cli.command {
        Command::Keygen { out } => {
            let out = out.unwrap_or_else(|| data.join("hub.key"));
            if let Some(d) = out.parent() {
                std::fs::create_dir_all(d)?;
            }
            key::generate(&out).with_context(|| format!("cannot create {}", out.display()))?;
            eprintln!("wrote a new hub key to {} (mode 600); back it up apart from the copies: without it they cannot be read", out.display());
        }
        Command::Ca { command } => ca::ca_command(&data, command)?,
        Command::Token { command } => certs::token_command(&data, command)?,
        Command::Cert { command } => certs::cert_command(&data, command)?,
        Command::Serve(args) => serve::serve(data, args)?,
        Command::Copy { command } => return copy::copy_command(&data, command),
        Command::User { command } => return crate::admin::user(&data, command),
        Command::Facility { command } => return crate::admin::facility(&data, command),
        Command::Audit { command } => return crate::admin::audit(&data, command),
        Command::Broker { command } => broker::broker_command(&data, command)?,
    }
    Ok(ExitCode::SUCCESS)
}
