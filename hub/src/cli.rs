//! The command line of `tsunagi-hub`: the CA, enrolment tokens, certificates, the server, and the
//! failover copies. Everything lives under one data folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use provisioning::Ca;

use crate::api;
use crate::key::Key;
use crate::state::{self, Hub, Settings};
use crate::tls::Revocations;
use crate::{copy, db, key, now, registry, snapshot};

#[derive(Parser, Debug)]
#[command(
    name = "tsunagi-hub",
    version,
    about = "The tsunagi hub: the network CA, the appliances' API and the facilities' failover copies"
)]
pub struct Cli {
    /// The hub's data folder: ca/, hub.key, registry.db, copies/, snapshots/.
    #[arg(
        long,
        global = true,
        env = "TSUNAGI_HUB_DATA",
        default_value = "/var/lib/tsunagi-hub"
    )]
    pub data: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start")]
pub enum Command {
    /// Create the hub's own key (owner-only; never overwrites). Default: DATA/hub.key.
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The network's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// One-time enrolment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Issued certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Serve the appliances' API over HTTPS with client certificates.
    Serve(ServeArgs),
    /// The facilities' failover copies.
    Copy {
        #[command(subcommand)]
        command: CopyCommand,
    },
    /// People's portal accounts.
    User {
        #[command(subcommand)]
        command: crate::admin::UserCommand,
    },
    /// Facilities' roles in the network.
    Facility {
        #[command(subcommand)]
        command: crate::admin::FacilityCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: crate::admin::AuditCommand,
    },
    /// The MQTT broker (Mosquitto) that carries the appliances' telemetry.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BrokerCommand {
    /// Write Mosquitto's configuration (TLS with client certificates from the network CA, the
    /// CRL, the certificate's facility code as the user name, the per-facility ACL) and the
    /// hub's own client certificate into a folder (default DATA/broker).
    Setup {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where Mosquitto listens for appliances (default: as the folder's configuration says,
        /// or 127.0.0.1:8883).
        #[arg(long)]
        listen: Option<String>,
        /// Names the broker's server certificate carries; repeat for more (default: the names of
        /// the folder's current certificate, or localhost and 127.0.0.1).
        #[arg(long = "name")]
        names: Vec<String>,
        /// The user Mosquitto runs as (default: the user running this command).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create the root, the issuing CA and the LAN issuing CA (ECDSA P-256, keys owner-only).
    /// Default folder: DATA/ca. The root key is not needed again: move `root.key` offline.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The network's name, written into the CA's certificates.
        #[arg(long, default_value = "tsunagi")]
        network: String,
        /// The DNS domain the LAN issuing CA is constrained to (give `serve` the same).
        #[arg(long, default_value = "tsunagi.internal")]
        lan_domain: String,
    },
    /// Print the root's SHA-256 fingerprint, which appliances are given at enrolment.
    Fingerprint,
    /// The issuing CAs honoured (the current one and those it replaced), and how many
    /// certificates of each are still in use.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace the issuing CA with a new one under the same root (needs `root.key` back in the
    /// CA folder, and the hub stopped). Certificates from the replaced one stay valid until it
    /// is withdrawn; new ones come from the new one. See docs/security.md.
    RotateIssuing,
    /// Withdraw a replaced issuing CA once none of its certificates is in use (the hub stopped):
    /// from then on every certificate it issued is refused.
    WithdrawIssuing {
        /// Its serial, as `ca list` shows it.
        #[arg(long)]
        serial: String,
        /// The broker's folder, as given to `broker setup --dir` (default DATA/broker).
        #[arg(long)]
        broker_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a one-time enrolment token for a facility.
    Create {
        /// The 10-digit medical-institution code.
        #[arg(long)]
        facility: String,
        /// The facility's name.
        #[arg(long)]
        name: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "7d")]
        valid: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// List issued certificates.
    List {
        #[arg(long)]
        facility: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate by serial, or every certificate of a facility; rewrites the CRL.
    Revoke {
        #[arg(long, required_unless_present = "facility")]
        serial: Option<String>,
        #[arg(long)]
        facility: Option<String>,
    },
    /// Free a private address for another facility's LAN certificate (the first facility issued
    /// one holds it). Revoke the old holder's LAN certificate too if it should stop working.
    ReleaseAddress {
        #[arg(long)]
        address: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CopyCommand {
    /// Check a copy: SQLite integrity, SQLCipher page authentication, the segment hash chain, and
    /// that every snapshot opens at the position it claims.
    Verify {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        json: bool,
    },
    /// Take a snapshot of a copy now.
    Snapshot {
        #[arg(long)]
        facility: String,
    },
    /// List the copies with their positions and snapshots.
    List,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address the appliances connect to (their API, and the portal for the people behind them).
    #[arg(long, default_value = "127.0.0.1:8443", env = "TSUNAGI_HUB_LISTEN")]
    pub listen: String,
    /// Address of the operators' listener: the portal for the network office and the hub's
    /// operators, who log in without an appliance. Keep it on the operators' network.
    #[arg(
        long,
        default_value = "127.0.0.1:8444",
        env = "TSUNAGI_HUB_OPERATOR_LISTEN"
    )]
    pub operator_listen: String,
    /// The DNS domain of appliances' LAN host names: an appliance of facility F may name itself
    /// under F.<domain> (and by private addresses). The LAN issuing CA is made for it the first
    /// time the hub serves and is constrained to it.
    #[arg(
        long,
        default_value = "tsunagi.internal",
        env = "TSUNAGI_HUB_LAN_DOMAIN"
    )]
    pub lan_domain: String,
    /// Names the server certificate carries (DNS names or IP addresses); repeat for more.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    pub names: Vec<String>,
    /// Lifetime of the client certificates the hub issues.
    #[arg(long, default_value = "90d", env = "TSUNAGI_HUB_CERT_LIFETIME")]
    pub client_cert_lifetime: String,
    /// How often each copy is snapshotted.
    #[arg(long, default_value = "24h", env = "TSUNAGI_HUB_SNAPSHOT_EVERY")]
    pub snapshot_every: String,
    /// How many snapshots of each copy are kept; segments older than the oldest are dropped.
    #[arg(long, default_value_t = 7)]
    pub snapshots_kept: usize,
    /// Largest upload the hub reads, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body: usize,
    /// Portal sessions end after this long without a request (the networks' rule is 5 minutes;
    /// it may be set lower).
    #[arg(long, default_value = "5m", env = "TSUNAGI_HUB_SESSION_IDLE")]
    pub session_idle: String,
    /// How long a core hospital's emergency access lasts.
    #[arg(long, default_value = "60m")]
    pub emergency_for: String,
    /// The MQTT broker the fleet view listens to, as mqtts://host:port (see `broker setup`).
    #[arg(long, env = "TSUNAGI_HUB_BROKER")]
    pub broker: Option<String>,
    /// The folder `broker setup` wrote (the hub's client certificate). Default: DATA/broker.
    #[arg(long)]
    pub broker_dir: Option<PathBuf>,
    /// Plain-HTTP address of Prometheus' /metrics (keep it on loopback or the operators' network).
    #[arg(
        long,
        default_value = "127.0.0.1:9464",
        env = "TSUNAGI_HUB_METRICS_LISTEN"
    )]
    pub metrics_listen: String,
    /// Alert when an appliance has been offline this long.
    #[arg(long, default_value = "15m")]
    pub alert_offline: String,
    /// Alert when the hub's copy is this many segments behind an appliance.
    #[arg(long, default_value_t = 1000)]
    pub alert_lag: u64,
    /// POST alerts (JSON) to this http:// address when they start and end.
    #[arg(long, env = "TSUNAGI_HUB_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// How long each CRL the hub writes is valid; the hub writes a fresh one once a third of it
    /// has passed, and tells the broker, so the CRL never lapses while the hub runs.
    #[arg(long, default_value = "30d", env = "TSUNAGI_HUB_CRL_VALIDITY")]
    pub crl_validity: String,
}

