"""`make run`'s wrapper (scripts/with-broker.sh): the private Mosquitto it starts outlives a
Ctrl-C or a `timeout` sent to the foreground group, so the daemon stops without a socket
error, and the broker is gone once the command is."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosquitto import free_port, mosquitto_available

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ROOT / "src/nmcore/configs_builtin/sim-rig.toml"


def _wait_for(log: Path, pattern: str, timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text())
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {timeout_s} s:\n{log.read_text()}")


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "timeout"])
def test_a_signal_to_the_group_stops_the_daemon_before_its_broker(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    text = BUILTIN.read_text()
    assert "port = 1883" in text
    cfg = tmp_path / "station.toml"
    cfg.write_text(text.replace("port = 1883", f"port = {port}"))
    log = tmp_path / "run.log"
    cmd = ["bash", str(ROOT / "scripts/with-broker.sh"), sys.executable, "-m", "nmcore.cli.main",
           "run", str(cfg), "--quiet", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    env = {**os.environ, "NMCORE_MQTT_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        # a session of its own: the test's group stands for the terminal's foreground group
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=out, env=env, start_new_session=True
        )
    broker_pid = None
    try:
        broker_pid = int(_wait_for(log, r"started mosquitto on \S+ \(pid (\d+)\)", 30.0)[1])
        _wait_for(log, r"MQTT connected to 127\.0\.0\.1:\d+", 90.0)
        os.killpg(proc.pid, sig)
        rc = proc.wait(timeout=15.0)
        output = log.read_text()
        assert rc == 128 + sig, output
        assert "stopping" in output
        assert "ERROR" not in output, output
        assert "connection to 127.0.0.1" not in output, output  # "MQTT connection ... lost"
        assert _gone(broker_pid, 5.0), "the private broker outlived the command"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if broker_pid is not None and not _gone(broker_pid, 0.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker_pid, signal.SIGKILL)
