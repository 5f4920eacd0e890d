"""A Polar H10 as seen over the air: the PMD service, its control point and data frames.

The device keeps one continuous sample grid per measurement from the moment it was made,
running on its own clock (fast by `drift_ppm`). A measurement that is stopped (or whose link
drops) simply skips grid samples, so "samples lost" is exact: the number of grid indices
never delivered. Notifications leave only at BLE connection events (`conn_interval_s`,
e.g. 30 ms), the way a real link batches them.

Truth the tests compare against: `host_time_s(stream, k)` is the host monotonic time at
which grid sample k was taken; `device_ns(stream, k)` is its device timestamp; `values` are
the sample values in the stream's units (uV for ECG, mG for ACC).
"""

from __future__ import annotations

import asyncio
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nmcore.hostclock import HostClock

from .pmd_encode import encode_raw
from .service import CharSpec, FakeDevice, ServiceSpec

__all__ = ["PMD_CP", "PMD_DATA", "PMD_SERVICE", "H10Emulator"]

PMD_SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CP = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
HR_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
HR_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"

ECG, ACC = 0, 2
UNIX_2000_S = 946_684_800  # the PMD epoch, 2000-01-01T00:00:00Z, in Unix seconds

_ERR_OK, _ERR_INVALID_MEAS, _ERR_ALREADY, _ERR_RATE, _ERR_RANGE = 0, 2, 6, 8, 9


@dataclass(slots=True)
class StreamTruth:
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (first k, n) per frame
    # the connection event that carried each delivered frame (host s): arrival minus this is
    # the host path (wake-up, D-Bus daemon, bleak), which no clock model can see
    event_s: list[float] = field(default_factory=list)
    sessions_ended: int = 0


@dataclass(slots=True)
class _Active:
    meas: int
    rate_hz: int
    per_frame: int
    next_k: int
    range_g: int = 8


