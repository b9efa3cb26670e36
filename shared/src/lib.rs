//! Types, schema text and pure helpers shared by the edge and the hub: no I/O, no async.
#![forbid(unsafe_code)]

pub mod chain;
pub mod schema;
pub mod time;
