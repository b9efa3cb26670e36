# The commands a person types. `./scripts/setup.sh` installs `just` itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Install everything, build, and run the main job (the default).
default: demo

# Debian packages and tools.
setup:
    ./scripts/setup.sh

# Build every crate and binary.
build:
    cargo build --workspace --all-targets

# The main job on its embedded defaults: generate a synthetic clinic, ingest it into an encrypted
# store, print what was stored, and write it back out byte for byte.
demo: build
    ./scripts/demo.sh

# The whole test suite, as CI runs it.
test:
    cargo build --workspace --all-targets
    cargo test --workspace --no-fail-fast

# Benchmarks; writes BENCHMARKS.md with the figures and how they were taken.
bench:
    cargo build --workspace --release
    ./target/release/tsunagi-bench --out BENCHMARKS.md

# Lints that CI does not gate on (yet).
lint:
    cargo clippy --workspace --all-targets --release
