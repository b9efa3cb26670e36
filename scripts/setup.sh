#!/usr/bin/env bash
# Installs what tsunagi needs on a fresh Debian 12 machine that has only the Rust toolchain:
# Debian packages (libclang for rusqlite's session bindings, Mosquitto for the fleet, the TPM2
# libraries and swtpm, mmdebstrap for the image's tools tree) and `just` (from PyPI, as a prebuilt
# binary, since Debian 12 does not package it). Safe to run again.
set -euo pipefail

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
dpkg -s clang >/dev/null 2>&1 || need_apt+=(clang)
command -v hyperfine >/dev/null 2>&1 || need_apt+=(hyperfine)
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need_apt+=(fonts-noto-cjk)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# The fleet's MQTT broker (configured by `tsunagi-hub broker setup`) and its command-line client.
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# What the Linux screen-lock reporter uses (and the tests run it with): gsettings, GNOME's
# schemas, curl.
command -v gsettings >/dev/null 2>&1 || need_apt+=(libglib2.0-bin)
dpkg -s gsettings-desktop-schemas >/dev/null 2>&1 || need_apt+=(gsettings-desktop-schemas)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The TPM2: the edge links the TSS libraries for its TPM-resident TLS key; swtpm is the TPM the
# tests (and the image's boot test) use.
dpkg -s libtss2-dev >/dev/null 2>&1 || need_apt+=(libtss2-dev)
command -v swtpm >/dev/null 2>&1 || need_apt+=(swtpm swtpm-tools)
# The appliance image: mmdebstrap makes the Debian trixie tools tree (mkosi 25, systemd 257) that
# the image checks and `just image` run in; iproute2 and nftables for the firewall's namespace test.
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v just >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore rust-just
  hash -r
  if ! command -v just >/dev/null 2>&1; then
    # pip put it where this shell does not look (a pyenv without rehash, ~/.local/bin): link it.
    scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    for cand in "$scripts_dir/just" "$HOME/.local/bin/just"; do
      if [ -x "$cand" ]; then
        if [ -w /usr/local/bin ]; then ln -sf "$cand" /usr/local/bin/just; else export PATH="$(dirname "$cand"):$PATH"; fi
        break
      fi
    done
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
    hash -r
  fi
fi
just --version >/dev/null
# The suite gates formatting and lints: rustfmt and clippy come with rustup's default profile.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy || { echo "setup: install rustfmt and clippy (rustup component add rustfmt clippy)" >&2; exit 1; }
fi

# cargo deny gates the suite's dependencies (deny.toml); built once from crates.io (about 5 minutes).
if ! command -v cargo-deny >/dev/null 2>&1 || [ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
  cargo install --locked --quiet cargo-deny@0.20.2
fi
# Every dependency's source for every platform, from the lock file: cargo deny reads the whole
# graph offline (a build fetches only this platform's crates).
cargo fetch --locked --quiet --manifest-path "$(dirname "$0")/../Cargo.toml"
# The image's tools tree (Debian trixie: mkosi 25, systemd 257, qemu, OVMF, swtpm), once.
if [ "$(id -u)" -eq 0 ]; then
  "$(dirname "$0")/../image/tools/tools-tree.sh"
else
  echo "setup: run ./scripts/setup.sh as root once to make the image's tools tree (image/tools/tools-tree.sh)"
fi
echo "setup: Debian packages, just, cargo-deny and the image tools tree are in place"
