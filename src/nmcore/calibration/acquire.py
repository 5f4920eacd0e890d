"""Acquisition for the calibration tool: the daemon's own stages on a subset of devices.

A `CalibrationSession` runs the same drivers, supervisors, sequence tracking, clock models
and ring buffers as `nmcore run`, with no detectors, no MQTT, no recording and no calibration
applied (calibrations are computed from raw device units). Readers get recordings of a stream
by sample index, so what the calibration sees carries the same host-clock timestamps and the
same gap accounting as everything the daemon measures.

On a simulated rig the session installs the rig's `Bench`, through which the tool plays the
technician's part (placing masses, asking for a contraction, firing a loopback pulse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.buffer.ring import Window
from nmcore.config import StationConfig
from nmcore.config.models import DetectorsConfig
from nmcore.errors import ConfigError, DeviceError
from nmcore.hostclock import HostClock
from nmcore.model import StreamDescriptor
from nmcore.runtime.pipeline import StreamState

__all__ = ["CalibrationSession", "Recording", "reduced_station"]

log = logging.getLogger("nmcore.calibration")

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[float, Window | None], None]
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Recording:
    """Consecutive samples of one stream: `data` (n, c) raw device units, `t_s` host clock.
    Missing samples are NaN rows with `valid` False (counted in `missing_samples`)."""

    stream: StreamDescriptor
    first_index: int
    data: FloatArray
    t_s: FloatArray
    valid: npt.NDArray[np.bool_]

    @property
    def missing_samples(self) -> int:
        return int((~self.valid).sum())

    @property
    def rate_hz(self) -> float:
        return self.stream.rate_hz

    def clean(self) -> FloatArray:
        """The valid rows only (calibration statistics never interpolate through a gap)."""
        return self.data[self.valid]


def reduced_station(station: StationConfig, device_ids: Sequence[str]) -> StationConfig:
    """`station` with only `device_ids` (enabled), no detectors, MQTT or recording."""
    known = {d.id: d for d in station.devices}
    missing = [d for d in device_ids if d not in known]
    if missing:
        raise ConfigError(
            "unknown device",
            [
                f"--device {d}: no such device in the station file "
                f"(devices: {', '.join(sorted(known)) or 'none'})"
                for d in missing
            ],
        )
    devices = [known[d].model_copy(update={"enabled": True}) for d in device_ids]
    return station.model_copy(
        update={
            "devices": devices,
            "streams": [],
            "detectors": DetectorsConfig(),
            "mqtt": station.mqtt.model_copy(update={"enabled": False}),
            "recording": station.recording.model_copy(update={"enabled": False}),
            "calibration": station.calibration.model_copy(update={"apply": "none"}),
        }
    )


class CalibrationSession:
    """`async with CalibrationSession(station, ["plate"]) as s: rec = await s.record(...)`."""

    def __init__(
        self,
        station: StationConfig,
        device_ids: Sequence[str],
        *,
        realtime: bool = True,
        clock: HostClock | None = None,
        state_dir: Path | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        from nmcore.runtime.daemon import Daemon
        from nmcore.sim.base import SimDriverBase
        from nmcore.sim.bench import Bench

        self.station = reduced_station(station, device_ids)
        self.events: list[dict[str, Any]] = []
        self.daemon = Daemon(
            self.station,
            clock=clock,
            realtime=realtime,
            publish=False,
            on_output=self.events.append,
            state_dir=state_dir,
        )
        self.daemon.keep_outputs = False
        self.clock = self.daemon.clock
        self.simulated = all(isinstance(d, SimDriverBase) for d in self.daemon.drivers.values())
        self.bench: Bench | None = (
            Bench.install(self.daemon.ctx.shared, self.clock)
            if any(isinstance(d, SimDriverBase) for d in self.daemon.drivers.values())
            else None
        )
        self.connect_timeout_s = connect_timeout_s or max(
            d.connect_timeout_s for d in self.station.devices
        )
        self._task: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------
    async def __aenter__(self) -> CalibrationSession:
        self._task = asyncio.create_task(self.daemon.run(), name="calibration-daemon")
        ready = asyncio.create_task(self.daemon.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()  # raises what stopped it
            raise DeviceError("the acquisition stopped before it was ready")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.daemon.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _check_alive(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()
            raise DeviceError("the acquisition stopped")

    # -- streams -----------------------------------------------------------------------------
    @property
    def streams(self) -> dict[str, StreamState]:
        return self.daemon.pipeline.streams

    def stream(self, stream_id: str) -> StreamState:
        st = self.streams.get(stream_id)
        if st is None:
            known = ", ".join(sorted(self.streams))
            raise ConfigError("unknown stream", [f"--stream {stream_id}: streams are {known}"])
        return st

    def streams_of(self, device_id: str) -> list[StreamState]:
        return [st for st in self.streams.values() if st.desc.device_id == device_id]

    def driver(self, device_id: str) -> Any:
        return self.daemon.drivers[device_id]

    def device_state(self, device_id: str) -> str:
        return self.daemon.supervisors[device_id].state.value

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep_until(self.clock.now() + seconds)

    async def _poll_until(
        self, done: Callable[[], bool], timeout_s: float, error: Callable[[], DeviceError]
    ) -> None:
        """Poll `done` every `_POLL_S` until it holds; `error()` is raised once `timeout_s`
        has passed (and whatever `_check_alive` raises at any poll)."""
        deadline = self.clock.now() + timeout_s
        while True:
            self._check_alive()
            if done():
                return
            if self.clock.now() > deadline:
                raise error()
            await self.sleep(_POLL_S)

    async def wait_streaming(self, stream_ids: Sequence[str], min_s: float = 0.5) -> None:
        """Until every stream has `min_s` of data; DeviceError naming the silent devices after
        the connect timeout."""

        def waiting() -> list[str]:
            return [
                sid
                for sid in stream_ids
                if self.stream(sid).ring.head < max(1, round(min_s * self.stream(sid).desc.rate_hz))
            ]

        def error() -> DeviceError:
            devices = sorted({self.stream(s).desc.device_id for s in waiting()})
            detail = "; ".join(f"{d}: {self.device_state(d)}" for d in devices)
            return DeviceError(
                f"no data from {', '.join(devices)} within {self.connect_timeout_s:g} s "
                f"({detail}): is it connected and switched on?"
            )

        await self._poll_until(lambda: not waiting(), self.connect_timeout_s + min_s, error)

    async def wait_device(self, device_id: str) -> None:
        """Until the device streams; DeviceError after the connect timeout."""
        await self._poll_until(
            lambda: self.device_state(device_id) == "streaming",
            self.connect_timeout_s,
            lambda: DeviceError(
                f"{device_id} not streaming within {self.connect_timeout_s:g} s "
                f"({self.device_state(device_id)}): is it connected and switched on?"
            ),
        )

    async def wait_clock_settled(self, device_id: str, timeout_s: float = 30.0) -> None:
        """Until the device's clock model has settled (`ClockModel.settled`: fitted over
        `settle_s` of data). Its first fits can move the offset by a packet's phase (~4 ms
        for 8 ms packets in 16 ms USB bursts): a time mapped before and one stamped after
        such a move would differ by it. DeviceError after `timeout_s`."""
        clock = self.daemon.pipeline.clocks[device_id]
        await self._poll_until(
            lambda: clock.settled,
            timeout_s,
            lambda: DeviceError(
                f"{device_id}: its clock model did not settle within {timeout_s:g} s "
                "(arrivals too irregular or too few): check the connection and the host "
                "load, then measure again",
                device_id,
            ),
        )

    async def record(
        self,
        stream_id: str,
        duration_s: float,
        *,
        after_s: float | None = None,
        progress: Progress | None = None,
    ) -> Recording:
        """`duration_s` of `stream_id` from its first sample at or after host time `after_s`
        (default: the first sample pushed after the call). Samples reach the ring a transport
        delay after they were taken, so a step's start is a time, not the ring's head."""
        st = self.stream(stream_id)
        n = max(2, round(duration_s * st.desc.rate_hz))
        start = st.ring.head
        if after_s is not None:
            while st.ring.head == 0 or st.ring.time_of(st.ring.head - 1) < after_s:
                self._check_alive()
                if progress is not None:
                    progress(0.0, None)
                await self.sleep(_POLL_S)
            w = st.ring.window_by_time(after_s, st.ring.time_of(st.ring.head - 1) + 1.0)
            start = w.first_index if len(w) else st.ring.head
        while st.ring.head < start + n:
            self._check_alive()
            if progress is not None:
                done = (st.ring.head - start) / n
                live = st.ring.latest(min(st.ring.head - start, round(0.2 * st.desc.rate_hz)))
                progress(min(max(done, 0.0), 1.0), live if len(live) else None)
            await self.sleep(_POLL_S)
        w = st.ring.window_by_index(start, start + n)
        if progress is not None:
            progress(1.0, w)
        if w.clipped:
            raise DeviceError(
                f"{stream_id}: the recording outgrew the ring buffer; raise buffer.history_s"
            )
        return Recording(st.desc, w.first_index, w.data, w.t_s, w.valid)

    def window_after(self, stream_id: str, t0_s: float, t1_s: float) -> Window:
        return self.stream(stream_id).ring.window_by_time(t0_s, t1_s)

    def device_to_host(self, device_id: str, ticks: int) -> float | None:
        return self.daemon.pipeline.device_to_host(device_id, ticks)
