"""The Polar PMD driver through real bleak and a fake BlueZ playing an H10."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nmcore.config.models import DeviceConfig
from nmcore.driver import DriverContext
from nmcore.errors import DeviceError
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock
from nmcore.runtime.supervisor import DeviceState, DeviceSupervisor
from nmcore_drivers.polar import PolarPmdDriver

from .conftest import fakebluez

ECG, ACC = 0, 2


def h10_options(address: str, **extra: Any) -> dict[str, Any]:
    return {
        "address": address,
        "ecg": {"rate_hz": 130},
        "acc": {"rate_hz": 200, "range": 8},
        "connect_timeout_s": 5.0,
        **extra,
    }


async def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not cond():  # noqa: ASYNC110 - polls state owned by other components
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def check_against_truth(h10: Any, blocks: list[SampleBlock], meas: int, stream_id: str) -> int:
    """Every sample's value and every frame's timestamp equal the emulator's; returns n."""
    mine = [b for b in blocks if b.stream_id == stream_id]
    assert mine, f"no blocks for {stream_id}"
    rate = 130 if meas == ECG else 200
    k0 = h10.truth[meas].delivered[0][0]
    c0 = mine[0].counter
    for b in mine:
        k = k0 + (b.counter - c0) + np.arange(b.n_samples, dtype=np.int64)
        expected = h10.ecg_uv(k)[:, None] if meas == ECG else h10.acc_mg(k)
        np.testing.assert_array_equal(b.data, expected.astype(np.float64))
        assert b.ticks_index == b.n_samples - 1
        assert b.device_ticks == int(h10.device_ns(meas, k[-1], rate))
    return sum(b.n_samples for b in mine)


@pytest.mark.parametrize("delivery", ["blocks", "stream"])
async def test_discover_connect_stream_values_and_timestamps(
    fake_bluez: Any, delivery: str
) -> None:
    clock = MonotonicClock()
    h10 = fakebluez.H10Emulator(clock, conn_interval_s=0.030, drift_ppm=100.0)
    fake_bluez.add_device(h10)
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=clock))
    await driver.open()
    try:
        assert driver.link.att_mtu == 232
        blocks = await fakebluez.collect_blocks(driver, 3.0, delivery)
    finally:
        await driver.close()
    n_ecg = check_against_truth(h10, blocks, ECG, "h10.ecg")
    n_acc = check_against_truth(h10, blocks, ACC, "h10.acc")
    assert n_ecg >= 130 * 2
    assert n_acc >= 200 * 2
    assert driver.lost_samples() == {"h10.ecg": 0, "h10.acc": 0}
    # settings asked, then START with the configured rate/range, for both measurements
    assert [c[:2] for c in h10.cp_log[:4]] == [b"\x01\x00", b"\x02\x00", b"\x01\x02", b"\x02\x02"]
    assert h10.cp_log[3] == bytes([2, 2, 0, 1, 200, 0, 1, 1, 16, 0, 2, 1, 8, 0])
    # the link's arrival stamps are host monotonic times after the truth sample times
    arrivals = np.array([b.arrival_s for b in blocks if b.stream_id == "h10.ecg"])
    assert np.all(np.diff(arrivals) > 0)


