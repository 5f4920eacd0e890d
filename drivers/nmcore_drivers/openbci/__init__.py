"""OpenBCI boards over their serial (USB dongle) link."""

from __future__ import annotations

from nmcore_drivers.openbci.driver import CytonDriver, CytonOptions

__all__ = ["CytonDriver", "CytonOptions"]
