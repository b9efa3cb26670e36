//! The hub's TLS: TLS 1.2 and 1.3 only (rustls with ring, whose suites are all AEAD with forward
//! secrecy), a server certificate from the network CA, and client certificates verified against
//! the network root and the current CRL. Which facility a connection speaks for is read from its
//! verified certificate here and nowhere else.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use provisioning::{Ca, Identity};

/// A file's (modification time, length, inode).
type FileStamp = (SystemTime, u64, u64);

/// The revoked serials, read from the CA's `crl.pem` and read again whenever that file changes,
/// so `tsunagi-hub cert revoke` in another process takes effect on the next handshake and the
/// next request. The file holds one CRL per issuing CA honoured (two while one replaces
/// another). Each must be signed by an issuing CA the hub knows, name it as issuer, and be
/// current (its next update still ahead). A certificate is checked against its own issuer's CRL;
/// an issuer without a good CRL, or a file that cannot be read, refuses everyone it answers for:
/// revocation fails closed.
pub struct Revocations {
    path: PathBuf,
    /// The issuing CAs' certificates (DER), whose keys sign the CRLs.
    issuers: Vec<Vec<u8>>,
    /// The file's (modification time, length, inode) when read: the CA replaces the file by a
    /// rename, and two writes can share a coarse modification time.
    cache: Mutex<(Option<FileStamp>, Result<Crls, String>)>,
}

/// A CRL that was read and checked: its serials and when it must be replaced.
#[derive(Debug, Clone)]
pub struct Crl {
    pub serials: HashSet<String>,
    pub this_update: i64,
    pub next_update: i64,
}

/// The checked CRLs of a file, by their issuer's distinguished name (DER).
#[derive(Debug, Clone, Default)]
pub struct Crls {
    pub by_issuer: HashMap<Vec<u8>, Crl>,
    /// Issuing CAs the hub knows that the file has no CRL from (their certificates are refused).
    pub missing: Vec<String>,
}

impl Crls {
    /// The earliest next update of them all (when the file must be written again).
    pub fn next_update(&self) -> i64 {
        self.by_issuer
            .values()
            .map(|c| c.next_update)
            .min()
            .unwrap_or(0)
    }
}

impl Revocations {
    pub fn new(path: PathBuf, issuers: Vec<Vec<u8>>) -> Revocations {
        Revocations {
            path,
            issuers,
            cache: Mutex::new((None, Err("not read yet".into()))),
        }
    }

    /// The current CRLs as last read and checked, read again when the file changed. An error
    /// when the file cannot be read, or lacks the CRL of an issuing CA the hub knows.
    pub fn current(&self) -> Result<Crls, String> {
        self.refresh();
        let crls = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()?;
        if !crls.missing.is_empty() {
            return Err(format!(
                "{}: no CRL from {}",
                self.path.display(),
                crls.missing.join(", ")
            ));
        }
        Ok(crls)
    }

    fn refresh(&self) {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() || cache.0 != stamp {
            cache.1 = read_crls(&self.path, &self.issuers);
            cache.0 = stamp;
            match &cache.1 {
                Err(e) => {
                    tracing::error!(crl = %self.path.display(), error = %e, "the CRL cannot be read: refusing every client certificate until it can")
                }
                Ok(c) if !c.missing.is_empty() => {
                    tracing::error!(crl = %self.path.display(), missing = %c.missing.join(", "), "no CRL from these issuing CAs: refusing the certificates they issued until there is one")
                }
                Ok(_) => {}
            }
        }
    }

    /// `Ok(())` when the certificate is not revoked and its issuer's CRL is current; otherwise
    /// why it is refused.
    pub fn check(&self, id: &Identity) -> Result<(), String> {
        self.refresh();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let crls = cache
            .1
            .as_ref()
            .map_err(|e| format!("revocation cannot be checked: {e}"))?;
        match crls.by_issuer.get(&id.issuer) {
            None => Err("revocation cannot be checked: there is no CRL from the certificate's issuer (an issuing CA withdrawn or unknown)".into()),
            Some(crl) if crl.next_update <= crate::now() => Err(format!("the CRL lapsed at {} and was not renewed: revocation cannot be checked", shared::time::rfc3339(crl.next_update))),
            Some(crl) if crl.serials.contains(&id.serial) => Err("the certificate has been revoked".into()),
            Some(_) => Ok(()),
        }
    }
}

