//! The tsunagi edge appliance: SS-MIX2 ingest into an encrypted store, with every change captured
//! into a hash-chained outbox for the hub.
#![forbid(unsafe_code)]

pub mod cli;
pub mod export;
pub mod ingest;
pub mod outbox;
pub mod status;
pub mod store;
