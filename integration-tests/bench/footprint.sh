#!/bin/sh
# Issue 17 benchmark: PSS of haloy's host stack (haloyd + containerd + shims + haloy-logd log
# drivers) beside Docker's (dockerd + containerd + shims) for the same 3 apps x 3 replicas,
# both on private containerds started here, plus the log driver alone (haloy-logd vs haloyd
# re-executed). Prints every component, totals and ratios (targets: log path <= 1 MiB per
# replica, haloyd <= 20 MiB, haloy/docker <= 0.5). Release build: the footprint that ships.
# Run as root. Needs: containerd, runc, containernetworking-plugins, docker-registry,
# busybox-static, docker.io (integration-tests/setup-debian.sh installs them).
#   integration-tests/bench/footprint.sh
set -eu
cd "$(dirname "$0")/../.."
cargo build --release --bin haloyd --bin haloy --bin haloy-logd --example footprint
exec cargo run -q --release --example footprint -- "$@"
