"""One side of the netem test (tests/netem/run.sh), run inside a network
namespace: an aiortc participant from tests/aiortc/noom_peer.py that gathers
only the given address.

    peer.py publish   URL ROOM NAME BIND_IP STATS_FILE MAX_SECONDS
    peer.py subscribe URL ROOM NAME BIND_IP REPORT_FILE MEASURE_SECONDS

The publisher sends until killed (or MAX_SECONDS), rewriting STATS_FILE
(its outbound RTP stats) every second. The subscriber waits (bounded) for
the first decoded video frame, then measures for MEASURE_SECONDS: decoded
frames per 2-s window, its inbound RTP stats (packets received / lost after
the server's repair), and the server's /metrics counters; it writes a JSON
report and exits 0, or 1 when video stopped arriving in any window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import sys
import time
import urllib.request

import aioice.ice

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "aiortc"))
from noom_peer import NoomPeer  # noqa: E402

FIRST_FRAME_DEADLINE = 60.0


def gather_only(ip: str) -> None:
    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [ip] if use_ipv4 else []

    aioice.ice.get_host_addresses = get_host_addresses


async def rtp_stats(peer: NoomPeer, kind: str) -> dict:
    report = await peer.pc.getStats()
    out = {}
    for s in report.values():
        if s.type == kind:
            out[s.id] = {k: v for k, v in vars(s).items() if isinstance(v, (int, float, str))}
    return out


def metrics(url: str) -> dict:
    wanted = (
        "noom_rtp_packets_received_total",
        "noom_rtp_packets_lost_total",
        "noom_rtp_packets_forwarded_total",
        "noom_nacks_received_total",
        "noom_rtp_retransmissions_total",
        "noom_keyframe_requests_sent_total",
    )
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def publish(url: str, room: str, name: str, stats_file: str, max_seconds: float) -> int:
    peer = NoomPeer(url, room, name, publish=True)
    await peer.join(timeout=30)
    end = time.monotonic() + max_seconds
    try:
        while time.monotonic() < end:
            await asyncio.sleep(1)
            stats = await rtp_stats(peer, "outbound-rtp")
            tmp = pathlib.Path(stats_file + ".tmp")
            tmp.write_text(json.dumps({"outbound": stats, "summary": peer.summary()}))
            tmp.replace(stats_file)
    finally:
        await peer.close()
    return 0


async def subscribe(url: str, room: str, name: str, report_file: str, measure: float) -> int:
    peer = NoomPeer(url, room, name, publish=False)
    await peer.join(timeout=30)
    start = time.monotonic()
    while sum(peer.video_frames.values()) == 0:
        if time.monotonic() - start > FIRST_FRAME_DEADLINE:
            pathlib.Path(report_file).write_text(json.dumps({"error": "no video frame", "summary": peer.summary()}))
            await peer.close()
            return 1
        await asyncio.sleep(0.1)
    first_frame_after = time.monotonic() - start
    m0 = metrics(url)
    in0 = await rtp_stats(peer, "inbound-rtp")
    windows = []
    last = sum(peer.video_frames.values())
    for _ in range(int(measure / 2)):
        await asyncio.sleep(2)
        now = sum(peer.video_frames.values())
        windows.append(now - last)
        last = now
    m1 = metrics(url)
    in1 = await rtp_stats(peer, "inbound-rtp")
    inbound = {}
    for sid, s in in1.items():
        s0 = in0.get(sid, {})
        received = s.get("packetsReceived", 0) - s0.get("packetsReceived", 0)
        lost = s.get("packetsLost", 0) - s0.get("packetsLost", 0)
        inbound[s.get("kind", sid)] = {
            "received": received,
            "lost": lost,
            "loss": lost / (received + lost) if received + lost else 0.0,
            "jitter": s.get("jitter"),
        }
    server = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
    rx = server.get("noom_rtp_packets_received_total", 0.0)
    lost_on_arrival = server.get("noom_rtp_packets_lost_total", 0.0)
    report = {
        "first_frame_after_s": round(first_frame_after, 2),
        "video_frames_per_2s": windows,
        "subscriber": inbound,
        "server": server,
        "wire_loss_at_server": lost_on_arrival / (rx + lost_on_arrival) if rx + lost_on_arrival else 0.0,
        "summary": peer.summary(),
    }
    pathlib.Path(report_file).write_text(json.dumps(report, indent=1))
    await peer.close()
    return 0 if windows and min(windows) > 0 else 1


def main() -> int:
    role, url, room, name, ip, path, seconds = sys.argv[1:8]
    # NETEM_PEER_LOG=DEBUG shows aiortc's and aioice's side of ICE and DTLS
    # (which flights were sent, retransmitted, received) in the peer's log.
    if os.environ.get("NETEM_PEER_LOG"):
        logging.basicConfig(level=os.environ["NETEM_PEER_LOG"], format="%(asctime)s %(name)s %(message)s")
    gather_only(ip)
    if role == "publish":
        return asyncio.run(publish(url, room, name, path, float(seconds)))
    return asyncio.run(subscribe(url, room, name, path, float(seconds)))


if __name__ == "__main__":
    sys.exit(main())
