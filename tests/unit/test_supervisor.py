"""The per-device state machine, driven by a scripted driver (a real Driver, not a mock)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import BaseModel

from nmcore.config.models import DeviceConfig
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import MonotonicClock
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.runtime.supervisor import Backoff, DeviceState, DeviceSupervisor


class ScriptedDriver:
    """Plays a script per session: 'fail' (open raises), 'hang' (open never returns),
    ('stream', n, then) with then in {'gone', 'silent', 'bug'}."""

    class Options(BaseModel):
        pass

    Options_: ClassVar[type[BaseModel]] = Options

    def __init__(self, script: list[Any]) -> None:
        self.device_id = "dev"
        self.script = list(script)
        self.opens = 0
        self.closes = 0
        self._current: Any = None
        self._desc = StreamDescriptor(
            "dev.x", "dev", StreamKind.EMG, 1000.0, (ChannelSpec("a", "uV"),)
        )

    @property
    def streams(self) -> list[StreamDescriptor]:
        return [self._desc]

    async def open(self) -> None:
        self.opens += 1
        self._current = self.script.pop(0) if self.script else ("stream", 10**9, "gone")
        if self._current == "fail":
            raise DeviceError("port busy: another program holds it", "dev")
        if self._current == "hang":
            await asyncio.sleep(3600)

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        _, n, then = self._current
        for i in range(n):
            yield SampleBlock("dev.x", i, np.zeros((1, 1)), 0.0)
            await asyncio.sleep(0)
        if then == "gone":
            raise DeviceGoneError("unplugged", "dev")
        if then == "silent":
            await asyncio.sleep(3600)
        if then == "bug":
            raise ZeroDivisionError("a bug in the driver")

    async def close(self) -> None:
        self.closes += 1


class PushScriptedDriver(ScriptedDriver):
    """The same script delivered through `stream()`: blocks from loop callbacks (as a
    reader or a timer callback would), the end through the future `stream` awaits."""

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        _, n, then = self._current

        def deliver(i: int) -> None:
            if done.done():
                return
            if i < n:
                try:
                    on_block(SampleBlock("dev.x", i, np.zeros((1, 1)), 0.0))
                except Exception as exc:
                    done.set_exception(exc)
                    return
                loop.call_soon(deliver, i + 1)
            elif then == "gone":
                done.set_exception(DeviceGoneError("unplugged", "dev"))
            elif then == "bug":
                done.set_exception(ZeroDivisionError("a bug in the driver"))
            # "silent": nothing more, ever

        loop.call_soon(deliver, 0)
        await done


DRIVERS = pytest.mark.parametrize("driver_cls", [ScriptedDriver, PushScriptedDriver])


def _cfg(**kw: Any) -> DeviceConfig:
    base = {
        "id": "dev",
        "driver": "test",
        "connect_timeout_s": 0.2,
        "silence_timeout_s": 0.1,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    base.update(kw)
    return DeviceConfig.model_validate(base)


async def _run_until(sup: DeviceSupervisor, cond: Any, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(sup.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not cond():  # noqa: ASYNC110 - polling a plain predicate of the test
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@DRIVERS
async def test_reconnects_through_every_failure_kind(driver_cls: type[ScriptedDriver]) -> None:
    driver = driver_cls(
        ["fail", "hang", ("stream", 5, "gone"), ("stream", 3, "silent"), ("stream", 4, "gone")]
    )
    states: list[DeviceState] = []
    received: list[SampleBlock] = []
    sup = DeviceSupervisor(
        _cfg(),
        driver,
        received.append,
        MonotonicClock(),
        on_state=lambda _d, s, _r: states.append(s),
    )
    await _run_until(sup, lambda: driver.opens >= 6)
    assert len(received) >= 12
    assert sup.stats.silences == 1
    assert sup.stats.failures >= 5
    assert driver.closes >= 5  # every session closed, even a failed open
    assert states[0] is DeviceState.CONNECTING
    assert DeviceState.STREAMING in states
    assert DeviceState.BACKING_OFF in states
    assert states[-1] is DeviceState.STOPPED


@DRIVERS
async def test_a_bug_propagates(driver_cls: type[ScriptedDriver]) -> None:
    driver = driver_cls([("stream", 2, "bug")])
    sup = DeviceSupervisor(_cfg(), driver, lambda b: None, MonotonicClock())
    with pytest.raises(ZeroDivisionError):
        await sup.run()
    assert driver.closes == 1


@DRIVERS
async def test_a_bug_in_the_block_consumer_propagates(driver_cls: type[ScriptedDriver]) -> None:
    driver = driver_cls([("stream", 10, "gone")])
    got: list[SampleBlock] = []

    def on_block(block: SampleBlock) -> None:
        got.append(block)
        if len(got) == 3:
            raise KeyError("a bug in the pipeline")

    sup = DeviceSupervisor(_cfg(), driver, on_block, MonotonicClock())
    with pytest.raises(KeyError):
        await sup.run()
    assert len(got) == 3
    assert driver.closes == 1


@DRIVERS
async def test_a_device_error_from_the_consumer_is_a_bug_not_a_device_failure(
    driver_cls: type[ScriptedDriver],
) -> None:
    driver = driver_cls([("stream", 10, "gone")])

    def on_block(block: SampleBlock) -> None:
        raise DeviceError("raised downstream, by mistake", "dev")

    sup = DeviceSupervisor(_cfg(), driver, on_block, MonotonicClock())
    with pytest.raises(DeviceError, match="downstream"):
        await sup.run()
    assert driver.opens == 1  # not retried as if the device had failed


class DriverWithAStreamAttribute(ScriptedDriver):
    """A third-party driver whose `stream` is something else (a byte stream object)."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__(script)
        self.stream = object()


async def test_only_a_coroutine_stream_method_is_taken_for_delivery() -> None:
    driver = DriverWithAStreamAttribute([("stream", 5, "gone")])
    got: list[SampleBlock] = []
    sup = DeviceSupervisor(_cfg(), driver, got.append, MonotonicClock())
    await _run_until(sup, lambda: driver.opens >= 2)
    assert len(got) >= 5  # delivered through blocks()


@DRIVERS
async def test_one_device_failing_does_not_stop_another(driver_cls: type[ScriptedDriver]) -> None:
    bad = driver_cls(["fail"] * 1000)
    good = driver_cls([("stream", 10**6, "gone")])
    got: list[SampleBlock] = []
    sups = [
        DeviceSupervisor(_cfg(id="bad"), bad, lambda b: None, MonotonicClock()),
        DeviceSupervisor(_cfg(id="good"), good, got.append, MonotonicClock()),
    ]
    tasks = [asyncio.create_task(s.run()) for s in sups]
    await asyncio.sleep(0.3)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert bad.opens >= 3
    assert len(got) > 100


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(0.5, 30.0, random.Random(1))
    delays = [b.next_delay_s() for _ in range(20)]
    assert all(0.25 <= d <= 30.0 for d in delays)
    assert max(delays[-5:]) <= 30.0
    assert min(delays[-5:]) >= 15.0
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next_delay_s() <= 0.5
