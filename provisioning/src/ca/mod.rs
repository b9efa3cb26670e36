//! The network's certificate authority: a root that signs two intermediates. The issuing CA signs
//! the appliances' client certificates, the hub's and the broker's server certificates and the
//! CRL. The LAN issuing CA signs only the appliances' LAN server certificates, and is
//! name-constrained to the network's LAN domain and private addresses, so that even a certificate
//! it signed by mistake cannot name a site on the internet to the browsers that trust the root.
//! Keys are ECDSA P-256 in owner-only files; the root key is needed only to create the
//! intermediates (and to replace one) and can be moved offline afterwards.
//!
//! The issuing CA can be replaced under the same root (`rotate_issuing`): the one it replaces
//! moves to `previous/`, where it still signs a CRL for the certificates it issued, until it is
//! withdrawn (`withdraw_issuing`) once none of them is in use. A withdrawn issuing CA signs no
//! CRL, so every certificate it issued is refused from then on, by the hub and by the broker.

mod crl;
mod issue;
mod lan;
mod rotation;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use crate::secret;

pub use issue::{csr_for, new_key_and_csr, parse_csr, Issued};
use lan::Lan;

const ROOT_CRT: &str = "root.crt";
const ROOT_KEY: &str = "root.key";
const ISSUING_CRT: &str = "issuing.crt";
const ISSUING_KEY: &str = "issuing.key";
const LAN_CRT: &str = "lan.crt";
const LAN_KEY: &str = "lan.key";
/// Every name the issuing CA has put on a network service's server certificate (the hub's, the
/// broker's), one per line: no LAN certificate may carry one of them.
const SERVICE_NAMES: &str = "service-names";
/// The issuing CAs replaced by a newer one but still honoured: `<serial>.crt` and `<serial>.key`.
const PREVIOUS: &str = "previous";
/// A new issuing CA staged by `rotate_issuing`, switched in by `finish_rotation`.
const NEXT_CRT: &str = "issuing.next.crt";
const NEXT_KEY: &str = "issuing.next.key";
pub const CRL: &str = "crl.pem";
/// How long a CRL is valid for unless the hub is told otherwise.
pub const CRL_VALIDITY: i64 = 30 * DAY;

const DAY: i64 = 86_400;

/// A loaded CA: the root certificate and the issuing CA with its key.
pub struct Ca {
    dir: PathBuf,
    root_pem: String,
    root_der: Vec<u8>,
    issuing_pem: String,
    issuer: Issuer<'static, KeyPair>,
    issuing: IssuingCa,
    /// Replaced issuing CAs still honoured, oldest first.
    previous: Vec<(IssuingCa, Issuer<'static, KeyPair>)>,
    lan: Option<Lan>,
}

/// One issuing CA as `tsunagi-hub ca list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuingCa {
    /// Lower-case hexadecimal.
    pub serial: String,
    pub subject: String,
    pub not_after: i64,
    /// Whether it issues certificates now (otherwise it is a previous one, still honoured).
    pub current: bool,
    #[serde(skip)]
    pub pem: String,
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl IssuingCa {
    fn read(pem: &str, current: bool) -> Result<IssuingCa, String> {
        let der = crate::cert::certs_from_pem(pem.as_bytes())?
            .remove(0)
            .to_vec();
        let (_, c) = x509_parser::parse_x509_certificate(&der).map_err(err)?;
        Ok(IssuingCa {
            serial: shared::chain::hex(c.raw_serial()),
            subject: c.subject().to_string(),
            not_after: c.validity().not_after.timestamp(),
            current,
            pem: pem.to_string(),
            der: der.clone(),
        })
    }
}

/// A key and its CA certificate read from two files, checked to belong together (a crash in the
/// middle of a rotation must read as an error, not as a CA that signs with the wrong key).
fn read_issuer(crt: &Path, key: &Path) -> Result<(String, Issuer<'static, KeyPair>), String> {
    let pem = std::fs::read_to_string(crt).map_err(|e| {
        format!(
            "{}: {e} (create the CA with `tsunagi-hub ca init`)",
            crt.display()
        )
    })?;
    let k = secret::read(key)?;
    let k = KeyPair::from_pem(std::str::from_utf8(&k).map_err(err)?)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let der = crate::cert::certs_from_pem(pem.as_bytes())?.remove(0);
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{}: {e}", crt.display()))?;
    if parsed.public_key().subject_public_key.data.as_ref() != k.public_key_raw() {
        return Err(format!(
            "{} does not hold the key of {}: put back the pair that belongs together (after an interrupted `ca rotate-issuing`, the replaced pair is in previous/)",
            key.display(),
            crt.display()
        ));
    }
    let issuer =
        Issuer::from_ca_cert_pem(&pem, k).map_err(|e| format!("{}: {e}", crt.display()))?;
    Ok((pem, issuer))
}

fn t(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("time in range")
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn random_serial() -> SerialNumber {
    let mut r = secret::random32();
    r[0] &= 0x7f; // positive, as RFC 5280 asks
    SerialNumber::from_slice(&r[..16])
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "tsunagi");
    d.push(DnType::CommonName, cn);
    d
}

/// A new issuing CA's key and certificate, signed by the root.
fn new_issuing(
    root: &Issuer<'_, KeyPair>,
    cn: &str,
    now: i64,
) -> Result<(KeyPair, rcgen::Certificate), String> {
    new_issuing_with(root, cn, now, random_serial())
}

fn new_issuing_with(
    root: &Issuer<'_, KeyPair>,
    cn: &str,
    now: i64,
    serial: SerialNumber,
) -> Result<(KeyPair, rcgen::Certificate), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = t(now - 3600);
    p.not_after = t(now + 10 * 365 * DAY);
    p.serial_number = Some(serial);
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, root).map_err(err)?;
    Ok((key, cert))
}

