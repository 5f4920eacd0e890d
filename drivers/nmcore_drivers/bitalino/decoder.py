"""BITalino (r)evolution byte stream -> frames (pure: no I/O, no asyncio).

`BitalinoDecoder(n_analog).feed(bytes)` runs one numba kernel over the read and returns
`BitalinoFrames` as arrays; bad frames (CRC-4) and skipped bytes are counted, never raised.
`encode_frame` builds frames for emulators and tests; `crc4` is the frame checksum;
`emg_uv` is the BITalino EMG sensor's transfer function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nmcore_drivers.bitalino import _kernels as k

__all__ = [
    "EMG_GAIN",
    "VCC_V",
    "BitalinoDecoder",
    "BitalinoDecoderStats",
    "BitalinoFrames",
    "channel_bits",
    "crc4",
    "emg_uv",
    "encode_frame",
    "frame_len",
    "warm_up",
]

frame_len = k.frame_len
VCC_V = 3.3  # BITalino supply (datasheet)
EMG_GAIN = 1009.0  # G_EMG of the BITalino EMG sensor (datasheet)


def channel_bits(n_analog: int) -> tuple[int, ...]:
    """ADC resolution of each acquired channel, by position in the acquired list."""
    return tuple(10 if c < 4 else 6 for c in range(n_analog))


def emg_uv(
    adc: npt.ArrayLike, bits: npt.ArrayLike, vcc_v: float = VCC_V, gain: float = EMG_GAIN
) -> npt.NDArray[np.float64]:
    """BITalino EMG sensor: EMG(V) = (ADC / 2**n - 1/2) * VCC / G_EMG, returned in uV
    (range +-1.64 mV for VCC = 3.3 V, G = 1009)."""
    full = np.exp2(np.asarray(bits, dtype=np.float64))
    return (np.asarray(adc, dtype=np.float64) / full - 0.5) * (vcc_v / gain * 1e6)


def crc4(frame: bytes) -> int:
    """CRC-4 (x^4 + x + 1) of a frame, its own CRC nibble taken as zero."""
    r = 0
    for j, b in enumerate(frame):
        byte = b & 0xF0 if j == len(frame) - 1 else b
        r = int(k.CRC_HI[r]) ^ int(k.CRC_LO[byte])
    return r


@dataclass(slots=True)
class BitalinoDecoderStats:
    bytes_in: int = 0
    frames: int = 0
    bad_frames: int = 0
    skipped_bytes: int = 0


@dataclass(frozen=True, slots=True)
class BitalinoFrames:
    """Frames of one read, in order: `seq` 0-15, `digital` (n, 4) I1 I2 O1 O2, `analog`
    (n, n_analog) raw ADC values."""

    seq: npt.NDArray[np.int64]
    digital: npt.NDArray[np.uint8]
    analog: npt.NDArray[np.uint16]

    @property
    def n(self) -> int:
        return int(self.seq.shape[0])


@dataclass(slots=True)
class BitalinoDecoder:
    n_analog: int
    length: int = field(init=False, default=0)
    stats: BitalinoDecoderStats = field(default_factory=BitalinoDecoderStats)
    _pending: bytes = b""
    _state: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(2, np.int64))
    _kstats: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(2, np.int64))

    def __post_init__(self) -> None:
        self.length = frame_len(self.n_analog)

    def reset(self) -> None:
        """Forget partial bytes and the stream position (a new session)."""
        self._pending = b""
        self._state[:] = 0

    def feed(self, data: bytes) -> BitalinoFrames:
        self.stats.bytes_in += len(data)
        raw = self._pending + data if self._pending else data
        buf = np.frombuffer(raw, dtype=np.uint8)
        n = buf.shape[0]
        cap = n // self.length
        seq = np.empty(cap, np.int64)
        digital = np.empty((cap, 4), np.uint8)
        analog = np.empty((cap, self.n_analog), np.uint16)
        before = self._kstats.copy()
        nk, consumed = k.bitalino_decode(
            buf,
            n,
            self.length,
            self.n_analog,
            self._state,
            k.CRC_HI,
            k.CRC_LO,
            seq,
            digital,
            analog,
            self._kstats,
        )
        self._pending = raw[consumed:]
        self.stats.frames += nk
        self.stats.bad_frames += int(self._kstats[0] - before[0])
        self.stats.skipped_bytes += int(self._kstats[1] - before[1])
        return BitalinoFrames(seq[:nk], digital[:nk], analog[:nk])


def encode_frame(
    seq: int, analog: npt.ArrayLike, digital: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> bytes:
    """One frame as the device sends it (see `_kernels` for the layout). Raises ValueError
    for values that do not fit."""
    vals = [int(v) for v in np.asarray(analog).reshape(-1)]
    n = len(vals)
    length = frame_len(n)
    if not 0 <= seq <= 15:
        raise ValueError(f"seq must be 0-15, got {seq}")
    word = seq << 60
    for d, bit in enumerate(digital):
        if bit not in (0, 1):
            raise ValueError("digital values must be 0 or 1")
        word |= bit << (55 - d)
    pos = 52
    for c, v in enumerate(vals):
        width = 10 if c < 4 else 6
        if not 0 <= v < (1 << width):
            raise ValueError(f"channel {c + 1} value {v} does not fit {width} bits")
        pos -= width
        word |= v << pos
    rev = word.to_bytes(8, "big")[:length]
    frame = bytearray(rev[::-1])
    frame[-1] |= crc4(bytes(frame))
    return bytes(frame)


_warm = False


def warm_up() -> None:
    """Compile (or load from the cache) the kernel; run it off the event loop."""
    global _warm
    if not _warm:
        BitalinoDecoder(1).feed(b"".join(encode_frame(i, [0]) for i in range(3)))
        _warm = True
