#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: install, build, start containerd, a local
# registry and haloyd, deploy examples/local-demo/haloy.yaml (3 replicas) and show it serving
# round-robin through haloyd's proxy on port 80. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEMO=/var/lib/haloy-demo
mkdir -p "$DEMO" /etc/haloy

bash integration-tests/setup-debian.sh
# The fixture image tool is a bin behind a feature: examples would build every dev-dependency.
cargo build --locked --release --bins --features fixture-tool
# Installed as on a server: the Debian package of these binaries (/usr/bin, systemd units,
# /etc/haloy/haloyd.yaml, man pages, completions). Its postinst writes the API token and,
# where systemd runs, starts haloyd. Older versions of this script copied the binaries to
# /usr/local/bin, which comes first in PATH: those copies go.
DEB=$(NO_BUILD=1 bash packaging/build-deb.sh release --fast)
rm -f /usr/local/bin/haloy /usr/local/bin/haloyd /usr/local/bin/haloy-logd
# --reinstall: a rebuild keeps the version number; confold: keep a haloyd.yaml already there.
apt-get install -y --reinstall -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$DEB"

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "error: $what did not come up" >&2; exit 1
}

# containerd: the system service where systemd runs it, else a background process.
if ! [ -S /run/containerd/containerd.sock ]; then
    if command -v systemctl >/dev/null 2>&1 && systemctl start containerd 2>/dev/null; then :
    else nohup containerd >"$DEMO/containerd.log" 2>&1 & echo $! >"$DEMO/containerd.pid"; fi
fi
wait_for containerd test -S /run/containerd/containerd.sock

# A private registry on loopback holding the demo images (built from busybox, no Docker).
if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
    cat >"$DEMO/registry.yml" <<EOC
version: 0.1
storage: { filesystem: { rootdirectory: $DEMO/registry } }
http: { addr: 127.0.0.1:5000 }
EOC
    nohup docker-registry serve "$DEMO/registry.yml" >"$DEMO/registry.log" 2>&1 &
    echo $! >"$DEMO/registry.pid"
fi
wait_for "the registry on 127.0.0.1:5000" curl -fsS http://127.0.0.1:5000/v2/
target/release/haloy-fixture-images --registry 127.0.0.1:5000

# haloyd: the packaged service where systemd started it, else a background process.
if ! curl -fsS http://127.0.0.1:9922/health >/dev/null 2>&1; then
    nohup /usr/bin/haloyd serve --config /etc/haloy/haloyd.yaml >"$DEMO/haloyd.log" 2>&1 &
    echo $! >"$DEMO/haloyd.pid"
fi
wait_for "haloyd on 127.0.0.1:9922" curl -fsS http://127.0.0.1:9922/health
haloy server add http://127.0.0.1:9922 --token-stdin </etc/haloy/api-token >/dev/null

haloy deploy -c "$ROOT/examples/local-demo/haloy.yaml"
haloy status -c "$ROOT/examples/local-demo/haloy.yaml"
echo
echo "Six requests through haloyd's proxy (Host: demo.localhost), round-robin over 3 replicas:"
for _ in 1 2 3 4 5 6; do
    curl -fsS -H 'Host: demo.localhost' http://127.0.0.1/ | grep -E 'version|replica' | tr -d '\n'; echo
done
echo
echo "haloyd log: $DEMO/haloyd.log (or journalctl -u haloyd)   stop the app: haloy stop -c examples/local-demo/haloy.yaml"
