"""BITalino (r)evolution driver end to end against the BITalino emulator on a real pty."""

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

from bitalino_emulator import BitalinoEmulator, Emitted

from nmcore.config.models import DeviceConfig
from nmcore.driver import DriverContext
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock
from nmcore.runtime.supervisor import DeviceSupervisor
from nmcore_drivers.bitalino import BitalinoDriver

VCC_V = 3.3
G_EMG = 1009.0


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "rfcomm-BITalino-TEST"


@pytest.fixture
async def emulator(link: Path) -> AsyncIterator[BitalinoEmulator]:
    emu = BitalinoEmulator(link, seed=11)
    emu.plug()
    yield emu
    emu.unplug()


def _driver(link: Path, **opts: Any) -> BitalinoDriver:
    options = {"port": str(link), "command_gap_s": 0.01, "reply_timeout_s": 1.0, **opts}
    return BitalinoDriver("bit", options, DriverContext(clock=MonotonicClock()))


class _Enough(Exception):
    pass


async def _collect(
    drv: BitalinoDriver, n_samples: int, timeout_s: float = 30.0, delivery: str = "blocks"
) -> list[SampleBlock]:
    """Blocks until `n_samples` EMG samples and the digital block that goes with the last,
    iterating `blocks()` or from `stream()`'s callbacks."""
    out: list[SampleBlock] = []
    last_stream = drv.streams[-1].stream_id

    def take(block: SampleBlock) -> bool:
        out.append(block)
        got = sum(b.n_samples for b in out if b.stream_id == "bit.emg")
        return got >= n_samples and block.stream_id == last_stream

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


def _uv(e: Emitted) -> np.ndarray:
    """The datasheet transfer function, written out here independently of the driver."""
    bits = [10, 10, 10, 10, 6, 6][: len(e.analog)]
    return np.array(
        [(a / 2**n - 0.5) * VCC_V / G_EMG * 1e6 for a, n in zip(e.analog, bits, strict=True)]
    )


def _rows(blocks: list[SampleBlock], stream: str) -> tuple[list[int], np.ndarray]:
    bl = [b for b in blocks if b.stream_id == stream]
    seqs = [(b.counter + i) % 16 for b in bl for i in range(b.n_samples)]
    return seqs, np.concatenate([b.data for b in bl])


@pytest.mark.parametrize("delivery", ["blocks", "stream"])
async def test_bitalino_pty_handshake_and_exact_values(
    emulator: BitalinoEmulator, link: Path, delivery: str
) -> None:
    drv = _driver(link, analog=[1, 2, 3, 4, 5, 6], rate_hz=1000)
    await drv.open()
    try:
        assert drv.version == "BITalino_v5.2"
        blocks = await _collect(drv, 300, delivery=delivery)
    finally:
        await drv.close()
    await asyncio.sleep(0.05)
    # idle, version, rate 1000 Hz (0b11000011), live with A1-A6 (0b11111101), stop
    assert emulator.commands == [0xFF, 0x07, 0xC3, 0xFD, 0x00]
    seqs, data = _rows(blocks, "bit.emg")
    sent = [e for e in emulator.emitted if e.fate == "sent"]
    assert seqs == [e.seq for e in sent[: len(seqs)]]
    np.testing.assert_allclose(data, np.array([_uv(e) for e in sent[: len(seqs)]]), rtol=1e-12)
    dseq, dig = _rows(blocks, "bit.digital")
    assert dseq == seqs
    np.testing.assert_array_equal(dig, np.array([e.digital for e in sent[: len(seqs)]]))
    assert np.abs(data).max() <= 1640.0  # the sensor's +-1.64 mV range
    assert drv.decoder.stats.bad_frames == 0


async def test_bitalino_pty_channel_subset_and_rate(emulator: BitalinoEmulator, link: Path) -> None:
    drv = _driver(
        link, analog=[2, 5], rate_hz=100, channels=["tib_ant", "soleus"], digital_stream=False
    )
    assert [s.stream_id for s in drv.streams] == ["bit.emg"]
    assert drv.streams[0].rate_hz == 100.0
    assert drv.streams[0].counter_bits == 4
    await drv.open()
    try:
        blocks = await _collect(drv, 20)
    finally:
        await drv.close()
    assert emulator.commands[2:4] == [0x83, 0x01 | (1 << 3) | (1 << 6)]
    assert emulator.analog == [2, 5]
    seqs, data = _rows(blocks, "bit.emg")
    sent = [e for e in emulator.emitted if e.fate == "sent"]
    # two acquired channels: both 10-bit, whatever their input numbers
    np.testing.assert_allclose(data, np.array([_uv(e) for e in sent[: len(seqs)]]), rtol=1e-12)


