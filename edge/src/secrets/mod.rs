//! Where the appliance's secrets come from. A secret setting (such as `key_file`) names either a
//! file, readable by its owner only, or a systemd credential as `credential:NAME`: on the image the
//! store key is sealed to the box's TPM2 with `systemd-creds` and handed over by
//! `LoadCredentialEncrypted=NAME:...`, which systemd decrypts into a private, RAM-only folder
//! (`$CREDENTIALS_DIRECTORY`) for the service's life. Code that reads a secret calls
//! [`resolve`] and does not care which of the two it is.

use std::path::{Path, PathBuf};

pub mod tpm;

/// The prefix that names a systemd credential instead of a file.
pub const CREDENTIAL: &str = "credential:";

/// The file that holds the secret `setting` names, looking credentials up in `credentials_dir`
/// (the service's `$CREDENTIALS_DIRECTORY`).
pub fn resolve_in(setting: &Path, credentials_dir: Option<&Path>) -> Result<PathBuf, String> {
    let Some(name) = setting.to_str().and_then(|s| s.strip_prefix(CREDENTIAL)) else {
        return Ok(setting.to_owned());
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "{setting:?} does not name a credential: write credential:NAME, NAME without slashes"
        ));
    }
    match credentials_dir {
        Some(dir) => {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(format!("the systemd credential {name:?} was not passed to this service ({} has no {name}): add LoadCredentialEncrypted={name}:FILE to its unit", dir.display()))
            }
        }
        None => Err(format!(
            "the secret is the systemd credential {name:?}, but this process was not started by systemd with credentials ($CREDENTIALS_DIRECTORY is unset): \
             run it as the service does (systemd-run -p LoadCredentialEncrypted={name}:FILE ...), or point the setting at a key file"
        )),
    }
}

/// [`resolve_in`] with this process's `$CREDENTIALS_DIRECTORY`.
pub fn resolve(setting: &Path) -> Result<PathBuf, String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    resolve_in(setting, dir.as_deref())
}

/// The bytes of the secret `setting` names, and the file they came from. A file must be its
/// owner's only; a credential is read as systemd hands it over (0440, in a RAM-only folder only
/// this service sees).
pub fn read(setting: &Path) -> Result<(PathBuf, Vec<u8>), (PathBuf, String)> {
    let path = resolve(setting).map_err(|reason| (setting.to_owned(), reason))?;
    let bytes = if path.as_path() == setting {
        provisioning::secret::check_and_read(&path)
    } else {
        std::fs::read(&path).map_err(|e| e.to_string())
    };
    bytes
        .map(|b| (path.clone(), b))
        .map_err(|reason| (path, reason))
}

/// A software key (the PEM may also hold the certificate chain) as rustls signs with it.
pub fn file_signing_key(pem: &[u8]) -> Result<Arc<dyn SigningKey>, String> {
    let der = provisioning::cert::key_from_pem(pem)?;
    rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("the identity key is not usable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_pass_through_and_credentials_resolve_or_say_what_is_missing() {
        assert_eq!(
            resolve_in(Path::new("/var/lib/tsunagi/store.key"), None).unwrap(),
            PathBuf::from("/var/lib/tsunagi/store.key")
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("store-key"), "x").unwrap();
        assert_eq!(
            resolve_in(Path::new("credential:store-key"), Some(dir.path())).unwrap(),
            dir.path().join("store-key")
        );
        let e = resolve_in(Path::new("credential:other"), Some(dir.path())).unwrap_err();
        assert!(e.contains("LoadCredentialEncrypted=other:"), "{e}");
        let e = resolve_in(Path::new("credential:store-key"), None).unwrap_err();
        assert!(e.contains("CREDENTIALS_DIRECTORY is unset"), "{e}");
        assert!(resolve_in(Path::new("credential:../etc/shadow"), Some(dir.path())).is_err());
    }
}

use std::sync::{Arc, Mutex};

use rustls::pki_types::{alg_id, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// Where the appliance's TLS client key is made and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStore {
    /// A PKCS#8 key in the owner-only identity file (boxes without a TPM, development).
    File,
    /// A key inside the TPM2 at this TCTI address (`device:/dev/tpmrm0` on the appliance).
    Tpm(String),
}

/// The kernel's TPM resource manager: where the image's TPM is.
pub const TPM_DEVICE: &str = "/dev/tpmrm0";

