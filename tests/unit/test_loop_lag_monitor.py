"""`LoopLagMonitor`: timer probes that record how late the loop ran them."""

from __future__ import annotations

import asyncio
import time

import pytest

from nmcore.runtime.monitor import LoopLagMonitor


async def test_probes_record_a_blocked_loop_and_stop_when_cancelled() -> None:
    monitor = LoopLagMonitor(interval_s=0.005)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.1)
    quiet_n = monitor._n
    assert quiet_n >= 5  # ~20 probes in 0.1 s at 5 ms; a slow machine still gets a few
    assert monitor.lag_ms(0.5) < 20.0
    time.sleep(0.08)  # noqa: ASYNC251 -- the point: block the loop
    await asyncio.sleep(0.02)
    assert monitor.lag_ms(1.0) >= 60.0  # the probe due during the block ran ~75 ms late
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n = monitor._n
    await asyncio.sleep(0.03)
    assert monitor._n == n  # no probe after the task ended


async def test_restart_forgets_the_probes_so_far() -> None:
    monitor = LoopLagMonitor(interval_s=0.005)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0)  # the first probe is scheduled
    try:
        time.sleep(0.05)  # noqa: ASYNC251 -- a lag to forget
        await asyncio.sleep(0.02)
        assert monitor.lag_ms(1.0) >= 30.0
        monitor.restart()
        assert monitor.lag_ms(0.99) != monitor.lag_ms(0.99)  # NaN: nothing measured yet
        await asyncio.sleep(0.05)
        assert monitor.lag_ms(1.0) < 30.0
    finally:
        task.cancel()