async def test_bitalino_pty_dropped_frames_are_counter_jumps(
    emulator: BitalinoEmulator, link: Path
) -> None:
    drv = _driver(link, analog=[1, 2])
    await drv.open()
    try:
        first = await _collect(drv, 50)
        emulator.drop_next(5)
        rest = await _collect(drv, 100)
    finally:
        await drv.close()
    emg = [b for b in first + rest if b.stream_id == "bit.emg"]
    jumps = []
    for a, b in itertools.pairwise(emg):
        expect = (a.counter + a.n_samples) % 16
        if b.counter != expect:
            jumps.append((b.counter - expect) % 16)
    assert jumps == [5]


async def test_bitalino_pty_no_version_reply_is_a_clear_error(link: Path) -> None:
    emu = BitalinoEmulator(link)
    emu.on_bytes = lambda data: None  # type: ignore[method-assign]
    emu.plug()
    try:
        drv = _driver(link, reply_timeout_s=0.2)
        with pytest.raises(DeviceError, match="no version reply"):
            await drv.open()
        assert not drv.transport.is_open
    finally:
        emu.unplug()


@pytest.mark.parametrize(("corrupt_p", "truncate_every"), [(0.01, 0), (0.01, 41)])
async def test_bitalino_pty_corruption_and_truncation_only_counted(
    link: Path, corrupt_p: float, truncate_every: int
) -> None:
    emu = BitalinoEmulator(link, seed=5, corrupt_p=corrupt_p, truncate_every=truncate_every)
    emu.plug()
    drv = _driver(link, analog=[1, 2, 3, 4, 5, 6])
    try:
        await drv.open()
        blocks = await _collect(drv, 1500)
    finally:
        await drv.close()
        emu.unplug()
    seqs, data = _rows(blocks, "bit.emg")
    rows = [(s, tuple(r)) for s, r in zip(seqs, data.tolist(), strict=True)]
    lost = check_delivery(rows, [(e.seq, tuple(_uv(e).tolist()), e.fate) for e in emu.emitted])
    st = drv.decoder.stats
    assert st.bad_frames > 0
    n_damaged = sum(e.fate != "sent" for e in emu.emitted)
    assert n_damaged > 30
    assert len(lost) <= n_damaged // 2


def check_delivery(
    rows: list[tuple[int, tuple[float, ...]]], emitted: list[tuple[int, tuple[float, ...], str]]
) -> list[int]:
    """Match delivered rows to emitted frames in order. Every untouched frame must come out
    exactly, except one with a damaged frame among the next two (re-synchronising needs three
    good frames in a row); between untouched frames at most as many extra rows as there were
    damaged frames (a CRC-4 lets 1 in 16 through). Returns the indices of lost frames."""
    j = 0
    touched = 0
    lost: list[int] = []
    last_match = 0
    for idx, (seq, vals, fate) in enumerate(emitted):
        if j >= len(rows):
            break
        if fate != "sent":
            touched += 1
            continue
        k = next(
            (
                k
                for k in range(j, min(len(rows), j + touched + 1))
                if rows[k][0] == seq and np.allclose(rows[k][1], vals, rtol=1e-12)
            ),
            None,
        )
        if k is None:
            after = [e[2] for e in emitted[idx + 1 : idx + 3]]
            assert any(f != "sent" for f in after), f"untouched frame {idx} lost"
            lost.append(idx)
            touched += 1
            continue
        j = k + 1
        touched = 0
        last_match = idx
    assert last_match > 0.9 * len(emitted) - 10 or j >= len(rows) - 1
    return lost


async def test_bitalino_pty_unplug_and_supervised_reconnect(link: Path) -> None:
    emu = BitalinoEmulator(link, seed=1)
    emu.plug()
    clock = MonotonicClock()
    drv = BitalinoDriver(
        "bit", {"port": str(link), "command_gap_s": 0.01}, DriverContext(clock=clock)
    )
    # plain driver first: unplug ends blocks() with DeviceGoneError
    await drv.open()
    await _collect(drv, 20)
    emu.unplug()
    with pytest.raises(DeviceGoneError):
        await _collect(drv, 10**6)
    await drv.close()
    emu.plug()  # same emulator, new pty
    cfg = DeviceConfig.model_validate(
        {
            "id": "bit",
            "driver": "bitalino",
            "connect_timeout_s": 2.0,
            "silence_timeout_s": 1.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
        }
    )
    got: list[tuple[float, SampleBlock]] = []
    sup = DeviceSupervisor(cfg, drv, lambda b: got.append((clock.now(), b)), clock)
    task = asyncio.create_task(sup.run())
    try:
        async with asyncio.timeout(10):
            while not got:  # noqa: ASYNC110 - polls the supervisor's callback
                await asyncio.sleep(0.01)
            emu.unplug()
            await asyncio.sleep(0.4)
            n_before = len(got)
            emu.plug()
            t_back = clock.now()
            while len(got) == n_before:  # noqa: ASYNC110 - polls the supervisor's callback
                await asyncio.sleep(0.01)
        assert got[n_before][0] - t_back < 1.0
        assert sup.stats.connects == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        emu.unplug()
