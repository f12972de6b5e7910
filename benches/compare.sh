#!/usr/bin/env bash
# Noom vs Janus 1.1.2 VideoRoom vs the UDP+SRTP limit: the same scenarios,
# the same load generator (noom-load), one run, one table of ratios.
#
#   sudo benches/compare.sh            # every scenario (about 20 minutes)
#   benches/compare.sh --smoke         # fan-out 2 only, 4 s windows
#
# What it does:
#   1. builds target/release/noom and target/release/noom-load;
#   2. installs Janus (apt-get install -y janus) if `janus` is missing;
#   3. waits (at most NOOM_BENCH_MAX_WAIT s, default 600) until the 1-minute
#      load average is below NOOM_BENCH_MAX_LOAD (default 0.7), and records
#      the load at the start of every run;
#   4. creates two network namespaces joined by a veth pair: Janus' (veth-j,
#      10.231.0.1) and the clients' (veth-c, 10.231.0.2, and its own
#      loopback). Janus cannot gather candidates on loopback alone, and with
#      both veth ends in one namespace its ICE never completes (the kernel
#      routes the pair's traffic over lo). No route leads anywhere else; both
#      namespaces are deleted at exit;
#   5. for every scenario runs, from the clients' namespace, Noom and the
#      limit (both on that namespace's 127.0.0.1) and a fresh Janus in its
#      namespace (config generated in a temp dir: only the VideoRoom plugin
#      and the HTTP transport);
#   6. prints the tables and writes results.jsonl, tables.md and chart.svg
#      into OUT (default target/bench-compare/<UTC time>).
#
# Environment: OUT, DURATION (s, default 15), WARMUP (s, default 3),
# NOOM_BENCH_MAX_LOAD, NOOM_BENCH_MAX_WAIT, SCENARIOS (space-separated
# names from the list below), NOOM_BENCH_NO_BUILD=1. Needs root (netns).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
MAX_LOAD=${NOOM_BENCH_MAX_LOAD:-0.7}
MAX_WAIT=${NOOM_BENCH_MAX_WAIT:-600}
OUT=${OUT:-$ROOT/target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}
NS_J=noombench-j-$$
NS_C=noombench-c-$$
JANUS_IP=10.231.0.1
CLIENT_IP=10.231.0.2
JANUS_PORT=8088
LOAD_BIN=$ROOT/target/release/noom-load
NOOM_BIN=$ROOT/target/release/noom

# name rooms publishers subscribers noom-shards...
ALL_SCENARIOS=(
    "fanout-2 1 1 2 1"
    "fanout-5 1 1 5 1"
    "fanout-10 1 1 10 1"
    "fanout-25 1 1 25 1"
    "fanout-50 1 1 50 1"
    "rooms10x4 10 4 0 1 2"
    # About half of one Noom shard's capacity (~100k forwarded pkt/s per
    # CPU-second at rooms10x4): the latency-at-half-load figure.
    "rooms20x4 20 4 0 1 2"
)
if [ $SMOKE -eq 1 ]; then
    ALL_SCENARIOS=("fanout-2 1 1 2 1")
    DURATION=4
    MAX_WAIT=0
fi

log() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "compare.sh needs root (network namespaces, apt-get)" >&2
    exit 1
fi

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
JANUS_DIR=$(mktemp -d /tmp/noom-janus.XXXXXX)
JANUS_PID=

cleanup() {
    [ -n "$JANUS_PID" ] && kill "$JANUS_PID" 2>/dev/null && wait "$JANUS_PID" 2>/dev/null
    ip netns del "$NS_J" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    rm -rf "$JANUS_DIR"
}
trap cleanup EXIT

# ------------------------------------------------------------------ build

