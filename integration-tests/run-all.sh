#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests and the real-runtime integration
# tests (private containerd, registry, CNI, Pebble). Must run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash integration-tests/setup-debian.sh
cargo fmt --all -- --check
# Also compiles the examples and benchmarks (and the demo's fixture tool), so they cannot rot.
cargo clippy --all-targets --features fixture-tool --locked -- -D warnings
# Test binaries share one 2-core machine: two test threads each keep CI well inside its budget.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --lib --bins --tests --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?
# Failures again at the end, where a truncated CI log still shows them: each failed test's
# name and the first lines of its panic.
if [ "$status" -ne 0 ]; then
    echo "=== failures ==="
    grep -E -A12 "^---- .* stdout ----$" "$log" | grep -v -E "^ +([0-9]+: | at )" | head -120 || true
fi
# One closing line over all test binaries.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
