"""BLE transport on bleak: connect, read the MTU, subscribe, write; notifications become
`(arrival_s, bytes)` chunks on bounded queues.

The BLE callbacks stamp the arrival time from the host clock passed in and append to a
deque: a full queue drops the chunk and counts it (a stalled consumer must never block the
D-Bus reader, or every device on the adapter stalls with it). A driver's `stream()` takes
the chunks from the callback instead (`NotificationQueue.deliver_to`): the decoding it does
there is the work its reader task would do on the same loop right after, without the task
switch. A disconnect ends every queue with `DeviceGoneError`, so a driver's `blocks()` (or
`stream()`) raises at once and the runtime's supervisor reconnects (by calling the driver's
`open()` again; nothing here loops on reconnect). Low-level bleak/BlueZ failures become
`DeviceError`s whose message says what to do.

`BleByteStream` turns a pair of characteristics (the Nordic UART Service by default) into a
byte stream for protocols that frame their own packets (nmcore firmware over BLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nmcore.driver import StreamSession
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.hostclock import HostClock

__all__ = [
    "NUS_RX_UUID",
    "NUS_SERVICE_UUID",
    "NUS_TX_UUID",
    "BleByteStream",
    "BleLink",
    "LinkStats",
    "NotificationQueue",
]

log = logging.getLogger("nmcore.transport.ble")

NUS_SERVICE_UUID = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX_UUID = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"  # host writes commands here
NUS_TX_UUID = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"  # device notifies bytes here

# The smallest ATT MTU every BLE link supports; BlueZ < 5.62 does not report the real one.
DEFAULT_ATT_MTU = 23
# ~10 s of notifications at a fast 7.5 ms connection interval with a few per event.
DEFAULT_QUEUE_CHUNKS = 4096

_PAIRING_ERRORS = (
    "org.bluez.Error.NotPermitted",
    "org.bluez.Error.AuthenticationFailed",
    "org.bluez.Error.AuthenticationRejected",
    "org.bluez.Error.AuthenticationCanceled",
    "org.bluez.Error.NotAuthorized",
)
_PAIRING_WORDS = ("authentication", "encryption", "authorization", "insufficient")


@dataclass(slots=True)
class LinkStats:
    """Totals for one `BleLink` over all its connections."""

    connects: int = 0
    disconnects: int = 0
    notifications: int = 0
    bytes_in: int = 0
    dropped_chunks: int = 0


class NotificationQueue:
    """Bounded FIFO of `(arrival_s, payload)` filled from a BLE callback, read by one task.

    `push` never blocks or raises: a full queue drops the new chunk and counts it.
    `close(exc)` wakes the reader, which gets the chunks still queued and then `exc`.
    `deliver_to` hands chunks to a callback instead (no queue, no task switch per chunk).
    """

    def __init__(self, clock: HostClock, maxlen: int, stats: LinkStats) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen={maxlen}: a queue must hold at least one chunk")
        self._clock = clock
        self._maxlen = maxlen
        self._items: deque[tuple[float, bytes]] = deque()
        self._stats = stats
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._on_item: Callable[[float, bytes], None] | None = None
        self._on_close: Callable[[BaseException], None] | None = None
        self.dropped = 0
        self.received = 0

    def push(self, payload: bytes | bytearray) -> None:
        arrival_s = self._clock.now()
        self.received += 1
        self._stats.notifications += 1
        self._stats.bytes_in += len(payload)
        on_item = self._on_item
        if on_item is not None:
            on_item(arrival_s, bytes(payload))
        else:
            self._enqueue(arrival_s, bytes(payload))

    def _enqueue(self, arrival_s: float, payload: bytes) -> None:
        if len(self._items) >= self._maxlen:
            self.dropped += 1
            self._stats.dropped_chunks += 1
            return
        self._items.append((arrival_s, payload))
        self._wake()

    def close(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()
        self._tell_closed()

    def _tell_closed(self) -> None:
        on_close, error = self._on_close, self._error
        if on_close is not None and error is not None:
            self._on_item = self._on_close = None
            on_close(error)

    def deliver_to(
        self,
        on_item: Callable[[float, bytes], None] | None,
        on_close: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Hand every chunk to `on_item(arrival_s, payload)` from the BLE callback instead of
        queueing it (the consumer's work then runs there, on the loop, as it would in the
        reader task right after); `on_close(exc)` once the queue is closed. Chunks already
        queued go first. `deliver_to(None)` queues again."""
        self._on_item, self._on_close = on_item, on_close
        if on_item is None:
            self._on_close = None
            return
        while self._items and self._on_item is on_item:
            on_item(*self._items.popleft())
        self._tell_closed()

    @property
    def closed(self) -> bool:
        return self._error is not None

    async def stream_to(self, handle: Callable[[float, bytes], None]) -> None:
        """Hand every chunk to `handle(arrival_s, payload)` from the BLE callback (see
        `deliver_to`) until the queue closes: then raise its error. An exception from
        `handle` ends it too, raised here."""
        session = StreamSession()
        self.deliver_to(session.guard(handle, late=self._enqueue), session.fail)
        try:
            await session.wait()
        finally:
            self.deliver_to(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> tuple[float, bytes]:
        """The oldest chunk; raises the close error once the queue is closed and empty."""
        while not self._items:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def drain(self) -> list[tuple[float, bytes]]:
        """Everything queued now, without waiting (may be empty)."""
        out = list(self._items)
        self._items.clear()
        return out


def _bleak() -> Any:
    # imported lazily: a machine without BLE support can still load every other driver
    import bleak

    return bleak


def _explain(exc: BaseException, target: str, action: str) -> str:
    """A message for a lab technician from a bleak/BlueZ failure."""
    exc_mod = _bleak().exc
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, exc_mod.BleakBluetoothNotAvailableError):
        reason = getattr(exc, "reason", None)
        name = getattr(reason, "name", "")
        if name == "POWERED_OFF":
            return (
                "the Bluetooth adapter is switched off: run `bluetoothctl power on` "
                "(and `rfkill unblock bluetooth` if it is blocked), then retry"
            )
        if name == "DENIED_BY_SYSTEM":
            return (
                "the system refused access to Bluetooth: run nmcore as a user allowed to talk "
                "to BlueZ over D-Bus (e.g. in group 'bluetooth') or check the D-Bus policy"
            )
        return (
            "no Bluetooth adapter found: plug in a BLE adapter or enable the built-in one, "
            f"check `bluetoothctl list` and that bluetoothd runs ({text})"
        )
    if isinstance(exc, exc_mod.BleakDeviceNotFoundError):
        return (
            f"{target} was not found: check that it is switched on, within a few metres, "
            "not connected to a phone app, and that the address/name in the config is right"
        )
    dbus_error = getattr(exc, "dbus_error", "") or ""
    if dbus_error in _PAIRING_ERRORS or any(w in lowered for w in _PAIRING_WORDS):
        return (
            f"{target} requires pairing: pair it once with `bluetoothctl pair <address>` "
            f"and `bluetoothctl trust <address>`, then retry ({action}: {text})"
        )
    if dbus_error == "org.bluez.Error.NotReady":
        return "the Bluetooth adapter is not ready: run `bluetoothctl power on` and retry"
    if isinstance(exc, TimeoutError):
        return (
            f"{target} did not answer while {action}: move it closer to the adapter, "
            "check its battery, and make sure no other device or app holds the connection"
        )
    return f"{action} failed: {type(exc).__name__}: {text}"


