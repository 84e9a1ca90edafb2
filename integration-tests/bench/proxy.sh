#!/usr/bin/env bash
# Benchmark haloyd's reverse proxy against nginx and HAProxy in front of the same backend.
#
# One run, same machine, same load tool (wrk, keep-alive, 1 KB body):
#   1. req/s at saturation (closed loop, 64 connections), and each proxy's CPU time per request;
#   2. p50/p99 latency at a fixed rate below saturation (half of the slowest proxy's saturation).
# Prints haloyd/nginx and haloyd/haproxy ratios.
#
# Fixed rate: wrk2 is not packaged by Debian and oha (crates.io) is a heavy build, so the
# fixed rate uses plain wrk with a Lua `delay()` pacing every connection (connections × 1/delay
# ≈ target rate). This is closed-loop pacing: latency is measured per request, not corrected
# for coordinated omission, which barely matters well below saturation. The achieved rate is
# printed next to each latency so the three runs can be checked to be comparable.
#
# All three proxies get one core's worth of workers (haloyd: tokio current_thread runtime;
# nginx: worker_processes 1; HAProxy: nbthread 1), keep-alive to the backend, no access log,
# and add the same X-Forwarded-For/-Proto/-Host headers.
#
# Env: DURATION (s per wrk run, default 10), CONNS (default 64), ROUNDS (default 3),
# BASE_PORT (default 18580), PROFILE (cargo profile, default release; PROFILE=dist measures the
# package's fat-LTO build: compare its CPU per request with release's from a run right after).
# Needs: wrk (Debian package wrk), nginx (nginx-light), haproxy (haproxy), cargo.
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-18580}
PROFILE=${PROFILE:-release}
BACKEND_PORT=$BASE_PORT
HALOY_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
HAPROXY_PORT=$((BASE_PORT + 3))

need() {
    command -v "$1" >/dev/null || { echo "missing $1: apt-get install $2" >&2; exit 1; }
}
need wrk wrk
need nginx nginx-light
need haproxy haproxy
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)

cargo build --profile "$PROFILE" --example bench-backend --example bench-proxy >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
EXAMPLES="$TARGET_DIR/$PROFILE/examples"
echo "profile: $PROFILE"

WORK=$(mktemp -d)
PIDS=()
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
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

"$EXAMPLES/bench-backend" "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!)
"$EXAMPLES/bench-proxy" "127.0.0.1:$HALOY_PORT" "127.0.0.1:$BACKEND_PORT" &
HALOY_PID=$!
PIDS+=($!)

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
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
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$BACKEND_PORT
EOF
"$HAPROXY" -db -f "$WORK/haproxy.cfg" &
HAPROXY_PID=$!
PIDS+=($!)

for port in $BACKEND_PORT $HALOY_PORT $NGINX_PORT $HAPROXY_PORT; do wait_port "$port"; done

# Sanity: every front answers 200 with the 1 KB body.
for port in $HALOY_PORT $NGINX_PORT $HAPROXY_PORT; do
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n' >&3
    reply=$(cat <&3)
    exec 3<&-
    case "$reply" in
        "HTTP/1.1 200"*) ;;
        *) echo "port $port did not answer 200: ${reply:0:200}" >&2; exit 1 ;;
    esac
done

to_ms() { # wrk latency value like 812.00us / 1.23ms / 1.01s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n
    }'
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> user+system clock ticks used so far
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# CPU time per request (user + system, from /proc) is printed next to req/s: it is the
# proxy's own cost, less disturbed than req/s by the load tool and backend sharing the cores.
saturate() { # port pid -> "req/s cpu_us_per_request"
    wrk -t1 -c2 -d2s -H 'Host: bench.test' "http://127.0.0.1:$1/" >/dev/null # warm up pools
    local before after out
    before=$(cpu_ticks "$2")
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Host: bench.test' "http://127.0.0.1:$1/")
    after=$(cpu_ticks "$2")
    awk -v t=$((after - before)) -v hz="$CLK_TCK" '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        END { printf "%s %.2f\n", rps, t * 1e6 / hz / n }' <<<"$out"
}

