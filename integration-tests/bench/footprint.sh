#!/bin/sh
# Issue 17 benchmark: PSS of haloy's host stack (haloyd + containerd + shims + haloy-logd log
# drivers) beside Docker's (dockerd + containerd + shims) for the same 3 apps x 3 replicas,
# both on private containerds started here, plus the log driver alone (haloy-logd vs haloyd
# re-executed). Prints every component, totals and ratios (targets: log path <= 1 MiB per
# replica, haloyd <= 20 MiB, haloy/docker <= 0.5), each split into anonymous and file-backed
# PSS. The daemons measured are built in PROFILE (default dist: what the Debian package ships);
# the driver program itself is a dev build, it only starts and reads /proc.
# Run as root. Needs: containerd, runc, containernetworking-plugins, docker-registry,
# busybox-static (integration-tests/setup-debian.sh installs them) and docker.io, installed
# here when missing, never started as a system service (the test machine's iptables stay
# Docker-free: dockerd's FORWARD DROP policy would cut the tests' bridged traffic).
#   integration-tests/bench/footprint.sh
#   FOOTPRINT_SHIM=host integration-tests/bench/footprint.sh   # haloyd's containerd.shim
#   FOOTPRINT_SETTLE_SECS=5 ...   # idle time before each reading (default 270: two Go GCs)
#   FOOTPRINT_HALOY_ONLY=1 ...    # haloy's stack alone: A/B of haloy builds (HALOY_BIN_DIR=...)
#   PROFILE=release ...           # measure the README's quick build instead
set -eu
cd "$(dirname "$0")/../.."
if ! command -v dockerd >/dev/null 2>&1; then
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io
    # An init system may still have started it through socket activation.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
    fi
fi
PROFILE=${PROFILE:-dist}
cargo build --profile "$PROFILE" --bin haloyd --bin haloy --bin haloy-logd
cargo build --example footprint
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# cargo names the dev profile's directory `debug`.
PROFILE_DIR=$PROFILE
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
# HALOY_BIN_DIR set by the caller measures another build of haloyd, haloy and haloy-logd.
HALOY_BIN_DIR=${HALOY_BIN_DIR:-$TARGET_DIR/$PROFILE_DIR} "$TARGET_DIR/debug/examples/footprint" "$@"
