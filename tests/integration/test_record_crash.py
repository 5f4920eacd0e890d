"""SIGKILL a recording process at a random moment: everything flushed before it survives.

The child records numbered samples (value = index * 16 + channel) of a 16-channel 2 kHz
stream in real time, plus an event every 0.1 s, and flushes every `flush_s`. After each
flush returns (fdatasync done) it appends `<samples so far> <monotonic time>` to a side
file. The test kills it without warning and checks what the reader recovers. A SIGKILL
leaves the page cache intact, so this tests the format and the reader's recovery, not the
disk's behaviour on power loss (that is what the fdatasync per flush is for).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nmcore.hostclock import MonotonicClock
from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import SessionRecorder, open_session
from nmcore.record import format as fmt

RATE_HZ = 2000
N_CH = 16

CHILD = r"""
import sys, time
import numpy as np
from nmcore.hostclock import MonotonicClock
from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import SessionRecorder

out_dir, side_path, flush_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
desc = StreamDescriptor("emg", "dev", StreamKind.EMG, 2000.0,
                        tuple(ChannelSpec(f"c{i}", "uV") for i in range(16)))
rec = SessionRecorder(out_dir, "crash-rig", "[station]\n", clock=MonotonicClock(),
                      min_free_mb=0, sample_dtype="float64")
rec.declare_stream(desc)
side = open(side_path, "w")
t0 = time.monotonic()
side.write(f"{rec.session_dir} {t0!r}\n"); side.flush()
nxt = 0; n_events = 0; last_flush = t0
while True:
    now = time.monotonic()
    target = int((now - t0) * 2000)
    if target > nxt:
        idx = np.arange(nxt, target)
        data = idx[:, None] * 16.0 + np.arange(16)[None, :]
        rec.write_samples(desc, nxt, data, t0 + idx / 2000.0, counter=nxt % 65536)
        nxt = target
    if now - t0 >= 0.1 * n_events:
        rec.write_event({"type": "mark", "t_s": now, "n": n_events})
        n_events += 1
    if now - last_flush >= flush_s:
        rec.flush()
        side.write(f"{nxt} {n_events} {time.monotonic()!r}\n"); side.flush()
        last_flush = now
    time.sleep(0.004)
"""

# Scheduling on a shared 2-core machine: how late the child's loop may run behind.
SLACK_S = 0.5


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _run_and_kill(
    tmp_path: Path, flush_s: float, run_s: float
) -> tuple[Path, float, float, list[tuple[int, int, float]]]:
    side = tmp_path / f"side-{flush_s}.txt"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "rec"), str(side), str(flush_s)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30.0
        while not (side.exists() and side.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "child never flushed"
            time.sleep(0.02)
        time.sleep(run_s)
        kill_t = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    lines = side.read_text().splitlines()
    session_dir, t0 = lines[0].rsplit(" ", 1)
    flushes = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:  # a line torn by the kill is ignored
            flushes.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return Path(session_dir), float(t0), kill_t, flushes


@pytest.mark.parametrize("flush_s", [0.25, 0.5, 1.0])
def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path, flush_s: float) -> None:
    rng = random.Random()
    seed = rng.randrange(2**32)
    run_s = random.Random(seed).uniform(0.3, 1.5)
    session_dir, t0, kill_t, flushes = _run_and_kill(tmp_path, flush_s, run_s)
    ctx = f"seed={seed} flush_s={flush_s} run_s={run_s:.3f}"
    last_n, last_events, last_flush_t = flushes[-1]

    s = open_session(session_dir)
    idx, t, data, valid = s.read_stream("emg")
    # everything up to the last reported flush, no holes, exact values and times
    assert len(idx) >= last_n, ctx
    np.testing.assert_array_equal(idx, np.arange(len(idx)), err_msg=ctx)
    np.testing.assert_array_equal(data, idx[:, None] * 16.0 + np.arange(N_CH)[None, :], err_msg=ctx)
    np.testing.assert_array_equal(t, t0 + idx / 2000.0, err_msg=ctx)
    assert valid.all()
    # at most one flush interval (plus scheduling slack) of data lost
    recovered_until = t0 + len(idx) / RATE_HZ
    assert kill_t - recovered_until <= flush_s + SLACK_S, ctx
    assert kill_t - last_flush_t <= flush_s + SLACK_S, ctx
    events = s.events()
    assert [e["n"] for e in events] == list(range(len(events))), ctx
    assert len(events) >= last_events, ctx
    blocks = s.read_stream("emg").blocks
    assert (blocks["counter"] == blocks["first_index"] % 65536).all()
    # checksums intact: at most a torn tail, never damage in the middle
    (integ,) = s.integrity.segments
    assert integ.header_ok, ctx
    assert integ.bad_regions == 0, ctx
    assert not integ.clean_end, ctx

    # a restarted recorder continues in a new segment and leaves the old file alone
    before = _hashes(session_dir)
    desc = StreamDescriptor(
        "emg", "dev", StreamKind.EMG, 2000.0, tuple(ChannelSpec(f"c{i}", "uV") for i in range(16))
    )
    rec = SessionRecorder(
        session_dir.parent,
        "crash-rig",
        "[station]\n",
        clock=MonotonicClock(),
        min_free_mb=0,
        session=session_dir.name,
        sample_dtype="float64",
    )
    assert rec.segment == 1
    n_old = len(idx)
    new_idx = np.arange(n_old + 100, n_old + 300)
    rec.write_samples(desc, int(new_idx[0]), new_idx[:, None] * 16.0 + np.arange(16), new_idx / 2e3)
    rec.close()
    after = _hashes(session_dir)
    assert {k: after[k] for k in before} == before, ctx
    assert set(after) - set(before) == {fmt.segment_name(1)}
    s2 = open_session(session_dir)
    idx2, _t2, _d2, _v2 = s2.read_stream("emg")
    np.testing.assert_array_equal(idx2, np.r_[idx, new_idx])
    assert s2.integrity.segments[1].clean_end
