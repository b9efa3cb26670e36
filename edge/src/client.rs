//! The appliance's HTTPS client to the hub: TLS 1.2/1.3 with rustls and ring, the network root
//! pinned by its SHA-256 fingerprint, and the facility's client certificate once enrolled, over
//! the one pooled client (`serve::client`). An answer read whole is bounded in size and time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How long connecting and the TLS handshake may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an answer read whole ([`Client::call`]) may take, and how large it may be: the hub's
/// JSON answers (enrolment, renewal, the restore plan) are kilobytes.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const CALL_MAX: usize = 16 << 20;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies the hub against the one root whose SHA-256 fingerprint the appliance was given: the
/// hub presents its chain with the root, the root is picked out by fingerprint, and the chain
/// must verify to it. Nothing else is trusted.
#[derive(Debug)]
struct PinnedRoot {
    fingerprint: String,
}

impl PinnedRoot {
    fn inner(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| provisioning::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the hub does not present the network root with the pinned fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(root.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for PinnedRoot {
    /// The chain must verify to the pinned root, and the certificate must be one of the network's
    /// own services: an appliance's LAN certificate chains to the same root, and must never pass
    /// for the hub or the broker, whatever names it carries.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner(intermediates)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )?;
        if !provisioning::cert::is_network_service(end_entity) {
            return Err(rustls::Error::General("the server's certificate is not the network's hub or broker (an appliance's LAN certificate?); refusing it".into()));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS configuration that trusts only the pinned root, optionally presenting a client identity
/// (PEM: the certificate chain and the private key).
/// The appliance's certificate chain and the key that signs for it (a file key or the TPM's).
pub struct ClientAuth {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: Arc<dyn rustls::sign::SigningKey>,
}

impl ClientAuth {
    /// From one PEM text holding a certificate chain and its private key.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<ClientAuth> {
        let chain = provisioning::cert::certs_from_pem(pem).map_err(anyhow::Error::msg)?;
        let key = crate::secrets::file_signing_key(pem).map_err(anyhow::Error::msg)?;
        Ok(ClientAuth { chain, key })
    }
}

#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

pub fn tls_config(
    fingerprint: &str,
    auth: Option<ClientAuth>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedRoot {
            fingerprint: fingerprint.to_string(),
        }));
    let mut cfg = match auth {
        None => builder.with_no_client_auth(),
        Some(ClientAuth { chain, key }) => {
            let certified = rustls::sign::CertifiedKey::new(chain, key);
            certified
                .keys_match()
                .context("the identity's key does not match its certificate")?;
            builder.with_client_cert_resolver(Arc::new(Presents(Arc::new(certified))))
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The hub's error message, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<shared::api::ErrorBody>(&self.body)
            .ok()
            .map(|e| e.message)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(300)
                    .collect()
            })
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("the hub answered {} with an unexpected body", self.status))
    }
}

/// The appliance's client to the hub (`serve::client`: pooled, one origin, a deadline on
/// connecting).
#[derive(Clone)]
pub struct Client {
    inner: serve::client::Client<Full<Bytes>>,
}

impl Client {
    /// `url` is `https://host[:port]`; anything but https is refused.
    pub fn new(url: &str, tls: Arc<ClientConfig>) -> anyhow::Result<Client> {
        let inner = serve::client::Client::https(
            url,
            tls,
            serve::client::Options {
                connect: CONNECT_TIMEOUT,
                ..serve::client::Options::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("hub URL: {e}"))?;
        Ok(Client { inner })
    }

    /// Sends a request and returns the status and the streaming body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))?;
        self.inner.send(req).await.map_err(|e| match e {
            serve::client::Error::Connect(m) => {
                anyhow::anyhow!("cannot reach the hub at {}: {m}", self.inner.authority())
            }
            serve::client::Error::Failed(m) => {
                anyhow::anyhow!("the hub closed the connection: {m}")
            }
        })
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let resp = self.send(method, path, content_type, body).await?;
        let status = resp.status();
        let body = tokio::time::timeout(
            CALL_TIMEOUT,
            http_body_util::Limited::new(resp.into_body(), CALL_MAX).collect(),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub's answer did not arrive whole within {} s",
                CALL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("reading the hub's answer (at most {CALL_MAX} bytes): {e}"))?
        .to_bytes();
        Ok(Reply { status, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, "text/plain", Bytes::new())
            .await
    }

    pub async fn post_json(
        &self,
        path: &str,
        value: &impl serde::Serialize,
    ) -> anyhow::Result<Reply> {
        self.call(
            Method::POST,
            path,
            "application/json",
            Bytes::from(serde_json::to_vec(value)?),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lan_certificate_never_passes_for_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let now = shared::time::now();
        let mut ca = provisioning::Ca::init(dir.path(), "test", now).unwrap();
        ca.ensure_lan("tsunagi.internal", now).unwrap();
        let v = PinnedRoot {
            fingerprint: ca.fingerprint(),
        };
        let chain = |pem: &str| provisioning::cert::certs_from_pem(pem.as_bytes()).unwrap();
        let (hub, _) = ca.issue_server(&["localhost".into()], now, 30).unwrap();
        let hub = chain(&hub);
        let name = ServerName::try_from("localhost").unwrap();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(now as u64));
        assert!(
            v.verify_server_cert(&hub[0], &hub[1..], &name, &[], at)
                .is_ok(),
            "the hub's own certificate"
        );
        // An appliance's LAN certificate, under the same root, presented by a box that answers at
        // the address an appliance was told the hub is at.
        let (_, csr) = provisioning::ca::new_key_and_csr("box-1").unwrap();
        let key = provisioning::ca::parse_csr(&csr).unwrap();
        let lan = ca
            .issue_lan(
                &key,
                "3712345678",
                &["10.0.0.9".into()],
                now - 60,
                now + 86_400,
            )
            .unwrap();
        let mut lan_chain = chain(&lan.chain_pem);
        lan_chain.push(CertificateDer::from(ca.root_der().to_vec()));
        let name = ServerName::try_from("10.0.0.9").unwrap();
        let e = v
            .verify_server_cert(&lan_chain[0], &lan_chain[1..], &name, &[], at)
            .unwrap_err();
        assert!(
            e.to_string().contains("not the network's hub or broker"),
            "{e}"
        );
    }

    #[test]
    fn urls() {
        let tls = tls_config(&"00".repeat(32), None).unwrap();
        let c = Client::new("https://127.0.0.1:8443", tls.clone()).unwrap();
        assert_eq!(c.inner.authority(), "127.0.0.1:8443");
        assert_eq!(
            Client::new("https://hub.example/", tls.clone())
                .unwrap()
                .inner
                .authority(),
            "hub.example:443"
        );
        assert!(Client::new("http://hub", tls).is_err());
    }
}
