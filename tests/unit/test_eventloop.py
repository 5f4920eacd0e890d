"""The daemon's event loop (`nmcore.runtime.eventloop`): timed waits keep their microseconds
(epoll_wait rounds them up to whole milliseconds), descriptors and other threads still wake
it at once, and a process with over FD_SETSIZE open files falls back to plain epoll."""

from __future__ import annotations

import asyncio
import os
import resource
import select
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nmcore.runtime import eventloop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="epoll is Linux's")

WAIT_S = 0.0002  # far below epoll's millisecond


def _median_wait_s(sel: selectors.BaseSelector, n: int = 41) -> float:
    waits = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert sel.select(WAIT_S) == []
        waits.append(time.perf_counter() - t0)
    return statistics.median(waits)


def test_a_timed_wait_goes_to_select_with_its_microseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float | None] = []
    real = select.select

    def spy(r: list[int], w: list[int], x: list[int], timeout: float | None = None) -> Any:
        waits.append(timeout)
        return real(r, w, x, timeout)

    monkeypatch.setattr(select, "select", spy)
    with eventloop.PreciseEpollSelector() as sel:
        assert sel.precise
        polls: list[float | None] = []
        real_epoll = selectors.EpollSelector.select

        def epoll_spy(self: selectors.EpollSelector, timeout: float | None = None) -> Any:
            polls.append(timeout)
            return real_epoll(self, timeout)

        monkeypatch.setattr(selectors.EpollSelector, "select", epoll_spy)
        assert sel.select(WAIT_S) == []
        assert polls == []  # the deadline, nothing ready: no epoll_wait after select
        assert sel.select(0) == []  # a poll: straight to epoll
        assert (waits, polls) == ([WAIT_S], [0])
        sel.precise = False  # what an epoll descriptor >= FD_SETSIZE gets
        assert sel.select(WAIT_S) == []
        assert waits == [WAIT_S]


def test_a_sub_millisecond_wait_is_not_rounded_up_to_a_millisecond() -> None:
    with selectors.EpollSelector() as plain, eventloop.PreciseEpollSelector() as precise:
        # epoll's guarantee is the floor we remove: it never returns before 1 ms
        assert _median_wait_s(plain) >= 0.001
        # the median of 41 waits stays below that floor even on a loaded machine
        assert WAIT_S <= _median_wait_s(precise) < 0.001


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_ready_descriptor_ends_a_long_wait_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    with eventloop.PreciseEpollSelector() as sel:
        sel.register(a, selectors.EVENT_READ, "a")
        assert sel.select(0) == []
        b.send(b"x")
        for timeout in (5.0, None):
            t0 = time.perf_counter()
            events = sel.select(timeout)
            assert time.perf_counter() - t0 < 1.0
            assert [(key.data, mask) for key, mask in events] == [("a", selectors.EVENT_READ)]


def test_the_loop_runs_sub_millisecond_timers_and_wakes_for_other_threads() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        waits = []
        for _ in range(41):
            t0 = loop.time()
            await asyncio.sleep(WAIT_S)
            waits.append(loop.time() - t0)
        # a wake-up from another thread ends a long wait (the loop's self-pipe is in epoll)
        fut: asyncio.Future[float] = loop.create_future()
        t_set = [0.0]

        def later() -> None:
            time.sleep(0.05)
            t_set[0] = time.perf_counter()
            loop.call_soon_threadsafe(fut.set_result, 0.0)

        thread = threading.Thread(target=later)
        thread.start()
        try:
            await asyncio.wait_for(fut, timeout=10.0)
        finally:
            thread.join(10.0)
        return statistics.median(waits), time.perf_counter() - t_set[0]

    median_s, wake_s = eventloop.run(main())
    assert WAIT_S <= median_s < 0.001
    assert wake_s < 0.5


def test_an_epoll_descriptor_above_fd_setsize_falls_back_to_plain_epoll(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < eventloop.FD_SETSIZE + 64:
        pytest.skip(f"the hard limit on open files ({hard}) is below FD_SETSIZE + 64")
    resource.setrlimit(resource.RLIMIT_NOFILE, (eventloop.FD_SETSIZE + 64, hard))
    a, b = pair
    held: list[int] = []
    try:
        # fill the descriptors below FD_SETSIZE: the selector's epoll descriptor lands above
        while (fd := os.dup(a.fileno())) < eventloop.FD_SETSIZE:
            held.append(fd)
        held.append(fd)
        with eventloop.PreciseEpollSelector() as sel:
            assert sel.fileno() >= eventloop.FD_SETSIZE
            assert not sel.precise
            sel.register(a, selectors.EVENT_READ, "a")
            assert sel.select(WAIT_S) == []
            b.send(b"x")
            assert [key.data for key, _ in sel.select(5.0)] == ["a"]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
