#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) each, on a stable toolchain (RUSTC_BOOTSTRAP=1
# lets cargo fuzz use the sanitizer flags), starting from the committed seeds in fuzz/corpus/.
# What a run discovers goes to fuzz/target/corpus/<target>/ (not committed); a crash lands in
# fuzz/artifacts/<target>/ and fails the run. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(hl7 ssmix2_path wire changeset portal_path)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t"
    echo "== $t: ${seconds}s"
    cargo fuzz run -O "$t" "target/corpus/$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
        | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|cov:.*DONE|SUMMARY|panicked|ERROR" || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "crash in $t: see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
