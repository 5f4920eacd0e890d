"""The daemon records the simulated rig; SIGKILL loses at most about one flush interval, every
chunk on disk still checks out, and a restarted daemon never touches the old files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nmcore.record import open_session

BUILTIN = Path(__file__).resolve().parents[2] / "src/nmcore/configs_builtin/sim-rig.toml"
FLUSH_INTERVAL_S = 1.0
# what may be missing after a SIGKILL: one flush interval, plus the packet in flight and the
# flush that was writing when the kill came
MAX_LOSS_S = FLUSH_INTERVAL_S + 0.5


def _config(tmp_path: Path) -> Path:
    text = BUILTIN.read_text().replace("[mqtt]", "[mqtt]\nenabled = false")
    text += (
        f'\n[recording]\nenabled = true\ndirectory = "{tmp_path / "rec"}"\n'
        f"flush_interval_s = {FLUSH_INTERVAL_S}\n"
    )
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def _start(cfg: Path, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "nmcore.cli.main", "--log-level", "INFO", "run", str(cfg),
           "--quiet", "--no-mqtt", "--state-dir", str(log_path.parent / "state")]  # fmt: skip
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "ready in" in log_path.read_text():
            return
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.05)
    raise AssertionError("daemon not ready: " + log_path.read_text())


def _hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_sigkill_loses_at_most_a_flush_and_restart_leaves_old_files(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    rec_dir = tmp_path / "rec"
    log1 = tmp_path / "run1.log"
    proc = _start(cfg, log1)
    try:
        _wait_ready(proc, log1)
        time.sleep(4.2)
        t_kill = time.monotonic()  # CLOCK_MONOTONIC: the daemon's host clock too
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    (old_dir,) = rec_dir.iterdir()
    s = open_session(old_dir)
    (seg,) = s.integrity.segments
    assert seg.header_ok
    assert seg.bad_regions == 0, "a chunk failed its checksum"
    assert not seg.clean_end  # killed: no SEGMENT_END
    assert s.config_text == cfg.read_text()
    assert set(s.streams) == {"platform.trigger", "platform.imu", "emg.emg", "plate.force"}
    assert s.clock_history(), "no clock-model snapshot"
    for sid, desc in s.streams.items():
        idx, t, data, valid = s.read_stream(sid)
        assert idx.size > 2 * desc.rate_hz, sid  # seconds of data
        assert np.all(np.diff(idx) >= 1), sid
        # host times are the clock model's live mapping (it may step back by µs on an update)
        assert np.all(np.isfinite(t)), sid
        assert np.all(valid)
        assert np.all(np.isfinite(data)), sid
        lost_s = t_kill - float(t[-1])
        print(f"{sid}: last recorded sample {lost_s * 1e3:.0f} ms before the SIGKILL")
        assert 0.0 <= lost_s <= MAX_LOSS_S, f"{sid}: last sample {lost_s:.3f} s before the kill"
        recorded = int(idx[-1] - idx[0] + 1) - sum(g["missing_samples"] for g in s.gaps(sid))
        assert recorded == idx.size, sid

    before = _hashes(old_dir)
    log2 = tmp_path / "run2.log"
    proc = _start(cfg, log2)
    try:
        _wait_ready(proc, log2)
        time.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log2.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _hashes(old_dir) == before, "the restarted daemon touched the old recording"
    new_dirs = [d for d in rec_dir.iterdir() if d != old_dir]
    assert len(new_dirs) == 1
    s2 = open_session(new_dirs[0])
    (seg2,) = s2.integrity.segments
    assert seg2.ok
    assert seg2.clean_end
    assert seg2.end_reason == "close"
    idx2, t2, _, _ = s2.read_stream("emg.emg")
    assert idx2[0] == 0  # a new process: its own indices, its own session
    assert t2[0] > t_kill


async def test_disk_full_stops_recording_not_acquisition(tmp_path: Path) -> None:
    from nmcore.config import load_station
    from nmcore.runtime.daemon import Daemon

    cfg = _config(tmp_path)
    station = load_station(cfg)
    # more free space demanded than any disk has: the recorder stops at once ("disk full")
    station = station.model_copy(
        update={"recording": station.recording.model_copy(update={"min_free_mb": 1e12})}
    )
    statuses: list[dict[str, Any]] = []
    daemon = Daemon(station, realtime=False, publish=False, on_output=statuses.append)
    await daemon.run(duration_s=8.0, status_every_s=0.05)
    rec = daemon.recording_status()
    assert rec["state"] == "stopped_disk_full"
    assert "min_free_mb" in str(rec["reason"])
    assert rec["samples_dropped"] > 0  # counted, not written
    results = [o for o in daemon.outputs if o.get("type") == "trial_result"]
    assert results, "acquisition and trials must go on without the recorder"
    assert "recording stopped disk full" in daemon.status_line()
    states = {s["recording"]["state"] for s in statuses if s.get("type") == "status"}
    assert states == {"stopped_disk_full"}
