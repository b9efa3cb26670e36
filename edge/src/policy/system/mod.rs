//! The appliance's own checks (field notes, section 3): Wi-Fi, an encrypted data partition, an
//! nftables input policy of drop, time synchronised, security updates recent, no unexpected
//! listening sockets, and its certificate far from expiry.
//!
//! Each check is a parser of a command's text output (tested on captured outputs) and a thin
//! function that runs the command through [`Probe`].

mod disk;
mod network;
mod upkeep;
mod wireless;

pub use disk::disk_encryption;
pub use network::{firewall, listening};
pub use upkeep::{certificate, time_sync, updates};
pub use wireless::wifi;

/// A captured command output from `tests/fixtures/system`, for the checks' tests.
#[cfg(test)]
fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/system")
            .join(name),
    )
    .unwrap()
}
