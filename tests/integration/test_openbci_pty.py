"""OpenBCI Cyton driver end to end against the Cyton emulator on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))

import itertools

from openbci_emulator import CytonEmulator, Emitted

from nmcore.config.models import DeviceConfig
from nmcore.driver import DriverContext
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock
from nmcore.runtime.supervisor import DeviceState, DeviceSupervisor
from nmcore_drivers.openbci import CytonDriver
from nmcore_drivers.openbci.decoder import uv_per_count


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "usb-OpenBCI_FT231X_USB_UART_DM00TEST-if00-port0"


@pytest.fixture
async def emulator(link: Path) -> AsyncIterator[CytonEmulator]:
    emu = CytonEmulator(link, seed=7)
    emu.plug()
    yield emu
    emu.unplug()


def _driver(link: Path, **opts: Any) -> CytonDriver:
    options = {"port": str(link), "settle_s": 0.02, "reply_timeout_s": 1.0, **opts}
    return CytonDriver("cyton", options, DriverContext(clock=MonotonicClock()))


class _Enough(Exception):
    pass


async def _collect(
    drv: CytonDriver, n_samples: int, timeout_s: float = 30.0, delivery: str = "blocks"
) -> list[SampleBlock]:
    """Blocks until `n_samples`, iterating `blocks()` or from `stream()`'s callbacks."""
    out: list[SampleBlock] = []

    def take(block: SampleBlock) -> bool:
        out.append(block)
        return sum(b.n_samples for b in out) >= n_samples

    def take_or_stop(block: SampleBlock) -> None:
        if take(block):
            raise _Enough  # ends stream() with it

    async with asyncio.timeout(timeout_s):
        if delivery == "stream":
            with contextlib.suppress(_Enough):
                await drv.stream(take_or_stop)
            return out
        async for block in drv.blocks():
            if take(block):
                break
    return out


def _expected(e: Emitted, gain: float = 24) -> np.ndarray:
    return np.asarray(e.counts, np.int32) * np.full(8, uv_per_count(gain))


def _check_exact(blocks: list[SampleBlock], emitted: list[Emitted], gain: float = 24) -> None:
    """Every sample delivered is the next packet sent, with exactly its values."""
    sent = [e for e in emitted if e.fate == "sent"]
    rows = [(b.counter + i) % 256 for b in blocks for i in range(b.n_samples)]
    data = np.concatenate([b.data for b in blocks])
    assert rows == [e.counter for e in sent[: len(rows)]]
    for row, e in zip(data, sent, strict=False):
        np.testing.assert_array_equal(row, _expected(e, gain))


@pytest.mark.parametrize("delivery", ["blocks", "stream"])
async def test_cyton_pty_handshake_and_exact_values(
    emulator: CytonEmulator, link: Path, delivery: str
) -> None:
    drv = _driver(link)
    await drv.open()
    try:
        assert "OpenBCI" in drv.banner
        blocks = await _collect(drv, 100, delivery=delivery)
    finally:
        await drv.close()
    await asyncio.sleep(0.05)  # let the emulator read the last command
    assert emulator.commands[:3] == [b"s", b"v", b"b"]
    assert emulator.commands[-1] == b"s"  # close stopped the stream
    assert blocks[0].counter == 0
    assert all(b.stream_id == "cyton.emg" and b.data.shape[1] == 8 for b in blocks)
    assert all(b.device_ticks is None for b in blocks)
    _check_exact(blocks, emulator.emitted)
    # the extremes were in the stream and came out as full scale
    allv = np.concatenate([b.data for b in blocks])
    assert drv.decoder.stats.bad_packets == 0
    assert np.abs(allv).max() <= 4.5 / 24 * 1e6 * (2**23 / (2**23 - 1))


async def test_cyton_pty_dropped_packets_are_counter_jumps(
    emulator: CytonEmulator, link: Path
) -> None:
    drv = _driver(link)
    await drv.open()
    try:
        first = await _collect(drv, 20)
        emulator.drop_next(5)
        rest = await _collect(drv, 60)
    finally:
        await drv.close()
    blocks = first + rest
    dropped = [e.counter for e in emulator.emitted if e.fate == "dropped"]
    assert len(dropped) == 5
    # block boundaries where the counter does not continue: exactly one, spanning 5 lost
    jumps = []
    for a, b in itertools.pairwise(blocks):
        expect = (a.counter + a.n_samples) % 256
        if b.counter != expect:
            jumps.append((b.counter - expect) % 256)
    assert jumps == [5]
    _check_exact(blocks, emulator.emitted)


async def test_cyton_pty_board_timestamps_and_gain(emulator: CytonEmulator, link: Path) -> None:
    drv = _driver(link, board_timestamps=True, gain=12)
    assert drv.streams[0].timestamp_hz == 1000.0
    await drv.open()
    try:
        blocks = await _collect(drv, 50)
    finally:
        await drv.close()
    sent_cmds = emulator.commands
    assert b"x1050110X" in sent_cmds
    assert b"x8050110X" in sent_cmds
    assert b"<" in sent_cmds
    _check_exact(blocks, emulator.emitted, gain=12)
    by_counter_index = [e for e in emulator.emitted if e.fate == "sent"]
    pos = 0
    for b in blocks:
        assert b.device_ticks is not None
        assert b.device_ticks == by_counter_index[pos + b.ticks_index].board_ms
        pos += b.n_samples


