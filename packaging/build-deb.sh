#!/usr/bin/env bash
# Builds target/debian/haloy_<version>_<arch>.deb: the binaries in the given cargo profile
# (default `dist`, fat LTO, the production build; the README's demo packages its quick `release`
# build; see Cargo.toml), then the generated
# man pages, completions and default server config (`haloyd dist-assets`), then cargo-deb.
# Usage: packaging/build-deb.sh [PROFILE [CARGO-DEB ARGS…]]   Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-dist}
command -v cargo-deb >/dev/null || {
    echo "error: cargo-deb missing: run integration-tests/setup-debian.sh (cargo install cargo-deb --locked)" >&2
    exit 1
}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# cargo names the dev profile's directory `debug`.
PROFILE_DIR=$PROFILE
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
# NO_BUILD=1: package the binaries already there (the package test uses what `cargo test` built).
[ "${NO_BUILD:-}" = 1 ] || cargo build --locked --profile "$PROFILE" --bins >&2
# cargo-deb reads the assets from target/release/ (see Cargo.toml) and maps that to the
# profile's directory.
ASSETS="$TARGET_DIR/$PROFILE_DIR/package-assets"
rm -rf "$ASSETS"
"$TARGET_DIR/$PROFILE_DIR/haloyd" dist-assets --out "$ASSETS" >&2
cargo deb --no-build --locked --strip --profile "$PROFILE" "${@:2}" | tail -n 1
