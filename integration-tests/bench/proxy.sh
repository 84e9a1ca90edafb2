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
#      request (utime+stime deltas of /proc/PID/stat, all threads);
#   2. p50/p99 latency at a fixed rate below saturation (half of the slowest proxy's
#      saturation, the same rate for all three).
# Prints haloyd/nginx and haloyd/haproxy ratios. Targets (issue 17): CPU/req <= 0.9 x nginx,
# req/s >= nginx, p99 <= nginx.
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
# BASE_PORT (default 18580), PROFILE (cargo profile, default release; PROFILE=dist for the
# package's fat-LTO build), SCHEMES (default "http https"), LOGS (default "off on"),
# PROXY_CPUS (default 0), LOAD_CPUS (default 1), HALOYD and BACKEND (prebuilt binaries to
# measure instead of building, e.g. to compare two haloyd builds; both must be set).
# Run as root. Needs: wrk, nginx (nginx-light), haproxy, openssl, containerd, cargo.
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18580}
PROFILE=${PROFILE:-release}
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
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)
CONTAINERD=$(command -v containerd)

if [ -z "${HALOYD:-}" ]; then
    # Two invocations: built together, the example's dev-dependencies would change the
    # features haloyd is built with (tokio test-util), and it would not be the shipped binary.
    cargo build --profile "$PROFILE" --bin haloyd >&2
    cargo build --profile "$PROFILE" --example bench-backend >&2
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    HALOYD="$TARGET_DIR/$PROFILE/haloyd"
    BACKEND="$TARGET_DIR/$PROFILE/examples/bench-backend"
fi
echo "profile: $PROFILE; proxies on cpu $PROXY_CPUS, wrk and backend on cpu $LOAD_CPUS"

WORK=$(mktemp -d)
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
HALOY_PID='' NGINX_PID='' HAPROXY_PID=''

start_haloyd() { # log: off|on
    local access="{to: off}"
    [ "$1" = on ] && access="{to: file, file: $WORK/haloyd-access.log}"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
    cat >"$WORK/haloyd.yaml" <<EOF
state_dir: $WORK/haloyd/state
run_dir: $WORK/haloyd/run
api: {listen: 127.0.0.1:$HALOY_API_PORT, token_file: $WORK/token}
containerd: {address: $WORK/containerd/containerd.sock, namespace: proxybench}
proxy: {http_listen: 127.0.0.1:$HALOY_PORT, https_listen: 127.0.0.1:$HALOY_TLS_PORT}
network: {bridge: hlbench0, subnet: 10.249.250.0/24, cni_conf_dir: $WORK/haloyd/cni}
acme: {enabled: false, certificates: [{domain: $TLS_HOST, cert_file: $WORK/cert.pem, key_file: $WORK/key.pem}]}
dns: {enabled: false}
access_log: $access
EOF
    TOKIO_WORKER_THREADS=1 \
        HALOYD_BENCH_STATIC_ROUTES="$HTTP_HOST=127.0.0.1:$BACKEND_PORT $TLS_HOST=127.0.0.1:$BACKEND_PORT" \
        taskset -c "$PROXY_CPUS" "$HALOYD" serve --config "$WORK/haloyd.yaml" >>"$WORK/haloyd.log" 2>&1 &
    HALOY_PID=$!
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
    taskset -c "$PROXY_CPUS" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
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
    taskset -c "$PROXY_CPUS" "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy-access.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=($!)
}

start_peers() { # log
    start_haloyd "$1"
    start_nginx "$1"
    start_haproxy "$1"
    for port in $BACKEND_PORT $HALOY_PORT $NGINX_PORT $HAPROXY_PORT \
        $HALOY_TLS_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT; do
        wait_port "$port"
    done
    check_peers
}

stop_peers() {
    for pid in "$HALOY_PID" "$NGINX_PID" "$HAPROXY_PID"; do stop_pid "$pid"; done
}

