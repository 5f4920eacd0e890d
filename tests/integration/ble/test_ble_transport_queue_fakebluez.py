"""The BLE transport's bounded notification queue: drop and count, never block; a slow
consumer behind real bleak shows up as counted drops and as a gap in the sample counter."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from nmcore.driver import DriverContext
from nmcore.errors import DeviceGoneError
from nmcore.hostclock import MonotonicClock, VirtualClock
from nmcore.transport.ble import LinkStats, NotificationQueue
from nmcore_drivers.polar import PolarPmdDriver

from .conftest import fakebluez


async def test_queue_drops_and_counts_when_full_then_ends_with_the_error() -> None:
    clock = VirtualClock(start_s=5.0)
    stats = LinkStats()
    q = NotificationQueue(clock, 3, stats)
    for i in range(5):
        q.push(bytes([i]))
    assert (q.received, q.dropped, len(q)) == (5, 2, 3)
    assert (stats.notifications, stats.dropped_chunks, stats.bytes_in) == (5, 2, 5)
    q.close(DeviceGoneError("gone", "dev"))
    assert [await q.get() for _ in range(3)] == [(5.0, b"\x00"), (5.0, b"\x01"), (5.0, b"\x02")]
    with pytest.raises(DeviceGoneError, match="gone"):
        await q.get()


async def test_queue_wakes_a_waiting_reader() -> None:
    q = NotificationQueue(MonotonicClock(), 4, LinkStats())
    reader = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not reader.done()
    q.push(b"abc")
    _, payload = await asyncio.wait_for(reader, 1.0)
    assert payload == b"abc"


async def test_queue_hands_chunks_to_a_callback_then_raises_the_close_error() -> None:
    clock = VirtualClock(start_s=5.0)
    q = NotificationQueue(clock, 2, LinkStats())
    q.push(b"queued")
    got: list[tuple[float, bytes]] = []
    streaming = asyncio.create_task(q.stream_to(lambda t, p: got.append((t, p))))
    await asyncio.sleep(0)
    assert got == [(5.0, b"queued")]
    for i in range(5):  # no queue in between: nothing is dropped
        q.push(bytes([i]))
    assert len(got) == 6
    assert q.dropped == 0
    q.close(DeviceGoneError("gone", "dev"))
    with pytest.raises(DeviceGoneError, match="gone"):
        await streaming
    q2 = NotificationQueue(clock, 2, LinkStats())

    def bad(_t: float, _p: bytes) -> None:
        raise ValueError("a bug in the decoder")

    streaming = asyncio.create_task(q2.stream_to(bad))
    await asyncio.sleep(0)
    q2.push(b"x")
    with pytest.raises(ValueError, match="a bug"):
        await streaming
    q2.push(b"y")  # queued again once the stream has ended
    assert len(q2) == 1


async def test_chunks_arriving_after_the_stream_ended_are_queued_not_lost() -> None:
    clock = VirtualClock(start_s=7.0)
    q = NotificationQueue(clock, 8, LinkStats())

    def bad(_t: float, payload: bytes) -> None:
        if payload == b"x":
            raise ValueError("a bug in the decoder")

    streaming = asyncio.create_task(q.stream_to(bad))
    await asyncio.sleep(0)
    q.push(b"x")  # ends the session; the awaiting task runs on a later pass
    q.push(b"late")  # arrives in between: queued for the next reader, not dropped
    with pytest.raises(ValueError, match="a bug"):
        await streaming
    assert await q.get() == (7.0, b"late")
    assert q.dropped == 0


async def test_slow_consumer_drops_are_counted_and_become_a_gap(fake_bluez: Any) -> None:
    clock = MonotonicClock()
    h10 = fakebluez.H10Emulator(clock, ecg_per_frame=13, acc_per_frame=20, conn_interval_s=0.0)
    fake_bluez.add_device(h10)
    opts = {"address": h10.address, "ecg": {"rate_hz": 130}, "queue_chunks": 16}
    driver = PolarPmdDriver("h10", opts, DriverContext(clock=clock))
    await driver.open()
    try:
        await asyncio.sleep(2.5)  # ~25 frames arrive, 16 fit: the rest are dropped, counted
        agen = driver.blocks()
        blocks = [await anext(agen) for _ in range(20)]
        await agen.aclose()
    finally:
        await driver.close()
    dropped = driver.link.stats.dropped_chunks
    assert dropped > 0
    lost = driver.lost_samples()["h10.ecg"]
    assert lost == dropped * 13  # every dropped frame is a counted gap of its 13 samples
    jumps = [b2.counter - b1.counter - b1.n_samples for b1, b2 in itertools.pairwise(blocks)]
    assert sum(jumps) == lost