fn ca_dir(data: &Path) -> PathBuf {
    data.join("ca")
}

fn hub_key(data: &Path) -> anyhow::Result<Key> {
    crate::key::read(&data.join("hub.key"))
}

fn registry(data: &Path) -> anyhow::Result<rusqlite::Connection> {
    db::open(
        &data.join(registry::FILE),
        &hub_key(data)?.derive("registry"),
        registry::MIGRATIONS,
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
        Command::Ca {
            command:
                CaCommand::Init {
                    dir,
                    network,
                    lan_domain,
                },
        } => {
            let dir = dir.unwrap_or_else(|| ca_dir(&data));
            let mut ca = Ca::init(&dir, &network, now()).map_err(anyhow::Error::msg)?;
            ca.ensure_lan(&lan_domain, now())
                .map_err(anyhow::Error::msg)?;
            println!("created the {network} CA in {}", dir.display());
            println!("LAN issuing CA: constrained to {lan_domain} and private addresses");
            println!("root fingerprint (SHA-256): {}", ca.fingerprint());
        }
        Command::Ca {
            command: CaCommand::Fingerprint,
        } => {
            println!(
                "{}",
                Ca::load(&ca_dir(&data))
                    .map_err(anyhow::Error::msg)?
                    .fingerprint()
            );
        }
        Command::Ca {
            command: CaCommand::List { json },
        } => {
            let ca = Ca::load(&ca_dir(&data)).map_err(anyhow::Error::msg)?;
            let conn = registry(&data)?;
            let mut rows = Vec::new();
            for c in ca.issuing_cas() {
                let in_use = registry::in_use_from(&conn, &c.serial, now())?.len();
                rows.push((c, in_use));
            }
            if json {
                let list: Vec<_> = rows.iter().map(|(c, n)| serde_json::json!({"serial": c.serial, "subject": c.subject, "not_after": c.not_after, "current": c.current, "in_use": n})).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (c, n) in rows {
                    let state = if c.current { "current" } else { "previous" };
                    println!(
                        "{}  {state:<8}  until {}  {n} certificates in use  {}",
                        c.serial,
                        time(c.not_after),
                        c.subject
                    );
                }
            }
        }
        Command::Ca {
            command: CaCommand::RotateIssuing,
        } => {
            let dir = ca_dir(&data);
            let _lock = serve_lock(&dir).map_err(|e| anyhow::anyhow!("{e}: stop `tsunagi-hub serve` first; it signs with the issuing CA this replaces"))?;
            // Rows from before the registry kept issuers are the current CA's (there was only
            // ever one): marked before anything changes, so no crash can leave them unmarked.
            let conn = registry(&data)?;
            let current = Ca::load(&dir)
                .map_err(anyhow::Error::msg)?
                .issuing_serial()
                .to_string();
            let assigned = registry::assign_issuer(&conn, &current)?;
            let (old, new) = Ca::rotate_issuing(&dir, now()).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let (entries, number) = registry::crl_entries(&conn)?;
            ca.write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            let in_use = registry::in_use_from(&conn, &old, now())?.len();
            println!("new issuing CA: {new}");
            println!("replaced:       {old} (kept in {}; {in_use} certificates from it in use, {assigned} earlier rows marked as its)", dir.join("previous").display());
            println!("wrote the CRL, once signed by each");
            println!("next:");
            println!("  1. move {} offline again", dir.join("root.key").display());
            println!("  2. tsunagi-hub broker setup (same options as before), then restart Mosquitto: its certificate and the hub's client certificate come from the new CA");
            println!("  3. start the hub: its server certificate comes from the new CA; appliances get theirs at their next renewal (or the fleet page's renew)");
            println!("  4. when `tsunagi-hub ca list` shows none in use from {old}: tsunagi-hub ca withdraw-issuing --serial {old}");
        }
        Command::Ca {
            command: CaCommand::WithdrawIssuing { serial, broker_dir },
        } => {
            let dir = ca_dir(&data);
            let _lock = serve_lock(&dir)
                .map_err(|e| anyhow::anyhow!("{e}: stop `tsunagi-hub serve` first"))?;
            let serial = serial.trim().to_ascii_lowercase();
            let broker_dir = broker_dir.unwrap_or_else(|| data.join("broker"));
            let conn = registry(&data)?;
            let unknown = registry::unknown_issuer(&conn, now())?;
            if unknown > 0 {
                anyhow::bail!("{unknown} certificates in use have no issuer recorded (from before the registry kept one): run `tsunagi-hub ca rotate-issuing` to completion first, which records them");
            }
            let in_use = registry::in_use_from(&conn, &serial, now())?;
            if !in_use.is_empty() {
                let list: Vec<String> = in_use
                    .iter()
                    .take(10)
                    .map(|c| format!("{} {} {} ({})", c.facility, c.appliance, c.how, c.serial))
                    .collect();
                anyhow::bail!(
                    "{} certificates from {serial} are still in use, among them: {}. Have those appliances renew (`tsunagi-edge renew`, or the fleet page's renew), or revoke them (`tsunagi-hub cert revoke`), then withdraw",
                    in_use.len(),
                    list.join("; ")
                );
            }
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let withdrawn = ca.issuing_cas().into_iter().find(|c| c.serial == serial);
            if let Some(w) = &withdrawn {
                if !broker_dir.join(crate::broker::SERVER_PEM).exists() {
                    eprintln!("no broker certificates in {}: if the broker's folder is elsewhere, give --broker-dir", broker_dir.display());
                }
                for file in [crate::broker::SERVER_PEM, crate::broker::HUB_CLIENT] {
                    let path = broker_dir.join(file);
                    if let Ok(pem) = std::fs::read(&path) {
                        if provisioning::cert::issued_by(&pem, &w.der) {
                            anyhow::bail!("{} is from {serial}: run `tsunagi-hub broker setup` again (and restart Mosquitto) first", path.display());
                        }
                    }
                }
            }
            Ca::withdraw_issuing(&dir, &serial).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&dir).map_err(anyhow::Error::msg)?;
            let (entries, number) = registry::crl_entries(&conn)?;
            ca.write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            println!("withdrew the issuing CA {serial}: the CRL no longer answers for it, so every certificate it issued is refused");
            if let Some(pid) = crate::broker::reload(&broker_dir) {
                println!("asked the MQTT broker (pid {pid}) to read the CRL again");
            }
            println!("restart Mosquitto to end sessions already open on such certificates (a reload refuses only new ones)");
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    facility,
                    name,
                    valid,
                },
        } => {
            provisioning::token::check_facility(&facility).map_err(anyhow::Error::msg)?;
            let valid = shared::time::parse_duration(&valid).map_err(anyhow::Error::msg)?;
            let ca = Ca::load(&ca_dir(&data)).map_err(anyhow::Error::msg)?;
            let token = provisioning::token::generate();
            let t = now();
            registry::create_token(
                &registry(&data)?,
                &facility,
                &name,
                &provisioning::token::hash(&token),
                t,
                t + valid,
            )?;
            println!("token:       {token}");
            println!("facility:    {facility} {name}");
            println!("valid until: {}", time(t + valid));
            println!("fingerprint: {}", ca.fingerprint());
            println!("on the appliance: tsunagi-edge enroll --hub URL --token {token} --ca-fingerprint {}", ca.fingerprint());
        }
        Command::Cert {
            command: CertCommand::List { facility, json },
        } => {
            let certs = registry::certs(&registry(&data)?, facility.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                for c in certs {
                    let state = match c.revoked_at {
                        Some(r) => format!("revoked {}", time(r)),
                        None if c.not_after < now() => "expired".into(),
                        None => "valid".into(),
                    };
                    println!(
                        "{}  {}  {:<16} {:<6} until {}  {state}",
                        c.serial,
                        c.facility,
                        c.appliance,
                        c.how,
                        time(c.not_after)
                    );
                }
            }
        }
        Command::Cert {
            command: CertCommand::Revoke { serial, facility },
        } => {
            let ca = Ca::load(&ca_dir(&data)).map_err(anyhow::Error::msg)?;
            let conn = registry(&data)?;
            let revoked = registry::revoke(&conn, serial.as_deref(), facility.as_deref(), now())?;
            if revoked.is_empty() {
                anyhow::bail!("no valid certificate matches; see `tsunagi-hub cert list`");
            }
            let (entries, number) = registry::crl_entries(&conn)?;
            let path = ca
                .write_crl(&entries, number, now())
                .map_err(anyhow::Error::msg)?;
            for s in &revoked {
                println!("revoked {s}");
            }
            println!("wrote the CRL ({} entries) to {}; the running hub refuses these certificates from now on", entries.len(), path.display());
            if let Some(pid) = crate::broker::reload(&data.join("broker")) {
                println!("asked the MQTT broker (pid {pid}) to read the CRL again");
            }
        }
        Command::Cert {
            command: CertCommand::ReleaseAddress { address },
        } => {
            if registry::release_lan_address(&registry(&data)?, &address)? {
                println!("released {address}: the next facility to ask may be issued it");
            } else {
                anyhow::bail!("no facility holds {address}");
            }
        }
        Command::Serve(args) => serve(data, args)?,
        Command::Copy { command } => return copy_command(&data, command),
        Command::User { command } => return crate::admin::user(&data, command),
        Command::Facility { command } => return crate::admin::facility(&data, command),
        Command::Audit { command } => return crate::admin::audit(&data, command),
        Command::Broker {
            command:
                BrokerCommand::Setup {
                    dir,
                    listen,
                    names,
                    user,
                },
        } => {
            let ca = Ca::load(&ca_dir(&data)).map_err(anyhow::Error::msg)?;
            let dir = std::path::absolute(dir.unwrap_or_else(|| data.join("broker")))?;
            // Run again (after `ca rotate-issuing`, say), it keeps what the folder had.
            let (was_listen, was_names) = crate::broker::current(&dir);
            let listen = listen
                .or(was_listen)
                .unwrap_or_else(|| "127.0.0.1:8883".into());
            let names = if !names.is_empty() {
                names
            } else if !was_names.is_empty() {
                was_names
            } else {
                vec!["localhost".into(), "127.0.0.1".into()]
            };
            let user = user
                .or_else(|| {
                    nix::unistd::User::from_uid(nix::unistd::getuid())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                })
                .unwrap_or_else(|| "mosquitto".into());
            crate::broker::setup(
                &ca,
                &crate::broker::Setup {
                    dir: dir.clone(),
                    listen: listen.clone(),
                    names,
                    user,
                },
                now(),
            )?;
            println!("wrote {}", dir.join(crate::broker::CONF).display());
            println!(
                "start the broker with: mosquitto -c {}",
                dir.join(crate::broker::CONF).display()
            );
            println!(
                "then serve with: tsunagi-hub serve --broker mqtts://{listen} --broker-dir {}",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_copy(data: &Path, facility: &str) -> anyhow::Result<(rusqlite::Connection, key::Key)> {
    provisioning::token::check_facility(facility).map_err(anyhow::Error::msg)?;
    let path = state::copy_path(data, facility);
    if !path.exists() {
        anyhow::bail!(
            "there is no copy of facility {facility} in {} (has its appliance synced?)",
            data.display()
        );
    }
    let k = hub_key(data)?.derive(&format!("copy:{facility}"));
    Ok((db::open(&path, &k, shared::schema::MIGRATIONS)?, k))
}

fn copy_command(data: &Path, command: CopyCommand) -> anyhow::Result<ExitCode> {
    match command {
        CopyCommand::Verify { facility, json } => {
            let (conn, k) = open_copy(data, &facility)?;
            let mut report = copy::verify(&conn)?;
            let snaps = snapshot::list(&state::snapshot_dir(data, &facility), &k);
            match &snaps {
                Ok(list) => {
                    for s in list {
                        let held: Option<Vec<u8>> =
                            rusqlite::OptionalExtension::optional(conn.query_row(
                                "SELECT hash FROM outbox WHERE seq = ?1",
                                [s.seq as i64],
                                |r| r.get(0),
                            ))?;
                        if held.is_some_and(|h| h[..] != s.hash[..]) {
                            report.problems.push(format!(
                                "snapshot {}: its position does not match segment {} of the chain",
                                s.seq, s.seq
                            ));
                        }
                    }
                }
                Err(e) => report.problems.push(format!("snapshots: {e:#}")),
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "copy of {facility}: segment {} ({})",
                    report.position.seq,
                    shared::chain::hex(&report.position.hash)
                );
                println!(
                    "archived segments: {} (from {:?})",
                    report.archived, report.first_archived
                );
                println!(
                    "snapshots: {}",
                    snaps
                        .as_ref()
                        .map(|s| s
                            .iter()
                            .map(|s| s.seq.to_string())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
                if report.problems.is_empty() {
                    println!("ok");
                }
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        CopyCommand::Snapshot { facility } => {
            let (conn, k) = open_copy(data, &facility)?;
            match snapshot::take(&conn, &state::snapshot_dir(data, &facility), &k)? {
                Some(p) => println!("snapshot of {facility} at segment {}", p.seq),
                None => println!(
                    "a snapshot at the copy's position already exists (or the copy is empty)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        CopyCommand::List => {
            for f in state::facilities(data) {
                let (conn, k) = open_copy(data, &f)?;
                let p = copy::position(&conn)?;
                let snaps = snapshot::list(&state::snapshot_dir(data, &f), &k)?;
                println!(
                    "{f}  segment {:>8}  snapshots {}",
                    p.seq,
                    snaps
                        .iter()
                        .map(|s| s.seq.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The lock a serving hub holds on its CA folder, so that the issuing CA is not replaced under
/// it (`ca rotate-issuing` and `ca withdraw-issuing` take it too). Released when the process ends.
fn serve_lock(ca_dir: &std::path::Path) -> Result<std::fs::File, String> {
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

fn serve(data: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
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
