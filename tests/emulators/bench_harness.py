"""Driving the simulated rig as a calibration bench in tests: a virtual-clock context, a
station run with an operator script, and the truth's sample times."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nmcore.driver import DriverContext
from nmcore.hostclock import VirtualClock
from nmcore.model import SampleBlock
from nmcore.sim.base import SimDriverBase
from nmcore.sim.run import StationRun, run_station

Script = Sequence[tuple[float, Callable[[], Any]]]


def make_ctx(t0_s: float) -> tuple[DriverContext, VirtualClock, list[dict[str, Any]]]:
    clock = VirtualClock(t0_s)
    truth: list[dict[str, Any]] = []
    return DriverContext(clock=clock, realtime=False, truth=truth.append), clock, truth


async def run_script(
    drivers: Sequence[SimDriverBase], clock: VirtualClock, until_s: float, script: Script
) -> StationRun:
    """Run the station; the operator performs each action once the clock reaches its time
    (starting once every device has delivered its first block; awaitable actions awaited)."""
    device_of = {s.stream_id: d.device_id for d in drivers for s in d.streams}
    seen: set[str] = set()
    all_open = asyncio.Event()

    def on_block(block: SampleBlock) -> None:
        seen.add(device_of[block.stream_id])
        if len(seen) == len(drivers):
            all_open.set()

    async def operator() -> None:
        await all_open.wait()
        for t_s, act in script:
            await clock.sleep_until(t_s)
            result = act()
            if inspect.isawaitable(result):
                await result

    task = asyncio.create_task(run_station(drivers, clock, until_s, on_block=on_block))
    await operator()
    return await task


def clock_rec(truth: list[dict[str, Any]], device_id: str) -> dict[str, Any]:
    return next(r for r in truth if r["type"] == "clock" and r["device_id"] == device_id)


def sample_times(truth: list[dict[str, Any]], device_id: str, sid: str, index: Any) -> Any:
    """True (world) times of samples `index` of stream `sid`, from the device's clock record."""
    clk = clock_rec(truth, device_id)
    return clk["t_start_s"] + np.asarray(index) / clk["streams"][sid]["true_rate_hz"]
