//! The tsunagi hub: the network's CA and enrolment, the appliances' ingest API, one encrypted
//! failover copy per facility with its snapshots, and the portal with its regional patient index,
//! consent, accounts and audit log, served to people only through their facility's appliance (or
//! the operators' own listener). The fleet view comes later.

#![forbid(unsafe_code)]

pub mod account;
pub mod admin;
pub mod api;
pub mod audit;
pub mod broker;
pub mod cli;
pub mod consent;
pub mod copy;
pub mod db;
pub mod fleet;
pub mod index;
pub mod key;
pub mod offline;
pub mod portal;
pub mod record;
pub mod region;
pub mod registry;
pub mod snapshot;
pub mod state;
pub mod tls;

/// The clock (`shared::time::now`), for the modules that take it from the crate root.
pub use shared::time::now;
