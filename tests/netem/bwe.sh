#!/usr/bin/env bash
# The server's bandwidth estimate toward a subscriber whose link is limited,
# in network namespaces:
#
#   ns noom-bsrv-N (10.232.0.1): the noom binary and a publisher (1.5 Mbit/s
#       of synthetic video, webrtc-rs) on the server's own address
#   ns noom-bsub-N (10.232.0.2) --veth--: a receive-only webrtc-rs subscriber
#       (its default interceptors send transport-wide congestion feedback)
#
# After a baseline, the server's side of the veth (its egress toward the
# subscriber) is limited with `tc tbf rate BWE_LIMIT_KBIT` (500 by default),
# then the limit is lifted. The estimate (admin overview, every 100 ms) must
# be within 20 % of the limit within 5 s of the cut, and climb back once it
# is lifted. The server runs without bandwidth allocation here, so the
# publisher's video keeps flowing into the limit (the link is overrun) and
# the estimator alone is measured: with allocation on (the default) the
# server pauses that single 1.5 Mbit/s encoding instead, and what the
# estimate can prove then depends on its probes, which is shaped_link's
# subject (tests/browser/shaped_link.test.mjs).
#
# Usage: tests/netem/bwe.sh   Environment: NOOM_BIN, NOOM_PYTHON, BOT_BIN
# (client/examples/bot built), BWE_LIMIT_KBIT, NOOM_ARTIFACTS_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NOOM_BIN=${NOOM_BIN:-$ROOT/target/debug/noom}
BOT_BIN=${BOT_BIN:-$ROOT/target/debug/examples/bot}
PY=${NOOM_PYTHON:-python3}
OUT=${NOOM_ARTIFACTS_DIR:-$ROOT/target/test-artifacts}/netem-bwe
LIMIT_KBIT=${BWE_LIMIT_KBIT:-500}

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP bwe: needs root (ip netns, veth, tc)"
    exit 77
fi
for tool in ip tc "$PY" "$NOOM_BIN" "$BOT_BIN"; do
    command -v "$tool" >/dev/null || { echo "bwe: missing $tool" >&2; exit 1; }
done
mkdir -p "$OUT"

ID=$$
SRV=noom-bsrv-$ID
SUB=noom-bsub-$ID
VS=bws$ID
VU=bwu$ID
SRV_IP=10.232.0.1
SUB_IP=10.232.0.2
PORT=8080
URL=http://$SRV_IP:$PORT
TOKEN=bwe-token
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$SUB" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT

ip netns add "$SRV"
ip netns add "$SUB"
ip link add "$VS" type veth peer name "$VU"
ip link set "$VS" netns "$SRV"
ip link set "$VU" netns "$SUB"
ip -n "$SRV" addr add $SRV_IP/24 dev "$VS"
ip -n "$SUB" addr add $SUB_IP/24 dev "$VU"
for ns in "$SRV" "$SUB"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "$VS" up
ip -n "$SUB" link set "$VU" up
# 10 ms each way, so the path has a round trip like a real one. Only where
# the kernel has sch_netem; the limit itself is tbf (always there).
DELAY="none (no sch_netem)"
if ip netns exec "$SUB" tc qdisc add dev "$VU" root netem delay 10ms 2>/dev/null; then
    DELAY="10 ms each way"
fi

ip netns exec "$SRV" env NOOM_HTTP_LISTEN=$SRV_IP:$PORT NOOM_MEDIA_BIND_IPS=$SRV_IP \
    NOOM_MEDIA_PORT=40000 NOOM_MEDIA_BANDWIDTH_ALLOCATION=false NOOM_ADMIN_TOKEN=$TOKEN NOOM_LOG_LEVEL="${NOOM_LOG_LEVEL:-info}" NO_COLOR=1 \
    "$NOOM_BIN" >"$OUT/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
    ip netns exec "$SRV" "$PY" -c "import urllib.request; urllib.request.urlopen('$URL/healthz', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

ip netns exec "$SUB" env BOT_BIND_IP=$SUB_IP BOT_RECEIVE_ONLY=1 \
    "$BOT_BIN" "ws://$SRV_IP:$PORT/ws" bwe sub >"$OUT/subscriber.log" 2>&1 &
PIDS+=($!)
ip netns exec "$SRV" env BOT_BIND_IP=$SRV_IP BOT_VIDEO_BPS=1500000 \
    "$BOT_BIN" "ws://$SRV_IP:$PORT/ws" bwe pub >"$OUT/publisher.log" 2>&1 &
PIDS+=($!)

echo "bwe: subscriber link: tbf rate ${LIMIT_KBIT}kbit on the server's egress; delay $DELAY"
rc=0
ip netns exec "$SRV" "$PY" "$ROOT/tests/netem/bwe_measure.py" "$URL" "$TOKEN" bwe sub \
    $((LIMIT_KBIT * 1000)) "$OUT/report.json" \
    ip netns exec "$SRV" tc qdisc add dev "$VS" root tbf rate ${LIMIT_KBIT}kbit burst 16kb latency 100ms \
    -- ip netns exec "$SRV" tc qdisc del dev "$VS" root || rc=$?
echo "bwe: report in $OUT/report.json"
exit $rc
