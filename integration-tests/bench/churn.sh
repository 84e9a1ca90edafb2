#!/bin/sh
# Issue 17 leak check: N deploy/stop cycles (default 1000) of a one-replica app against a
# private containerd + haloyd; prints haloyd's PSS, fds and threads, containerd tasks,
# containers, snapshots and leases, netns mounts, veths and IPAM files before and after, and
# exits 1 when any grew beyond its stated bound (see integration-tests/bench/churn.rs).
# Not a timing check. Run as root.
#   integration-tests/bench/churn.sh [--release] [CYCLES]
set -eu
cd "$(dirname "$0")/../.."
profile=""
if [ "${1:-}" = "--release" ]; then profile="--release"; shift; fi
cargo build $profile --bin haloyd --bin haloy --bin haloy-logd --example churn
exec cargo run -q $profile --example churn -- "$@"
