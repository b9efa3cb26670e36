//! Every SQLCipher database of the appliance and of the hub is opened here, with one key type,
//! one set of pragmas, one forward-only migration rule, and is then owned by one thread
//! ([`Worker`]) that the rest of the program sends work to, from async code or from blocking
//! code. No connection is ever behind a lock that async code could hold across a disk write.

mod key;
mod open;
mod worker;

pub use key::Key;
pub use open::{migrate, open, open_read_only, Error, Result};
pub use worker::{Queue, Worker};
