"""The daemon: config -> drivers -> supervisors -> pipeline -> detectors -> outputs.

One `asyncio.TaskGroup` holds every long-lived task, each named. SIGTERM/SIGINT stop it
cleanly; an unexpected exception in any task is a bug and ends the run with a traceback.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from nmcore import __version__
from nmcore.config import StationConfig, load_station
from nmcore.driver import DriverContext, load_driver
from nmcore.hostclock import HostClock, MonotonicClock, VirtualClock
from nmcore.model import Event, StreamDescriptor
from nmcore.runtime.monitor import LoopLagMonitor
from nmcore.runtime.pipeline import Pipeline
from nmcore.runtime.supervisor import DeviceState, DeviceSupervisor
from nmcore.runtime.warmup import warm_kernels
from nmcore.trials import SwayStage, TrialEngine

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("nmcore.runtime")


class Daemon:
    """Wires the stages for one station. Create, then `await run(...)`."""

    def __init__(
        self,
        station: StationConfig,
        *,
        clock: HostClock | None = None,
        realtime: bool = True,
        truth: Callable[[dict[str, Any]], None] | None = None,
        on_output: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.station = station
        self.clock = clock or (MonotonicClock() if realtime else VirtualClock())
        self.realtime = realtime
        self._on_output = on_output
        self.monitor = LoopLagMonitor()
        self.ready = asyncio.Event()
        self.ready_s: float | None = None
        self._stop = asyncio.Event()
        ctx = DriverContext(clock=self.clock, realtime=realtime, truth=truth, emit=self.emit)
        self.drivers: dict[str, Any] = {}
        descriptors: list[StreamDescriptor] = []
        for dev in station.devices:
            if not dev.enabled:
                continue
            driver_cls = load_driver(dev.driver)
            options = driver_cls.Options.model_validate(dev.options)
            driver = driver_cls(dev.id, options, ctx)
            self.drivers[dev.id] = driver
            descriptors.extend(driver.streams)
        self.pipeline = Pipeline(descriptors, history_s=station.buffer.history_s, emit=self.emit)
        self.supervisors = {
            dev.id: DeviceSupervisor(
                dev,
                self.drivers[dev.id],
                self.pipeline.ingest,
                self.clock,
                on_state=self._device_state,
            )
            for dev in station.devices
            if dev.enabled
        }
        self.outputs: list[dict[str, Any]] = []
        self.keep_outputs = not realtime  # tests and fast runs inspect what was emitted
        self.trials = TrialEngine(station, self.pipeline.streams, self.output)
        self.pipeline.add_listener(self.trials.on_block)
        self.sway = (
            SwayStage(station.detectors.cop_sway, self.pipeline.streams, self.output)
            if station.detectors.cop_sway is not None
            else None
        )
        if self.sway is not None:
            self.pipeline.add_listener(self.sway.on_block)
        if station.detectors.landing is not None:
            log.warning("detectors.landing runs in `nmcore analyze` only; not live yet")

    # -- outputs ------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.output({"type": event.type, "t_s": event.t_s, "source": event.source, **event.data})

    def output(self, obj: dict[str, Any]) -> None:
        """Every event and result leaves through here (printer, publisher, recorder)."""
        if self.keep_outputs:
            self.outputs.append(obj)
        if self._on_output is not None:
            self._on_output(obj)

    def _device_state(self, device_id: str, state: DeviceState, reason: str) -> None:
        log.info("%s: %s%s", device_id, state.value, f" ({reason})" if reason else "")
        self.emit(
            Event("device", self.clock.now(), device_id, {"state": state.value, "reason": reason})
        )

    def status(self) -> dict[str, Any]:
        """A snapshot for status lines and the device status topic."""
        devices: dict[str, Any] = {}
        now_s = self.clock.now()
        for dev_id, sup in self.supervisors.items():
            clock = self.pipeline.clocks.get(dev_id)
            streams = {
                sid: {
                    "samples": st.counters.samples,
                    "missing_samples": st.counters.missing_samples,
                    "duplicate_samples": st.counters.duplicate_samples,
                    "gaps": st.counters.gaps,
                }
                for sid, st in self.pipeline.streams.items()
                if st.desc.device_id == dev_id
            }
            entry: dict[str, Any] = {"state": sup.state.value, "streams": streams}
            if clock is not None:
                s = clock.stats(now_s)
                entry["clock"] = {
                    "drift_ppm": s.drift_ppm,
                    "offset_uncertainty_ms": s.offset_uncertainty_ms,
                    "arrival_jitter_ms": s.arrival_jitter_ms,
                    "model_age_s": s.model_age_s,
                    "settled": s.settled,
                }
            devices[dev_id] = entry
        return {
            "type": "status",
            "t_s": now_s,
            "devices": devices,
            "loop_lag_p99_ms": self.monitor.lag_ms(0.99),
            "cpu_percent": self.monitor.cpu_percent(),
        }

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None, status_every_s: float = 0.0) -> None:
        t0 = time.monotonic()
        warm_kernels()
        for driver in self.drivers.values():
            warm = getattr(driver, "warm", None)
            if warm is not None:
                warm()
        gc.collect()
        gc.freeze()  # compiled kernels and config live forever: keep them out of GC scans
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(sup.run(), name=f"device:{dev_id}")
                for dev_id, sup in self.supervisors.items()
            ]
            if self.realtime:
                tasks.append(tg.create_task(self.monitor.run(), name="loop-lag"))
            if status_every_s > 0:
                tasks.append(tg.create_task(self._status_loop(status_every_s), name="status"))
            self.ready_s = time.monotonic() - t0
            self.ready.set()
            log.info(
                "ready in %.2f s: %d devices, %d streams",
                self.ready_s,
                len(self.supervisors),
                len(self.pipeline.streams),
            )
            self.monitor.restart()
            await self._wait_stop(duration_s)
            log.info("stopping")
            for task in tasks:
                task.cancel()
        self.trials.finish()

    async def _wait_stop(self, duration_s: float | None) -> None:
        timer = None
        if duration_s is not None:
            # on the daemon's clock: virtual time in a fast simulation, real time otherwise
            timer = asyncio.create_task(self._stop_at(self.clock.now() + duration_s))
        try:
            await self._stop.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _stop_at(self, t_s: float) -> None:
        await self.clock.sleep_until(t_s)
        self.stop()

    async def _status_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            if self._on_output is not None:
                self._on_output(self.status())


def _printer(stream: IO[str]) -> Callable[[dict[str, Any]], None]:
    def write(obj: dict[str, Any]) -> None:
        stream.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        stream.flush()

    return write


def run_daemon(
    *,
    config_path: Path,
    duration_s: float | None,
    truth_path: Path | None,
    print_results: bool,
    fast: bool,
) -> int:
    station = load_station(config_path)
    truth_file = truth_path.open("w", encoding="utf-8") if truth_path else None

    def truth(obj: dict[str, Any]) -> None:
        if truth_file is not None:
            truth_file.write(orjson.dumps(obj).decode() + "\n")

    async def main() -> None:
        daemon = Daemon(
            station,
            realtime=not fast,
            truth=truth if truth_file else None,
            on_output=_printer(sys.stdout) if print_results else None,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        log.info("nmcore %s starting station %r", __version__, station.station.id)
        await daemon.run(duration_s, status_every_s=1.0)

    try:
        asyncio.run(main())
    finally:
        if truth_file is not None:
            truth_file.close()
    return 0
