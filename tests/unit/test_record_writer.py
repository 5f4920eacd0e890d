"""SessionRecorder: rotation, restart without touching old files, disk guard, I/O failures."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import OsSegmentFile, SessionRecorder, open_session
from nmcore.record import format as fmt

CONFIG = '[station]\nid = "lab-2"\n[recording]\nenabled = true\n'
START = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
MB = 1_000_000


class ManualClock:
    """A host clock the test moves by hand."""

    def __init__(self, t_s: float = 5000.0) -> None:
        self.t_s = t_s

    def now(self) -> float:
        return self.t_s

    async def sleep_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


EMG = StreamDescriptor(
    "emg", "d1", StreamKind.EMG, 2000.0, tuple(ChannelSpec(f"c{i}", "uV") for i in range(16))
)
IMU = StreamDescriptor(
    "imu", "d2", StreamKind.IMU, 1000.0, tuple(ChannelSpec(f"a{i}", "m/s2") for i in range(6))
)


class Feed:
    """Numbered synthetic samples: value = index * 100 + channel (exact in float32)."""

    def __init__(self, rec: SessionRecorder, clock: ManualClock) -> None:
        self.rec = rec
        self.clock = clock
        self.next = {"emg": 0, "imu": 0}

    def block(self, desc: StreamDescriptor, n: int) -> None:
        i0 = self.next[desc.stream_id]
        idx = np.arange(i0, i0 + n)
        data = idx[:, None] * 100.0 + np.arange(desc.n_channels)[None, :]
        t = self.clock.now() + idx / desc.rate_hz
        self.rec.write_samples(desc, i0, data, t, counter=i0 % 65536)
        self.next[desc.stream_id] = i0 + n

    def seconds(self, s: float, flush_every_s: float = 1.0) -> None:
        steps = round(s / 0.01)
        for k in range(steps):
            self.block(EMG, 20)
            self.block(IMU, 10)
            self.clock.t_s += 0.01
            if (k + 1) % round(flush_every_s / 0.01) == 0:
                self.rec.flush()


def _check_numbered(data: np.ndarray, idx: np.ndarray) -> None:
    expect = idx[:, None] * 100.0 + np.arange(data.shape[1])[None, :]
    np.testing.assert_array_equal(data, expect)


def _make(tmp_path: Path, clock: ManualClock, **kw: object) -> SessionRecorder:
    kw.setdefault("min_free_mb", 0)
    return SessionRecorder(
        tmp_path,
        "lab 2/α",
        CONFIG,
        clock=clock,
        utc_now=lambda: START,
        **kw,  # type: ignore[arg-type]
    )


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_session_directory_name_and_collisions(tmp_path: Path) -> None:
    clock = ManualClock()
    a = _make(tmp_path, clock)
    b = _make(tmp_path, clock)  # same second, same station: its own directory
    assert a.session_dir is not None
    assert b.session_dir is not None
    assert a.session_dir.name == "20260304T050607Z_lab_2__"
    assert b.session_dir.name == "20260304T050607Z_lab_2__-2"
    a.close()
    b.close()
    assert open_session(a.session_dir).station_id == "lab 2/α"


def test_rotation_by_size_each_segment_reads_alone(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = _make(tmp_path, clock, rotate_mb=0.1)
    feed = Feed(rec, clock)
    rec.write_clock("d1", {"drift_ppm": 3.0, "offset_uncertainty_ms": 0.2})
    rec.write_calibration("d2", {"gain": 2.0})
    feed.seconds(6.0, flush_every_s=0.5)  # ~86 kB per flush of float32 data
    rec.close()
    assert rec.session_dir is not None
    segs = sorted(rec.session_dir.glob("seg-*.nmrec"))
    assert len(segs) >= 3
    assert rec.segment == len(segs) - 1
    total = {"emg": 0, "imu": 0}
    for p in segs:
        alone = open_session(p)
        assert set(alone.streams) == {"emg", "imu"}
        assert alone.config_text == CONFIG
        assert alone.clock_history()["d1"][0]["stats"]["drift_ppm"] == 3.0
        assert alone.calibrations()["d2"][0]["data"] == {"gain": 2.0}
        (integ,) = alone.integrity.segments
        assert integ.ok
        assert integ.clean_end
        assert integ.end_reason == ("close" if p == segs[-1] else "rotate")
        assert integ.size < 0.1 * MB + 90_000  # at most one flush past the limit
        for sid in total:
            total[sid] += len(alone.read_stream(sid).indices)
    whole = open_session(rec.session_dir)
    for sid, desc in (("emg", EMG), ("imu", IMU)):
        idx, t, data, valid = whole.read_stream(sid)
        assert total[sid] == len(idx) == feed.next[sid]
        np.testing.assert_array_equal(idx, np.arange(feed.next[sid]))
        _check_numbered(data, idx)
        assert valid.all()
        assert np.all(np.diff(t) > 0)
        assert whole.streams[sid] == desc
    assert len(whole.clock_history()["d1"]) == 1  # repeats at segment starts are folded


def test_rotation_by_time(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = _make(tmp_path, clock, rotate_s=2.0)
    feed = Feed(rec, clock)
    feed.seconds(7.0)
    rec.close()
    assert rec.session_dir is not None
    segs = sorted(rec.session_dir.glob("seg-*.nmrec"))
    assert [p.name for p in segs] == [fmt.segment_name(i) for i in range(4)]
    counts = [len(open_session(p).read_stream("emg").indices) for p in segs]
    assert counts == [4000, 4000, 4000, 2000]


def test_restart_continues_in_a_new_segment_and_never_touches_old_files(tmp_path: Path) -> None:
    clock = ManualClock()
    first = _make(tmp_path, clock)
    Feed(first, clock).seconds(1.0)
    # a crash: no close(); the last segment has no SEGMENT_END
    assert first.session_dir is not None
    name = first.session_dir.name
    # someone else's stray file with the next number must be skipped, not opened
    stray = first.session_dir / fmt.segment_name(1)
    stray.write_bytes(b"not mine")
    before = _hashes(first.session_dir)

    second = _make(tmp_path, clock, session=name)
    assert second.session_dir == first.session_dir
    assert second.segment == 2
    feed2 = Feed(second, clock)
    feed2.next = {"emg": 2000, "imu": 1000}
    feed2.seconds(1.0)
    second.close()
    after = _hashes(first.session_dir)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {fmt.segment_name(2)}

    s = open_session(first.session_dir)
    idx, _t, data, _v = s.read_stream("emg")
    np.testing.assert_array_equal(idx, np.arange(4000))
    _check_numbered(data, idx)
    segs = {i.path.name: i for i in s.integrity.segments}
    assert not segs[fmt.segment_name(0)].clean_end
    assert not segs[fmt.segment_name(1)].header_ok  # the stray file is reported, not used
    assert segs[fmt.segment_name(2)].clean_end

    with pytest.raises(FileExistsError):
        OsSegmentFile(first.session_dir / fmt.segment_name(0))


class FreeSpace:
    """The disk-space seam: returns whatever the test sets."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes
        self.calls = 0

    def __call__(self, path: Path) -> int:
        assert path.is_dir()
        self.calls += 1
        return self.free_bytes