/// Reads every CRL in the file and checks each: signed by one of `issuers`' keys, naming it as
/// issuer, already in force. (Whether each is still current is checked at each use.) A CRL from
/// anyone else fails the whole file.
pub fn read_crls(path: &std::path::Path, issuers: &[Vec<u8>]) -> Result<Crls, String> {
    use rustls::pki_types::pem::PemObject;
    let ders = rustls::pki_types::CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!("{}: no CRL in it", path.display()));
    }
    let issuers = issuers
        .iter()
        .map(|d| {
            x509_parser::parse_x509_certificate(d)
                .map(|(_, c)| c)
                .map_err(|e| format!("an issuing CA's certificate: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Crls::default();
    for der in &ders {
        let (_, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| format!("{}: {e}", path.display()))?;
        let issuer = issuers
            .iter()
            .find(|i| i.subject().as_raw() == crl.issuer().as_raw())
            .ok_or_else(|| {
                format!(
                    "{}: issued by {}, not by the network's issuing CA",
                    path.display(),
                    crl.issuer()
                )
            })?;
        verify_crl_signature(
            crl.tbs_cert_list.as_ref(),
            &crl.signature_value.data,
            issuer.public_key().subject_public_key.data.as_ref(),
        )
        .map_err(|e| {
            format!(
                "{}: its signature does not verify with the issuing CA's key ({e})",
                path.display()
            )
        })?;
        let this_update = crl.last_update().timestamp();
        let next_update = crl
            .next_update()
            .map(|t| t.timestamp())
            .ok_or_else(|| format!("{}: it has no next update", path.display()))?;
        if this_update > crate::now() + 300 {
            return Err(format!(
                "{}: it is not in force until {}",
                path.display(),
                shared::time::rfc3339(this_update)
            ));
        }
        let serials = crl
            .iter_revoked_certificates()
            .map(|r| shared::chain::hex(r.raw_serial()))
            .collect();
        out.by_issuer.insert(
            crl.issuer().as_raw().to_vec(),
            Crl {
                serials,
                this_update,
                next_update,
            },
        );
    }
    out.missing = issuers
        .iter()
        .filter(|i| !out.by_issuer.contains_key(i.subject().as_raw()))
        .map(|i| i.subject().to_string())
        .collect();
    Ok(out)
}

/// Checks an ECDSA P-256 SHA-256 CRL signature (the only kind the network's CA makes) with ring.
fn verify_crl_signature(tbs: &[u8], signature: &[u8], public_key: &[u8]) -> Result<(), String> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(tbs, signature)
        .map_err(|_| "bad signature".to_string())
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

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = Identity::from_der(end_entity).map_err(rustls::Error::General)?;
        self.revoked
            .check(&id)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::Revoked))?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

pub fn server_config(
    ca: &Ca,
    names: &[String],
    revoked: Arc<Revocations>,
    now: i64,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain_pem, key_pem) = ca
        .issue_server(names, now, 365)
        .map_err(anyhow::Error::msg)?;
    // The chain is public; keep it beside the CA so operators (and tests) can see what is served.
    let served = ca.dir().join(SERVED);
    std::fs::write(&served, &chain_pem)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", served.display()))?;
    let chain =
        provisioning::cert::certs_from_pem(chain_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let key = provisioning::cert::key_from_pem(key_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.root_der().to_vec()))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(Verifier { inner, revoked });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity from `ca` with this serial (what the handshake reads from a certificate).
    fn id(ca: &Ca, serial: &str) -> Identity {
        Identity {
            facility: "3712345678".into(),
            appliance: "box-1".into(),
            serial: serial.into(),
            not_before: 0,
            not_after: i64::MAX / 2,
            purpose: provisioning::Purpose::Appliance,
            issuer: ca.issuing_subject(),
        }
    }

    #[test]
    fn a_crl_counts_only_when_signed_by_the_issuing_ca_and_current() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let t = crate::now();
        let ca = Ca::init(dir.path(), "test", t).unwrap();
        let foreign = Ca::init(other.path(), "other", t).unwrap();
        let path = dir.path().join(provisioning::ca::CRL);
        let r = Revocations::new(path.clone(), ca.issuing_ders());
        ca.write_crl(&[("0a0b".into(), t)], 2, t).unwrap();
        assert!(r.check(&id(&ca, "0c")).is_ok());
        assert_eq!(
            r.check(&id(&ca, "0a0b")).unwrap_err(),
            "the certificate has been revoked"
        );
        // A certificate from another issuer has no CRL here.
        assert!(r
            .check(&id(&foreign, "0c"))
            .unwrap_err()
            .contains("no CRL from the certificate's issuer"));
        // A CRL from another CA, dropped where the hub's belongs, refuses everyone.
        std::fs::copy(other.path().join(provisioning::ca::CRL), &path).unwrap();
        let e = r.check(&id(&ca, "0c")).unwrap_err();
        assert!(e.contains("not by the network's issuing CA"), "{e}");
        drop(foreign);
        // The hub's own CRL with its signature damaged refuses everyone.
        ca.write_crl(&[], 3, t).unwrap();
        use rustls::pki_types::pem::PemObject;
        let mut der = rustls::pki_types::CertificateRevocationListDer::from_pem_file(&path)
            .unwrap()
            .as_ref()
            .to_vec();
        let n = der.len();
        der[n - 5] ^= 1;
        std::fs::write(&path, provisioning::cert::pem("X509 CRL", &der)).unwrap();
        let e = r.check(&id(&ca, "0c")).unwrap_err();
        assert!(e.contains("signature"), "{e}");
        // A CRL past its next update refuses everyone.
        ca.write_crl_valid_for(&[], 4, t - 1000, 10).unwrap();
        let e = r.check(&id(&ca, "0c")).unwrap_err();
        assert!(e.contains("lapsed"), "{e}");
        ca.write_crl(&[], 5, t).unwrap();
        assert!(r.check(&id(&ca, "0c")).is_ok());
    }

    /// While one issuing CA replaces another, the file holds a CRL from each, and each
    /// certificate is checked against its own issuer's; once the old one is withdrawn, its
    /// certificates have no CRL and are refused, while the new one's are not.
    #[test]
    fn each_issuing_ca_answers_for_its_own_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let t = crate::now();
        let old = Ca::init(dir.path(), "test", t).unwrap();
        let (old_serial, _) = Ca::rotate_issuing(dir.path(), t).unwrap();
        let new = Ca::load(dir.path()).unwrap();
        assert_eq!(new.issuing_cas().len(), 2);
        assert_ne!(
            old.issuing_subject(),
            new.issuing_subject(),
            "told apart by name, as OpenSSL finds CRLs"
        );
        let path = dir.path().join(provisioning::ca::CRL);
        let r = Revocations::new(path.clone(), new.issuing_ders());
        new.write_crl(&[("0a".into(), t)], 2, t).unwrap();
        assert_eq!(r.current().unwrap().by_issuer.len(), 2);
        assert!(r.check(&id(&old, "0c")).is_ok() && r.check(&id(&new, "0c")).is_ok());
        assert!(r.check(&id(&old, "0a")).is_err() && r.check(&id(&new, "0a")).is_err());
        // A file with the old CA's CRL only (written by a hub that never saw the rotation) has
        // none from the new one: its certificates are refused, and the hub knows to write again.
        old.write_crl(&[], 3, t).unwrap();
        assert!(r.current().unwrap_err().contains("no CRL from"));
        assert!(r.check(&id(&old, "0c")).is_ok());
        assert!(r
            .check(&id(&new, "0c"))
            .unwrap_err()
            .contains("no CRL from the certificate's issuer"));
        Ca::withdraw_issuing(dir.path(), &old_serial).unwrap();
        assert!(Ca::withdraw_issuing(dir.path(), new.issuing_serial())
            .unwrap_err()
            .contains("current issuing CA"));
        let after = Ca::load(dir.path()).unwrap();
        assert_eq!(after.issuing_cas().len(), 1);
        after.write_crl(&[], 4, t).unwrap();
        let r = Revocations::new(path, after.issuing_ders());
        assert!(r.check(&id(&new, "0c")).is_ok());
        assert!(r
            .check(&id(&old, "0c"))
            .unwrap_err()
            .contains("no CRL from the certificate's issuer"));
    }
}
