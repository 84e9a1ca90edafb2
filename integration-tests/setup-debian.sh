#!/usr/bin/env bash
# Installs everything haloy needs to build, run and test on a fresh Debian 12 machine (as root).
# Idempotent: safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    containerd runc containernetworking-plugins iproute2 iptables nftables \
    docker-registry pebble busybox-static tini protobuf-compiler apache2-utils systemd \
    wrk nginx-light haproxy prometheus curl ca-certificates gcc pkg-config dpkg-dev bc time \
    umoci buildah skopeo dnsmasq-base linux-perf
# Debian starts some daemons on install where an init system exists; haloy's tests run their
# own private instances, so the packaged services must not hold ports 80/443/5000/9090.
for svc in nginx haproxy docker-registry containerd prometheus; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
# Builds the Debian package (packaging/build-deb.sh, integration-tests/package.rs).
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
