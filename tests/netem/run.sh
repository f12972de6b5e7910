#!/usr/bin/env bash
# A publisher behind a lossy, jittery link, in network namespaces:
#
#   ns noom-pub-N (10.231.0.2) --veth, 10 % loss + 50±50 ms each way--
#       ns noom-srv-N (10.231.0.1): the noom binary and a subscriber
#
# The subscriber (an aiortc peer beside the server, on a clean path) must keep
# decoding video; its loss after the server's NACK repair is reported against
# the loss on the wire (RTP gaps the server saw on arrival). Impairment:
# `tc netem loss 10% delay 50ms 50ms` on both veth ends; where the kernel has
# no sch_netem, 10 % random loss with nftables (numgen) instead, without
# delay or jitter (said in the output). Needs root; without it, or without
# both sch_netem and nft, it says so and exits 77 (scripts/test.sh: skipped).
#
# Usage: tests/netem/run.sh     Environment: NOOM_BIN, NOOM_PYTHON (a Python
# with tests/aiortc/requirements.txt), NETEM_SECONDS (measurement, default 20),
# NETEM_LOSS_PCT (loss each way, default 10; higher to stress keyframe
# recovery), NETEM_DROP_SERVER_HELLO (1: see below), NOOM_LOG_LEVEL,
# NETEM_PEER_LOG (e.g. DEBUG: aiortc's and aioice's logs in the peers' logs),
# NOOM_ARTIFACTS_DIR (reports and the server log).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NOOM_BIN=${NOOM_BIN:-$ROOT/target/debug/noom}
PY=${NOOM_PYTHON:-$ROOT/target/py-venv/bin/python}
MEASURE=${NETEM_SECONDS:-20}
OUT=${NOOM_ARTIFACTS_DIR:-$ROOT/target/test-artifacts}/netem
LOSS_PCT=${NETEM_LOSS_PCT:-10}

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP netem: needs root (ip netns, veth, tc/nft); run as root or in CI"
    exit 77
fi
for tool in ip "$PY" "$NOOM_BIN"; do
    command -v "$tool" >/dev/null || { echo "netem: missing $tool" >&2; exit 1; }
