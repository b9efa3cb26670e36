//! A 256-bit SQLCipher key, and the keys derived from one for other files.

use ring::hkdf;
use zeroize::{Zeroize, Zeroizing};

/// A raw 256-bit SQLCipher key (no passphrase derivation runs at open). `Debug` shows nothing of
/// it, nothing here formats it except into the pragma that hands it to SQLCipher, and its bytes
/// and every text made of them are overwritten when dropped (SQLCipher keeps its own copy, in
/// memory it wipes on close).
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The HKDF salt of every derived key. It names the hub because the hub derived its keys first;
/// it stays, so every copy and registry the hub ever wrote still opens.
const SALT: &[u8] = b"tsunagi-hub-v1";

impl Key {
    pub fn from_bytes(b: [u8; 32]) -> Key {
        Key(b)
    }

    /// The key for another file, derived with HKDF-SHA256 under `label` (`copy:<facility>`,
    /// `registry`, `offline.db`, ...), so that no two files share a key and a file stolen with
    /// its key opens only that file.
    pub fn derive(&self, label: &str) -> Key {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&self.0);
        let info = [label.as_bytes()];
        let mut out = [0u8; 32];
        prk.expand(&info, Len)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Key(out)
    }

    /// The appliance's derivation for `offline.db`: HMAC-SHA256 of the label. Kept, not migrated:
    /// re-keying the file would leave a box that rolls back to its previous release unable to
    /// open it. New files use [`Key::derive`].
    pub fn derive_hmac(&self, label: &str) -> Key {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&k, label.as_bytes()).as_ref());
        Key(out)
    }

    /// The key as SQLCipher reads a raw key from a string: `x'…'` (for `ATTACH … KEY ?`), wiped
    /// when dropped.
    pub fn raw_literal(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(67));
        s.push_str("x'");
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s.push('\'');
        s
    }

    /// The statement that keys a connection: `PRAGMA key = "x'…'";`, wiped when dropped.
    pub fn pragma(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(83));
        s.push_str("PRAGMA key = \"");
        s.push_str(&self.raw_literal());
        s.push_str("\";");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derivations are the ones files were written with: changing either would make every
    /// existing copy, registry or offline.db unreadable, so the test pins their first bytes.
    #[test]
    fn derived_keys_are_stable_distinct_and_hidden() {
        let k = Key::from_bytes([7; 32]);
        assert_eq!(k.derive("copy:3712345678").0, k.derive("copy:3712345678").0);
        assert_ne!(k.derive("copy:3712345678").0, k.derive("copy:3712345679").0);
        assert_ne!(
            Key::from_bytes([8; 32]).derive("registry").0,
            k.derive("registry").0
        );
        assert_ne!(k.derive("offline.db").0, k.derive_hmac("offline.db").0);
        let expect_hkdf = {
            let prk = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SALT),
                &[7; 32],
            );
            let t1 = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, prk.as_ref()),
                b"registry\x01",
            );
            t1.as_ref().to_vec()
        };
        assert_eq!(
            k.derive("registry").0.to_vec(),
            expect_hkdf,
            "HKDF-SHA256 (RFC 5869), one block"
        );
        assert_eq!(format!("{:?}", k.derive("registry")), "Key(..)");
        assert_eq!(
            *Key::from_bytes([0xAB; 32]).raw_literal(),
            format!("x'{}'", "ab".repeat(32))
        );
        assert_eq!(
            *Key::from_bytes([0xAB; 32]).pragma(),
            format!("PRAGMA key = \"x'{}'\";", "ab".repeat(32))
        );
        // Dropping wipes: the bytes a key held read as zeros afterwards.
        let mut slot = std::mem::MaybeUninit::new(Key::from_bytes([0x5A; 32]));
        // SAFETY: `slot` holds an initialised key, dropped once here and then only read as bytes.
        unsafe {
            std::ptr::drop_in_place(slot.as_mut_ptr());
            assert_eq!(*slot.as_ptr().cast::<[u8; 32]>(), [0; 32]);
        }
    }
}
