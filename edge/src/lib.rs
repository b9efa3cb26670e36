//! The tsunagi edge appliance: SS-MIX2 ingest into an encrypted store, every change captured into
//! a hash-chained outbox, enrolment with the network CA, sync and restore over mutual TLS, and
//! the LAN proxy to the hub's portal with its offline view, posture checks, and MQTT telemetry.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod export;
pub mod firstboot;
pub mod identity;
pub mod ingest;
pub mod local;
pub mod notify;
pub mod outbox;
pub mod policy;
pub mod posture;
pub mod proxy;
pub mod restore;
pub mod secrets;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
