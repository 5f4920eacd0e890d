"""The nmcore recording format, version 1: append-only segments of self-checking chunks.

Everything is little-endian. A **session** is a directory named
``<UTC start, YYYYmmddTHHMMSSZ>_<station id>`` holding segment files ``seg-00000.nmrec``,
``seg-00001.nmrec``, ... Segment numbers only grow; a file, once closed or abandoned by a
crash, is never opened for writing again (new files are created with ``O_EXCL``).

Segment header (written once, at creation)::

    magic        8 bytes  b"\\x89NMREC\\r\\n"  (high bit and CR LF catch 7-bit and text-mode damage)
    version      u16      FORMAT_VERSION
    segment      u32      segment number within the session
    created_ns   i64      creation time, UTC nanoseconds since the Unix epoch
    station_len  u16      then station_len bytes of UTF-8 station id
    crc32        u32      of every header byte before it

Then a sequence of chunks, nothing else, no footer::

    magic   u32  CHUNK_MAGIC (bytes D3 4E 4D 43: non-ASCII first byte, so JSON text never holds it)
    type    u8   ChunkType
    length  u32  payload bytes (at most MAX_PAYLOAD)
    payload length bytes
    crc32   u32  zlib.crc32 of type + length + payload (the magic is constant; not covered)

A chunk is good iff its CRC matches. Readers scan from the header: a bad chunk in the middle
(bit rot, a torn write later overwritten) is skipped by searching for the next magic whose
chunk checks out; whatever follows the last good chunk (a write torn by a crash or power
loss) is discarded. Both are reported, neither is fatal. A chance occurrence of the magic
inside sample data cannot mislead the scan because the CRC of a chunk started there fails.

Chunk payloads (`ChunkType`):

* ``STREAM`` (1) JSON ``{"stream_id", "device_id", "kind", "rate_hz", "channels": [{"name",
  "unit"}], "counter_bits", "timestamp_hz", "timestamp_bits", "dtype": "float32"|"float64"}``.
  Every segment re-declares its streams before their first samples, so each segment reads alone.
* ``SAMPLES`` (2) binary, see `encode_samples`: stream id, the block table (per block as the
  device sent it: first absolute index, n, raw device counter, raw device ticks and the index
  they belong to), then all rows: data (n, channels) float32/float64, host times, and the valid
  mask (bit-packed). Host times are n float64, or the first one and n-1 int32 differences
  of consecutive float64 bit patterns when every difference fits (exact by construction:
  the reader adds the integers back up and gets the same bits; see `time_deltas`).
* ``GAP`` (3) JSON ``{"stream_id", "first_index", "missing_samples", "next_t_s"}``: absolute
  indices the recorder never received (the index jumped forward).
* ``EVENT`` (4) JSON: an event or trial result exactly as the runtime handed it.
* ``CONFIG`` (5) JSON ``{"sha256", "text"}``: the station TOML text and its SHA-256.
* ``CALIBRATION`` (6) JSON ``{"device_id", "t_s", "data"}``.
* ``CLOCK`` (7) JSON ``{"device_id", "t_s", "stats"}``: a clock-model snapshot (drift, offset,
  uncertainty, ...).
* ``SEGMENT_END`` (8) JSON ``{"reason", "t_s"}``: the writer closed the segment on purpose
  (rotation, close, disk full). Its absence means the writer died.

Unknown chunk types with a good CRC are counted and skipped, so later versions can add types.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "BLOCK_DTYPE",
    "CHUNK_MAGIC",
    "CHUNK_OVERHEAD",
    "FORMAT_VERSION",
    "MAX_PAYLOAD",
    "SEGMENT_MAGIC",
    "TIME_DELTA32",
    "TIME_FULL",
    "BlockInfo",
    "ChunkType",
    "SamplesPayload",
    "SegmentHeader",
    "chunk_at",
    "decode_header",
    "decode_json",
    "decode_samples",
    "encode_chunk",
    "encode_header",
    "encode_json",
    "encode_samples",
    "find_magic",
    "samples_stream_id",
    "segment_name",
    "time_deltas",
    "times_from_deltas",
]

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"\x89NMREC\r\n"
CHUNK_MAGIC = 0x434D4ED3
_CHUNK_MAGIC_BYTES = struct.pack("<I", CHUNK_MAGIC)
# A chunk holds at most ~1 s of one stream; 64 MiB is far above that (a 256-channel float64
# stream at 30 kHz) and keeps a corrupted length field from claiming the rest of a file.
MAX_PAYLOAD = 64 * 1024 * 1024

_HEAD = struct.Struct("<IBI")  # magic, type, length
_CRC = struct.Struct("<I")
CHUNK_OVERHEAD = _HEAD.size + _CRC.size  # 13 bytes around every payload

_SEG_FIXED = struct.Struct("<8sHIqH")  # magic, version, segment, created_ns, station_len


class ChunkType(IntEnum):
    STREAM = 1
    SAMPLES = 2
    GAP = 3
    EVENT = 4
    CONFIG = 5
    CALIBRATION = 6
    CLOCK = 7
    SEGMENT_END = 8


def segment_name(number: int) -> str:
    """File name of segment `number` inside a session directory."""
    return f"seg-{number:05d}.nmrec"


# -- segment header -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    version: int
    segment: int
    created_ns: int
    station_id: str
    size: int  # header bytes, where the first chunk starts


def encode_header(segment: int, created_ns: int, station_id: str) -> bytes:
    station = station_id.encode("utf-8")
    head = _SEG_FIXED.pack(SEGMENT_MAGIC, FORMAT_VERSION, segment, created_ns, len(station))
    body = head + station
    return body + _CRC.pack(zlib.crc32(body))


def decode_header(buf: bytes | mmap.mmap) -> SegmentHeader | None:
    """The header at the start of `buf`, or None if it is missing, torn or damaged."""
    if len(buf) < _SEG_FIXED.size + _CRC.size:
        return None
    magic, version, segment, created_ns, n_station = _SEG_FIXED.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        return None
    end = _SEG_FIXED.size + n_station
    if len(buf) < end + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(buf, end)
    if crc != zlib.crc32(buf[:end]):
        return None
    station = bytes(buf[_SEG_FIXED.size : end]).decode("utf-8", errors="replace")
    return SegmentHeader(version, segment, created_ns, station, end + _CRC.size)


# -- chunks ---------------------------------------------------------------------------------


def encode_chunk(ctype: ChunkType, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"chunk payload of {len(payload)} bytes exceeds MAX_PAYLOAD")
    head = _HEAD.pack(CHUNK_MAGIC, int(ctype), len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head[4:]))
    return b"".join((head, payload, _CRC.pack(crc)))


def chunk_at(buf: bytes | mmap.mmap, pos: int) -> tuple[int, int, int] | None:
    """(type, payload offset, payload length) of a good chunk starting at `pos`, else None."""
    end_head = pos + _HEAD.size
    if end_head > len(buf):
        return None
    magic, ctype, length = _HEAD.unpack_from(buf, pos)
    if magic != CHUNK_MAGIC or length > MAX_PAYLOAD:
        return None
    end = end_head + length
    if end + _CRC.size > len(buf):
        return None
    (crc,) = _CRC.unpack_from(buf, end)
    if crc != zlib.crc32(buf[pos + 4 : end]):
        return None
    return int(ctype), end_head, int(length)


def find_magic(buf: bytes | mmap.mmap, start: int) -> int:
    """Offset of the next chunk magic at or after `start`, or -1."""
    return buf.find(_CHUNK_MAGIC_BYTES, start)


def encode_json(obj: Any) -> bytes:
    """JSON for chunk payloads; numpy scalars and arrays are accepted, NaN becomes null."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def decode_json(payload: bytes | memoryview) -> Any:
    return orjson.loads(bytes(payload))


