"""The daemon's event loop: asyncio's selector loop, with waits that keep microseconds.

epoll_wait(2) counts whole milliseconds and Python rounds a wait up to the next one, so a
timer due in 0.1 ms runs ~1 ms late: every timer in the daemon (the simulated rig's
deliveries, live-stream pacing, status, the watchdog, the lag monitor's own sleeps). Data
from a real device wakes epoll as soon as its descriptor is ready, so this changes timers,
not I/O. On the simulated lab rig, whose devices are timer-paced, the rounding was most of
the measured loop lag: p50 0.69 ms and p99 ~2.0 ms with it, 0.20 and ~1.1 ms without.

`PreciseEpollSelector` waits on the epoll descriptor itself with select(2), whose timeout
has microseconds (an epoll descriptor is readable when any descriptor in it is ready), then,
if one is, collects the events with a zero-timeout epoll_wait: a timer's wake-up is one system
call, as with plain epoll, and I/O is one more, still epoll for the descriptors. select(2)
only takes descriptors below FD_SETSIZE; an epoll descriptor above it (a process with over a
thousand open files) falls back to plain epoll.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["PreciseEpollSelector", "new_event_loop", "run"]

T = TypeVar("T")

# select(2)'s fd_set size on Linux (glibc's FD_SETSIZE)
FD_SETSIZE = 1024


if sys.platform == "linux":

    class PreciseEpollSelector(selectors.EpollSelector):
        """`selectors.EpollSelector` whose timed waits are not rounded up to whole ms."""

        def __init__(self) -> None:
            super().__init__()
            self.precise = self.fileno() < FD_SETSIZE

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if self.precise and timeout is not None and timeout > 0:
                # returns at the deadline or as soon as a registered descriptor is ready (the
                # loop's self-pipe included: signals and call_soon_threadsafe wake it too);
                # at the deadline with nothing ready (a timer's wake-up) there is nothing to
                # collect: no epoll_wait (~9 us of a ~60 us wake-up on the lab VMs)
                if not select.select([self.fileno()], [], [], timeout)[0]:
                    return []
                timeout = 0
            return super().select(timeout)

    def new_event_loop() -> asyncio.AbstractEventLoop:
        """The daemon's loop: a selector loop on `PreciseEpollSelector`."""
        return asyncio.SelectorEventLoop(PreciseEpollSelector())

else:  # no epoll: asyncio's own loop (the daemon's service targets Linux)

    def new_event_loop() -> asyncio.AbstractEventLoop:
        """asyncio's default loop (no epoll on this platform)."""
        return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """`asyncio.run(main)` on `new_event_loop()`: what every nmcore command runs on."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