async def test_cyton_pty_silent_board_is_a_clear_error(link: Path) -> None:
    emu = CytonEmulator(link, answer=False)
    emu.plug()
    try:
        drv = _driver(link, reply_timeout_s=0.2)
        with pytest.raises(DeviceError, match="no answer to soft reset"):
            await drv.open()
        assert not drv.transport.is_open
    finally:
        emu.unplug()


async def test_cyton_pty_corruption_and_truncation_only_counted(link: Path) -> None:
    emu = CytonEmulator(link, seed=3, corrupt_p=0.01, truncate_every=23, rate_hz=1000)
    emu.plug()
    drv = _driver(link)
    try:
        await drv.open()
        blocks = await _collect(drv, 600)
    finally:
        await drv.close()
        emu.unplug()
    rows = [(b.counter + i) % 256 for b in blocks for i in range(b.n_samples)]
    data = np.concatenate([b.data for b in blocks])
    # every untouched packet comes out, in order, with its values; between two untouched
    # packets at most as many extra rows as packets there were corrupted (the format has no
    # checksum: a packet with changed payload bytes but intact header and footer passes)
    j = 0
    touched = 0
    extra = 0
    for e in emu.emitted:
        if j >= len(rows):
            break
        if e.fate != "sent":
            touched += e.fate == "corrupted"
            continue
        exp = _expected(e)
        start = j
        while j < len(rows) and not (rows[j] == e.counter and np.array_equal(data[j], exp)):
            j += 1
        if j == len(rows):
            break
        assert j - start <= touched, f"packet {e.index} missing or extra rows before it"
        extra += j - start
        touched = 0
        j += 1
    n_touched = sum(e.fate != "sent" for e in emu.emitted[: e.index])
    n_sent = sum(e.fate == "sent" for e in emu.emitted[: e.index])
    assert j >= n_sent  # nothing untouched was lost
    st = drv.decoder.stats
    assert n_touched > 10
    rejected = n_touched - extra
    assert 0 < st.bad_packets <= rejected + 1
    assert rejected <= st.bad_packets + st.skipped_bytes  # every loss left a count


async def test_cyton_pty_unplug_raises_gone_and_replug_works(link: Path) -> None:
    emu = CytonEmulator(link, seed=1)
    emu.plug()
    drv = _driver(link)
    await drv.open()
    first_pts = emu.slave_name
    try:
        await _collect(drv, 10)
        emu.unplug()
        with pytest.raises(DeviceGoneError):
            await _collect(drv, 10**6)
        await drv.close()
        with pytest.raises(DeviceError, match="not found: is it plugged in"):
            await drv.open()
        # a second pty exists while the first is gone, so the new one gets another name
        other = CytonEmulator(link.with_name("other"), seed=9)
        other.plug()
        emu2 = CytonEmulator(link, seed=2)
        emu2.plug()
        other.unplug()
        await drv.open()
        blocks = await _collect(drv, 20)
        assert drv.transport.resolved_path == emu2.slave_name
        _check_exact(blocks, emu2.emitted)
        assert first_pts  # the link moved to whatever pty the replug produced
    finally:
        await drv.close()
        emu.unplug()


async def test_cyton_pty_supervisor_reconnects_within_1s(link: Path) -> None:
    emu = CytonEmulator(link, seed=4)
    emu.plug()
    clock = MonotonicClock()
    drv = CytonDriver("cyton", {"port": str(link), "settle_s": 0.02}, DriverContext(clock=clock))
    cfg = DeviceConfig.model_validate(
        {
            "id": "cyton",
            "driver": "openbci.cyton",
            "connect_timeout_s": 2.0,
            "silence_timeout_s": 1.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
        }
    )
    got: list[tuple[float, SampleBlock]] = []
    sup = DeviceSupervisor(cfg, drv, lambda b: got.append((clock.now(), b)), clock)
    task = asyncio.create_task(sup.run())
    emu2: CytonEmulator | None = None
    try:
        async with asyncio.timeout(10):
            while not got:  # noqa: ASYNC110 - polls the supervisor's callback
                await asyncio.sleep(0.01)
            emu.unplug()
            await asyncio.sleep(0.5)  # unplugged: the supervisor retries and fails
            assert sup.state in (DeviceState.BACKING_OFF, DeviceState.CONNECTING)
            n_before = len(got)
            emu2 = CytonEmulator(link, seed=5)
            emu2.plug()
            t_back = clock.now()
            while len(got) == n_before:  # noqa: ASYNC110 - polls the supervisor's callback
                await asyncio.sleep(0.01)
            t_first = got[n_before][0]
        assert t_first - t_back < 1.0
        assert sup.stats.connects == 2
        assert sup.stats.failures >= 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        emu.unplug()
        if emu2 is not None:
            emu2.unplug()
