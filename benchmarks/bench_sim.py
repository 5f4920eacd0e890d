"""Cost of the simulated lab rig: 16 EMG at 2 kHz (serial), 3 body IMUs at 1 kHz (BLE), one
force plate at 1 kHz (serial), the platform (trigger + IMU, 1 kHz, serial).

Figures (one JSON object per line):
- sim_rig_virtual_cpu_pct: CPU per simulated second, run as fast as possible (VirtualClock);
  baseline: the same rig with the naive path (generate per delivery event, sway from numpy
  sines) in the same run.
- sim_rig_realtime_cpu_pct: CPU share while running in real time (MonotonicClock);
  baseline: a bare asyncio loop waking on the same schedule (the floor any driver pays).
- sim_multisine_ns_per_sample: the sway kernel vs the numpy multisine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import numpy as np

from nmcore.driver import DriverContext
from nmcore.hostclock import HostClock, MonotonicClock, VirtualClock
from nmcore.runtime import eventloop
from nmcore.sim.device import SimDevice
from nmcore.sim.run import run_station
from nmcore.sim.scenario import Scenario, ScenarioOptions
from nmcore_drivers.sim import SimEmgDriver, SimForcePlateDriver, SimImuDriver, SimPlatformDriver


def lab_rig(ctx: DriverContext) -> list[Any]:
    return [
        SimPlatformDriver("platform", {}, ctx),
        SimEmgDriver("emg", {"n_channels": 16}, ctx),
        SimForcePlateDriver("plate", {}, ctx),
        *(SimImuDriver(f"imu{i}", {}, ctx) for i in range(3)),
    ]


def emit(name: str, value: float, unit: str, base_name: str, base_value: float) -> None:
    ratio = value / base_value if base_value else None
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value, 4),
                "unit": unit,
                "baseline": {"name": base_name, "value": round(base_value, 4)},
                "ratio": None if ratio is None else round(ratio, 4),
            }
        )
    )


WORST_EVENT_S = [0.0]


def _timed_advance() -> None:
    """Record the longest single delivery event (how long the rig can hold the event loop)."""
    orig = SimDevice.advance

    def advance(self: SimDevice, t_s: float) -> list[Any]:
        t0 = time.perf_counter()
        out = orig(self, t_s)
        WORST_EVENT_S[0] = max(WORST_EVENT_S[0], time.perf_counter() - t0)
        return out

    SimDevice.advance = advance  # type: ignore[method-assign]


async def virtual_cpu(sim_s: float, naive: bool) -> tuple[float, int]:
    clock = VirtualClock(0.0)
    ctx = DriverContext(clock=clock, realtime=False)
    drivers = lab_rig(ctx)
    for d in drivers:
        await d.open()
        if naive:
            for s in d.device.streams:
                s.chunk = 1  # generate exactly what each delivery event needs
            body = d.scenario.body
            body.sway = body.sway_reference
    n_blocks = 0

    def count(_: Any) -> None:
        nonlocal n_blocks
        n_blocks += 1

    # warm-up (numba cache loads, EMG filter warm-up) outside the measurement
    await run_station(drivers, clock, 1.0, keep_blocks=False)
    WORST_EVENT_S[0] = 0.0
    c0 = time.process_time()
    await run_station(drivers, clock, 1.0 + sim_s, keep_blocks=False, on_block=count)
    return 100.0 * (time.process_time() - c0) / sim_s, n_blocks


async def realtime_cpu(wall_s: float) -> float:
    clock: HostClock = MonotonicClock()
    ctx = DriverContext(clock=clock, realtime=True)
    drivers = lab_rig(ctx)
    await run_station(drivers, clock, clock.now() + 0.5, keep_blocks=False)  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    await run_station(drivers, clock, clock.now() + wall_s, keep_blocks=False)
    return 100.0 * (time.process_time() - c0) / (time.perf_counter() - w0)


async def null_loop_cpu(wall_s: float) -> float:
    """Tasks that only sleep on the rig's delivery schedule (3 x 16 ms serial, 3 x 15 ms BLE)."""
    clock = MonotonicClock()

    async def task(period_s: float) -> None:
        t = clock.now()
        end = t + wall_s
        while t < end:
            t += period_s
            await clock.sleep_until(t)

    c0, w0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for p in (0.016, 0.016, 0.016, 0.015, 0.015, 0.015):
            tg.create_task(task(p))
    return 100.0 * (time.process_time() - c0) / (time.perf_counter() - w0)


def multisine(n_rep: int) -> tuple[float, float]:
    sc = Scenario(ScenarioOptions(), 0.0)
    t = 100.0 + np.arange(500) / 1000.0
    sc.body.sway(t)
    t0 = time.perf_counter()
    for _ in range(n_rep):
        sc.body.sway(t)
    kern = (time.perf_counter() - t0) / (n_rep * t.size) * 1e9
    t0 = time.perf_counter()
    for _ in range(n_rep):
        sc.body.sway_reference(t)
    ref = (time.perf_counter() - t0) / (n_rep * t.size) * 1e9
    return kern, ref


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="a few seconds in all")
    args = ap.parse_args()
    _timed_advance()
    sim_s = 3.0 if args.smoke else 60.0
    wall_s = 0.5 if args.smoke else 10.0
    fast, n_blocks = await virtual_cpu(sim_s, naive=False)
    worst_fast_ms = WORST_EVENT_S[0] * 1000.0
    slow, _ = await virtual_cpu(sim_s, naive=True)
    worst_slow_ms = WORST_EVENT_S[0] * 1000.0
    emit("sim_rig_virtual_cpu_pct", fast, "% of one core", "naive_per_event_numpy", slow)
    emit("sim_rig_worst_event_ms", worst_fast_ms, "ms", "naive_per_event_numpy", worst_slow_ms)
    emit(
        "sim_rig_blocks_per_s",
        n_blocks / sim_s,
        "blocks/s",
        "naive_per_event_numpy",
        n_blocks / sim_s,
    )
    rig = await realtime_cpu(wall_s)
    floor = await null_loop_cpu(wall_s)
    emit("sim_rig_realtime_cpu_pct", rig, "% of one core", "asyncio_sleep_same_schedule", floor)
    kern, ref = multisine(20 if args.smoke else 200)
    emit("sim_multisine_ns_per_sample", kern, "ns/sample (2 axes x 40 sines)", "numpy_sin", ref)


if __name__ == "__main__":
    eventloop.run(main())
