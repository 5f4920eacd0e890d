"""Session recorder throughput at the lab rig's data rate, against a naive numpy recorder.

The rig: 16 EMG channels at 2 kHz, 3 IMUs x 6 channels at 1 kHz, one 6-axis force plate at
1 kHz, in 10 ms blocks, with a flush (incl. fdatasync) every second of data. Data is fed as
fast as the CPU allows, so "CPU share" is CPU seconds per second of recorded data (the
fraction of one core recording takes in real time).

Baseline: the obvious numpy recorder, `np.savetxt` of every block (time + channels) into a
CSV file per stream, flush + fsync every second.

Figures (one JSON object per line): CPU share, bytes per hour, write amplification (bytes on
disk / the float64 sample values handed to the recorder), flush latency p50/p99 incl.
fdatasync, and the event-loop cost of one `write_samples` call. `--smoke` runs a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.record import OsSegmentFile, SessionRecorder

BLOCK_S = 0.01


class StepClock:
    """Host clock advanced by the benchmark to the data time being fed."""

    def __init__(self) -> None:
        self.t_s = 5000.0

    def now(self) -> float:
        return self.t_s

    async def sleep_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


def rig() -> list[StreamDescriptor]:
    emg = StreamDescriptor(
        "emg", "emg", StreamKind.EMG, 2000.0, tuple(ChannelSpec(f"m{i}", "uV") for i in range(16))
    )
    imus = [
        StreamDescriptor(
            f"imu{k}",
            f"imu{k}",
            StreamKind.IMU,
            1000.0,
            tuple(
                ChannelSpec(n, u)
                for n, u in zip(
                    ("ax", "ay", "az", "gx", "gy", "gz"), ["m/s2"] * 3 + ["deg/s"] * 3, strict=True
                )
            ),
        )
        for k in range(3)
    ]
    plate = StreamDescriptor(
        "plate",
        "plate",
        StreamKind.FORCE,
        1000.0,
        tuple(
            ChannelSpec(n, "N" if n[0] == "f" else "N.m")
            for n in ("fx", "fy", "fz", "mx", "my", "mz")
        ),
    )
    return [emg, *imus, plate]


class TimedFile(OsSegmentFile):
    """The real segment file, timing each fdatasync (to split a flush into encode and sync)."""

    sync_ms: list[float] = []  # noqa: RUF012 - one list per run, reset by run_recorder

    def sync(self) -> None:
        t0 = time.perf_counter()
        super().sync()
        TimedFile.sync_ms.append((time.perf_counter() - t0) * 1e3)


@dataclass
class Blocks:
    desc: StreamDescriptor
    n: int
    data: np.ndarray  # a pool of blocks to cycle through (realistic values, not zeros)


def make_blocks(descs: list[StreamDescriptor], rng: np.random.Generator) -> list[Blocks]:
    out = []
    for d in descs:
        n = round(d.rate_hz * BLOCK_S)
        pool = np.cumsum(rng.normal(size=(50 * n, d.n_channels)), axis=0) * 3.0
        out.append(Blocks(d, n, pool))
    return out


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    data_s: float
    disk_bytes: int
    raw_bytes: int
    flush_ms: list[float]
    write_us: list[float]
    sync_ms: list[float]


def run_recorder(root: Path, seconds: float, dtype: str, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    descs = rig()
    blocks = make_blocks(descs, rng)
    clock = StepClock()
    TimedFile.sync_ms = []
    rec = SessionRecorder(
        root,
        "bench",
        "[station]\n",
        clock=clock,
        min_free_mb=0,
        sample_dtype=dtype,  # type: ignore[arg-type]
        opener=TimedFile,
    )
    for d in descs:
        rec.declare_stream(d)
    next_idx = {b.desc.stream_id: 0 for b in blocks}
    flush_ms: list[float] = []
    write_us: list[float] = []
    raw = 0
    n_steps = round(seconds / BLOCK_S)
    per_flush = round(1.0 / BLOCK_S)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for step in range(n_steps):
        for b in blocks:
            i0 = next_idx[b.desc.stream_id]
            lo = (step % 50) * b.n
            data = b.data[lo : lo + b.n]
            t = 5000.0 + (i0 + np.arange(b.n)) / b.desc.rate_hz
            w0 = time.perf_counter()
            rec.write_samples(b.desc, i0, data, t, counter=i0 & 0xFFFF)
            write_us.append((time.perf_counter() - w0) * 1e6)
            next_idx[b.desc.stream_id] = i0 + b.n
            raw += data.nbytes
        clock.t_s += BLOCK_S
        if (step + 1) % per_flush == 0:
            f0 = time.perf_counter()
            rec.flush()
            flush_ms.append((time.perf_counter() - f0) * 1e3)
    rec.close()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert rec.recording_state == "closed", rec.stop_reason
    assert rec.session_dir is not None
    disk = sum(p.stat().st_size for p in rec.session_dir.iterdir())
    return Run(cpu, wall, seconds, disk, raw, flush_ms, write_us, TimedFile.sync_ms)


def run_baseline(root: Path, seconds: float, seed: int) -> Run:
    """The naive recorder: np.savetxt per block into per-stream CSV files."""
    rng = np.random.default_rng(seed)
    blocks = make_blocks(rig(), rng)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, IO[bytes]] = {
        b.desc.stream_id: (root / f"{b.desc.stream_id}.csv").open("wb") for b in blocks
    }
    next_idx = {b.desc.stream_id: 0 for b in blocks}
    flush_ms: list[float] = []
    write_us: list[float] = []
    raw = 0
    n_steps = round(seconds / BLOCK_S)
    per_flush = round(1.0 / BLOCK_S)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for step in range(n_steps):
        for b in blocks:
            i0 = next_idx[b.desc.stream_id]
            lo = (step % 50) * b.n
            data = b.data[lo : lo + b.n]
            t = 5000.0 + (i0 + np.arange(b.n)) / b.desc.rate_hz
            w0 = time.perf_counter()
            np.savetxt(
                files[b.desc.stream_id], np.column_stack([t, data]), fmt="%.9g", delimiter=","
            )
            write_us.append((time.perf_counter() - w0) * 1e6)
            next_idx[b.desc.stream_id] = i0 + b.n
            raw += data.nbytes
        if (step + 1) % per_flush == 0:
            f0 = time.perf_counter()
            for f in files.values():
                f.flush()
                os.fsync(f.fileno())
            flush_ms.append((time.perf_counter() - f0) * 1e3)
    for f in files.values():
        f.close()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    disk = sum(p.stat().st_size for p in root.iterdir())
    return Run(cpu, wall, seconds, disk, raw, flush_ms, write_us, [])


def emit(name: str, value: float, unit: str, base_name: str, base: float, **extra: Any) -> None:
    ratio = base / value if value else None
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value, 6),
                "unit": unit,
                "baseline": {"name": base_name, "value": round(base, 6)},
                "ratio": None if ratio is None else round(ratio, 3),
                **extra,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds of data only")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of rig data to record")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    seconds = args.seconds or (5.0 if args.smoke else 60.0)
    root = Path(tempfile.mkdtemp(prefix="bench_record_", dir=args.dir))
    try:
        f32 = run_recorder(root / "f32", seconds, "float32", 1)
        f64 = run_recorder(root / "f64", seconds, "float64", 1)
        base = run_baseline(root / "naive", seconds, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bname = "numpy savetxt CSV per block + fsync/s"

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q))

    for label, r in (("float32", f32), ("float64", f64)):
        extra: dict[str, Any] = {"data_s": seconds, "sample_dtype": label}
        sync = {
            "fdatasync_p50_ms": round(pct(r.sync_ms, 50), 3),
            "fdatasync_p99_ms": round(pct(r.sync_ms, 99), 3),
        }
        figures: list[tuple[str, float, str, float, dict[str, Any]]] = [
            ("cpu_share", r.cpu_s / r.data_s, "core fraction", base.cpu_s / base.data_s, {}),
            (
                "bytes_per_hour",
                r.disk_bytes / r.data_s * 3600 / 1e9,
                "GB/h",
                base.disk_bytes / base.data_s * 3600 / 1e9,
                {},
            ),
            (
                "write_amplification",
                r.disk_bytes / r.raw_bytes,
                "disk bytes / float64 sample bytes",
                base.disk_bytes / base.raw_bytes,
                {},
            ),
            ("flush_p50", pct(r.flush_ms, 50), "ms", pct(base.flush_ms, 50), sync),
            ("flush_p99", pct(r.flush_ms, 99), "ms", pct(base.flush_ms, 99), sync),
            ("flush_max", max(r.flush_ms), "ms", max(base.flush_ms), sync),
            ("write_samples_p50", pct(r.write_us, 50), "us per block", pct(base.write_us, 50), {}),
            ("write_samples_p99", pct(r.write_us, 99), "us per block", pct(base.write_us, 99), {}),
        ]
        for name, value, unit, base_value, more in figures:
            emit(f"record_{name}_{label}", value, unit, bname, base_value, **extra, **more)


if __name__ == "__main__":
    main()
