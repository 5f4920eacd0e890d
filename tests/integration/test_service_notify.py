"""The systemd unit (configs/systemd/nmcore.service) passes `systemd-analyze verify`, its
offline security exposure is <= 2.0, and SIGHUP reloads a valid station file (READY again)
and keeps the running one when the new file is invalid."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "configs/systemd/nmcore.service"
INSTALLED_EXEC = "/opt/nmcore/.venv/bin/nmcore"
BUILTIN = Path(__file__).resolve().parents[2] / "src/nmcore/configs_builtin/sim-rig.toml"
MAX_EXPOSURE = 2.0


def _need_systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (it ships with systemd)")
    return exe


@pytest.fixture
def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's venv (verify needs the binary)."""
    nmcore = Path(sys.executable).parent / "nmcore"
    assert nmcore.exists(), f"{nmcore}: install the package in the venv (pip install -e .)"
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text
    path = tmp_path / "nmcore.service"
    path.write_text(text.replace(INSTALLED_EXEC, str(nmcore)))
    return path


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_declares_what_the_daemon_relies_on() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) > 0
    assert "NUMBA_CACHE_DIR=%C/nmcore/numba" in d["Environment"]
    assert d["CacheDirectory"] == ["nmcore"]
    assert d["StateDirectory"] == ["nmcore"]
    assert d["CapabilityBoundingSet"] == [""]
    assert "dialout" in d["SupplementaryGroups"][0]
    assert any("ttyUSB" in v for v in d["DeviceAllow"])
    assert "AF_BLUETOOTH" in d["RestrictAddressFamilies"][0]
    # numba's JIT needs W+X memory; PrivateDevices would hide the serial ports
    assert "MemoryDenyWriteExecute" not in d
    assert "PrivateDevices" not in d


def test_unit_passes_systemd_analyze_verify(local_unit: Path) -> None:
    exe = _need_systemd_analyze()
    res = subprocess.run(
        [exe, "verify", str(local_unit)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    ours = [line for line in res.stderr.splitlines() if local_unit.name in line]
    assert not ours, "\n".join(ours)


def test_unit_security_exposure_at_most_2(local_unit: Path) -> None:
    exe = _need_systemd_analyze()
    res = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(local_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0 and "offline" in res.stderr:
        pytest.skip(f"systemd-analyze here has no --offline (systemd < 250): {res.stderr}")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", res.stdout)
    assert m, res.stdout + res.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security --offline=true: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


@pytest.fixture
def notify_sock(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield path, sock
    finally:
        sock.close()


def _next(sock: socket.socket, want: str, timeout_s: float) -> dict[str, str] | None:
    """The next datagram holding key `want` (others skipped), or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            raw = sock.recv(4096).decode()
        except TimeoutError:
            return None
        msg = dict(line.split("=", 1) for line in raw.split("\n"))
        if want in msg:
            return msg
    return None


def test_sighup_reloads_a_valid_file_and_keeps_running_on_an_invalid_one(
    notify_sock: tuple[str, socket.socket], tmp_path: Path
) -> None:
    path, sock = notify_sock
    cfg = tmp_path / "station.toml"
    good = BUILTIN.read_text().replace("[mqtt]", "[mqtt]\nenabled = false")
    cfg.write_text(good)
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "NOTIFY_SOCKET": path, "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_USEC", None)
    cmd = [sys.executable, "-m", "nmcore.cli.main", "run", str(cfg), "--quiet",
           "--state-dir", str(tmp_path / "state")]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        assert _next(sock, "READY", 60.0) is not None, log_path.read_text()
        # an invalid file: logged, no reload, the station keeps streaming
        cfg.write_text(good.replace('id = "sim"', 'id = "sim"\nbogus_key = 1'))
        proc.send_signal(signal.SIGHUP)
        assert _next(sock, "RELOADING", 2.0) is None
        assert proc.poll() is None
        text = log_path.read_text()
        assert "keeping the running configuration" in text
        assert "bogus_key" in text
        # a valid, changed file: RELOADING=1, then READY=1 with the new station
        cfg.write_text(good.replace('id = "sim"', 'id = "sim-reloaded"'))
        proc.send_signal(signal.SIGHUP)
        assert _next(sock, "RELOADING", 10.0) is not None, log_path.read_text()
        ready = _next(sock, "READY", 30.0)
        assert ready is not None, log_path.read_text()
        assert "starting station 'sim-reloaded'" in log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        assert _next(sock, "STOPPING", 5.0) is not None
        assert proc.wait(timeout=5.0) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
