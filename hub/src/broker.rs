//! The MQTT broker's configuration (`tsunagi-hub broker setup`): Mosquitto 2 with TLS, client
//! certificates from the network CA, the CA's CRL, the certificate's CN (the facility code) as
//! the user name, and an ACL so that an appliance writes only under its own facility's topics and
//! reads only its own facility's commands. The hub's own client gets a certificate of its own.

use std::path::{Path, PathBuf};

use provisioning::Ca;

pub const CONF: &str = "mosquitto.conf";
pub const ACL: &str = "acl";
pub const CA_PEM: &str = "ca.pem";
pub const SERVER_PEM: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
/// The hub's client certificate chain and key, in one owner-only file.
pub const HUB_CLIENT: &str = "hub-client.pem";
pub const PID: &str = "mosquitto.pid";

/// The ACL: `%u` is the facility code from the certificate's CN.
pub fn acl() -> String {
    let h = shared::fleet::HUB_USER;
    let r = shared::fleet::ROOT;
    format!(
        "# Written by tsunagi-hub broker setup.\n\
         # Appliances: the user name, and the client ID, is the client certificate's CN,\n\
         # <facility>/<appliance>: each appliance writes its own topics and reads its own commands.\n\
         pattern write {r}/%u/presence\n\
         pattern write {r}/%u/status\n\
         pattern write {r}/%u/event\n\
         pattern write {r}/%u/ack\n\
         pattern read {r}/%u/cmd\n\
         \n\
         # The hub reads everything and writes commands.\n\
         user {h}\n\
         topic read {r}/#\n\
         topic read $SYS/broker/uptime\n\
         topic write {r}/+/+/cmd\n"
    )
}

pub struct Setup {
    pub dir: PathBuf,
    pub listen: String,
    pub names: Vec<String>,
    /// The user Mosquitto runs as (it drops to this user when started as root).
    pub user: String,
}

/// Mosquitto's configuration for the broker.
pub fn conf(s: &Setup, crl: &Path) -> anyhow::Result<String> {
    let (host, port) = s
        .listen
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--listen {}: expected host:port", s.listen))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--listen {}: {port:?} is not a port", s.listen))?;
    let d = s.dir.display();
    Ok(format!(
        "# Written by tsunagi-hub broker setup; run with `mosquitto -c {d}/{CONF}`.\n\
         user {user}\n\
         pid_file {d}/{PID}\n\
         persistence true\n\
         persistence_location {d}/data/\n\
         autosave_interval 60\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         connection_messages true\n\
         log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
         # Queue up to a day of a fleet's events for the hub while it is down.\n\
         max_queued_messages 100000\n\
         max_inflight_messages 100\n\
         max_packet_size 262144\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {d}/{ACL}\n\
         \n\
         listener {port} {host}\n\
         protocol mqtt\n\
         cafile {d}/{CA_PEM}\n\
         certfile {d}/{SERVER_PEM}\n\
         keyfile {d}/{SERVER_KEY}\n\
         crlfile {crl}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         # The client ID is the certificate's CN too: nobody can take over another's session\n\
         # (the hub's above all) by naming its client ID.\n\
         use_username_as_clientid true\n\
         tls_version tlsv1.2\n",
        user = s.user,
        crl = crl.display(),
    ))
}

