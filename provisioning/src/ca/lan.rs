//! The LAN issuing CA, which signs only the appliances' LAN server certificates and is
//! name-constrained to the network's LAN domain and private addresses.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData,
};

use super::{
    dn, err, random_serial, t, Ca, Issued, IssuingCa, DAY, LAN_CRT, LAN_KEY, ROOT_CRT, ROOT_KEY,
};
use crate::secret;

/// The LAN issuing CA, and the DNS domain its name constraints permit.
pub(super) struct Lan {
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

impl Ca {
    /// The LAN issuing CA's serial, once `ensure_lan` has run.
    pub fn lan_serial(&self) -> Option<String> {
        let l = self.lan.as_ref()?;
        IssuingCa::read(&l.pem, true).ok().map(|c| c.serial)
    }

    pub(super) fn load_lan(dir: &Path) -> Result<Lan, String> {
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

    /// The LAN issuing CA's certificate (PEM), once `ensure_lan` has run.
    pub fn lan_pem(&self) -> Option<&str> {
        self.lan.as_ref().map(|l| l.pem.as_str())
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