if [ "${NOOM_BENCH_NO_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    cargo build --release -q -p noom-signaling --bin noom -p noom-benches --bin noom-load
fi
if ! command -v janus >/dev/null; then
    log "installing Janus (Debian package janus)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q janus
fi
JANUS_VERSION=$({ janus --version 2>/dev/null || true; } | sed -n 's/^Janus version: .*(\(.*\))/\1/p')

# ------------------------------------------------------------------ janus config

VIDEOROOM_SO=$(find /usr/lib /usr/local/lib /opt/janus -name libjanus_videoroom.so -print -quit 2>/dev/null || true)
[ -n "$VIDEOROOM_SO" ] || { echo "libjanus_videoroom.so not found" >&2; exit 1; }
JANUS_LIB=$(dirname "$VIDEOROOM_SO")/..
mkdir -p "$JANUS_DIR"/{plugins,transports,events,loggers}
ln -s "$JANUS_LIB/plugins/libjanus_videoroom.so" "$JANUS_DIR/plugins/"
ln -s "$JANUS_LIB/transports/libjanus_http.so" "$JANUS_DIR/transports/"
cat >"$JANUS_DIR/janus.jcfg" <<EOF
general: {
    configs_folder = "$JANUS_DIR"
    plugins_folder = "$JANUS_DIR/plugins"
    transports_folder = "$JANUS_DIR/transports"
    events_folder = "$JANUS_DIR/events"
    loggers_folder = "$JANUS_DIR/loggers"
    debug_level = 3
    admin_secret = "noombench"
    session_timeout = 120
    # The namespace has no default route, so Janus cannot detect its
    # address by itself.
    interface = "$JANUS_IP"
}
certificates: {
}
media: {
    rtp_port_range = "20000-40000"
}
nat: {
    nice_debug = false
    ice_enforce_list = "veth-j"
}
plugins: {
}
transports: {
}
loggers: {
}
events: {
}
EOF
cat >"$JANUS_DIR/janus.transport.http.jcfg" <<EOF
general: {
    json = "plain"
    base_path = "/janus"
    http = true
    port = $JANUS_PORT
    ip = "$JANUS_IP"
    https = false
}
admin: {
    admin_http = false
}
cors: {
}
EOF
cat >"$JANUS_DIR/janus.plugin.videoroom.jcfg" <<EOF
general: {
    string_ids = false
}
EOF

# ------------------------------------------------------------------ namespace

log "network namespaces $NS_J (veth-j $JANUS_IP) <-> $NS_C (veth-c $CLIENT_IP, lo)"
ip netns add "$NS_J"
ip netns add "$NS_C"
ip -n "$NS_J" link set lo up
ip -n "$NS_C" link set lo up
ip -n "$NS_J" link add veth-j type veth peer name veth-c netns "$NS_C"
ip -n "$NS_J" addr add "$JANUS_IP/24" dev veth-j
ip -n "$NS_C" addr add "$CLIENT_IP/24" dev veth-c
ip -n "$NS_J" link set veth-j up
ip -n "$NS_C" link set veth-c up

in_janus_ns() { ip netns exec "$NS_J" "$@"; }
in_ns() { ip netns exec "$NS_C" "$@"; }

start_janus() {
    # Not through a function: `ip netns exec` execs janus, so $! is Janus.
    ip netns exec "$NS_J" janus -C "$JANUS_DIR/janus.jcfg" -F "$JANUS_DIR" -o -d 3 \
        >>"$OUT/janus.log" 2>&1 &
    JANUS_PID=$!
    local i
    for i in $(seq 1 100); do
        if in_ns bash -c "exec 3<>/dev/tcp/$JANUS_IP/$JANUS_PORT" 2>/dev/null; then
            sleep 0.5
            if [ "$(cat "/proc/$JANUS_PID/comm" 2>/dev/null)" != janus ]; then
                echo "pid $JANUS_PID is not Janus" >&2
                return 1
            fi
            return 0
        fi
        sleep 0.1
    done
    echo "Janus did not open $JANUS_IP:$JANUS_PORT (see $OUT/janus.log)" >&2
    return 1
}

stop_janus() {
    if [ -n "$JANUS_PID" ]; then
        kill "$JANUS_PID" 2>/dev/null || true
        wait "$JANUS_PID" 2>/dev/null || true
        JANUS_PID=
    fi
}

# ------------------------------------------------------------------ load

load1() { cut -d' ' -f1 /proc/loadavg; }

wait_for_quiet() {
    local waited=0
    while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; do
        if [ "$waited" -ge "$MAX_WAIT" ]; then
            log "load average still $(load1) after ${MAX_WAIT} s: measuring anyway (recorded per run)"
            return 0
        fi
        sleep 10
        waited=$((waited + 10))
    done
    [ "$waited" -gt 0 ] && log "load average $(load1) after waiting ${waited} s"
    return 0
}

# ------------------------------------------------------------------ runs

selected() {
    [ -z "${SCENARIOS:-}" ] && return 0
    local s
    for s in $SCENARIOS; do [ "$s" = "$1" ] && return 0; done
    return 1
}

FAILED=0
run_load() {
    if ! in_ns "$LOAD_BIN" run --duration "$DURATION" --warmup "$WARMUP" \
        --json-out "$RESULTS" "$@"; then
        log "FAILED: noom-load run $*"
        FAILED=$((FAILED + 1))
    fi
}

log "machine: $(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); Janus $JANUS_VERSION; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
log "results: $RESULTS"
for line in "${ALL_SCENARIOS[@]}"; do
    read -r name rooms pubs subs shards <<<"$line"
    selected "$name" || continue
    shape=(--name "$name" --rooms "$rooms" --publishers "$pubs" --subscribers "$subs")
    wait_for_quiet
    for s in $shards; do
        run_load --target noom --noom-bin "$NOOM_BIN" --shards "$s" "${shape[@]}"
    done
    wait_for_quiet
    run_load --target limit "${shape[@]}"
    wait_for_quiet
    start_janus
    run_load --target janus --janus-api "$JANUS_IP:$JANUS_PORT" --janus-pid "$JANUS_PID" \
        --bind-ip "$CLIENT_IP" "${shape[@]}"
    stop_janus
done

"$LOAD_BIN" report "$RESULTS" --svg "$OUT/chart.svg" --md "$OUT/tables.md"
log "written: $OUT/{results.jsonl,tables.md,chart.svg}"
[ $FAILED -eq 0 ] || { log "$FAILED runs failed"; exit 1; }
