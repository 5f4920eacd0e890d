"""nmcore acquisition firmware over BLE (Nordic UART Service): the serial wire protocol
carried as a byte stream."""

from nmcore_drivers.nmcore_ble.driver import NmcoreBleDriver, NmcoreBleOptions

__all__ = ["NmcoreBleDriver", "NmcoreBleOptions"]
