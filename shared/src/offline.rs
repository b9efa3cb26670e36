//! The JSON an appliance and the hub exchange so the facility can work while the hub is down:
//! the password verifiers the hub hands over (`GET /v1/verifiers`) and the accesses the
//! appliance served offline (`POST /v1/offline-accesses`).

use serde::{Deserialize, Serialize};

/// One person who may log in at the appliance while the hub is down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verifier {
    pub login: String,
    pub name: String,
    /// The role's code (`doctor`, `nurse`, …).
    pub role: String,
    /// The argon2id verifier (`view::password`).
    pub verifier: String,
    /// When the password expires (Unix seconds).
    pub expires_at: i64,
}

/// An access the appliance served from its own store while the hub was down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    /// The appliance's own sequence number for it, so a batch sent twice is taken once.
    pub seq: i64,
    /// Unix milliseconds, on the appliance's clock.
    pub at: i64,
    pub login: String,
    /// The terminal the appliance saw.
    pub terminal: String,
    /// `offline-login`, `offline-search`, `offline-view` or `offline-logout`.
    pub action: String,
    /// The facility's own patient ID, when the access concerned one patient.
    pub patient_id: String,
    pub outcome: String,
}

/// The actions an appliance may report.
pub const ACTIONS: &[&str] = &[
    "offline-login",
    "offline-search",
    "offline-view",
    "offline-logout",
];
