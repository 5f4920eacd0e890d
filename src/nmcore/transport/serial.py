"""Async serial port: byte chunks in, host arrival times on them, nothing protocol-specific.

`SerialTransport` opens the port in an executor (opening a USB adapter can block for
hundreds of milliseconds), then reads with `loop.add_reader` on the non-blocking file
descriptor. The read callback only does `os.read`, takes `clock.now()` and appends to a
bounded queue; decoding happens in the consumer. When the queue is full the oldest chunk is
dropped and counted (a stalled consumer must not grow memory without bound, and fresh data
matter more than old data for reaction times).

When the port vanishes (EOF, EIO/ENXIO after an unplug or when a pty master closes) the
chunks already read are still delivered, then `read_chunk` raises `DeviceGoneError`; the
runtime's supervisor closes and opens again. Every `open` resolves the configured path
again, so a `/dev/serial/by-id/...` link that now points at another `/dev/ttyUSBn` works.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import serial

from nmcore.driver import StreamSession
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import HostClock
from nmcore.model import SampleBlock

__all__ = ["Chunk", "ReadDecodingDriver", "SerialStats", "SerialTransport", "port_holders"]

# One read takes what the kernel has; 64 KiB is far above what a 1 Mbaud port accumulates
# between two loop iterations, so one callback drains the driver buffer.
READ_SIZE = 65536
# errnos that mean "the device is not there any more" rather than a transient hiccup.
_GONE_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.ENOENT})
_BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes from one read and the host monotonic time the read returned."""

    data: bytes
    arrival_s: float


@dataclass(slots=True)
class SerialStats:
    """Counters over the transport's life (all sessions)."""

    opens: int = 0
    bytes_in: int = 0
    reads: int = 0
    bytes_out: int = 0
    writes: int = 0
    errors: int = 0
    dropped_chunks: int = 0
    dropped_bytes: int = 0