class H10Emulator:
    """The H10 personality. `start_time_s`/`device_epoch_ns` pin the device clock."""

    name = "Polar H10 8C4D2F21"
    services = (
        ServiceSpec(HR_SERVICE, (CharSpec(HR_MEASUREMENT, ("notify",)),)),
        ServiceSpec(
            PMD_SERVICE,
            (
                CharSpec(PMD_CP, ("read", "write", "indicate")),
                CharSpec(PMD_DATA, ("notify",)),
            ),
        ),
    )

    def __init__(
        self,
        clock: HostClock,
        *,
        address: str = "C8:2F:4D:8C:21:2F",
        drift_ppm: float = 100.0,
        conn_interval_s: float = 0.030,
        ecg_per_frame: int = 73,
        acc_per_frame: int = 36,
        mtu: int = 232,
        device_epoch_ns: int | None = None,
    ) -> None:
        self.clock = clock
        self.address = address
        self.mtu = mtu
        self.drift = drift_ppm * 1e-6
        self.conn_interval_s = conn_interval_s
        self.per_frame = {ECG: ecg_per_frame, ACC: acc_per_frame}
        self.t0_s = clock.now()
        # a device clock set a few years after its epoch, like a real one
        self.device_epoch_ns = (
            device_epoch_ns
            if device_epoch_ns is not None
            else (1_732_000_000 - UNIX_2000_S) * 10**9
        )
        self.conn_phase_s = self.t0_s + 0.0123  # where the central's connection events sit
        self.dev: FakeDevice | None = None
        self.active: dict[int, _Active] = {}
        self.truth: dict[int, StreamTruth] = {ECG: StreamTruth(), ACC: StreamTruth()}
        self.stalled = False
        self.cp_log: list[bytes] = []
        self.start_commands = 0
        self._task: asyncio.Task[None] | None = None

    # -- truth -----------------------------------------------------------------------------
    def device_ns(
        self, meas: int, k: int | npt.NDArray[np.int64], rate_hz: int
    ) -> npt.NDArray[np.int64]:
        # integer grid on the device clock: sample k at epoch + k * 1e9 / rate (floored)
        return self.device_epoch_ns + (np.asarray(k, dtype=np.int64) * 10**9) // rate_hz

    def host_time_s(self, k: npt.ArrayLike, rate_hz: int) -> npt.NDArray[np.float64]:
        dev_s = (np.asarray(k, dtype=np.int64) * 10**9 // rate_hz).astype(np.float64) / 1e9
        return self.t0_s + dev_s / (1.0 + self.drift)

    def _grid_index_at(self, t_s: float, rate_hz: int) -> int:
        return math.ceil((t_s - self.t0_s) * (1.0 + self.drift) * rate_hz)

    @staticmethod
    def ecg_uv(k: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # a deterministic ECG-like wave, integer uV, that exercises the sign bit
        return (800 * np.sin(2 * np.pi * 1.1 * k / 130.0)).astype(np.int64) + (k % 13) - 6

    @staticmethod
    def acc_mg(k: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        x = (k * 7) % 301 - 150
        y = -((k * 3) % 101)
        z = 1000 + (k % 17)
        return np.stack([x, y, z], axis=1).astype(np.int64)

    # -- personality hooks -----------------------------------------------------------------
    def on_connect(self, dev: FakeDevice) -> None:
        self.dev = dev
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._stream())

    def on_disconnect(self) -> None:
        # the H10 ends every measurement when the link goes (the host must start again)
        for meas, act in self.active.items():
            self._close_session(meas, act)
        self.active.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.dev = None

    def on_notify_changed(self, char_uuid: str, enabled: bool) -> None:
        del char_uuid, enabled

    def on_read(self, char_uuid: str) -> bytes:
        if char_uuid == PMD_CP:
            # features: 0x0F then a bitmask of measurement types (bit 0 ECG, bit 2 ACC)
            return bytes([0x0F, 0x05, 0x00])
        return b""

    def on_write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid != PMD_CP or not data:
            return
        self.cp_log.append(bytes(data))
        op = data[0]
        meas = data[1] if len(data) > 1 else 0xFF
        if op == 0x01:  # get measurement settings
            self._reply(op, meas, *self._settings(meas))
        elif op == 0x02:
            self._reply(op, meas, self._start(meas, data[2:]), b"")
        elif op == 0x03:
            act = self.active.pop(meas, None)
            if act is not None:
                self._close_session(meas, act)
            self._reply(op, meas, _ERR_OK, b"")
        else:
            self._reply(op, meas, 1, b"")

    # -- test controls ---------------------------------------------------------------------
    def stall(self, stalled: bool = True) -> None:
        """Stay connected but stop sending data (firmware hang, sensor off the skin...)."""
        self.stalled = stalled

    def inject(self, payload: bytes) -> bool:
        return self.dev is not None and self.dev.notify(PMD_DATA, payload)

    # -- internals -------------------------------------------------------------------------
    def _reply(self, op: int, meas: int, status: int, params: bytes) -> None:
        if self.dev is not None:
            self.dev.notify(PMD_CP, bytes([0xF0, op, meas, status, 0x00]) + params)

    @staticmethod
    def _settings(meas: int) -> tuple[int, bytes]:
        def tlv(kind: int, values: list[int]) -> bytes:
            return bytes([kind, len(values)]) + b"".join(struct.pack("<H", v) for v in values)

        if meas == ECG:
            return _ERR_OK, tlv(0, [130]) + tlv(1, [14])
        if meas == ACC:
            return _ERR_OK, tlv(0, [25, 50, 100, 200]) + tlv(1, [16]) + tlv(2, [2, 4, 8])
        return _ERR_INVALID_MEAS, b""

    def _start(self, meas: int, params: bytes) -> int:
        if meas not in (ECG, ACC):
            return _ERR_INVALID_MEAS
        if meas in self.active:
            return _ERR_ALREADY
        settings: dict[int, int] = {}
        i = 0
        while i + 2 <= len(params):
            kind, count = params[i], params[i + 1]
            width = 4 if kind in (3, 5) else 1 if kind == 4 else 2
            settings[kind] = int.from_bytes(params[i + 2 : i + 2 + width], "little")
            i += 2 + count * width
        rate = settings.get(0, 130 if meas == ECG else 200)
        if (meas == ECG and rate != 130) or (meas == ACC and rate not in (25, 50, 100, 200)):
            return _ERR_RATE
        rng = settings.get(2, 8)
        if meas == ACC and rng not in (2, 4, 8):
            return _ERR_RANGE
        self.start_commands += 1
        k0 = self._grid_index_at(self.clock.now(), rate)
        self.active[meas] = _Active(meas, rate, self.per_frame[meas], k0, rng)
        return _ERR_OK

    def _close_session(self, meas: int, act: _Active) -> None:
        self.truth[meas].sessions_ended += 1

    def _frame(self, act: _Active, k: npt.NDArray[np.int64]) -> bytes:
        ts = int(self.device_ns(act.meas, k[-1], act.rate_hz))
        if act.meas == ECG:
            return encode_raw(ECG, ts, 0x00, self.ecg_uv(k), 3)
        return encode_raw(ACC, ts, 0x01, self.acc_mg(k), 2)

    def _next_event(self, t_s: float) -> float:
        if self.conn_interval_s <= 0:
            return t_s
        m = math.ceil((t_s - self.conn_phase_s) / self.conn_interval_s)
        return self.conn_phase_s + m * self.conn_interval_s

    async def _stream(self) -> None:
        while True:
            if not self.active:
                await self.clock.sleep_until(self.clock.now() + 0.005)
                continue
            # the earliest frame to complete, and the connection event that carries it
            ready = {
                meas: float(self.host_time_s(act.next_k + act.per_frame - 1, act.rate_hz))
                for meas, act in self.active.items()
            }
            t_send = self._next_event(min(ready.values()))
            await self.clock.sleep_until(t_send)
            for meas, act in list(self.active.items()):
                while (
                    self.active.get(meas) is act
                    and float(self.host_time_s(act.next_k + act.per_frame - 1, act.rate_hz))
                    <= t_send
                ):
                    k = np.arange(act.next_k, act.next_k + act.per_frame, dtype=np.int64)
                    act.next_k += act.per_frame
                    if self.stalled or self.dev is None:
                        continue
                    if self.dev.notify(PMD_DATA, self._frame(act, k)):
                        self.truth[meas].delivered.append((int(k[0]), act.per_frame))
                        self.truth[meas].event_s.append(t_send)
