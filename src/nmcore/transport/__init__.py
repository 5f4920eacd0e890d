"""Transports own OS resources (serial ports) and hand out byte chunks with arrival times;
they know nothing about any wire protocol."""

from __future__ import annotations

from nmcore.transport.ports import PortInfo, list_serial_ports
from nmcore.transport.serial import Chunk, SerialStats, SerialTransport, port_holders

__all__ = [
    "Chunk",
    "PortInfo",
    "SerialStats",
    "SerialTransport",
    "list_serial_ports",
    "port_holders",
]