def port_holders(path: str) -> list[tuple[int, str]]:
    """(pid, command name) of processes with `path` open, from /proc (Linux; [] elsewhere)."""
    try:
        target = os.path.realpath(path)
        proc = Path("/proc")
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    found: list[tuple[int, str]] = []
    for pdir in pids:
        try:
            fds = list((pdir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    comm = (pdir / "comm").read_text().strip()
                    found.append((int(pdir.name), comm))
                    break
            except OSError:
                continue
    return found


def _close_port(ser: serial.Serial) -> None:
    with contextlib.suppress(Exception):
        fcntl.ioctl(ser.fileno(), termios.TIOCNXCL)
    with contextlib.suppress(Exception):
        ser.close()


def _known_ports() -> str:
    # imported here: list_ports walks sysfs, only worth it on the error path
    from nmcore.transport.ports import list_serial_ports

    ports = [p.by_id or p.device for p in list_serial_ports()]
    return ", ".join(ports) if ports else "none"


class SerialTransport:
    """One serial port. Reusable (open -> ... -> close, again), not re-entrant.

    `port`: the configured path (prefer `/dev/serial/by-id/...`). `clock`: stamps arrivals.
    `queue_chunks`: bound of the read queue (oldest dropped and counted beyond it).
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        clock: HostClock,
        device_id: str | None = None,
        queue_chunks: int = 4096,
    ) -> None:
        if queue_chunks < 1:
            raise ValueError(f"queue_chunks must be >= 1, got {queue_chunks}")
        self.port = port
        self.baudrate = baudrate
        self.device_id = device_id
        self.stats = SerialStats()
        self._clock = clock
        self._queue_chunks = queue_chunks
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_chunk: Callable[[Chunk], None] | None = None
        self._on_gone: Callable[[str], None] | None = None
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gone: str | None = None
        self.resolved_path: str | None = None

    # -- life cycle --------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._fd is not None

    async def open(self) -> None:
        """Open the port (in an executor) and start reading. Raises `DeviceError`."""
        if self._fd is not None:
            raise RuntimeError("SerialTransport.open() while already open")
        loop = asyncio.get_running_loop()
        ser = await loop.run_in_executor(None, self._open_blocking)
        self._serial = ser
        self._fd = ser.fileno()
        self._loop = loop
        self._gone = None
        self._chunks.clear()
        self.stats.opens += 1
        loop.add_reader(self._fd, self._on_readable)

    def _err(self, message: str) -> DeviceError:
        return DeviceError(message, self.device_id)

    def _open_blocking(self) -> serial.Serial:
        path = self.port
        if not os.path.exists(path):
            raise self._err(
                f"serial port {path} not found: is it plugged in? known ports: {_known_ports()}"
            )
        # a by-id link may point at a new ttyUSBn after a replug: resolve at every open
        real = os.path.realpath(path)
        self.resolved_path = real
        ser = serial.Serial()
        ser.port = real
        ser.baudrate = self.baudrate
        ser.timeout = 0
        ser.write_timeout = 0
        ser.exclusive = True  # flock(LOCK_EX | LOCK_NB): a second nmcore cannot share it
        try:
            ser.open()
        except (serial.SerialException, OSError) as exc:
            raise self._open_error(path, real, exc) from exc
        # TIOCEXCL: programs that do not flock (screen, minicom) get EBUSY from open(); a tty
        # without it still has the flock, which guards against a second nmcore
        with contextlib.suppress(OSError):
            fcntl.ioctl(ser.fileno(), termios.TIOCEXCL)
        return ser

    def _open_error(self, path: str, real: str, exc: Exception) -> DeviceError:
        code = getattr(exc, "errno", None)
        text = str(exc)
        if code in _BUSY_ERRNOS or "exclusively lock" in text:
            who = ", ".join(
                f"{'this process' if pid == os.getpid() else name} (pid {pid})"
                for pid, name in port_holders(real)
            )
            return self._err(
                f"port {path} is in use by another program ({who or 'unknown holder'}); "
                "close it and try again"
            )
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return self._err(
                f"serial port {path} not found: is it plugged in? known ports: {_known_ports()}"
            )
        if code == errno.EACCES:
            return self._err(
                f"no permission to open {path}: add the service user to the 'dialout' group"
            )
        return self._err(f"could not open serial port {path}: {text}")

    async def close(self) -> None:
        """Stop reading and release the port. Idempotent; never raises."""
        fd, ser, loop = self._fd, self._serial, self._loop
        self._fd = None
        self._serial = None
        if fd is not None and loop is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        if self._gone is None:
            self._gone = "port closed"
        self._wake()
        self._tell_gone()
        if ser is not None:
            # a tty close waits for pending output to drain (up to 30 s on a wedged USB
            # adapter): never on the event loop
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, _close_port, ser)

    # -- reading -----------------------------------------------------------------------------
    def _on_readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except InterruptedError:
            return
        except OSError as exc:
            self.stats.errors += 1
            why = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self._lost(f"serial port {self.port} lost ({why}: {exc.strerror}): unplugged?")
            return
        if not data:
            self._lost(f"serial port {self.port} closed by the device (end of file): unplugged?")
            return
        now_s = self._clock.now()
        self.stats.reads += 1
        self.stats.bytes_in += len(data)
        on_chunk = self._on_chunk
        if on_chunk is not None:
            on_chunk(Chunk(data, now_s))
        else:
            self._enqueue(Chunk(data, now_s))

    def _enqueue(self, chunk: Chunk) -> None:
        if len(self._chunks) >= self._queue_chunks:
            old = self._chunks.popleft()
            self.stats.dropped_chunks += 1
            self.stats.dropped_bytes += len(old.data)
        self._chunks.append(chunk)
        self._wake()

    def _lost(self, message: str) -> None:
        self._gone = message
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._wake()
        self._tell_gone()

    def _tell_gone(self) -> None:
        on_gone = self._on_gone
        if on_gone is not None and self._gone is not None:
            self._on_chunk = self._on_gone = None
            on_gone(self._gone)

    def deliver_to(
        self,
        on_chunk: Callable[[Chunk], None] | None,
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        """Hand every read to `on_chunk` from the reader callback instead of queueing it for
        `read_chunk` (no task switch per read); `on_gone(why)` once the port is lost or
        closed. Chunks already queued go first; a port already gone calls `on_gone` at once.
        `deliver_to(None)` goes back to queueing."""
        self._on_chunk, self._on_gone = on_chunk, on_gone
        if on_chunk is None:
            self._on_gone = None
            return
        while self._chunks and self._on_chunk is on_chunk:
            on_chunk(self._chunks.popleft())
        if self._gone is not None or self._fd is None:
            self._on_chunk = self._on_gone = None
            if on_gone is not None:
                on_gone(self._gone or "serial port not open")

    async def stream_to(
        self, handle: Callable[[Chunk], None], session: StreamSession | None = None
    ) -> None:
        """Hand every read to `handle` from the reader callback (see `deliver_to`) until the
        port is gone: then raise `DeviceGoneError`. An exception from `handle` ends it too,
        raised here; so does `session.fail(exc)` if the caller passes its own session."""
        session = session or StreamSession()
        self.deliver_to(
            session.guard(handle, late=self._enqueue),
            lambda why: session.fail(DeviceGoneError(why, self.device_id)),
        )
        try:
            await session.wait()
        finally:
            self.deliver_to(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_chunk(self) -> Chunk:
        """The next chunk; `DeviceGoneError` once the port is gone and all chunks are read."""
        while True:
            if self._chunks:
                return self._chunks.popleft()
            if self._gone is not None or self._fd is None:
                raise DeviceGoneError(self._gone or "serial port not open", self.device_id)
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def chunks(self) -> AsyncIterator[Chunk]:
        """`read_chunk` as an iterator (ends with `DeviceGoneError`)."""
        while True:
            yield await self.read_chunk()

    def pending_chunks(self) -> int:
        return len(self._chunks)

    def discard_input(self) -> int:
        """Drop everything read so far (stale bytes before a command); returns bytes dropped."""
        n = sum(len(c.data) for c in self._chunks)
        self._chunks.clear()
        return n

    async def read_until(
        self, terminator: bytes, timeout_s: float, max_bytes: int = 65536
    ) -> bytes:
        """Bytes up to and including `terminator` (a command reply). Bytes after it stay
        queued. Raises `DeviceError` on timeout or overflow, `DeviceGoneError` if lost."""
        buf = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    chunk = await self.read_chunk()
                    start = max(0, len(buf) - len(terminator) + 1)
                    buf += chunk.data
                    idx = buf.find(terminator, start)
                    if idx >= 0:
                        end = idx + len(terminator)
                        if end < len(buf):
                            self._chunks.appendleft(Chunk(bytes(buf[end:]), chunk.arrival_s))
                        return bytes(buf[:end])
                    if len(buf) > max_bytes:
                        raise self._err(
                            f"no {terminator!r} in {len(buf)} bytes from {self.port}: "
                            "wrong device or wrong baud rate?"
                        )
        except TimeoutError:
            raise self._err(
                f"no reply ending in {terminator!r} within {timeout_s:g} s from {self.port} "
                f"(got {bytes(buf[-60:])!r}): is the device switched on and the baud rate "
                f"{self.baudrate}?"
            ) from None

    # -- writing -----------------------------------------------------------------------------
    async def write(self, data: bytes, timeout_s: float = 1.0) -> None:
        """Write all of `data` without blocking the loop. Raises `DeviceGoneError`."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + timeout_s
        while view:
            fd = self._fd
            if fd is None:
                raise DeviceGoneError(self._gone or "serial port not open", self.device_id)
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self.stats.errors += 1
                self._lost(f"serial port {self.port} lost while writing ({exc.strerror})")
                raise DeviceGoneError(self._gone or "lost", self.device_id) from exc
            self.stats.bytes_out += n
            view = view[n:]
            if view:
                if loop.time() > deadline_s:
                    raise self._err(f"write to {self.port} stalled for {timeout_s:g} s")
                await asyncio.sleep(0.001)
        self.stats.writes += 1


class ReadDecodingDriver:
    """`blocks()` and `stream()` of a serial driver that turns each read into blocks on its
    own (its decoder keeps any partial frame): the driver gives `transport`, `device_id` and
    `_decode(chunk)`."""

    transport: SerialTransport
    device_id: str

    def _decode(self, chunk: Chunk) -> list[SampleBlock]:
        raise NotImplementedError

    def _open_transport(self) -> SerialTransport:
        if not self.transport.is_open:
            raise DeviceGoneError("blocks() before open()", self.device_id)
        return self.transport

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        tr = self._open_transport()
        while True:
            for block in self._decode(await tr.read_chunk()):
                yield block

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        """`blocks()` handed to `on_block` from the port's reader callback."""

        def handle(chunk: Chunk) -> None:
            for block in self._decode(chunk):
                on_block(block)

        await self._open_transport().stream_to(handle)
