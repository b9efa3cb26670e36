//! The daemon's configuration: a TOML file (unknown keys refused), then a short list of
//! environment overrides, resolved into typed settings with messages that name the key and the fix.
//!
//! Environment overrides (each replaces the file's value):
//!
//! | variable                 | key                    |
//! |--------------------------|------------------------|
//! | `TSUNAGI_STATE_DIR`      | `state_dir`            |
//! | `TSUNAGI_KEY_FILE`       | `key_file`             |
//! | `TSUNAGI_ROOTS`          | `ingest.roots` (`:`-separated) |
//! | `TSUNAGI_HUB_URL`        | `hub.url`              |
//! | `TSUNAGI_BANDWIDTH`      | `sync.bandwidth_limit` |
//! | `TSUNAGI_RETENTION`      | `sync.retention`       |
//! | `TSUNAGI_PROXY_LISTEN`   | `proxy.listen`         |
//! | `TSUNAGI_PROXY_PLAIN_LISTEN` | `proxy.plain_listen` |
//! | `TSUNAGI_PROXY_NAMES`    | `proxy.names` (`,`-separated) |
//! | `TSUNAGI_PROBE_DIR`      | `policy.probe_dir`     |
//! | `TSUNAGI_POLICY_INTERVAL`| `policy.interval`      |
//! | `TSUNAGI_BROKER`         | `telemetry.broker`     |
//! | `TSUNAGI_KEEP_ALIVE`     | `telemetry.keep_alive` |
//! | `TSUNAGI_STATUS_EVERY`   | `telemetry.status_every` |
//! | `TSUNAGI_KEY_STORE`      | `identity.key_store`   |
//! | `TSUNAGI_TPM_TCTI`       | `identity.tpm_tcti`    |

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub hub: RawHub,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub identity: RawIdentity,
}

/// Where the TLS client key is made at enrolment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// `file` (default), `tpm`, or `auto` (the TPM when the box has one).
    pub key_store: Option<String>,
    /// The TPM's TCTI address (default `device:/dev/tpmrm0`).
    pub tpm_tcti: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The facility's own Wi-Fi networks, and the weakest security they may have
    /// (`wpa2`, `owe` or `wpa3`; default `wpa2`).
    pub ssids: Option<Vec<String>>,
    pub wifi_floor: Option<String>,
    /// How long a failing check may fail before it is enforced (default 72h).
    pub grace: Option<String>,
    /// The longest screen-lock / auto-logoff delay a terminal may have (default 300s; never 0).
    pub screen_lock_max: Option<String>,
    /// A terminal whose last report is older than this is unknown (default 2h).
    pub report_expiry: Option<String>,
    /// What the proxy does with a terminal that is unknown, and one that is non-compliant after
    /// its grace period: `allow`, `warn` or `refuse` (defaults `warn` and `refuse`).
    pub unknown_terminal: Option<String>,
    pub noncompliant_terminal: Option<String>,
    /// Security updates must have been applied within this long (default 14d), as the newest
    /// modification time of these files tells.
    pub updates_max_age: Option<String>,
    pub update_stamps: Option<Vec<PathBuf>>,
    /// Ports that may listen on a non-loopback address besides the proxy's own.
    pub allowed_ports: Option<Vec<u16>>,
    /// Read the checks' command outputs from files in this folder instead of running the
    /// commands (a privileged helper writes them, or a test does).
    pub probe_dir: Option<PathBuf>,
    /// How often the checks run (each has its own multiple of this; default 5m).
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The MQTT broker, `mqtts://host:port`. Without it the appliance sends no telemetry.
    pub broker: Option<String>,
    pub keep_alive: Option<String>,
    /// A status is published on every change and at least this often (default 3m).
    pub status_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// The HTTPS address the facility's browsers use, e.g. `0.0.0.0:443`.
    pub listen: Option<String>,
    /// The plain-HTTP address of the page that offers the network's root, e.g. `0.0.0.0:80`.
    pub plain_listen: Option<String>,
    /// The appliance's LAN host names and addresses, for its server certificate.
    pub names: Option<Vec<String>>,
    /// Sessions end after this long without a request (at most 5 minutes).
    pub idle: Option<String>,
    /// How long to wait for the hub before serving the offline view.
    pub hub_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub roots: Option<Vec<PathBuf>>,
    pub rescan: Option<String>,
    pub batch_files: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHub {
    pub url: Option<String>,
    /// The network root's SHA-256 fingerprint. With it, an appliance that is not enrolled serves
    /// its enrolment page on the LAN (the image bakes this in; see docs/image.md).
    pub fingerprint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// Bytes per second, with an optional k, M or G suffix; 0 or absent for no limit.
    pub bandwidth_limit: Option<String>,
    pub retention: Option<String>,
    pub interval: Option<String>,
    pub backoff_min: Option<String>,
    pub backoff_max: Option<String>,
    pub max_batch_bytes: Option<usize>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub key_file: PathBuf,
    pub roots: Vec<PathBuf>,
    pub rescan: Duration,
    pub batch_files: usize,
    /// From the file or the environment; otherwise the hub the appliance enrolled with.
    pub hub_url: Option<String>,
    /// The network root's fingerprint, when the hub is fixed by the image (first-boot enrolment).
    pub hub_fingerprint: Option<String>,
    /// Where an enrolment makes the TLS client key.
    pub key_store: crate::secrets::KeyStore,
    pub sync: SyncSettings,
    pub proxy: ProxySettings,
    pub policy: PolicySettings,
    pub telemetry: TelemetrySettings,
}

