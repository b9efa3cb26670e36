//! The tsunagi edge appliance: SS-MIX2 ingest into an encrypted store, every change captured into
//! a hash-chained outbox, enrolment with the network CA, and sync and restore over mutual TLS.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod export;
pub mod identity;
pub mod ingest;
pub mod outbox;
pub mod restore;
pub mod status;
pub mod store;
pub mod sync;
