//! The network's certificate authority and the pieces of enrolment both sides share: issuing and
//! reading certificates, one-time tokens, the CRL, and owner-only secret files.
//!
//! Certificates name a facility by a SAN URI `urn:tsunagi:facility:<10 digits>` and the appliance
//! by `urn:tsunagi:appliance:<id>`; an appliance certificate's subject CN is
//! `<facility>/<appliance>`, so that Mosquitto's `use_identity_as_username` and
//! `use_username_as_clientid` bind its MQTT identity and topics to that one appliance.

#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod secret;
pub mod token;

pub use ca::Ca;
pub use cert::{fingerprint, parse_fingerprint, Identity, Purpose};
