#!/usr/bin/env bash
# Benchmark the real `haloyd serve` reverse proxy against nginx and HAProxy in front of the same
# backend, over HTTP/1.1 and HTTPS (TLS 1.3), with access logs off and on.
#
# haloyd is the release binary users run (multi-thread tokio runtime, a production-like server
# config: proxy, API and containerd socket on loopback/private paths, ACME off, the HTTPS
# certificate given as an operator certificate `acme.certificates`). It talks to a private
# containerd started here (no containers run). Its one route to the host backend comes from
# the benchmark-only variable HALOYD_BENCH_STATIC_ROUTES (src/proxy/bench_route.rs), so the
# backend is the same host process for all three proxies.
#
# Cores: each proxy runs under `taskset -c $PROXY_CPUS` (default core 0) with one core's worth
# of workers: haloyd TOKIO_WORKER_THREADS=1 (its tokio workers; blocking-pool and access-log
# threads share the same core), nginx worker_processes 1, HAProxy nbthread 1. wrk and the
# backend run under `taskset -c $LOAD_CPUS` (default core 1). Keep-alive to the backend
# everywhere; each adds X-Forwarded-For/-Proto/-Host.
#
# One run, same machine, same load tool (wrk, keep-alive, 1 KB body), per variant
# (http|https × access log off|on):
#   1. req/s at saturation (closed loop, $CONNS connections), and each proxy's CPU time per
#      request (utime+stime deltas of /proc/PID/stat, all threads), split into user and
#      system time, with context switches per request (/proc/PID/task/*/status), and "busy",
#      the cores it used (req/s x CPU per request): wrk and the backend share one core, so a
#      proxy may not fill its own, and then its CPU per request includes idle wake-ups;
#   2. syscalls per request by name, TCP segments and wake-ups per request (`perf stat` over
#      a saturation window of its own, so tracing costs the timed runs nothing);
#   3. p50/p99 latency at a fixed rate below saturation (half of the slowest proxy's
#      saturation, the same rate for all three), P99_ROUNDS rounds in rotating order.
# Prints haloyd/nginx and haloyd/haproxy ratios (the median of each round's ratio) and
# whether each target is met. Targets (issue 17): CPU/req <= 0.9 x nginx, req/s >= nginx,
# p99 <= nginx.
#
# Access log "on": each peer writes its default format to a file: haloyd `access_log: {to:
# file}`, nginx `access_log FILE` (combined), HAProxy `option httplog` to stdout redirected to
# a file. "off": none logs requests.
#
# Fixed rate: wrk2 is not packaged by Debian, so the fixed rate uses plain wrk with a Lua
# `delay()` pacing every connection (connections × 1/delay ≈ target rate). Closed-loop pacing:
# not corrected for coordinated omission, which barely matters well below saturation. The
# achieved rate is printed next to each latency so the runs can be checked to be comparable.
#
# Env: DURATION (s per wrk run, default 10), CONNS (default 64), ROUNDS (default 3),
# BASE_PORT (default 18580), PROFILE (cargo profile, default dist: the Debian
# package's build; release is the README's quicker build), SCHEMES (default "http https"), LOGS (default "off on"),
# PROXY_CPUS (default 0), LOAD_CPUS (default 1), HALOYD and BACKEND (prebuilt binaries to
# measure instead of building, e.g. to compare two haloyd builds; both must be set).
# HALOYD_B (a second haloyd binary, measured as "haloydB" beside the first in the same
# interleaved rounds, with its ratio to it: an A/B of a change on this noisy shared machine),
# FLOOR=1 (plain HTTP only: peer B is then `bench-floor`, integration-tests/bench/proxy_floor.rs,
# the least a tokio keep-alive proxy costs here: no parsing beyond the head's end and
# Content-Length, no routing, hygiene or metrics; printed as "floor". haloyd's distance to it
# is the cost of its HTTP layer, apart from tokio and the kernel's TCP path. FLOOR=lean: the
# same binary doing the work per request a complete proxy cannot skip (strict parse, routing,
# header hygiene, X-Forwarded-*, response framing, Date, counters) as plain byte-level code,
# printed as "lean": what a byte-level rewrite of haloyd's HTTP/1 path could reach),
# P99_ROUNDS (fixed-rate rounds, default 5), SYSCALL_SECS (perf stat window per proxy, default 3;
# 0 skips it), PERF_RECORD_DIR (if set, `perf record -g` of each proxy over a 3 s
# saturation window of its own, into DIR/SCHEME-LOG-PROXY.data, for `perf report -i`;
# PERF_RECORD_ARGS replaces `-g`, e.g. "--call-graph dwarf -F 499" for Rust's call stacks).
# INSTRUCTIONS=1 runs every proxy under valgrind's callgrind and prints, instead of the timed
# runs, user-space instructions per request at saturation for each and their ratios. A count,
# not a time: it does not move with the load on a shared machine, so it shows a change to the
# request path that the timed runs' noise hides. It leaves out the kernel's share (about 70 %
# of each proxy's CPU time here, nearly equal for all) and what cache misses cost. Over HTTPS
# the TLS libraries choose their code by the CPU features valgrind presents, which need not be
# the ones they use natively: compare HTTPS counts of one proxy across builds, not across peers.
# CPU_QUOTA=PCT (e.g. 50) runs each proxy in a cpu cgroup of its own capped at PCT % of one core
# (10 ms periods; cgroup v2 cpu.max or v1 CFS quota): then the proxy, not the core wrk and the
# backend share, sets the rate at saturation, every proxy's "busy" reads PCT/100, and CPU per
# request compares proxies that are all saturated. Its p99 figures include throttling: read the
# latency targets from runs without it.
# CALLGRIND_KEEP=DIR keeps the callgrind dumps (DIR/PID.out.N, the last one per proxy is its
# measured run) for `callgrind_annotate --inclusive=yes`: where each proxy's instructions go.
# Run as root. Needs: wrk, nginx (nginx-light), haproxy, openssl, containerd, cargo, perf
# (linux-perf), valgrind for INSTRUCTIONS=1.
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
P99_ROUNDS=${P99_ROUNDS:-5}
SYSCALL_SECS=${SYSCALL_SECS:-3}
BASE_PORT=${BASE_PORT:-18580}
PROFILE=${PROFILE:-dist}
SCHEMES=${SCHEMES:-http https}
LOGS=${LOGS:-off on}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
BACKEND_PORT=$BASE_PORT
HALOY_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
HAPROXY_PORT=$((BASE_PORT + 3))
HALOY_TLS_PORT=$((BASE_PORT + 4))
NGINX_TLS_PORT=$((BASE_PORT + 5))
HAPROXY_TLS_PORT=$((BASE_PORT + 6))
HALOY_API_PORT=$((BASE_PORT + 7))
HALOYB_PORT=$((BASE_PORT + 8))
HALOYB_TLS_PORT=$((BASE_PORT + 9))
HALOYB_API_PORT=$((BASE_PORT + 10))
# HTTP requests name a host without certificate (haloyd would redirect one with a
# certificate to HTTPS); HTTPS requests go to `localhost`, which the certificate names and
# which resolves to 127.0.0.1 for wrk's SNI.
HTTP_HOST=bench.test
TLS_HOST=localhost

