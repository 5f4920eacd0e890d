"""BITalino (r)evolution frame kernel: a whole serial read in one call.

Frame layout (BITalino (r)evolution API): for N analog channels a frame is
ceil((12 + 10 N) / 8) bytes for N <= 4 and ceil((52 + 6 (N - 4)) / 8) bytes for N = 5, 6.
Read as one bit string starting at the MSB of the *last* byte and walking towards the first:
sequence number (4) | CRC (4) | digital I1 I2 O1 O2 (4) | channels 1-4 of the acquired list
(10 bits each) | channels 5-6 (6 bits each) | zero padding.

CRC-4: polynomial x^4 + x + 1, register 0, the frame's bits MSB first with the CRC nibble
taken as zero (so the register ends as the remainder of the whole frame polynomial).
Per byte: r' = (r * x^8 mod P) xor (byte mod P), looked up in two small tables.

No start byte: framing rests on the CRC (1/16 false accept) plus sequence numbers. While in
step a frame is accepted when its CRC holds and its sequence number follows the previous
one; a jump in the sequence (frames lost by the device) needs the next frame to confirm it.
After a bad frame the kernel first looks up to LOOK_AHEAD frames further at the same
alignment for two good frames with the expected sequence numbers (corruption without lost
bytes keeps the alignment). A good frame directly followed by a bad one cannot be confirmed
this way and is dropped (the sequence gap shows it): a 4-bit CRC is too weak to trust one
frame alone, and an invented EMG sample is worse than a counted missing one.
Out of step, a candidate needs a good CRC and a good next frame with the following sequence
number (false lock ~1/4096 per position).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit

__all__ = ["CRC_HI", "CRC_LO", "bitalino_decode", "crc4_tables", "frame_len"]

POLY_LOW = 0x3  # x^4 = x + 1 (mod P)
# How many frames past a bad one the kernel looks for the stream at the expected boundary
# before hunting byte by byte (a burst of corrupted frames keeps the frames after it).
LOOK_AHEAD = 4


def _mod_p(value: int, n_bits: int) -> int:
    """Remainder of the polynomial with coefficient bits `value` (n_bits long) mod P."""
    r = 0
    for b in range(n_bits - 1, -1, -1):
        top = (r >> 3) & 1
        r = ((r << 1) & 0xF) ^ (POLY_LOW if top else 0) ^ ((value >> b) & 1)
    return r


def crc4_tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """(r * x^8 mod P for r in 0..15, b mod P for b in 0..255)."""
    hi = np.array([_mod_p(r << 8, 12) for r in range(16)], np.uint8)
    lo = np.array([_mod_p(b, 8) for b in range(256)], np.uint8)
    return hi, lo


CRC_HI, CRC_LO = crc4_tables()


def frame_len(n_analog: int) -> int:
    """Bytes per frame for `n_analog` acquired channels (1-6)."""
    if not 1 <= n_analog <= 6:
        raise ValueError(f"a BITalino acquires 1 to 6 analog channels, not {n_analog}")
    bits = 12 + 10 * n_analog if n_analog <= 4 else 52 + 6 * (n_analog - 4)
    return (bits + 7) // 8


@jit
def _crc_ok(
    buf: npt.NDArray[np.uint8],
    i: int,
    length: int,
    hi: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.uint8],
) -> bool:
    r = np.int64(0)
    for j in range(length - 1):
        r = np.int64(hi[r]) ^ np.int64(lo[buf[i + j]])
    last = np.int64(buf[i + length - 1])
    r = np.int64(hi[r]) ^ np.int64(lo[last & 0xF0])
    return bool(r == (last & 0x0F))


@jit
def _seq(buf: npt.NDArray[np.uint8], i: int, length: int) -> int:
    return int(np.int64(buf[i + length - 1]) >> 4)


@jit
def _chain_ok(
    buf: npt.NDArray[np.uint8],
    p: int,
    length: int,
    count: int,
    first_seq: int,
    hi: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.uint8],
) -> bool:
    """`count` frames from `p` pass the CRC and number on from `first_seq` (-1: any)."""
    s = first_seq
    for j in range(count):
        q = p + j * length
        if not _crc_ok(buf, q, length, hi, lo):
            return False
        sq = _seq(buf, q, length)
        if s >= 0 and sq != s:
            return False
        s = (sq + 1) & 0xF
    return True


@jit
def _lock_between(
    buf: npt.NDArray[np.uint8],
    n: int,
    start: int,
    stop: int,
    length: int,
    hi: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.uint8],
) -> bool:
    """Whether hunting would lock somewhere in [start, stop)."""
    for q in range(start, stop):
        if q + 3 * length <= n and _chain_ok(buf, q, length, 3, -1, hi, lo):
            return True
    return False


@jit
def _emit(
    buf: npt.NDArray[np.uint8],
    i: int,
    length: int,
    n_analog: int,
    k: int,
    seq: npt.NDArray[np.int64],
    digital: npt.NDArray[np.uint8],
    analog: npt.NDArray[np.uint16],
) -> None:
    # the frame's bytes from last to first as one 64-bit word, MSB first (masks below make
    # the int64 sign irrelevant)
    acc = np.int64(0)
    for j in range(8):
        acc = acc << 8
        if j < length:
            acc = acc | np.int64(buf[i + length - 1 - j])
    seq[k] = (acc >> 60) & 0xF
    for d in range(4):
        digital[k, d] = (acc >> (55 - d)) & 1
    pos = 52
    for c in range(n_analog):
        width = 10 if c < 4 else 6
        pos -= width
        analog[k, c] = (acc >> pos) & ((1 << width) - 1)


@jit
def bitalino_decode(
    buf: npt.NDArray[np.uint8],
    n: int,
    length: int,
    n_analog: int,
    state: npt.NDArray[np.int64],
    hi: npt.NDArray[np.uint8],
    lo: npt.NDArray[np.uint8],
    seq: npt.NDArray[np.int64],
    digital: npt.NDArray[np.uint8],
    analog: npt.NDArray[np.uint16],
    stats: npt.NDArray[np.int64],
) -> tuple[int, int]:
    """Decode frames of `length` bytes from `buf[:n]` (output capacity >= n // length).

    `state`: [in step (0/1), last sequence number] carried between calls. Returns (frames
    written, bytes consumed). `stats[0]` += frames rejected, `stats[1]` += bytes skipped.
    """
    i = 0
    k = 0
    locked = state[0] != 0
    last = int(state[1])
    while i + length <= n:
        if locked:
            if _crc_ok(buf, i, length, hi, lo):
                s = _seq(buf, i, length)
                if s == (last + 1) & 0xF:
                    _emit(buf, i, length, n_analog, k, seq, digital, analog)
                    k += 1
                    last = s
                    i += length
                    continue
                # a sequence jump: lost frames, or a bad frame that passed the CRC; the next
                # two frames must number on from it
                if i + 3 * length > n:
                    break
                if _chain_ok(buf, i + length, length, 2, (s + 1) & 0xF, hi, lo):
                    _emit(buf, i, length, n_analog, k, seq, digital, analog)
                    k += 1
                    last = s
                    i += length
                    continue
            # corrupted bytes do not move frame boundaries: look for the stream again up
            # to LOOK_AHEAD frames further at the expected place and sequence number
            if i + 3 * length > n:
                break  # decide once the next two frames are here
            m = 1
            found = False
            while m <= LOOK_AHEAD and i + (m + 2) * length <= n:
                # the candidate and the frame after it must both check out: one 4-bit CRC
                # and sequence match alone lets 1 in 256 misaligned positions through
                if _chain_ok(buf, i + m * length, length, 2, (last + m + 1) & 0xF, hi, lo):
                    # bytes lost or inserted before it: hunting keeps the good frames between
                    found = not _lock_between(buf, n, i + 1, i + m * length, length, hi, lo)
                    break
                m += 1
            if found:
                stats[0] += m
                stats[1] += m * length
                last = (last + m) & 0xF
                i += m * length
            else:
                stats[0] += 1
                locked = False
                stats[1] += 1
                i += 1
            continue
        if i + 3 * length > n:
            break
        # out of step: three frames in a row must check out (a false lock on noise then
        # needs 3 CRC and 2 sequence coincidences, about 1 in a million positions)
        if _chain_ok(buf, i, length, 3, -1, hi, lo):
            _emit(buf, i, length, n_analog, k, seq, digital, analog)
            k += 1
            last = _seq(buf, i, length)
            i += length
            locked = True
            continue
        stats[1] += 1
        i += 1
    state[0] = 1 if locked else 0
    state[1] = last
    return k, i
