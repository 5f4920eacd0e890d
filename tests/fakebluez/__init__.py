"""A fake BlueZ (`org.bluez` on a private D-Bus daemon) that real bleak talks to, with device
personalities: a Polar H10 (PMD service) and an nmcore firmware board on the Nordic UART
Service. Used by tests/integration/ble and benchmarks/bench_ble.py. It is not an installed
package: they load it by path (`load_fakebluez()` in tests/integration/ble/conftest.py and in
benchmarks/bench_ble.py).
"""

from .bus import PrivateBus, dbus_daemon_available
from .h10_session import collect_blocks, stream_h10_blocks
from .nus_board import NusBoardEmulator
from .polar import H10Emulator
from .service import FakeBluez, FakeDevice

__all__ = [
    "FakeBluez",
    "FakeDevice",
    "H10Emulator",
    "NusBoardEmulator",
    "PrivateBus",
    "collect_blocks",
    "dbus_daemon_available",
    "stream_h10_blocks",
]
