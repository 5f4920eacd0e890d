"""The nmcore reference firmware (firmware/PROTOCOL.md) over a serial port."""

from __future__ import annotations

from nmcore_drivers.nmcore_serial.driver import (
    NmcoreSerialDriver,
    NmcoreSerialOptions,
    SerialStreamOptions,
    TimeSyncSample,
    TriggerOptions,
)

__all__ = [
    "NmcoreSerialDriver",
    "NmcoreSerialOptions",
    "SerialStreamOptions",
    "TimeSyncSample",
    "TriggerOptions",
]