class BleLink:
    """One BLE peripheral: `connect`, `subscribe`, `read`, `write`, `close`.

    Identify the device by `address` (preferred: stable, no scan filter on the name needed)
    or by advertised `name`. `connect_timeout_s` bounds the scan and the connection each.
    A link object may be connected again after `close` (the supervisor's reconnect path);
    each connection makes a new bleak client, so no state from a dead link survives.
    """

    def __init__(
        self,
        *,
        device_id: str,
        clock: HostClock,
        address: str | None = None,
        name: str | None = None,
        connect_timeout_s: float = 10.0,
        queue_chunks: int = DEFAULT_QUEUE_CHUNKS,
    ) -> None:
        if (address is None) == (name is None):
            raise ValueError("give exactly one of address= or name= to find the device")
        self.device_id = device_id
        self.address = address
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.stats = LinkStats()
        self.att_mtu = DEFAULT_ATT_MTU
        self._clock = clock
        self._queue_chunks = queue_chunks
        self._client: Any = None
        self._queues: dict[str, NotificationQueue] = {}
        self._gone_reason: str | None = None

    @property
    def target(self) -> str:
        return f"BLE device {self.address}" if self.address else f"BLE device named {self.name!r}"

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    @property
    def max_payload(self) -> int:
        """Largest notification/write payload on this link (ATT MTU - 3)."""
        return self.att_mtu - 3

    def _fail(self, exc: BaseException, action: str) -> DeviceError:
        return DeviceError(_explain(exc, self.target, action), self.device_id)

    async def _find(self) -> Any:
        bleak = _bleak()
        scanner = bleak.BleakScanner
        timeout_s = self.connect_timeout_s
        if self.address is not None:
            device = await scanner.find_device_by_address(self.address, timeout=timeout_s)
        else:
            wanted = self.name

            def match(dev: Any, adv: Any) -> bool:
                return bool(dev.name == wanted or adv.local_name == wanted)

            device = await scanner.find_device_by_filter(match, timeout=timeout_s)
        if device is None:
            raise DeviceError(
                f"{self.target} was not found within {timeout_s:g} s of scanning: check that "
                "it is switched on, within a few metres of the adapter, not connected to a "
                "phone app or another computer, and that the address/name in the config is right",
                self.device_id,
            )
        return device

    async def connect(self) -> None:
        """Scan for the device, connect, read the MTU. Raises `DeviceError`."""
        await self.close()
        self._gone_reason = None
        bleak = _bleak()
        try:
            device = await self._find()
            client = bleak.BleakClient(
                device,
                disconnected_callback=self._on_disconnect,
                timeout=self.connect_timeout_s,
            )
            self._client = client
            await client.connect()
        except DeviceError:
            raise
        except (bleak.exc.BleakError, TimeoutError, OSError) as exc:
            await self.close()
            raise self._fail(exc, "connecting") from exc
        self.stats.connects += 1
        self.att_mtu = self._read_mtu(client)
        log.debug("%s: connected, ATT MTU %d", self.device_id, self.att_mtu)

    @staticmethod
    def _read_mtu(client: Any) -> int:
        # BlueZ >= 5.62 publishes the negotiated MTU on every characteristic; bleak exposes it
        # as max_write_without_response_size (= MTU - 3). bleak's mtu_size would need
        # AcquireWrite/AcquireNotify, which many devices mishandle.
        for service in client.services:
            for char in service.characteristics:
                return int(char.max_write_without_response_size) + 3
        return DEFAULT_ATT_MTU

    def _on_disconnect(self, client: Any) -> None:
        if client is not self._client:
            return  # a stale client from an earlier connection
        self.stats.disconnects += 1
        reason = self._gone_reason or f"{self.target} disconnected (link lost or out of range)"
        self._gone_reason = reason
        for q in self._queues.values():
            q.close(DeviceGoneError(reason, self.device_id))

    def _require(self) -> Any:
        if self._client is None or not self._client.is_connected:
            raise DeviceGoneError(
                self._gone_reason or f"{self.target} is not connected", self.device_id
            )
        return self._client

    async def subscribe(
        self, char_uuid: str, *, queue_chunks: int | None = None
    ) -> NotificationQueue:
        """Enable notifications/indications; chunks land on the returned queue."""
        client = self._require()
        q = NotificationQueue(self._clock, queue_chunks or self._queue_chunks, self.stats)
        self._queues[char_uuid] = q

        def on_notify(_char: Any, data: bytearray) -> None:
            q.push(data)

        try:
            await client.start_notify(char_uuid, on_notify)
        except (_bleak().exc.BleakError, TimeoutError, OSError) as exc:
            if not self.connected:
                raise DeviceGoneError(
                    f"{self.target} disconnected while subscribing", self.device_id
                ) from exc
            msg = _explain(exc, self.target, f"enabling notifications on {char_uuid}")
            if "pair" not in msg:
                msg = (
                    f"{self.target} refused notifications on characteristic {char_uuid}: "
                    "another app may hold the device, or its firmware does not offer this "
                    f"measurement ({exc})"
                )
            raise DeviceError(msg, self.device_id) from exc
        return q

    async def read(self, char_uuid: str) -> bytes:
        client = self._require()
        try:
            return bytes(await client.read_gatt_char(char_uuid))
        except (_bleak().exc.BleakError, TimeoutError, OSError) as exc:
            raise self._io_error(exc, f"reading {char_uuid}") from exc

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        client = self._require()
        try:
            await client.write_gatt_char(char_uuid, data, response=response)
        except (_bleak().exc.BleakError, TimeoutError, OSError) as exc:
            raise self._io_error(exc, f"writing {char_uuid}") from exc

    def _io_error(self, exc: BaseException, action: str) -> DeviceError:
        if not self.connected:
            return DeviceGoneError(f"{self.target} disconnected while {action}", self.device_id)
        return self._fail(exc, action)

    async def close(self) -> None:
        """Disconnect; idempotent, never raises for a link already gone."""
        client, self._client = self._client, None
        for q in self._queues.values():
            q.close(DeviceGoneError(f"{self.target}: link closed", self.device_id))
        self._queues.clear()
        if client is None:
            return
        with contextlib.suppress(Exception):
            await client.disconnect()


