"""The nmcore serial wire protocol, version 1 (firmware/PROTOCOL.md is the specification).

`FrameDecoder` turns serial reads into `Packet`s: whole reads go through one jitted kernel
(delimiters, COBS, CRC, headers, sample unpacking); Python only builds one object per accepted
frame. Bad input is never an exception: every rejected frame lands in a `DecoderStats` counter.

`encode_packet` and `encode_command` build wire frames (emulators, tests, the host side of
commands); they raise `ValueError` on arguments the protocol cannot carry.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.framing import _kernels as k
from nmcore.framing.cobs import cobs_encode, crc16_ccitt_false

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "MAX_WIRE_FRAME",
    "PROTOCOL_VERSION",
    "CommandStatus",
    "DecoderStats",
    "FrameDecoder",
    "Packet",
    "PacketFlags",
    "PacketType",
    "SampleFormat",
    "StreamKindCode",
    "encode_command",
    "encode_packet",
    "parse_fields",
]

PROTOCOL_VERSION = k.PROTOCOL_VERSION
HEADER_SIZE = k.HEADER_SIZE
MAX_PAYLOAD = k.MAX_PAYLOAD
MAX_WIRE_FRAME = k.MAX_WIRE + 1  # with its delimiter

_HEADER = struct.Struct("<BBBBIIHBB")


class PacketType(IntEnum):
    """Byte 1 of the header. Values >= 0x80 are host-to-device commands."""

    EMG = 0x01
    IMU = 0x02
    FORCE = 0x03
    TRIGGER_EDGE = 0x10
    STATUS = 0x11
    COMMAND_REPLY = 0x20
    TIME_SYNC_REPLY = 0x21
    IDENTIFY = 0x80
    START = 0x81
    STOP = 0x82
    SET_RATE = 0x83
    TIME_SYNC_PING = 0x84
    LOOPBACK_TRIGGER = 0x85

    @property
    def is_sample(self) -> bool:
        return self in _SAMPLE_TYPES

    @property
    def is_command(self) -> bool:
        return self.value >= 0x80


_SAMPLE_TYPES = frozenset({PacketType.EMG, PacketType.IMU, PacketType.FORCE})


class SampleFormat(IntEnum):
    """Byte 15 of the header; values are little-endian, sample-major (s0c0 s0c1 ... s1c0)."""

    NONE = 0
    I16 = 1
    I24 = 2
    I32 = 3
    F32 = 4

    @property
    def width(self) -> int:
        return _WIDTHS[self]


_WIDTHS = {
    SampleFormat.NONE: 0,
    SampleFormat.I16: 2,
    SampleFormat.I24: 3,
    SampleFormat.I32: 4,
    SampleFormat.F32: 4,
}


class PacketFlags(IntFlag):
    DISCONTINUITY = 0x01  # the device lost samples before this packet
    SATURATED = 0x02  # a value sits at the converter's rail
    SIMULATED = 0x80  # values come from a simulated or scripted source


class CommandStatus(IntEnum):
    OK = 0
    UNKNOWN_COMMAND = 1
    BAD_ARGUMENT = 2
    BAD_LENGTH = 3
    BAD_STATE = 4
    BAD_VERSION = 5


class StreamKindCode(IntEnum):
    """`kind` in the identify reply's stream descriptors."""

    EMG = 1
    IMU = 2
    FORCE = 3
    TRIGGER = 4


