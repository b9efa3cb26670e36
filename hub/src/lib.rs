//! The tsunagi hub: the network's CA and enrolment, the appliances' ingest API, and one encrypted
//! failover copy per facility with its snapshots. The portal, index, consent and fleet come later.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod copy;
pub mod db;
pub mod key;
pub mod registry;
pub mod snapshot;
pub mod tls;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
