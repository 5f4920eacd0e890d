"""`nmcore devices`: the serial listing against pty-backed ports published through a by-id
directory, `--probe` answered by the reference firmware's host build, ports in use left
alone, and `devices scan` without a reachable BlueZ."""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import re
import subprocess
import sys
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import serial

from nmcore.cli import devices
from nmcore.cli.main import main
from nmcore.errors import DeviceError
from nmcore.hostclock import MonotonicClock
from nmcore.transport.ports import BY_ID_DIR


@pytest.fixture
def firmware_pty(fw_bin: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [str(fw_bin), "--pty"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        m = re.fullmatch(r"PTY (\S+)\n", proc.stderr.readline().decode())
        assert m
        yield m.group(1)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A port nobody answers on (the test holds the master and never writes)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    devices.add_arguments(p)
    return p.parse_args(list(argv))


def _run(by_id: Path, *argv: str) -> str:
    out = io.StringIO()
    assert devices.run(_args(*argv), by_id_dir=by_id, out=out) == 0
    return out.getvalue()


def _row(text: str, device: str) -> str:
    (row,) = [line for line in text.splitlines() if line.startswith(device + " ")]
    return row


def test_listing_shows_ports_published_under_by_id(tmp_path: Path, silent_pty: str) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    link = by_id / "usb-nmcore_ref_A1B2-if00"
    link.symlink_to(silent_pty)
    (by_id / "usb-gone-if00").symlink_to(tmp_path / "nothing")  # a dangling link: skipped
    text = _run(by_id)
    assert text.splitlines()[0].split() == ["DEVICE", "BY-ID", "USB", "SERIAL", "DESCRIPTION"]
    assert str(link) in _row(text, silent_pty)
    assert "usb-gone" not in text
    # the pty is listed once, with its by-id path, however many times it is found
    assert text.count(silent_pty + " ") == 1


def test_probe_shows_what_the_firmware_answers(tmp_path: Path, firmware_pty: str) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-nmcore_ref-if00").symlink_to(firmware_pty)
    text = _run(by_id, "--probe", "--timeout", "2")
    assert text.splitlines()[0].split()[-1] == "PROBE"
    row = _row(text, firmware_pty)
    assert "nmcore-ref-host fw 1.0.0 protocol 1" in row
    assert "0:emg 16ch 2000Hz V" in row
    assert "1:imu 3ch 200Hz m/s2" in row
    assert "2:force 4ch 1000Hz N" in row
    assert "3:trigger" in row


def test_probe_leaves_a_port_in_use_alone(tmp_path: Path, firmware_pty: str) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-nmcore_ref-if00").symlink_to(firmware_pty)
    holder = serial.Serial(firmware_pty, exclusive=True)  # as a running nmcore holds it
    try:
        text = _run(by_id, "--probe", "--timeout", "2")
    finally:
        holder.close()
    assert "in use" in _row(text, firmware_pty)


def test_probe_of_a_silent_port(tmp_path: Path, silent_pty: str) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-other-if00").symlink_to(silent_pty)
    text = _run(by_id, "--probe", "--timeout", "0.2")
    assert "no answer: silent within 0.2 s" in _row(text, silent_pty)


def test_probe_result_summaries() -> None:
    assert devices.ProbeResult("no answer", "silent").summary() == "no answer: silent"
    ok = devices.ProbeResult(
        "ok",
        identity={
            "device_id": "x",
            "firmware_version": [2, 1, 0],
            "protocol_version": 1,
            "streams": [
                {"stream_id": 0, "kind": "emg", "channel_count": 2, "rate_hz": 500, "unit": "V"},
                {"stream_id": 3, "kind": "trigger", "channel_count": 1, "rate_hz": 0, "unit": ""},
            ],
        },
    )
    assert ok.summary() == "x fw 2.1.0 protocol 1 [0:emg 2ch 500Hz V, 3:trigger]"


def test_ble_drivers_from_advertised_services() -> None:
    installed = {"polar.pmd", "nmcore.ble"}
    nus = "6E400001-B5A3-F393-E0A9-E50E24DCCA9E"
    assert devices._drivers_for("board", [nus], installed) == ("nmcore.ble",)
    assert devices._drivers_for(
        "Polar H10 1234", ["0000180d-0000-1000-8000-00805f9b34fb"], installed
    ) == ("polar.pmd",)
    assert devices._drivers_for("board", [nus], {"polar.pmd"}) == ()
    table = devices.format_ble_table(
        [devices.BleFound("F0:0D:CA:FE:00:01", "board", -60, (nus,), ("nmcore.ble",))]
    )
    assert table.splitlines()[1].split() == ["F0:0D:CA:FE:00:01", "board", "-60", "nmcore.ble"]


def test_scan_without_bluez_exits_69(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # no system bus at that address: what a machine without BlueZ (or a container) looks like
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    assert main(["devices", "scan", "--timeout", "0.5"]) == 69
    assert "bluetoothd" in capsys.readouterr().err


def test_devices_command_lists_real_ports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(("DEVICE", "no serial ports found"))
    if not BY_ID_DIR.is_dir():
        assert "/dev/serial/by-id" not in out


# -- `devices scan` against the fake BlueZ (tests/fakebluez, as tests/integration/ble uses it)
def _load_fakebluez() -> ModuleType:
    if "fakebluez" in sys.modules:
        return sys.modules["fakebluez"]
    pkg = Path(__file__).resolve().parents[1] / "fakebluez"
    spec = importlib.util.spec_from_file_location(
        "fakebluez", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fakebluez"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def private_bus() -> Iterator[str]:
    fb = _load_fakebluez()
    if not fb.dbus_daemon_available():
        pytest.skip("dbus-daemon not installed (Debian package 'dbus'): BLE tests need it")
    bus = fb.PrivateBus()
    address = bus.start()
    try:
        yield address
    finally:
        bus.stop()


@pytest.fixture
async def bluez(private_bus: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus)
    fake = await _load_fakebluez().FakeBluez(private_bus).start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_scan_names_the_drivers_for_each_device(bluez: Any) -> None:
    fb = _load_fakebluez()
    clock = MonotonicClock()
    board = fb.NusBoardEmulator(clock)
    strap = fb.H10Emulator(clock)
    bluez.add_device(board)
    bluez.add_device(strap)
    found = {f.address: f for f in await devices.scan_ble(1.0)}
    assert found[board.address].drivers == ("nmcore.ble",)
    assert found[strap.address].drivers == ("polar.pmd",)
    table = devices.format_ble_table(list(found.values()))
    assert board.address in table
    assert "polar.pmd" in table


async def test_scan_without_an_adapter(private_bus: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus)
    fake = await _load_fakebluez().FakeBluez(private_bus, adapter_present=False).start()
    try:
        with pytest.raises(DeviceError) as err:
            await devices.scan_ble(0.5)
    finally:
        await fake.stop()
    assert err.value.exit_code == 69
    assert "adapter" in str(err.value)
