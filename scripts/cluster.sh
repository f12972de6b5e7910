#!/usr/bin/env bash
# A local Noom cluster on one machine: one redis-server and N noom nodes
# (default 3) sharing it, for trying the cluster out and for benchmarks.
# See docs/cluster.md. Ctrl-C stops everything it started.
#
#   scripts/cluster.sh                    # 3 nodes: http://127.0.0.1:8081 .. 8083
#   scripts/cluster.sh --nodes 2 --http-port 9001
#   NOOM_ADMIN_TOKEN=secret scripts/cluster.sh   # /admin and /api/overview on
#
# Options:
#   --nodes N          number of noom nodes (1-20, default 3)
#   --http-port P      node i listens on 127.0.0.1:P+i-1 (default 8081)
#   --media-port P     node i's media shards use UDP ports from P+100*(i-1)
#                      (default 50000; each node needs its own range)
#   --config FILE      a noom config file for every node (optional)
#   --logs DIR         where the node and Redis logs go (default: a fresh
#                      directory under /tmp, kept after exit)
#
# Environment: NOOM_BIN (default target/release/noom, built with cargo when
# missing); REDIS_SERVER (default /usr/bin/redis-server, Debian's
# `redis-server` package); every other NOOM_* variable (NOOM_ADMIN_TOKEN,
# NOOM_MEDIA_SHARDS, NOOM_MEDIA_BIND_IPS, NOOM_LOG_LEVEL, ...) reaches every
# node unchanged. Redis runs without persistence on a free loopback port: a
# restart of this script starts an empty cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODES=3
HTTP_PORT=8081
MEDIA_PORT=50000
CONFIG=""
LOGS=""
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
        --http-port) HTTP_PORT=${2:?--http-port needs a port}; shift 2 ;;
        --media-port) MEDIA_PORT=${2:?--media-port needs a port}; shift 2 ;;
        --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
        --logs) LOGS=${2:?--logs needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number "$NODES" && [ "$NODES" -ge 1 ] && [ "$NODES" -le 20 ] || die "--nodes must be 1 to 20"
is_number "$HTTP_PORT" && [ $((HTTP_PORT + NODES - 1)) -le 65535 ] || die "bad --http-port $HTTP_PORT"
is_number "$MEDIA_PORT" && [ $((MEDIA_PORT + 100 * NODES)) -le 65535 ] || die "bad --media-port $MEDIA_PORT"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
[ -x "$REDIS_SERVER" ] || die "$REDIS_SERVER not found (apt-get install redis-server, or set REDIS_SERVER)"

# A TCP port on 127.0.0.1 that nothing listens on.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port
    for port in $(seq 6390 6490); do
        port_in_use "$port" || { echo "$port"; return 0; }
    done
    return 1
}

NOOM_BIN=${NOOM_BIN:-$ROOT/target/release/noom}
if [ ! -x "$NOOM_BIN" ]; then
    [ "$NOOM_BIN" = "$ROOT/target/release/noom" ] || die "NOOM_BIN=$NOOM_BIN is not an executable"
    echo "building $NOOM_BIN (cargo build --release -p noom-signaling --bin noom) ..."
    (cd "$ROOT" && cargo build --release -p noom-signaling --bin noom) || die "build failed"
fi

for i in $(seq 1 "$NODES"); do
    port=$((HTTP_PORT + i - 1))
    port_in_use "$port" && die "port $port is taken (choose another --http-port)"
done

LOGS=${LOGS:-$(mktemp -d /tmp/noom-cluster.XXXXXX)}
mkdir -p "$LOGS"
PIDS=()
REDIS_PID=""

stop_all() {
    trap - INT TERM EXIT
    echo
    echo "stopping ${#PIDS[@]} node(s) and redis ..."
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Bounded wait, then SIGKILL what is left (only our own children).
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ -n "$REDIS_PID" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    echo "stopped; logs kept in $LOGS"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

REDIS_PORT=$(free_port) || die "no free port for redis in 6390-6490"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode no --dir "$LOGS" >"$LOGS/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited; see $LOGS/redis.log"
    sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"

config_args=()
[ -n "$CONFIG" ] && config_args=(--config "$CONFIG")
for i in $(seq 1 "$NODES"); do
    NOOM_CLUSTER_REDIS_URL=$REDIS_URL \
    NOOM_NODE_ID="node-$i" \
    NOOM_HTTP_LISTEN="127.0.0.1:$((HTTP_PORT + i - 1))" \
    NOOM_MEDIA_PORT="$((MEDIA_PORT + 100 * (i - 1)))" \
        "$NOOM_BIN" "${config_args[@]}" >"$LOGS/node-$i.log" 2>&1 &
    PIDS+=($!)
done

# Ready = /readyz answers 200 (the node reached Redis and registered).
for i in $(seq 1 "$NODES"); do
    url="http://127.0.0.1:$((HTTP_PORT + i - 1))"
    for attempt in $(seq 1 600); do
        curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && break
        kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null ||
            die "node-$i exited at start; see $LOGS/node-$i.log: $(tail -n 3 "$LOGS/node-$i.log")"
        [ "$attempt" = 600 ] && die "node-$i not ready within 60 s; see $LOGS/node-$i.log"
        sleep 0.1
    done
done

echo "redis   $REDIS_URL  (redis-cli -p $REDIS_PORT)"
for i in $(seq 1 "$NODES"); do
    echo "node-$i  http://127.0.0.1:$((HTTP_PORT + i - 1))  ws://127.0.0.1:$((HTTP_PORT + i - 1))/ws  media udp $((MEDIA_PORT + 100 * (i - 1)))+  pid ${PIDS[$((i - 1))]}"
done
echo "logs    $LOGS"
echo "cluster ready; Ctrl-C stops it"

# Stay until Ctrl-C. A node that dies (say, killed to watch the others take
# over its rooms) is reported once; the rest keep running.
declare -A REPORTED=()
while true; do
    for i in $(seq 1 "$NODES"); do
        pid=${PIDS[$((i - 1))]}
        if [ -z "${REPORTED[$i]:-}" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "node-$i (pid $pid) exited; see $LOGS/node-$i.log" >&2
            REPORTED[$i]=1
        fi
    done
    [ "${#REPORTED[@]}" = "$NODES" ] && die "every node has exited"
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited; see $LOGS/redis.log"
    sleep 1
done
