//! The appliance's identity: enrolment with a one-time token (the key is made here and never
//! leaves), renewal at two thirds of the certificate's lifetime, and the files that hold them.
//!
//! In the identity folder: `identity.pem` (certificate chain and key, owner-only), `root.pem` (the
//! network root, pinned by fingerprint), `enrolment.json` (hub, facility, appliance, LAN names),
//! `lan.pem` (the LAN listener's server certificate chain and key, owner-only, issued and
//! renewed together with the client certificate when the proxy has LAN names), and `proxy.pem`
//! (the LAN proxy's own client certificate and key, owner-only: it reaches the portal and nothing
//! else, so a LAN browser's requests never travel on the appliance's identity). A renewal
//! writes `identity.next.pem` first and replaces `identity.pem` only after the hub has accepted
//! the new certificate, so a power cut at any point leaves a working identity.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::client::{self, Client};
use crate::secrets::{ClientKey, KeyStore};

const IDENTITY: &str = "identity.pem";
/// A TPM-resident client key: the TCTI and the TPM-wrapped blob (owner-only).
const TPM_KEY: &str = "identity.tpm.json";
const NEXT: &str = "identity.next.pem";
const ROOT: &str = "root.pem";
const ENROLMENT: &str = "enrolment.json";
/// The LAN listener's certificate chain and key.
pub const LAN: &str = "lan.pem";
/// The LAN proxy's portal-only client certificate chain and key.
pub const PROXY: &str = "proxy.pem";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolment {
    pub hub: String,
    pub fingerprint: String,
    pub facility: String,
    pub facility_name: String,
    pub appliance: String,
    /// The names the LAN certificate carries (empty: no LAN listener).
    #[serde(default)]
    pub lan_names: Vec<String>,
}

use shared::api::{EnrollRequest, Issued, LanRequest, ProxyRequest, RenewRequest};

/// A new key and CSR for the LAN proxy's portal-only certificate, and the request field.
fn proxy_request(appliance: &str) -> anyhow::Result<(String, ProxyRequest)> {
    let (key_pem, csr) =
        provisioning::ca::new_key_and_csr(appliance).map_err(anyhow::Error::msg)?;
    Ok((key_pem, ProxyRequest { csr }))
}

/// Writes the proxy's certificate with its key, checking that it is a portal-only certificate
/// for this facility and appliance (never the appliance's own identity).
fn write_proxy(
    dir: &Path,
    issued: &Issued,
    key_pem: &str,
    facility: &str,
    appliance: &str,
) -> anyhow::Result<()> {
    let chain = issued.proxy_chain_pem.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "the hub did not issue the proxy certificate it was asked for (an older hub?)"
        )
    })?;
    let cert = parse(chain.as_bytes())?;
    if cert.purpose != provisioning::Purpose::PortalProxy
        || cert.facility != facility
        || cert.appliance != appliance
    {
        anyhow::bail!("the proxy certificate the hub issued is not a portal-only certificate for {facility}/{appliance}; refusing it");
    }
    let path = dir.join(PROXY);
    provisioning::secret::write_atomic(&path, format!("{chain}{key_pem}").as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The TLS configuration of the LAN proxy's connections to the hub: the pinned root, and the
/// portal-only certificate of `proxy.pem`.
pub fn proxy_tls_config(
    dir: &Path,
    fingerprint: &str,
) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let pem = provisioning::secret::read(&dir.join(PROXY)).map_err(|e| anyhow::anyhow!("{e} (the proxy has no certificate of its own yet: it is issued at enrolment and renewal)"))?;
    let cert = parse(&pem)?;
    if cert.purpose != provisioning::Purpose::PortalProxy {
        anyhow::bail!("{} is not a portal-only certificate; the proxy never presents the appliance's identity", dir.join(PROXY).display());
    }
    client::tls_config(fingerprint, Some(client::ClientAuth::from_pem(&pem)?))
}

/// Whether the proxy has its portal-only certificate.
pub fn has_proxy_cert(dir: &Path) -> bool {
    provisioning::secret::read(&dir.join(PROXY))
        .ok()
        .and_then(|p| parse(&p).ok())
        .is_some_and(|c| c.purpose == provisioning::Purpose::PortalProxy)
}

