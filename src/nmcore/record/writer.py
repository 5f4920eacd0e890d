"""`SessionRecorder`: every stream's samples and every event, appended to disk as they come.

The runtime calls the `write_*` methods from the event loop after each push (they only copy
the block into a per-stream buffer, a few µs) and `flush()` every `flush_interval_s` (<= 1 s).
`flush()` turns each stream's buffered blocks into one SAMPLES chunk, appends everything in
one write, and `fdatasync`s the file: a crash or power loss costs at most the data since the
previous flush. The format is described in `nmcore.record.format` and docs/recording.md.

Call `flush()` through `asyncio.to_thread`. It is plain blocking I/O. benchmarks/bench_record.py
on the lab rig's rate (16 EMG at 2 kHz, 3 IMUs x 6 at 1 kHz, a 6-axis plate at 1 kHz: ~270 kB/s
with float32 samples, ~490 kB/s with float64) measured one flush per second at p50 3-18 ms,
p99 7-37 ms over runs on the shared 2-core development VM, of which ~3 ms is CPU (building the
chunks) and the rest os.write + fdatasync (fdatasync alone p50 1-8 ms, p99 4-15 ms). That
is too long for the event loop (it would delay MQTT publishes and ingestion by a whole
flush), and fsync latency is set by the disk and by whatever else writes to it: tens to
hundreds of ms on SD cards or a busy disk. Recording costs ~1 % of one core in total.
`write_*` stay on the loop thread (5-10 µs per block, p99 < 25-50 µs: a copy into the
per-stream buffer) while `flush()`/`close()` run in one worker thread at a time; they share
only a short lock around the pending buffers.

Failures never reach the acquisition path. A full disk (free space below `min_free_mb`) or an
OSError while writing (ENOSPC, EIO, ...) closes the segment as cleanly as it still can and
sets `recording_state`; later writes are counted as dropped samples and otherwise ignored.
Caller bugs (a block of the wrong shape, an undeclared stream) raise ValueError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from nmcore.hostclock import HostClock
from nmcore.model import Event, StreamDescriptor
from nmcore.record import format as fmt

if TYPE_CHECKING:
    from nmcore.config.models import RecordingConfig

__all__ = [
    "OsSegmentFile",
    "RecorderStatus",
    "RecordingState",
    "SegmentFile",
    "SegmentOpener",
    "SessionRecorder",
    "descriptor_to_json",
    "session_dir_name",
]

log = logging.getLogger("nmcore.record")

RecordingState = Literal["recording", "low_disk", "stopped_disk_full", "error", "closed"]
SampleDtype = Literal["float32", "float64"]

_MB = 1_000_000
# Split a stream's pending rows into chunks of at most this many payload bytes (only reached
# when flush() was not called for a long time); far below format.MAX_PAYLOAD.
_CHUNK_TARGET_BYTES = 8 * 1024 * 1024


class SegmentFile(Protocol):
    """Where segment bytes go. `write` writes all of `data` or raises OSError."""

    def write(self, data: bytes) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


SegmentOpener = Callable[[Path], SegmentFile]


class OsSegmentFile:
    """A new segment file: created with O_EXCL (an existing file is never reopened), written
    with os.write, made durable with fdatasync (the file size is part of what it syncs)."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o644)
        self.path = path

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def sync(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        sync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    # the new file's directory entry must be durable too, or a power loss can lose the file
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def session_dir_name(created: datetime, station_id: str) -> str:
    """`<UTC YYYYmmddTHHMMSSZ>_<station id>` with the id reduced to file-name-safe characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", station_id) or "station"
    return f"{created.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}_{safe}"


def descriptor_to_json(desc: StreamDescriptor, dtype: str) -> dict[str, Any]:
    return {
        "stream_id": desc.stream_id,
        "device_id": desc.device_id,
        "kind": str(desc.kind),
        "rate_hz": desc.rate_hz,
        "channels": [{"name": c.name, "unit": c.unit} for c in desc.channels],
        "counter_bits": desc.counter_bits,
        "timestamp_hz": desc.timestamp_hz,
        "timestamp_bits": desc.timestamp_bits,
        "dtype": dtype,
    }


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    """What the runtime publishes about recording. `reason`: why it stopped (or None).
    `samples_dropped`/`records_dropped`: samples and events/clock/calibration records that
    arrived after recording stopped or were buffered when a write failed."""

    state: RecordingState
    reason: str | None
    session_dir: Path | None
    segment: int
    bytes_written: int
    samples_written: int
    samples_dropped: int
    records_dropped: int
    chunks_written: int
    flushes: int
    last_flush_s: float | None
    last_flush_duration_s: float | None


@dataclass(slots=True)
class _StreamBuf:
    desc: StreamDescriptor
    dtype: np.dtype[Any]
    decl: bytes  # the encoded STREAM chunk, re-written at the top of each segment
    next_index: int | None = None
    blocks: list[fmt.BlockInfo] = field(default_factory=list)
    data: list[npt.NDArray[Any]] = field(default_factory=list)
    t_s: list[npt.NDArray[np.float64]] = field(default_factory=list)
    valid: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    pending_rows: int = 0


class SessionRecorder:
    """Records one session into `<directory>/<UTC start>_<station id>/seg-NNNNN.nmrec`.

    `clock`: host monotonic clock (segment age, warning rate limit, clock-chunk times).
    `rotate_mb`/`rotate_s`: start a new segment once the current one holds this many MB
    (10^6 bytes) or is this old; checked at each flush. `min_free_mb`: stop below this much
    free space; warn below twice it. `session`: name of an existing session directory in
    `directory` to continue in a new segment (a restarted daemon); by default a new session
    directory. `sample_dtype`: on-disk sample type unless `declare_stream` says otherwise;
    float32 keeps any value scaled from a <= 24-bit ADC code within half an LSB (float32 has a
    24-bit significand), float64 is exact. Seams for tests and odd platforms: `free_bytes(path)`
    (default `shutil.disk_usage`), `opener(path)` (default `OsSegmentFile`), `utc_now`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        station_id: str,
        config_text: str,
        *,
        clock: HostClock,
        rotate_mb: float = 512.0,
        rotate_s: float = 3600.0,
        min_free_mb: float = 500.0,
        session: str | None = None,
        sample_dtype: SampleDtype = "float32",
        free_bytes: Callable[[Path], int] = _disk_free_bytes,
        opener: SegmentOpener = OsSegmentFile,
        utc_now: Callable[[], datetime] | None = None,
        warn_interval_s: float = 300.0,
    ) -> None:
        if not rotate_mb > 0 or not rotate_s > 0 or min_free_mb < 0:
            raise ValueError(
                "rotate_mb and rotate_s must be > 0 and min_free_mb >= 0 "
                f"(got rotate_mb={rotate_mb}, rotate_s={rotate_s}, min_free_mb={min_free_mb})"
            )
        self._clock = clock
        self._station_id = station_id
        self._config_text = config_text
        self._rotate_bytes = int(rotate_mb * _MB)
        self._rotate_s = float(rotate_s)
        self._min_free_bytes = int(min_free_mb * _MB)
        self._default_dtype = np.dtype(sample_dtype)
        self._free_bytes = free_bytes
        self._opener = opener
        self._utc_now = utc_now or (lambda: datetime.now(UTC))
        self._warn_interval_s = warn_interval_s
        self._last_warn_s: float | None = None

        self._lock = threading.Lock()  # pending buffers (loop thread vs flush thread)
        self._io_lock = threading.Lock()  # one flush/rotate/close at a time
        self._streams: dict[str, _StreamBuf] = {}
        self._misc: list[bytes] = []  # encoded chunks waiting for the next flush, in order
        self._calibrations: dict[str, bytes] = {}
        self._clocks: dict[str, bytes] = {}
        self._config_chunk = fmt.encode_chunk(
            fmt.ChunkType.CONFIG,
            fmt.encode_json(
                {
                    "sha256": hashlib.sha256(config_text.encode("utf-8")).hexdigest(),
                    "text": config_text,
                }
            ),
        )

        self._state: RecordingState = "recording"
        self._reason: str | None = None
        self._file: SegmentFile | None = None
        self._segment = -1
        self._segment_bytes = 0
        self._segment_started_s = 0.0
        self._bytes_written = 0
        self._samples_written = 0
        self._samples_dropped = 0
        self._records_dropped = 0
        self._chunks_written = 0
        self._flushes = 0
        self._last_flush_s: float | None = None
        self._last_flush_duration_s: float | None = None
        self.session_dir: Path | None = None

        try:
            self.session_dir = self._make_session_dir(Path(directory), session)
            if self._check_disk():
                self._open_segment(self._next_segment_number())
        except OSError as exc:
            self._fail(exc)

    @classmethod
    def from_config(
        cls,
        config: RecordingConfig,
        station_id: str,
        config_text: str,
        *,
        clock: HostClock,
        session: str | None = None,
    ) -> SessionRecorder:
        """A recorder set up from the station file's `[recording]` section."""
        return cls(
            config.directory,
            station_id,
            config_text,
            clock=clock,
            rotate_mb=config.rotate_mb,
            rotate_s=config.rotate_s,
            min_free_mb=config.min_free_mb,
            session=session,
        )

    # -- public state ---------------------------------------------------------------------

    @property
    def recording_state(self) -> RecordingState:
        return self._state

    @property
    def stop_reason(self) -> str | None:
        return self._reason

    @property
    def active(self) -> bool:
        return self._state in ("recording", "low_disk")

    @property
    def segment(self) -> int:
        """Number of the current (or last) segment; -1 before the first one opened."""
        return self._segment

    def status(self) -> RecorderStatus:
        return RecorderStatus(
            state=self._state,
            reason=self._reason,
            session_dir=self.session_dir,
            segment=self._segment,
            bytes_written=self._bytes_written,
            samples_written=self._samples_written,
            samples_dropped=self._samples_dropped,
            records_dropped=self._records_dropped,
            chunks_written=self._chunks_written,
            flushes=self._flushes,
            last_flush_s=self._last_flush_s,
            last_flush_duration_s=self._last_flush_duration_s,
        )

    # -- writing (event-loop side: buffer only, no I/O) -----------------------------------

    def declare_stream(self, desc: StreamDescriptor, *, dtype: SampleDtype | None = None) -> None:
        """Announce a stream before its samples. Re-declaring the same descriptor is a no-op."""
        np_dtype = self._default_dtype if dtype is None else np.dtype(dtype)
        if np_dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        with self._lock:
            old = self._streams.get(desc.stream_id)
            if old is not None:
                if old.desc != desc or old.dtype != np_dtype:
                    raise ValueError(
                        f"stream {desc.stream_id!r} is already declared with a different "
                        "descriptor; give the new stream its own stream_id"
                    )
                return
            decl = fmt.encode_chunk(
                fmt.ChunkType.STREAM, fmt.encode_json(descriptor_to_json(desc, np_dtype.name))
            )
            self._streams[desc.stream_id] = _StreamBuf(desc, np_dtype, decl)
            self._misc.append(decl)

    def write_samples(
        self,
        stream: StreamDescriptor | str,
        first_index: int,
        data: npt.NDArray[np.floating[Any]],
        t_s: npt.NDArray[np.floating[Any]],
        valid: npt.NDArray[np.bool_] | npt.NDArray[np.uint8] | None = None,
        *,
        counter: int | None = None,
        device_ticks: int | None = None,
        ticks_index: int = 0,
    ) -> None:
        """Buffer one block: rows `[first_index, first_index + n)` of `data` (n, channels),
        host times `t_s` (n,), `valid` (n,) (all True if None), and the block's raw device
        `counter` and `device_ticks` (of row `ticks_index`) as the device sent them.

        The arrays are copied. A stream given as a descriptor is declared on first use. An
        index jump forward is recorded as a GAP chunk.
        """
        if isinstance(stream, StreamDescriptor):
            if stream.stream_id not in self._streams:
                self.declare_stream(stream)
            stream_id = stream.stream_id
        else:
            stream_id = stream
        sb = self._streams.get(stream_id)
        if sb is None:
            raise ValueError(f"stream {stream_id!r} was not declared: call declare_stream first")
        n = int(data.shape[0]) if data.ndim >= 1 else 0
        if data.ndim != 2 or data.shape[1] != sb.desc.n_channels:
            raise ValueError(
                f"data for {stream_id!r} must have shape (n, {sb.desc.n_channels}), "
                f"got {data.shape}"
            )
        if t_s.shape != (n,) or (valid is not None and valid.shape != (n,)):
            raise ValueError(f"t_s and valid for {stream_id!r} must have shape ({n},)")
        for name, value, lo, hi in (
            ("counter", counter, 0, 2**64),
            ("device_ticks", device_ticks, 0, 2**64),
            ("ticks_index", ticks_index, -(2**31), 2**31),
        ):
            if value is not None and not lo <= value < hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}) (the raw device value)")
        if n == 0:
            return
        if not self.active:
            self._samples_dropped += n
            return
        block = fmt.BlockInfo(int(first_index), n, counter, device_ticks, int(ticks_index))
        d = np.array(data, dtype=sb.dtype, order="C", copy=True)
        t = np.array(t_s, dtype=np.float64, copy=True)
        v = np.ones(n, dtype=np.bool_) if valid is None else np.array(valid, dtype=np.bool_)
        with self._lock:
            if sb.next_index is not None and first_index > sb.next_index:
                gap = {
                    "stream_id": stream_id,
                    "first_index": sb.next_index,
                    "missing_samples": int(first_index) - sb.next_index,
                    "next_t_s": float(t[0]),
                }
                self._misc.append(fmt.encode_chunk(fmt.ChunkType.GAP, fmt.encode_json(gap)))
            sb.next_index = int(first_index) + n
            sb.blocks.append(block)
            sb.data.append(d)
            sb.t_s.append(t)
            sb.valid.append(v)
            sb.pending_rows += n

    def write_event(self, record: Mapping[str, Any] | Event) -> None:
        """Buffer an event or trial result (a JSON-able mapping, or an `Event`)."""
        if isinstance(record, Event):
            record = {
                "type": record.type,
                "t_s": record.t_s,
                "source": record.source,
                **record.data,
            }
        self._queue(fmt.ChunkType.EVENT, dict(record))

    def write_clock(self, device_id: str, stats: object) -> None:
        """Buffer a clock-model snapshot of `device_id` (a mapping or a dataclass such as
        `ClockStats`); the latest one per device opens every later segment too."""
        body: dict[str, Any]
        if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
            body = dataclasses.asdict(stats)
        elif isinstance(stats, Mapping):
            body = dict(stats)
        else:
            raise ValueError(f"clock stats must be a mapping or a dataclass, got {type(stats)}")
        self._queue(
            fmt.ChunkType.CLOCK,
            {"device_id": device_id, "t_s": self._clock.now(), "stats": body},
            keep=(self._clocks, device_id),
        )

    def write_calibration(self, device_id: str, data: Mapping[str, Any]) -> None:
        """Buffer a device calibration; the latest one per device and kind (`data["kind"]`)
        opens every later segment."""
        self._queue(
            fmt.ChunkType.CALIBRATION,
            {"device_id": device_id, "t_s": self._clock.now(), "data": dict(data)},
            keep=(self._calibrations, f"{device_id}/{data.get('kind', '')}"),
        )

    def _queue(
        self,
        ctype: fmt.ChunkType,
        obj: dict[str, Any],
        keep: tuple[dict[str, bytes], str] | None = None,
    ) -> None:
        if not self.active:
            self._records_dropped += 1
            return
        chunk = fmt.encode_chunk(ctype, fmt.encode_json(obj))
        with self._lock:
            self._misc.append(chunk)
            if keep is not None:  # under the lock: a rotation in the flush thread reads it
                keep[0][keep[1]] = chunk

    # -- I/O (worker-thread side) ---------------------------------------------------------

    def flush(self) -> None:
        """Write everything buffered, fdatasync, then rotate if the segment is due. Never
        raises for I/O problems: they set `recording_state` instead."""
        with self._io_lock:
            if not self.active or self._file is None:
                return
            t0 = time.perf_counter()
            try:
                payload, n_chunks, n_rows = self._take_pending()
                if not self._check_disk():
                    # still above the hard floor's worth of space: keep what we hold
                    self._write(payload, n_chunks, n_rows)
                    self._close_segment("disk_full")
                    return
                if payload:
                    self._write(payload, n_chunks, n_rows)
                    self._file.sync()
                self._flushes += 1
                self._last_flush_s = self._clock.now()
                self._last_flush_duration_s = time.perf_counter() - t0
                if (
                    self._segment_bytes >= self._rotate_bytes
                    or self._clock.now() - self._segment_started_s >= self._rotate_s
                ):
                    self._close_segment("rotate")
                    self._open_segment(self._segment + 1)
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:  # a bug here must still not stop acquisition
                log.exception("recording stopped by an unexpected error")
                self._fail(OSError(errno.EIO, f"internal error: {exc!r}"))

    def close(self) -> None:
        """Flush, mark the segment's clean end, close. Idempotent; never raises for I/O."""
        self.flush()
        with self._io_lock:
            if self._file is not None:
                try:
                    self._close_segment("close")
                except OSError as exc:
                    self._fail(exc)
            if self.active:
                self._state = "closed"

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _take_pending(self) -> tuple[bytes, int, int]:
        with self._lock:
            misc, self._misc = self._misc, []
            taken = []
            for sb in self._streams.values():
                if sb.pending_rows:
                    taken.append((sb.desc.stream_id, sb.blocks, sb.data, sb.t_s, sb.valid))
                    sb.blocks, sb.data, sb.t_s, sb.valid = [], [], [], []
                    sb.pending_rows = 0
        parts = list(misc)
        n_rows = 0
        for stream_id, blocks, data, t_s, valid in taken:
            for lo, hi in _split_blocks(data):
                parts.append(
                    fmt.encode_chunk(
                        fmt.ChunkType.SAMPLES,
                        fmt.encode_samples(
                            stream_id,
                            blocks[lo:hi],
                            _cat(data[lo:hi]),
                            _cat(t_s[lo:hi]),
                            _cat(valid[lo:hi]),
                        ),
                    )
                )
                n_rows += sum(b.n for b in blocks[lo:hi])
        return b"".join(parts), len(parts), n_rows

    def _write(self, payload: bytes, n_chunks: int, n_rows: int) -> None:
        assert self._file is not None
        if not payload:
            return
        try:
            self._file.write(payload)
        except OSError:
            self._samples_dropped += n_rows
            raise
        self._segment_bytes += len(payload)
        self._bytes_written += len(payload)
        self._chunks_written += n_chunks
        self._samples_written += n_rows

    def _make_session_dir(self, directory: Path, session: str | None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if session is not None:
            path = directory / session
            path.mkdir(exist_ok=True)
            return path
        base = session_dir_name(self._utc_now(), self._station_id)
        for k in range(1, 1000):
            path = directory / (base if k == 1 else f"{base}-{k}")
            try:
                path.mkdir()  # exclusive: two recorders never share a new session directory
            except FileExistsError:
                continue
            _fsync_dir(directory)
            return path
        raise FileExistsError(errno.EEXIST, "no free session directory name", str(directory))

    def _next_segment_number(self) -> int:
        assert self.session_dir is not None
        numbers = [
            int(m.group(1))
            for p in self.session_dir.iterdir()
            if (m := re.fullmatch(r"seg-(\d+)\.nmrec", p.name))
        ]
        return max(numbers, default=-1) + 1

    def _open_segment(self, number: int) -> None:
        assert self.session_dir is not None
        while True:
            path = self.session_dir / fmt.segment_name(number)
            try:
                file = self._opener(path)
            except FileExistsError:
                number += 1  # someone else's segment: never touch it
                continue
            break
        _fsync_dir(self.session_dir)
        self._file = file
        self._segment = number
        self._segment_bytes = 0
        self._segment_started_s = self._clock.now()
        created_ns = int(self._utc_now().timestamp() * 1e9)
        with self._lock:
            decls = [sb.decl for sb in self._streams.values()]
            # declarations queued but not yet written are in `decls` already
            self._misc = [c for c in self._misc if c not in decls]
            opening = [
                fmt.encode_header(number, created_ns, self._station_id),
                self._config_chunk,
                *self._calibrations.values(),
                *self._clocks.values(),
                *decls,
            ]
        head = b"".join(opening)
        file.write(head)
        file.sync()
        self._segment_bytes += len(head)
        self._bytes_written += len(head)
        self._chunks_written += len(opening) - 1

    def _close_segment(self, reason: str) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            end = fmt.encode_chunk(
                fmt.ChunkType.SEGMENT_END,
                fmt.encode_json({"reason": reason, "t_s": self._clock.now()}),
            )
            file.write(end)
            file.sync()
            self._segment_bytes += len(end)
            self._bytes_written += len(end)
            self._chunks_written += 1
        finally:
            file.close()

    def _check_disk(self) -> bool:
        """False (and recording stopped) below min_free; warns below twice that."""
        assert self.session_dir is not None
        free = self._free_bytes(self.session_dir)
        if free < self._min_free_bytes:
            self._state = "stopped_disk_full"
            self._reason = (
                f"free disk space {free / _MB:.0f} MB is below recording.min_free_mb "
                f"({self._min_free_bytes / _MB:.0f} MB): recording stopped; free space and restart"
            )
            log.error("%s (session %s)", self._reason, self.session_dir)
            return False
        if free < 2 * self._min_free_bytes:
            self._state = "low_disk"
            now = self._clock.now()
            if self._last_warn_s is None or now - self._last_warn_s >= self._warn_interval_s:
                self._last_warn_s = now
                log.warning(
                    "free disk space %.0f MB is below twice recording.min_free_mb (%.0f MB): "
                    "recording stops at %.0f MB",
                    free / _MB,
                    2 * self._min_free_bytes / _MB,
                    self._min_free_bytes / _MB,
                )
        else:
            self._state = "recording"
        return True

    def _fail(self, exc: OSError) -> None:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        self._state = "stopped_disk_full" if full else "error"
        self._reason = (
            f"recording stopped: {exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"
        )
        log.error("%s (session %s)", self._reason, self.session_dir)
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        with self._lock:
            for sb in self._streams.values():
                self._samples_dropped += sb.pending_rows
                sb.blocks, sb.data, sb.t_s, sb.valid = [], [], [], []
                sb.pending_rows = 0
            self._records_dropped += sum(1 for c in self._misc if c[4] != fmt.ChunkType.STREAM)
            self._misc = []


def _cat(arrays: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _split_blocks(data: list[npt.NDArray[Any]]) -> list[tuple[int, int]]:
    """Block ranges whose rows fit in one chunk of about _CHUNK_TARGET_BYTES."""
    out = []
    lo, size = 0, 0
    for i, d in enumerate(data):
        if size and size + d.nbytes > _CHUNK_TARGET_BYTES:
            out.append((lo, i))
            lo, size = i, 0
        size += d.nbytes
    out.append((lo, len(data)))
    return out