# Sanity: every front answers 200 with the 1 KB body, over HTTP and TLS 1.3.
check_peers() {
    local port reply
    for port in $HALOY_PORT $NGINX_PORT $HAPROXY_PORT; do
        exec 3<>"/dev/tcp/127.0.0.1/$port"
        printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$HTTP_HOST" >&3
        reply=$(cat <&3)
        exec 3<&-
        case "$reply" in
            "HTTP/1.1 200"*) ;;
            *) echo "port $port did not answer 200: ${reply:0:200}" >&2; exit 1 ;;
        esac
    done
    for port in $HALOY_TLS_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT; do
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
cpu_ticks() { # pid -> user+system clock ticks used so far, all threads
    awk '{ print $14 + $15 }' "/proc/$1/stat"
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
saturate() { # scheme port pid -> "req/s cpu_us_per_request"
    local u
    u=$(url "$1" "$2")
    run_wrk -t1 -c2 -d2s -H "$(host_header "$1")" "$u" >/dev/null # warm up pools
    local before after out
    before=$(cpu_ticks "$3")
    out=$(run_wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$(host_header "$1")" "$u")
    after=$(cpu_ticks "$3")
    awk -v t=$((after - before)) -v hz="$CLK_TCK" '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        /Non-2xx/ { bad = $NF }
        END {
            if (bad > 0) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
            printf "%s %.2f\n", rps, t * 1e6 / hz / n
        }' <<<"$out"
}

fixed_rate() { # scheme port rate -> "achieved_rps p50_ms p99_ms"
    local scheme=$1 port=$2 rate=$3 delay_ms=2
    local conns=$(((rate * delay_ms + 999) / 1000))
    cat >"$WORK/pace.lua" <<EOF
function delay() return $delay_ms end
EOF
    local out
    out=$(run_wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/pace.lua" \
        -H "$(host_header "$scheme")" "$(url "$scheme" "$port")")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

median() { # numbers... -> median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # numbers... -> "min-max"
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'
}

SUMMARY=()

measure() { # scheme log
    local scheme=$1 log=$2 hp np ap
    if [ "$scheme" = https ]; then
        hp=$HALOY_TLS_PORT np=$NGINX_TLS_PORT ap=$HAPROXY_TLS_PORT
    else
        hp=$HALOY_PORT np=$NGINX_PORT ap=$HAPROXY_PORT
    fi
    # The machine is shared: rounds interleave the three proxies and the median is reported,
    # so a burst of foreign load hits all of them rather than one.
    echo "== $scheme, access log $log: saturation wrk -t1 -c$CONNS -d${DURATION}s, 1 KB body, keep-alive, $ROUNDS interleaved rounds" >&2
    local H_ALL=() N_ALL=() A_ALL=() H_CPU=() N_CPU=() A_CPU=() rps cpu
    for _ in $(seq 1 "$ROUNDS"); do
        read -r rps cpu <<<"$(saturate "$scheme" "$hp" "$HALOY_PID")"
        H_ALL+=("$rps") H_CPU+=("$cpu")
        read -r rps cpu <<<"$(saturate "$scheme" "$np" "$NGINX_PID")"
        N_ALL+=("$rps") N_CPU+=("$cpu")
        read -r rps cpu <<<"$(saturate "$scheme" "$ap" "$HAPROXY_PID")"
        A_ALL+=("$rps") A_CPU+=("$cpu")
    done
    echo "   req/s   haloyd ${H_ALL[*]} | nginx ${N_ALL[*]} | haproxy ${A_ALL[*]}" >&2
    echo "   CPU us  haloyd ${H_CPU[*]} | nginx ${N_CPU[*]} | haproxy ${A_CPU[*]}" >&2
    local H_RPS N_RPS A_RPS H_US N_US A_US RATE
    H_RPS=$(median "${H_ALL[@]}") N_RPS=$(median "${N_ALL[@]}") A_RPS=$(median "${A_ALL[@]}")
    H_US=$(median "${H_CPU[@]}") N_US=$(median "${N_CPU[@]}") A_US=$(median "${A_CPU[@]}")
    RATE=$(awk -v a="$H_RPS" -v b="$N_RPS" -v c="$A_RPS" 'BEGIN { m = a; if (b < m) m = b; if (c < m) m = c; printf "%d", m / 2 }')

    echo "== $scheme, access log $log: fixed rate ~$RATE req/s (half the slowest saturation), wrk pacing 2 ms/connection, $ROUNDS rounds" >&2
    fixed_median() { # port -> "rps p50 p99", medians over rounds
        local rps=() p50=() p99=() r a b
        for _ in $(seq 1 "$ROUNDS"); do
            read -r r a b <<<"$(fixed_rate "$scheme" "$1" "$RATE")"
            rps+=("$r") p50+=("$a") p99+=("$b")
        done
        echo "$(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}")"
    }
    local H_FR H_P50 H_P99 N_FR N_P50 N_P99 A_FR A_P50 A_P99
    read -r H_FR H_P50 H_P99 <<<"$(fixed_median "$hp")"
    read -r N_FR N_P50 N_P99 <<<"$(fixed_median "$np")"
    read -r A_FR A_P50 A_P99 <<<"$(fixed_median "$ap")"

    printf '\n[%s, access log %s]\n' "$scheme" "$log"
    printf '%-10s %14s %12s %17s %14s %10s %10s\n' proxy "sat req/s" "CPU us/req" "CPU range" "fixed req/s" "p50 ms" "p99 ms"
    printf '%-10s %14s %12s %17s %14s %10s %10s\n' haloyd "$H_RPS" "$H_US" "$(range "${H_CPU[@]}")" "$H_FR" "$H_P50" "$H_P99"
    printf '%-10s %14s %12s %17s %14s %10s %10s\n' nginx "$N_RPS" "$N_US" "$(range "${N_CPU[@]}")" "$N_FR" "$N_P50" "$N_P99"
    printf '%-10s %14s %12s %17s %14s %10s %10s\n' haproxy "$A_RPS" "$A_US" "$(range "${A_CPU[@]}")" "$A_FR" "$A_P50" "$A_P99"
    local ratios
    ratios=$(awk -v h="$H_RPS" -v n="$N_RPS" -v a="$A_RPS" -v hp="$H_P99" -v np="$N_P99" -v ap="$A_P99" \
        -v hc="$H_US" -v nc="$N_US" -v ac="$A_US" \
        -v h5="$H_P50" -v n5="$N_P50" -v a5="$A_P50" 'BEGIN {
        printf "ratio req/s   haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (target >= 1)\n", h / n, h / a
        printf "ratio CPU/req haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (target <= 0.9)\n", hc / nc, hc / ac
        printf "ratio p50     haloyd/nginx = %.2f   haloyd/haproxy = %.2f\n", h5 / n5, h5 / a5
        printf "ratio p99     haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (target <= 1)\n", hp / np, hp / ap
    }')
    echo "$ratios"
    SUMMARY+=("$(printf '%-5s log %-3s  req/s %s  CPU/req %s  p99 %s  (haloyd/nginx)' "$scheme" "$log" \
        "$(awk '/req\/s/ { print $5 }' <<<"$ratios")" \
        "$(awk '/CPU\/req/ { print $5 }' <<<"$ratios")" \
        "$(awk '/p99/ { print $5 }' <<<"$ratios")")")
}

for log in $LOGS; do
    start_peers "$log"
    for scheme in $SCHEMES; do
        measure "$scheme" "$log"
    done
    if [ "$log" = on ]; then
        # Proof that each peer logged: line counts of the three access logs.
        printf 'access log lines: haloyd %s, nginx %s, haproxy %s\n' \
            "$(cat "$WORK"/haloyd-access.log* 2>/dev/null | wc -l)" \
            "$(wc -l <"$WORK/nginx/access.log")" "$(wc -l <"$WORK/haproxy-access.log")"
    fi
    stop_peers
done

printf '\nsummary (targets: req/s >= 1, CPU/req <= 0.9, p99 <= 1)\n'
printf '%s\n' "${SUMMARY[@]}"
