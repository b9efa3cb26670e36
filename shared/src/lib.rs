//! What both sides of tsunagi agree on: the clinical schema, the segment hash chain, the wire
//! formats between edge and hub (binary segments, and the offline JSON), and calendar helpers. No
//! I/O, no async, no database.

#![forbid(unsafe_code)]

pub mod api;
pub mod backoff;
pub mod chain;
pub mod changeset;
pub mod fleet;
pub mod offline;
pub mod route;
pub mod schema;
pub mod time;
pub mod wire;
