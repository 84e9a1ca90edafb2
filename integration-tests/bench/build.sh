#!/usr/bin/env bash
# Clean-build time and stripped binary sizes of the README's path and of the Debian package's
# path, measured in the same run:
#   release: `cargo build --release --bins --features fixture-tool`, exactly what
#            examples/local-demo/run.sh (the README's main command) builds;
#   dist:    `cargo build --profile dist --bins`, what packaging/build-deb.sh builds for the
#            Debian package (thin LTO, see Cargo.toml); release links the fixture tool too.
#
# Each profile's own output directory is removed first (crates already downloaded stay, as
# after `cargo fetch` in a clean clone). Prints wall clock and CPU (user + system of cargo and
# every rustc it ran): on a machine shared with other builds the wall time is inflated, CPU
# time much less; CPU / cores is the floor for an idle machine. Prints dist/release ratios.
# Follow with `integration-tests/bench/proxy.sh` with HALOYD=target/release/haloyd
# HALOYD_B=target/dist/haloyd to see what dist's LTO buys per request.
#
# Env: PROFILES (default "release dist"); CARGO_TARGET_DIR to build in a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILES=${PROFILES:-release dist}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo fetch --locked >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

build_args() { # build_args PROFILE: the cargo build arguments of that profile's path
    case $1 in
        release) echo "--release --bins --features fixture-tool" ;;
        *) echo "--profile $1 --bins" ;;
    esac
}

declare -A WALL CPU
for profile in $PROFILES; do
    rm -rf "${TARGET_DIR:?}/$profile"
    start=$(date +%s.%N)
    # GNU time's %U/%S cover cargo and every rustc it ran.
    # shellcheck disable=SC2046 # the arguments are words on purpose
    /usr/bin/time -f '%U %S' -o "$WORK/time" cargo build --locked $(build_args "$profile") >&2
    end=$(date +%s.%N)
    WALL[$profile]=$(echo "$end - $start" | bc)
    read -r user sys <"$WORK/time"
    CPU[$profile]=$(echo "$user + $sys" | bc)
    printf 'profile %-8s clean build (cargo build %s): %6.0f s wall, %6.0f s CPU = %.0f s on %d idle cores\n' \
        "$profile" "$(build_args "$profile")" "${WALL[$profile]}" "${CPU[$profile]}" \
        "$(echo "${CPU[$profile]} / $(nproc)" | bc -l)" "$(nproc)"
    for bin in haloy haloyd haloy-logd; do
        strip -o "$WORK/$bin" "$TARGET_DIR/$profile/$bin"
        printf 'profile %-8s %-10s stripped: %5.1f MiB\n' "$profile" "$bin" \
            "$(echo "$(stat -c %s "$WORK/$bin") / 1048576" | bc -l)"
    done
done
if [ -n "${WALL[release]:-}" ] && [ -n "${WALL[dist]:-}" ]; then
    printf 'dist/release: wall %.2fx, CPU %.2fx\n' \
        "$(echo "${WALL[dist]} / ${WALL[release]}" | bc -l)" \
        "$(echo "${CPU[dist]} / ${CPU[release]}" | bc -l)"
fi
