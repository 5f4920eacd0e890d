"""nmcore firmware over the Nordic UART Service through real bleak and the fake BlueZ."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nmcore.driver import DriverContext
from nmcore.errors import DeviceGoneError
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock
from nmcore_drivers.nmcore_ble import NmcoreBleDriver

from .conftest import fakebluez


def check_blocks(board: Any, blocks: list[SampleBlock]) -> int:
    for b in blocks:
        k = b.counter + np.arange(b.n_samples, dtype=np.int64)
        expected = board.counts(k, board.channels) * board.scale_uv
        np.testing.assert_array_equal(b.data, expected)
        assert b.device_ticks == (b.counter * 1_000_000 // board.rate_hz) & 0xFFFFFFFF
    return sum(b.n_samples for b in blocks)


@pytest.mark.parametrize("delivery", ["blocks", "stream"])
async def test_nmcore_board_over_nus_stream_and_reconnect(fake_bluez: Any, delivery: str) -> None:
    clock = MonotonicClock()
    board = fakebluez.NusBoardEmulator(clock)
    dev = fake_bluez.add_device(board)
    driver = NmcoreBleDriver(
        "emg1",
        {"name": board.name, "rate_hz": 1000, "channels": ["ta", "sol"], "connect_timeout_s": 5},
        DriverContext(clock=clock),
    )
    await driver.open()
    first = await fakebluez.collect_blocks(driver, 1.2, delivery)
    assert driver.link.att_mtu == 185
    assert driver.identity["device_id"] == "emg-ble-01"
    n_first = check_blocks(board, first)
    assert n_first >= 900
    counters = [b.counter for b in first]
    assert counters == list(range(counters[0], counters[0] + 20 * len(first), 20))
    # frames were cut across notifications and reassembled without a single reject
    assert driver.decoder.stats.frames_rejected == 0
    assert driver.decoder.stats.frames_ok >= len(first)

    dev.drop_link(out_of_range=False)  # link loss: blocks() ends with DeviceGoneError
    t_drop = clock.now()
    with pytest.raises(DeviceGoneError, match="disconnected"):
        await fakebluez.collect_blocks(driver, 2.0, delivery)
    assert clock.now() - t_drop < 0.5  # promptly, not after a watchdog timeout
    await driver.close()
    await driver.open()  # what the supervisor does next
    try:
        second = await fakebluez.collect_blocks(driver, 0.6, delivery)
    finally:
        await driver.close()
    assert check_blocks(board, second) > 0
    assert board.commands.count("START") == 2  # START sent again after the reconnect
    assert second[0].counter > first[-1].counter  # the runtime sees the gap in the counter