def test_disk_guard_warns_then_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    free = FreeSpace(10_000 * MB)
    rec = _make(tmp_path, clock, min_free_mb=100, free_bytes=free, warn_interval_s=60.0)
    feed = Feed(rec, clock)
    caplog.set_level(logging.WARNING, logger="nmcore.record")
    feed.seconds(1.0)
    assert rec.recording_state == "recording"
    assert not caplog.records

    free.free_bytes = 150 * MB  # below 2 x min_free: warn once, keep recording
    feed.seconds(5.0)
    assert rec.recording_state == "low_disk"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "min_free_mb" in warnings[0].getMessage()
    clock.t_s += 60.0
    feed.seconds(1.0)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2

    free.free_bytes = 300 * MB  # space came back
    feed.seconds(1.0)
    assert rec.recording_state == "recording"

    free.free_bytes = 99 * MB  # below the floor: close cleanly, keep what was buffered
    feed.seconds(1.0)
    assert rec.recording_state == "stopped_disk_full"
    assert rec.stop_reason is not None
    assert "min_free_mb" in rec.stop_reason
    written = rec.status().samples_written
    feed.seconds(1.0)  # later writes are dropped and counted, never raised
    rec.flush()
    rec.close()
    assert rec.recording_state == "stopped_disk_full"
    st = rec.status()
    assert st.samples_written == written
    assert st.samples_dropped == 2000 + 1000

    assert rec.session_dir is not None
    s = open_session(rec.session_dir)
    (integ,) = s.integrity.segments
    assert integ.clean_end
    assert integ.end_reason == "disk_full"
    assert len(s.read_stream("emg").indices) == 9 * 2000  # everything up to the stop
    assert len(s.read_stream("imu").indices) == 9 * 1000


