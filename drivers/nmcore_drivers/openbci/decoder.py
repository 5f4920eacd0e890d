"""OpenBCI Cyton byte stream -> packets (pure: no I/O, no asyncio).

`CytonDecoder.feed(bytes)` runs one numba kernel over the read (plus the bytes kept from the
previous read) and returns `CytonPackets` as arrays. Bad input is never an exception: it is
counted in `CytonDecoderStats`. `encode_packet` builds packets for emulators and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nmcore_drivers.openbci import _kernels as k

__all__ = [
    "ADS1299_VREF_V",
    "FRAME_LEN",
    "GAINS",
    "CytonDecoder",
    "CytonDecoderStats",
    "CytonPackets",
    "encode_packet",
    "uv_per_count",
    "warm_up",
]

FRAME_LEN = k.FRAME_LEN
N_CHANNELS = k.N_CHANNELS
ADS1299_VREF_V = 4.5  # the Cyton's ADS1299 reference
GAINS = (1, 2, 4, 6, 8, 12, 24)  # programmable gains of the ADS1299


def uv_per_count(gain: float) -> float:
    """OpenBCI's scale: uV = count * 4.5 V / gain / (2**23 - 1) * 1e6."""
    return ADS1299_VREF_V / gain / (2**23 - 1) * 1e6


@dataclass(slots=True)
class CytonDecoderStats:
    bytes_in: int = 0
    packets: int = 0
    bad_packets: int = 0
    skipped_bytes: int = 0


@dataclass(frozen=True, slots=True)
class CytonPackets:
    """Packets of one read, in order. `board_ms` is -1 where the footer carries no time."""

    counter: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int32]
    aux: npt.NDArray[np.int16]
    footer: npt.NDArray[np.uint8]
    board_ms: npt.NDArray[np.int64]

    @property
    def n(self) -> int:
        return int(self.counter.shape[0])


@dataclass(slots=True)
class CytonDecoder:
    """Keeps the partial packet between reads and whether it is in step with the stream."""

    stats: CytonDecoderStats = field(default_factory=CytonDecoderStats)
    _pending: bytes = b""
    _locked: bool = False
    _kstats: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(2, np.int64))

    def reset(self) -> None:
        """Forget partial bytes (a new session); counters keep counting."""
        self._pending = b""
        self._locked = False

    def feed(self, data: bytes) -> CytonPackets:
        self.stats.bytes_in += len(data)
        raw = self._pending + data if self._pending else data
        buf = np.frombuffer(raw, dtype=np.uint8)
        n = buf.shape[0]
        cap = n // FRAME_LEN
        counters = np.empty(cap, np.int64)
        counts = np.empty((cap, N_CHANNELS), np.int32)
        aux = np.empty((cap, 3), np.int16)
        footers = np.empty(cap, np.uint8)
        board_ms = np.empty(cap, np.int64)
        before = self._kstats.copy()
        nk, consumed, locked = k.cyton_decode(
            buf, n, self._locked, counters, counts, aux, footers, board_ms, self._kstats
        )
        self._locked = bool(locked)
        self._pending = raw[consumed:]
        self.stats.packets += nk
        self.stats.bad_packets += int(self._kstats[0] - before[0])
        self.stats.skipped_bytes += int(self._kstats[1] - before[1])
        return CytonPackets(counters[:nk], counts[:nk], aux[:nk], footers[:nk], board_ms[:nk])


def encode_packet(
    counter: int,
    counts: npt.ArrayLike,
    aux: tuple[int, int, int] = (0, 0, 0),
    footer: int = 0xC0,
    board_ms: int | None = None,
) -> bytes:
    """One 33-byte packet. With `board_ms` (footers 0xC3-0xC6) the last 4 aux bytes carry
    the time and only `aux[0]` is sent. Raises ValueError for values the format cannot carry."""
    vals = np.asarray(counts, dtype=np.int64).reshape(-1)
    if vals.shape[0] != N_CHANNELS:
        raise ValueError(f"need {N_CHANNELS} channel counts, got {vals.shape[0]}")
    if np.any(vals < -(2**23)) or np.any(vals >= 2**23):
        raise ValueError("channel counts must fit 24-bit two's complement")
    if not 0xC0 <= footer <= 0xC6:
        raise ValueError(f"footer must be 0xC0-0xC6, got {footer:#x}")
    out = bytearray([0xA0, counter & 0xFF])
    for v in vals.tolist():
        out += (v & 0xFFFFFF).to_bytes(3, "big")
    if footer >= 0xC3:
        if board_ms is None:
            raise ValueError(f"footer {footer:#x} carries a board time: pass board_ms")
        out += (aux[0] & 0xFFFF).to_bytes(2, "big")
        out += (board_ms & 0xFFFFFFFF).to_bytes(4, "big")
    else:
        for a in aux:
            out += (a & 0xFFFF).to_bytes(2, "big")
    out.append(footer)
    return bytes(out)


_warm = False


def warm_up() -> None:
    """Compile (or load from the cache) the kernel; run it off the event loop."""
    global _warm
    if not _warm:
        CytonDecoder().feed(encode_packet(0, [0] * 8) * 3)
        _warm = True
