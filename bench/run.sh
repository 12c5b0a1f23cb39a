#!/bin/sh
# bench/run.sh BUILD_DIR - HTTP throughput of `koumpa serve` with wrk.
#
# Starts the server on a temporary data dir (cheap Argon2 so sign-up is quick),
# signs up a user for a bearer token, then runs wrk against
#   GET /healthz  (routing + a database ping)
#   GET /v1/me    (token verification + user and balance reads)
# and a fixed 200 from nginx (with a buffered access log, as a production
# nginx would log) for scale, started beside the server so that both are
# measured in the same run (nginx just before and just after GET /v1/me, the
# ratio taken to the mean of the two). Prints a table of requests/s and p99 latency, the
# 1-minute load average, and GET /v1/me beside its goals: at least half of
# nginx's requests/s, p99 under 5 ms. The server logs one line per request at
# the default level (info), to a file, as it would in production.
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_CONNECTIONS (64),
# BENCH_THREADS (2, wrk threads), KOUMPA_THREADS (server workers, default: cores),
# KOUMPA_LOG_LEVEL (info).
# wrk runs on the same machine: on a small box it takes a share of the CPU
# the server would otherwise have, so compare rows, not absolute numbers.
set -eu
BUILD_DIR=${1:-build}
cd "$(dirname "$0")/.."
BIN="$BUILD_DIR/koumpa"
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_THREADS:-2}

for tool in wrk curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is required" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "bench: $BIN not found; build it first (make $BIN)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/koumpa-bench-XXXXXX)
SERVER_PID=""
NGINX_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A free TCP port: bind port 0 and read what the kernel chose.
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' 2>/dev/null ||
        python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

PORT=$(free_port)
APPS_PORT=$(free_port)
URL="http://127.0.0.1:$PORT"

env KOUMPA_DATA_DIR="$WORK/data" KOUMPA_ADDR="127.0.0.1:$PORT" KOUMPA_APPS_ADDR="127.0.0.1:$APPS_PORT" \
    KOUMPA_PWHASH_MEMLIMIT_KIB=8192 KOUMPA_PWHASH_OPSLIMIT=1 KOUMPA_LOG_LEVEL="${KOUMPA_LOG_LEVEL:-info}" \
    "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

i=0
until curl -fs "$URL/healthz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "bench: the server did not come up; its log:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.1
done

SIGNUP=$(curl -fs -X POST -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"bench password 123"}' "$URL/v1/auth/signup")
TOKEN=$(printf '%s' "$SIGNUP" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || { echo "bench: sign-up failed: $SIGNUP" >&2; exit 1; }
curl -fs -H "Authorization: Bearer $TOKEN" "$URL/v1/me" >/dev/null ||
    { echo "bench: GET /v1/me failed with the new token" >&2; exit 1; }

# nginx, a fixed 200 with a buffered access log, started beside the server so
# that both run in the same conditions (each idles while the other is measured)
start_nginx() {
    NPORT=$(free_port)
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    log_format bench '\$remote_addr [\$time_iso8601] "\$request" \$status \$body_bytes_sent \$request_time';
    access_log $WORK/nginx/access.log bench buffer=64k flush=1s;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server { listen 127.0.0.1:$NPORT; location / { return 200 '{"status":"ok"}'; } }
}
EOF
    nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
    NGINX_PID=$!
    sleep 0.5
}
NGINX_URL=""
if command -v nginx >/dev/null 2>&1; then
    start_nginx
    NGINX_URL="http://127.0.0.1:$NPORT/"
else
    echo "bench: nginx not found (scripts/install-deps.sh --test installs it): no reference row" >&2
fi

RESULTS="$WORK/results"
: >"$RESULTS"

# run_wrk LABEL URL [wrk args...]: appends "label|req/s|p99|non-2xx" to RESULTS
run_wrk() {
    label=$1
    target=$2
    shift 2
    out="$WORK/wrk.out"
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$target" >"$out" 2>&1 ||
        { echo "bench: wrk failed for $label:" >&2; cat "$out" >&2; exit 1; }
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$out")
    p99=$(sed -n 's/^ *99% *\([0-9.]*[a-z]*\).*/\1/p' "$out")
    bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$out")
    printf '%s|%s|%s|%s\n' "$label" "${rps:-?}" "${p99:-?}" "${bad:-0}" >>"$RESULTS"
}

LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
echo "koumpa bench: wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores, server log level ${KOUMPA_LOG_LEVEL:-info} (to a file), load average $LOAD_START"
run_wrk "koumpa GET /healthz" "$URL/healthz"
# nginx just before and just after GET /v1/me: the ratio is to their mean, so
# that a change of load from the other processes weighs on both sides alike
[ -n "$NGINX_URL" ] && run_wrk "nginx fixed 200 (before)" "$NGINX_URL"
run_wrk "koumpa GET /v1/me" "$URL/v1/me" -H "Authorization: Bearer $TOKEN"
[ -n "$NGINX_URL" ] && run_wrk "nginx fixed 200 (after)" "$NGINX_URL"

kill "$SERVER_PID"
wait "$SERVER_PID" || { echo "bench: the server exited with an error; its log tail:" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }
SERVER_PID=""
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)
LOG_LINES=$(wc -l <"$WORK/server.log")

printf '\n%-32s %12s %10s %9s\n' "target" "requests/s" "p99" "non-2xx"
printf '%-32s %12s %10s %9s\n' "--------------------------------" "------------" "----------" "---------"
while IFS='|' read -r label rps p99 bad; do
    printf '%-32s %12s %10s %9s\n' "$label" "$rps" "$p99" "$bad"
done <"$RESULTS"

# GET /v1/me beside its goals (wrk prints p99 as 456.78us, 1.23ms or 1.02s)
field() { grep "^$1|" "$RESULTS" | cut -d'|' -f"$2"; }
ME_RPS=$(field "koumpa GET /v1/me" 2)
ME_P99=$(field "koumpa GET /v1/me" 3)
ME_P99_MS=$(printf '%s' "$ME_P99" | awk '/us$/ {print $0 / 1000; next} /ms$/ {print $0 + 0; next} /s$/ {print $0 * 1000}')
echo
echo "load average (1 min): $LOAD_START at the start, $LOAD_END at the end; request log: $LOG_LINES lines"
if [ -n "$NGINX_URL" ]; then
    NGINX_RPS=$(awk -v a="$(field "nginx fixed 200 (before)" 2)" -v b="$(field "nginx fixed 200 (after)" 2)" \
        'BEGIN { printf "%.0f", (a + b) / 2 }')
    # three decimals, and the goal checked on the ratio itself (0.496 would print as 0.50 with two)
    RATIO=$(awk -v a="$ME_RPS" -v b="$NGINX_RPS" 'BEGIN { printf "%.3f", a / b }')
    MET=$(awk -v a="$ME_RPS" -v b="$NGINX_RPS" 'BEGIN { print (a / b >= 0.5) ? "met" : "not met" }')
    echo "GET /v1/me / nginx fixed 200 (mean of before and after, $NGINX_RPS requests/s): ${RATIO}x   (goal >= 0.500x: $MET)"
fi
MET=$(awk -v p="$ME_P99_MS" 'BEGIN { print (p != "" && p < 5) ? "met" : "not met" }')
echo "GET /v1/me p99: $ME_P99   (goal < 5 ms: $MET)"
