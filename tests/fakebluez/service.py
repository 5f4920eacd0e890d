"""The fake `org.bluez`: Adapter1, Device1, GattService1 and GattCharacteristic1 objects on a
D-Bus connection, behaving the way bleak's BlueZ backend expects BlueZ to.

Only the parts bleak uses are here: the ObjectManager at / (dbus-fast serves
GetManagedObjects and emits InterfacesAdded/InterfacesRemoved on export/unexport),
discovery (devices in range show up and send RSSI updates while discovering), Connect
(Connected -> GATT objects exported -> ServicesResolved), Disconnect, ReadValue, WriteValue,
StartNotify/StopNotify and notifications as PropertiesChanged("Value"). A device's behaviour
(what it answers, what it streams) lives in a `Personality` (polar.py, nus_board.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

__all__ = [
    "CharSpec",
    "FakeBluez",
    "FakeDevice",
    "Personality",
    "ServiceSpec",
]

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]

ADAPTER_PATH = "/org/bluez/hci0"
DISCOVERY_RSSI_PERIOD_S = 0.1  # how often a device in range "advertises" while discovering


@dataclass(frozen=True, slots=True)
class CharSpec:
    uuid: str
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    uuid: str
    chars: tuple[CharSpec, ...]


class Personality(Protocol):
    """What a device does; the fake calls these from the D-Bus handlers (keep them quick)."""

    name: str
    address: str
    services: tuple[ServiceSpec, ...]
    mtu: int

    def on_connect(self, dev: FakeDevice) -> None: ...

    def on_disconnect(self) -> None: ...

    def on_write(self, char_uuid: str, data: bytes) -> None: ...

    def on_read(self, char_uuid: str) -> bytes: ...

    def on_notify_changed(self, char_uuid: str, enabled: bool) -> None: ...


# D-Bus methods below carry no "-> None": dbus-fast reads return annotations as signatures.
class _Props(ServiceInterface):
    """Shared helpers: properties live in a dict; `set` updates and emits PropertiesChanged."""

    def __init__(self, name: str, props: dict[str, Any]) -> None:
        super().__init__(name)
        self.p = props

    def set(self, **changes: Any) -> None:
        self.p.update(changes)
        self.emit_properties_changed(changes)


class Adapter1(_Props):
    def __init__(self, fake: FakeBluez, powered: bool) -> None:
        super().__init__(
            "org.bluez.Adapter1",
            {
                "Address": "00:1A:7D:DA:71:13",
                "Name": "fakehci",
                "Alias": "fakehci",
                "Powered": powered,
                "Discovering": False,
                "Roles": ["central", "peripheral"],
                "UUIDs": [],
            },
        )
        self.fake = fake

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict):
        del properties

    @dbus_method()
    def StartDiscovery(self):
        if not self.p["Powered"]:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        self.fake.discovery_sessions += 1
        if not self.p["Discovering"]:
            self.set(Discovering=True)
        self.fake.start_advertising()

    @dbus_method()
    def StopDiscovery(self):
        if self.fake.discovery_sessions <= 0:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self.fake.discovery_sessions -= 1
        if self.fake.discovery_sessions == 0:
            self.set(Discovering=False)
            self.fake.stop_advertising()

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath):
        self.fake.remove_device_object(device)

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return str(self.p["Address"])

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return str(self.p["Name"])

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return str(self.p["Alias"])

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> DBusBool:
        return bool(self.p["Powered"])

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return bool(self.p["Discovering"])

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrList:
        return list(self.p["Roles"])

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return list(self.p["UUIDs"])


class Device1(_Props):
    def __init__(self, dev: FakeDevice) -> None:
        pers = dev.personality
        super().__init__(
            "org.bluez.Device1",
            {
                "Address": pers.address,
                "AddressType": "public",
                "Name": pers.name,
                "Alias": pers.name,
                "Adapter": ADAPTER_PATH,
                "Connected": False,
                "ServicesResolved": False,
                "Paired": False,
                "Trusted": False,
                "Bonded": False,
                "RSSI": -60,
                "UUIDs": [s.uuid for s in pers.services],
            },
        )
        self.dev = dev

    @dbus_method()
    async def Connect(self):
        await self.dev.handle_connect()

    @dbus_method()
    async def Disconnect(self):
        self.dev.handle_disconnect(reason="host")

    @dbus_method()
    def Pair(self):
        self.set(Paired=True, Bonded=True)

    @dbus_method()
    def CancelPairing(self):
        pass

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return str(self.p["Address"])

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return str(self.p["AddressType"])

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return str(self.p["Name"])

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return str(self.p["Alias"])

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return str(self.p["Adapter"])

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return bool(self.p["Connected"])

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return bool(self.p["ServicesResolved"])

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return bool(self.p["Paired"])

    @dbus_property(access=PropertyAccess.READ)
    def Trusted(self) -> DBusBool:
        return bool(self.p["Trusted"])

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> DBusBool:
        return bool(self.p["Bonded"])

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return int(self.p["RSSI"])

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return list(self.p["UUIDs"])


class GattService1(_Props):
    def __init__(self, uuid: str, device_path: str, handle: int) -> None:
        super().__init__(
            "org.bluez.GattService1",
            {"UUID": uuid, "Primary": True, "Device": device_path, "Handle": handle},
        )

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return str(self.p["UUID"])

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return bool(self.p["Primary"])

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:
        return str(self.p["Device"])

    @dbus_property(access=PropertyAccess.READ)
    def Handle(self) -> DBusUInt16:
        return int(self.p["Handle"])


class GattCharacteristic1(_Props):
    def __init__(self, dev: FakeDevice, spec: CharSpec, service_path: str, handle: int) -> None:
        super().__init__(
            "org.bluez.GattCharacteristic1",
            {
                "UUID": spec.uuid,
                "Service": service_path,
                "Value": b"",
                "Notifying": False,
                "Flags": list(spec.flags),
                "MTU": dev.personality.mtu,
                "Handle": handle,
            },
        )
        self.dev = dev
        self.uuid = spec.uuid

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        del options
        self.dev.check_link()
        return self.dev.personality.on_read(self.uuid)

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusDict):
        del options
        self.dev.check_link()
        self.dev.writes.append((self.uuid, bytes(value)))
        self.dev.personality.on_write(self.uuid, bytes(value))

    @dbus_method()
    def StartNotify(self):
        self.dev.check_link()
        if self.dev.require_pairing and not self.dev.device1.p["Paired"]:
            raise DBusError("org.bluez.Error.NotPermitted", "Insufficient Authentication")
        if self.dev.refuse_notify:
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        if not self.p["Notifying"]:
            self.set(Notifying=True)
            self.dev.personality.on_notify_changed(self.uuid, True)

    @dbus_method()
    def StopNotify(self):
        if self.p["Notifying"]:
            self.set(Notifying=False)
            self.dev.personality.on_notify_changed(self.uuid, False)

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return str(self.p["UUID"])

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return str(self.p["Service"])

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return bytes(self.p["Value"])

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> DBusBool:
        return bool(self.p["Notifying"])

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return list(self.p["Flags"])

    @dbus_property(access=PropertyAccess.READ)
    def MTU(self) -> DBusUInt16:
        return int(self.p["MTU"])

    @dbus_property(access=PropertyAccess.READ)
    def Handle(self) -> DBusUInt16:
        return int(self.p["Handle"])


@dataclass(slots=True)
class LinkEvents:
    connects: int = 0
    disconnects: int = 0
    drops: int = 0


class FakeDevice:
    """One remote device: its Device1 object, its GATT tree while connected, its personality."""

    def __init__(self, fake: FakeBluez, personality: Personality) -> None:
        self.fake = fake
        self.personality = personality
        self.path = f"{ADAPTER_PATH}/dev_{personality.address.upper().replace(':', '_')}"
        self.device1 = Device1(self)
        self.in_range = True
        self.exported = False
        self.require_pairing = False
        self.refuse_notify = False
        self.connect_delay_s = 0.005  # a real LE connection takes one or two intervals
        self.events = LinkEvents()
        self.writes: list[tuple[str, bytes]] = []
        self._chars: dict[str, GattCharacteristic1] = {}
        self._gatt: list[tuple[str, ServiceInterface]] = []

    @property
    def connected(self) -> bool:
        return bool(self.device1.p["Connected"])

    def check_link(self) -> None:
        if not self.connected:
            raise DBusError("org.bluez.Error.NotConnected", "Not Connected")

    # -- what the personality calls --------------------------------------------------------
    def notify(self, char_uuid: str, data: bytes) -> bool:
        """Send one notification/indication; False (dropped) when nobody subscribed."""
        ch = self._chars.get(char_uuid)
        if ch is None or not self.connected or not ch.p["Notifying"]:
            return False
        ch.set(Value=bytes(data))
        return True

    def notifying(self, char_uuid: str) -> bool:
        ch = self._chars.get(char_uuid)
        return bool(ch is not None and ch.p["Notifying"])

    # -- link control the tests use --------------------------------------------------------
    def drop_link(self, *, out_of_range: bool = True, remove_object: bool = False) -> None:
        """The radio link is lost (supervision timeout): what BlueZ reports to clients."""
        if out_of_range:
            self.in_range = False
        if self.connected:
            self.events.drops += 1
            self.handle_disconnect(reason="link loss")
        if remove_object:
            self.fake.remove_device_object(self.path)

    def come_back(self) -> None:
        # back in range: found again at the next discovery (re-added if BlueZ dropped it)
        self.in_range = True

    # -- D-Bus handlers -------------------------------------------------------------------
    async def handle_connect(self) -> None:
        if self.connected:
            return
        if not self.in_range:
            await asyncio.sleep(0.05)
            raise DBusError("org.bluez.Error.Failed", "Page Timeout")
        await asyncio.sleep(self.connect_delay_s)
        self.events.connects += 1
        self.device1.set(Connected=True)
        self._export_gatt()
        self.device1.set(ServicesResolved=True)
        self.personality.on_connect(self)

    def handle_disconnect(self, reason: str) -> None:
        del reason
        if not self.connected:
            return
        self.events.disconnects += 1
        self.personality.on_disconnect()
        self.device1.set(ServicesResolved=False)
        self._unexport_gatt()
        self.device1.set(Connected=False)

    def _export_gatt(self) -> None:
        bus = self.fake.bus
        handle = 0x000A
        for svc in self.personality.services:
            spath = f"{self.path}/service{handle:04x}"
            gs = GattService1(svc.uuid, self.path, handle)
            bus.export(spath, gs)
            self._gatt.append((spath, gs))
            handle += 1
            for spec in svc.chars:
                cpath = f"{spath}/char{handle:04x}"
                ch = GattCharacteristic1(self, spec, spath, handle)
                bus.export(cpath, ch)
                self._gatt.append((cpath, ch))
                self._chars[spec.uuid] = ch
                handle += 2  # value handle + CCCD
        self.exported_gatt = True

    def _unexport_gatt(self) -> None:
        bus = self.fake.bus
        for path, iface in reversed(self._gatt):
            with contextlib.suppress(Exception):
                bus.unexport(path, iface)
        self._gatt.clear()
        self._chars.clear()


@dataclass(slots=True)
class _Advertiser:
    task: asyncio.Task[None] | None = None
    stop: Callable[[], None] | None = None


class FakeBluez:
    """`await FakeBluez(address).start()` owns `org.bluez` on the bus at `address`."""

    def __init__(self, bus_address: str, *, adapter_present: bool = True, powered: bool = True):
        self.bus_address = bus_address
        self.adapter_present = adapter_present
        self.powered = powered
        self.devices: dict[str, FakeDevice] = {}
        self.discovery_sessions = 0
        self._bus: MessageBus | None = None
        self._adapter: Adapter1 | None = None
        self._adv: _Advertiser = _Advertiser()
        self._bg: set[asyncio.Task[Any]] = set()

    @property
    def bus(self) -> MessageBus:
        assert self._bus is not None, "FakeBluez.start() first"
        return self._bus

    @property
    def adapter(self) -> Adapter1:
        assert self._adapter is not None
        return self._adapter

    async def start(self) -> FakeBluez:
        bus = MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM)
        await bus.connect()
        self._bus = bus
        if self.adapter_present:
            self._adapter = Adapter1(self, self.powered)
            bus.export(ADAPTER_PATH, self._adapter)
        await bus.request_name("org.bluez")
        return self

    async def stop(self) -> None:
        self.stop_advertising()
        for dev in self.devices.values():
            dev.personality.on_disconnect()
        for t in list(self._bg):
            t.cancel()
        if self._bus is not None:
            self._bus.disconnect()
            await self._bus.wait_for_disconnect()
            self._bus = None

    def add_device(self, personality: Personality) -> FakeDevice:
        dev = FakeDevice(self, personality)
        self.devices[personality.address] = dev
        return dev

    def export_device(self, dev: FakeDevice) -> None:
        if not dev.exported:
            self.bus.export(dev.path, dev.device1)
            dev.exported = True

    def remove_device_object(self, path: str) -> None:
        for dev in self.devices.values():
            if dev.path == path and dev.exported:
                dev.handle_disconnect(reason="removed")
                self.bus.unexport(path, dev.device1)
                dev.exported = False

    def set_powered(self, powered: bool) -> None:
        self.adapter.set(Powered=powered)

    # -- advertising while discovering --------------------------------------------------
    def start_advertising(self) -> None:
        if self._adv.task is None:
            self._adv.task = asyncio.get_running_loop().create_task(self._advertise())

    def stop_advertising(self) -> None:
        if self._adv.task is not None:
            self._adv.task.cancel()
            self._adv.task = None

    async def _advertise(self) -> None:
        rssi = -60
        while True:
            for dev in self.devices.values():
                if not dev.in_range or dev.connected:
                    continue
                if not dev.exported:
                    self.export_device(dev)  # InterfacesAdded: "new device found"
                else:
                    rssi = -60 - (rssi + 61) % 5  # vary so each update is a real change
                    dev.device1.set(RSSI=rssi)
            await asyncio.sleep(DISCOVERY_RSSI_PERIOD_S)
