//! The network's certificate authority and the pieces of enrolment both sides share: issuing and
//! reading certificates, one-time tokens, the CRL, and owner-only secret files.
//!
//! Certificates name a facility by a SAN URI `urn:tsunagi:facility:<10 digits>` and the appliance
//! by `urn:tsunagi:appliance:<id>`; the subject CN is the facility code, so that Mosquitto's
//! `use_identity_as_username` yields the facility for its ACL.

#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod secret;
pub mod token;

pub use ca::Ca;
pub use cert::{fingerprint, parse_fingerprint, Identity, Purpose};
