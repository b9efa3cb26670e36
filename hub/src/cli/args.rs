//! The command line's arguments: `Cli`, its subcommands and their flags, with environment
//! overrides. The doc comments on the fields are the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
