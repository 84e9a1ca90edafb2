#!/bin/sh
# Benchmark: cached pull + create + start of 10 replicas through haloy's runtime module vs
# `ctr run -d` (same log driver) + the same CNI attach, in one run. Prints the ratio.
# Needs root and the Debian packages containerd, runc, containernetworking-plugins,
# docker-registry, busybox-static, iproute2. Usage: integration-tests/bench/runtime-start.sh [--release]
set -eu
cd "$(dirname "$0")/../.."
profile=debug
if [ "${1:-}" = "--release" ]; then profile=release; fi
flag=""; [ "$profile" = release ] && flag=--release
cargo build $flag --bin haloyd --example bench-runtime-start
HALOYD_BIN="target/$profile/haloyd" "target/$profile/examples/bench-runtime-start"
