"""Host clocks, passed in to whatever needs the time (never patched in tests)."""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Protocol

__all__ = ["HostClock", "MonotonicClock", "VirtualClock"]


class HostClock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, t_s: float) -> None: ...


class MonotonicClock:
    """The real host clock: `time.monotonic`, the time base of every published result."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


class VirtualClock:
    """A discrete-event clock: time jumps to the earliest waiter instead of passing.

    Simulated devices run as fast as the CPU allows yet interleave in time order: each
    `sleep_until` parks the caller; once the loop has run everything that was ready, the
    earliest parked caller is released and the clock set to its time.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._t_s = start_s
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._release_pending = False

    def now(self) -> float:
        return self._t_s

    async def sleep_until(self, t_s: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (max(t_s, self._t_s), self._seq, fut))
        if not self._release_pending:
            self._release_pending = True
            loop.call_soon(self._release)
        await fut

    def _release(self) -> None:
        self._release_pending = False
        while self._waiters:
            t_s, _, fut = heapq.heappop(self._waiters)
            if fut.cancelled():
                continue
            self._t_s = t_s
            fut.set_result(None)
            break
        if self._waiters:
            self._release_pending = True
            asyncio.get_running_loop().call_soon(self._release)
