"""Host clocks, passed in to whatever needs the time (never patched in tests)."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Cancellable", "HostClock", "MonotonicClock", "TimerClock", "VirtualClock"]


class HostClock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, t_s: float) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


@runtime_checkable
class TimerClock(HostClock, Protocol):
    """A host clock that can also run a plain callback at a time (on the running loop).

    A task that sleeps costs two passes of the event loop per wake-up (the timer completes a
    future, the task runs on the next pass); a callback costs one. Per-delivery pacing (the
    simulated devices) uses this.
    """

    def call_at(self, t_s: float, callback: Callable[[], None]) -> Cancellable: ...


class MonotonicClock:
    """The real host clock: `time.monotonic`, the time base of every published result."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    def call_at(self, t_s: float, callback: Callable[[], None]) -> Cancellable:
        # asyncio's loops keep time with time.monotonic, so a host time is a loop time
        return asyncio.get_running_loop().call_at(t_s, callback)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A discrete-event clock: time jumps to the earliest waiter instead of passing.

    Simulated devices run as fast as the CPU allows yet interleave in time order: each
    `sleep_until` (or `call_at`) parks the caller; once the loop has run everything that was
    ready, the earliest parked caller is released (or its callback run) and the clock set to
    its time.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._t_s = start_s
        self._waiters: list[tuple[float, int, asyncio.Future[None] | _VirtualTimer]] = []
        self._seq = 0
        self._release_pending = False

    def now(self) -> float:
        return self._t_s

    def _park(self, t_s: float, waiter: asyncio.Future[None] | _VirtualTimer) -> None:
        loop = asyncio.get_running_loop()  # first: outside a loop, nothing may change
        self._seq += 1
        heapq.heappush(self._waiters, (max(t_s, self._t_s), self._seq, waiter))
        if not self._release_pending:
            self._release_pending = True
            loop.call_soon(self._release)

    async def sleep_until(self, t_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._park(t_s, fut)
        await fut

    def call_at(self, t_s: float, callback: Callable[[], None]) -> Cancellable:
        timer = _VirtualTimer(callback)
        self._park(t_s, timer)
        return timer

    def _release(self) -> None:
        self._release_pending = False
        try:
            while self._waiters:
                t_s, _, waiter = heapq.heappop(self._waiters)
                if isinstance(waiter, _VirtualTimer):
                    if waiter.cancelled:
                        continue
                    self._t_s = t_s
                    waiter.callback()
                elif not waiter.cancelled():
                    self._t_s = t_s
                    waiter.set_result(None)  # the caller runs on the loop's next pass
                else:
                    continue
                break
        finally:  # a callback that raised must not stop virtual time
            if self._waiters and not self._release_pending:
                self._release_pending = True
                asyncio.get_running_loop().call_soon(self._release)
