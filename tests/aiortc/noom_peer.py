"""A contract client built on aiortc: joins a room over /ws, answers the
server's offers, publishes a synthetic camera and microphone, and counts the
frames it decodes from every other participant.

Used by test_e2e.py; can also be run by hand:
    python tests/aiortc/noom_peer.py http://127.0.0.1:8080 ROOM NAME
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import json
import logging
import math
import re
import time

import aioice.ice
import numpy
import websockets
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame, VideoFrame

log = logging.getLogger("noom_peer")


def gather_loopback_only() -> None:
    """aioice never gathers 127.0.0.1; in a loopback-only network namespace
    that leaves no candidates at all. Make it gather exactly 127.0.0.1 (the
    server under test binds its media sockets to 127.0.0.1 too)."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = get_host_addresses


class MovingPatternVideoTrack(VideoStreamTrack):
    """A synthetic camera: a gradient with a bright bar moving across it."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        y = numpy.linspace(0, 255, height, dtype=numpy.uint8)[:, None]
        x = numpy.linspace(0, 255, width, dtype=numpy.uint8)[None, :]
        base = numpy.zeros((height, width, 3), dtype=numpy.uint8)
        base[:, :, 0] = x
        base[:, :, 1] = y
        base[:, :, 2] = 128
        self._base = base
        self._n = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        img = self._base.copy()
        x = (self._n * 6) % self.width
        img[:, x : x + 16, :] = 255
        yb = (self._n * 3) % self.height
        img[yb : yb + 12, :, :] = 0
        self._n += 1
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class SineAudioTrack(MediaStreamTrack):
    """A synthetic microphone: a 440 Hz tone, 48 kHz mono, 20 ms frames."""

    kind = "audio"

    def __init__(self, freq: float = 440.0, sample_rate: int = 48000) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.samples = int(AUDIO_PTIME * sample_rate)
        self.freq = freq
        self._timestamp: int | None = None
        self._start = 0.0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._timestamp is None:
            self._start = time.time()
            self._timestamp = 0
        else:
            self._timestamp += self.samples
            wait = self._start + self._timestamp / self.sample_rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (numpy.arange(self.samples) + self._timestamp) / self.sample_rate
        pcm = (numpy.sin(2 * math.pi * self.freq * t) * 8000).astype(numpy.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


def sdp_sections(sdp: str) -> list[dict]:
    """[{kind, port, mid, direction, msid_stream, msid_track}] in SDP order."""
    out = []
    for section in re.split(r"\r?\n(?=m=)", sdp)[1:]:
        m = re.match(r"m=(\S+) (\d+)", section)
        mid = re.search(r"^a=mid:(\S+)", section, re.M)
        direction = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", section, re.M)
        msid = re.search(r"^a=msid:(\S+)(?: (\S+))?", section, re.M)
        out.append(
            {
                "kind": m.group(1) if m else None,
                "port": int(m.group(2)) if m else None,
                "mid": mid.group(1) if mid else None,
                "direction": direction.group(1) if direction else "sendrecv",
                "msid_stream": msid.group(1) if msid else None,
                "msid_track": msid.group(2) if msid else None,
            }
        )
    return out


class NoomPeer:
    """One participant. `await peer.join()`, then inspect `video_frames` /
    `audio_frames` (participant id -> count of decoded frames)."""

    def __init__(self, base_url: str, room: str, name: str, publish: bool = True) -> None:
        self.ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        self.room = room
        self.name = name
        self.publish = publish
        self.you: str | None = None
        self.participants: dict[str, str] = {}  # id -> name
        self.left: list[str] = []
        self.video_frames: collections.Counter = collections.Counter()
        self.audio_frames: collections.Counter = collections.Counter()
        self.video_sizes: dict[str, tuple[int, int]] = {}
        self.offers = 0
        self.answers = 0
        self.errors: list[dict] = []
        self.messages: list[str] = []  # types, for debugging
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = MovingPatternVideoTrack() if publish else None
        self.audio = SineAudioTrack() if publish else None
        self._attached: set[str] = set()
        self._offer_sdp = ""
        self._pending_candidates: list[dict] = []
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._consumers: list[asyncio.Task] = []
        self._replies: dict[int, asyncio.Future] = {}
        self._next_req = 1
        self.pc.on("track", self._on_track)

    # ------------------------------------------------------------ signaling

    async def join(self, timeout: float = 15.0) -> dict:
        self._ws = await websockets.connect(self.ws_url, max_size=None)
        self._reader = asyncio.create_task(self._read_loop(), name=f"reader-{self.name}")
        reply = await self.request({"type": "join", "room": self.room, "name": self.name}, timeout)
        if reply.get("type") != "joined":
            raise AssertionError(f"{self.name}: join failed: {reply}")
        return reply

    async def request(self, msg: dict, timeout: float = 15.0) -> dict:
        req = self._next_req
        self._next_req += 1
        fut = asyncio.get_running_loop().create_future()
        self._replies[req] = fut
        await self.send({**msg, "req": req})
        return await asyncio.wait_for(fut, timeout)

    async def send(self, msg: dict) -> None:
        await self._ws.send(json.dumps(msg))

    async def _read_loop(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                self.messages.append(msg.get("type"))
                try:
                    await self._handle(msg)
                except Exception as exc:  # recorded; the test asserts on it
                    log.exception("%s: handling %s failed", self.name, msg.get("type"))
                    self.errors.append({"local": f"handling {msg.get('type')}: {exc!r}"})
        except websockets.ConnectionClosed:
            pass

    async def _handle(self, msg: dict) -> None:
        t = msg.get("type")
        req = msg.get("req")
        if req is not None and req in self._replies:
            fut = self._replies.pop(req)
            if not fut.done():
                fut.set_result(msg)
        if t == "joined":
            self.you = msg["you"]
            for p in msg.get("participants", []):
                self.participants[p["id"]] = p["name"]
        elif t in ("participant_joined", "participant_updated"):
            p = msg["participant"]
            if p["id"] != self.you:
                self.participants[p["id"]] = p["name"]
        elif t == "participant_left":
            self.participants.pop(msg["id"], None)
            self.left.append(msg["id"])
        elif t == "offer":
            await self._on_offer(msg["sdp"])
        elif t == "candidate":
            if self.pc.remoteDescription is None:
                self._pending_candidates.append(msg.get("candidate"))
            else:
                await self._add_candidate(msg.get("candidate"))
        elif t == "error":
            self.errors.append(msg)

    async def _on_offer(self, sdp: str) -> None:
        self.offers += 1
        self._offer_sdp = sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if self.publish:
            # Publish on the m-sections the server offers recvonly.
            tracks = {"audio": self.audio, "video": self.video}
            for s in sdp_sections(sdp):
                if s["direction"] != "recvonly" or s["port"] == 0 or s["kind"] in self._attached:
                    continue
                transceiver = next((x for x in self.pc.getTransceivers() if x.mid == s["mid"]), None)
                if transceiver is None:
                    raise AssertionError(f"no transceiver for recvonly mid {s['mid']}")
                transceiver.sender.replaceTrack(tracks[s["kind"]])
                transceiver.direction = "sendonly"
                self._attached.add(s["kind"])
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        # aiortc gathers before setLocalDescription returns: the answer holds
        # all candidates and this client never trickles (allowed by the contract).
        await self.send({"type": "answer", "sdp": self.pc.localDescription.sdp})
        self.answers += 1
        pending, self._pending_candidates = self._pending_candidates, []
        for c in pending:
            await self._add_candidate(c)

    async def _add_candidate(self, c: dict | None) -> None:
        if not c or not c.get("candidate"):
            return  # end of candidates: nothing to do for aiortc
        text = c["candidate"]
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        cand = candidate_from_sdp(text)
        cand.sdpMid = c.get("sdpMid")
        cand.sdpMLineIndex = c.get("sdpMLineIndex")
        await self.pc.addIceCandidate(cand)

    # ------------------------------------------------------------ media

    def _on_track(self, track) -> None:
        transceiver = next((x for x in self.pc.getTransceivers() if x.receiver.track is track), None)
        mid = transceiver.mid if transceiver else None
        section = next((s for s in sdp_sections(self._offer_sdp) if s["mid"] == mid), None)
        participant = section["msid_stream"] if section else None
        if participant is None:
            self.errors.append({"local": f"remote {track.kind} track on mid {mid} has no msid"})
            return
        self._consumers.append(asyncio.create_task(self._consume(track, participant)))

    async def _consume(self, track, participant: str) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                assert isinstance(frame, VideoFrame)
                self.video_frames[participant] += 1
                self.video_sizes[participant] = (frame.width, frame.height)
            else:
                assert isinstance(frame, AudioFrame)
                self.audio_frames[participant] += 1

    def summary(self) -> dict:
        return {
            "name": self.name,
            "you": self.you,
            "participants": dict(self.participants),
            "video_frames": dict(self.video_frames),
            "audio_frames": dict(self.audio_frames),
            "video_sizes": dict(self.video_sizes),
            "offers": self.offers,
            "answers": self.answers,
            "connectionState": self.pc.connectionState,
            "iceConnectionState": self.pc.iceConnectionState,
            "errors": self.errors,
            "messages": self.messages[-30:],
        }

    async def leave(self) -> dict:
        return await self.request({"type": "leave"})

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for task in self._consumers:
            task.cancel()
        try:
            if self._ws is not None:
                await self._ws.close()
        finally:
            await self.pc.close()
            for track in (self.video, self.audio):
                if track is not None:
                    track.stop()


async def _main(base_url: str, room: str, name: str) -> None:
    gather_loopback_only()
    peer = NoomPeer(base_url, room, name)
    await peer.join()
    try:
        while True:
            await asyncio.sleep(2)
            print(json.dumps(peer.summary()))
    finally:
        await peer.close()


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(*sys.argv[1:4]))
