"""Host clocks: timer callbacks on the real and the virtual clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from nmcore.hostclock import MonotonicClock, TimerClock, VirtualClock


def test_both_clocks_offer_timer_callbacks() -> None:
    assert isinstance(MonotonicClock(), TimerClock)
    assert isinstance(VirtualClock(), TimerClock)


async def test_virtual_callbacks_and_sleepers_run_in_time_order() -> None:
    clock = VirtualClock(10.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, t_s: float) -> None:
        await clock.sleep_until(t_s)
        order.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(*a)) for a in (("task 10.2", 10.2), ("task 10.05", 10.05))]
    await asyncio.sleep(0)  # both parked: the earliest waiter goes first, whatever its kind
    clock.call_at(10.3, lambda: order.append(("cb 10.3", clock.now())))
    cancelled = clock.call_at(10.15, lambda: order.append(("cancelled", clock.now())))
    clock.call_at(10.1, lambda: order.append(("cb 10.1", clock.now())))
    cancelled.cancel()
    await asyncio.gather(*tasks)
    await clock.sleep_until(10.4)
    assert order == [
        ("task 10.05", 10.05),
        ("cb 10.1", 10.1),
        ("task 10.2", 10.2),
        ("cb 10.3", 10.3),
    ]


async def test_virtual_callback_chains_reschedule_and_past_times_run_now() -> None:
    clock = VirtualClock(0.0)
    seen: list[float] = []

    def tick() -> None:
        seen.append(clock.now())
        if len(seen) < 5:
            clock.call_at(clock.now() + 0.25, tick)

    clock.call_at(-1.0, tick)  # in the past: runs at the current time
    await clock.sleep_until(2.0)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_a_raising_virtual_callback_does_not_stop_time() -> None:
    clock = VirtualClock(0.0)
    loop = asyncio.get_running_loop()
    errors: list[BaseException | None] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))

    def boom() -> None:
        raise ZeroDivisionError("a bug in a callback")

    clock.call_at(1.0, boom)
    await asyncio.wait_for(clock.sleep_until(2.0), 1.0)  # would hang if time stopped
    assert clock.now() == 2.0
    assert len(errors) == 1
    assert isinstance(errors[0], ZeroDivisionError)


async def test_monotonic_callback_runs_at_its_host_time_and_can_be_cancelled() -> None:
    clock = MonotonicClock()
    ran = asyncio.get_running_loop().create_future()
    skipped: list[float] = []
    t_s = clock.now() + 0.02
    clock.call_at(t_s, lambda: ran.set_result(time.monotonic()))
    clock.call_at(t_s, lambda: skipped.append(clock.now())).cancel()
    assert await asyncio.wait_for(ran, 1.0) >= t_s
    await asyncio.sleep(0.01)
    assert skipped == []


@pytest.mark.parametrize("start_s", [0.0, 1e6])
async def test_virtual_sleepers_keep_their_order_at_equal_times(start_s: float) -> None:
    clock = VirtualClock(start_s)
    order: list[int] = []

    async def sleeper(i: int) -> None:
        await clock.sleep_until(start_s + 1.0)
        order.append(i)

    await asyncio.gather(*(sleeper(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]


def test_virtual_call_at_outside_a_loop_raises_and_leaves_the_clock_usable() -> None:
    clock = VirtualClock(0.0)
    with pytest.raises(RuntimeError):
        clock.call_at(1.0, lambda: None)

    async def later() -> float:
        await asyncio.wait_for(clock.sleep_until(2.0), 1.0)  # would hang if left pending
        return clock.now()

    assert asyncio.run(later()) == 2.0
