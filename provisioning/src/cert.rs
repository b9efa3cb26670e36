//! Reading certificates: who a certificate names (facility, appliance), its serial and validity,
//! and the SHA-256 fingerprint by which an appliance pins the network's root.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const FACILITY_URI: &str = "urn:tsunagi:facility:";
pub const APPLIANCE_URI: &str = "urn:tsunagi:appliance:";

/// The MQTT user name (and, the broker forcing it, client ID) of an appliance: its certificate's
/// CN, `<facility>/<appliance>`, which is also the prefix of its own topics.
pub fn mqtt_user(facility: &str, appliance: &str) -> String {
    format!("{facility}/{appliance}")
}

/// What a facility's client certificate may be used for, written into its extended key usage
/// beside `clientAuth`, so that one certificate can never do the other's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The appliance's own work: the `/v1/*` API (sync, restore, renewal, verifiers).
    Appliance,
    /// The LAN proxy's upstream connection: the portal's pages and nothing else.
    PortalProxy,
}

/// `2.25.<UUID>` object identifiers (ITU-T X.667), so no registration is needed.
const APPLIANCE_OID: u128 = 313_092_626_364_910_986_265_498_514_392_554_589_827;
const PORTAL_PROXY_OID: u128 = 101_465_809_960_671_454_213_438_212_923_547_036_730;
/// The network's own services (the hub and the broker), on their server certificates.
const NETWORK_SERVICE_OID: u128 = 323_122_173_961_115_257_189_606_181_232_185_178_660;
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2, DER body.
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1, DER body.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// DER content of an extended-key-usage extension listing `oids` (DER bodies).
fn eku(oids: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for oid in oids {
        body.push(0x06);
        body.extend(der_len(oid.len()));
        body.extend(oid);
    }
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

/// The extended key usage of the hub's and the broker's server certificates: `serverAuth` and
/// the network-service OID, which an appliance's LAN certificate never carries. Appliances take
/// a server as the hub or the broker only with it (`is_network_service`).
pub fn network_service_eku_der() -> Vec<u8> {
    eku(&[SERVER_AUTH.to_vec(), uuid_oid(NETWORK_SERVICE_OID)])
}

/// Whether a server certificate (DER) is one of the network's own services, not an appliance's
/// LAN certificate (which chains to the same root).
pub fn is_network_service(der: &[u8]) -> bool {
    let want = uuid_oid(NETWORK_SERVICE_OID);
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.extended_key_usage().ok().flatten().map(|e| {
                e.value.server_auth
                    && e.value
                        .other
                        .iter()
                        .any(|o| o.as_bytes() == want.as_slice())
            })
        })
        .unwrap_or(false)
}

/// The DER body (without tag and length) of the OID `2.25.<n>`.
fn uuid_oid(n: u128) -> Vec<u8> {
    let mut groups = vec![(n & 0x7f) as u8];
    let mut rest = n >> 7;
    while rest > 0 {
        groups.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    groups.reverse();
    let mut out = vec![2 * 40 + 25];
    out.extend(groups);
    out
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

impl Purpose {
    fn oid(self) -> Vec<u8> {
        uuid_oid(match self {
            Purpose::Appliance => APPLIANCE_OID,
            Purpose::PortalProxy => PORTAL_PROXY_OID,
        })
    }

    /// The DER content of the extended-key-usage extension (2.5.29.37) for this purpose:
    /// `clientAuth` and the purpose's own OID.
    pub fn eku_der(self) -> Vec<u8> {
        eku(&[CLIENT_AUTH.to_vec(), self.oid()])
    }

    /// The purpose a certificate's extended key usage names. A facility certificate that names
    /// neither purpose was issued before proxy certificates existed, for the appliance's own work.
    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Purpose {
        let proxy = Purpose::PortalProxy.oid();
        match cert.extended_key_usage() {
            Ok(Some(eku))
                if eku
                    .value
                    .other
                    .iter()
                    .any(|o| o.as_bytes() == proxy.as_slice()) =>
            {
                Purpose::PortalProxy
            }
            _ => Purpose::Appliance,
        }
    }
}

/// What a tsunagi client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub facility: String,
    pub appliance: String,
    /// Lower-case hexadecimal, as `tsunagi-hub cert list` shows it.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// What the certificate may be used for.
    pub purpose: Purpose,
    /// The issuer's distinguished name (DER), which picks the CRL that answers for it.
    pub issuer: Vec<u8>,
}

impl Identity {
    /// Reads the identity from a certificate's DER bytes. The signature is not checked here: call
    /// this only on a certificate the TLS layer has already verified, or on one's own.
    pub fn from_der(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut facility = None;
        let mut appliance = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    if let Some(f) = uri.strip_prefix(FACILITY_URI) {
                        facility = Some(f.to_string());
                    } else if let Some(a) = uri.strip_prefix(APPLIANCE_URI) {
                        appliance = Some(a.to_string());
                    }
                }
            }
        }
        let facility =
            facility.ok_or("the certificate names no facility (no urn:tsunagi:facility: SAN)")?;
        crate::token::check_facility(&facility)?;
        Ok(Identity {
            facility,
            appliance: appliance.unwrap_or_default(),
            serial: shared::chain::hex(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            purpose: Purpose::of(&cert),
            issuer: cert.issuer().as_raw().to_vec(),
        })
    }

    /// When renewal should start: two thirds into the lifetime.
    pub fn renew_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// SHA-256 of a certificate's DER bytes, lower-case hexadecimal.