/// Writes the broker's folder: configuration, ACL, CA chain, a server certificate for `names`,
/// and the hub's client certificate. Rewrites everything but the persistence data.
pub fn setup(ca: &Ca, s: &Setup, now: i64) -> anyhow::Result<()> {
    std::fs::create_dir_all(s.dir.join("data"))?;
    let crl = ca.dir().join(provisioning::ca::CRL);
    let conf = conf(s, &crl)?;
    let (server, server_key) = ca
        .issue_server(&s.names, now, 397)
        .map_err(anyhow::Error::msg)?;
    let (client, client_key) = ca
        .issue_service_client(shared::fleet::HUB_USER, now, 397)
        .map_err(anyhow::Error::msg)?;
    let w = |name: &str, text: &str, mode: u32| {
        provisioning::secret::write_atomic(&s.dir.join(name), text.as_bytes(), mode)
            .map_err(|e| anyhow::anyhow!("{}: {e}", s.dir.join(name).display()))
    };
    w(
        CA_PEM,
        &format!("{}{}", ca.root_pem(), ca.issuing_pems()),
        0o644,
    )?;
    w(SERVER_PEM, &server, 0o644)?;
    w(SERVER_KEY, &server_key, 0o600)?;
    w(HUB_CLIENT, &format!("{client}{client_key}"), 0o600)?;
    w(ACL, &acl(), 0o644)?;
    w(CONF, &conf, 0o644)?;
    // Mosquitto reads its key after dropping to its user.
    if let Some(u) = nix::unistd::User::from_name(&s.user).ok().flatten() {
        for f in [SERVER_KEY, "data"] {
            let _ = nix::unistd::chown(&s.dir.join(f), Some(u.uid), Some(u.gid));
        }
    }
    Ok(())
}

/// What a folder written by `setup` holds already: the listening address of its configuration
/// and the names on its server certificate (none when it holds nothing readable).
pub fn current(dir: &Path) -> (Option<String>, Vec<String>) {
    let listen = std::fs::read_to_string(dir.join(CONF))
        .ok()
        .and_then(|conf| {
            conf.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("listener"), Some(port), Some(host)) => Some(format!("{host}:{port}")),
                    _ => None,
                }
            })
        });
    let names = std::fs::read(dir.join(SERVER_PEM))
        .ok()
        .and_then(|pem| provisioning::cert::certs_from_pem(&pem).ok())
        .and_then(|certs| certs.first().map(|c| provisioning::cert::san_names(c)))
        .unwrap_or_default();
    (listen, names)
}

/// Asks a running broker (by its pid file) to read its configuration and CRL again.
pub fn reload(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .ok()?;
    Some(pid)
}

/// The hub's TLS client configuration at the broker: the network root, and the hub's client
/// certificate from `broker setup`.
pub fn client_tls(ca: &Ca, dir: &Path) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let path = dir.join(HUB_CLIENT);
    let pem = provisioning::secret::read(&path)
        .map_err(|e| anyhow::anyhow!("{e} (write it with `tsunagi-hub broker setup`)"))?;
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        provisioning::cert::certs_from_pem(&pem)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|c| c.into_owned())
            .collect();
    let key = provisioning::cert::key_from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(
        ca.root_der().to_vec(),
    ))?;
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(std::sync::Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_confines_appliances_to_their_facility() {
        let a = acl();
        assert!(a.contains("pattern write tsunagi/%u/status"));
        assert!(
            !a.contains("%u/#") && !a.contains("%u/+"),
            "an appliance must not reach its siblings' topics"
        );
        assert!(a.contains("pattern read tsunagi/%u/cmd"));
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(&dir.path().join("ca"), "t", 1_700_000_000).unwrap();
        let s = Setup {
            dir: dir.path().join("broker"),
            listen: "127.0.0.1:8883".into(),
            names: vec!["localhost".into()],
            user: "nobody".into(),
        };
        setup(&ca, &s, 1_700_000_000).unwrap();
        let conf = std::fs::read_to_string(s.dir.join(CONF)).unwrap();
        for want in [
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "crlfile ",
            "listener 8883 127.0.0.1",
            "allow_anonymous false",
        ] {
            assert!(conf.contains(want), "{want} missing from {conf}");
        }
        assert!(client_tls(&ca, &s.dir).is_ok());
        let bad = super::conf(
            &Setup {
                dir: "/x".into(),
                listen: "127.0.0.1".into(),
                names: vec![],
                user: "u".into(),
            },
            Path::new("/c"),
        );
        assert!(bad.unwrap_err().to_string().contains("host:port"));
    }
}
