"""Vendor serial decoders: CytonDecoder and BitalinoDecoder (one numba kernel per read)
against a straightforward per-frame pure-Python decoder, on the same bytes in the same run.

Usage: .venv/bin/python benchmarks/bench_vendor_decoders.py [--smoke] [--chunk-bytes N]

Streams: Cyton packets (33 bytes, 8 x 24-bit channels) and BITalino frames with 6 analog
channels (8 bytes), fed in reads of `--chunk-bytes` (16 KiB by default, a large serial
read). Both decoders must return the same samples. Figures: MB/s of wire bytes (best of
several repeats) and the ratio to the baseline; one JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nmcore_drivers.bitalino._kernels import CRC_HI, CRC_LO
from nmcore_drivers.bitalino.decoder import BitalinoDecoder, encode_frame
from nmcore_drivers.openbci.decoder import CytonDecoder, encode_packet

_HI = [int(v) for v in CRC_HI]
_LO = [int(v) for v in CRC_LO]


def cyton_stream(n: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    pool = [encode_packet(0, rng.integers(-(2**23), 2**23, 8)) for _ in range(64)]
    out = bytearray()
    for i in range(n):
        p = bytearray(pool[i % 64])
        p[1] = i & 0xFF
        out += p
    return bytes(out)


def bitalino_stream(n: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray()
    for i in range(n):
        vals = [int(v) for v in rng.integers(0, 1024, 4)] + [int(v) for v in rng.integers(0, 64, 2)]
        out += encode_frame(i % 16, vals)
    return bytes(out)


class BaselineCyton:
    """What one writes first: a bytearray buffer, find the header, check the footer, decode
    the packet with int.from_bytes."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, list[int]]]:
        self.buf += data
        out = []
        i = 0
        buf = self.buf
        while i + 33 <= len(buf):
            if buf[i] != 0xA0 or not 0xC0 <= buf[i + 32] <= 0xC6:
                i += 1
                continue
            vals = [
                int.from_bytes(buf[i + 2 + 3 * c : i + 5 + 3 * c], "big", signed=True)
                for c in range(8)
            ]
            out.append((buf[i + 1], vals))
            i += 33
        del buf[:i]
        return out


class BaselineBitalino:
    """Per frame: CRC-4 bit by bit as the vendor API describes it, then the fields."""

    def __init__(self, n_analog: int, table: bool = False) -> None:
        self.n = n_analog
        self.table = table
        self.length = 8 if n_analog >= 5 else -(-(12 + 10 * n_analog) // 8)
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, list[int]]]:
        self.buf += data
        out = []
        i = 0
        buf, length = self.buf, self.length
        while i + length <= len(buf):
            frame = buf[i : i + length]
            x = 0
            if self.table:  # the same CRC, one table lookup per byte
                for j, b in enumerate(frame):
                    x = _HI[x] ^ _LO[b & 0xF0 if j == length - 1 else b]
            else:
                for j, b in enumerate(frame):
                    if j == length - 1:
                        b &= 0xF0
                    for bit in range(7, -1, -1):
                        x <<= 1
                        if x & 0x10:
                            x ^= 0x03
                        x ^= (b >> bit) & 1
            if (x & 0x0F) != (frame[-1] & 0x0F):
                i += 1
                continue
            word = int.from_bytes(bytes(frame[::-1]).ljust(8, b"\0"), "big")
            vals = []
            pos = 52
            for c in range(self.n):
                w = 10 if c < 4 else 6
                pos -= w
                vals.append((word >> pos) & ((1 << w) - 1))
            out.append((frame[-1] >> 4, vals))
            i += length
        del buf[:i]
        return out


def run(make: Callable[[], Any], stream: bytes, chunk: int, repeats: int) -> tuple[float, Any]:
    best = float("inf")
    result: Any = None
    for _ in range(repeats):
        dec = make()
        parts = []
        t0 = time.perf_counter()
        for pos in range(0, len(stream), chunk):
            parts.append(dec.feed(stream[pos : pos + chunk]))  # noqa: PERF401 - timed loop
        best = min(best, time.perf_counter() - t0)
        result = parts
    return best, result


def rows_fast(parts: list[Any], field: str) -> list[tuple[int, list[int]]]:
    out = []
    for p in parts:
        ctr = p.counter if field == "counts" else p.seq
        vals = p.counts if field == "counts" else p.analog
        out += [(int(c), [int(x) for x in v]) for c, v in zip(ctr, vals, strict=True)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="small streams, one repeat")
    ap.add_argument("--chunk-bytes", type=int, default=16384)
    args = ap.parse_args()
    n_fast = 3000 if args.smoke else 200_000
    n_base = 3000 if args.smoke else 20_000
    repeats = 1 if args.smoke else 5
    CytonDecoder().feed(cyton_stream(3))  # compile outside the timing
    BitalinoDecoder(6).feed(bitalino_stream(3))

    # (name, stream maker, fast decoder, baseline decoder, the field both must agree on)
    cases: list[tuple[str, Callable[[int], bytes], Callable[[], Any], Callable[[], Any], str]] = [
        ("cyton", cyton_stream, CytonDecoder, BaselineCyton, "counts"),
        (
            "bitalino_6ch",
            bitalino_stream,
            lambda: BitalinoDecoder(6),
            lambda: BaselineBitalino(6),
            "analog",
        ),
        (
            "bitalino_6ch_vs_table_crc",
            bitalino_stream,
            lambda: BitalinoDecoder(6),
            lambda: BaselineBitalino(6, table=True),
            "analog",
        ),
    ]
    for name, make_stream, fast, base, field in cases:
        stream = make_stream(n_fast)
        small = make_stream(n_base)
        t_fast, _parts = run(fast, stream, args.chunk_bytes, repeats)
        t_base, bparts = run(base, small, args.chunk_bytes, max(1, repeats // 2))
        # same samples from both on the baseline's stream
        _, check = run(fast, small, args.chunk_bytes, 1)
        got = rows_fast(check, field)
        ref = [r for p in bparts for r in p]
        if got != ref:
            raise SystemExit(f"{name}: decoders disagree ({len(got)} vs {len(ref)} frames)")
        mbs = len(stream) / t_fast / 1e6
        mbs_base = len(small) / t_base / 1e6
        print(
            json.dumps(
                {
                    "name": f"vendor_decoder_{name}_throughput",
                    "value": round(mbs, 2),
                    "unit": "MB/s",
                    "baseline": {
                        "name": f"per-frame pure-Python {name} decoder",
                        "value": round(mbs_base, 3),
                    },
                    "ratio": round(mbs / mbs_base, 1),
                    "chunk_bytes": args.chunk_bytes,
                }
            )
        )


if __name__ == "__main__":
    main()
