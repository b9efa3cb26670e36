//! Replacing the issuing CA under the same root (`rotate_issuing`, completed by the next load
//! if a crash interrupts it) and withdrawing a replaced one (`withdraw_issuing`).

use std::path::Path;

use rcgen::{Issuer, KeyPair};

use super::{
    err, new_issuing_with, random_serial, Ca, ISSUING_CRT, ISSUING_KEY, NEXT_CRT, NEXT_KEY,
    PREVIOUS, ROOT_CRT, ROOT_KEY,
};
use crate::secret;

impl Ca {
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
    pub(super) fn finish_rotation(dir: &Path) -> Result<(), String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::DAY;
    use crate::cert::Purpose;

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