impl Ca {
    /// Creates a new CA in `dir` (which must not hold one yet) and returns it.
    pub fn init(dir: &Path, network: &str, now: i64) -> Result<Ca, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if dir.join(ROOT_KEY).exists() || dir.join(ISSUING_KEY).exists() {
            return Err(format!(
                "{} already holds a CA; refusing to overwrite it",
                dir.display()
            ));
        }
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut root = CertificateParams::default();
        root.distinguished_name = dn(&format!("{network} root"));
        root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.not_before = t(now - 3600);
        root.not_after = t(now + 20 * 365 * DAY);
        root.serial_number = Some(random_serial());
        root.key_identifier_method = KeyIdMethod::Sha256;
        let root_cert = root.self_signed(&root_key).map_err(err)?;
        let root_issuer = Issuer::new(root, root_key);

        let (issuing_key, issuing_cert) =
            new_issuing(&root_issuer, &format!("{network} issuing CA"), now)?;

        let io = |p: &str, e: std::io::Error| format!("{}: {e}", dir.join(p).display());
        secret::create(
            &dir.join(ROOT_KEY),
            root_issuer.key().serialize_pem().as_bytes(),
        )
        .map_err(|e| io(ROOT_KEY, e))?;
        secret::create(
            &dir.join(ISSUING_KEY),
            issuing_key.serialize_pem().as_bytes(),
        )
        .map_err(|e| io(ISSUING_KEY, e))?;
        std::fs::write(dir.join(ROOT_CRT), root_cert.pem()).map_err(|e| io(ROOT_CRT, e))?;
        std::fs::write(dir.join(ISSUING_CRT), issuing_cert.pem())
            .map_err(|e| io(ISSUING_CRT, e))?;
        let ca = Ca::load(dir)?;
        ca.write_crl(&[], 1, now)?;
        Ok(ca)
    }

    /// Loads the CA from `dir`, checking that its key files are owner-only.
    pub fn load(dir: &Path) -> Result<Ca, String> {
        let read = |p: &str| {
            std::fs::read_to_string(dir.join(p)).map_err(|e| {
                format!(
                    "{}: {e} (create the CA with `tsunagi-hub ca init`)",
                    dir.join(p).display()
                )
            })
        };
        let root_pem = read(ROOT_CRT)?;
        Ca::finish_rotation(dir)?;
        let (issuing_pem, issuer) = read_issuer(&dir.join(ISSUING_CRT), &dir.join(ISSUING_KEY))?;
        let issuing = IssuingCa::read(&issuing_pem, true)?;
        let root_der = crate::cert::certs_from_pem(root_pem.as_bytes())?
            .remove(0)
            .to_vec();
        let lan = if dir.join(LAN_CRT).exists() {
            Some(Ca::load_lan(dir)?)
        } else {
            None
        };
        let mut previous = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.join(PREVIOUS)) {
            let mut crts: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            crts.sort();
            for crt in crts {
                if !crt.with_extension("key").exists() {
                    continue; // withdrawn, its key deleted first
                }
                let (pem, issuer) = read_issuer(&crt, &crt.with_extension("key"))?;
                previous.push((IssuingCa::read(&pem, false)?, issuer));
            }
            previous.sort_by_key(|(c, _)| c.not_after);
        }
        Ok(Ca {
            dir: dir.to_owned(),
            root_pem,
            root_der,
            issuing_pem,
            issuer,
            issuing,
            previous,
            lan,
        })
    }

    /// The issuing CAs honoured: the current one first, then the previous ones.
    pub fn issuing_cas(&self) -> Vec<IssuingCa> {
        std::iter::once(self.issuing.clone())
            .chain(self.previous.iter().map(|(c, _)| c.clone()))
            .collect()
    }

    /// The current issuing CA's distinguished name (DER), as its certificates name their issuer.
    pub fn issuing_subject(&self) -> Vec<u8> {
        x509_parser::parse_x509_certificate(&self.issuing.der)
            .map(|(_, c)| c.subject().as_raw().to_vec())
            .unwrap_or_default()
    }

    /// The current issuing CA's serial.
    pub fn issuing_serial(&self) -> &str {
        &self.issuing.serial
    }

    /// The network's name, as the root's common name gives it.
    fn network_name(&self) -> String {
        x509_parser::parse_x509_certificate(&self.root_der)
            .ok()
            .and_then(|(_, c)| {
                c.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|n| n.as_str().ok())
                    .map(|n| n.trim_end_matches(" root").to_string())
            })
            .unwrap_or_else(|| "tsunagi".into())
    }

    /// The certificates (DER) of every issuing CA honoured, current first: each signs a CRL.
    pub fn issuing_ders(&self) -> Vec<Vec<u8>> {
        self.issuing_cas().into_iter().map(|c| c.der).collect()
    }

    /// Every issuing CA honoured (PEM, current first), as a TLS peer that checks chains needs them.
    pub fn issuing_pems(&self) -> String {
        self.issuing_cas().into_iter().map(|c| c.pem).collect()
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root's SHA-256 fingerprint, which appliances pin at enrolment.
    pub fn fingerprint(&self) -> String {
        crate::cert::fingerprint(&self.root_der)
    }

    /// The issuing CA's certificate (PEM), which a TLS peer needs with the root to check chains.
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{Identity, Purpose};

    #[test]
    fn init_issue_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_249_845;
        let ca = Ca::init(dir.path(), "test", now).unwrap();
        assert!(
            Ca::init(dir.path(), "test", now).is_err(),
            "must not overwrite a CA"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(ISSUING_KEY))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let issued = ca
            .issue_from_csr(
                &csr,
                "3712345678",
                "box-1",
                Purpose::Appliance,
                now,
                now + 90 * DAY,
            )
            .unwrap();
        let id = Identity::from_der(&issued.der).unwrap();
        assert_eq!(
            (id.facility.as_str(), id.appliance.as_str(), id.purpose),
            ("3712345678", "box-1", Purpose::Appliance)
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            cn, "3712345678/box-1",
            "the broker's user name and client ID"
        );
        let proxy = ca
            .issue_from_csr(
                &csr,
                "3712345678",
                "box-1",
                Purpose::PortalProxy,
                now,
                now + 90 * DAY,
            )
            .unwrap();
        assert_eq!(
            Identity::from_der(&proxy.der).unwrap().purpose,
            Purpose::PortalProxy
        );
        // OpenSSL reads both purposes as client authentication, plus the network's own OID.
        let (_, parsed) = x509_parser::parse_x509_certificate(&proxy.der).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.client_auth && !eku.server_auth && eku.other.len() == 1,
            "{eku:?}"
        );
        // 2.25.<UUID as an integer>: 0x69 for "2.25", then the integer in base 128.
        let b = eku.other[0].as_bytes();
        assert_eq!(b[0], 0x69);
        let n = b[1..]
            .iter()
            .fold(0u128, |n, x| (n << 7) | (x & 0x7f) as u128);
        assert_eq!(n, 101_465_809_960_671_454_213_438_212_923_547_036_730);
        assert_eq!(id.not_after, now + 90 * DAY);
        assert_eq!(id.renew_at(), now + 60 * DAY);
        assert!(ca
            .issue_from_csr(
                "not a csr",
                "3712345678",
                "box-1",
                Purpose::Appliance,
                now,
                now + 1
            )
            .is_err());
        assert!(ca
            .issue_from_csr(&csr, "12", "box-1", Purpose::Appliance, now, now + 1)
            .is_err());
        // The hub's and the broker's certificates are marked as the network's services; a LAN
        // certificate, from the same CA, is not.
        let (hub_pem, _) = ca.issue_server(&["hub.example".into()], now, 30).unwrap();
        assert!(crate::cert::is_network_service(
            &crate::cert::certs_from_pem(hub_pem.as_bytes()).unwrap()[0]
        ));
        let mut ca = ca;
        assert!(ca.ensure_lan("tsunagi.internal", now).unwrap());
        let lan = ca
            .issue_lan(&key, "3712345678", &["127.0.0.2".into()], now, now + DAY)
            .unwrap();
        assert!(!crate::cert::is_network_service(&lan.der));
        assert!(
            !crate::cert::is_network_service(&issued.der),
            "nor a client certificate"
        );
        let crl = ca.write_crl(&[(id.serial.clone(), now)], 2, now).unwrap();
        assert!(std::fs::read_to_string(crl)
            .unwrap()
            .contains("BEGIN X509 CRL"));
        assert_eq!(
            Ca::load(dir.path()).unwrap().fingerprint(),
            ca.fingerprint()
        );
    }
}