/// A new key and CSR for the LAN listener, and the request field that carries them.
fn lan_request(appliance: &str, names: &[String]) -> anyhow::Result<Option<(String, LanRequest)>> {
    if names.is_empty() {
        return Ok(None);
    }
    let (key_pem, csr) =
        provisioning::ca::new_key_and_csr(appliance).map_err(anyhow::Error::msg)?;
    Ok(Some((
        key_pem,
        LanRequest {
            csr,
            names: names.to_vec(),
        },
    )))
}

/// Writes the LAN certificate the hub issued with its key, checking it names what was asked.
fn write_lan(dir: &Path, issued: &Issued, key_pem: &str, names: &[String]) -> anyhow::Result<()> {
    let chain = issued.lan_chain_pem.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "the hub did not issue the LAN certificate it was asked for (an older hub?)"
        )
    })?;
    let certs = provisioning::cert::certs_from_pem(chain.as_bytes()).map_err(anyhow::Error::msg)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| anyhow::anyhow!("the LAN certificate does not parse: {e}"))?;
    let san: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or([0; 16]))
                            .to_string(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(missing) = names
        .iter()
        .find(|n| !san.iter().any(|s| s.eq_ignore_ascii_case(n)))
    {
        anyhow::bail!("the LAN certificate the hub issued does not name {missing}; refusing it");
    }
    let path = dir.join(LAN);
    provisioning::secret::write_atomic(&path, format!("{chain}{key_pem}").as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// When the current LAN certificate expires, or None when there is none.
pub fn lan_cert_not_after(dir: &Path) -> Option<i64> {
    let pem = std::fs::read(dir.join(LAN)).ok()?;
    let certs = provisioning::cert::certs_from_pem(&pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The names the current LAN certificate carries, or None when there is none.
pub fn lan_cert_names(dir: &Path) -> Option<Vec<String>> {
    let pem = std::fs::read(dir.join(LAN)).ok()?;
    let certs = provisioning::cert::certs_from_pem(&pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    Some(
        san.value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                    Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                }
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 16 => {
                    Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                }
                _ => None,
            })
            .collect(),
    )
}

/// A loaded identity.
#[derive(Clone)]
pub struct Identity {
    pub dir: PathBuf,
    pub enrolment: Enrolment,
    pub cert: provisioning::Identity,
    /// The certificate chain (and, for a file key, the key) as in `identity.pem`.
    pem: Vec<u8>,
    pub key: ClientKey,
}

/// The private-key block of a PEM text holding a chain and a key.
fn key_block(pem: &str) -> Option<String> {
    let start = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .or_else(|| pem.find("-----BEGIN EC PRIVATE KEY-----"))?;
    let end_marker = if pem[start..].starts_with("-----BEGIN EC") {
        "-----END EC PRIVATE KEY-----"
    } else {
        "-----END PRIVATE KEY-----"
    };
    let end = start + pem[start..].find(end_marker)? + end_marker.len();
    Some(format!("{}\n", &pem[start..end]))
}

/// The client key that goes with the certificate in `pem`: in the TPM when the identity folder
/// holds a TPM key, else in the file itself.
fn load_key(dir: &Path, pem: &[u8]) -> anyhow::Result<ClientKey> {
    let tpm = dir.join(TPM_KEY);
    if tpm.exists() {
        let stored = provisioning::secret::read(&tpm).map_err(anyhow::Error::msg)?;
        return ClientKey::from_tpm(&String::from_utf8_lossy(&stored)).map_err(anyhow::Error::msg);
    }
    let key = key_block(&String::from_utf8_lossy(pem)).ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no private key and there is no {TPM_KEY}",
            dir.join(IDENTITY).display()
        )
    })?;
    Ok(ClientKey::File { pem: key })
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("facility", &self.cert.facility)
            .field("serial", &self.cert.serial)
            .finish()
    }
}

fn parse(pem: &[u8]) -> anyhow::Result<provisioning::Identity> {
    let chain = provisioning::cert::certs_from_pem(pem).map_err(anyhow::Error::msg)?;
    provisioning::Identity::from_der(&chain[0]).map_err(anyhow::Error::msg)
}