/// What to do with a terminal the policy does not find compliant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforce {
    Allow,
    Warn,
    Refuse,
}

impl Enforce {
    fn parse(key: &str, v: Option<String>, default: Enforce) -> Result<Enforce, String> {
        match v.as_deref() {
            None => Ok(default),
            Some("allow") => Ok(Enforce::Allow),
            Some("warn") => Ok(Enforce::Warn),
            Some("refuse") => Ok(Enforce::Refuse),
            Some(o) => Err(format!("{key}: {o:?} is not one of allow, warn, refuse")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub ssids: Vec<String>,
    pub wifi_floor: Security,
    pub grace: Duration,
    pub screen_lock_max: Duration,
    pub report_expiry: Duration,
    pub unknown_terminal: Enforce,
    pub noncompliant_terminal: Enforce,
    pub updates_max_age: Duration,
    pub update_stamps: Vec<PathBuf>,
    pub allowed_ports: Vec<u16>,
    pub probe_dir: Option<PathBuf>,
    pub interval: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            ssids: Vec::new(),
            wifi_floor: Security::Wpa2,
            grace: Duration::from_secs(72 * 3600),
            screen_lock_max: Duration::from_secs(300),
            report_expiry: Duration::from_secs(2 * 3600),
            unknown_terminal: Enforce::Warn,
            noncompliant_terminal: Enforce::Refuse,
            updates_max_age: Duration::from_secs(14 * 86_400),
            update_stamps: vec![
                PathBuf::from("/var/lib/apt/periodic/upgrade-stamp"),
                PathBuf::from("/var/log/apt/history.log"),
                PathBuf::from("/usr/lib/os-release"),
            ],
            allowed_ports: Vec::new(),
            probe_dir: None,
            interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// host and port of the broker.
    pub broker: Option<(String, u16)>,
    pub keep_alive: Duration,
    pub status_every: Duration,
}

/// The LAN proxy. Without `listen` the appliance does not proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: Option<String>,
    pub plain_listen: Option<String>,
    pub names: Vec<String>,
    pub idle: Duration,
    pub hub_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub bandwidth_limit: Option<u64>,
    pub retention: Duration,
    pub interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_batch_bytes: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            bandwidth_limit: None,
            retention: Duration::from_secs(7 * 86_400),
            interval: Duration::from_secs(2),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_batch_bytes: 16 << 20,
        }
    }
}