done
mkdir -p "$OUT"
rm -f "$OUT"/*.json

ID=$$
SRV=noom-srv-$ID
PUB=noom-pub-$ID
VS=nms$ID
VP=nmp$ID
SRV_IP=10.231.0.1
PUB_IP=10.231.0.2
PORT=8080
MEDIA_PORT=40000
URL=http://$SRV_IP:$PORT
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$PUB" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT # so that cleanup runs under `timeout` too

ip netns add "$SRV"
ip netns add "$PUB"
ip link add "$VS" type veth peer name "$VP"
ip link set "$VS" netns "$SRV"
ip link set "$VP" netns "$PUB"
ip -n "$SRV" addr add $SRV_IP/24 dev "$VS"
ip -n "$PUB" addr add $PUB_IP/24 dev "$VP"
for ns in "$SRV" "$PUB"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "$VS" up
ip -n "$PUB" link set "$VP" up

# Impair both directions of the veth (publisher -> server: media; server ->
# publisher: NACKs, PLIs, receiver reports).
MODE=
if ip netns exec "$PUB" tc qdisc add dev "$VP" root netem loss ${LOSS_PCT}% delay 50ms 50ms 2>/dev/null; then
    ip netns exec "$SRV" tc qdisc add dev "$VS" root netem loss ${LOSS_PCT}% delay 50ms 50ms
    MODE="tc netem: loss ${LOSS_PCT}% delay 50ms 50ms, each way"
elif command -v nft >/dev/null; then
    for pair in "$PUB:$VP" "$SRV:$VS"; do
        ns=${pair%%:*}
        dev=${pair#*:}
        ip netns exec "$ns" nft -f - <<EOF
table inet noomloss {
    chain out {
        type filter hook postrouting priority 0; policy accept;
        oifname "$dev" numgen random mod 100 < $LOSS_PCT counter drop
        oifname "$dev" counter accept
    }
}
EOF
    done
    MODE="nftables: ${LOSS_PCT}% random loss each way; NO delay/jitter (this kernel has no sch_netem)"
else
    echo "SKIP netem: the kernel has no sch_netem and nft is not installed (apt-get install nftables)"
    exit 77
fi
# NETEM_DROP_SERVER_HELLO=1: the server's DTLS flight 4 (ServerHello ..
# ServerHelloDone) toward the publisher is lost every other time, the first
# time included, so the handshake must recover from exactly that loss (a
# server that never resends it leaves the publisher unconnected).
if [ "${NETEM_DROP_SERVER_HELLO:-0}" = 1 ]; then
    command -v nft >/dev/null || { echo "netem: NETEM_DROP_SERVER_HELLO needs nft" >&2; exit 1; }
    # UDP payload byte 0: DTLS content type 22 (handshake); byte 13: handshake
    # type 2 (ServerHello).
    ip netns exec "$SRV" nft -f - <<EOF
table inet noomhello {
    chain out {
        type filter hook postrouting priority -10; policy accept;
        oifname "$VS" meta l4proto udp @th,64,8 0x16 @th,168,8 0x02 numgen inc mod 2 == 0 counter drop
    }
}
EOF
    MODE="$MODE; every other DTLS ServerHello flight to the publisher dropped"
fi
echo "netem: link impairment: $MODE"

ip netns exec "$SRV" env NOOM_HTTP_LISTEN=$SRV_IP:$PORT NOOM_MEDIA_BIND_IPS=$SRV_IP \
    NOOM_MEDIA_PORT=$MEDIA_PORT NOOM_LOG_LEVEL="${NOOM_LOG_LEVEL:-info}" NO_COLOR=1 \
    "$NOOM_BIN" >"$OUT/server.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 200); do
    if ip netns exec "$SRV" "$PY" -c "import urllib.request,sys; urllib.request.urlopen('$URL/healthz', timeout=1)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[ $ready -eq 1 ] || { echo "netem: noom did not start"; tail -20 "$OUT/server.log"; exit 1; }

started=$(date +%s)
# The subscriber joins first, beside the server; the publisher from across
# the lossy link. The publisher runs until killed (bounded by its own limit).
ip netns exec "$SRV" "$PY" "$ROOT/tests/netem/peer.py" subscribe "$URL" lossy sub $SRV_IP \
    "$OUT/subscriber.json" "$MEASURE" >"$OUT/subscriber.log" 2>&1 &
SUB=$!
PIDS+=($SUB)
ip netns exec "$PUB" "$PY" "$ROOT/tests/netem/peer.py" publish "$URL" lossy pub $PUB_IP \
    "$OUT/publisher.json" $((MEASURE + 120)) >"$OUT/publisher.log" 2>&1 &
PIDS+=($!)
rc=0
# `wait` (unlike a foreground command) lets a TERM from `timeout` through at
# once; the subscriber bounds itself (join, first frame, measurement).
wait $SUB || rc=$?

echo "netem: run took $(($(date +%s) - started)) s; reports in $OUT"
echo "netem: wire counters:"
if [[ $MODE == nft* ]]; then
    for ns in "$PUB" "$SRV"; do ip netns exec "$ns" nft list chain inet noomloss out | grep counter; done
else
    for pair in "$PUB:$VP" "$SRV:$VS"; do ip netns exec "${pair%%:*}" tc -s qdisc show dev "${pair#*:}"; done
fi
if [ "${NETEM_DROP_SERVER_HELLO:-0}" = 1 ]; then
    ip netns exec "$SRV" nft list chain inet noomhello out | grep counter
fi
"$PY" - "$OUT/subscriber.json" "$OUT/publisher.json" <<'EOF' || rc=1
import json, sys
r = json.load(open(sys.argv[1]))
if "error" in r:
    print("netem: FAIL:", r["error"], json.dumps(r.get("summary"))[:2000])
    sys.exit(1)
try:
    pub = json.load(open(sys.argv[2]))["outbound"]
    sent = {s.get("kind"): s.get("packetsSent") for s in pub.values()}
except (OSError, ValueError, KeyError):
    sent = "?"
wire = r["wire_loss_at_server"]
sub = r["subscriber"]
print(f"netem: first frame after {r['first_frame_after_s']} s; decoded video frames per 2 s: {r['video_frames_per_2s']}")
print(f"netem: on the wire, publisher -> server: {wire:.1%} of RTP missing on arrival (server's count, before repair)")
for kind, s in sorted(sub.items()):
    print(f"netem: at the subscriber, {kind}: {s['lost']} of {s['received'] + s['lost']} missing ({s['loss']:.1%}) after repair")
print(f"netem: server during the measurement: {json.dumps(r['server'])}; publisher sent in all: {sent}")
video = sub.get("video", {"loss": 1.0})
ok = True
if min(r["video_frames_per_2s"] or [0]) == 0:
    print("netem: FAIL: video stopped arriving at the subscriber")
    ok = False
if wire < 0.03:
    print("netem: FAIL: the link lost too little for the test to mean anything")
    ok = False
if video["loss"] >= wire / 2:
    print("netem: FAIL: the subscriber misses more than half the wire loss: repair is not working")
    ok = False
print("netem:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
exit $rc
