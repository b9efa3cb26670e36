//! The network's certificate authority: a root that signs only an issuing CA, which signs the
//! appliances' client certificates, the hub's server certificate and the CRL. Keys are ECDSA P-256
//! in owner-only files; the root key is needed only to create the issuing CA and can be moved
//! offline afterwards.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::cert::{Purpose, APPLIANCE_URI, FACILITY_URI};
use crate::secret;

const ROOT_CRT: &str = "root.crt";
const ROOT_KEY: &str = "root.key";
const ISSUING_CRT: &str = "issuing.crt";
const ISSUING_KEY: &str = "issuing.key";
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
}

/// A certificate just issued.
pub struct Issued {
    /// The leaf, then the issuing CA: what a TLS peer presents.
    pub chain_pem: String,
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after: i64,
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

/// Checks a PEM certificate signing request (its format and its signature) and returns its public
/// key, the only part of it a certificate takes.
pub fn parse_csr(csr_pem: &str) -> Result<rcgen::PublicKey, String> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|c| c.public_key)
        .map_err(|e| format!("the certificate signing request is not valid: {e}"))
}

/// A new P-256 key and a PEM certificate signing request for it, as an appliance makes them.
/// The key (PKCS#8 PEM) never leaves the appliance.
pub fn new_key_and_csr(appliance: &str) -> Result<(String, String), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    Ok((key.serialize_pem(), csr_for(appliance, &key)?))
}

/// A CSR for `appliance` signed by `key`, wherever the key lives (a key pair here, or a TPM).
pub fn csr_for(appliance: &str, key: &impl rcgen::SigningKey) -> Result<String, String> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(appliance);
    p.serialize_request(key).map_err(err)?.pem().map_err(err)
}

impl Ca {
    /// Creates a new CA in `dir` (which must not hold one yet) and returns it.
    pub fn init(dir: &Path, network: &str, now: i64) -> Result<Ca, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if dir.join(ROOT_KEY).exists() || dir.join(ISSUING_KEY).exists() {
            return Err(format!("{} already holds a CA; refusing to overwrite it", dir.display()));
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

        let issuing_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut issuing = CertificateParams::default();
        issuing.distinguished_name = dn(&format!("{network} issuing CA"));
        issuing.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuing.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        issuing.not_before = t(now - 3600);
        issuing.not_after = t(now + 10 * 365 * DAY);
        issuing.serial_number = Some(random_serial());
        issuing.key_identifier_method = KeyIdMethod::Sha256;
        let issuing_cert = issuing.signed_by(&issuing_key, &root_issuer).map_err(err)?;

        let io = |p: &str, e: std::io::Error| format!("{}: {e}", dir.join(p).display());
        secret::create(&dir.join(ROOT_KEY), root_issuer.key().serialize_pem().as_bytes()).map_err(|e| io(ROOT_KEY, e))?;
        secret::create(&dir.join(ISSUING_KEY), issuing_key.serialize_pem().as_bytes()).map_err(|e| io(ISSUING_KEY, e))?;
        std::fs::write(dir.join(ROOT_CRT), root_cert.pem()).map_err(|e| io(ROOT_CRT, e))?;
        std::fs::write(dir.join(ISSUING_CRT), issuing_cert.pem()).map_err(|e| io(ISSUING_CRT, e))?;
        let ca = Ca::load(dir)?;
        ca.write_crl(&[], 1, now)?;
        Ok(ca)
    }