pub fn fingerprint(der: &[u8]) -> String {
    shared::chain::hex(&shared::chain::content_hash(der))
}

/// Accepts a fingerprint as people copy it: any case, with or without colons or spaces.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let clean: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '\n'))
        .collect::<String>()
        .to_ascii_lowercase();
    match shared::chain::unhex(&clean) {
        Some(b) if b.len() == 32 => Ok(clean),
        _ => Err(format!(
            "{s:?} is not a SHA-256 fingerprint (64 hexadecimal digits, colons allowed)"
        )),
    }
}

/// The DNS names and IP addresses a certificate's SAN carries, in order.
pub fn san_names(der: &[u8]) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether the first certificate in `pem` names the CA certificate `ca_der` as its issuer.
pub fn issued_by(pem: &[u8], ca_der: &[u8]) -> bool {
    let (Ok(certs), Ok((_, ca))) = (
        certs_from_pem(pem),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        return false;
    };
    certs
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
        .is_some_and(|(_, c)| c.issuer().as_raw() == ca.subject().as_raw())
}

/// Every certificate in a PEM text, in order.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM text".into());
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key in the PEM text: {e}"))
}

/// PEM text of one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_forgiving_about_format() {
        let f = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&f).unwrap(), "ab".repeat(32));
        assert!(parse_fingerprint("abcd").is_err());
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..200u8).collect();
        let text = pem("CERTIFICATE", &der);
        assert_eq!(
            certs_from_pem(text.as_bytes()).unwrap()[0].as_ref(),
            &der[..]
        );
    }
}

/// Whether `name` is a DNS host name: letters, digits and hyphens in dot-separated labels, no
/// wildcard, at most 253 characters.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a host name (letters, digits and hyphens, separated by dots; no wildcards)"));
    }
    Ok(())
}

/// Whether an appliance of `facility` may carry `name` on its LAN server certificate: a private,
/// link-local or loopback address, or a host name under `<facility>.<domain>`, its own part of
/// the network's LAN domain (so no facility's appliance can take another's names). The
/// facility's browsers trust the network root, so a public name here would let an appliance pose
/// as any site; the LAN issuing CA's name constraints say the same to every browser.
pub fn check_lan_name(name: &str, facility: &str, domain: &str) -> Result<(), String> {
    use std::net::IpAddr;
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ok = match ip {
            IpAddr::V4(v) => {
                (v.is_private() || v.is_loopback() || v.is_link_local())
                    && v.octets() != [127, 0, 0, 1]
            }
            IpAddr::V6(v) => {
                (v.segments()[0] & 0xfe00) == 0xfc00 || (v.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        return if ok {
            Ok(())
        } else {
            Err(format!("{name} is not an address a LAN certificate may name: use the appliance's private (10/8, 172.16/12, 192.168/16), link-local or loopback address other than 127.0.0.1 and ::1"))
        };
    }
    check_host_name(name)?;
    let n = name.to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let own = format!("{facility}.{domain}");
    if n.ends_with(&format!(".{own}")) {
        Ok(())
    } else {
        Err(format!("{name} is outside this facility's LAN names: use a name under .{own} (for example box-1.{own}) or the appliance's private address"))
    }
}

#[cfg(test)]
mod lan_tests {
    use super::check_lan_name;

    #[test]
    fn lan_names_stay_inside_the_facilitys_part_of_the_network() {
        let (f, d) = ("3710000001", "tsunagi.internal");
        for ok in [
            "box-1.3710000001.tsunagi.internal",
            "BOX.3710000001.Tsunagi.Internal",
            "192.168.1.10",
            "10.0.0.2",
            "172.16.4.4",
            "169.254.1.1",
            "127.0.0.2",
            "fd00::5",
            "fe80::1",
        ] {
            assert!(check_lan_name(ok, f, d).is_ok(), "{ok}");
        }
        for bad in [
            "box-1.3710000002.tsunagi.internal",
            "3710000001.tsunagi.internal",
            "box.tsunagi.internal",
            "localhost",
            "127.0.0.1",
            "::1",
            "www.example.com",
            "box.3710000001.tsunagi.internal.evil.com",
            "*.3710000001.tsunagi.internal",
            "8.8.8.8",
            "2001:db8::1",
            "a..3710000001.tsunagi.internal",
            "evil-3710000001.tsunagi.internal",
            "",
        ] {
            assert!(check_lan_name(bad, f, d).is_err(), "{bad}");
        }
        assert!(
            check_lan_name("other.example", f, d)
                .unwrap_err()
                .contains("box-1.3710000001.tsunagi.internal"),
            "the refusal says what to use"
        );
    }
}