need() {
    command -v "$1" >/dev/null || { echo "missing $1: apt-get install $2" >&2; exit 1; }
}
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need openssl openssl
need containerd containerd
need taskset util-linux
[ "$SYSCALL_SECS" = 0 ] && [ -z "${PERF_RECORD_DIR:-}" ] || need perf linux-perf
[ "${INSTRUCTIONS:-0}" = 0 ] || need valgrind valgrind
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)
CONTAINERD=$(command -v containerd)

target_dir() { # cargo's target directory
    cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

if [ -z "${HALOYD:-}" ]; then
    # Two invocations: built together, the example's dev-dependencies would change the
    # features haloyd is built with (tokio test-util), and it would not be the shipped binary.
    cargo build --profile "$PROFILE" --bin haloyd >&2
    cargo build --profile "$PROFILE" --example bench-backend >&2
    HALOYD="$(target_dir)/$PROFILE/haloyd"
    BACKEND="$(target_dir)/$PROFILE/examples/bench-backend"
fi
B_LABEL=haloydB
if [ "${FLOOR:-0}" != 0 ]; then
    [ "$SCHEMES" = http ] || { echo "FLOOR=1 measures plain HTTP only: set SCHEMES=http" >&2; exit 1; }
    [ -z "${HALOYD_B:-}" ] || { echo "FLOOR=1 takes peer B's place: unset HALOYD_B" >&2; exit 1; }
    cargo build --profile "$PROFILE" --example bench-floor >&2
    HALOYD_B="$(target_dir)/$PROFILE/examples/bench-floor"
    # Its HTTPS port only tunnels to haloyd's, so the TLS checks pass.
    export FLOOR_TLS_UPSTREAM="127.0.0.1:$HALOY_TLS_PORT"
    B_LABEL=floor
    if [ "$FLOOR" = lean ]; then export FLOOR_MODE=lean B_LABEL=lean; fi
fi
echo "profile: $PROFILE; proxies on cpu $PROXY_CPUS${CPU_QUOTA:+ (each capped at $CPU_QUOTA % of one core)}, wrk and backend on cpu $LOAD_CPUS"

WORK=$(mktemp -d)
# Every proxy's command is prefixed with WRAP: callgrind for INSTRUCTIONS=1.
CALLGRIND_DIR="$WORK/callgrind"
WRAP=()
if [ "${INSTRUCTIONS:-0}" != 0 ]; then
    mkdir -p "$CALLGRIND_DIR"
    WRAP=(valgrind -q --tool=callgrind "--callgrind-out-file=$CALLGRIND_DIR/%p.out")
fi
PIDS=()
stop_pid() { # pid: SIGTERM, wait, and forget it
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for dir in ${CGROUPS[@]+"${CGROUPS[@]}"}; do rmdir "$dir" 2>/dev/null || true; done
    if [ -n "${CALLGRIND_KEEP:-}" ] && [ -d "$CALLGRIND_DIR" ]; then
        mkdir -p "$CALLGRIND_KEEP" && cp "$CALLGRIND_DIR"/* "$CALLGRIND_KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    [ -f "$WORK/haloyd.log" ] && tail -20 "$WORK/haloyd.log" >&2
    exit 1
}

# One certificate and key for haloyd, nginx and HAProxy.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$TLS_HOST" -addext "subjectAltName=DNS:$TLS_HOST" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"

taskset -c "$LOAD_CPUS" "$BACKEND" "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)

# A private containerd: haloyd refuses to start without one; it runs no container here.
mkdir -p "$WORK/containerd"
cat >"$WORK/containerd/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/containerd/containerd.sock"
[ttrpc]
  address = "$WORK/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
EOF
taskset -c "$LOAD_CPUS" "$CONTAINERD" --config "$WORK/containerd/config.toml" \
    >"$WORK/containerd/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -S "$WORK/containerd/containerd.sock" ] && break; sleep 0.1; done

# Peers are (re)started per access-log variant; these hold the current pids.
HALOY_PID='' HALOYB_PID='' NGINX_PID='' HAPROXY_PID=''

# CPU_QUOTA: QUOTA_WRAP becomes a prefix that moves the command into a cpu cgroup of its own
# before it execs, so every thread it starts is capped with it.
CGROUPS=()
QUOTA_WRAP=()
quota_wrap() { # name
    QUOTA_WRAP=()
    [ -n "${CPU_QUOTA:-}" ] || return 0
    local dir quota=$((CPU_QUOTA * 100)) period=10000
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
            echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        dir=/sys/fs/cgroup/haloy-proxy-bench-$$-$1
        mkdir -p "$dir"
        echo "$quota $period" >"$dir/cpu.max"
    elif [ -d /sys/fs/cgroup/cpu ]; then
        dir=/sys/fs/cgroup/cpu/haloy-proxy-bench-$$-$1
        mkdir -p "$dir"
        echo "$period" >"$dir/cpu.cfs_period_us"
        echo "$quota" >"$dir/cpu.cfs_quota_us"
    else
        echo "CPU_QUOTA needs the cpu cgroup controller (v2 cpu.max or v1 /sys/fs/cgroup/cpu)" >&2
        exit 1
    fi
    CGROUPS+=("$dir")
    # shellcheck disable=SC2016 # expanded by the inner shell
    QUOTA_WRAP=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir")
}

start_haloyd() { # log: off|on, name (haloyd|haloydB), binary, http port, https port, api port, net
    local access="{to: off}" name=$2 dir="$WORK/$2"
    [ "$1" = on ] && access="{to: file, file: $WORK/$name-access.log}"
    mkdir -p "$dir"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
    cat >"$dir/haloyd.yaml" <<EOF
state_dir: $dir/state
run_dir: $dir/run
api: {listen: 127.0.0.1:$6, token_file: $dir/token}
containerd: {address: $WORK/containerd/containerd.sock, namespace: proxybench$7}
proxy: {http_listen: 127.0.0.1:$4, https_listen: 127.0.0.1:$5}
network: {bridge: hlbench$7, subnet: 10.249.$((250 + $7)).0/24, cni_conf_dir: $dir/cni}
acme: {enabled: false, certificates: [{domain: $TLS_HOST, cert_file: $WORK/cert.pem, key_file: $WORK/key.pem}]}
dns: {enabled: false}
access_log: $access
EOF
    quota_wrap "$name"
    TOKIO_WORKER_THREADS=1 \
        HALOYD_BENCH_STATIC_ROUTES="$HTTP_HOST=127.0.0.1:$BACKEND_PORT $TLS_HOST=127.0.0.1:$BACKEND_PORT" \
        taskset -c "$PROXY_CPUS" ${QUOTA_WRAP[@]+"${QUOTA_WRAP[@]}"} ${WRAP[@]+"${WRAP[@]}"} "$3" serve --config "$dir/haloyd.yaml" >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

start_nginx() { # log: off|on
    local access="access_log off;"
    [ "$1" = on ] && access="access_log $WORK/nginx/access.log;"
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    $access
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_buffering off;
        }
    }
}
EOF
    quota_wrap nginx
    taskset -c "$PROXY_CPUS" ${QUOTA_WRAP[@]+"${QUOTA_WRAP[@]}"} ${WRAP[@]+"${WRAP[@]}"} "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!
    PIDS+=($!)
}

start_haproxy() { # log: off|on
    local global_log="" httplog=""
    if [ "$1" = on ]; then
        global_log="log stdout format raw local0"
        httplog="log global
    option httplog"
    fi
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    $global_log
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    $httplog
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $WORK/haproxy.pem ssl-min-ver TLSv1.3 alpn http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$BACKEND_PORT
EOF
    quota_wrap haproxy
    taskset -c "$PROXY_CPUS" ${QUOTA_WRAP[@]+"${QUOTA_WRAP[@]}"} ${WRAP[@]+"${WRAP[@]}"} "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy-access.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=($!)
}

start_peers() { # log
    start_haloyd "$1" haloyd "$HALOYD" "$HALOY_PORT" "$HALOY_TLS_PORT" "$HALOY_API_PORT" 0
    HALOY_PID=${PIDS[-1]}
    if [ -n "${HALOYD_B:-}" ]; then
        start_haloyd "$1" haloydB "$HALOYD_B" "$HALOYB_PORT" "$HALOYB_TLS_PORT" "$HALOYB_API_PORT" 1
        HALOYB_PID=${PIDS[-1]}
        wait_port "$HALOYB_PORT"
        wait_port "$HALOYB_TLS_PORT"
    fi
    start_nginx "$1"
    start_haproxy "$1"
    for port in $BACKEND_PORT $HALOY_PORT $NGINX_PORT $HAPROXY_PORT \
        $HALOY_TLS_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT; do
        wait_port "$port"
    done
    check_peers
}

stop_peers() {
    for pid in "$HALOY_PID" "$NGINX_PID" "$HAPROXY_PID" $HALOYB_PID; do stop_pid "$pid"; done
}

# Sanity: every front answers 200 with the 1 KB body, over HTTP and TLS 1.3.
check_peers() {
    local port reply
    for port in $HALOY_PORT $NGINX_PORT $HAPROXY_PORT ${HALOYD_B:+$HALOYB_PORT}; do
        exec 3<>"/dev/tcp/127.0.0.1/$port"
        printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$HTTP_HOST" >&3
        reply=$(cat <&3)
        exec 3<&-
        case "$reply" in
            "HTTP/1.1 200"*) ;;
            *) echo "port $port did not answer 200: ${reply:0:200}" >&2; exit 1 ;;
        esac
    done
    for port in $HALOY_TLS_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT ${HALOYD_B:+$HALOYB_TLS_PORT}; do
        reply=$(printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$TLS_HOST" |
            openssl s_client -quiet -tls1_3 -servername "$TLS_HOST" \
                -connect "127.0.0.1:$port" 2>/dev/null || true)
        case "$reply" in
            "HTTP/1.1 200"*) ;;
            *) echo "TLS port $port did not answer 200 over TLS 1.3: ${reply:0:200}" >&2; exit 1 ;;
        esac
        # What wrk (OpenSSL, default client settings) negotiates with each, for the record.
        printf '   TLS port %s: %s\n' "$port" "$(openssl s_client -brief -servername "$TLS_HOST" \
            -connect "127.0.0.1:$port" </dev/null 2>&1 | awk -F': ' '/^(Protocol version|Ciphersuite)/ { printf "%s ", $2 }')" >&2
    done
}

to_ms() { # wrk latency value like 812.00us / 1.23ms / 1.01s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n
    }'
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> "user system" clock ticks used so far, all threads
    awk '{ print $14, $15 }' "/proc/$1/stat"
}
ctx_switches() { # pid -> voluntary + involuntary context switches so far, all threads
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

url() { # scheme port -> url; HTTP names its host in a header, HTTPS in the URL (SNI)
    if [ "$1" = https ]; then echo "https://$TLS_HOST:$2/"; else echo "http://127.0.0.1:$2/"; fi
}
host_header() { # scheme -> the Host field wrk sends
    if [ "$1" = https ]; then echo "Host: $TLS_HOST"; else echo "Host: $HTTP_HOST"; fi
}

run_wrk() { # wrk args... (pinned to the load cores)
    taskset -c "$LOAD_CPUS" wrk "$@"
}

# CPU time per request (user + system, from /proc) is printed next to req/s: it is the
# proxy's own cost, less disturbed than req/s by the load tool and backend sharing the cores.
# User and system time are also kept apart (system time is mostly the loopback TCP path, so
# it follows the number of syscalls), with the context switches per request (wake-ups).
saturate() { # scheme port pid -> "req/s cpu_us user_us sys_us ctxsw" (per request)
    local u
    u=$(url "$1" "$2")
    run_wrk -t1 -c2 -d2s -H "$(host_header "$1")" "$u" >/dev/null # warm up pools
    local ut0 st0 ut1 st1 cs0 cs1 out
    read -r ut0 st0 <<<"$(cpu_ticks "$3")"
    cs0=$(ctx_switches "$3")
    out=$(run_wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$(host_header "$1")" "$u")
    read -r ut1 st1 <<<"$(cpu_ticks "$3")"
    cs1=$(ctx_switches "$3")
    awk -v ut=$((ut1 - ut0)) -v st=$((st1 - st0)) -v cs=$((cs1 - cs0)) -v hz="$CLK_TCK" '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        /Non-2xx/ { bad = $NF }
        END {
            if (bad > 0) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
            us = 1e6 / hz / n
            printf "%s %.2f %.2f %.2f %.3f\n", rps, (ut + st) * us, ut * us, st * us, cs / n
        }' <<<"$out"
}

# Syscalls per request at saturation, counted by `perf stat` on the proxy's threads over a
# window of its own (SYSCALL_SECS), so the tracepoints cost nothing in the timed runs. Prints
# the total and the calls that make up the hot path, each per request.
SYSCALLS="sendto recvfrom read write writev readv sendmsg recvmsg epoll_wait epoll_pwait epoll_pwait2 epoll_ctl futex sched_yield accept4 close"
# Also TCP segments sent per request in this network namespace (wrk, backend and proxy
# together, so only differences between proxies mean something: pure ACKs, split writes).
tcp_out_segs() { awk '/^Tcp: [0-9]/ { print $12 }' /proc/net/snmp; }
count_syscalls() { # scheme port pid -> "total name=n ... segs=n" (per request)
    local u events="-e raw_syscalls:sys_enter" name out perf_pid segs0 segs1
    u=$(url "$1" "$2")
    for name in $SYSCALLS; do events="$events -e syscalls:sys_enter_$name"; done
    # Wake-ups the proxy's threads issue (of wrk, the backend, or its own threads): on a VM
    # each wake-up of an idle vCPU is an IPI, a large share of the loopback path's cost.
    events="$events -e sched:sched_wakeup"

    # shellcheck disable=SC2086 # one word per event
    perf stat -x, -o "$WORK/perf.out" $events -p "$3" &
    perf_pid=$!
    sleep 0.3 # perf attaches to every thread before the load starts
    segs0=$(tcp_out_segs)
    out=$(run_wrk -t1 -c"$CONNS" -d"${SYSCALL_SECS}s" -H "$(host_header "$1")" "$u")
    segs1=$(tcp_out_segs)
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    local n
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    awk -F, -v n="$n" -v segs=$((segs1 - segs0)) '
        $3 == "raw_syscalls:sys_enter" { total = $1 }
        $3 == "sched:sched_wakeup" { wakeups = $1 }
        $3 ~ /^syscalls:sys_enter_/ && $1 > 0 {
            name = $3; sub(/^syscalls:sys_enter_/, "", name)
            if ($1 / n >= 0.005) detail = detail sprintf(" %s=%.2f", name, $1 / n)
        }
        END { printf "%.2f%s tcp_segs=%.2f wakeups=%.2f\n", total / n, detail, segs / n, wakeups / n }' "$WORK/perf.out"
}

# A profile with call graphs of one proxy at saturation, outside the timed runs.
record_profile() { # scheme port pid file
    local u perf_pid
    u=$(url "$1" "$2")
    # shellcheck disable=SC2086 # one word per option
    perf record -q ${PERF_RECORD_ARGS:--g} -o "$4" -p "$3" 2>/dev/null &
    perf_pid=$!
    sleep 0.3
    run_wrk -t1 -c"$CONNS" -d3s -H "$(host_header "$1")" "$u" >/dev/null
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
}

# CPU per request is also taken at the fixed rate: all proxies then serve the same req/s, so
# it does not depend on how much each batched at saturation, which follows the load other
# processes put on the machine (this is the steadier comparison on a shared machine).
fixed_rate() { # scheme port rate pid -> "achieved_rps p50_ms p99_ms cpu_us_per_request"
    local scheme=$1 port=$2 rate=$3 pid=$4 delay_ms=2 ut0 st0 ut1 st1
    local conns=$(((rate * delay_ms + 999) / 1000))
    cat >"$WORK/pace.lua" <<EOF
function delay() return $delay_ms end
EOF
    local out
    read -r ut0 st0 <<<"$(cpu_ticks "$pid")"
    out=$(run_wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/pace.lua" \
        -H "$(host_header "$scheme")" "$(url "$scheme" "$port")")
    read -r ut1 st1 <<<"$(cpu_ticks "$pid")"
    local rps p50 p99 n
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v t=$((ut1 + st1 - ut0 - st0)) -v hz="$CLK_TCK" -v n="$n" \
        'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
}

set_peers() { # scheme -> the globals PORT and PID: each peer's port for scheme, its pid
    declare -gA PORT PID
    if [ "$1" = https ]; then
        PORT=([haloyd]=$HALOY_TLS_PORT [haloydB]=$HALOYB_TLS_PORT [nginx]=$NGINX_TLS_PORT [haproxy]=$HAPROXY_TLS_PORT)
    else
        PORT=([haloyd]=$HALOY_PORT [haloydB]=$HALOYB_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
    fi
    PID=([haloyd]=$HALOY_PID [haloydB]=$HALOYB_PID [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID)
}

# User-space instructions per request (INSTRUCTIONS=1): callgrind's counters are zeroed after
# a warm-up, a saturation run goes through, and the dump is divided by its requests.
instructions() { # scheme port pid -> instructions per request
    local u out n dumps
    u=$(url "$1" "$2")
    run_wrk -t1 -c2 -d2s -H "$(host_header "$1")" "$u" >/dev/null
    callgrind_control -z "$3" >/dev/null 2>&1
    out=$(run_wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$(host_header "$1")" "$u")
    dumps=$(ls "$CALLGRIND_DIR/$3.out."* 2>/dev/null | wc -l)
    callgrind_control -d "$3" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        [ "$(ls "$CALLGRIND_DIR/$3.out."* 2>/dev/null | wc -l)" -gt "$dumps" ] && break
        sleep 0.1
    done
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    # The newest dump: part numbers grow with each dump.
    awk -v n="$n" '/^summary:/ { printf "%.0f\n", $2 / n }' \
        "$(ls -v "$CALLGRIND_DIR/$3.out."* | tail -1)"
}

measure_instructions() { # scheme log
    local scheme=$1 log=$2 p peer line
    declare -A IR
    set_peers "$scheme"
    printf '\n[%s, access log %s: user-space instructions per request, callgrind, wrk -c%s -d%ss]\n' \
        "$scheme" "$log" "$CONNS" "$DURATION"
    for p in $PROXIES; do
        IR[$p]=$(instructions "$scheme" "${PORT[$p]}" "${PID[$p]}")
        printf '%-8s %8s\n' "$(label "$p")" "${IR[$p]}"
    done
    for peer in nginx haproxy ${HALOYD_B:+haloydB}; do
        line=$(printf 'haloyd/%-7s instructions/req %.3f' "$(label "$peer")" \
            "$(awk -v a="${IR[haloyd]}" -v b="${IR[$peer]}" 'BEGIN { print a / b }')")
        echo "$line"
        SUMMARY+=("$(printf '%-5s log %-3s %s' "$scheme" "$log" "$line")")
    done
}

median() { # numbers... -> median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # numbers... -> "min-max"
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'
}

sc_total() { echo "${1%% *}"; } # "total name=n ..." -> total

per_round() { # format awk-expr-of-x-and-y x-values... -- y-values... -> the expression per round
    local format=$1 expr=$2 a=() b=() seen=0 x i
    shift 2
    for x in "$@"; do
        if [ "$x" = -- ]; then seen=1; elif [ $seen = 0 ]; then a+=("$x"); else b+=("$x"); fi
    done
    for i in "${!a[@]}"; do
        awk -v x="${a[$i]}" -v y="${b[$i]}" "BEGIN { printf \"$format\\n\", $expr }"
    done
}
ratios() { per_round %.3f 'x / y' "$@"; } # a-values... -- b-values... -> a[i]/b[i] per round
busy() { per_round %.2f 'x * y / 1e6' "$@"; } # req/s... -- CPU us... -> cores busy per round
verdict() { # value op bound -> "met" / "NOT met"
    awk -v v="$1" -v op="$2" -v b="$3" 'BEGIN {
        ok = (op == "<=") ? (v <= b) : (v >= b)
        print ok ? "met" : "NOT met"
    }'
}

label() { # proxy key -> the name printed for it
    if [ "$1" = haloydB ]; then echo "$B_LABEL"; else echo "$1"; fi
}

SUMMARY=()
PROXIES="haloyd ${HALOYD_B:+haloydB }nginx haproxy"

measure() { # scheme log
    local scheme=$1 log=$2
    set_peers "$scheme"
    # The machine is shared: rounds interleave the three proxies, medians are reported and
    # the ratios are medians of each round's ratio (the two runs of a round are seconds
    # apart), so a burst of foreign load hits all of them rather than one. Each round starts
    # with another proxy, so none always runs first or right after the same peer.
    echo "== $scheme, access log $log: saturation wrk -t1 -c$CONNS -d${DURATION}s, 1 KB body, keep-alive, $ROUNDS interleaved rounds (rotating order)" >&2
    declare -A RPS CPU USR SYS CSW SC P50 P99 FR FCPU
    local p r rps cpu usr sys csw order=$PROXIES
    for _ in $(seq 1 "$ROUNDS"); do
        for p in $order; do
            read -r rps cpu usr sys csw <<<"$(saturate "$scheme" "${PORT[$p]}" "${PID[$p]}")"
            RPS[$p]+="$rps " CPU[$p]+="$cpu " USR[$p]+="$usr " SYS[$p]+="$sys " CSW[$p]+="$csw "
        done
        order="${order#* } ${order%% *}"
    done
    for p in $PROXIES; do
        echo "   $(label "$p"): req/s ${RPS[$p]}| CPU us ${CPU[$p]}| user ${USR[$p]}| sys ${SYS[$p]}| ctxsw ${CSW[$p]}" >&2
    done
    if [ "$SYSCALL_SECS" != 0 ]; then
        echo "== $scheme, access log $log: syscalls per request (perf stat, ${SYSCALL_SECS}s window of its own)" >&2
        for p in $PROXIES; do
            SC[$p]=$(count_syscalls "$scheme" "${PORT[$p]}" "${PID[$p]}")
            echo "   $(label "$p"): ${SC[$p]}" >&2
        done
    fi
    if [ -n "${PERF_RECORD_DIR:-}" ]; then
        mkdir -p "$PERF_RECORD_DIR"
        for p in $PROXIES; do
            record_profile "$scheme" "${PORT[$p]}" "${PID[$p]}" "$PERF_RECORD_DIR/$scheme-$log-$p.data"
        done
        echo "== profiles in $PERF_RECORD_DIR" >&2
    fi
    local rate
    # shellcheck disable=SC2086 # one word per round
    rate=$(for p in $PROXIES; do median ${RPS[$p]}; done | sort -g | awk 'NR == 1 { printf "%d", $1 / 2 }')

    echo "== $scheme, access log $log: fixed rate ~$rate req/s (half the slowest saturation), wrk pacing 2 ms/connection, $P99_ROUNDS interleaved rounds" >&2
    local a b c
    order=$PROXIES
    for _ in $(seq 1 "$P99_ROUNDS"); do
        # Each round starts with another proxy, so none always runs right after a saturation.
        for p in $order; do
            read -r r a b c <<<"$(fixed_rate "$scheme" "${PORT[$p]}" "$rate" "${PID[$p]}")"
            FR[$p]+="$r " P50[$p]+="$a " P99[$p]+="$b " FCPU[$p]+="$c "
        done
        order="${order#* } ${order%% *}"
    done
    for p in $PROXIES; do
        echo "   $(label "$p"): p99 ms ${P99[$p]}| CPU us ${FCPU[$p]}" >&2
    done

    printf '\n[%s, access log %s]\n' "$scheme" "$log"
    printf '%-8s %10s %5s %9s %15s %8s %8s %8s %9s %10s %8s %8s %8s\n' proxy "sat req/s" busy "CPU us" "CPU range" "user us" "sys us" "ctxsw" "syscalls" "fixed r/s" "CPU us" "p50 ms" "p99 ms"
    for p in $PROXIES; do
        # shellcheck disable=SC2046,SC2086 # one word per round
        printf '%-8s %10s %5s %9s %15s %8s %8s %8s %9s %10s %8s %8s %8s\n' "$(label "$p")" \
            "$(median ${RPS[$p]})" "$(median $(busy ${RPS[$p]} -- ${CPU[$p]}))" \
            "$(median ${CPU[$p]})" "$(range ${CPU[$p]})" \
            "$(median ${USR[$p]})" "$(median ${SYS[$p]})" "$(median ${CSW[$p]})" \
            "$(sc_total "${SC[$p]:-n/a}")" "$(median ${FR[$p]})" "$(median ${FCPU[$p]})" \
            "$(median ${P50[$p]})" "$(median ${P99[$p]})"
    done
    if [ "$SYSCALL_SECS" != 0 ]; then
        for p in $PROXIES; do printf '  syscalls/req %-8s %s\n' "$(label "$p")" "${SC[$p]}"; done
    fi
    if [ -n "${CPU_QUOTA:-}" ]; then
        echo "  (busy: cores each proxy used at saturation; at the cap of $CPU_QUOTA % each proxy set"
        echo "   its own rate. Latency here includes throttling: read p99 from runs without CPU_QUOTA)"
    else
        echo "  (busy: cores each proxy used at saturation; below 1.00 the load core set the rate, and"
        echo "   CPU/req there includes going idle and waking up (epoll_wait, wake-ups), which costs a"
        echo "   proxy more the more time it has left over; CPU_QUOTA=50 saturates every proxy)"
    fi
    local line peer rr rc rp rf
    for peer in nginx haproxy; do
        # shellcheck disable=SC2046,SC2086 # one word per round
        rr=$(median $(ratios ${RPS[haloyd]} -- ${RPS[$peer]}))
        # shellcheck disable=SC2046,SC2086
        rc=$(median $(ratios ${CPU[haloyd]} -- ${CPU[$peer]}))
        # shellcheck disable=SC2046,SC2086
        rp=$(median $(ratios ${P99[haloyd]} -- ${P99[$peer]}))
        # shellcheck disable=SC2046,SC2086
        rf=$(median $(ratios ${FCPU[haloyd]} -- ${FCPU[$peer]}))
        line=$(printf 'haloyd/%-7s req/s %.2f (>= 1 %s)  CPU/req %.2f (<= 0.9 %s; at the fixed rate %.2f)  p99 %.2f (<= 1 %s)' \
            "$peer" "$rr" "$(verdict "$rr" '>=' 1)" "$rc" "$(verdict "$rc" '<=' 0.9)" "$rf" "$rp" "$(verdict "$rp" '<=' 1)")
        echo "$line"
        [ "$peer" = nginx ] && SUMMARY+=("$(printf '%-5s log %-3s %s' "$scheme" "$log" "$line")")
    done
    if [ -n "${HALOYD_B:-}" ]; then
        for peer in haloyd nginx; do
            # shellcheck disable=SC2046,SC2086 # one word per round
            line=$(printf '%s/%-6s req/s %.3f  CPU/req %.3f  user %.3f  sys %.3f  (CPU rounds: %s)  fixed-rate CPU/req %.3f (rounds: %s)  p99 %.2f' "$B_LABEL" "$peer" \
                "$(median $(ratios ${RPS[haloydB]} -- ${RPS[$peer]}))" \
                "$(median $(ratios ${CPU[haloydB]} -- ${CPU[$peer]}))" \
                "$(median $(ratios ${USR[haloydB]} -- ${USR[$peer]}))" \
                "$(median $(ratios ${SYS[haloydB]} -- ${SYS[$peer]}))" \
                "$(ratios ${CPU[haloydB]} -- ${CPU[$peer]} | tr '\n' ' ')" \
                "$(median $(ratios ${FCPU[haloydB]} -- ${FCPU[$peer]}))" \
                "$(ratios ${FCPU[haloydB]} -- ${FCPU[$peer]} | tr '\n' ' ')" \
                "$(median $(ratios ${P99[haloydB]} -- ${P99[$peer]}))")
            echo "$line"
            SUMMARY+=("$(printf '%-5s log %-3s %s' "$scheme" "$log" "$line")")
        done
    fi
}

for log in $LOGS; do
    start_peers "$log"
    for scheme in $SCHEMES; do
        if [ "${INSTRUCTIONS:-0}" != 0 ]; then
            measure_instructions "$scheme" "$log"
        else
            measure "$scheme" "$log"
        fi
    done
    if [ "$log" = on ]; then
        # Proof that each peer logged: line counts of the three access logs.
        printf 'access log lines: haloyd %s, nginx %s, haproxy %s\n' \
            "$(cat "$WORK"/haloyd-access.log* 2>/dev/null | wc -l)" \
            "$(wc -l <"$WORK/nginx/access.log")" "$(wc -l <"$WORK/haproxy-access.log")"
    fi
    stop_peers
done

printf '\nsummary (ratios: medians of the per-round ratios; issue 17 targets vs nginx)\n'
printf '%s\n' "${SUMMARY[@]}"