fixed_rate() { # port rate -> "achieved_rps p50_ms p99_ms"
    local port=$1 rate=$2 delay_ms=2
    local conns=$(((rate * delay_ms + 999) / 1000))
    cat >"$WORK/pace.lua" <<EOF
function delay() return $delay_ms end
EOF
    local out
    out=$(wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/pace.lua" -H 'Host: bench.test' \
        "http://127.0.0.1:$port/")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

median() { # numbers... -> median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The machine is shared: rounds interleave the three proxies and the median is reported, so a
# burst of foreign load hits all of them rather than one.
echo "== saturation: wrk -t1 -c$CONNS -d${DURATION}s, 1 KB body, keep-alive, $ROUNDS interleaved rounds" >&2
H_ALL=() N_ALL=() A_ALL=() H_CPU=() N_CPU=() A_CPU=()
for _ in $(seq 1 "$ROUNDS"); do
    read -r rps cpu <<<"$(saturate $HALOY_PORT $HALOY_PID)"
    H_ALL+=("$rps") H_CPU+=("$cpu")
    read -r rps cpu <<<"$(saturate $NGINX_PORT $NGINX_PID)"
    N_ALL+=("$rps") N_CPU+=("$cpu")
    read -r rps cpu <<<"$(saturate $HAPROXY_PORT $HAPROXY_PID)"
    A_ALL+=("$rps") A_CPU+=("$cpu")
done
echo "   haloyd ${H_ALL[*]} | nginx ${N_ALL[*]} | haproxy ${A_ALL[*]}" >&2
H_RPS=$(median "${H_ALL[@]}")
N_RPS=$(median "${N_ALL[@]}")
A_RPS=$(median "${A_ALL[@]}")
H_US=$(median "${H_CPU[@]}")
N_US=$(median "${N_CPU[@]}")
A_US=$(median "${A_CPU[@]}")
RATE=$(awk -v a="$H_RPS" -v b="$N_RPS" -v c="$A_RPS" 'BEGIN { m = a; if (b < m) m = b; if (c < m) m = c; printf "%d", m / 2 }')

echo "== fixed rate ~$RATE req/s (half the slowest saturation), wrk pacing 2 ms/connection, $ROUNDS rounds" >&2
fixed_median() { # port -> "rps p50 p99", medians over rounds
    local rps=() p50=() p99=() r a b
    for _ in $(seq 1 "$ROUNDS"); do
        read -r r a b <<<"$(fixed_rate "$1" "$RATE")"
        rps+=("$r") p50+=("$a") p99+=("$b")
    done
    echo "$(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}")"
}
read -r H_FR H_P50 H_P99 <<<"$(fixed_median $HALOY_PORT)"
read -r N_FR N_P50 N_P99 <<<"$(fixed_median $NGINX_PORT)"
read -r A_FR A_P50 A_P99 <<<"$(fixed_median $HAPROXY_PORT)"

printf '\n%-10s %14s %12s %14s %10s %10s\n' proxy "sat req/s" "CPU us/req" "fixed req/s" "p50 ms" "p99 ms"
printf '%-10s %14s %12s %14s %10s %10s\n' haloyd "$H_RPS" "$H_US" "$H_FR" "$H_P50" "$H_P99"
printf '%-10s %14s %12s %14s %10s %10s\n' nginx "$N_RPS" "$N_US" "$N_FR" "$N_P50" "$N_P99"
printf '%-10s %14s %12s %14s %10s %10s\n' haproxy "$A_RPS" "$A_US" "$A_FR" "$A_P50" "$A_P99"
awk -v h="$H_RPS" -v n="$N_RPS" -v a="$A_RPS" -v hp="$H_P99" -v np="$N_P99" -v ap="$A_P99" \
    -v hc="$H_US" -v nc="$N_US" -v ac="$A_US" \
    -v h5="$H_P50" -v n5="$N_P50" -v a5="$A_P50" 'BEGIN {
    printf "\nratio req/s  haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (target >= 1)\n", h / n, h / a
    printf "ratio p50    haloyd/nginx = %.2f   haloyd/haproxy = %.2f\n", h5 / n5, h5 / a5
    printf "ratio p99    haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (target <= 1)\n", hp / np, hp / ap
    printf "ratio CPU/req haloyd/nginx = %.2f   haloyd/haproxy = %.2f   (lower is better)\n", hc / nc, hc / ac
}'