impl KeyStore {
    /// `file`, `tpm` or `auto` (the TPM when the box has one, else the file); `tcti` says where
    /// the TPM is (default the kernel's resource manager).
    pub fn parse(kind: &str, tcti: Option<&str>) -> Result<KeyStore, String> {
        let tcti = tcti
            .map(str::to_string)
            .unwrap_or_else(|| format!("device:{TPM_DEVICE}"));
        match kind {
            "file" => Ok(KeyStore::File),
            "tpm" => Ok(KeyStore::Tpm(tcti)),
            "auto"
                if tcti.starts_with("device:")
                    && !Path::new(tcti.trim_start_matches("device:")).exists() =>
            {
                Ok(KeyStore::File)
            }
            "auto" => Ok(KeyStore::Tpm(tcti)),
            o => Err(format!(
                "identity.key_store: {o:?} is not one of file, tpm, auto"
            )),
        }
    }
}

/// The TLS client key, in a file or in the TPM: what the rest of the edge uses, either way.
#[derive(Clone)]
pub enum ClientKey {
    File { pem: String },
    Tpm(Arc<tpm::TpmKey>),
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::File { .. } => f.write_str("ClientKey::File(..)"),
            ClientKey::Tpm(k) => write!(f, "ClientKey::Tpm({k:?})"),
        }
    }
}

/// Keys already loaded into a TPM thread, by their stored form: loading one again would start
/// another thread and session for the same key.
static LOADED: Mutex<Vec<(String, Arc<tpm::TpmKey>)>> = Mutex::new(Vec::new());

impl ClientKey {
    /// A new key in `store`.
    pub fn generate(store: &KeyStore) -> Result<ClientKey, String> {
        match store {
            KeyStore::File => {
                let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| e.to_string())?;
                Ok(ClientKey::File {
                    pem: k.serialize_pem(),
                })
            }
            KeyStore::Tpm(tcti) => Ok(ClientKey::Tpm(Arc::new(tpm::TpmKey::create(tcti)?))),
        }
    }

    /// The key a stored TPM key names, loaded once per process.
    pub fn from_tpm(stored_json: &str) -> Result<ClientKey, String> {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = loaded.iter().find(|(s, _)| s == stored_json) {
            return Ok(ClientKey::Tpm(k.clone()));
        }
        let stored: tpm::Stored = serde_json::from_str(stored_json)
            .map_err(|e| format!("the stored TPM key does not parse: {e}"))?;
        let k = Arc::new(tpm::TpmKey::load(stored)?);
        loaded.push((stored_json.to_string(), k.clone()));
        Ok(ClientKey::Tpm(k))
    }

    /// What to keep on disk for a TPM key (the wrapped blob and the TCTI); `None` for a file key.
    pub fn tpm_stored_json(&self) -> Option<String> {
        match self {
            ClientKey::Tpm(k) => serde_json::to_string(k.stored()).ok(),
            ClientKey::File { .. } => None,
        }
    }

    /// The PEM of a file key (written into the owner-only identity file); `None` for a TPM key.
    pub fn file_pem(&self) -> Option<&str> {
        match self {
            ClientKey::File { pem } => Some(pem),
            ClientKey::Tpm(_) => None,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            ClientKey::File { .. } => "file",
            ClientKey::Tpm(_) => "tpm",
        }
    }

    /// A certificate signing request for `appliance`, signed with this key.
    pub fn csr(&self, appliance: &str) -> Result<String, String> {
        match self {
            ClientKey::File { pem } => provisioning::ca::csr_for(
                appliance,
                &rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?,
            ),
            ClientKey::Tpm(k) => provisioning::ca::csr_for(appliance, &TpmCsr(k)),
        }
    }

    /// The key as rustls signs with it.
    pub fn signing_key(&self) -> Result<Arc<dyn SigningKey>, String> {
        match self {
            ClientKey::File { pem } => file_signing_key(pem.as_bytes()),
            ClientKey::Tpm(k) => Ok(Arc::new(TpmSigningKey(k.clone()))),
        }
    }
}

struct TpmCsr<'a>(&'a tpm::TpmKey);

impl rcgen::PublicKeyData for TpmCsr<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.point()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TpmCsr<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|e| {
            tracing::error!(error = %e, "the TPM could not sign the certificate request");
            rcgen::Error::RemoteKeyError
        })
    }
}

#[derive(Debug)]
struct TpmSigningKey(Arc<tpm::TpmKey>);

impl SigningKey for TpmSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TpmSigner(self.0.clone())) as Box<dyn Signer>)
    }
    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(rustls::sign::public_key_to_spki(
            &alg_id::ECDSA_P256,
            self.0.point(),
        ))
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TpmSigner(Arc<tpm::TpmKey>);

impl Signer for TpmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message).map_err(rustls::Error::General)
    }
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
