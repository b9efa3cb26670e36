//! What the issuing CA signs: the appliances' client certificates (from a certificate signing
//! request) and the network services' client and server certificates; and an appliance's CSRs.

use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};

use super::{dn, err, random_serial, t, Ca, DAY, SERVICE_NAMES};
use crate::cert::{Purpose, APPLIANCE_URI, FACILITY_URI};
use crate::secret;

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
}
