"""The device end of a serial link on a pty, run on the test's event loop.

`PtyDevice` owns a pty pair: the test's driver opens the slave through `link` (a symlink the
emulator updates, like a /dev/serial/by-id/ name whose /dev/ttyUSBn changes on replug).
The emulator keeps its own slave fd open so the master never sees a hang-up while the
driver reconnects. `unplug()` closes both ends and removes the link: the driver's reads
fail with EIO/EOF as after a real unplug. `plug()` makes a new pty (a new /dev/pts name).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path


class PtyDevice:
    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_name = ""
        self._out = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer_on = False
        self.received = bytearray()
        self.plugs = 0

    # -- plugging ----------------------------------------------------------------------------
    def plug(self) -> None:
        """Create the pty, point the link at it and start answering (needs a running loop)."""
        if self.master is not None:
            raise RuntimeError("already plugged")
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_name)
        tmp.replace(self.link)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._on_readable)
        self.plugs += 1
        self.on_plug()

    def unplug(self) -> None:
        master = self.master
        if master is None:
            return
        self.on_unplug()
        loop = self._loop
        assert loop is not None
        loop.remove_reader(master)
        if self._writer_on:
            loop.remove_writer(master)
            self._writer_on = False
        self.master = None
        os.close(master)
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        self._out.clear()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    @property
    def plugged(self) -> bool:
        return self.master is not None

    # -- bytes -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.master is None:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        master = self.master
        if master is None:
            return
        while self._out:
            try:
                n = os.write(master, self._out)
            except BlockingIOError:
                break
            except OSError:
                self._out.clear()
                return
            del self._out[:n]
        loop = self._loop
        assert loop is not None
        if self._out and not self._writer_on:
            loop.add_writer(master, self._flush)
            self._writer_on = True
        elif not self._out and self._writer_on:
            loop.remove_writer(master)
            self._writer_on = False

    def _on_readable(self) -> None:
        master = self.master
        if master is None:
            return
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self.received += data
            self.on_bytes(data)

    # -- for subclasses ----------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        """Bytes the host wrote."""

    def on_plug(self) -> None:
        """After a (re)plug."""

    def on_unplug(self) -> None:
        """Before the pty goes away."""


class Pacer:
    """Calls `emit(n)` with the number of samples due at `rate_hz` since `start()`, every
    `period_s`, on the running loop (bursts as a USB adapter would deliver them)."""

    def __init__(self, rate_hz: float, emit: object, period_s: float = 0.004) -> None:
        self.rate_hz = rate_hz
        self._emit = emit
        self.period_s = period_s
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self.stop()
        self.sent = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            due = int((loop.time() - t0) * self.rate_hz) + 1 - self.sent
            if due > 0:
                self._emit(due)  # type: ignore[operator]
                self.sent += due
            await asyncio.sleep(self.period_s)
