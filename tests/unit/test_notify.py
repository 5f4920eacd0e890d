"""systemd's notify protocol against a real AF_UNIX datagram socket, and the daemon speaking
it: READY=1 only after warm-up, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmcore.runtime.daemon import Health
from nmcore.runtime.monitor import LoopLagMonitor
from nmcore.runtime.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    try:
        yield path, sock
    finally:
        sock.close()


def _recv(sock: socket.socket) -> dict[str, str]:
    raw = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in raw.split("\n"))


def test_notify_messages_reach_a_real_socket(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = Notifier(path, watchdog_usec="", watchdog_pid="")
    assert n.enabled
    assert n.ready("3/3 devices streaming")
    assert _recv(sock) == {"READY": "1", "STATUS": "3/3 devices streaming"}
    assert n.status("line one\nline two")  # a newline would forge another assignment
    assert _recv(sock) == {"STATUS": "line one line two"}
    assert n.watchdog()
    assert _recv(sock) == {"WATCHDOG": "1"}
    assert n.stopping()
    assert _recv(sock) == {"STOPPING": "1"}
    n.close()


def test_notify_abstract_namespace_address() -> None:
    name = f"nmcore-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5.0)
    try:
        n = Notifier("@" + name)
        assert n.send(READY=1)
        assert _recv(sock) == {"READY": "1"}
        n.close()
    finally:
        sock.close()


def test_notify_disabled_and_gone_socket(tmp_path: Path) -> None:
    off = Notifier("", watchdog_usec="1000000")
    assert not off.enabled
    assert off.watchdog_interval_s is None  # no socket: nobody to ping
    assert not off.ready("x")
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.enabled
    assert not gone.status("x")  # best effort: never raises
    gone.close()


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    assert Notifier(path, watchdog_usec="3000000", watchdog_pid="").watchdog_interval_s == 1.5
    mine = str(os.getpid())
    assert Notifier(path, watchdog_usec="3000000", watchdog_pid=mine).watchdog_interval_s == 1.5
    other = str(os.getpid() + 1)
    assert Notifier(path, watchdog_usec="3000000", watchdog_pid=other).watchdog_interval_s is None
    assert Notifier(path, watchdog_usec="0", watchdog_pid="").watchdog_interval_s is None
    assert Notifier(path, watchdog_usec="junk", watchdog_pid="").watchdog_interval_s is None


async def test_health_needs_a_responsive_loop_and_live_tasks() -> None:
    now = [100.0]
    monitor = LoopLagMonitor(interval_s=0.01)
    health = Health(monitor, max_lag_p99_ms=100.0, now=lambda: now[0])
    assert health.check() == (True, "")  # no measurement yet
    health.beat("status", max_age_s=10.0)
    now[0] += 9.0
    assert health.check()[0]
    now[0] += 2.0
    ok, why = health.check()
    assert not ok
    assert "'status'" in why
    health.beat("status", max_age_s=10.0)
    assert health.check()[0]
    # a loop blocked for 300 ms at a time: the real monitor sees the lag
    task = asyncio.create_task(monitor.run())
    try:
        for _ in range(6):
            await asyncio.sleep(0.02)
            time.sleep(0.3)  # noqa: ASYNC251 -- the point: block the loop
        ok, why = health.check()
        assert not ok
        assert "lag" in why
    finally:
        task.cancel()


def _datagrams(sock: socket.socket, until_s: float) -> Iterator[tuple[float, dict[str, str]]]:
    while (left := until_s - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            raw = sock.recv(4096).decode()
        except TimeoutError:
            return
        yield time.monotonic(), dict(line.split("=", 1) for line in raw.split("\n"))


def test_daemon_ready_watchdog_stopping(
    notify_socket: tuple[str, socket.socket], tmp_path: Path
) -> None:
    path, sock = notify_socket
    log_path = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "1000000",  # pings every 0.5 s
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WATCHDOG_PID", None)
    cmd = [sys.executable, "-m", "nmcore.cli.main", "--log-level", "DEBUG", "run", "--quiet",
           "--no-mqtt", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        msgs = _datagrams(sock, time.monotonic() + 60.0)
        t_ready, first = next(msgs)
        # the first message is READY=1, sent after the kernels were warmed up
        assert first.get("READY") == "1", first
        assert "kernels warm in" in log_path.read_text()
        assert "devices streaming" in first["STATUS"]
        pings, statuses = [], []
        for t, m in _datagrams(sock, t_ready + 6.0):
            if m.get("WATCHDOG") == "1":
                pings.append(t)
            if "STATUS" in m:
                statuses.append(m["STATUS"])
        assert len(pings) >= 8, pings  # 6 s at 0.5 s
        assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
        assert statuses, "no periodic STATUS= line"
        assert "3/3 devices streaming" in statuses[-1]
        assert "trials done" in statuses[-1]
        assert "recording off" in statuses[-1]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stopping = next(
            (m for _, m in _datagrams(sock, t0 + 5.0) if m.get("STOPPING") == "1"), None
        )
        rc = proc.wait(timeout=5.0)
        took_s = time.monotonic() - t0
        assert stopping, "no STOPPING=1"
        assert rc == 0, log_path.read_text()
        assert took_s < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
