"""BITalino (r)evolution over its serial link."""

from __future__ import annotations

from nmcore_drivers.bitalino.driver import BitalinoDriver, BitalinoOptions

__all__ = ["BitalinoDriver", "BitalinoOptions"]