class BleByteStream:
    """A byte stream over two characteristics: notifications in, writes out (NUS by default).

    Reads keep the notification boundaries (one chunk per notification, with its arrival
    time); the protocol's own frame decoder reassembles frames split across notifications.
    Writes are cut into pieces of at most the link's payload size.
    """

    def __init__(
        self,
        link: BleLink,
        *,
        rx_uuid: str = NUS_RX_UUID,
        tx_uuid: str = NUS_TX_UUID,
        write_with_response: bool = True,
    ) -> None:
        self.link = link
        self.rx_uuid = rx_uuid
        self.tx_uuid = tx_uuid
        self.write_with_response = write_with_response
        self._queue: NotificationQueue | None = None

    async def open(self) -> None:
        """Subscribe to the device's TX characteristic (connect the link first)."""
        self._queue = await self.link.subscribe(self.tx_uuid)

    @property
    def queue(self) -> NotificationQueue:
        if self._queue is None:
            raise DeviceGoneError("byte stream not open", self.link.device_id)
        return self._queue

    async def read(self) -> tuple[float, bytes]:
        return await self.queue.get()

    async def write(self, data: bytes) -> None:
        step = max(1, self.link.max_payload)
        for i in range(0, len(data), step):
            await self.link.write(
                self.rx_uuid, data[i : i + step], response=self.write_with_response
            )