async def test_twenty_link_losses_reconnect_resubscribe_count_losses(fake_bluez: Any) -> None:
    clock = MonotonicClock()
    h10 = fakebluez.H10Emulator(clock, ecg_per_frame=13, acc_per_frame=20)
    dev = fake_bluez.add_device(h10)
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=clock))
    cfg = DeviceConfig(
        id="h10",
        driver="polar.pmd",
        connect_timeout_s=5.0,
        silence_timeout_s=2.0,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    blocks: list[SampleBlock] = []
    sup = DeviceSupervisor(cfg, driver, blocks.append, clock)
    task = asyncio.create_task(sup.run())
    cycles = 20
    try:
        for cycle in range(cycles + 1):
            mark = len(blocks)

            def fresh(mark: int = mark) -> bool:
                ids = {b.stream_id for b in blocks[mark:]}
                return sup.state is DeviceState.STREAMING and ids == {"h10.ecg", "h10.acc"}

            await wait_until(fresh, 5.0, f"streaming after outage {cycle}")
            if cycle == cycles:
                break
            # odd cycles: BlueZ also forgets the device (InterfacesRemoved on Device1)
            dev.drop_link(out_of_range=True, remove_object=cycle % 2 == 1)
            await asyncio.sleep(0.12)
            dev.come_back()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sup.stats.connects == cycles + 1
    assert dev.events.drops == cycles
    assert h10.start_commands == 2 * (cycles + 1)  # ECG and ACC restarted after every loss
    for meas, sid in ((ECG, "h10.ecg"), (ACC, "h10.acc")):
        delivered = sorted(h10.truth[meas].delivered)
        truth_gaps = [
            k2 - (k1 + n1) for (k1, n1), (k2, _) in itertools.pairwise(delivered) if k2 != k1 + n1
        ]
        mine = [b for b in blocks if b.stream_id == sid]
        seen_gaps = [
            b2.counter - (b1.counter + b1.n_samples)
            for b1, b2 in itertools.pairwise(mine)
            if b2.counter != b1.counter + b1.n_samples
        ]
        assert len(truth_gaps) == cycles
        assert seen_gaps == truth_gaps  # every outage counted, exactly
        assert driver.lost_samples()[sid] == sum(truth_gaps)
        assert sum(b.n_samples for b in mine) == sum(n for _, n in delivered)


async def test_silent_device_trips_the_supervisor_watchdog(fake_bluez: Any) -> None:
    clock = MonotonicClock()
    h10 = fakebluez.H10Emulator(clock, ecg_per_frame=13, acc_per_frame=20)
    fake_bluez.add_device(h10)
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=clock))
    cfg = DeviceConfig(
        id="h10",
        driver="polar.pmd",
        connect_timeout_s=5.0,
        silence_timeout_s=0.4,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    blocks: list[SampleBlock] = []
    sup = DeviceSupervisor(cfg, driver, blocks.append, clock)
    task = asyncio.create_task(sup.run())
    try:
        await wait_until(lambda: len(blocks) >= 4, 5.0, "first blocks")
        h10.stall()  # connected, but nothing more arrives: blocks() just waits
        await wait_until(lambda: sup.stats.silences >= 1, 3.0, "the silence watchdog")
        h10.stall(False)
        mark = len(blocks)
        await wait_until(lambda: len(blocks) >= mark + 4, 5.0, "streaming after the watchdog")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sup.stats.connects >= 2
    assert h10.start_commands >= 4  # the watchdog's reconnect started both measurements again
    assert driver.lost_samples()["h10.ecg"] > 0  # the silent stretch shows as a gap


async def test_bad_notifications_counted_and_skipped(fake_bluez: Any) -> None:
    clock = MonotonicClock()
    h10 = fakebluez.H10Emulator(clock, ecg_per_frame=13, acc_per_frame=20)
    fake_bluez.add_device(h10)
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=clock))
    await driver.open()
    try:
        first = await fakebluez.collect_blocks(driver, 0.4)
        header = bytes([0]) + (123).to_bytes(8, "little")
        assert h10.inject(header + b"\x00" + b"\x01\x02")  # ECG body of 2 bytes: truncated
        assert h10.inject(bytes([0x42]) + header[1:] + b"\x00" + bytes(6))  # unknown type
        assert h10.inject(header + b"\x7e" + bytes(6))  # unknown frame type
        assert h10.inject(b"\x02\x00")  # shorter than a header
        later = await fakebluez.collect_blocks(driver, 0.6)
    finally:
        await driver.close()
    st = driver.decoder.stats
    assert (st.truncated, st.unknown_measurement, st.unknown_frame_type) == (2, 1, 1)
    assert st.frames_rejected == 4
    assert later, "the stream goes on after bad notifications"
    blocks = first + later
    check_against_truth(h10, blocks, ECG, "h10.ecg")
    check_against_truth(h10, blocks, ACC, "h10.acc")
    assert driver.lost_samples() == {"h10.ecg": 0, "h10.acc": 0}


