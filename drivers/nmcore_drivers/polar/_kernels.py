"""Polar PMD delta-frame kernel (numba). The pure-Python twin is `delta_decode.py_func`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit

__all__ = ["ERR_BAD_WIDTH", "ERR_OVERFLOW", "ERR_TRUNCATED", "delta_decode"]

ERR_TRUNCATED = -1  # a reference sample, block header or block body runs past the payload
ERR_BAD_WIDTH = -2  # a block announces 0 or more than 32 bits per delta
ERR_OVERFLOW = -3  # more samples than the output holds (a corrupt sample count)


@jit
def delta_decode(
    buf: npt.NDArray[np.uint8],
    start: int,
    channels: int,
    ref_bits: int,
    out: npt.NDArray[np.int64],
) -> int:
    """Decode one delta-compressed PMD payload from `buf[start:]` into `out` (rows, channels).

    Layout: a reference sample (`channels` little-endian signed values of ceil(ref_bits/8)
    bytes), then blocks of [delta width in bits (1 byte), sample count (1 byte), count *
    channels deltas packed least-significant bit first, padded to a whole byte]. Each delta
    is two's complement in its width and adds to the previous sample of its channel.
    Returns the number of samples written, or a negative ERR_* code.
    """
    n = buf.shape[0]
    ref_bytes = (ref_bits + 7) // 8
    pos = start
    if pos + channels * ref_bytes > n:
        return ERR_TRUNCATED
    if out.shape[0] < 1:
        return ERR_OVERFLOW
    for c in range(channels):
        v = 0
        for b in range(ref_bytes):
            v |= int(buf[pos + b]) << (8 * b)
        sign = 1 << (8 * ref_bytes - 1)
        out[0, c] = (v ^ sign) - sign
        pos += ref_bytes
    row = 1
    while pos < n:
        if pos + 2 > n:
            return ERR_TRUNCATED
        bits = int(buf[pos])
        count = int(buf[pos + 1])
        pos += 2
        if bits == 0 or bits > 32:
            return ERR_BAD_WIDTH
        n_bytes = (bits * count * channels + 7) // 8
        if pos + n_bytes > n:
            return ERR_TRUNCATED
        if row + count > out.shape[0]:
            return ERR_OVERFLOW
        sign = 1 << (bits - 1)
        bit = 0
        for _s in range(count):
            for c in range(channels):
                v = 0
                for b in range(bits):
                    byte = int(buf[pos + (bit >> 3)])
                    v |= ((byte >> (bit & 7)) & 1) << b
                    bit += 1
                out[row, c] = out[row - 1, c] + ((v ^ sign) - sign)
            row += 1
        pos += n_bytes
    return row
