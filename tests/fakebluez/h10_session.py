"""Streaming through the fake BlueZ: `collect_blocks` (what an open driver yields in a given
time) and one session with the emulated H10 (the real polar.pmd driver, through real bleak,
against a running `FakeBluez`). Shared by tests/integration/ble and benchmarks/bench_ble.py."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nmcore.driver import DriverContext
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock
from nmcore_drivers.polar import PolarPmdDriver

from .polar import H10Emulator


async def stream_h10_blocks(
    fake: Any,
    duration_s: float,
    *,
    ecg_per_frame: int = 73,
    acc_per_frame: int = 36,
) -> tuple[H10Emulator, list[SampleBlock]]:
    """Add an H10 (30 ms connection events, clock 100 ppm fast) to `fake`, stream ECG at
    130 Hz and ACC at 200 Hz for `duration_s`, and return the emulator (its truth) and every
    block the driver yielded before the time was up."""
    clock = MonotonicClock()
    h10 = H10Emulator(
        clock,
        conn_interval_s=0.030,
        drift_ppm=100.0,
        ecg_per_frame=ecg_per_frame,
        acc_per_frame=acc_per_frame,
    )
    fake.add_device(h10)
    opts = {
        "address": h10.address,
        "ecg": {"rate_hz": 130},
        "acc": {"rate_hz": 200, "range": 8},
        "connect_timeout_s": 5.0,
    }
    driver = PolarPmdDriver("h10", opts, DriverContext(clock=clock))
    await driver.open()
    try:
        blocks = await collect_blocks(driver, duration_s)
    finally:
        await driver.close()
    return h10, blocks


async def collect_blocks(
    driver: Any, duration_s: float, delivery: str = "blocks"
) -> list[SampleBlock]:
    """Every block an open driver gives within `duration_s`: iterating `blocks()` (its
    generator is closed after) or from `stream()`'s callbacks (what the supervisor uses)."""
    out: list[SampleBlock] = []
    if delivery == "stream":
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s):
                await driver.stream(out.append)
        return out
    agen = driver.blocks()
    try:
        async with asyncio.timeout(duration_s):
            async for block in agen:
                out.append(block)  # noqa: PERF401 - keeps what came before the timeout
    except TimeoutError:
        pass
    finally:
        await agen.aclose()
    return out
