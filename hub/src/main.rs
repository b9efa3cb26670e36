//! `tsunagi-hub`: the regional centre's one binary (not built yet; see `hub`'s crate docs).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eprintln!("tsunagi-hub {}: the hub is not built yet; it arrives with the sync issue", env!("CARGO_PKG_VERSION"));
    std::process::ExitCode::from(2)
}
