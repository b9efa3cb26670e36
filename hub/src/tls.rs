//! The hub's TLS: TLS 1.2 and 1.3 only (rustls with ring, whose suites are all AEAD with forward
//! secrecy), a server certificate from the network CA, and client certificates verified against
//! the network root and the current CRL. Which facility a connection speaks for is read from its
//! verified certificate here and nowhere else.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use provisioning::{Ca, Identity};

/// The revoked serials, read from the CA's `crl.pem` and read again whenever that file changes,
/// so `tsunagi-hub cert revoke` in another process takes effect on the next handshake and the
/// next request. An unreadable CRL refuses everyone: revocation fails closed.
pub struct Revocations {
    path: PathBuf,
    cache: Mutex<(Option<(SystemTime, u64)>, Result<HashSet<String>, String>)>,
}

impl Revocations {
    pub fn new(path: PathBuf) -> Revocations {
        Revocations { path, cache: Mutex::new((None, Err("not read yet".into()))) }
    }

    /// `Ok(())` when the serial is not revoked; otherwise why it is refused.
    pub fn check(&self, serial: &str) -> Result<(), String> {
        let stamp = std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() || cache.0 != stamp {
            cache.1 = read_crl(&self.path);
            cache.0 = stamp;
            if let Err(e) = &cache.1 {
                tracing::error!(crl = %self.path.display(), error = %e, "the CRL cannot be read: refusing every client certificate until it can");
            }
        }
        match &cache.1 {
            Ok(set) if set.contains(serial) => Err("the certificate has been revoked".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("revocation cannot be checked: {e}")),
        }
    }
}

fn read_crl(path: &std::path::Path) -> Result<HashSet<String>, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateRevocationListDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(crl.iter_revoked_certificates().map(|r| shared::chain::hex(r.raw_serial())).collect())
}

/// Wraps the WebPKI verifier (chain to the network root, validity dates, client-auth usage) with
/// the revocation check.
#[derive(Debug)]
struct Verifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<Revocations>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Revocations({})", self.path.display())
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Enrolment has no certificate yet, so the handshake lets a client without one through;
    /// every route but enrolment then refuses it. A certificate that is presented must verify.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let id = Identity::from_der(end_entity).map_err(|e| rustls::Error::General(e))?;
        self.revoked.check(&id.serial).map_err(|_| rustls::Error::InvalidCertificate(CertificateError::Revoked))?;
        Ok(ok)
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The provider every TLS configuration in the hub uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration: a fresh server certificate for `names` from the network CA, and
/// client certificates checked against the root and `revoked`.
/// The file under the CA folder holding the certificate chain the running hub serves.
pub const SERVED: &str = "served.pem";

pub fn server_config(ca: &Ca, names: &[String], revoked: Arc<Revocations>, now: i64) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain_pem, key_pem) = ca.issue_server(names, now, 365).map_err(anyhow::Error::msg)?;
    // The chain is public; keep it beside the CA so operators (and tests) can see what is served.
    let served = ca.dir().join(SERVED);
    std::fs::write(&served, &chain_pem).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", served.display()))?;
    let chain = provisioning::cert::certs_from_pem(chain_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let key = provisioning::cert::key_from_pem(key_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.root_der().to_vec()))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).allow_unauthenticated().build()?;
    let verifier = Arc::new(Verifier { inner, revoked });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