@dataclass(slots=True)
class Packet:
    """One accepted frame.

    `counter`: sample counter of the first sample (sample packets), the edge counter (trigger
    edges), the host sequence number (commands, replies, time sync) or the status sequence.
    `device_us`: the device's wrapping 32-bit microsecond clock at the first sample / event.
    `samples`: (sample_count, channel_count) raw converter counts, int32 for i16/i24/i32 and
    float32 for f32; None for other packets, whose decoded payload is in `fields`.
    """

    ptype: PacketType
    stream_id: int
    flags: int
    counter: int
    device_us: int
    sample_format: SampleFormat = SampleFormat.NONE
    samples: npt.NDArray[Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DecoderStats:
    """Running totals since the decoder was made. Every byte fed ends up in exactly one of:
    an accepted frame, `bytes_skipped`, a delimiter, or the pending partial frame."""

    frames_ok: int = 0
    bad_crc: int = 0
    bad_cobs: int = 0
    truncated: int = 0
    unknown_type: int = 0
    bad_version: int = 0
    oversize: int = 0
    bytes_skipped: int = 0
    bytes_in: int = 0

    @property
    def frames_rejected(self) -> int:
        return (
            self.bad_crc
            + self.bad_cobs
            + self.truncated
            + self.unknown_type
            + self.bad_version
            + self.oversize
        )


_EMPTY = np.zeros(0, dtype=np.uint8)
_PTYPES = {int(t): t for t in PacketType}
_FORMATS = {int(f): f for f in SampleFormat}


class FrameDecoder:
    """Streaming decoder: feed it reads as they come; partial frames wait for the next read.

    Not thread-safe; one decoder per byte stream. Each `feed` makes one jitted call over the
    whole read. Sample arrays of one `feed` are views into one array allocated for that read.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._carry: npt.NDArray[np.uint8] = _EMPTY
        self._skipping = False
        self._counts = np.zeros(k.CNT_LEN, dtype=np.int64)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished frame held for the next read."""
        return int(self._carry.shape[0])

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Packet]:
        data = np.frombuffer(chunk, dtype=np.uint8)
        n_in = int(data.shape[0])
        stats = self.stats
        stats.bytes_in += n_in
        buf = np.concatenate((self._carry, data)) if self._carry.shape[0] else data
        n = int(buf.shape[0])
        packets: list[Packet] = []
        if n == 0:
            return packets
        body = np.empty(n, dtype=np.uint8)
        ints = np.empty(n // 2 + 1, dtype=np.int32)
        # An accepted frame is at least 20 bytes on the wire (18-byte body, a COBS code byte,
        # the delimiter): that bounds the rows without a counting pass over the read.
        info = np.empty((n // (HEADER_SIZE + 4) + 1, k.INFO_LEN), dtype=np.int64)
        counts = self._counts
        counts[:] = 0
        n_frames, consumed = k.decode_frames(buf, self._skipping, body, ints, info, counts)
        if consumed:
            self._skipping = False
            self._add_counts(counts.tolist())
            if n_frames:
                packets = _build_packets(info[:n_frames].tolist(), body, ints)
        tail = buf[consumed:]
        if self._skipping:
            stats.bytes_skipped += int(tail.shape[0])
            tail = _EMPTY
        elif tail.shape[0] > k.MAX_WIRE:
            # No delimiter within the longest legal frame: throw the run away up to the next
            # delimiter instead of buffering without bound.
            stats.oversize += 1
            stats.bytes_skipped += int(tail.shape[0])
            self._skipping = True
            tail = _EMPTY
        # Keep a private copy: the caller's buffer may be reused for the next read.
        self._carry = tail.copy() if tail.shape[0] else _EMPTY
        return packets

    def _add_counts(self, c: list[int]) -> None:
        s = self.stats
        s.frames_ok += c[k.CNT_OK]
        s.bad_crc += c[k.CNT_BAD_CRC]
        s.bad_cobs += c[k.CNT_BAD_COBS]
        s.truncated += c[k.CNT_TRUNCATED]
        s.unknown_type += c[k.CNT_UNKNOWN_TYPE]
        s.bad_version += c[k.CNT_BAD_VERSION]
        s.oversize += c[k.CNT_OVERSIZE]
        s.bytes_skipped += c[k.CNT_GARBAGE_BYTES]


def _build_packets(
    rows: list[list[int]], body: npt.NDArray[np.uint8], ints: npt.NDArray[np.int32]
) -> list[Packet]:
    out: list[Packet] = []
    append = out.append
    floats = None
    for ptype_code, flags, stream, counter, dev_us, n_s, n_ch, fmt, p_at, p_len, i_at in rows:
        ptype = _PTYPES[ptype_code]
        if i_at >= 0:
            sfmt = _FORMATS[fmt]
            if sfmt is SampleFormat.F32:
                if floats is None:
                    floats = ints.view(np.float32)
                samples: npt.NDArray[Any] = floats[i_at : i_at + n_s * n_ch].reshape(n_s, n_ch)
            else:
                samples = ints[i_at : i_at + n_s * n_ch].reshape(n_s, n_ch)
            append(Packet(ptype, stream, flags, counter, dev_us, sfmt, samples))
        else:
            payload = body[p_at : p_at + p_len].tobytes()
            fields = parse_fields(ptype, payload)
            append(Packet(ptype, stream, flags, counter, dev_us, fields=fields))
    return out


def _status_name(code: int) -> str:
    try:
        return CommandStatus(code).name.lower()
    except ValueError:
        return f"status_{code}"


def _command_name(code: int) -> str:
    t = _PTYPES.get(code)
    return t.name.lower() if t is not None and t.is_command else "unknown"


def _string(p: bytes, at: int) -> tuple[str, int]:
    n = p[at]
    return p[at + 1 : at + 1 + n].decode("ascii", errors="replace"), at + 1 + n


def _identify_fields(p: bytes, at: int) -> dict[str, Any]:
    device_id, at = _string(p, at)
    fw = [p[at], p[at + 1], p[at + 2]]
    proto, n_streams = p[at + 3], p[at + 4]
    at += 5
    streams = []
    for _ in range(n_streams):
        sid, kind, fmt, n_ch, spp, rate, scale = struct.unpack_from("<BBBBHIf", p, at)
        unit, at = _string(p, at + 14)
        try:
            kind_name = StreamKindCode(kind).name.lower()
        except ValueError:
            kind_name = f"kind_{kind}"
        fmt_name = _FORMATS[fmt].name.lower() if fmt in _FORMATS else f"format_{fmt}"
        streams.append(
            {
                "stream_id": sid,
                "kind": kind_name,
                "sample_format": fmt_name,
                "channel_count": n_ch,
                "samples_per_packet": spp,
                "rate_hz": rate,
                "scale": scale,
                "unit": unit,
            }
        )
    return {
        "device_id": device_id,
        "firmware_version": fw,
        "protocol_version": proto,
        "streams": streams,
    }


def _reply_fields(p: bytes) -> dict[str, Any]:
    cmd, status = p[0], p[1]
    out: dict[str, Any] = {
        "command": _command_name(cmd),
        "command_code": cmd,
        "status": _status_name(status),
    }
    if status != CommandStatus.OK:
        return out
    if cmd == PacketType.IDENTIFY:
        out.update(_identify_fields(p, 2))
    elif cmd in (PacketType.START, PacketType.STOP):
        out["running_mask"] = p[2]
    elif cmd == PacketType.SET_RATE:
        out["rate_hz"] = struct.unpack_from("<I", p, 2)[0]
    elif cmd == PacketType.LOOPBACK_TRIGGER:
        out["output_us"] = struct.unpack_from("<I", p, 2)[0]
    return out


def parse_fields(ptype: PacketType, payload: bytes) -> dict[str, Any]:
    """Named fields of a non-sample payload (already length-checked by the decoder).

    A reply whose body is cut short inside its variable part (a malformed identify reply with
    a good CRC) yields `{"malformed": True}` plus the fields read so far, never an exception.
    Bytes after the known fields are ignored: payloads may grow at the end within a version.
    """
    p = payload
    try:
        if ptype is PacketType.TRIGGER_EDGE:
            edge_us, pol, line, n = struct.unpack_from("<IBBI", p)
            return {"edge_us": edge_us, "polarity": pol, "line": line, "edge_counter": n}
        if ptype is PacketType.STATUS:
            mv, pct, mask, over, dropped, bad = struct.unpack_from("<HBBIII", p)
            return {
                "battery_mv": mv,
                "battery_pct": pct,
                "running_mask": mask,
                "buffer_overruns": over,
                "dropped_samples": dropped,
                "rx_bad_frames": bad,
            }
        if ptype is PacketType.TIME_SYNC_REPLY:
            seq, rx_us, tx_us = struct.unpack_from("<III", p)
            return {"host_seq": seq, "rx_us": rx_us, "tx_us": tx_us}
        if ptype is PacketType.COMMAND_REPLY:
            return _reply_fields(p)
        if ptype in (PacketType.START, PacketType.STOP):
            return {"stream_mask": p[0]}
        if ptype is PacketType.SET_RATE:
            return {"rate_hz": struct.unpack_from("<I", p)[0]}
        if ptype is PacketType.LOOPBACK_TRIGGER:
            return {"pulse_us": struct.unpack_from("<H", p)[0]}
    except (struct.error, IndexError):
        return {"malformed": True}
    return {}


def _frame(
    ptype: int,
    stream_id: int,
    flags: int,
    counter: int,
    device_us: int,
    sample_count: int,
    channel_count: int,
    fmt: int,
    payload: bytes,
) -> bytes:
    _check_range("stream_id", stream_id, 0xFF)
    _check_range("flags", flags, 0xFF)
    _check_range("counter", counter, 0xFFFFFFFF)
    _check_range("device_us", device_us, 0xFFFFFFFF)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"payload: {len(payload)} bytes exceed the protocol's {MAX_PAYLOAD}; "
            "send fewer samples per packet"
        )
    body = (
        _HEADER.pack(
            PROTOCOL_VERSION,
            ptype,
            flags,
            stream_id,
            counter,
            device_us,
            sample_count,
            channel_count,
            fmt,
        )
        + payload
    )
    body += crc16_ccitt_false(body).to_bytes(2, "little")
    return cobs_encode(body) + b"\x00"


def _check_range(name: str, value: int, hi: int) -> None:
    if not 0 <= value <= hi:
        raise ValueError(f"{name}: {value} is outside 0..{hi}")


def _encode_samples(samples: npt.ArrayLike, fmt: SampleFormat) -> tuple[bytes, int, int]:
    a = np.asarray(samples)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"samples: need a non-empty (n_samples, n_channels) array, got {a.shape}")
    if a.shape[0] > 0xFFFF or a.shape[1] > 0xFF:
        raise ValueError("samples: at most 65535 samples and 255 channels per packet")
    if fmt is SampleFormat.F32:
        return a.astype("<f4").tobytes(), a.shape[0], a.shape[1]
    lo, hi = {
        SampleFormat.I16: (-(1 << 15), (1 << 15) - 1),
        SampleFormat.I24: (-(1 << 23), (1 << 23) - 1),
        SampleFormat.I32: (-(1 << 31), (1 << 31) - 1),
    }[fmt]
    v = a.astype(np.int64)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"samples: values must lie in {lo}..{hi} for {fmt.name.lower()}")
    if fmt is SampleFormat.I16:
        return v.astype("<i2").tobytes(), a.shape[0], a.shape[1]
    if fmt is SampleFormat.I32:
        return v.astype("<i4").tobytes(), a.shape[0], a.shape[1]
    b = v.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    return b.tobytes(), a.shape[0], a.shape[1]


