//! What the portal shows, shared by the hub's portal and the appliance's offline view: the
//! record queries of the patient page (`record`), the password verifiers (`password`) and the
//! stylesheet. Both sides read the same clinical schema, so both show the same rows.

#![forbid(unsafe_code)]

pub mod fmt;
pub mod names;
pub mod password;
pub mod record;

/// The portal's one stylesheet.
pub const PORTAL_CSS: &str = include_str!("../portal.css");
