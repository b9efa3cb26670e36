//! The certificate revocation list: one CRL signed by each issuing CA honoured, all in one file.

use std::path::PathBuf;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use super::{err, t, Ca, CRL, CRL_VALIDITY};
use crate::secret;

impl Ca {
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
}