    /// Loads the CA from `dir`, checking that its key files are owner-only.
    pub fn load(dir: &Path) -> Result<Ca, String> {
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).map_err(|e| format!("{}: {e} (create the CA with `tsunagi-hub ca init`)", dir.join(p).display()));
        let root_pem = read(ROOT_CRT)?;
        let issuing_pem = read(ISSUING_CRT)?;
        let key = secret::read(&dir.join(ISSUING_KEY))?;
        let key = KeyPair::from_pem(std::str::from_utf8(&key).map_err(err)?).map_err(|e| format!("{}: {e}", dir.join(ISSUING_KEY).display()))?;
        let issuer = Issuer::from_ca_cert_pem(&issuing_pem, key).map_err(|e| format!("{}: {e}", dir.join(ISSUING_CRT).display()))?;
        let root_der = crate::cert::certs_from_pem(root_pem.as_bytes())?.remove(0).to_vec();
        Ok(Ca { dir: dir.to_owned(), root_pem, root_der, issuing_pem, issuer })
    }

    /// The issuing CA's certificate (DER), which signs the CRL.
    pub fn issuing_der(&self) -> Vec<u8> {
        crate::cert::certs_from_pem(self.issuing_pem.as_bytes()).map(|mut c| c.remove(0).to_vec()).unwrap_or_default()
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

    /// Issues one of a facility's client certificates for `public_key`, naming the facility and
    /// the appliance, for one purpose (the appliance's API, or its proxy's portal connection);
    /// nothing else of a request is copied into it.
    pub fn issue_client(&self, public_key: &impl PublicKeyData, facility: &str, appliance: &str, purpose: Purpose, not_before: i64, not_after: i64) -> Result<Issued, String> {
        crate::token::check_facility(facility)?;
        crate::token::check_appliance(appliance)?;
        let mut p = CertificateParams::default();
        // The broker takes the CN as the MQTT user name and client ID: an appliance's is
        // `<facility>/<appliance>`, the topic prefix of its own topics and nobody else's; a proxy
        // certificate's fits no topic at all.
        p.distinguished_name = match purpose {
            Purpose::Appliance => dn(&crate::cert::mqtt_user(facility, appliance)),
            Purpose::PortalProxy => dn(&format!("portal-proxy {facility} {appliance}")),
        };
        p.subject_alt_names = vec![
            SanType::URI(format!("{FACILITY_URI}{facility}").try_into().map_err(err)?),
            SanType::URI(format!("{APPLIANCE_URI}{appliance}").try_into().map_err(err)?),
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 37], purpose.eku_der())];
        p.not_before = t(not_before);
        p.not_after = t(not_after);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(public_key, &self.issuer).map_err(err)?;
        let der = cert.der().to_vec();
        let id = crate::cert::Identity::from_der(&der)?;
        Ok(Issued { chain_pem: format!("{}{}", cert.pem(), self.issuing_pem), der, serial: id.serial, not_after })
    }

    /// Issues a client certificate from a PEM certificate signing request: the request's signature
    /// is checked and only its public key is used.
    pub fn issue_from_csr(&self, csr_pem: &str, facility: &str, appliance: &str, purpose: Purpose, not_before: i64, not_after: i64) -> Result<Issued, String> {
        self.issue_client(&parse_csr(csr_pem)?, facility, appliance, purpose, not_before, not_after)
    }

    /// A fresh client certificate and key for one of the network's own services (the hub's
    /// client at the MQTT broker), named only by its CN. It names no facility, so the hub's API
    /// refuses it; the broker's ACL gives that CN its rights.
    pub fn issue_service_client(&self, cn: &str, now: i64, lifetime_days: i64) -> Result<(String, String), String> {
        if cn.is_empty() || cn.bytes().all(|b| b.is_ascii_digit()) || !cn.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{cn:?} cannot name a service: use letters, digits and '-', not a facility code"));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = t(now - 300);
        p.not_after = t(now + lifetime_days * DAY);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok((format!("{}{}", cert.pem(), self.issuing_pem), key.serialize_pem()))
    }

    /// The issuing CA's certificate (PEM), which a TLS peer needs with the root to check chains.
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// A fresh server certificate and key for the hub, for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], now: i64, lifetime_days: i64) -> Result<(String, String), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let cert = self.server_cert(&key, names, now - 300, now + lifetime_days * DAY, true)?;
        // The root goes along so that an appliance that has only the root's fingerprint can find it.
        Ok((format!("{}{}{}", cert.pem(), self.issuing_pem, self.root_pem), key.serialize_pem()))
    }

    /// A server certificate for a key held elsewhere (an appliance's LAN listener), for the given
    /// DNS names and IP addresses. The caller decides which names may be asked for.
    pub fn issue_server_for(&self, public_key: &impl PublicKeyData, names: &[String], not_before: i64, not_after: i64) -> Result<Issued, String> {
        let cert = self.server_cert(public_key, names, not_before, not_after, false)?;
        let der = cert.der().to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(err)?;
        let serial = shared::chain::hex(parsed.raw_serial());
        Ok(Issued { chain_pem: format!("{}{}", cert.pem(), self.issuing_pem), der, serial, not_after })
    }

    /// A server certificate; `service` marks one of the network's own services (the hub, the
    /// broker), which appliances require of them and which LAN certificates never carry.
    fn server_cert(&self, public_key: &impl PublicKeyData, names: &[String], not_before: i64, not_after: i64, service: bool) -> Result<rcgen::Certificate, String> {
        if names.is_empty() {
            return Err("a server certificate needs at least one name".into());
        }
        let mut p = CertificateParams::new(names.to_vec()).map_err(err)?;
        p.distinguished_name = dn(&names[0]);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if service {
            p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 37], crate::cert::network_service_eku_der())];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        p.not_before = t(not_before);
        p.not_after = t(not_after);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        p.signed_by(public_key, &self.issuer).map_err(err)
    }

    /// Writes the CRL of the given revoked serials (hex) to `crl.pem` in the CA folder, signed by
    /// the issuing CA, valid for `CRL_VALIDITY`, and returns its path. `number` must grow with
    /// every CRL.
    pub fn write_crl(&self, revoked: &[(String, i64)], number: u64, now: i64) -> Result<PathBuf, String> {
        self.write_crl_valid_for(revoked, number, now, CRL_VALIDITY)
    }

    /// `write_crl` with its own validity in seconds. The running hub rewrites the CRL once a third
    /// of it has passed (`tsunagi-hub serve --crl-validity`), so it never lapses while the hub runs.
    pub fn write_crl_valid_for(&self, revoked: &[(String, i64)], number: u64, now: i64, validity: i64) -> Result<PathBuf, String> {
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at)| {
                let bytes = shared::chain::unhex(serial).ok_or_else(|| format!("bad serial {serial}"))?;
                Ok(RevokedCertParams { serial_number: SerialNumber::from_slice(&bytes), revocation_time: t(*at), reason_code: None, invalidity_date: None })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let params = CertificateRevocationListParams {
            this_update: t(now - 60),
            next_update: t(now + validity),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(err)?;
        let path = self.dir.join(CRL);
        secret::write_atomic(&path, crl.pem().map_err(err)?.as_bytes(), 0o644).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::Identity;

    #[test]
    fn init_issue_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_249_845;
        let ca = Ca::init(dir.path(), "test", now).unwrap();
        assert!(Ca::init(dir.path(), "test", now).is_err(), "must not overwrite a CA");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join(ISSUING_KEY)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.issue_from_csr(&csr, "3712345678", "box-1", Purpose::Appliance, now, now + 90 * DAY).unwrap();
        let id = Identity::from_der(&issued.der).unwrap();
        assert_eq!((id.facility.as_str(), id.appliance.as_str(), id.purpose), ("3712345678", "box-1", Purpose::Appliance));
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        let cn = parsed.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
        assert_eq!(cn, "3712345678/box-1", "the broker's user name and client ID");
        let proxy = ca.issue_from_csr(&csr, "3712345678", "box-1", Purpose::PortalProxy, now, now + 90 * DAY).unwrap();
        assert_eq!(Identity::from_der(&proxy.der).unwrap().purpose, Purpose::PortalProxy);
        // OpenSSL reads both purposes as client authentication, plus the network's own OID.
        let (_, parsed) = x509_parser::parse_x509_certificate(&proxy.der).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && eku.other.len() == 1, "{eku:?}");
        // 2.25.<UUID as an integer>: 0x69 for "2.25", then the integer in base 128.
        let b = eku.other[0].as_bytes();
        assert_eq!(b[0], 0x69);
        let n = b[1..].iter().fold(0u128, |n, x| (n << 7) | (x & 0x7f) as u128);
        assert_eq!(n, 101_465_809_960_671_454_213_438_212_923_547_036_730);
        assert_eq!(id.not_after, now + 90 * DAY);
        assert_eq!(id.renew_at(), now + 60 * DAY);
        assert!(ca.issue_from_csr("not a csr", "3712345678", "box-1", Purpose::Appliance, now, now + 1).is_err());
        assert!(ca.issue_from_csr(&csr, "12", "box-1", Purpose::Appliance, now, now + 1).is_err());
        // The hub's and the broker's certificates are marked as the network's services; a LAN
        // certificate, from the same CA, is not.
        let (hub_pem, _) = ca.issue_server(&["hub.example".into()], now, 30).unwrap();
        assert!(crate::cert::is_network_service(&crate::cert::certs_from_pem(hub_pem.as_bytes()).unwrap()[0]));
        let lan = ca.issue_server_for(&key, &["localhost".into()], now, now + DAY).unwrap();
        assert!(!crate::cert::is_network_service(&lan.der));
        assert!(!crate::cert::is_network_service(&issued.der), "nor a client certificate");
        let crl = ca.write_crl(&[(id.serial.clone(), now)], 2, now).unwrap();
        assert!(std::fs::read_to_string(crl).unwrap().contains("BEGIN X509 CRL"));
        assert_eq!(Ca::load(dir.path()).unwrap().fingerprint(), ca.fingerprint());
    }
}