impl Config {
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.state_dir.join("identity")
    }

    /// Reads `path` and applies the environment through `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("configuration {}: {e}", path.display()))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| format!("configuration {}: {e}", path.display()))?;
        Config::resolve(raw, env)
    }

    pub fn resolve(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let dur = |key: &str, v: Option<String>, default: Duration| -> Result<Duration, String> {
            match v {
                None => Ok(default),
                Some(s) => shared::time::parse_duration(&s)
                    .map(|n| Duration::from_secs(n.max(0) as u64))
                    .map_err(|e| format!("{key}: {e}")),
            }
        };
        let state_dir = env("TSUNAGI_STATE_DIR")
            .map(PathBuf::from)
            .or(raw.state_dir)
            .ok_or(
                "state_dir is not set: add `state_dir = \"/var/lib/tsunagi\"` to the configuration",
            )?;
        let key_file = env("TSUNAGI_KEY_FILE")
            .map(PathBuf::from)
            .or(raw.key_file)
            .unwrap_or_else(|| state_dir.join("store.key"));
        let roots = match env("TSUNAGI_ROOTS") {
            Some(r) => r
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => raw.ingest.roots.unwrap_or_default(),
        };
        let d = SyncSettings::default();
        let bandwidth = env("TSUNAGI_BANDWIDTH").or(raw.sync.bandwidth_limit);
        let bandwidth_limit = match bandwidth {
            None => None,
            Some(s) => match parse_bytes(&s).map_err(|e| format!("sync.bandwidth_limit: {e}"))? {
                0 => None,
                n => Some(n),
            },
        };
        let sync = SyncSettings {
            bandwidth_limit,
            retention: dur(
                "sync.retention",
                env("TSUNAGI_RETENTION").or(raw.sync.retention),
                d.retention,
            )?,
            interval: dur("sync.interval", raw.sync.interval, d.interval)?
                .max(Duration::from_millis(200)),
            backoff_min: dur("sync.backoff_min", raw.sync.backoff_min, d.backoff_min)?
                .max(Duration::from_millis(100)),
            backoff_max: dur("sync.backoff_max", raw.sync.backoff_max, d.backoff_max)?,
            max_batch_bytes: raw
                .sync
                .max_batch_bytes
                .unwrap_or(d.max_batch_bytes)
                .clamp(64 << 10, shared::wire::MAX_BODY / 2),
        };
        if sync.backoff_max < sync.backoff_min {
            return Err("sync.backoff_max must not be shorter than sync.backoff_min".into());
        }
        let names: Vec<String> = match env("TSUNAGI_PROXY_NAMES") {
            Some(n) => n
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => raw.proxy.names.unwrap_or_default(),
        };
        let proxy = ProxySettings {
            listen: env("TSUNAGI_PROXY_LISTEN").or(raw.proxy.listen),
            plain_listen: env("TSUNAGI_PROXY_PLAIN_LISTEN").or(raw.proxy.plain_listen),
            names,
            idle: dur("proxy.idle", raw.proxy.idle, Duration::from_secs(300))?,
            hub_timeout: dur(
                "proxy.hub_timeout",
                raw.proxy.hub_timeout,
                Duration::from_secs(3),
            )?
            .max(Duration::from_millis(200)),
        };
        if proxy.idle > Duration::from_secs(300) || proxy.idle.is_zero() {
            return Err("proxy.idle must be between 1s and 5m (the networks' rule for terminals is at most 5 minutes idle)".into());
        }
        let hub_fingerprint = match raw.hub.fingerprint {
            None => None,
            Some(f) => Some(
                provisioning::parse_fingerprint(&f).map_err(|e| format!("hub.fingerprint: {e}"))?,
            ),
        };
        // An image that enrols on its first boot learns its LAN names on the enrolment page.
        if proxy.listen.is_some() && proxy.names.is_empty() && hub_fingerprint.is_none() {
            return Err("proxy.names is empty: name the appliance on the LAN (for example [\"box-1.tsunagi.internal\", \"192.168.1.10\"]) so its certificate matches what browsers open".into());
        }
        let d = PolicySettings::default();
        let floor = match raw.policy.wifi_floor.as_deref() {
            None | Some("wpa2") => Security::Wpa2,
            Some("owe") => Security::Owe,
            Some("wpa3") => Security::Wpa3,
            Some(o) => {
                return Err(format!(
                    "policy.wifi_floor: {o:?} is not one of wpa2, owe, wpa3"
                ))
            }
        };
        let policy = PolicySettings {
            ssids: raw.policy.ssids.unwrap_or_default(),
            wifi_floor: floor,
            grace: dur("policy.grace", raw.policy.grace, d.grace)?,
            screen_lock_max: dur(
                "policy.screen_lock_max",
                raw.policy.screen_lock_max,
                d.screen_lock_max,
            )?,
            report_expiry: dur(
                "policy.report_expiry",
                raw.policy.report_expiry,
                d.report_expiry,
            )?
            .max(Duration::from_secs(1)),
            unknown_terminal: Enforce::parse(
                "policy.unknown_terminal",
                raw.policy.unknown_terminal,
                d.unknown_terminal,
            )?,
            noncompliant_terminal: Enforce::parse(
                "policy.noncompliant_terminal",
                raw.policy.noncompliant_terminal,
                d.noncompliant_terminal,
            )?,
            updates_max_age: dur(
                "policy.updates_max_age",
                raw.policy.updates_max_age,
                d.updates_max_age,
            )?,
            update_stamps: raw.policy.update_stamps.unwrap_or(d.update_stamps),
            allowed_ports: raw.policy.allowed_ports.unwrap_or_default(),
            probe_dir: env("TSUNAGI_PROBE_DIR")
                .map(PathBuf::from)
                .or(raw.policy.probe_dir),
            interval: dur(
                "policy.interval",
                env("TSUNAGI_POLICY_INTERVAL").or(raw.policy.interval),
                d.interval,
            )?
            .max(Duration::from_secs(1)),
        };
        if policy.screen_lock_max.is_zero() {
            return Err(
                "policy.screen_lock_max must be more than 0 (a lock that never starts is no lock)"
                    .into(),
            );
        }
        let broker = match env("TSUNAGI_BROKER").or(raw.telemetry.broker) {
            None => None,
            Some(u) => Some(
                shared::fleet::parse_broker(&u).map_err(|e| format!("telemetry.broker: {e}"))?,
            ),
        };
        let telemetry = TelemetrySettings {
            broker,
            keep_alive: dur(
                "telemetry.keep_alive",
                env("TSUNAGI_KEEP_ALIVE").or(raw.telemetry.keep_alive),
                Duration::from_secs(30),
            )?
            .clamp(Duration::from_secs(2), Duration::from_secs(600)),
            status_every: dur(
                "telemetry.status_every",
                env("TSUNAGI_STATUS_EVERY").or(raw.telemetry.status_every),
                Duration::from_secs(180),
            )?
            .max(Duration::from_secs(1)),
        };
        Ok(Config {
            policy,
            telemetry,
            proxy,
            state_dir,
            key_file,
            roots,
            rescan: dur("ingest.rescan", raw.ingest.rescan, Duration::from_secs(300))?
                .max(Duration::from_secs(1)),
            batch_files: raw.ingest.batch_files.unwrap_or(512).max(1),
            hub_url: env("TSUNAGI_HUB_URL").or(raw.hub.url),
            hub_fingerprint,
            key_store: crate::secrets::KeyStore::parse(
                &env("TSUNAGI_KEY_STORE")
                    .or(raw.identity.key_store)
                    .unwrap_or_else(|| "file".into()),
                env("TSUNAGI_TPM_TCTI").or(raw.identity.tpm_tcti).as_deref(),
            )?,
            sync,
        })
    }
}

