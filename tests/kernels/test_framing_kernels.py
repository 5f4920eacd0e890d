"""Frame kernels: `decode_frames` and `crc16` against a plain Python/numpy reference written
from firmware/PROTOCOL.md, and against their own `.py_func`."""

from __future__ import annotations

import binascii
import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nmcore.framing import SampleFormat, cobs_decode, encode_command, encode_packet
from nmcore.framing import _kernels as k
from nmcore.framing.cobs import CobsError

DECODE_IMPLS = [
    pytest.param(k.decode_frames, id="jit"),
    pytest.param(k.decode_frames.py_func, id="py_func"),  # type: ignore[attr-defined]
]

SAMPLE_TYPES = {1, 2, 3}
KNOWN = {1, 2, 3, 0x10, 0x11, 0x20, 0x21, *range(0x80, 0x86)}
MIN_PAYLOAD = {0x10: 10, 0x11: 16, 0x21: 12, 0x20: 2, 0x81: 1, 0x82: 1, 0x83: 4, 0x85: 2}
WIDTH = {1: 2, 2: 3, 3: 4, 4: 4}


def reference_decode(
    buf: bytes, skip_first: bool
) -> tuple[list[list[int]], list[int], npt.NDArray[np.int32], int]:
    """Per-frame Python: split at zeros, cobs.py, binascii CRC, struct, numpy sample views."""
    counts = [0] * k.CNT_LEN
    rows: list[list[int]] = []
    ints: list[npt.NDArray[np.int32]] = []
    parts = buf.split(b"\x00")
    consumed = len(buf) - len(parts[-1])
    body_at = n_ints = 0
    for i, seg in enumerate(parts[:-1]):
        if i == 0 and skip_first:
            counts[k.CNT_GARBAGE_BYTES] += len(seg)
            continue
        if not seg:
            continue
        reject = None
        if len(seg) > k.MAX_WIRE:
            reject = k.CNT_OVERSIZE
        else:
            try:
                body = cobs_decode(seg)
            except CobsError:
                reject = k.CNT_BAD_COBS
        if reject is None:
            reject = _validate(body)
        if reject is not None:
            counts[reject] += 1
            counts[k.CNT_GARBAGE_BYTES] += len(seg)
            continue
        _ver, pt, fl, sid, ctr, dus, ns, nch, fmt = struct.unpack_from("<BBBBIIHBB", body)
        row = [pt, fl, sid, ctr, dus, ns, nch, fmt, body_at + 16, len(body) - 18, -1]
        if pt in SAMPLE_TYPES:
            raw = np.frombuffer(body[16:-2], dtype=np.uint8)
            ints.append(_unpack(raw, fmt))
            row[10] = n_ints
            n_ints += ns * nch
        rows.append(row)
        body_at += len(body)
        counts[k.CNT_OK] += 1
    all_ints = np.concatenate(ints) if ints else np.zeros(0, dtype=np.int32)
    return rows, counts, all_ints, consumed


def _validate(body: bytes) -> int | None:
    if not 18 <= len(body) <= k.MAX_BODY:
        return k.CNT_TRUNCATED
    if binascii.crc_hqx(body[:-2], 0xFFFF) != int.from_bytes(body[-2:], "little"):
        return k.CNT_BAD_CRC
    if body[0] != 1:
        return k.CNT_BAD_VERSION
    if body[1] not in KNOWN:
        return k.CNT_UNKNOWN_TYPE
    plen = len(body) - 18
    if body[1] in SAMPLE_TYPES:
        ns, nch, fmt = struct.unpack_from("<HBB", body, 12)
        if fmt not in WIDTH or nch == 0 or ns * nch * WIDTH[fmt] != plen:
            return k.CNT_TRUNCATED
    elif plen < MIN_PAYLOAD.get(body[1], 0):
        return k.CNT_TRUNCATED
    return None


def _unpack(raw: npt.NDArray[np.uint8], fmt: int) -> npt.NDArray[np.int32]:
    if fmt == SampleFormat.I16:
        return raw.view("<i2").astype(np.int32)
    if fmt == SampleFormat.I24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.int32)
    return raw.view("<i4").astype(np.int32)  # i32, and f32 as raw bits


