#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests and the real-runtime integration
# tests (private containerd, registry, CNI, Pebble). Must run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash integration-tests/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Test binaries share one machine: run them with two threads each to keep CI well inside its budget.
cargo test --all-targets --locked -- --test-threads=2
