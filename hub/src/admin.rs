//! The network office's commands on `region.db`: people's accounts (`user add | disable | enable |
//! reset | list`), core hospitals (`facility core`), and the audit chain (`audit verify`). Each
//! change is audited as done from the command line.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::account::{self, Role};
use crate::audit::{self, Verdict};

use crate::{consent, now, region};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a person. Prints a temporary password, to be changed at first login.
    Add {
        /// The login ID: 3 to 32 of a-z, 0-9, '.', '_', '-'. One person, one ID.
        #[arg(long)]
        login: String,
        /// The person's name, as the portal shows it.
        #[arg(long)]
        name: String,
        /// office, facility-admin, doctor, nurse, pharmacist, clerk or operator.
        #[arg(long)]
        role: String,
        /// The 10-digit facility code (not for office and operator).
        #[arg(long, default_value = "")]
        facility: String,
        /// Read the first password from this file instead of generating one (it must still be
        /// changed at first login).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// Disable a person; their sessions end at their next request.
    Disable {
        #[arg(long)]
        login: String,
    },
    /// Enable a disabled person again.
    Enable {
        #[arg(long)]
        login: String,
    },
    /// Set a new temporary password and lift a lock. Prints the password.
    Reset {
        #[arg(long)]
        login: String,
    },
    /// List people, optionally of one facility.
    List {
        #[arg(long)]
        facility: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FacilityCommand {
    /// Mark a facility as a core hospital (may open records without consent in an emergency), or
    /// with --off, unmark it.
    Core {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the audit log's hash chain from the first row; exit 1 at the first row that does not
    /// match.
    Verify,
}

fn open(data: &Path) -> anyhow::Result<rusqlite::Connection> {
    let key = crate::key::read(&data.join("hub.key"))?;
    region::open(data, &key.derive("region"))
}

fn cli_event(action: &str, detail: String) -> audit::Event {
    audit::Event {
        login: "cli".into(),
        terminal: "command line".into(),
        action: action.into(),
        detail,
        outcome: "ok".into(),
        ..Default::default()
    }
}

/// Applies `change` and its audit event in one transaction.
fn audited<T>(
    c: &mut rusqlite::Connection,
    e: audit::Event,
    change: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<Result<T, account::Error>>,
) -> anyhow::Result<T> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = change(&tx)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    audit::append(&tx, crate::portal::now_ms(), &e)?;
    tx.commit()?;
    Ok(out)
}

pub fn user(data: &Path, command: UserCommand) -> anyhow::Result<ExitCode> {
    let mut c = open(data)?;
    match command {
        UserCommand::Add {
            login,
            name,
            role,
            facility,
            password_file,
        } => {
            let role = Role::parse(&role).map_err(anyhow::Error::msg)?;
            let password = match password_file {
                Some(f) => {
                    let p = std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    account::check_password(&p).map_err(|m| {
                        anyhow::anyhow!("the password in {} breaks the rules: {m}", f.display())
                    })?;
                    p
                }
                None => account::temporary_password(),
            };
            let verifier = account::hash_password(&password);
            let e = cli_event(
                "user-add",
                format!("login={login} facility={facility} role={}", role.code()),
            );
            audited(&mut c, e, |tx| {
                account::add(tx, &login, &name, &facility, role, &verifier, "cli", now())
            })?;
            println!(
                "added {login} ({}){}",
                role.code(),
                if facility.is_empty() {
                    String::new()
                } else {
                    format!(" at facility {facility}")
                }
            );
            println!("temporary password: {password}");
            println!("it must be changed at first login");
        }
        UserCommand::Disable { login } => {
            let e = cli_event("user-disable", format!("login={login}"));
            audited(&mut c, e, |tx| account::disable(tx, &login, now()))?;
            println!("disabled {login}");
        }
        UserCommand::Enable { login } => {
            let e = cli_event("user-enable", format!("login={login}"));
            audited(&mut c, e, |tx| account::enable(tx, &login))?;
            println!("enabled {login}");
        }
        UserCommand::Reset { login } => {
            let password = account::temporary_password();
            let verifier = account::hash_password(&password);
            let e = cli_event("user-reset", format!("login={login}"));
            audited(&mut c, e, |tx| account::reset(tx, &login, &verifier, now()))?;
            println!("reset {login}; temporary password: {password}");
            println!("it must be changed at first login");
        }
        UserCommand::List { facility } => {
            println!(
                "{:<20} {:<15} {:<11} {:<10} NAME",
                "LOGIN", "ROLE", "FACILITY", "STATE"
            );
            for u in account::list(&c, facility.as_deref())? {
                let state = if u.disabled_at.is_some() {
                    "disabled"
                } else if u.locked_until.is_some_and(|t| t > now()) {
                    "locked"
                } else if u.must_change {
                    "first-login"
                } else {
                    "active"
                };
                println!(
                    "{:<20} {:<15} {:<11} {:<10} {}",
                    u.login,
                    u.role.code(),
                    u.facility,
                    state,
                    u.name
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn facility(data: &Path, command: FacilityCommand) -> anyhow::Result<ExitCode> {
    let mut c = open(data)?;
    match command {
        FacilityCommand::Core { facility, off } => {
            provisioning::token::check_facility(&facility).map_err(anyhow::Error::msg)?;
            let e = cli_event(
                "facility-core",
                format!("facility={facility} core={}", !off),
            );
            audited(&mut c, e, |tx| {
                Ok(Ok(consent::set_core(tx, &facility, !off, now())?))
            })?;
            println!(
                "{facility} is {}a core hospital",
                if off { "no longer " } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn audit(data: &Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let c = open(data)?;
    match command {
        AuditCommand::Verify => match audit::verify(&c)? {
            Verdict::Intact { rows } => {
                println!("audit log intact: {rows} rows, chain verified");
                // The head, to write down or publish: a later verify that shows an earlier head
                // means rows were cut off the end.
                if let Some((seq, hash)) = audit::head(&c)? {
                    println!("head: row {seq}, hash {}", shared::chain::hex(&hash));
                }
                Ok(ExitCode::SUCCESS)
            }
            Verdict::Broken { seq, why } => {
                println!("audit log BROKEN at row {seq}: {why}");
                println!("the log was changed outside the hub; keep this database as evidence and restore region.db from a backup");
                Ok(ExitCode::from(1))
            }
        },
    }
}