def test_no_space_at_start_records_nothing_and_does_not_raise(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = _make(tmp_path, clock, min_free_mb=100, free_bytes=FreeSpace(5 * MB))
    assert rec.recording_state == "stopped_disk_full"
    Feed(rec, clock).seconds(0.5)
    rec.close()
    assert rec.status().samples_dropped == 1000 + 500


class FailingFile:
    """The segment-file seam: a real segment file that fails once `limit` bytes are written."""

    def __init__(self, path: Path, limit: int, err: int) -> None:
        self.inner = OsSegmentFile(path)
        self.limit = limit
        self.err = err
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.limit:
            raise OSError(self.err, "simulated")
        self.inner.write(data)
        self.written += len(data)

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        self.closed = True
        self.inner.close()


@pytest.mark.parametrize(
    ("err", "state"), [(errno.ENOSPC, "stopped_disk_full"), (errno.EIO, "error")]
)
def test_oserror_on_write_stops_cleanly(tmp_path: Path, err: int, state: str) -> None:
    clock = ManualClock()
    files: list[FailingFile] = []

    def opener(path: Path) -> FailingFile:
        files.append(FailingFile(path, 400_000, err))
        return files[-1]

    rec = _make(tmp_path, clock, opener=opener)
    feed = Feed(rec, clock)
    feed.seconds(6.0)  # ~170 kB per flush: the third flush fails
    assert rec.recording_state == state
    assert rec.stop_reason is not None
    assert errno.errorcode[err] in rec.stop_reason
    assert files[0].closed
    rec.close()  # idempotent, silent
    st = rec.status()
    assert st.samples_written == 2 * 3000
    assert st.samples_dropped == 4 * 3000
    assert rec.session_dir is not None
    s = open_session(rec.session_dir)
    idx, _t, data, _v = s.read_stream("emg")
    np.testing.assert_array_equal(idx, np.arange(4000))
    _check_numbered(data, idx)
    assert s.integrity.ok  # the failed write left nothing behind here


def test_caller_errors_raise_value_error(tmp_path: Path) -> None:
    rec = _make(tmp_path, ManualClock())
    with pytest.raises(ValueError, match="not declared"):
        rec.write_samples("nope", 0, np.zeros((2, 1)), np.zeros(2))
    rec.declare_stream(EMG)
    rec.declare_stream(EMG)  # the same again is fine
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        rec.write_samples("emg", 0, np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="t_s and valid"):
        rec.write_samples("emg", 0, np.zeros((2, 16)), np.zeros(3))
    with pytest.raises(ValueError, match="counter must be"):
        rec.write_samples("emg", 0, np.zeros((2, 16)), np.zeros(2), counter=-1)
    with pytest.raises(ValueError, match="ticks_index must be"):
        rec.write_samples("emg", 0, np.zeros((2, 16)), np.zeros(2), ticks_index=2**31)
    other = StreamDescriptor("emg", "d9", StreamKind.EMG, 1000.0, EMG.channels)
    with pytest.raises(ValueError, match="own stream_id"):
        rec.declare_stream(other)
    with pytest.raises(ValueError, match="rotate_mb"):
        _make(tmp_path, ManualClock(), rotate_mb=0)
    rec.close()


async def test_flush_in_a_worker_thread_while_the_loop_writes(tmp_path: Path) -> None:
    clock = ManualClock()
    rec = _make(tmp_path, clock, rotate_mb=0.3)
    feed = Feed(rec, clock)
    stop = asyncio.Event()

    async def flusher() -> None:
        while not stop.is_set():
            await asyncio.to_thread(rec.flush)
            await asyncio.sleep(0)

    task = asyncio.create_task(flusher())
    for _ in range(400):
        feed.block(EMG, 20)
        feed.block(IMU, 10)
        rec.write_event({"type": "tick", "t_s": clock.now()})
        clock.t_s += 0.01
        await asyncio.sleep(0)
    stop.set()
    await task
    await asyncio.to_thread(rec.close)
    assert rec.session_dir is not None
    s = open_session(rec.session_dir)
    assert len(s.integrity.segments) >= 2
    for sid in ("emg", "imu"):
        idx, _t, data, _v = s.read_stream(sid)
        np.testing.assert_array_equal(idx, np.arange(feed.next[sid]))
        _check_numbered(data, idx)
    assert len(s.events()) == 400
    assert s.gaps() == []
    assert rec.status().flushes > 1


class BrokenFile(FailingFile):
    """A segment file whose write fails with something that is not an OSError."""

    def write(self, data: bytes) -> None:
        if self.written:
            raise RuntimeError("driver bug")
        super().write(data)


def test_unexpected_error_in_flush_stops_recording_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    rec = _make(tmp_path, clock, opener=lambda p: BrokenFile(p, 10**9, 0))
    caplog.set_level(logging.ERROR, logger="nmcore.record")
    Feed(rec, clock).seconds(1.0)  # the flush inside fails
    assert rec.recording_state == "error"
    assert rec.stop_reason is not None
    assert "internal error" in rec.stop_reason
    assert any(r.exc_info for r in caplog.records)
    rec.close()