# -- samples --------------------------------------------------------------------------------

# stream id is u16-length-prefixed, then this fixed part
_SAMP_FIXED = struct.Struct("<qIIHBBd")
# first_index, n_total, n_blocks, n_channels, dtype code (4|8), time encoding, first time
BLOCK_DTYPE = np.dtype(
    [
        ("first_index", "<i8"),
        ("n", "<u4"),
        ("has_counter", "u1"),
        ("has_ticks", "u1"),
        ("counter", "<u8"),
        ("device_ticks", "<u8"),
        ("ticks_index", "<i4"),  # signed: the row may precede the first one kept
    ]
)
TIME_FULL = 0  # n float64
TIME_DELTA32 = 1  # first time, then n-1 int32 steps between the float64 bit patterns

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One block as the device sent it. `counter`/`device_ticks`: raw values (before unwrap)."""

    first_index: int
    n: int
    counter: int | None
    device_ticks: int | None
    ticks_index: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class SamplesPayload:
    """A decoded SAMPLES chunk. `indices` are absolute sample indices, ascending."""

    stream_id: str
    blocks: npt.NDArray[np.void]  # structured, fields of BLOCK_DTYPE
    indices: npt.NDArray[np.int64]
    data: npt.NDArray[np.floating[Any]]
    t_s: FloatArray
    valid: npt.NDArray[np.bool_]
    time_encoding: int


def time_deltas(t_s: FloatArray) -> npt.NDArray[np.int32] | None:
    """Steps between consecutive host times as int32 differences of their float64 bit
    patterns, or None if a step does not fit in int32.

    Lossless by construction: integer differences of the bit patterns added back up give the
    same bits, whatever the values (jitter, NaN, steps backwards). It fits once the times are
    large enough that a sample period spans < 2**31 ulps: at 2 kHz for host times above
    ~1024 s, at 1 kHz above ~2048 s (a daemon's monotonic clock counts from boot).
    """
    if t_s.shape[0] < 2:
        return None
    bits = np.ascontiguousarray(t_s, dtype=np.float64).view(np.int64)
    d = np.diff(bits)
    if int(d.min()) < -(2**31) or int(d.max()) >= 2**31:
        return None
    return d.astype("<i4")


def times_from_deltas(t0: float, deltas: npt.NDArray[np.int32]) -> FloatArray:
    """Inverse of `time_deltas`."""
    bits = np.empty(deltas.shape[0] + 1, dtype=np.int64)
    bits[0] = np.array([t0], dtype=np.float64).view(np.int64)[0]
    np.cumsum(deltas, dtype=np.int64, out=bits[1:])
    bits[1:] += bits[0]
    return bits.view(np.float64)


def encode_samples(
    stream_id: str,
    blocks: list[BlockInfo],
    data: npt.NDArray[np.floating[Any]],
    t_s: FloatArray,
    valid: npt.NDArray[np.bool_],
) -> bytes:
    """Payload of a SAMPLES chunk. `data` must already have the stream's on-disk dtype."""
    n = int(data.shape[0])
    n_ch = int(data.shape[1])
    if data.dtype == np.float32:
        code = 4
    elif data.dtype == np.float64:
        code = 8
    else:
        raise ValueError(f"data dtype must be float32 or float64, got {data.dtype}")
    if t_s.shape != (n,) or valid.shape != (n,):
        raise ValueError(f"t_s and valid must have shape ({n},)")
    if sum(b.n for b in blocks) != n:
        raise ValueError("block sizes do not add up to the number of rows")
    deltas = time_deltas(t_s)
    enc = TIME_FULL if deltas is None else TIME_DELTA32
    t0 = float(t_s[0]) if n else 0.0
    table = np.zeros(len(blocks), dtype=BLOCK_DTYPE)
    for i, b in enumerate(blocks):
        table[i] = (
            b.first_index,
            b.n,
            b.counter is not None,
            b.device_ticks is not None,
            b.counter or 0,
            b.device_ticks or 0,
            b.ticks_index,
        )
    sid = stream_id.encode("utf-8")
    first = blocks[0].first_index if blocks else 0
    parts = [
        struct.pack("<H", len(sid)),
        sid,
        _SAMP_FIXED.pack(first, n, len(blocks), n_ch, code, enc, t0),
        table.tobytes(),
        np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes(),
    ]
    if deltas is None:
        parts.append(np.ascontiguousarray(t_s, dtype="<f8").tobytes())
    else:
        parts.append(deltas.tobytes())
    parts.append(np.packbits(valid.astype(np.bool_), bitorder="little").tobytes())
    return b"".join(parts)


def samples_stream_id(payload: bytes | memoryview) -> str:
    (n_sid,) = struct.unpack_from("<H", payload, 0)
    return bytes(payload[2 : 2 + n_sid]).decode("utf-8")


def decode_samples(payload: bytes | memoryview) -> SamplesPayload:
    """Inverse of `encode_samples`. Raises ValueError on an inconsistent payload (which a good
    CRC makes a writer bug, not disk damage)."""
    buf = bytes(payload)
    (n_sid,) = struct.unpack_from("<H", buf, 0)
    pos = 2 + n_sid
    sid = buf[2:pos].decode("utf-8")
    first, n, n_blocks, n_ch, code, enc, t0 = _SAMP_FIXED.unpack_from(buf, pos)
    pos += _SAMP_FIXED.size
    if code not in (4, 8) or enc not in (TIME_FULL, TIME_DELTA32):
        raise ValueError(f"samples chunk of {sid!r}: unknown dtype code {code} or time encoding")
    table = np.frombuffer(buf, dtype=BLOCK_DTYPE, count=n_blocks, offset=pos)
    pos += table.nbytes
    dtype = np.dtype("<f4" if code == 4 else "<f8")
    data = np.frombuffer(buf, dtype=dtype, count=n * n_ch, offset=pos).reshape(n, n_ch)
    pos += data.nbytes
    if enc == TIME_FULL:
        t_s = np.frombuffer(buf, dtype="<f8", count=n, offset=pos).astype(np.float64)
        pos += 8 * n
    else:
        deltas = np.frombuffer(buf, dtype="<i4", count=n - 1, offset=pos)
        t_s = times_from_deltas(t0, deltas)
        pos += 4 * (n - 1)
    n_mask = (n + 7) // 8
    bits = np.frombuffer(buf, dtype=np.uint8, count=n_mask, offset=pos)
    valid = np.unpackbits(bits, count=n, bitorder="little").astype(np.bool_)
    if pos + n_mask != len(buf) or int(table["n"].sum()) != n:
        raise ValueError(f"samples chunk of {sid!r}: payload size does not match its header")
    indices = np.empty(n, dtype=np.int64)
    k = 0
    for b in table:
        m = int(b["n"])
        indices[k : k + m] = np.arange(int(b["first_index"]), int(b["first_index"]) + m)
        k += m
    del first
    return SamplesPayload(sid, table.copy(), indices, data, t_s, valid, int(enc))
