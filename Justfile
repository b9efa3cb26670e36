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
    cargo fmt --all --check
    cargo fmt --manifest-path fuzz/Cargo.toml --check
    cargo deny --offline check bans licenses sources
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    cargo clippy --quiet --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check -- -D warnings
    cargo build --workspace --all-targets
    cargo test --workspace --no-fail-fast

# Benchmarks; writes BENCHMARKS.md with the figures and how they were taken. With a SECTION
# (ingest, sync, portal, proxy, fleet) runs only that one and prints it, to measure a change
# without the whole bench.
bench SECTION="":
    cargo build --workspace --release
    if [ -z "{{SECTION}}" ]; then ./target/release/tsunagi-bench --out BENCHMARKS.md; else ./target/release/tsunagi-bench {{SECTION}}; fi

# The appliance OS image (mkosi in the trixie tools tree): writes it to
# /var/tmp/tsunagi-image/out/<version>/. Set TSUNAGI_REGION to the region's hub (see docs/image.md).
image:
    ./image/tools/build.sh

# Builds three image versions and boots them under qemu with OVMF (Secure Boot) and swtpm: first
# boot and enrolment, a tampered kernel refused, an A/B update, a broken update rolled back.
image-test:
    ./image/tools/image-test.sh

# Every fuzz target for 30 seconds each (SECONDS to change it), from the seeds in fuzz/corpus/;
# a crash fails it and lands in fuzz/artifacts/. See docs/security.md for the long runs.
fuzz SECONDS="30":
    ./scripts/fuzz.sh {{SECONDS}}

# Licences, banned crates (one TLS crypto provider: ring) and sources of every dependency; the
# advisory database cannot be fetched here (docs/security.md says what was checked by hand).
deny:
    cargo deny --offline check bans licenses sources

# Formatting and lints, as `just test` gates them (a local exception is
# `#[expect(lint, reason = "…")]`).
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