impl Identity {
    /// Loads the identity, refusing files others could read.
    pub fn load(dir: &Path) -> anyhow::Result<Identity> {
        let e = std::fs::read(dir.join(ENROLMENT)).with_context(|| {
            format!(
                "this appliance is not enrolled ({} is missing): run `tsunagi-edge enroll`",
                dir.join(ENROLMENT).display()
            )
        })?;
        let enrolment: Enrolment = serde_json::from_slice(&e)
            .with_context(|| format!("{} is damaged", dir.join(ENROLMENT).display()))?;
        let pem = provisioning::secret::read(&dir.join(IDENTITY)).map_err(anyhow::Error::msg)?;
        let cert = parse(&pem)?;
        let key = load_key(dir, &pem)?;
        Ok(Identity {
            dir: dir.to_owned(),
            enrolment,
            cert,
            pem,
            key,
        })
    }

    /// A client for `hub` (or the enrolment's hub) that presents this identity.
    pub fn client(&self, hub: Option<&str>) -> anyhow::Result<Client> {
        Client::new(hub.unwrap_or(&self.enrolment.hub), self.tls_config()?)
    }

    /// The TLS configuration that trusts the pinned root and presents this identity.
    pub fn tls_config(&self) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
        let chain = provisioning::cert::certs_from_pem(&self.pem).map_err(anyhow::Error::msg)?;
        let key = self.key.signing_key().map_err(anyhow::Error::msg)?;
        client::tls_config(
            &self.enrolment.fingerprint,
            Some(client::ClientAuth { chain, key }),
        )
    }

    pub fn is_enrolled(dir: &Path) -> bool {
        dir.join(IDENTITY).exists()
    }
}

/// The appliance id when none is given: the host name.
pub fn default_appliance() -> String {
    let h = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if h.is_empty() {
        "appliance".into()
    } else {
        h
    }
}