/// `1500000`, `1500k`, `1.5M`, `2G` (decimal units, bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (for example 500k or 2M)"))?;
    if n < 0.0 {
        return Err(format!("{s:?} is negative"));
    }
    Ok((n * mult) as u64)
}

/// How strong a network's security is, weakest first; the configured floor for facility SSIDs
/// is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Security {
    Open,
    Wep,
    Wpa1,
    /// WPA2 (or WPA3 transition) with TKIP allowed as a pairwise cipher.
    Wpa2Tkip,
    /// WPA2 with CCMP, PSK or 802.1X (including WPA2/WPA3 transition mode).
    Wpa2,
    Owe,
    Wpa3,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn file_then_environment() {
        let raw: RawConfig = toml::from_str(
            r#"
            state_dir = "/var/lib/tsunagi"
            [ingest]
            roots = ["/mnt/a", "/mnt/b"]
            [sync]
            bandwidth_limit = "500k"
            retention = "3d"
            "#,
        )
        .unwrap();
        let c = Config::resolve(raw, &no_env).unwrap();
        assert_eq!(c.roots.len(), 2);
        assert_eq!(c.sync.bandwidth_limit, Some(500_000));
        assert_eq!(c.sync.retention, Duration::from_secs(3 * 86_400));
        assert_eq!(c.key_file, PathBuf::from("/var/lib/tsunagi/store.key"));
        let env = |k: &str| match k {
            "TSUNAGI_BANDWIDTH" => Some("0".to_string()),
            "TSUNAGI_HUB_URL" => Some("https://hub:8443".to_string()),
            "TSUNAGI_ROOTS" => Some("/x:/y:/z".to_string()),
            _ => None,
        };
        let raw: RawConfig = toml::from_str("state_dir = \"/s\"").unwrap();
        let c = Config::resolve(raw, &env).unwrap();
        assert_eq!(
            (c.sync.bandwidth_limit, c.hub_url.as_deref(), c.roots.len()),
            (None, Some("https://hub:8443"), 3)
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        assert!(
            toml::from_str::<RawConfig>("state_dir = \"/s\"\nbandwith = 3")
                .unwrap_err()
                .to_string()
                .contains("bandwith")
        );
        let raw: RawConfig =
            toml::from_str("state_dir = \"/s\"\n[sync]\nretention = \"7w\"").unwrap();
        assert!(Config::resolve(raw, &no_env)
            .unwrap_err()
            .contains("sync.retention"));
        assert!(Config::resolve(RawConfig::default(), &no_env)
            .unwrap_err()
            .contains("state_dir"));
        assert_eq!(parse_bytes("1.5M"), Ok(1_500_000));
    }
}
