//! The LAN server certificate: `identity::LAN`, read again whenever a renewal replaces it, and
//! the LAN listener's TLS configuration.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Serves the LAN certificate from `identity::LAN`, reading it again whenever the file changes.
#[derive(Debug)]
pub struct LanCert {
    path: PathBuf,
    cache: Mutex<Option<(SystemTime, Arc<CertifiedKey>)>>,
}

impl LanCert {
    pub fn new(path: PathBuf) -> LanCert {
        LanCert {
            path,
            cache: Mutex::new(None),
        }
    }

    fn load(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(|| format!("{} is missing", self.path.display()))?;
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, k)) = c.as_ref() {
            if *s == stamp {
                return Ok(k.clone());
            }
        }
        let pem = provisioning::secret::read(&self.path).map_err(anyhow::Error::msg)?;
        let chain = provisioning::cert::certs_from_pem(&pem).map_err(anyhow::Error::msg)?;
        let key = provisioning::cert::key_from_pem(&pem).map_err(anyhow::Error::msg)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).context("the LAN key")?;
        let ck = Arc::new(CertifiedKey::new(chain, signer));
        *c = Some((stamp, ck.clone()));
        Ok(ck)
    }
}

impl ResolvesServerCert for LanCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.load() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "no LAN certificate to serve");
                None
            }
        }
    }
}

/// TLS 1.2 and 1.3 only, with ring's suites (all AEAD with forward secrecy), HTTP/1.1.
pub fn lan_tls(cert: Arc<LanCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    cert.load()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
