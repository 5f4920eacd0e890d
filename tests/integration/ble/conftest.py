"""Real bleak against a fake BlueZ: a private dbus-daemon stands in for the system bus
(bleak finds it through DBUS_SYSTEM_BUS_ADDRESS) and tests/fakebluez owns `org.bluez` on it.

The daemon lives for the session; each test gets its own FakeBluez connection (made in the
test's event loop, like bleak's own connections), so no device state leaks between tests.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

_PKG_DIR = Path(__file__).resolve().parents[2] / "fakebluez"


def load_fakebluez() -> ModuleType:
    """Import tests/fakebluez as the package `fakebluez` (tests are not a package)."""
    if "fakebluez" in sys.modules:
        return sys.modules["fakebluez"]
    spec = importlib.util.spec_from_file_location(
        "fakebluez", _PKG_DIR / "__init__.py", submodule_search_locations=[str(_PKG_DIR)]
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fakebluez"] = mod
    spec.loader.exec_module(mod)
    return mod


fakebluez = load_fakebluez()


@pytest.fixture(scope="session")
def system_bus_address() -> Iterator[str]:
    if not fakebluez.dbus_daemon_available():
        pytest.skip("dbus-daemon not installed (Debian package 'dbus'): BLE tests need it")
    bus = fakebluez.PrivateBus()
    address = bus.start()
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    try:
        yield address
    finally:
        if old is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
        bus.stop()


@pytest.fixture
async def fake_bluez(system_bus_address: str) -> AsyncIterator[object]:
    fake = await fakebluez.FakeBluez(system_bus_address).start()
    try:
        yield fake
    finally:
        await fake.stop()