fn write_identity(path: &Path, issued: &Issued, key: &ClientKey) -> anyhow::Result<()> {
    let text = format!("{}{}", issued.chain_pem, key.file_pem().unwrap_or(""));
    provisioning::secret::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Enrols: makes a key (in the TPM or a file, as `store` says), sends a CSR with the token to the
/// hub (trusted only through the pinned fingerprint), and stores the certificate it returns.
pub async fn enroll(
    dir: &Path,
    hub: &str,
    token: &str,
    fingerprint: &str,
    appliance: &str,
    lan_names: &[String],
    store: &KeyStore,
) -> anyhow::Result<Identity> {
    let fingerprint = provisioning::parse_fingerprint(fingerprint).map_err(anyhow::Error::msg)?;
    provisioning::token::check_appliance(appliance).map_err(anyhow::Error::msg)?;
    if Identity::is_enrolled(dir) {
        anyhow::bail!("this appliance is already enrolled ({} exists); to enrol again, move the identity folder away first", dir.join(IDENTITY).display());
    }
    let key = ClientKey::generate(store).map_err(anyhow::Error::msg)?;
    let csr = key.csr(appliance).map_err(anyhow::Error::msg)?;
    let client = Client::new(hub, client::tls_config(&fingerprint, None)?)?;
    let lan = lan_request(appliance, lan_names)?;
    let (proxy_key, proxy) = proxy_request(appliance)?;
    let body = EnrollRequest {
        token: token.to_string(),
        csr,
        appliance: appliance.to_string(),
        lan: lan.as_ref().map(|(_, l)| l.clone()),
        proxy: Some(proxy),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    };
    let reply = client.post_json("/v1/enroll", &body).await?;
    if !reply.status.is_success() {
        anyhow::bail!("the hub refused the enrolment: {}", reply.message());
    }
    let issued: Issued = reply.json()?;
    // A hub that does not say its protocol (from before protocol 2) took the enrolment without
    // reading the versions, and would refuse every batch this appliance sends.
    if issued.protocol < shared::api::PROTOCOL {
        anyhow::bail!(
            "the hub speaks protocol {} and this appliance {}: upgrade the hub, then enrol again with a new token (this one is spent)",
            issued.protocol,
            shared::api::PROTOCOL
        );
    }
    let root = provisioning::cert::certs_from_pem(issued.root_pem.as_bytes())
        .map_err(anyhow::Error::msg)?;
    if provisioning::fingerprint(&root[0]) != fingerprint {
        anyhow::bail!(
            "the hub sent a root that does not match the pinned fingerprint; refusing it"
        );
    }
    let cert = parse(issued.chain_pem.as_bytes())?;
    if cert.facility != issued.facility || cert.appliance != appliance {
        anyhow::bail!(
            "the certificate the hub issued names {}/{}, not {}/{appliance}",
            cert.facility,
            cert.appliance,
            issued.facility
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(ROOT), &issued.root_pem)?;
    if let Some((lan_key, _)) = &lan {
        write_lan(dir, &issued, lan_key, lan_names)?;
    }
    write_proxy(dir, &issued, &proxy_key, &issued.facility, appliance)?;
    if let Some(stored) = key.tpm_stored_json() {
        provisioning::secret::write_atomic(&dir.join(TPM_KEY), stored.as_bytes(), 0o600)?;
    }
    write_identity(&dir.join(IDENTITY), &issued, &key)?;
    let enrolment = Enrolment {
        hub: hub.to_string(),
        fingerprint,
        facility: issued.facility.clone(),
        facility_name: issued.facility_name.clone(),
        appliance: issued.appliance.clone(),
        lan_names: lan_names.to_vec(),
    };
    provisioning::secret::write_atomic(
        &dir.join(ENROLMENT),
        &serde_json::to_vec_pretty(&enrolment)?,
        0o644,
    )?;
    tracing::info!(facility = %enrolment.facility, appliance = %enrolment.appliance, serial = %issued.serial, not_after = issued.not_after, key = key.describe(), "enrolled");
    Identity::load(dir)
}

/// Finishes a renewal a power cut interrupted: a pending certificate that the hub accepts becomes
/// the identity; one it refuses is dropped. When the hub cannot be reached it stays pending.
pub async fn settle(dir: &Path, hub: Option<&str>) -> anyhow::Result<()> {
    let next = dir.join(NEXT);
    if !next.exists() {
        return Ok(());
    }
    let current = Identity::load(dir)?;
    let pem = provisioning::secret::read(&next).map_err(anyhow::Error::msg)?;
    let Ok(cert) = parse(&pem) else {
        // A pending file that does not parse cannot have been confirmed: drop it.
        std::fs::remove_file(&next)?;
        return Ok(());
    };
    let key = load_key(dir, &pem)?;
    confirm(
        dir,
        &Identity {
            pem,
            cert,
            key,
            ..current
        },
        hub,
    )
    .await
}

async fn confirm(dir: &Path, candidate: &Identity, hub: Option<&str>) -> anyhow::Result<()> {
    let next = dir.join(NEXT);
    match candidate.client(hub)?.get("/v1/position").await {
        Ok(r) if r.status.is_success() => {
            std::fs::rename(&next, dir.join(IDENTITY))?;
            std::fs::File::open(dir)?.sync_all()?;
            tracing::info!(serial = %candidate.cert.serial, not_after = candidate.cert.not_after, "renewed certificate confirmed and in use");
            Ok(())
        }
        Ok(r) => {
            std::fs::remove_file(&next)?;
            anyhow::bail!(
                "the hub refused the renewed certificate ({}): keeping the current one",
                r.message()
            )
        }
        Err(e) => Err(e.context("cannot confirm the renewed certificate yet; it stays pending")),
    }
}

/// Renews when two thirds of the lifetime have passed. Returns true when the identity changed.
pub async fn renew_if_due(id: &mut Identity, hub: Option<&str>, now: i64) -> anyhow::Result<bool> {
    if now < id.cert.renew_at() {
        return Ok(false);
    }
    renew(id, hub).await?;
    Ok(true)
}

/// Renews now: a new key and CSR, the new certificate written beside the current one, confirmed
/// with the hub, then swapped in.
pub async fn renew(id: &mut Identity, hub: Option<&str>) -> anyhow::Result<()> {
    let dir = id.dir.clone();
    settle(&dir, hub).await?;
    // A file key is replaced at each renewal; a TPM key stays (it never leaves the TPM).
    let key = match &id.key {
        ClientKey::Tpm(_) => id.key.clone(),
        ClientKey::File { .. } => {
            ClientKey::generate(&KeyStore::File).map_err(anyhow::Error::msg)?
        }
    };
    let csr = key
        .csr(&id.enrolment.appliance)
        .map_err(anyhow::Error::msg)?;
    let lan = lan_request(&id.enrolment.appliance, &id.enrolment.lan_names)?;
    let (proxy_key, proxy) = proxy_request(&id.enrolment.appliance)?;
    let body = RenewRequest {
        csr,
        lan: lan.as_ref().map(|(_, l)| l.clone()),
        proxy: Some(proxy),
        protocol: shared::api::PROTOCOL,
        schema: shared::schema::VERSION,
    };
    let reply = id.client(hub)?.post_json("/v1/renew", &body).await?;
    if !reply.status.is_success() {
        anyhow::bail!(
            "the hub refused to renew the certificate: {}",
            reply.message()
        );
    }
    let issued: Issued = reply.json()?;
    let cert = parse(issued.chain_pem.as_bytes())?;
    if cert.facility != id.cert.facility {
        anyhow::bail!(
            "the renewed certificate names facility {}, not {}; refusing it",
            cert.facility,
            id.cert.facility
        );
    }
    // The LAN certificate does not depend on the hub confirming the client certificate: it is
    // valid from the moment it was issued, so it replaces the old one at once.
    if let Some((lan_key, _)) = &lan {
        write_lan(&dir, &issued, lan_key, &id.enrolment.lan_names)?;
    }
    write_proxy(
        &dir,
        &issued,
        &proxy_key,
        &id.cert.facility,
        &id.enrolment.appliance,
    )?;
    write_identity(&dir.join(NEXT), &issued, &key)?;
    tracing::info!(serial = %issued.serial, not_after = issued.not_after, "renewed certificate received; confirming");
    if std::env::var("TSUNAGI_FAILPOINT").as_deref() == Ok("after-renew-fetch") {
        // Lets the tests cut the power at the worst moment.
        std::process::abort();
    }
    let candidate = Identity {
        pem: std::fs::read(dir.join(NEXT))?,
        cert,
        key,
        ..id.clone()
    };
    confirm(&dir, &candidate, hub).await?;
    *id = Identity::load(&dir)?;
    Ok(())
}

/// Gets the proxy its portal-only certificate when it has none (an appliance enrolled before
/// proxy certificates existed): renews now, which brings one.
pub async fn ensure_proxy(id: &mut Identity, hub: Option<&str>) -> anyhow::Result<bool> {
    if has_proxy_cert(&id.dir) {
        return Ok(false);
    }
    tracing::info!("the LAN proxy has no portal-only certificate yet: renewing to get one");
    renew(id, hub).await?;
    Ok(true)
}

/// Makes the LAN certificate match `names`: when the configured names changed, or the
/// certificate is missing, records the names and renews now (the LAN certificate comes with it).
pub async fn ensure_lan(
    id: &mut Identity,
    names: &[String],
    hub: Option<&str>,
) -> anyhow::Result<bool> {
    let current = lan_cert_names(&id.dir);
    let fits = current.as_ref().is_some_and(|have| {
        names
            .iter()
            .all(|n| have.iter().any(|h| h.eq_ignore_ascii_case(n)))
    });
    if names.is_empty() || (fits && id.enrolment.lan_names == names) {
        return Ok(false);
    }
    let mut e = id.enrolment.clone();
    e.lan_names = names.to_vec();
    provisioning::secret::write_atomic(
        &id.dir.join(ENROLMENT),
        &serde_json::to_vec_pretty(&e)?,
        0o644,
    )?;
    id.enrolment = e;
    tracing::info!(names = ?names, "LAN names changed or no LAN certificate yet: renewing to get one");
    renew(id, hub).await?;
    Ok(true)
}
