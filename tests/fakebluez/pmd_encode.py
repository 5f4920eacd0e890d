"""Polar PMD frame *encoders* for the emulator and the decoder tests.

Written independently of the decoder (nmcore_drivers.polar.pmd) from Polar's published
description of the format, so the two check each other: header = measurement type (1 byte),
timestamp of the LAST sample in ns since 2000-01-01 (uint64 LE), frame type (1 byte, bit 7 =
delta compressed); raw frames hold little-endian signed samples channel after channel;
compressed frames hold one reference sample, then blocks of (delta bit width, sample count,
deltas packed LSB-first, each block padded to a whole byte).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

__all__ = ["encode_compressed", "encode_raw"]


def _header(meas_type: int, timestamp_ns: int, frame_type: int) -> bytes:
    return struct.pack("<BQB", meas_type, timestamp_ns, frame_type)


def encode_raw(
    meas_type: int,
    timestamp_ns: int,
    frame_type: int,
    samples: npt.ArrayLike,
    bytes_per_value: int,
) -> bytes:
    """(n, channels) integer samples, each value `bytes_per_value` bytes little-endian."""
    arr = np.asarray(samples, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[:, None]
    out = bytearray(_header(meas_type, timestamp_ns, frame_type))
    for v in arr.reshape(-1).tolist():
        out += int(v).to_bytes(bytes_per_value, "little", signed=True)
    return bytes(out)


def _bits_needed(deltas: npt.NDArray[np.int64]) -> int:
    lo, hi = int(deltas.min()), int(deltas.max())
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def encode_compressed(
    meas_type: int,
    timestamp_ns: int,
    frame_type: int,
    samples: npt.ArrayLike,
    ref_bits: int,
    block_len: int = 16,
) -> bytes:
    """Delta-compress (n, channels) samples: reference sample in `ref_bits` per channel,
    then blocks of at most `block_len` samples, each with the smallest bit width that holds
    all its deltas."""
    arr = np.asarray(samples, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[:, None]
    out = bytearray(_header(meas_type, timestamp_ns, frame_type | 0x80))
    ref_bytes = (ref_bits + 7) // 8
    for v in arr[0].tolist():
        out += int(v).to_bytes(ref_bytes, "little", signed=True)
    deltas = np.diff(arr, axis=0)
    for start in range(0, deltas.shape[0], block_len):
        block = deltas[start : start + block_len]
        bits = _bits_needed(block)
        out += bytes([bits, block.shape[0]])
        acc = 0
        n_bits = 0
        mask = (1 << bits) - 1
        for v in block.reshape(-1).tolist():
            acc |= (int(v) & mask) << n_bits
            n_bits += bits
        out += acc.to_bytes((n_bits + 7) // 8, "little")
    return bytes(out)
