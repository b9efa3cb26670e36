//! Finding and running the workspace's real binaries from tests and benchmarks.

use std::path::PathBuf;

/// The folder holding the binaries of the profile the tests were built with.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe folder").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, which must have been built (`cargo build --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is not built: run `cargo build --workspace --all-targets` first", p.display());
    p
}

/// The read-only shared folder beside the project (fixtures, reference).
pub fn shared_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("workspace").parent().expect("beside the workspace").join("shared")
}
