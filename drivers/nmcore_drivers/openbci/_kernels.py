"""Cyton packet framing kernel: a whole serial read in one call.

Packet (OpenBCI "Cyton Data Format", 33 bytes): 0xA0 | sample number (u8) | 8 x 24-bit
big-endian two's complement | 6 aux bytes | footer 0xC0-0xC6. Footers 0xC3-0xC6 carry a
32-bit big-endian board time (ms) in the last 4 aux bytes (bytes 29-32 of the packet).

There is no checksum, so framing rests on header and footer: while in step with the stream
one header+footer pair is enough; after losing step a candidate must be followed by a second
good packet, which makes a false lock on payload bytes unlikely (~1e-9 per position).
A bad packet while in step is skipped whole when the next one is good (a corrupted byte does
not move the boundaries), as are up to LOOK_AHEAD bad packets in a row when a good one
follows at the same alignment; otherwise the kernel hunts byte by byte.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit

__all__ = ["FRAME_LEN", "HEADER", "N_CHANNELS", "cyton_decode"]

FRAME_LEN = 33
HEADER = 0xA0
FOOTER_MIN = 0xC0
FOOTER_MAX = 0xC6
N_CHANNELS = 8
LOOK_AHEAD = 4  # packets past a bad one searched at the same alignment before hunting
STAT_BAD_FRAMES = 0
STAT_SKIPPED_BYTES = 1


@jit
def _good(buf: npt.NDArray[np.uint8], i: int) -> bool:
    return bool(buf[i] == 0xA0 and buf[i + 32] >= 0xC0 and buf[i + 32] <= 0xC6)


@jit
def _lock_between(buf: npt.NDArray[np.uint8], n: int, start: int, stop: int) -> bool:
    """Whether hunting would lock somewhere in [start, stop): bytes were lost or inserted,
    and skipping whole packets at the old alignment would throw good ones away."""
    for q in range(start, stop):  # noqa: SIM110 - an explicit loop compiles in numba
        if q + 66 <= n and _good(buf, q) and _good(buf, q + 33):
            return True
    return False


@jit
def _emit(
    buf: npt.NDArray[np.uint8],
    i: int,
    k: int,
    counters: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int32],
    aux: npt.NDArray[np.int16],
    footers: npt.NDArray[np.uint8],
    board_ms: npt.NDArray[np.int64],
) -> None:
    counters[k] = buf[i + 1]
    for ch in range(8):
        p = i + 2 + 3 * ch
        v = (np.int32(buf[p]) << 16) | (np.int32(buf[p + 1]) << 8) | np.int32(buf[p + 2])
        if v >= 0x800000:
            v -= 0x1000000
        counts[k, ch] = v
    for a in range(3):
        p = i + 26 + 2 * a
        w = (np.int32(buf[p]) << 8) | np.int32(buf[p + 1])
        if w >= 0x8000:
            w -= 0x10000
        aux[k, a] = w
    f = buf[i + 32]
    footers[k] = f
    if f >= 0xC3:
        board_ms[k] = (
            (np.int64(buf[i + 28]) << 24)
            | (np.int64(buf[i + 29]) << 16)
            | (np.int64(buf[i + 30]) << 8)
            | np.int64(buf[i + 31])
        )
    else:
        board_ms[k] = -1


@jit
def cyton_decode(
    buf: npt.NDArray[np.uint8],
    n: int,
    locked: bool,
    counters: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int32],
    aux: npt.NDArray[np.int16],
    footers: npt.NDArray[np.uint8],
    board_ms: npt.NDArray[np.int64],
    stats: npt.NDArray[np.int64],
) -> tuple[int, int, bool]:
    """Decode packets from `buf[:n]` into the output arrays (capacity >= n // 33).

    Returns (packets written, bytes consumed, in step). Bytes after `consumed` are an
    incomplete packet or need look-ahead: the caller keeps them for the next read.
    `stats[0]` += packets rejected, `stats[1]` += bytes skipped while hunting or rejecting.
    """
    i = 0
    k = 0
    while i + 33 <= n:
        if locked:
            if _good(buf, i):
                _emit(buf, i, k, counters, counts, aux, footers, board_ms)
                k += 1
                i += 33
                continue
            # corrupted bytes do not move packet boundaries: look for the stream again up to
            # LOOK_AHEAD packets further at the same alignment before hunting byte by byte
            if i + 66 > n:
                break  # decide once the next packet is here
            m = 1
            found = False
            while m <= LOOK_AHEAD and i + (m + 1) * 33 <= n:
                if _good(buf, i + m * 33):
                    found = not _lock_between(buf, n, i + 1, i + m * 33)
                    break
                m += 1
            if found:
                stats[0] += m
                stats[1] += m * 33
                i += m * 33
            else:
                stats[0] += 1
                locked = False
                stats[1] += 1
                i += 1
            continue
        if _good(buf, i):
            if i + 66 > n:
                break  # need the next packet to confirm
            if _good(buf, i + 33):
                _emit(buf, i, k, counters, counts, aux, footers, board_ms)
                k += 1
                i += 33
                locked = True
                continue
        stats[1] += 1
        i += 1
    return k, i, locked
