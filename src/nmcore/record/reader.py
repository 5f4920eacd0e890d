"""Reading sessions back: `open_session(path) -> Session`.

Opening scans every segment once (memory-mapped), checks every chunk's CRC, decodes the small
JSON chunks and remembers where each SAMPLES chunk lies; `read_stream` then reads only that
stream's chunks. Damage is reported in `Session.integrity`, never raised: a torn tail (a
crash mid-write) is discarded, a bad chunk in the middle is skipped by re-synchronising on
the next magic whose chunk checks out.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import format as fmt

__all__ = [
    "ScanResult",
    "SegmentIntegrity",
    "Session",
    "SessionIntegrity",
    "StreamData",
    "open_session",
    "scan_segment",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class SegmentIntegrity:
    """What the scan of one segment found.

    `bad_regions`: runs of bytes between good chunks that were skipped (each is one or more
    damaged chunks); `bytes_skipped` their total. `bytes_discarded`: bytes after the last good
    chunk (a torn write). `clean_end`: the writer closed the segment (SEGMENT_END seen);
    `end_reason` its reason. `header_ok` False: the file is unreadable (torn at creation).
    """

    path: Path
    header_ok: bool = True
    segment: int = -1
    chunks_ok: int = 0
    bad_regions: int = 0
    bytes_skipped: int = 0
    bytes_discarded: int = 0
    unknown_chunks: int = 0
    clean_end: bool = False
    end_reason: str | None = None
    size: int = 0

    @property
    def chunks_bad(self) -> int:
        return self.bad_regions

    @property
    def ok(self) -> bool:
        return self.header_ok and not self.bad_regions and not self.bytes_discarded


@dataclass(slots=True)
class SessionIntegrity:
    segments: list[SegmentIntegrity] = field(default_factory=list)

    @property
    def chunks_ok(self) -> int:
        return sum(s.chunks_ok for s in self.segments)

    @property
    def chunks_bad(self) -> int:
        return sum(s.chunks_bad for s in self.segments)

    @property
    def bytes_discarded(self) -> int:
        return sum(s.bytes_discarded + s.bytes_skipped for s in self.segments)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.segments)


@dataclass(frozen=True, slots=True)
class _Chunk:
    ctype: int
    offset: int  # payload offset in the file
    length: int


@dataclass(slots=True)
class ScanResult:
    header: fmt.SegmentHeader | None
    chunks: list[_Chunk]
    integrity: SegmentIntegrity


def _scan_buffer(buf: bytes | mmap.mmap, integ: SegmentIntegrity) -> ScanResult:
    size = len(buf)
    integ.size = size
    header = fmt.decode_header(buf)
    if header is None:
        integ.header_ok = False
        integ.bytes_discarded = size
        return ScanResult(None, [], integ)
    integ.segment = header.segment
    chunks: list[_Chunk] = []
    pos = header.size
    while pos < size:
        found = fmt.chunk_at(buf, pos)
        if found is not None:
            ctype, off, length = found
            chunks.append(_Chunk(ctype, off, length))
            integ.chunks_ok += 1
            pos = off + length + 4
            continue
        # damaged or torn here: find the next magic that starts a good chunk
        nxt = pos + 1
        while True:
            nxt = fmt.find_magic(buf, nxt)
            if nxt < 0 or fmt.chunk_at(buf, nxt) is not None:
                break
            nxt += 1
        if nxt < 0:
            integ.bytes_discarded = size - pos
            break
        integ.bad_regions += 1
        integ.bytes_skipped += nxt - pos
        pos = nxt
    return ScanResult(header, chunks, integ)


def scan_segment(path: str | os.PathLike[str]) -> ScanResult:
    """Every good chunk of one segment file, and what was damaged."""
    p = Path(path)
    integ = SegmentIntegrity(p)
    with p.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            integ.header_ok = False
            return ScanResult(None, [], integ)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _scan_buffer(mm, integ)


@dataclass(frozen=True, slots=True, eq=False)
class StreamData:
    """One stream read back: absolute `indices` (n,) int64, host `t_s` (n,), `data` (n, ch)
    float64, `valid` (n,) bool, and `blocks`: the device blocks (first_index, n, raw counter,
    raw ticks, ticks_index, has_counter, has_ticks) as a structured array."""

    indices: npt.NDArray[np.int64]
    t_s: FloatArray
    data: FloatArray
    valid: npt.NDArray[np.bool_]
    blocks: npt.NDArray[np.void]

    def __iter__(self) -> Any:
        # `indices, t_s, data, valid = session.read_stream(...)`
        return iter((self.indices, self.t_s, self.data, self.valid))


def _descriptor(d: dict[str, Any]) -> StreamDescriptor:
    return StreamDescriptor(
        stream_id=d["stream_id"],
        device_id=d["device_id"],
        kind=StreamKind(d["kind"]),
        rate_hz=float(d["rate_hz"]),
        channels=tuple(ChannelSpec(c["name"], c["unit"]) for c in d["channels"]),
        counter_bits=int(d["counter_bits"]),
        timestamp_hz=float(d["timestamp_hz"]),
        timestamp_bits=int(d["timestamp_bits"]),
    )


class Session:
    """A recorded session (all segments of a session directory, or one segment file).

    `streams`: descriptors by stream id; `stream_dtypes`: on-disk sample type by stream id;
    `config_text`/`config_sha256`: the station file as recorded (the first segment's);
    `station_id`; `segments`: segment files in order; `integrity`: what the scan found.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            files = sorted(
                (q for q in p.iterdir() if re.fullmatch(r"seg-(\d+)\.nmrec", q.name)),
                key=lambda q: int(q.name[4:-6]),
            )
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"no recording at {p}: give a session directory or a segment")
        self.path = p
        self.segments = files
        self.streams: dict[str, StreamDescriptor] = {}
        self.stream_dtypes: dict[str, str] = {}
        self.config_text: str | None = None
        self.config_sha256: str | None = None
        self.station_id: str | None = None
        self.integrity = SessionIntegrity()
        self._events: list[dict[str, Any]] = []
        self._gaps: list[dict[str, Any]] = []
        self._clocks: list[dict[str, Any]] = []
        self._calibrations: list[dict[str, Any]] = []
        self._samples: dict[str, list[tuple[Path, int, int]]] = {}
        for f in files:
            self._load_segment(f)

    def _load_segment(self, path: Path) -> None:
        res = scan_segment(path)
        self.integrity.segments.append(res.integrity)
        if res.header is None:
            return
        if self.station_id is None:
            self.station_id = res.header.station_id
        with path.open("rb") as fh:
            for ch in res.chunks:
                if ch.ctype == fmt.ChunkType.SAMPLES:
                    fh.seek(ch.offset)
                    sid = fmt.samples_stream_id(fh.read(min(ch.length, 2 + 65535)))
                    self._samples.setdefault(sid, []).append((path, ch.offset, ch.length))
                    continue
                try:
                    ctype = fmt.ChunkType(ch.ctype)
                except ValueError:
                    res.integrity.unknown_chunks += 1
                    continue
                fh.seek(ch.offset)
                obj = fmt.decode_json(fh.read(ch.length))
                self._take_json(ctype, obj, res.integrity)

    def _take_json(self, ctype: fmt.ChunkType, obj: Any, integ: SegmentIntegrity) -> None:
        if ctype == fmt.ChunkType.STREAM:
            sid = obj["stream_id"]
            if sid not in self.streams:
                self.streams[sid] = _descriptor(obj)
                self.stream_dtypes[sid] = obj.get("dtype", "float64")
        elif ctype == fmt.ChunkType.EVENT:
            self._events.append(obj)
        elif ctype == fmt.ChunkType.GAP:
            self._gaps.append(obj)
        elif ctype == fmt.ChunkType.CLOCK:
            self._clocks.append(obj)
        elif ctype == fmt.ChunkType.CALIBRATION:
            self._calibrations.append(obj)
        elif ctype == fmt.ChunkType.CONFIG:
            if self.config_text is None:
                self.config_text = obj["text"]
                self.config_sha256 = obj["sha256"]
        elif ctype == fmt.ChunkType.SEGMENT_END:
            integ.clean_end = True
            integ.end_reason = obj.get("reason")

    # -- queries --------------------------------------------------------------------------

    def read_stream(self, stream_id: str) -> StreamData:
        """All recorded samples of `stream_id`, in recording order, over every segment.
        Unpacks as `indices, t_s, data, valid`; samples never received are absent (see
        `gaps()`); samples received but marked invalid are present with valid False."""
        desc = self.streams.get(stream_id)
        if desc is None:
            known = ", ".join(sorted(self.streams)) or "none"
            raise KeyError(f"no stream {stream_id!r} in {self.path} (streams: {known})")
        parts: list[fmt.SamplesPayload] = []
        handle: tuple[Path, Any] | None = None
        try:
            for path, off, length in self._samples.get(stream_id, []):
                if handle is None or handle[0] != path:
                    if handle is not None:
                        handle[1].close()
                    handle = (path, path.open("rb"))
                handle[1].seek(off)
                parts.append(fmt.decode_samples(handle[1].read(length)))
        finally:
            if handle is not None:
                handle[1].close()
        n_ch = desc.n_channels
        if not parts:
            return StreamData(
                np.empty(0, np.int64),
                np.empty(0),
                np.empty((0, n_ch)),
                np.empty(0, np.bool_),
                np.empty(0, dtype=fmt.BLOCK_DTYPE),
            )
        return StreamData(
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.t_s for p in parts]),
            np.concatenate([p.data for p in parts]).astype(np.float64),
            np.concatenate([p.valid for p in parts]),
            np.concatenate([p.blocks for p in parts]),
        )

    def events(self) -> list[dict[str, Any]]:
        """Events and trial results in recording order."""
        return list(self._events)

    def gaps(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Index ranges the recorder never received, per stream."""
        return [g for g in self._gaps if stream_id is None or g["stream_id"] == stream_id]

    def clock_history(self) -> dict[str, list[dict[str, Any]]]:
        """Clock-model snapshots per device id, in time order (`{"t_s", "stats"}` each).
        Snapshots repeated at the top of a new segment are dropped."""
        out: dict[str, list[dict[str, Any]]] = {}
        for c in self._clocks:
            hist = out.setdefault(c["device_id"], [])
            snap = {"t_s": c["t_s"], "stats": c["stats"]}
            if not hist or hist[-1] != snap:
                hist.append(snap)
        return out

    def calibrations(self) -> dict[str, list[dict[str, Any]]]:
        """Calibrations per device id (`{"t_s", "data"}` each), repeats dropped."""
        out: dict[str, list[dict[str, Any]]] = {}
        for c in self._calibrations:
            hist = out.setdefault(c["device_id"], [])
            snap = {"t_s": c["t_s"], "data": c["data"]}
            if not hist or hist[-1] != snap:
                hist.append(snap)
        return out


def open_session(path: str | os.PathLike[str]) -> Session:
    """Open a session directory (or a single segment file) for reading."""
    return Session(path)
