"""`nmcore devices`: what is plugged in or nearby, and which driver can serve it.

- `nmcore devices` lists serial ports: device node, the stable /dev/serial/by-id path to put
  in a config, USB VID:PID, serial number, description.
- `nmcore devices --probe` also sends the nmcore protocol's IDENTIFY command to each port
  (firmware/PROTOCOL.md) and shows what answered: device id, firmware version, streams.
  A port in use is never probed: one locked by another program (the exclusive lock every
  nmcore process and pyserial user takes, TIOCEXCL, or a UUCP lock file), or held open by
  another process. Pseudo-terminals are the exception to the last rule: the program that
  created one keeps it open by design, so only locks count there.
- `nmcore devices scan` lists nearby BLE devices and the installed drivers whose service
  they advertise.

Exit codes: 0, or 69 when BLE is unavailable (no adapter, no BlueZ).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nmcore.errors import DeviceError
from nmcore.hostclock import MonotonicClock
from nmcore.runtime import eventloop
from nmcore.transport.ports import BY_ID_DIR, PortInfo, list_serial_ports
from nmcore.transport.serial import SerialTransport, port_holders

__all__ = [
    "BLE_SERVICE_DRIVERS",
    "BleFound",
    "ProbeResult",
    "add_arguments",
    "collect_ports",
    "format_ble_table",
    "format_port_table",
    "probe_port",
    "run",
    "scan_ble",
]

DEFAULT_PROBE_TIMEOUT_S = 0.5  # a reference firmware answers IDENTIFY in < 10 ms
DEFAULT_PROBE_BAUDRATE = 1_000_000  # the reference firmware's rate
DEFAULT_SCAN_S = 5.0  # long enough for devices advertising every 1-2 s to be heard twice

# Advertised service UUID -> the driver that speaks it (the CLI shows only installed ones).
BLE_SERVICE_DRIVERS: dict[str, str] = {
    "fb005c80-02e7-f387-1cad-8acd2d8df0c8": "polar.pmd",  # Polar Measurement Data
    "6e400001-b5a3-f393-e0a9-e50e24dcca9e": "nmcore.ble",  # Nordic UART Service
}
# Polar straps advertise only the heart-rate service; their name gives them away.
_NAME_PREFIX_DRIVERS = {"Polar ": "polar.pmd"}
_LOCK_DIRS = (Path("/run/lock"), Path("/var/lock"))


# -- serial ports ------------------------------------------------------------------------------
def collect_ports(*, by_id_dir: Path = BY_ID_DIR) -> list[PortInfo]:
    """Ports the OS lists, plus any by-id link whose target it does not (a pty an emulator
    publishes there, a driver pyserial does not know)."""
    ports = list_serial_ports(by_id_dir=by_id_dir)
    known = {os.path.realpath(p.device) for p in ports}
    try:
        links = sorted(by_id_dir.iterdir())
    except OSError:
        return ports
    for link in links:
        real = os.path.realpath(link)
        if real in known or not os.path.exists(real):
            continue
        known.add(real)
        ports.append(
            PortInfo(
                device=real,
                by_id=str(link),
                description="",
                vid=None,
                pid=None,
                serial_number=None,
                manufacturer=None,
                product=None,
                location=None,
            )
        )
    return ports


@dataclass(slots=True)
class ProbeResult:
    """What a port answered to IDENTIFY. `status`: 'ok', 'in use', 'no answer', 'refused'
    (the device answered with an error status) or 'error' (the port could not be opened)."""

    status: str
    detail: str = ""
    identity: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.status != "ok":
            return f"{self.status}: {self.detail}" if self.detail else self.status
        ident = self.identity
        fw = ".".join(str(v) for v in ident.get("firmware_version", []))
        streams = ", ".join(
            f"{s['stream_id']}:{s['kind']}"
            + (f" {s['channel_count']}ch {s['rate_hz']}Hz {s['unit']}" if s["rate_hz"] else "")
            for s in ident.get("streams", [])
        )
        proto = ident.get("protocol_version")
        return f"{ident.get('device_id', '?')} fw {fw} protocol {proto} [{streams}]"


def _lock_file_owner(device: str) -> str | None:
    """A UUCP-style lock file (minicom, screen with lock support): 'LCK..ttyUSB0'."""
    name = "LCK.." + os.path.basename(device)
    for d in _LOCK_DIRS:
        path = d / name
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return f"lock file {path} (pid {text or '?'})"
    return None


def _in_use(device: str) -> str | None:
    real = os.path.realpath(device)
    owner = _lock_file_owner(real)
    if owner is not None:
        return owner
    if real.startswith("/dev/pts/"):
        return None  # its creator keeps it open; the exclusive open below still guards it
    me = os.getpid()
    holders = [f"{name} (pid {pid})" for pid, name in port_holders(real) if pid != me]
    return ", ".join(holders) if holders else None


async def probe_port(
    device: str,
    *,
    baudrate: int = DEFAULT_PROBE_BAUDRATE,
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Send IDENTIFY to `device` and wait up to `timeout_s` for the reply; never raises for
    a port that is busy, silent or speaks something else."""
    # imported here: the plain listing needs neither numba nor the protocol
    from nmcore.framing import FrameDecoder, PacketType, encode_command

    holder = _in_use(device)
    if holder is not None:
        return ProbeResult("in use", f"held by {holder}; not probed")
    transport = SerialTransport(device, baudrate=baudrate, clock=MonotonicClock())
    try:
        await transport.open()
    except DeviceError as exc:
        text = str(exc)
        return ProbeResult("in use" if "in use" in text else "error", text)
    seq = 0x6E6D  # arbitrary, recognisable in a capture
    decoder = FrameDecoder()
    try:
        await transport.write(encode_command("identify", seq=seq), timeout_s=timeout_s)
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await transport.read_chunk()
                for pkt in decoder.feed(chunk.data):
                    if pkt.ptype is PacketType.COMMAND_REPLY and pkt.counter == seq:
                        if pkt.fields.get("status") != "ok":
                            return ProbeResult("refused", str(pkt.fields.get("status")))
                        return ProbeResult("ok", identity=dict(pkt.fields))
    except TimeoutError:
        junk = decoder.stats.bytes_skipped + decoder.pending_bytes
        detail = f"{junk} bytes of something else" if junk else "silent"
        return ProbeResult("no answer", f"{detail} within {timeout_s:g} s at {baudrate} baud")
    except DeviceError as exc:
        return ProbeResult("error", str(exc))
    finally:
        await transport.close()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def format_port_table(
    ports: Sequence[PortInfo], probes: dict[str, ProbeResult] | None = None
) -> str:
    if not ports:
        return "no serial ports found"
    header = ["DEVICE", "BY-ID", "USB", "SERIAL", "DESCRIPTION"]
    if probes is not None:
        header.append("PROBE")
    rows = []
    for p in ports:
        row = [p.device, p.by_id or "-", p.usb_id or "-", p.serial_number or "-"]
        row.append(p.description or p.product or "-")
        if probes is not None:
            row.append(probes[p.device].summary() if p.device in probes else "-")
        rows.append(row)
    return _table(header, rows)


