"""Polar devices over BLE: the Polar Measurement Data (PMD) service of the H10 chest strap
and the Verity Sense. `pmd` is the pure decoder, `driver` the nmcore driver."""

from nmcore_drivers.polar.driver import PolarPmdDriver, PolarPmdOptions

__all__ = ["PolarPmdDriver", "PolarPmdOptions"]
