"""aiortc peers join one room through the signaling contract and each must
decode the video (and audio) of every other peer, mapped to the publisher by
stream id == participant id.

Run: target/py-venv/bin/python -m pytest tests/aiortc -v
(needs target/debug/noom or NOOM_BIN; loopback only is enough)
"""

from __future__ import annotations

import asyncio
import json
import uuid

from noom_peer import NoomPeer

MIN_FRAMES = 10
DEADLINE = 60.0  # seconds; generous for a loaded 2-core CI machine


def room_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def describe(peers, server) -> str:
    return "\n".join([json.dumps([p.summary() for p in peers], indent=2), server.log_summary(), server.log_tail(30)])


async def wait_until(pred, what: str, peers, server, timeout: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{describe(peers, server)}")
        await asyncio.sleep(0.2)


def decoded_from_all(peers, base=None, more: int = MIN_FRAMES) -> bool:
    """Every peer knows every other peer by id and name and has decoded at
    least `more` video and audio frames of it (beyond `base`, when given)."""
    for p in peers:
        for q in peers:
            if q is p:
                continue
            if p.participants.get(q.you) != q.name:
                return False
            b_video = base[p.name]["video"].get(q.you, 0) if base else 0
            b_audio = base[p.name]["audio"].get(q.you, 0) if base else 0
            if p.video_frames[q.you] < b_video + more or p.audio_frames[q.you] < b_audio + more:
                return False
    return True


def snapshot(peers) -> dict:
    return {p.name: {"video": dict(p.video_frames), "audio": dict(p.audio_frames)} for p in peers}


def assert_clean(peers, server) -> None:
    for p in peers:
        assert not p.errors, f"{p.name} saw errors: {p.errors}\n{describe(peers, server)}"
        ids = {q.you for q in peers if q is not p}
        stray = set(p.video_frames) - ids - set(p.left)
        assert not stray, f"{p.name} decoded video under unknown stream ids {stray}"
        assert p.you not in p.video_frames, f"{p.name} received its own video"


async def run_room(server, names, check) -> None:
    room = room_name("aiortc")
    peers = [NoomPeer(server.url, room, n) for n in names]
    try:
        for p in peers:
            joined = await p.join()
            assert joined["room"] == room
            assert p.you
        await check(peers, room)
    finally:
        for p in peers:
            await p.close()


def test_two_peers_on_two_nodes_decode_each_other(cluster):
    """An independent WebRTC stack through two nodes of a cluster: the room
    lives on one, the other peer's WebSocket is relayed to it and its media
    goes straight to the room's node."""

    async def run() -> None:
        room = room_name("aiortc-cluster")
        peers = [NoomPeer(node.url, room, name) for node, name in zip(cluster, ["alice", "bob"])]
        try:
            for p in peers:
                joined = await p.join()
                assert joined["room"] == room
            await wait_until(lambda: decoded_from_all(peers), f">= {MIN_FRAMES} decoded frames across nodes", peers, cluster[0])
            assert_clean(peers, cluster[0])
        finally:
            for p in peers:
                await p.close()

    asyncio.run(run())


def test_two_peers_decode_each_other(server):
    async def check(peers, room):
        await wait_until(lambda: decoded_from_all(peers), f">= {MIN_FRAMES} decoded frames from the other peer", peers, server)
        assert_clean(peers, server)

    asyncio.run(run_room(server, ["alice", "bob"], check))


def test_three_peers_decode_each_other(server):
    async def check(peers, room):
        await wait_until(lambda: decoded_from_all(peers), f">= {MIN_FRAMES} decoded frames from each other peer", peers, server)
        for p in peers:
            assert p.offers >= 1 and p.answers == p.offers, f"{p.name}: offers {p.offers}, answers {p.answers}"
        assert_clean(peers, server)

    asyncio.run(run_room(server, ["alice", "bob", "carol"], check))


def test_remaining_peers_continue_after_one_leaves(server):
    async def check(peers, room):
        await wait_until(lambda: decoded_from_all(peers), f">= {MIN_FRAMES} decoded frames from each other peer", peers, server)
        alice, bob, carol = peers
        offers_before = {p.name: p.offers for p in (alice, bob)}
        reply = await carol.leave()
        assert reply.get("type") == "ok", f"leave got {reply}"
        rest = [alice, bob]
        await wait_until(
            lambda: all(carol.you not in p.participants and carol.you in p.left for p in rest),
            "participant_left for carol",
            peers,
            server,
        )
        # Carol's tracks went away, so the server offers again.
        await wait_until(
            lambda: all(p.offers > offers_before[p.name] and p.answers == p.offers for p in rest),
            "a new offer (answered) after carol left",
            peers,
            server,
        )
        base = snapshot(rest)
        await wait_until(
            lambda: decoded_from_all(rest, base=base),
            f"alice and bob to keep decoding each other (+{MIN_FRAMES} frames)",
            peers,
            server,
        )
        assert_clean(peers, server)

    asyncio.run(run_room(server, ["alice", "bob", "carol"], check))
