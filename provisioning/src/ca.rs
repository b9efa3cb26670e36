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

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CidrSubnet,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::cert::{Purpose, APPLIANCE_URI, FACILITY_URI};
use crate::secret;

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

/// The LAN issuing CA, and the DNS domain its name constraints permit.
struct Lan {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
    domain: String,
}

/// The address ranges a LAN certificate may name: private, link-local and loopback (the last for
/// a region on one machine), less the loopback addresses a one-box hub or broker listens on.
fn lan_constraints(domain: &str) -> NameConstraints {
    let v4 = |a: [u8; 4], p: u8| GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(a, p));
    let v6 = |first: u16, p: u8| {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&first.to_be_bytes());
        GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(a, p))
    };
    let mut loopback6 = [0u8; 16];
    loopback6[15] = 1;
    NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName(domain.to_string()),
            v4([10, 0, 0, 0], 8),
            v4([172, 16, 0, 0], 12),
            v4([192, 168, 0, 0], 16),
            v4([169, 254, 0, 0], 16),
            v4([127, 0, 0, 0], 8),
            v6(0xfc00, 7),
            v6(0xfe80, 10),
        ],
        excluded_subtrees: vec![
            v4([127, 0, 0, 1], 32),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(loopback6, 128)),
        ],
    }
}

/// A certificate just issued.
pub struct Issued {
    /// The leaf, then the issuing CA: what a TLS peer presents.
    pub chain_pem: String,
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after: i64,
    /// The serial of the CA that signed it.
    pub issuer: String,
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

    /// Replaces the issuing CA with a new one under the same root (which needs `root.key` in the
    /// CA folder). The one replaced moves to `previous/`: the certificates it issued stay valid,
    /// and it keeps signing a CRL for them, until `withdraw_issuing`. New certificates (and the
    /// hub's and the broker's once they are issued again) come from the new one. Returns the
    /// replaced and the new issuing CA's serials.
    pub fn rotate_issuing(dir: &Path, now: i64) -> Result<(String, String), String> {
        let ca = Ca::load(dir)?;
        let root_key = secret::read(&dir.join(ROOT_KEY))
            .map_err(|e| format!("replacing the issuing CA needs the root key: put root.key back into {} from where it is kept offline, and move it away again afterwards ({e})", dir.display()))?;
        let root_key = KeyPair::from_pem(std::str::from_utf8(&root_key).map_err(err)?)
            .map_err(|e| format!("{}: {e}", dir.join(ROOT_KEY).display()))?;
        let root = Issuer::from_ca_cert_pem(&ca.root_pem, root_key)
            .map_err(|e| format!("{}: {e}", dir.join(ROOT_CRT).display()))?;
        let old = ca.issuing.serial.clone();
        // Issuing CAs are told apart by name as well (OpenSSL finds a certificate's CRL by its
        // issuer's name), so each new one carries a part of its own serial.
        let serial = random_serial();
        let tag = shared::chain::hex(serial.as_ref())
            .chars()
            .take(8)
            .collect::<String>();
        let (key, cert) = new_issuing_with(
            &root,
            &format!("{} issuing CA {tag}", ca.network_name()),
            now,
            serial,
        )?;
        let prev = dir.join(PREVIOUS);
        std::fs::create_dir_all(&prev).map_err(|e| format!("{}: {e}", prev.display()))?;
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        // The replaced CA is kept first, so that no step of this can lose it; then the new pair is
        // staged beside the current one and switched in. A crash at any point leaves either the
        // old pair or a staged switch that the next `load` completes (`finish_rotation`).
        let (old_crt, old_key) = (
            prev.join(format!("{old}.crt")),
            prev.join(format!("{old}.key")),
        );
        secret::write_atomic(&old_key, &secret::read(&dir.join(ISSUING_KEY))?, 0o600)
            .map_err(|e| io(&old_key, e))?;
        secret::write_atomic(&old_crt, ca.issuing_pem.as_bytes(), 0o644)
            .map_err(|e| io(&old_crt, e))?;
        secret::write_atomic(&dir.join(NEXT_KEY), key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| io(&dir.join(NEXT_KEY), e))?;
        secret::write_atomic(&dir.join(NEXT_CRT), cert.pem().as_bytes(), 0o644)
            .map_err(|e| io(&dir.join(NEXT_CRT), e))?;
        let new = Ca::load(dir)?;
        Ok((old, new.issuing.serial))
    }

