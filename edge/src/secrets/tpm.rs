//! The TLS client key inside the TPM2: an ECDSA P-256 key created by the TPM under the owner
//! hierarchy's storage root, never exported. What is kept on disk is the TPM-wrapped blob, which
//! only this TPM can load (clearing the TPM, at disposal, makes it useless).
//!
//! The ESAPI context is not `Send`, so one thread owns it and signs on request; rustls and
//! rcgen reach it through a channel. Each signature is a few milliseconds on swtpm.

use std::sync::mpsc;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tss_esapi::abstraction::transient::{KeyMaterial, KeyParams, TransientKeyContextBuilder};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Digest, EccScheme, HashScheme, Signature};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::utils::PublicKey;

/// What is written to disk: where the TPM is, and the wrapped key.
#[derive(Serialize, Deserialize, Clone)]
pub struct Stored {
    pub tcti: String,
    pub material: KeyMaterial,
}

fn params() -> KeyParams {
    KeyParams::Ecc {
        curve: EccCurve::NistP256,
        scheme: EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
    }
}

type Reply = mpsc::Sender<Result<Vec<u8>, String>>;
/// The key thread's queue: data to sign or unseal, and where to answer.
type Requests = mpsc::Sender<(Vec<u8>, Reply)>;

/// A key in the TPM, usable from any thread.
pub struct TpmKey {
    stored: Stored,
    /// The public point, uncompressed SEC1 (`04 || X || Y`).
    point: Vec<u8>,
    requests: Mutex<Requests>,
}

impl std::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmKey")
            .field("tcti", &self.stored.tcti)
            .finish()
    }
}

fn tcti(conf: &str) -> Result<TctiNameConf, String> {
    conf.parse::<TctiNameConf>().map_err(|e| {
        format!(
            "TPM address {conf:?} is not a TCTI (device:/dev/tpmrm0, swtpm:host=...,port=...): {e}"
        )
    })
}

/// A TPM reached without the kernel's resource manager (swtpm, a simulator, `/dev/tpm0`) keeps
/// whatever a process left loaded when it exits, and runs out of session slots after a few
/// processes. Such a TPM serves one client at a time, so what is loaded now is left over: flush
/// it. Through `/dev/tpmrm0` each client sees only its own handles and the kernel flushes them.
fn flush_leftovers(conf: &str) -> Result<(), String> {
    if conf.contains("/dev/tpmrm") {
        return Ok(());
    }
    use tss_esapi::constants::tss::{TPM2_LOADED_SESSION_FIRST, TPM2_TRANSIENT_FIRST};
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::structures::CapabilityData;
    let mut ctx = tss_esapi::Context::new(tcti(conf)?)
        .map_err(|e| format!("cannot open the TPM at {conf}: {e}"))?;
    for first in [TPM2_LOADED_SESSION_FIRST, TPM2_TRANSIENT_FIRST] {
        let Ok((CapabilityData::Handles(list), _)) =
            ctx.get_capability(CapabilityType::Handles, first, 64)
        else {
            continue;
        };
        for h in list.into_inner() {
            if let Ok(obj) = ctx.tr_from_tpm_public(h) {
                let _ = ctx.flush_context(obj);
            }
        }
    }
    Ok(())
}

/// Starts the thread that owns the ESAPI context; with `create`, makes a new key first.
fn start(conf: &str, material: Option<KeyMaterial>) -> Result<(KeyMaterial, Requests), String> {
    let t = tcti(conf)?;
    flush_leftovers(conf)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<KeyMaterial, String>>();
    let (tx, rx) = mpsc::channel::<(Vec<u8>, Reply)>();
    let conf_owned = conf.to_string();
    std::thread::Builder::new()
        .name("tpm".into())
        .spawn(move || {
            let ctx = TransientKeyContextBuilder::new().with_tcti(t).build();
            let mut ctx = match ctx {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot open the TPM at {conf_owned}: {e}")));
                    return;
                }
            };
            let material = match material {
                Some(m) => m,
                None => match ctx.create_key(params(), 0) {
                    Ok((m, _)) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("the TPM could not create a key: {e}")));
                        return;
                    }
                },
            };
            let _ = ready_tx.send(Ok(material.clone()));
            for (msg, reply) in rx {
                let digest = ring::digest::digest(&ring::digest::SHA256, &msg);
                let out = Digest::try_from(digest.as_ref().to_vec())
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        ctx.sign(material.clone(), params(), None, d)
                            .map_err(|e| format!("the TPM refused to sign: {e}"))
                    })
                    .and_then(|s| match s {
                        Signature::EcDsa(s) => {
                            Ok(ecdsa_der(s.signature_r().value(), s.signature_s().value()))
                        }
                        _ => Err("the TPM answered with a signature that is not ECDSA".to_string()),
                    });
                let _ = reply.send(out);
            }
        })
        .map_err(|e| format!("cannot start the TPM thread: {e}"))?;
    let material = ready_rx
        .recv()
        .map_err(|_| "the TPM thread stopped".to_string())??;
    Ok((material, tx))
}

impl TpmKey {
    /// Creates a new key in the TPM at `conf` (a TCTI string).
    pub fn create(conf: &str) -> Result<TpmKey, String> {
        let (material, tx) = start(conf, None)?;
        TpmKey::from_parts(
            Stored {
                tcti: conf.to_string(),
                material,
            },
            tx,
        )
    }

    /// Loads a stored key: it signs only in the TPM that made it.
    pub fn load(stored: Stored) -> Result<TpmKey, String> {
        let (material, tx) = start(&stored.tcti, Some(stored.material.clone()))?;
        let key = TpmKey::from_parts(
            Stored {
                tcti: stored.tcti,
                material,
            },
            tx,
        )?;
        // Prove now that this TPM holds the key, rather than at the first handshake.
        key.sign(b"tsunagi: key check").map_err(|e| format!("the stored TPM key does not load in this TPM (was the TPM cleared, or is this another box?): {e}"))?;
        Ok(key)
    }

    fn from_parts(stored: Stored, tx: Requests) -> Result<TpmKey, String> {
        let point = match stored.material.public() {
            PublicKey::Ecc { x, y } => {
                let pad = |v: &[u8]| {
                    let mut b = vec![0u8; 32usize.saturating_sub(v.len())];
                    b.extend_from_slice(v);
                    b
                };
                [vec![4u8], pad(x), pad(y)].concat()
            }
            _ => return Err("the stored TPM key is not an ECC key".into()),
        };
        Ok(TpmKey {
            stored,
            point,
            requests: Mutex::new(tx),
        })
    }

    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The public key, as the SEC1 point rcgen puts into a CSR.
    pub fn point(&self) -> &[u8] {
        &self.point
    }

    /// Signs `msg` (hashed with SHA-256) in the TPM; the signature is DER (ECDSA-Sig-Value).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((msg.to_vec(), tx))
            .map_err(|_| "the TPM thread stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the TPM thread stopped".to_string())?
    }
}

/// `SEQUENCE { INTEGER r, INTEGER s }` from big-endian r and s.
fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.is_empty() || v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(
            super::ecdsa_der(&[0, 0, 1], &[0x80]),
            vec![0x30, 7, 0x02, 1, 1, 0x02, 2, 0, 0x80]
        );
        let r = [0xffu8; 32];
        let d = super::ecdsa_der(&r, &r);
        assert_eq!((d[1], d[3], d[4]), (70, 33, 0));
    }
}