# -- BLE ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BleFound:
    address: str
    name: str
    rssi_dbm: int | None
    service_uuids: tuple[str, ...]
    drivers: tuple[str, ...]


def _drivers_for(name: str, uuids: Sequence[str], installed: set[str]) -> tuple[str, ...]:
    found = [BLE_SERVICE_DRIVERS[u.lower()] for u in uuids if u.lower() in BLE_SERVICE_DRIVERS]
    found += [drv for prefix, drv in _NAME_PREFIX_DRIVERS.items() if name.startswith(prefix)]
    return tuple(sorted({d for d in found if d in installed}))


async def scan_ble(timeout_s: float = DEFAULT_SCAN_S) -> list[BleFound]:
    """Nearby advertisers, strongest first. Raises `DeviceError` when BLE is unavailable."""
    from nmcore.driver import available_drivers
    from nmcore.transport.ble import _bleak, _explain

    try:
        bleak = _bleak()
    except ImportError as exc:
        raise DeviceError(f"BLE support is not installed ({exc}): pip install bleak") from exc
    try:
        seen = await bleak.BleakScanner.discover(timeout=timeout_s, return_adv=True)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DeviceError(
            "cannot reach BlueZ over the D-Bus system bus "
            f"({type(exc).__name__}: {exc}): is a Bluetooth adapter present and are dbus and "
            "bluetoothd running? (systemctl status bluetooth; bluetoothctl list)"
        ) from exc
    except Exception as exc:
        raise DeviceError(_explain(exc, "BLE scan", "scanning")) from exc
    installed = set(available_drivers())
    out = []
    for dev, adv in seen.values():
        name = adv.local_name or dev.name or ""
        uuids = tuple(adv.service_uuids or ())
        out.append(
            BleFound(dev.address, name, adv.rssi, uuids, _drivers_for(name, uuids, installed))
        )
    out.sort(key=lambda f: -(f.rssi_dbm if f.rssi_dbm is not None else -999))
    return out


def format_ble_table(found: Sequence[BleFound]) -> str:
    if not found:
        return "no BLE devices heard"
    rows = [
        [
            f.address,
            f.name or "-",
            "-" if f.rssi_dbm is None else str(f.rssi_dbm),
            ", ".join(f.drivers) or "-",
        ]
        for f in found
    ]
    return _table(["ADDRESS", "NAME", "RSSI", "DRIVERS"], rows)


# -- the command -------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=["scan"],
        help="'scan': list nearby BLE devices instead of serial ports",
    )
    p.add_argument(
        "--probe", action="store_true", help="ask each free serial port who it is (IDENTIFY)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"probe reply timeout (default {DEFAULT_PROBE_TIMEOUT_S:g} s) or BLE scan "
        f"duration (default {DEFAULT_SCAN_S:g} s)",
    )
    p.add_argument(
        "--baudrate",
        type=int,
        default=DEFAULT_PROBE_BAUDRATE,
        help=f"probe baud rate (default {DEFAULT_PROBE_BAUDRATE})",
    )


async def _probe_all(
    ports: Sequence[PortInfo], baudrate: int, timeout_s: float
) -> dict[str, ProbeResult]:
    results = await asyncio.gather(
        *(probe_port(p.device, baudrate=baudrate, timeout_s=timeout_s) for p in ports)
    )
    return {p.device: r for p, r in zip(ports, results, strict=True)}


def run(args: argparse.Namespace, *, by_id_dir: Path = BY_ID_DIR, out: TextIO | None = None) -> int:
    """The `devices` subcommand. Raises `DeviceError` (exit 69) when BLE is unavailable."""
    stream = out if out is not None else sys.stdout
    if args.action == "scan":
        timeout_s = args.timeout if args.timeout is not None else DEFAULT_SCAN_S
        found = eventloop.run(scan_ble(timeout_s))
        print(format_ble_table(found), file=stream)
        return 0
    ports = collect_ports(by_id_dir=by_id_dir)
    probes = None
    if args.probe and ports:
        timeout_s = args.timeout if args.timeout is not None else DEFAULT_PROBE_TIMEOUT_S
        probes = eventloop.run(_probe_all(ports, args.baudrate, timeout_s))
    print(format_port_table(ports, probes if args.probe else None), file=stream)
    return 0
