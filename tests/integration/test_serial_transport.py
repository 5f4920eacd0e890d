"""SerialTransport on real ptys: chunks with arrival times, unplug/replug through a
by-id-like link, a port held by another process, a missing port, overflow, stats;
plus port discovery."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))

from pty_device import PtyDevice

from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import MonotonicClock
from nmcore.transport import (
    PortInfo,
    SerialTransport,
    list_serial_ports,
    port_holders,
)


class StepClock:
    """A host clock that advances 1 s per reading, so each arrival stamp is identifiable."""

    def __init__(self) -> None:
        self.t_s = 100.0

    def now(self) -> float:
        self.t_s += 1.0
        return self.t_s

    async def sleep_until(self, t_s: float) -> None:
        await asyncio.sleep(0)


class Echo(PtyDevice):
    """Answers every byte written to it with the same byte, upper-cased."""

    def on_bytes(self, data: bytes) -> None:
        self.send(data.upper())


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "usb-FTDI_FT232R_USB_UART_A10TEST-if00-port0"


async def _wait_for(cond: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polls state set by loop callbacks
            await asyncio.sleep(0.002)


async def test_serial_transport_chunks_carry_arrival_times_and_stats(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    clock = StepClock()
    tr = SerialTransport(str(link), baudrate=115200, clock=clock, device_id="d")
    await tr.open()
    try:
        assert tr.resolved_path == dev.slave_name
        dev.send(b"abc")
        c1 = await asyncio.wait_for(tr.read_chunk(), 2)
        dev.send(b"defg")
        c2 = await asyncio.wait_for(tr.read_chunk(), 2)
        assert (c1.data, c2.data) == (b"abc", b"defg")
        # one clock reading per read, taken when the bytes were read
        assert c2.arrival_s == c1.arrival_s + 1.0
        await tr.write(b"hello")
        await _wait_for(lambda: bytes(dev.received) == b"hello")
        st = tr.stats
        assert (st.bytes_in, st.reads, st.bytes_out, st.writes) == (7, 2, 5, 1)
        assert st.opens == 1
        assert st.errors == 0
    finally:
        await tr.close()
        dev.unplug()


async def test_serial_transport_read_until_keeps_the_rest(link: Path) -> None:
    dev = Echo(link)
    dev.plug()
    tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock())
    await tr.open()
    try:
        await tr.write(b"ok$$$tail")
        reply = await tr.read_until(b"$$$", 2.0)
        assert reply == b"OK$$$"
        await _wait_for(lambda: tr.pending_chunks() > 0)
        rest = b""
        while len(rest) < 4:
            rest += (await asyncio.wait_for(tr.read_chunk(), 2)).data
        assert rest == b"TAIL"
        with pytest.raises(DeviceError, match=r"no reply ending in b'\$\$\$' within 0.05 s"):
            await tr.read_until(b"$$$", 0.05)
    finally:
        await tr.close()
        dev.unplug()


async def test_serial_transport_unplug_delivers_then_raises_gone(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock(), device_id="emg1")
    await tr.open()
    dev.send(b"last words")
    await _wait_for(lambda: tr.pending_chunks() > 0)
    dev.unplug()
    got = bytearray()

    async def read_all() -> None:
        async with asyncio.timeout(2):
            while True:
                got.extend((await tr.read_chunk()).data)

    with pytest.raises(DeviceGoneError, match=r"emg1: serial port .* (lost|closed)"):
        await read_all()
    assert bytes(got) == b"last words"  # bytes read before the unplug are not lost
    with pytest.raises(DeviceGoneError):
        await tr.write(b"x")
    await tr.close()
    await tr.close()  # idempotent
    # unplugged: a clear "not found"
    with pytest.raises(DeviceError, match="not found: is it plugged in\\? known ports: "):
        await tr.open()
    # replugged under another pty name: the link is resolved again
    holder = PtyDevice(link.with_name("holder"))
    holder.plug()  # takes the freed pts number, so the replug gets a new name
    dev.plug()
    try:
        await tr.open()
        assert tr.resolved_path == dev.slave_name
        dev.send(b"again")
        assert (await asyncio.wait_for(tr.read_chunk(), 2)).data == b"again"
        assert tr.stats.opens == 2
    finally:
        await tr.close()
        dev.unplug()
        holder.unplug()


async def test_serial_transport_delivers_to_a_callback_then_tells_gone(link: Path) -> None:
    """`deliver_to`: queued chunks first, then every read from the reader callback, then
    `on_gone` once; `deliver_to(None)` queues again."""
    dev = PtyDevice(link)
    dev.plug()
    clock = StepClock()
    tr = SerialTransport(str(link), baudrate=115200, clock=clock, device_id="emg1")
    await tr.open()
    got: list[tuple[bytes, float]] = []
    gone: list[str] = []
    try:
        dev.send(b"queued")
        await _wait_for(lambda: tr.pending_chunks() > 0)
        tr.deliver_to(lambda c: got.append((c.data, c.arrival_s)), gone.append)
        assert [d for d, _ in got] == [b"queued"]
        assert tr.pending_chunks() == 0
        dev.send(b"pushed")
        await _wait_for(lambda: len(got) == 2)
        assert got[1] == (b"pushed", got[0][1] + 1.0)  # stamped once, at the read
        tr.deliver_to(None)
        dev.send(b"back to the queue")
        assert (await asyncio.wait_for(tr.read_chunk(), 2)).data == b"back to the queue"
        assert len(got) == 2
        tr.deliver_to(lambda c: got.append((c.data, c.arrival_s)), gone.append)
        dev.send(b"last words")
        await _wait_for(lambda: len(got) == 3)
        dev.unplug()
        await _wait_for(lambda: bool(gone))
        assert len(gone) == 1
        assert "serial port" in gone[0]
        assert [d for d, _ in got] == [b"queued", b"pushed", b"last words"]
    finally:
        await tr.close()
        dev.unplug()
    assert len(gone) == 1  # told once, not again at close
    # a port already gone (or never opened) is told at once
    late: list[str] = []
    tr.deliver_to(got.append, late.append)
    assert len(late) == 1


async def test_serial_transport_stream_to_ends_with_gone_or_the_handler_error(
    link: Path,
) -> None:
    dev = PtyDevice(link)
    dev.plug()
    tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock(), device_id="d")
    await tr.open()
    got = bytearray()
    try:
        streaming = asyncio.create_task(tr.stream_to(lambda c: got.extend(c.data)))
        dev.send(b"before the unplug")
        await _wait_for(lambda: bytes(got) == b"before the unplug")
        dev.unplug()
        with pytest.raises(DeviceGoneError, match="d: serial port"):
            await asyncio.wait_for(streaming, 2.0)
    finally:
        await tr.close()
    dev.plug()
    await tr.open()
    try:

        def bad(_chunk: object) -> None:
            raise ValueError("a bug in the decoder")

        streaming = asyncio.create_task(tr.stream_to(bad))
        await asyncio.sleep(0)
        dev.send(b"x")
        with pytest.raises(ValueError, match="a bug"):
            await asyncio.wait_for(streaming, 2.0)
        dev.send(b"queued again")  # the stream has ended: reads are queued
        assert (await asyncio.wait_for(tr.read_chunk(), 2)).data == b"queued again"
    finally:
        await tr.close()
        dev.unplug()


async def test_serial_transport_close_tells_the_callback(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock(), device_id="d")
    await tr.open()
    gone: list[str] = []
    try:
        tr.deliver_to(lambda c: None, gone.append)
        await tr.close()
        assert gone == ["port closed"]
    finally:
        await tr.close()
        dev.unplug()


async def test_serial_transport_port_in_use_by_another_process(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    code = (
        "import serial, sys, time\n"
        "s = serial.Serial(sys.argv[1], 115200, exclusive=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, dev.slave_name, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.strip() == b"ready"
        assert any(pid == child.pid for pid, _ in port_holders(str(link)))
        tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock(), device_id="d")
        with pytest.raises(DeviceError) as info:
            await tr.open()
        msg = str(info.value)
        assert "is in use by another program" in msg
        assert f"pid {child.pid}" in msg
        assert not tr.is_open
    finally:
        child.kill()
        await child.wait()
        dev.unplug()


async def test_serial_transport_second_open_in_same_process_is_refused(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    a = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock())
    b = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock())
    await a.open()
    try:
        with pytest.raises(DeviceError, match=r"in use by another program .*this process"):
            await b.open()
    finally:
        await a.close()
    await b.open()  # free again once closed
    await b.close()
    dev.unplug()


async def test_serial_transport_overflow_drops_oldest_and_counts(link: Path) -> None:
    dev = PtyDevice(link)
    dev.plug()
    tr = SerialTransport(str(link), baudrate=115200, clock=MonotonicClock(), queue_chunks=2)
    await tr.open()
    try:
        for part in (b"one", b"two", b"three"):
            dev.send(part)
            await _wait_for(lambda: tr.stats.reads >= {b"one": 1, b"two": 2, b"three": 3}[part])  # noqa: B023
        assert tr.stats.dropped_chunks == 1
        assert tr.stats.dropped_bytes == 3
        assert (await tr.read_chunk()).data == b"two"
        assert (await tr.read_chunk()).data == b"three"
    finally:
        await tr.close()
        dev.unplug()


def test_serial_transport_missing_port_message(tmp_path: Path) -> None:
    tr = SerialTransport(
        str(tmp_path / "nope"), baudrate=9600, clock=MonotonicClock(), device_id="fp"
    )

    async def go() -> None:
        await tr.open()

    with pytest.raises(DeviceError, match=r"^fp: serial port .*nope not found: is it plugged in"):
        asyncio.run(go())


def test_list_serial_ports_maps_by_id_links(tmp_path: Path) -> None:
    ports = list_serial_ports()
    assert all(isinstance(p, PortInfo) for p in ports)
    if not ports:
        pytest.skip("this machine reports no serial ports")
    target = ports[0]
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-Test_Adapter_1234-if00-port0").symlink_to(target.device)
    again = {p.device: p for p in list_serial_ports(by_id_dir=by_id)}
    info = again[target.device]
    assert info.by_id == str(by_id / "usb-Test_Adapter_1234-if00-port0")
    assert info.config_path == info.by_id
    assert info.usb_id == ("" if info.vid is None else f"{info.vid:04x}:{info.pid:04x}")
    assert all(p.vid is not None for p in list_serial_ports(usb_only=True))
    assert os.path.realpath(info.by_id) == os.path.realpath(target.device)