    /// Completes a switch of the issuing CA that `rotate_issuing` staged (and a crash may have
    /// interrupted): the staged key, then the staged certificate, replace the current ones. The
    /// replaced pair is in `previous/` already.
    fn finish_rotation(dir: &Path) -> Result<(), String> {
        let io = |p: &Path, e: std::io::Error| {
            format!(
                "{}: {e} (an interrupted replacement of the issuing CA)",
                p.display()
            )
        };
        if !dir.join(NEXT_CRT).exists() {
            return Ok(());
        }
        if dir.join(NEXT_KEY).exists() {
            std::fs::rename(dir.join(NEXT_KEY), dir.join(ISSUING_KEY))
                .map_err(|e| io(&dir.join(NEXT_KEY), e))?;
        }
        std::fs::rename(dir.join(NEXT_CRT), dir.join(ISSUING_CRT))
            .map_err(|e| io(&dir.join(NEXT_CRT), e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))
    }

    /// Withdraws a previous issuing CA: its key is deleted and its certificate kept as
    /// `previous/<serial>.crt.withdrawn`. From the next CRL on it signs none, so every
    /// certificate it issued is refused. The current issuing CA cannot be withdrawn.
    pub fn withdraw_issuing(dir: &Path, serial: &str) -> Result<(), String> {
        let ca = Ca::load(dir)?;
        let serial = serial.trim().to_ascii_lowercase();
        if ca.issuing.serial == serial {
            return Err(format!("{serial} is the current issuing CA: replace it first (`tsunagi-hub ca rotate-issuing`)"));
        }
        if !ca.previous.iter().any(|(c, _)| c.serial == serial) {
            return Err(format!(
                "no previous issuing CA has the serial {serial}; see `tsunagi-hub ca list`"
            ));
        }
        // The key goes first: a previous CA without its key is withdrawn (`load` skips it), so a
        // crash between the two steps cannot bring it back.
        let crt = dir.join(PREVIOUS).join(format!("{serial}.crt"));
        let key = crt.with_extension("key");
        std::fs::remove_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
        std::fs::rename(&crt, crt.with_extension("crt.withdrawn"))
            .map_err(|e| format!("{}: {e}", crt.display()))?;
        std::fs::File::open(dir.join(PREVIOUS))
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.join(PREVIOUS).display()))
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

    /// The LAN issuing CA's serial, once `ensure_lan` has run.
    pub fn lan_serial(&self) -> Option<String> {
        let l = self.lan.as_ref()?;
        IssuingCa::read(&l.pem, true).ok().map(|c| c.serial)
    }

    fn load_lan(dir: &Path) -> Result<Lan, String> {
        let pem = std::fs::read_to_string(dir.join(LAN_CRT))
            .map_err(|e| format!("{}: {e}", dir.join(LAN_CRT).display()))?;
        let key = secret::read(&dir.join(LAN_KEY))?;
        let key = KeyPair::from_pem(std::str::from_utf8(&key).map_err(err)?)
            .map_err(|e| format!("{}: {e}", dir.join(LAN_KEY).display()))?;
        let der = crate::cert::certs_from_pem(pem.as_bytes())?.remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("{}: {e}", dir.join(LAN_CRT).display()))?;
        let domain = match parsed.name_constraints() {
            Ok(Some(nc)) => {
                nc.value
                    .permitted_subtrees
                    .iter()
                    .flatten()
                    .find_map(|g| match g.base {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
            }
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "{} has no DNS name constraint: not a tsunagi LAN issuing CA",
                dir.join(LAN_CRT).display()
            )
        })?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|e| format!("{}: {e}", dir.join(LAN_CRT).display()))?;
        Ok(Lan {
            pem,
            issuer,
            domain,
        })
    }

    /// Makes sure the LAN issuing CA exists for `domain`: creates it, signed by the root, when it
    /// does not (which needs the root key in the CA folder), and refuses to go on when it was
    /// made for another domain. Returns whether it was created.
    pub fn ensure_lan(&mut self, domain: &str, now: i64) -> Result<bool, String> {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        crate::cert::check_host_name(&domain).map_err(|e| format!("the LAN domain: {e}"))?;
        if let Some(l) = &self.lan {
            if l.domain != domain {
                return Err(format!(
                    "the LAN issuing CA in {} is constrained to {}, not {domain}: serve with --lan-domain {}, or move lan.crt and lan.key away to make a new one (the appliances' LAN certificates then change at their next renewal)",
                    self.dir.display(),
                    l.domain,
                    l.domain
                ));
            }
            return Ok(false);
        }
        let root_key = secret::read(&self.dir.join(ROOT_KEY)).map_err(|e| {
            format!("the LAN issuing CA does not exist yet and making it needs the root key: {e}")
        })?;
        let root_key = KeyPair::from_pem(std::str::from_utf8(&root_key).map_err(err)?)
            .map_err(|e| format!("{}: {e}", self.dir.join(ROOT_KEY).display()))?;
        let root = Issuer::from_ca_cert_pem(&self.root_pem, root_key)
            .map_err(|e| format!("{}: {e}", self.dir.join(ROOT_CRT).display()))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut p = CertificateParams::default();
        let network = self.network_name();
        p.distinguished_name = dn(&format!("{network} LAN issuing CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.name_constraints = Some(lan_constraints(&domain));
        p.not_before = t(now - 3600);
        p.not_after = t(now + 10 * 365 * DAY);
        p.serial_number = Some(random_serial());
        p.key_identifier_method = KeyIdMethod::Sha256;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &root).map_err(err)?;
        secret::create(&self.dir.join(LAN_KEY), key.serialize_pem().as_bytes())
            .map_err(|e| format!("{}: {e}", self.dir.join(LAN_KEY).display()))?;
        secret::write_atomic(&self.dir.join(LAN_CRT), cert.pem().as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", self.dir.join(LAN_CRT).display()))?;
        self.lan = Some(Ca::load_lan(&self.dir)?);
        Ok(true)
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

    /// The LAN issuing CA's certificate (PEM), once `ensure_lan` has run.
    pub fn lan_pem(&self) -> Option<&str> {
        self.lan.as_ref().map(|l| l.pem.as_str())
    }

    /// The names the issuing CA has put on the network's own services' certificates.
    pub fn service_names(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(SERVICE_NAMES))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn remember_service_names(&self, names: &[String]) -> Result<(), String> {
        let mut all = self.service_names();
        for n in names {
            let n = n.to_ascii_lowercase();
            if !all.contains(&n) {
                all.push(n);
            }
        }
        let path = self.dir.join(SERVICE_NAMES);
        secret::write_atomic(&path, (all.join("\n") + "\n").as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks the names an appliance of `facility` asks for on its LAN certificate: 1 to 8, each
    /// a private, link-local or loopback address or a host name under `<facility>.<LAN domain>`,
    /// and none that a network service's certificate carries. The message names the first wrong
    /// one and what to use instead.
    pub fn check_lan_names(&self, facility: &str, names: &[String]) -> Result<(), String> {
        let lan = self.lan.as_ref().ok_or("the hub has no LAN issuing CA (it makes one when it starts): ask the network's operators")?;
        if names.is_empty() || names.len() > 8 {
            return Err("name the LAN listener with 1 to 8 host names or addresses".into());
        }
        let services = self.service_names();
        for n in names {
            crate::cert::check_lan_name(n, facility, &lan.domain)?;
            if services.contains(&n.to_ascii_lowercase()) {
                return Err(format!("{n} is a name of the network's own services (the hub or the broker); a LAN certificate cannot carry it"));
            }
        }
        Ok(())
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

    /// Issues one of a facility's client certificates for `public_key`, naming the facility and
    /// the appliance, for one purpose (the appliance's API, or its proxy's portal connection);
    /// nothing else of a request is copied into it.
    pub fn issue_client(
        &self,
        public_key: &impl PublicKeyData,
        facility: &str,
        appliance: &str,
        purpose: Purpose,
        not_before: i64,
        not_after: i64,
    ) -> Result<Issued, String> {
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
            SanType::URI(
                format!("{FACILITY_URI}{facility}")
                    .try_into()
                    .map_err(err)?,
            ),
            SanType::URI(
                format!("{APPLIANCE_URI}{appliance}")
                    .try_into()
                    .map_err(err)?,
            ),
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            purpose.eku_der(),
        )];
        p.not_before = t(not_before);
        p.not_after = t(not_after);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(public_key, &self.issuer).map_err(err)?;
        let der = cert.der().to_vec();
        let id = crate::cert::Identity::from_der(&der)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.issuing_pem),
            der,
            serial: id.serial,
            not_after,
            issuer: self.issuing.serial.clone(),
        })
    }

    /// Issues a client certificate from a PEM certificate signing request: the request's signature
    /// is checked and only its public key is used.
    pub fn issue_from_csr(
        &self,
        csr_pem: &str,
        facility: &str,
        appliance: &str,
        purpose: Purpose,
        not_before: i64,
        not_after: i64,
    ) -> Result<Issued, String> {
        self.issue_client(
            &parse_csr(csr_pem)?,
            facility,
            appliance,
            purpose,
            not_before,
            not_after,
        )
    }

    /// A fresh client certificate and key for one of the network's own services (the hub's
    /// client at the MQTT broker), named only by its CN. It names no facility, so the hub's API
    /// refuses it; the broker's ACL gives that CN its rights.
    pub fn issue_service_client(
        &self,
        cn: &str,
        now: i64,
        lifetime_days: i64,
    ) -> Result<(String, String), String> {
        if cn.is_empty()
            || cn.bytes().all(|b| b.is_ascii_digit())
            || !cn.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "{cn:?} cannot name a service: use letters, digits and '-', not a facility code"
            ));
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
        Ok((
            format!("{}{}", cert.pem(), self.issuing_pem),
            key.serialize_pem(),
        ))
    }

    /// The issuing CA's certificate (PEM), which a TLS peer needs with the root to check chains.
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// A fresh server certificate and key for the hub, for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        names: &[String],
        now: i64,
        lifetime_days: i64,
    ) -> Result<(String, String), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let cert = self.server_cert(&key, names, now - 300, now + lifetime_days * DAY)?;
        self.remember_service_names(names)?;
        // The root goes along so that an appliance that has only the root's fingerprint can find it.
        Ok((
            format!("{}{}{}", cert.pem(), self.issuing_pem, self.root_pem),
            key.serialize_pem(),
        ))
    }

    /// An appliance's LAN server certificate, for a key held on the appliance, signed by the LAN
    /// issuing CA: the names are checked (`check_lan_names`) here, whatever the caller did.
    pub fn issue_lan(
        &self,
        public_key: &impl PublicKeyData,
        facility: &str,
        names: &[String],
        not_before: i64,
        not_after: i64,
    ) -> Result<Issued, String> {
        self.check_lan_names(facility, names)?;
        let lan = self.lan.as_ref().ok_or("no LAN issuing CA")?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(err)?;
        // Not a host name: OpenSSL checks a host-name-like CN against the DNS name constraints.
        p.distinguished_name = dn(&format!("LAN listener of facility {facility}"));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = t(not_before);
        p.not_after = t(not_after);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(public_key, &lan.issuer).map_err(err)?;
        let der = cert.der().to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(err)?;
        let serial = shared::chain::hex(parsed.raw_serial());
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), lan.pem),
            der,
            serial,
            not_after,
            issuer: self.lan_serial().unwrap_or_default(),
        })
    }

    /// A network service's server certificate (the hub's, the broker's), marked as one: appliances
    /// require the mark of them, and LAN certificates (from the other intermediate) never carry it.
    fn server_cert(
        &self,
        public_key: &impl PublicKeyData,
        names: &[String],
        not_before: i64,
        not_after: i64,
    ) -> Result<rcgen::Certificate, String> {
        if names.is_empty() {
            return Err("a server certificate needs at least one name".into());
        }
        let mut p = CertificateParams::new(names.to_vec()).map_err(err)?;
        p.distinguished_name = dn(&names[0]);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            crate::cert::network_service_eku_der(),
        )];
        p.not_before = t(not_before);
        p.not_after = t(not_after);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        p.signed_by(public_key, &self.issuer).map_err(err)
    }

    /// Writes the CRL of the given revoked serials (hex) to `crl.pem` in the CA folder, once
    /// signed by each issuing CA honoured, valid for `CRL_VALIDITY`, and returns its path. `number` must grow with
    /// every CRL.
    pub fn write_crl(
        &self,
        revoked: &[(String, i64)],
        number: u64,
        now: i64,
    ) -> Result<PathBuf, String> {
        self.write_crl_valid_for(revoked, number, now, CRL_VALIDITY)
    }

    /// `write_crl` with its own validity in seconds. The running hub rewrites the CRL once a third
    /// of it has passed (`tsunagi-hub serve --crl-validity`), so it never lapses while the hub runs.
    pub fn write_crl_valid_for(
        &self,
        revoked: &[(String, i64)],
        number: u64,
        now: i64,
        validity: i64,
    ) -> Result<PathBuf, String> {
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at)| {
                let bytes =
                    shared::chain::unhex(serial).ok_or_else(|| format!("bad serial {serial}"))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: t(*at),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // One CRL per issuing CA honoured, in one file (Mosquitto's OpenSSL reads them all, and
        // needs the one of each client certificate's issuer). Serials are random 128-bit
        // numbers, so each CRL can list every revoked one.
        let mut pem = String::new();
        for issuer in std::iter::once(&self.issuer).chain(self.previous.iter().map(|(_, i)| i)) {
            let params = CertificateRevocationListParams {
                this_update: t(now - 60),
                next_update: t(now + validity),
                crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
                issuing_distribution_point: None,
                revoked_certs: revoked_certs.clone(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            pem.push_str(&params.signed_by(issuer).map_err(err)?.pem().map_err(err)?);
        }
        let path = self.dir.join(CRL);
        secret::write_atomic(&path, pem.as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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

    /// What a browser that trusts the root decides about a LAN certificate (webpki, as rustls
    /// checks a server; Chromium enforces name constraints the same way).
    fn browser_accepts(
        ca: &Ca,
        leaf: &[u8],
        intermediate_pem: &str,
        name: &str,
        now: i64,
    ) -> Result<(), String> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ca.root_der().to_vec(),
            ))
            .unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let inter = crate::cert::certs_from_pem(intermediate_pem.as_bytes()).unwrap();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now as u64 + 60,
        ));
        v.verify_server_cert(
            &rustls::pki_types::CertificateDer::from(leaf.to_vec()),
            &inter,
            &server,
            &[],
            at,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn lan_certificates_come_from_their_own_name_constrained_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_249_845;
        let mut ca = Ca::init(dir.path(), "test", now).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(ca
            .issue_lan(&key, "3712345678", &["10.0.0.9".into()], now, now + DAY)
            .map(|_| ())
            .unwrap_err()
            .contains("no LAN issuing CA"));
        assert!(ca.ensure_lan("Tsunagi.Internal.", now).unwrap());
        assert!(
            !ca.ensure_lan("tsunagi.internal", now).unwrap(),
            "made once"
        );
        assert!(ca
            .ensure_lan("other.internal", now)
            .unwrap_err()
            .contains("constrained to tsunagi.internal"));
        // Loaded again from its files, with its domain read from its constraints.
        let mut ca = Ca::load(dir.path()).unwrap();
        assert!(!ca.ensure_lan("tsunagi.internal", now).unwrap());
        // The hub's and the broker's names are the network's services' and no LAN certificate's.
        ca.issue_server(&["hub.region.example".into(), "10.0.0.5".into()], now, 30)
            .unwrap();
        ca.issue_server(
            &["mqtt.region.example".into(), "192.168.0.5".into()],
            now,
            30,
        )
        .unwrap();
        for (names, why) in [
            (vec!["10.0.0.5".to_string()], "network's own services"),
            (vec!["192.168.0.5".to_string()], "network's own services"),
            (
                vec!["box.3712345679.tsunagi.internal".to_string()],
                "outside this facility",
            ),
            (
                vec!["hub.region.example".to_string()],
                "outside this facility",
            ),
            (vec!["127.0.0.1".to_string()], "not an address"),
            (vec!["localhost".to_string()], "outside this facility"),
            (vec![], "1 to 8"),
        ] {
            let e = ca
                .issue_lan(&key, "3712345678", &names, now, now + DAY)
                .map(|_| ())
                .unwrap_err();
            assert!(e.contains(why), "{names:?}: {e}");
        }
        let good = ca
            .issue_lan(
                &key,
                "3712345678",
                &[
                    "box-1.3712345678.tsunagi.internal".into(),
                    "192.168.1.20".into(),
                ],
                now,
                now + DAY,
            )
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&good.der).unwrap();
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            cn.contains(' '),
            "a CN that is no host name, which OpenSSL would hold to the DNS constraint: {cn}"
        );
        let lan_pem = ca.lan_pem().unwrap().to_string();
        assert!(
            good.chain_pem.ends_with(&lan_pem),
            "the chain goes up through the LAN CA"
        );
        assert_ne!(lan_pem, ca.issuing_pem());
        assert_eq!(
            browser_accepts(
                &ca,
                &good.der,
                &lan_pem,
                "box-1.3712345678.tsunagi.internal",
                now
            ),
            Ok(())
        );
        assert_eq!(
            browser_accepts(&ca, &good.der, &lan_pem, "192.168.1.20", now),
            Ok(())
        );
        // Even a certificate the LAN CA signed past the checks cannot name anything else to a
        // browser: its name constraints hold.
        let lan = ca.lan.as_ref().unwrap();
        for name in [
            "www.example.com",
            "hub.region.example",
            "127.0.0.1",
            "8.8.8.8",
        ] {
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.not_before = t(now - 60);
            p.not_after = t(now + DAY);
            let forged = p.signed_by(&key, &lan.issuer).unwrap();
            let e = browser_accepts(&ca, forged.der(), &lan_pem, name, now).unwrap_err();
            assert!(
                e.contains("NameConstraint") || e.contains("name constraint"),
                "{name}: {e}"
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(LAN_KEY))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_issuing_ca_is_replaced_under_the_same_root_and_the_old_one_kept_until_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_249_845;
        let ca = Ca::init(dir.path(), "test", now).unwrap();
        let old = ca.issuing_serial().to_string();
        // Without the root key nothing changes.
        std::fs::rename(dir.path().join(ROOT_KEY), dir.path().join("offline.key")).unwrap();
        assert!(Ca::rotate_issuing(dir.path(), now)
            .unwrap_err()
            .contains("put root.key back"));
        assert_eq!(Ca::load(dir.path()).unwrap().issuing_serial(), old);
        std::fs::rename(dir.path().join("offline.key"), dir.path().join(ROOT_KEY)).unwrap();
        let (was, new) = Ca::rotate_issuing(dir.path(), now).unwrap();
        assert_eq!(was, old);
        let ca2 = Ca::load(dir.path()).unwrap();
        assert_eq!(ca2.issuing_serial(), new);
        assert_eq!(
            ca2.fingerprint(),
            ca.fingerprint(),
            "the same root: appliances keep their pin"
        );
        let cas = ca2.issuing_cas();
        assert_eq!(
            (cas[0].current, cas[1].current, cas[1].serial.as_str()),
            (true, false, old.as_str())
        );
        assert_eq!(ca2.issuing_pems().matches("BEGIN CERTIFICATE").count(), 2);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca2
            .issue_client(
                &key,
                "3712345678",
                "box-1",
                Purpose::Appliance,
                now,
                now + DAY,
            )
            .unwrap();
        assert_eq!(issued.issuer, new);
        assert!(
            crate::cert::issued_by(issued.chain_pem.as_bytes(), &cas[0].der)
                && !crate::cert::issued_by(issued.chain_pem.as_bytes(), &cas[1].der)
        );
        let crl = std::fs::read_to_string(ca2.write_crl(&[], 2, now).unwrap()).unwrap();
        assert_eq!(
            crl.matches("BEGIN X509 CRL").count(),
            2,
            "one CRL from each issuing CA honoured"
        );
        // A key that does not belong to its certificate (a restore from two backups) is refused.
        let saved = std::fs::read(dir.path().join(ISSUING_KEY)).unwrap();
        std::fs::copy(
            dir.path().join(PREVIOUS).join(format!("{old}.key")),
            dir.path().join(ISSUING_KEY),
        )
        .unwrap();
        assert!(Ca::load(dir.path())
            .err()
            .unwrap()
            .contains("does not hold the key"));
        std::fs::write(dir.path().join(ISSUING_KEY), saved).unwrap();
        // A switch interrupted after the key was renamed in (the certificate still staged) is
        // completed at the next load.
        let (_, third) = {
            let before = Ca::load(dir.path()).unwrap().issuing_serial().to_string();
            let (b, n) = Ca::rotate_issuing(dir.path(), now).unwrap();
            assert_eq!(b, before);
            (b, n)
        };
        let ca4 = Ca::load(dir.path()).unwrap();
        assert_eq!(ca4.issuing_serial(), third);
        assert_eq!(ca4.issuing_cas().len(), 3);
        std::fs::copy(dir.path().join(ISSUING_CRT), dir.path().join(NEXT_CRT)).unwrap();
        let cas = ca4.issuing_cas();
        std::fs::write(dir.path().join(ISSUING_CRT), &cas[1].pem).unwrap(); // as if the old one were still in place
        let ca5 = Ca::load(dir.path()).unwrap();
        assert_eq!(
            ca5.issuing_serial(),
            third,
            "the staged certificate switched in"
        );
        assert!(!dir.path().join(NEXT_CRT).exists());
        Ca::withdraw_issuing(dir.path(), &new).unwrap();
        assert!(Ca::withdraw_issuing(dir.path(), "00ff")
            .unwrap_err()
            .contains("no previous issuing CA"));
        Ca::withdraw_issuing(dir.path(), &old.to_uppercase()).unwrap();
        let ca3 = Ca::load(dir.path()).unwrap();
        assert_eq!(ca3.issuing_cas().len(), 1);
        // A withdrawal interrupted after the key was deleted reads as withdrawn.
        let prev = dir.path().join(PREVIOUS);
        std::fs::copy(
            prev.join(format!("{old}.crt.withdrawn")),
            prev.join(format!("{old}.crt")),
        )
        .unwrap();
        assert_eq!(Ca::load(dir.path()).unwrap().issuing_cas().len(), 1);
        assert!(
            !dir.path()
                .join(PREVIOUS)
                .join(format!("{old}.key"))
                .exists(),
            "its key is gone"
        );
        assert_eq!(
            std::fs::read_to_string(ca3.write_crl(&[], 3, now).unwrap())
                .unwrap()
                .matches("BEGIN X509 CRL")
                .count(),
            1
        );
    }
}
