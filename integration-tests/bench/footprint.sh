#!/bin/sh
# Issue 17 benchmark: PSS of haloy's host stack (haloyd + containerd + shims + haloy-logd log
# drivers) beside Docker's (dockerd + containerd + shims) for the same 3 apps x 3 replicas,
# both on private containerds started here, plus the log driver alone (haloy-logd vs haloyd
# re-executed). Prints every component, totals and ratios (targets: log path <= 1 MiB per
# replica, haloyd <= 20 MiB, haloy/docker <= 0.5). The daemons measured are release builds
# (what ships); the driver program itself is a dev build, it only starts and reads /proc.
# Run as root. Needs: containerd, runc, containernetworking-plugins, docker-registry,
# busybox-static, docker.io (integration-tests/setup-debian.sh installs them).
#   integration-tests/bench/footprint.sh
set -eu
cd "$(dirname "$0")/../.."
cargo build --release --bin haloyd --bin haloy --bin haloy-logd
cargo build --example footprint
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
HALOY_BIN_DIR="$TARGET_DIR/release" exec "$TARGET_DIR/debug/examples/footprint" "$@"
