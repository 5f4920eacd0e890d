"""Frame decoder throughput: FrameDecoder (one numba kernel per read) against a
straightforward per-frame pure-Python decoder, on the same bytes in the same run.

Usage: .venv/bin/python benchmarks/bench_framing.py [--smoke] [--chunk-bytes N]

A second figure compares against the same per-frame decoder with numpy unpacking the
samples (what one writes second), on the full stream.

The stream: EMG packets of 16 channels x 32 samples (i24, the largest packet of protocol v1,
1562 bytes on the wire; then the same with i16), with a status packet every 100 EMG packets
and a trigger edge every 50, fed in reads of `--chunk-bytes` (a serial read of 16 KiB by
default). Both decoders must produce the same samples; the figures are MB/s of wire bytes
(best of several repeats) and the ratio to the baseline.

One JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import binascii
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.framing import FrameDecoder, PacketType, SampleFormat, cobs_decode, encode_packet
from nmcore.framing.cobs import CobsError


def make_stream(n_packets: int, fmt: SampleFormat, seed: int = 1) -> tuple[bytes, int]:
    rng = np.random.default_rng(seed)
    lim = 1 << (23 if fmt is SampleFormat.I24 else 15)
    frames: list[bytes] = []
    # A pool of distinct packets, reused with fresh counters: encoding in Python is slow.
    pool = [rng.integers(-lim, lim, (32, 16)) for _ in range(16)]
    n_samples = 0
    for i in range(n_packets):
        frames.append(
            encode_packet(
                PacketType.EMG,
                counter=32 * i,
                device_us=(16000 * i) % 2**32,
                samples=pool[i % len(pool)],
                sample_format=fmt,
            )
        )
        n_samples += 32
        if i % 50 == 0:
            f = {"edge_us": i, "polarity": 1, "line": 0, "edge_counter": i}
            frames.append(encode_packet(PacketType.TRIGGER_EDGE, counter=i, fields=f))
        if i % 100 == 0:
            f = {
                "battery_mv": 3700,
                "battery_pct": 80,
                "running_mask": 1,
                "buffer_overruns": 0,
                "dropped_samples": 0,
                "rx_bad_frames": 0,
            }
            frames.append(encode_packet(PacketType.STATUS, counter=i, fields=f))
    return b"".join(frames), n_samples


class BaselineDecoder:
    """What one writes first: buffer the bytes, split at 0x00, decode each frame in Python."""

    def __init__(self, numpy_samples: bool = False) -> None:
        self.buf = b""
        self.bad = 0
        self.numpy_samples = numpy_samples

    def feed(self, chunk: bytes) -> list[tuple[int, int, int, npt.NDArray[np.int32] | None]]:
        self.buf += chunk
        *frames, self.buf = self.buf.split(b"\x00")
        out = []
        for f in frames:
            if not f:
                continue
            try:
                body = cobs_decode(f)
            except CobsError:
                self.bad += 1
                continue
            if len(body) < 18 or binascii.crc_hqx(body[:-2], 0xFFFF) != int.from_bytes(
                body[-2:], "little"
            ):
                self.bad += 1
                continue
            _, ptype, _, _, counter, _, n_s, n_ch, fmt = struct.unpack_from("<BBBBIIHBB", body)
            payload = body[16:-2]
            samples = None
            if ptype in (1, 2, 3) and self.numpy_samples:
                samples = _np_samples(payload, fmt).reshape(n_s, n_ch)
            elif ptype in (1, 2, 3):
                width = {1: 2, 2: 3, 3: 4}[fmt]
                values = [
                    int.from_bytes(payload[i : i + width], "little", signed=True)
                    for i in range(0, len(payload), width)
                ]
                samples = np.array(values, dtype=np.int32).reshape(n_s, n_ch)
            out.append((ptype, counter, n_s, samples))
        return out


def _np_samples(payload: bytes, fmt: int) -> npt.NDArray[np.int32]:
    raw = np.frombuffer(payload, dtype=np.uint8)
    if fmt == 1:
        return raw.view("<i2").astype(np.int32)
    if fmt == 2:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.int32)
    return raw.view("<i4").astype(np.int32)


def run(feed: Callable[[bytes], list[Any]], data: bytes, chunk: int) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    out: list[Any] = []
    for i in range(0, len(data), chunk):
        out += feed(data[i : i + chunk])
    return time.perf_counter() - t0, out


def best_times(
    fast: Callable[[], Callable[[bytes], list[Any]]],
    fast_data: bytes,
    base: Callable[[], Callable[[bytes], list[Any]]],
    base_data: bytes,
    chunk: int,
    repeats: int,
) -> tuple[float, list[Any], float, list[Any]]:
    """Best of `repeats`, the two decoders alternating so that load from other processes on
    a shared machine hits both alike."""
    t_fast = t_base = float("inf")
    out_fast: list[Any] = []
    out_base: list[Any] = []
    for _ in range(repeats):
        dt, out_fast = run(fast(), fast_data, chunk)
        t_fast = min(t_fast, dt)
        dt, out_base = run(base(), base_data, chunk)
        t_base = min(t_base, dt)
    return t_fast, out_fast, t_base, out_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="small stream, one repeat")
    ap.add_argument("--chunk-bytes", type=int, default=16384)
    args = ap.parse_args()
    n_packets = 300 if args.smoke else 12000
    repeats = 1 if args.smoke else 5
    base_packets = n_packets if args.smoke else 1500  # the baseline is slow: a smaller stream
    FrameDecoder().feed(make_stream(2, SampleFormat.I24)[0])  # compile / load the kernels

    for fmt in (SampleFormat.I24, SampleFormat.I16):
        data, _ = make_stream(n_packets, fmt)
        base_data, _ = make_stream(base_packets, fmt)
        t_fast, pk, t_base, pb = best_times(
            lambda: FrameDecoder().feed,
            data,
            lambda: BaselineDecoder().feed,
            base_data,
            args.chunk_bytes,
            repeats,
        )
        # Same answers on the common prefix.
        fast_emg = [p for p in pk if p.ptype is PacketType.EMG]
        base_emg = [p for p in pb if p[0] == PacketType.EMG]
        assert len(fast_emg) == n_packets
        assert len(base_emg) == base_packets
        for a, b in zip(fast_emg[:50], base_emg[:50], strict=True):
            assert a.counter == b[1]
            np.testing.assert_array_equal(a.samples, b[3])
        mbps = len(data) / t_fast / 1e6
        base_mbps = len(base_data) / t_base / 1e6
        name = fmt.name.lower()
        print(
            json.dumps(
                {
                    "name": f"frame_decode_emg16x32_{name}_throughput",
                    "value": round(mbps, 1),
                    "unit": "MB/s",
                    "baseline": {
                        "name": "per-frame pure-Python decoder",
                        "value": round(base_mbps, 2),
                    },
                    "ratio": round(mbps / base_mbps, 1),
                    "chunk_bytes": args.chunk_bytes,
                    "stream_bytes": len(data),
                }
            )
        )
        t_np, _, t_np_base, pn = best_times(
            lambda: FrameDecoder().feed,
            data,
            lambda: BaselineDecoder(numpy_samples=True).feed,
            data,
            args.chunk_bytes,
            max(1, repeats // 2),
        )
        np_mbps = len(data) / t_np_base / 1e6
        print(
            json.dumps(
                {
                    "name": f"frame_decode_emg16x32_{name}_vs_numpy_per_frame",
                    "value": round(len(data) / t_np / 1e6, 1),
                    "unit": "MB/s",
                    "baseline": {
                        "name": "per-frame Python decoder with numpy sample unpacking",
                        "value": round(np_mbps, 1),
                    },
                    "ratio": round(len(data) / t_np / 1e6 / np_mbps, 1),
                }
            )
        )
        assert len(pn) == len(pk)
        samples_per_s = n_packets * 32 * 16 / t_fast
        print(
            json.dumps(
                {
                    "name": f"frame_decode_emg16x32_{name}_channel_samples",
                    "value": round(samples_per_s / 1e6, 1),
                    "unit": "M channel-samples/s",
                    "baseline": {
                        "name": "per-frame pure-Python decoder",
                        "value": round(base_packets * 512 / t_base / 1e6, 2),
                    },
                    "ratio": round(mbps / base_mbps, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
