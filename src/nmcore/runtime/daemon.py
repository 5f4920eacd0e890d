"""The daemon: config -> drivers -> supervisors -> pipeline -> detectors -> outputs.

One `asyncio.TaskGroup` holds every long-lived task, each named. SIGTERM/SIGINT stop it
cleanly; an unexpected exception in any task is a bug and ends the run with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from nmcore import __version__
from nmcore.config import StationConfig, load_station
from nmcore.driver import DriverContext, load_driver
from nmcore.hostclock import HostClock, MonotonicClock, VirtualClock
from nmcore.model import Event, StreamDescriptor, StreamKind
from nmcore.publish import (
    Arm,
    ClockFigures,
    Command,
    CommandRejected,
    DeviceCounters,
    DeviceStatusMessage,
    GetState,
    LandingMessage,
    LiveMessage,
    Mark,
    MarkEvent,
    Publisher,
    SetSubject,
    StartTrial,
    StopTrial,
    SwayMessage,
    Tare,
    TrialResultMessage,
)
from nmcore.runtime.messages import to_message, trial_id
from nmcore.runtime.monitor import LoopLagMonitor
from nmcore.runtime.pipeline import Pipeline
from nmcore.runtime.supervisor import DeviceState, DeviceSupervisor
from nmcore.runtime.warmup import warm_kernels
from nmcore.trials import SwayStage, TrialEngine

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("nmcore.runtime")

# tare: an unloaded plate reads a few N of offset; more than this is someone on it
TARE_MAX_LOAD_N = 50.0
TARE_MAX_SD = 5.0  # N or N.m: above this the plate is not still
LIVE_POINTS = 8  # bins per live message: 25 messages/s x 8 = a 200 Hz envelope per channel


def default_state_dir() -> Path:
    """systemd's StateDirectory= when run as the service, else ./var/state."""
    env = os.environ.get("NMCORE_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path("var/state")


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
        state_dir: Path | None = None,
        publish: bool | None = None,
    ) -> None:
        self.station = station
        self.state_dir = state_dir or default_state_dir()
        self.publish = station.mqtt.enabled if publish is None else publish
        self.publisher: Publisher | None = None
        self.session = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.subject_id: str | None = None
        self.session_id: str | None = None
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
        if obj.get("type") == "trial_result":
            obj = {**obj, "subject_id": self.subject_id, "session_id": self.session_id}
        if self.keep_outputs:
            self.outputs.append(obj)
        msg = to_message(obj, self.session)
        pub = self.publisher
        if pub is not None and msg is not None:
            if isinstance(msg, TrialResultMessage):
                pub.publish_result(msg)
            elif isinstance(msg, SwayMessage):
                pub.publish_sway(msg)
            elif isinstance(msg, LandingMessage):
                pub.publish_landing(msg)
            else:
                pub.publish_event(msg)  # type: ignore[arg-type]
        if self._on_output is not None:
            self._on_output(msg.model_dump(mode="json") if msg is not None else obj)

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
        async with contextlib.AsyncExitStack() as stack:
            if self.publish:
                self.publisher = await stack.enter_async_context(
                    Publisher(
                        self.station.mqtt,
                        self.station.station.id,
                        self.state_dir,
                        command_handler=self._command,
                    )
                )
                self.publisher.set_status("init", "warming up")
            warm_kernels()
            for driver in self.drivers.values():
                warm = getattr(driver, "warm", None)
                if warm is not None:
                    warm()
            gc.collect()
            gc.freeze()  # compiled kernels and config live forever: keep them out of GC scans
            try:
                await self._run_tasks(t0, duration_s, status_every_s)
            finally:
                self.trials.finish()
                if self.publisher is not None:
                    self.publisher.set_status("stopping", "shutting down")
                    await self.publisher.flush(timeout_s=2.0)
        self.publisher = None

    async def _run_tasks(self, t0: float, duration_s: float | None, status_every_s: float) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(sup.run(), name=f"device:{dev_id}")
                for dev_id, sup in self.supervisors.items()
            ]
            if self.realtime:
                tasks.append(tg.create_task(self.monitor.run(), name="loop-lag"))
            if status_every_s > 0 or self.publisher is not None:
                every_s = status_every_s if status_every_s > 0 else 1.0
                tasks.append(tg.create_task(self._status_loop(every_s), name="status"))
            if self.publisher is not None:
                tasks.append(tg.create_task(self._live_loop(), name="live"))
            self.ready_s = time.monotonic() - t0
            self.ready.set()
            if self.publisher is not None:
                self.publisher.set_status("ready", f"{len(self.supervisors)} devices")
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
        degraded = False
        while True:
            await asyncio.sleep(every_s)
            status = self.status()
            if self._on_output is not None:
                self._on_output(status)
            pub = self.publisher
            if pub is None:
                continue
            for dev_id, entry in status["devices"].items():
                pub.set_device_status(self._device_status(dev_id, entry))
            down = [d for d, e in status["devices"].items() if e["state"] != "streaming"]
            if bool(down) != degraded:
                degraded = bool(down)
                if degraded:
                    pub.set_status("degraded", "not streaming: " + ", ".join(down))
                else:
                    pub.set_status("ready", "every device streaming")

    def _device_status(self, dev_id: str, entry: dict[str, Any]) -> DeviceStatusMessage:
        streams = entry["streams"].values()
        clock = entry.get("clock") or {}
        return DeviceStatusMessage(
            device_id=dev_id,
            state=entry["state"],
            t_s=self.clock.now(),
            clock=ClockFigures(
                **{k: v for k, v in clock.items() if k != "settled" and v == v}  # drop NaN
            ),
            counters=DeviceCounters(
                missing_samples=sum(s["missing_samples"] for s in streams),
                duplicate_samples=sum(s["duplicate_samples"] for s in streams),
            ),
        )

    async def _live_loop(self) -> None:
        """Decimated live streams for dashboards: one message per stream per period, each
        holding LIVE_POINTS bins (EMG as an RMS envelope, other streams as bin means)."""
        period_s = 1.0 / self.station.mqtt.live_rate_hz
        next_index = {sid: st.ring.head for sid, st in self.pipeline.streams.items()}
        while True:
            await asyncio.sleep(period_s)
            pub = self.publisher
            if pub is None:
                return
            for sid, st in self.pipeline.streams.items():
                head = st.ring.head
                start = max(next_index[sid], st.ring.oldest)
                if head - start < LIVE_POINTS:
                    continue
                next_index[sid] = head
                w = st.ring.window_by_index(start, head)
                n_bin = w.data.shape[0] // LIVE_POINTS
                x = w.data[: n_bin * LIVE_POINTS].reshape(LIVE_POINTS, n_bin, -1)
                with np.errstate(invalid="ignore"):
                    binned = (
                        np.sqrt(np.nanmean(x * x, axis=1))
                        if st.desc.kind is StreamKind.EMG
                        else np.nanmean(x, axis=1)
                    )
                t0 = float(np.nanmean(w.t_s[:n_bin]))
                values = [
                    [None if v != v else round(float(v), 6) for v in binned[:, c]]
                    for c in range(binned.shape[1])
                ]
                pub.publish_live(
                    LiveMessage(
                        stream_id=sid,
                        t0_s=t0,
                        rate_hz=st.desc.rate_hz / n_bin,
                        channels=list(st.desc.channel_names),
                        values=values,
                    )
                )

    # -- commands --------------------------------------------------------------------------
    async def _command(self, cmd: Command) -> dict[str, Any]:
        """MQTT commands. Raise CommandRejected for a command invalid in the current state."""
        if isinstance(cmd, GetState):
            return self.status()
        if isinstance(cmd, SetSubject):
            self.subject_id, self.session_id = cmd.subject_id, cmd.session_id
            return {"subject_id": cmd.subject_id, "session_id": cmd.session_id}
        if isinstance(cmd, Mark):
            t_s = self.clock.now()
            if self.publisher is not None:
                self.publisher.publish_event(MarkEvent(t_s=t_s, label=cmd.label, note=cmd.note))
            return {"t_s": t_s, "label": cmd.label}
        if isinstance(cmd, Arm):
            self.trials.arm()
            return {"armed": True}
        if isinstance(cmd, StartTrial):
            number = self.trials.start_manual(self.clock.now())
            return {"trial_id": trial_id(self.session, number)}
        if isinstance(cmd, StopTrial):
            if not self.trials.stop_manual():
                raise CommandRejected("no trial is running", "invalid_state")
            return {"stopped": True}
        if isinstance(cmd, Tare):
            return self._tare(cmd.device_id)
        raise CommandRejected(f"{cmd.command} is not supported by this daemon", "unsupported")

    def _tare(self, device_id: str | None) -> dict[str, Any]:
        """Zero the force channels from their last second, if the plate is still."""
        done: dict[str, Any] = {}
        for sid, st in self.pipeline.streams.items():
            if st.desc.kind is not StreamKind.FORCE:
                continue
            if device_id is not None and st.desc.device_id != device_id:
                continue
            w = st.ring.latest(max(2, round(st.desc.rate_hz)))
            if w.has_gap or len(w.t_s) < 2:
                raise CommandRejected(f"{sid}: no complete second of data to tare", "no_data")
            names = list(st.desc.channel_names)
            mean = w.data.mean(axis=0)
            if "Fz" in names and abs(mean[names.index("Fz")]) > TARE_MAX_LOAD_N:
                raise CommandRejected(
                    f"{sid}: the plate carries {abs(mean[names.index('Fz')]):.0f} N; "
                    "step off and remove every load before taring",
                    "plate_loaded",
                )
            if float(np.max(w.data.std(axis=0))) > TARE_MAX_SD:
                raise CommandRejected(f"{sid}: the plate is moving; wait until still", "moving")
            offsets = self.pipeline.tare(sid, mean)
            done[sid] = [round(float(v), 6) for v in offsets]
        if not done:
            raise CommandRejected("no force stream to tare", "no_force_stream")
        return {"offsets": done}


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
    mqtt: bool = True,
    state_dir: Path | None = None,
) -> int:
    station = load_station(config_path)
    truth_file = truth_path.open("w", encoding="utf-8") if truth_path else None

    def truth(obj: dict[str, Any]) -> None:
        if truth_file is not None:
            truth_file.write(orjson.dumps(obj).decode() + "\n")
            truth_file.flush()  # readers follow the file while the daemon runs

    async def main() -> None:
        daemon = Daemon(
            station,
            realtime=not fast,
            truth=truth if truth_file else None,
            on_output=_printer(sys.stdout) if print_results else None,
            publish=station.mqtt.enabled and mqtt,
            state_dir=state_dir,
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
