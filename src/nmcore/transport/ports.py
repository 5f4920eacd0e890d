"""Serial port discovery for `nmcore devices`: what is plugged in, under which stable name.

pyserial's `list_ports` reads sysfs; this adds the `/dev/serial/by-id/` link for each port
(the name to put in a config: it survives replugging, a `/dev/ttyUSBn` number does not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serial.tools import list_ports

__all__ = ["BY_ID_DIR", "PortInfo", "list_serial_ports"]

BY_ID_DIR = Path("/dev/serial/by-id")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One serial port. `by_id`: the stable `/dev/serial/by-id/...` path, or None (built-in
    UARTs and Bluetooth rfcomm ports have none). `vid`/`pid`: USB ids, None if not USB."""

    device: str
    by_id: str | None
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    manufacturer: str | None
    product: str | None
    location: str | None

    @property
    def usb_id(self) -> str:
        """'VID:PID' in hex as lsusb prints it, or '' for a non-USB port."""
        if self.vid is None or self.pid is None:
            return ""
        return f"{self.vid:04x}:{self.pid:04x}"

    @property
    def config_path(self) -> str:
        """The path to write in a station config."""
        return self.by_id or self.device


def _by_id_links(by_id_dir: Path) -> dict[str, str]:
    """real device path -> by-id link."""
    links: dict[str, str] = {}
    try:
        entries = sorted(by_id_dir.iterdir())
    except OSError:
        return links
    for entry in entries:
        try:
            links.setdefault(os.path.realpath(entry), str(entry))
        except OSError:
            continue
    return links


def list_serial_ports(*, usb_only: bool = False, by_id_dir: Path = BY_ID_DIR) -> list[PortInfo]:
    """Every serial port the OS reports, USB adapters first, then by device name.

    `usb_only`: leave out ports without a USB vendor id (built-in /dev/ttyS* UARTs).
    """
    links = _by_id_links(by_id_dir)
    out: list[PortInfo] = []
    for p in list_ports.comports():
        if usb_only and p.vid is None:
            continue
        desc = p.description if p.description and p.description != "n/a" else ""
        out.append(
            PortInfo(
                device=p.device,
                by_id=links.get(os.path.realpath(p.device)),
                description=desc,
                vid=p.vid,
                pid=p.pid,
                serial_number=p.serial_number,
                manufacturer=p.manufacturer,
                product=p.product,
                location=p.location,
            )
        )
    out.sort(key=lambda info: (info.vid is None, info.device))
    return out
