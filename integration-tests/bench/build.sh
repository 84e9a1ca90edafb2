#!/usr/bin/env bash
# Clean-build time and stripped binary sizes of the `release` profile (the README's path) and
# the `dist` profile (the Debian package, fat LTO), measured in the same run.
#
# Each profile's own output directory is removed first (crates already downloaded stay), then
# `cargo build --profile P --bins --examples` is timed: wall clock, and CPU (user + system) which
# says more on a busy machine. Prints dist/release ratios. Follow with
# `PROFILE=release integration-tests/bench/proxy.sh` and `PROFILE=dist …` (no rebuild needed)
# to see whether dist's fat LTO pays in CPU per request.
#
# Env: PROFILES (default "release dist").
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILES=${PROFILES:-release dist}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo fetch --locked >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

declare -A WALL CPU
for profile in $PROFILES; do
    rm -rf "${TARGET_DIR:?}/$profile"
    start=$(date +%s.%N)
    # GNU time's %U/%S cover cargo and every rustc it ran.
    /usr/bin/time -f '%U %S' -o "$WORK/time" cargo build --profile "$profile" --locked --bins --examples >&2
    end=$(date +%s.%N)
    WALL[$profile]=$(echo "$end - $start" | bc)
    read -r user sys <"$WORK/time"
    CPU[$profile]=$(echo "$user + $sys" | bc)
    printf 'profile %-8s clean build: %6.0f s wall, %6.0f s CPU (%d cores)\n' \
        "$profile" "${WALL[$profile]}" "${CPU[$profile]}" "$(nproc)"
    for bin in haloy haloyd; do
        strip -o "$WORK/$bin" "$TARGET_DIR/$profile/$bin"
        printf 'profile %-8s %-7s stripped: %5.1f MiB\n' "$profile" "$bin" \
            "$(echo "$(stat -c %s "$WORK/$bin") / 1048576" | bc -l)"
    done
done
if [ -n "${WALL[release]:-}" ] && [ -n "${WALL[dist]:-}" ]; then
    printf 'dist/release: wall %.2fx, CPU %.2fx\n' \
        "$(echo "${WALL[dist]} / ${WALL[release]}" | bc -l)" \
        "$(echo "${CPU[dist]} / ${CPU[release]}" | bc -l)"
fi