def run_kernel(
    fn: Callable[..., Any], buf: bytes, skip_first: bool
) -> tuple[list[list[int]], list[int], npt.NDArray[np.int32], int]:
    a = np.frombuffer(buf, dtype=np.uint8)
    body = np.zeros(len(buf), dtype=np.uint8)
    ints = np.zeros(len(buf) // 2 + 1, dtype=np.int32)
    info = np.zeros((buf.count(0), k.INFO_LEN), dtype=np.int64)
    counts = np.zeros(k.CNT_LEN, dtype=np.int64)
    n, consumed = fn(a, skip_first, body, ints, info, counts)
    rows = info[:n].tolist()
    n_ints = sum(r[5] * r[6] for r in rows if r[10] >= 0)
    # The payloads the rows point at must be the decoded bytes.
    for r in rows:
        assert len(body[r[8] : r[8] + r[9]]) == r[9]
    return rows, counts.tolist(), ints[:n_ints].copy(), int(consumed)


def _stream(rng: random.Random, n_frames: int) -> bytes:
    out = bytearray()
    for i in range(n_frames):
        kind = rng.randrange(6)
        if kind == 0:
            out += encode_command("set_rate", seq=i, rate_hz=1000)
        elif kind == 1:
            fields = {"edge_us": i, "polarity": i & 1, "line": 0, "edge_counter": i}
            out += encode_packet(0x10, counter=i, fields=fields)
        else:
            fmt = SampleFormat(rng.randrange(1, 5))
            nch = rng.randrange(1, 17)
            ns = rng.randrange(1, min(32, 1536 // (nch * fmt.width)) + 1)
            lim = {1: 1 << 15, 2: 1 << 23, 3: 1 << 31, 4: 1 << 20}[fmt]
            vals = np.array([[rng.randrange(-lim, lim) for _ in range(nch)] for _ in range(ns)])
            data = vals.astype(np.float32) / 7 if fmt is SampleFormat.F32 else vals
            out += encode_packet(rng.choice([1, 2, 3]), counter=i, samples=data, sample_format=fmt)
    return bytes(out)


def _mutate(rng: random.Random, data: bytes, n_mut: int) -> bytes:
    b = bytearray(data)
    for _ in range(n_mut):
        op = rng.randrange(3)
        at = rng.randrange(len(b) + 1)
        if op == 0 and at < len(b):
            b[at] ^= rng.randrange(1, 256)
        elif op == 1:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        elif at < len(b):
            del b[at : at + rng.randrange(1, 5)]
    return bytes(b)


def _cases() -> list[tuple[str, bytes, bool]]:
    rng = random.Random(7)
    clean = _stream(rng, 60)
    cases = [
        ("clean", clean, False),
        ("clean_skip_first", clean, True),
        ("partial_tail", clean[:-37], False),
        ("random_bytes", bytes(rng.randrange(256) for _ in range(5000)), False),
        ("mutated", _mutate(rng, clean, 40), False),
        ("heavily_mutated", _mutate(rng, clean, 400), True),
        ("oversize_run", b"\x05" * (k.MAX_WIRE + 10) + b"\x00" + clean, False),
        ("only_delimiters", b"\x00" * 50, False),
        ("empty", b"", False),
    ]
    cases += [
        (f"mutated_{i}", _mutate(rng, _stream(rng, 10), rng.randrange(1, 20)), False)
        for i in range(20)
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("impl", DECODE_IMPLS)
@pytest.mark.parametrize(("name", "buf", "skip"), CASES, ids=[c[0] for c in CASES])
def test_decode_frames_matches_reference(
    impl: Callable[..., Any], name: str, buf: bytes, skip: bool
) -> None:
    rows, counts, ints, consumed = run_kernel(impl, buf, skip)
    ref_rows, ref_counts, ref_ints, ref_consumed = reference_decode(buf, skip)
    assert rows == ref_rows
    assert counts == ref_counts
    np.testing.assert_array_equal(ints, ref_ints)
    assert consumed == ref_consumed
    if name == "clean":
        assert counts[k.CNT_OK] == 60
        assert sum(counts[1:]) == 0


def test_decode_frames_f32_bits_survive() -> None:
    vals = np.array([[1.5, -2.25, np.inf], [np.nan, 0.0, -0.0]], dtype=np.float32)
    buf = encode_packet(2, samples=vals, sample_format=SampleFormat.F32)
    rows, _, ints, _ = run_kernel(k.decode_frames, buf, False)
    assert rows[0][7] == SampleFormat.F32
    np.testing.assert_array_equal(ints.view(np.float32).reshape(2, 3), vals)


CRC_IMPLS = [
    pytest.param(k.crc16, id="jit"),
    pytest.param(k.crc16.py_func, id="py_func"),  # type: ignore[attr-defined]
]


@pytest.mark.parametrize("impl", CRC_IMPLS)
def test_crc16_matches_binascii(impl: Callable[..., int]) -> None:
    rng = np.random.default_rng(3)
    assert impl(np.frombuffer(b"123456789", dtype=np.uint8), 0, 9) == 0x29B1
    for n in (0, 1, 2, 17, 255, 1554):
        data = rng.integers(0, 256, n + 5, dtype=np.uint8)
        assert impl(data, 3, 3 + n) == binascii.crc_hqx(data[3 : 3 + n].tobytes(), 0xFFFF)
