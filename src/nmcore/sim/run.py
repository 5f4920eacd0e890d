"""Drive simulated devices without the daemon (tests, benchmarks, notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from nmcore.errors import DeviceGoneError
from nmcore.hostclock import HostClock
from nmcore.model import SampleBlock
from nmcore.sim.base import SimDriverBase

__all__ = ["StationRun", "StreamRecord", "run_station", "stream_record"]


class _RunOver(Exception):
    pass


@dataclass(slots=True)
class StationRun:
    """What `run_station` saw: blocks per stream and each device's DeviceGoneError times."""

    blocks: dict[str, list[SampleBlock]] = field(default_factory=dict)
    gone_s: dict[str, list[float]] = field(default_factory=dict)
    reopen_failures: dict[str, int] = field(default_factory=dict)


async def run_station(
    drivers: Sequence[SimDriverBase],
    clock: HostClock,
    until_s: float,
    *,
    reconnect_delay_s: float = 0.5,
    on_block: Callable[[SampleBlock], None] | None = None,
    keep_blocks: bool = True,
    delivery: Literal["blocks", "stream"] = "blocks",
) -> StationRun:
    """Open every driver and pump its blocks until the clock reaches `until_s`; on
    DeviceGoneError close, wait `reconnect_delay_s` and open again (a minimal supervisor).
    `delivery`: iterate `blocks()`, or take them from `stream()`'s callbacks as the daemon
    does; both see the same blocks, up to and including the first at or after `until_s`."""
    run = StationRun()

    def take(block: SampleBlock) -> bool:
        """Keep `block`; True once the run is over."""
        if keep_blocks:
            run.blocks.setdefault(block.stream_id, []).append(block)
        if on_block is not None:
            on_block(block)
        return clock.now() >= until_s

    async def pull(drv: SimDriverBase) -> None:
        async with contextlib.aclosing(drv.blocks()) as blocks:
            async for block in blocks:
                if take(block):
                    break

    async def push(drv: SimDriverBase) -> None:
        def one(block: SampleBlock) -> None:
            if take(block):
                raise _RunOver  # ends stream() with it, inside this delivery

        with contextlib.suppress(_RunOver):
            await drv.stream(one)

    async def pump(drv: SimDriverBase) -> None:
        run.gone_s.setdefault(drv.device_id, [])
        run.reopen_failures.setdefault(drv.device_id, 0)
        while clock.now() < until_s:
            try:
                await drv.open()
            except DeviceGoneError:
                run.reopen_failures[drv.device_id] += 1
                await clock.sleep_until(clock.now() + reconnect_delay_s)
                continue
            try:
                await (push if delivery == "stream" else pull)(drv)
            except DeviceGoneError:
                run.gone_s[drv.device_id].append(clock.now())
                await drv.close()
                await clock.sleep_until(clock.now() + reconnect_delay_s)
                continue
            await drv.close()
            return

    async with asyncio.TaskGroup() as tg:
        for drv in drivers:
            tg.create_task(pump(drv))
    return run


@dataclass(slots=True)
class StreamRecord:
    """One stream's blocks laid end to end, counters and timestamps unwrapped."""

    index: npt.NDArray[np.int64]  # unwrapped counter of every sample
    data: npt.NDArray[np.float64]  # (n, n_channels)
    block_first: npt.NDArray[np.int64]  # unwrapped counter of each block's first sample
    block_arrival_s: npt.NDArray[np.float64]
    block_ticks: npt.NDArray[np.int64] | None  # unwrapped device ticks of each block


def _unwrap(raw: npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.int64]:
    modulus = 1 << bits
    step = np.diff(raw) % modulus  # forward distance, whatever the wraps
    return np.concatenate([raw[:1], raw[0] + np.cumsum(step)]).astype(np.int64)


def stream_record(
    blocks: Sequence[SampleBlock], counter_bits: int, timestamp_bits: int | None = None
) -> StreamRecord:
    """Concatenate `blocks` of one stream (no device reset in between: counters must only
    move forward, by less than half their range between blocks)."""
    firsts = _unwrap(np.array([b.counter for b in blocks], dtype=np.int64), counter_bits)
    sizes = np.array([b.n_samples for b in blocks], dtype=np.int64)
    index = np.concatenate([f + np.arange(n) for f, n in zip(firsts, sizes, strict=True)])
    ticks = None
    if timestamp_bits is not None and blocks and blocks[0].device_ticks is not None:
        raw = np.array([b.device_ticks for b in blocks], dtype=np.int64)
        ticks = _unwrap(raw, timestamp_bits)
    return StreamRecord(
        index=index,
        data=np.concatenate([b.data for b in blocks]),
        block_first=firsts,
        block_arrival_s=np.array([b.arrival_s for b in blocks]),
        block_ticks=ticks,
    )
