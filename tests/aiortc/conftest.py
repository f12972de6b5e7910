"""Fixtures for the aiortc end-to-end tests: the noom server binary on a free
loopback port (path overridable with NOOM_BIN), its log kept per test."""

from __future__ import annotations

import collections
import os
import re
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from noom_peer import gather_loopback_only  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
NOOM_BIN = os.environ.get("NOOM_BIN", str(REPO / "target" / "debug" / "noom"))
ARTIFACTS = pathlib.Path(os.environ.get("NOOM_ARTIFACTS_DIR", str(REPO / "target" / "test-artifacts")))

gather_loopback_only()


_live_servers: set = set()


def _terminated(signum, frame):
    # scripts/test.sh wraps the suite in `timeout`. aiortc's decoder threads
    # keep an interrupted interpreter alive, so stop the servers and leave now.
    for srv in list(_live_servers):
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    sys.stderr.write(f"\nterminated by signal {signum}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _terminated)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, label: str, extra_env: dict | None = None) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ARTIFACTS / f"aiortc-{label}-server.log"
        self._log = open(self.log_path, "wb")
        env = {
            **os.environ,
            "NOOM_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "NOOM_MEDIA_BIND_IPS": "127.0.0.1",
            "NOOM_MEDIA_PORT": "0",
            "NO_COLOR": "1",
            "NOOM_LOG_LEVEL": os.environ.get("NOOM_LOG_LEVEL", "info"),
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen([NOOM_BIN], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        _live_servers.add(self)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{NOOM_BIN} exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as res:
                    if res.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{NOOM_BIN} did not answer /healthz on {self.url} within 30 s\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 80) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- server log ({self.log_path}), last {n} lines ---\n" + "\n".join(lines[-n:])

    def log_summary(self, top: int = 15) -> str:
        """WARN/ERROR lines grouped by message (numbers masked), most frequent first."""
        try:
            if not self._log.closed:
                self._log.flush()
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        counts: collections.Counter = collections.Counter()
        for line in lines:
            m = re.search(r"\b(WARN|ERROR)\b\s+(.*)$", line)
            if m:
                counts[f"{m.group(1)} " + re.sub(r"[0-9a-fA-F]{8,}|\d+", "N", m.group(2))[:200]] += 1
        return "--- server WARN/ERROR digest ---\n" + "\n".join(f"{n:7d}x {k}" for k, n in counts.most_common(top))

    def stop(self) -> None:
        _live_servers.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def server(request):
    srv = Server(request.node.name)
    yield srv
    srv.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(srv.log_summary())
        print(srv.log_tail(120))


class Redis:
    """Debian's redis-server on a free loopback port, no persistence."""

    def __init__(self, label: str) -> None:
        import tempfile

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/"
        self._dir = tempfile.mkdtemp(prefix="noom-redis-")
        log = ARTIFACTS / f"aiortc-{label}-redis.log"
        self.proc = subprocess.Popen(
            ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir, "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start (log {log})")
            time.sleep(0.05)

    def stop(self) -> None:
        import shutil

        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def cluster(request):
    """Two noom nodes sharing one redis-server: [node-1, node-2]."""
    redis = Redis(request.node.name)
    nodes = []
    try:
        for node_id in ("node-1", "node-2"):
            nodes.append(Server(f"{request.node.name}-{node_id}",
                                {"NOOM_CLUSTER_REDIS_URL": redis.url, "NOOM_NODE_ID": node_id}))
        yield nodes
    finally:
        rep = getattr(request.node, "rep_call", None)
        for node in nodes:
            node.stop()
            if rep is not None and rep.failed:
                print(node.log_summary())
                print(node.log_tail(60))
        redis.stop()