async def test_error_adapter_powered_off(fake_bluez: Any) -> None:
    fake_bluez.set_powered(False)
    fake_bluez.add_device(fakebluez.H10Emulator(MonotonicClock()))
    driver = PolarPmdDriver(
        "h10", h10_options("C8:2F:4D:8C:21:2F"), DriverContext(clock=MonotonicClock())
    )
    with pytest.raises(DeviceError, match=r"switched off.*bluetoothctl power on"):
        await driver.open()
    await driver.close()


async def test_error_device_not_found(fake_bluez: Any) -> None:
    del fake_bluez  # an adapter, but nothing advertising
    opts = h10_options("C8:2F:4D:8C:21:2F", connect_timeout_s=0.3)
    driver = PolarPmdDriver("h10", opts, DriverContext(clock=MonotonicClock()))
    with pytest.raises(DeviceError, match=r"not found.*switched on.*within a few metres"):
        await driver.open()
    await driver.close()


async def test_error_pairing_needed(fake_bluez: Any) -> None:
    h10 = fakebluez.H10Emulator(MonotonicClock())
    fake_bluez.add_device(h10).require_pairing = True
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=MonotonicClock()))
    with pytest.raises(DeviceError, match=r"requires pairing.*bluetoothctl pair"):
        await driver.open()
    await driver.close()


async def test_error_notifications_refused(fake_bluez: Any) -> None:
    h10 = fakebluez.H10Emulator(MonotonicClock())
    fake_bluez.add_device(h10).refuse_notify = True
    driver = PolarPmdDriver("h10", h10_options(h10.address), DriverContext(clock=MonotonicClock()))
    with pytest.raises(DeviceError, match=r"refused notifications"):
        await driver.open()
    await driver.close()


async def test_error_no_adapter(system_bus_address: str) -> None:
    fake = await fakebluez.FakeBluez(system_bus_address, adapter_present=False).start()
    try:
        driver = PolarPmdDriver(
            "h10", h10_options("C8:2F:4D:8C:21:2F"), DriverContext(clock=MonotonicClock())
        )
        with pytest.raises(DeviceError, match=r"no Bluetooth adapter"):
            await driver.open()
        await driver.close()
    finally:
        await fake.stop()


@pytest.mark.hardware
async def test_real_polar_h10_streams(request: pytest.FixtureRequest) -> None:
    """Opt-in: `pytest --hardware --ble-address C8:..:.. tests/integration/ble` with an H10
    worn (ECG needs skin contact) and Bluetooth on. Uses the machine's real BlueZ."""
    address = request.config.getoption("--ble-address")
    if not address:
        pytest.skip("give --ble-address of a Polar H10")
    clock = MonotonicClock()
    driver = PolarPmdDriver(
        "h10", h10_options(address, connect_timeout_s=20.0), DriverContext(clock=clock)
    )
    await driver.open()
    try:
        blocks = await fakebluez.collect_blocks(driver, 10.0)
    finally:
        await driver.close()
    ecg = [b for b in blocks if b.stream_id == "h10.ecg"]
    acc = [b for b in blocks if b.stream_id == "h10.acc"]
    assert sum(b.n_samples for b in ecg) > 130 * 7
    assert sum(b.n_samples for b in acc) > 200 * 7
    ticks = np.array([b.device_ticks for b in ecg], dtype=np.float64)
    assert np.all(np.diff(ticks) > 0)
    # gravity: |acc| near 1000 mG when the strap is still
    acc_all = np.concatenate([b.data for b in acc])
    assert 500 < float(np.median(np.linalg.norm(acc_all, axis=1))) < 1500