def _encode_str(s: str, max_len: int, name: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > max_len:
        raise ValueError(f"{name}: {s!r} is longer than {max_len} ASCII characters")
    return bytes([len(b)]) + b


_KIND_CODES = {kd.name.lower(): kd for kd in StreamKindCode}
_FORMAT_CODES = {f.name.lower(): f for f in SampleFormat}


def _encode_fields(ptype: PacketType, f: Mapping[str, Any]) -> bytes:
    if ptype is PacketType.TRIGGER_EDGE:
        return struct.pack("<IBBI", f["edge_us"], f["polarity"], f["line"], f["edge_counter"])
    if ptype is PacketType.STATUS:
        return struct.pack(
            "<HBBIII",
            f["battery_mv"],
            f["battery_pct"],
            f["running_mask"],
            f["buffer_overruns"],
            f["dropped_samples"],
            f["rx_bad_frames"],
        )
    if ptype is PacketType.TIME_SYNC_REPLY:
        return struct.pack("<III", f["host_seq"], f["rx_us"], f["tx_us"])
    if ptype is PacketType.COMMAND_REPLY:
        return _encode_reply(f)
    if ptype in (PacketType.START, PacketType.STOP):
        return struct.pack("<B", f["stream_mask"])
    if ptype is PacketType.SET_RATE:
        return struct.pack("<I", f["rate_hz"])
    if ptype is PacketType.LOOPBACK_TRIGGER:
        return struct.pack("<H", f["pulse_us"])
    return b""


def _encode_reply(f: Mapping[str, Any]) -> bytes:
    cmd = (
        int(f["command_code"])
        if "command_code" in f
        else int(PacketType[str(f["command"]).upper()])
    )
    status = CommandStatus[str(f.get("status", "ok")).upper()]
    out = bytes([cmd, status])
    if status is not CommandStatus.OK:
        return out
    if cmd == PacketType.IDENTIFY:
        out += _encode_str(f["device_id"], 32, "device_id")
        out += bytes([*f["firmware_version"], f.get("protocol_version", PROTOCOL_VERSION)])
        streams: Sequence[Mapping[str, Any]] = f["streams"]
        out += bytes([len(streams)])
        for s in streams:
            out += struct.pack(
                "<BBBBHIf",
                s["stream_id"],
                _KIND_CODES[s["kind"]],
                _FORMAT_CODES[s["sample_format"]],
                s["channel_count"],
                s["samples_per_packet"],
                s["rate_hz"],
                s["scale"],
            )
            out += _encode_str(s["unit"], 8, "unit")
    elif cmd in (PacketType.START, PacketType.STOP):
        out += bytes([f["running_mask"]])
    elif cmd == PacketType.SET_RATE:
        out += struct.pack("<I", f["rate_hz"])
    elif cmd == PacketType.LOOPBACK_TRIGGER:
        out += struct.pack("<I", f["output_us"])
    return out


def encode_packet(
    ptype: PacketType | int,
    *,
    stream_id: int = 0,
    flags: int = 0,
    counter: int = 0,
    device_us: int = 0,
    samples: npt.ArrayLike | None = None,
    sample_format: SampleFormat | int = SampleFormat.NONE,
    fields: Mapping[str, Any] | None = None,
    payload: bytes | None = None,
) -> bytes:
    """One wire frame (COBS-encoded, 0x00-terminated).

    Sample packets take `samples` (n_samples, n_channels) raw counts and `sample_format`.
    Other packets take `fields` (the names `Packet.fields` uses) or a raw `payload`.
    """
    code = int(ptype)
    _check_range("ptype", code, 0xFF)
    fmt = SampleFormat(sample_format)
    if code in (1, 2, 3):
        if samples is None or fmt is SampleFormat.NONE:
            raise ValueError("samples: sample packets need samples and a sample_format")
        data, n_s, n_ch = _encode_samples(samples, fmt)
        return _frame(code, stream_id, flags, counter, device_us, n_s, n_ch, fmt, data)
    if payload is None:
        payload = _encode_fields(PacketType(code), fields or {}) if code in _PTYPES else b""
    return _frame(code, stream_id, flags, counter, device_us, 0, 0, 0, payload)


def encode_command(
    command: PacketType | str,
    *,
    seq: int,
    stream_id: int = 0,
    stream_mask: int = 0xFF,
    rate_hz: int | None = None,
    pulse_us: int | None = None,
) -> bytes:
    """A host-to-device command frame. `seq` (the host's sequence number) comes back in the
    reply's `counter`; a time-sync ping's reply carries it as `host_seq`."""
    cmd = PacketType[command.upper()] if isinstance(command, str) else PacketType(command)
    if not cmd.is_command:
        raise ValueError(f"command: {cmd.name} is a device-to-host packet type, not a command")
    fields: dict[str, Any] = {}
    if cmd in (PacketType.START, PacketType.STOP):
        _check_range("stream_mask", stream_mask, 0xFF)
        fields["stream_mask"] = stream_mask
    elif cmd is PacketType.SET_RATE:
        if rate_hz is None or not 1 <= rate_hz <= 10000 or 1_000_000 % rate_hz:
            raise ValueError(
                f"rate_hz: {rate_hz} is not allowed; use 1..10000 Hz dividing 1000000 "
                "(e.g. 500, 1000, 2000, 4000)"
            )
        fields["rate_hz"] = rate_hz
    elif cmd is PacketType.LOOPBACK_TRIGGER:
        if pulse_us is None or not 1 <= pulse_us <= 0xFFFF:
            raise ValueError(f"pulse_us: {pulse_us} is not allowed; use 1..65535")
        fields["pulse_us"] = pulse_us
    return encode_packet(cmd, stream_id=stream_id, counter=seq, fields=fields)
