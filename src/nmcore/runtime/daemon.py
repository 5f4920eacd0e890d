"""The daemon: config -> drivers -> supervisors -> pipeline -> detectors -> outputs.

One `asyncio.TaskGroup` holds every long-lived task, each named. SIGTERM/SIGINT stop it
cleanly; an unexpected exception in any task is a bug and ends the run with a traceback.

Under systemd (Type=notify, see docs/service.md) it says READY=1 once the config is valid,
the kernels are warm and the devices are started, keeps a STATUS= line current, sends
WATCHDOG=1 only while it is healthy and STOPPING=1 when it shuts down. SIGHUP re-reads the
station file: a valid one restarts the station in-process with it, an invalid one is logged
and the running configuration is kept. With `[recording] enabled` every sample, output and
clock snapshot also goes to a `SessionRecorder` (docs/recording.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from nmcore import __version__
from nmcore.buffer import RingBuffer
from nmcore.config import StationConfig
from nmcore.config.load import validate_station
from nmcore.driver import DriverContext, load_driver
from nmcore.errors import ConfigError
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
from nmcore.record import SessionRecorder
from nmcore.runtime import eventloop
from nmcore.runtime.calibrations import apply_calibrations, select_calibrations
from nmcore.runtime.messages import to_message, trial_id
from nmcore.runtime.monitor import LoopLagMonitor
from nmcore.runtime.notify import Notifier
from nmcore.runtime.pipeline import Pipeline
from nmcore.runtime.supervisor import DeviceState, DeviceSupervisor
from nmcore.runtime.warmup import warm_kernels
from nmcore.trials import SwayStage, TrialEngine

__all__ = ["Daemon", "Health", "run_daemon"]

log = logging.getLogger("nmcore.runtime")
_GIL_SWITCH_S = 0.0005  # the loop gets the GIL back from a busy worker within ~0.5 ms

# tare: an unloaded plate reads a few N of offset; more than this is someone on it
TARE_MAX_LOAD_N = 50.0
TARE_MAX_SD = 5.0  # N or N.m: above this the plate is not still
LIVE_POINTS = 8  # bins per live message: 25 messages/s x 8 = a 200 Hz envelope per channel
CLOCK_RECORD_EVERY_S = 5.0  # clock-model snapshots in the recording: drift moves slowly
NOTIFY_STATUS_EVERY_S = 5.0  # systemd STATUS= line: for a person reading `systemctl status`
# WATCHDOG=1 is withheld when the loop-lag p99 is above this: ingestion that late means the
# clock model and the silence watchdogs no longer see the devices as they are
WATCHDOG_MAX_LAG_P99_MS = 500.0
TASK_MAX_SILENCE_S = 15.0  # a periodic task that has not come round for this long is wedged
# a flush (write + fdatasync in a worker thread) longer than this: the disk has hung
FLUSH_MAX_S = 60.0
# float64 on disk: a replay or `nmcore analyze` of the recording then gives the live
# results exactly (float32 would round every sample; ~1.8 GB/h instead of ~1 GB/h on the rig)
RECORD_DTYPE: Literal["float64"] = "float64"


def live_block(
    ring: RingBuffer, start: int, stop: int, *, rms: bool
) -> tuple[float, npt.NDArray[np.float64]] | None:
    """One live message's time and values from `[start, stop)`: LIVE_POINTS bin means (`rms`:
    root mean square), channels x bins in C order for the JSON encoder, rounded to 6
    decimals, NaN (sent as null) for a bin without a received sample. None when the first
    bin received nothing (after a gap): the message's time would be unknown."""
    binned, t0_s = ring.bin_means(start, stop, LIVE_POINTS, rms=rms)
    if not math.isfinite(t0_s):
        return None
    values = np.ascontiguousarray(binned.T)
    np.round(values, 6, out=values)
    return t0_s, values


def default_state_dir() -> Path:
    """systemd's StateDirectory= when run as the service, else ./var/state."""
    env = os.environ.get("NMCORE_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path("var/state")


@dataclass(slots=True)
class _Beat:
    last_s: float
    max_age_s: float


class Health:
    """Heartbeats of the periodic tasks plus the loop-lag monitor: the daemon is healthy when
    the loop is not lagging and every task came round recently. Only then is WATCHDOG=1 sent,
    so systemd restarts a daemon whose loop or tasks are stuck, not just a dead process."""

    def __init__(
        self,
        monitor: LoopLagMonitor,
        *,
        max_lag_p99_ms: float = WATCHDOG_MAX_LAG_P99_MS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self.max_lag_p99_ms = max_lag_p99_ms
        self._now = now
        self._beats: dict[str, _Beat] = {}

    def beat(self, name: str, max_age_s: float = TASK_MAX_SILENCE_S) -> None:
        self._beats[name] = _Beat(self._now(), max_age_s)

    def forget(self, name: str) -> None:
        self._beats.pop(name, None)

    def check(self) -> tuple[bool, str]:
        """(healthy, why not)."""
        lag = self.monitor.lag_ms(0.99)
        if lag == lag and lag > self.max_lag_p99_ms:  # NaN: no measurement yet
            return False, f"event-loop lag p99 {lag:.0f} ms > {self.max_lag_p99_ms:.0f} ms"
        now = self._now()
        for name, b in self._beats.items():
            if now - b.last_s > b.max_age_s:
                return False, f"task {name!r} silent for {now - b.last_s:.0f} s"
        return True, ""


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
        config_text: str | None = None,
        notifier: Notifier | None = None,
        streams: Sequence[StreamDescriptor] | None = None,
        session: str | None = None,
    ) -> None:
        """`streams`: run without devices, on these streams, fed by the `feeder` given to
        `run` (a replayed recording). `session`: the trial-id prefix (default: the start
        time's UTC stamp)."""
        self.station = station
        # the station file as written (recorded with the session); a dump if built in code
        self.config_text = (
            config_text
            if config_text is not None
            else "# built in code, not read from a file\n# " + station.model_dump_json()
        )
        self.notifier = notifier or Notifier(socket_path="")
        self.state_dir = state_dir or default_state_dir()
        self.publish = station.mqtt.enabled if publish is None else publish
        self.publisher: Publisher | None = None
        self.started_utc = datetime.now(UTC).replace(microsecond=0)
        self.session = session or self.started_utc.strftime("%Y%m%dT%H%M%SZ")
        self.subject_id: str | None = None
        self.session_id: str | None = None
        self.clock = clock or (MonotonicClock() if realtime else VirtualClock())
        self.realtime = realtime
        self._on_output = on_output
        self.monitor = LoopLagMonitor()
        self.health = Health(self.monitor)
        self.recorder: SessionRecorder | None = None
        self._flush_started_s: float | None = None
        self.ready = asyncio.Event()
        self.ready_s: float | None = None
        self._stop = asyncio.Event()
        self.reloading = False
        ctx = DriverContext(clock=self.clock, realtime=realtime, truth=truth, emit=self.emit)
        self.ctx = ctx
        self.drivers: dict[str, Any] = {}
        descriptors: list[StreamDescriptor] = list(streams or [])
        for dev in station.devices if streams is None else []:
            if not dev.enabled:
                continue
            driver_cls = load_driver(dev.driver)
            options = driver_cls.Options.model_validate(dev.options)
            driver = driver_cls(dev.id, options, ctx)
            self.drivers[dev.id] = driver
            descriptors.extend(driver.streams)
        self.pipeline = Pipeline(descriptors, history_s=station.buffer.history_s, emit=self.emit)
        for dev_id, driver in self.drivers.items():
            if hasattr(driver, "on_sync"):  # devices that answer time-sync pings
                driver.on_sync = partial(self._on_sync, dev_id)
        self.supervisors: dict[str, DeviceSupervisor] = {
            dev.id: DeviceSupervisor(
                dev,
                self.drivers[dev.id],
                self.pipeline.ingest,
                self.clock,
                on_state=self._device_state,
            )
            for dev in station.devices
            if dev.enabled and dev.id in self.drivers
        }
        self.outputs: list[dict[str, Any]] = []
        self.keep_outputs = not realtime  # tests and fast runs inspect what was emitted
        # trial closing fits run on a worker thread in real time (their kernels release the
        # GIL) so the loop keeps ingesting; inline in virtual time, where order is exact
        self._trial_pool: ThreadPoolExecutor | None = None
        self._trial_jobs: set[asyncio.Future[dict[str, Any]]] = set()
        self._job_error: BaseException | None = None
        self.trials = TrialEngine(
            station,
            self.pipeline.streams,
            self.output,
            offload=self._offload if realtime else None,
        )
        self.pipeline.add_listener(self.trials.on_block)
        self.sway = (
            SwayStage(
                station.detectors.cop_sway,
                self.pipeline.streams,
                self.output,
                offload=self._offload if realtime else None,
            )
            if station.detectors.cop_sway is not None
            else None
        )
        if self.sway is not None:
            self.pipeline.add_listener(self.sway.on_block)
        # raw data from the devices, corrected by the calibrations chosen at start; a replay
        # re-runs what was recorded, corrections already applied
        self.calibrations = select_calibrations(station, self.state_dir) if streams is None else []
        self.applied_calibrations = apply_calibrations(
            self.calibrations, self.pipeline, self.trials
        )
        if station.detectors.landing is not None:
            log.warning("detectors.landing runs in `nmcore analyze` only; not live yet")

    # -- outputs ------------------------------------------------------------------------
    def _on_sync(self, device_id: str, s: Any) -> None:
        self.pipeline.observe_sync(
            device_id, s.host_send_s, s.device_rx_us, s.device_hold_s, s.host_recv_s
        )

    def emit(self, event: Event) -> None:
        t_s = event.t_s
        if event.type == "trigger_edge" and "device_us" in event.data:
            # the device time-stamped the edge: its host time comes from the clock model
            mapped = self.pipeline.device_to_host(event.source, int(event.data["device_us"]))
            t_s = mapped if mapped is not None else t_s
        self.output({"type": event.type, "t_s": t_s, "source": event.source, **event.data})

    def output(self, obj: dict[str, Any]) -> None:
        """Every event and result leaves through here (printer, publisher, recorder)."""
        if obj.get("type") == "trial_result":
            obj = {**obj, "subject_id": self.subject_id, "session_id": self.session_id}
        if self.keep_outputs:
            self.outputs.append(obj)
        msg = to_message(obj, self.session)
        payload = msg.model_dump(mode="json") if msg is not None else None
        rec = self.recorder
        if rec is not None:
            # the payload as published (trial ids included), minus the publisher's envelope
            rec.write_event(payload if payload is not None else obj)
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
            self._on_output(payload if payload is not None else obj)

    def _trial_worker(self) -> ThreadPoolExecutor:
        if self._trial_pool is None:
            self._trial_pool = ThreadPoolExecutor(1, thread_name_prefix="nmcore-trial")
        return self._trial_pool

    def _offload(self, job: Callable[[], dict[str, Any]]) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._trial_worker(), job)
        self._trial_jobs.add(fut)
        fut.add_done_callback(self._job_done)

    def _job_done(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        self._trial_jobs.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # a bug: fail fast, like any other task
            self._job_error = exc
            self.stop()
            return
        self.output(fut.result())

    async def _drain_trial_jobs(self) -> None:
        if self._trial_jobs:
            await asyncio.wait(set(self._trial_jobs))
        await asyncio.sleep(0)  # let the done callbacks emit
        if self._trial_pool is not None:
            self._trial_pool.shutdown(wait=False)
            self._trial_pool = None
        if self._job_error is not None:
            raise self._job_error

    def _device_state(self, device_id: str, state: DeviceState, reason: str) -> None:
        log.info("%s: %s%s", device_id, state.value, f" ({reason})" if reason else "")
        self.emit(
            Event("device", self.clock.now(), device_id, {"state": state.value, "reason": reason})
        )

    def status(self) -> dict[str, Any]:
        """A snapshot for status lines and the device status topic."""
        devices: dict[str, Any] = {}
        now_s = self.clock.now()
        states = {dev_id: sup.state.value for dev_id, sup in self.supervisors.items()}
        if not self.drivers:  # a replay: its streams' devices stream while it runs
            states = {st.desc.device_id: "streaming" for st in self.pipeline.streams.values()}
        for dev_id, state in states.items():
            clock = None if not self.drivers else self.pipeline.clocks.get(dev_id)
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
            entry: dict[str, Any] = {"state": state, "streams": streams}
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
            "trials_done": self.trials.trials_done,
            "recording": self.recording_status(),
            "loop_lag_p99_ms": self.monitor.lag_ms(0.99),
            "cpu_percent": self.monitor.cpu_percent(),
        }

    def recording_status(self) -> dict[str, Any]:
        """`state`: off | recording | low_disk | stalled | stopped_disk_full | error | closed."""
        rec = self.recorder
        if rec is None:
            return {"state": "off"}
        st = rec.status()
        state: str = st.state
        started = self._flush_started_s
        if rec.active and started is not None and time.monotonic() - started > 5.0:
            state = "stalled"  # a flush has been in the kernel for seconds: the disk is stuck
        return {
            "state": state,
            "reason": st.reason,
            "session_dir": str(st.session_dir) if st.session_dir else None,
            "segment": st.segment,
            "bytes_written": st.bytes_written,
            "samples_written": st.samples_written,
            "samples_dropped": st.samples_dropped,
            "last_flush_ms": (
                st.last_flush_duration_s * 1e3 if st.last_flush_duration_s is not None else None
            ),
        }

    def status_line(self, status: dict[str, Any] | None = None) -> str:
        """One line for `systemctl status` (systemd's STATUS=) and the MQTT status detail."""
        s = status or self.status()
        devs = s["devices"]
        streaming = sum(1 for e in devs.values() if e["state"] == "streaming")
        down = [d for d, e in devs.items() if e["state"] != "streaming"]
        line = f"{streaming}/{len(devs)} devices streaming"
        if down:
            line += " (not: " + ", ".join(down) + ")"
        line += f"; {s['trials_done']} trials done; recording "
        rec = s["recording"]
        if rec["state"] in ("recording", "low_disk"):
            where = Path(rec["session_dir"]).name if rec["session_dir"] else "?"
            mb = rec["bytes_written"] / 1e6
            line += f"{rec['state'].replace('_', ' ')} {where} ({mb:.0f} MB)"
        else:
            line += str(rec["state"]).replace("_", " ")
        return line

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def stop_for_reload(self) -> None:
        """Stop so the caller can start again with a new configuration (SIGHUP)."""
        self.reloading = True
        self._stop.set()

    async def run(
        self,
        duration_s: float | None = None,
        status_every_s: float = 0.0,
        feeder: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run until `stop()`, `duration_s` on the daemon's clock, or the end of `feeder`
        (a coroutine function that pushes blocks into `self.pipeline`, started when ready)."""
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
            if self.station.recording.enabled:
                # mkdir + O_EXCL create + fsync: a worker thread, like every flush
                self.recorder = await asyncio.to_thread(self._open_recorder)
                stack.push_async_callback(self._close_recorder)
                self.pipeline.recorder = self.recorder
            warm_kernels()
            for driver in self.drivers.values():
                warm = getattr(driver, "warm", None)
                if warm is not None:
                    warm()
            if self.realtime:
                # start the trial worker now: its thread start inside the loop, at the first
                # trial's close, stalled the loop ~2 ms
                self._trial_worker().submit(int).result()
            gc.collect()
            gc.freeze()  # compiled kernels and config live forever: keep them out of GC scans
            # The trial worker thread runs Python too (fits, payloads): while it holds the
            # GIL the loop waits up to the switch interval (5 ms by default) for it.
            switch_s = sys.getswitchinterval()
            sys.setswitchinterval(min(switch_s, _GIL_SWITCH_S))
            try:
                await self._run_tasks(t0, duration_s, status_every_s, feeder)
            finally:
                sys.setswitchinterval(switch_s)
                self.trials.finish()
                await self._drain_trial_jobs()
                if self.publisher is not None:
                    self.publisher.set_status("stopping", "shutting down")
                    await self.publisher.flush(timeout_s=2.0)
        self.publisher = None

    def _open_recorder(self) -> SessionRecorder:
        cfg = self.station.recording
        rec = SessionRecorder(
            cfg.directory,
            self.station.station.id,
            self.config_text,
            clock=self.clock,
            rotate_mb=cfg.rotate_mb,
            rotate_s=cfg.rotate_s,
            min_free_mb=cfg.min_free_mb,
            sample_dtype=RECORD_DTYPE,
            # the session directory is named after the daemon's session stamp, which also
            # prefixes every trial id: `nmcore analyze` of it gives the same trial ids
            utc_now=lambda: self.started_utc,
        )
        for st in self.pipeline.streams.values():
            rec.declare_stream(st.desc)
        for cal in self.calibrations:
            rec.write_calibration(cal.device_id, cal.model_dump(mode="json"))
        status = rec.status()
        if rec.active:
            log.info("recording to %s (segment %d)", status.session_dir, status.segment)
        else:
            log.error("recording is %s: %s; acquisition goes on", status.state, status.reason)
        return rec

    async def _close_recorder(self) -> None:
        rec = self.recorder
        if rec is None:
            return
        self.pipeline.recorder = None
        await asyncio.to_thread(rec.close)
        st = rec.status()
        log.info(
            "recording closed: %s, %d samples, %.1f MB (%d dropped)",
            st.session_dir,
            st.samples_written,
            st.bytes_written / 1e6,
            st.samples_dropped,
        )

    async def _run_tasks(
        self,
        t0: float,
        duration_s: float | None,
        status_every_s: float,
        feeder: Callable[[], Awaitable[None]] | None,
    ) -> None:
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
            if self.recorder is not None:
                tasks.append(tg.create_task(self._recording_loop(self.recorder), name="record"))
            if self.notifier.enabled:
                tasks.append(tg.create_task(self._notify_loop(), name="notify"))
            if self.notifier.watchdog_interval_s is not None:
                tasks.append(
                    tg.create_task(
                        self._watchdog_loop(self.notifier.watchdog_interval_s), name="watchdog"
                    )
                )
            self.ready_s = time.monotonic() - t0
            self.ready.set()
            if self.publisher is not None:
                self.publisher.set_status("ready", f"{len(self.supervisors)} devices")
            # the ready point: config valid, kernels warm, devices started (connecting)
            self.notifier.ready(self.status_line())
            if feeder is not None:
                tasks.append(tg.create_task(self._feed(feeder), name="feeder"))
            log.info(
                "ready in %.2f s: %d devices, %d streams",
                self.ready_s,
                len(self.supervisors),
                len(self.pipeline.streams),
            )
            self.monitor.restart()
            await self._wait_stop(duration_s)
            log.info("stopping")
            if not self.reloading:
                self.notifier.send(STOPPING=1, STATUS="stopping")
            for task in tasks:
                task.cancel()

    async def _feed(self, feeder: Callable[[], Awaitable[None]]) -> None:
        await feeder()
        self.stop()

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

    async def _recording_loop(self, rec: SessionRecorder) -> None:
        """flush() every flush_interval_s in a worker thread (write + fdatasync take ms to
        tens of ms: never on the loop); a clock snapshot per device every few seconds."""
        every_s = self.station.recording.flush_interval_s
        next_clock_s = self.clock.now()
        last_state = rec.recording_state
        while True:
            self.health.beat("record", FLUSH_MAX_S + every_s)
            await asyncio.sleep(every_s)
            now_s = self.clock.now()
            if now_s >= next_clock_s:
                next_clock_s = now_s + CLOCK_RECORD_EVERY_S
                for dev_id, clock in self.pipeline.clocks.items():
                    rec.write_clock(dev_id, clock.stats(now_s))
            if not rec.active:
                continue
            self._flush_started_s = time.monotonic()
            try:
                await asyncio.to_thread(rec.flush)
            finally:
                self._flush_started_s = None
            if rec.recording_state != last_state:
                last_state = rec.recording_state
                log.warning("recording: %s (%s)", last_state, rec.stop_reason or "")

    async def _notify_loop(self) -> None:
        while True:
            self.health.beat("notify")
            await asyncio.sleep(NOTIFY_STATUS_EVERY_S)
            self.notifier.status(self.status_line())

    async def _watchdog_loop(self, every_s: float) -> None:
        """WATCHDOG=1 only while healthy: a wedged loop or task makes systemd restart us."""
        unhealthy = ""
        while True:
            ok, why = self.health.check()
            if ok:
                self.notifier.watchdog()
                if unhealthy:
                    log.warning("healthy again; watchdog pings resumed")
                unhealthy = ""
            elif why != unhealthy:
                unhealthy = why
                log.error("unhealthy, withholding the systemd watchdog ping: %s", why)
            await asyncio.sleep(every_s)

    async def _status_loop(self, every_s: float) -> None:
        shown: tuple[bool, str] | None = None
        while True:
            self.health.beat("status")
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
            rec_state = str(status["recording"]["state"])
            if shown != (bool(down), rec_state):
                shown = (bool(down), rec_state)
                # the detail says what a technician needs: who is down, and the recording
                detail = (
                    ("not streaming: " + ", ".join(down)) if down else "every device streaming"
                ) + f"; recording: {rec_state}"
                pub.set_status("degraded" if down else "ready", detail)

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
            calibration_ids=[c.id for c in self.calibrations if c.device_id == dev_id],
        )

    async def _live_loop(self) -> None:
        """Decimated live streams for dashboards: one message per stream per period, each
        holding LIVE_POINTS bins (EMG as an RMS envelope, other streams as bin means)."""
        period_s = 1.0 / self.station.mqtt.live_rate_hz
        next_index = {sid: st.ring.head for sid, st in self.pipeline.streams.items()}
        while True:
            self.health.beat("live")
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
                block = live_block(st.ring, start, head, rms=st.desc.kind is StreamKind.EMG)
                if block is not None:
                    n_bin = (head - start) // LIVE_POINTS
                    rate_hz = st.desc.rate_hz / n_bin
                    pub.publish_live_block(sid, block[0], rate_hz, st.desc.channel_names, block[1])

    # -- commands --------------------------------------------------------------------------
    async def _command(self, cmd: Command) -> dict[str, Any]:
        """MQTT commands. Raise CommandRejected for a command invalid in the current state.
        Accepted commands that change something are recorded (a replay cannot re-create a
        trial an operator started, but the recording says that it happened)."""
        result = await self._run_command(cmd)
        rec = self.recorder
        if rec is not None and not isinstance(cmd, GetState):
            rec.write_event(
                {
                    "type": "command",
                    "t_s": self.clock.now(),
                    "command": cmd.command,
                    "args": cmd.model_dump(mode="json"),
                    "result": result,
                }
            )
        return result

    async def _run_command(self, cmd: Command) -> dict[str, Any]:
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


def read_station(path: Path) -> tuple[StationConfig, str]:
    """Validate a station file; returns the model and the text (recorded with a session)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file; check the path") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return validate_station(data, source=str(path)), text


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
    """Run until SIGTERM/SIGINT (or `duration_s`). SIGHUP re-reads `config_path`: if it is
    valid the whole station restarts in-process with it (devices reconnect, a new session and
    recording start; a few seconds without data), otherwise the error is logged and the
    running configuration is kept. systemd is told READY/RELOADING/STOPPING throughout."""
    station, text = read_station(config_path)
    truth_file = truth_path.open("w", encoding="utf-8") if truth_path else None
    notifier = Notifier()

    def truth(obj: dict[str, Any]) -> None:
        if truth_file is not None:
            truth_file.write(orjson.dumps(obj).decode() + "\n")
            truth_file.flush()  # readers follow the file while the daemon runs

    def make(st: StationConfig, config_text: str) -> Daemon:
        try:
            return Daemon(
                st,
                realtime=not fast,
                truth=truth if truth_file else None,
                on_output=_printer(sys.stdout) if print_results else None,
                publish=st.mqtt.enabled and mqtt,
                state_dir=state_dir,
                config_text=config_text,
                notifier=notifier,
            )
        except ValueError as exc:  # a detector naming a stream no device has, ...
            raise ConfigError(f"{config_path}: invalid configuration", [str(exc)]) from exc

    async def main() -> None:
        nonlocal station, text
        loop = asyncio.get_running_loop()
        daemon = make(station, text)
        while True:
            current = daemon

            def reload(current: Daemon = current) -> None:
                nonlocal station, text
                try:
                    new_station, new_text = read_station(config_path)
                    make(new_station, new_text)  # drivers and detectors accept it
                except ConfigError as exc:
                    log.error("SIGHUP: %s; keeping the running configuration", exc)
                    return
                station, text = new_station, new_text
                log.info("SIGHUP: %s is valid; restarting the station with it", config_path)
                notifier.send(RELOADING=1, STATUS="reloading the configuration")
                current.stop_for_reload()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, current.stop)
            loop.add_signal_handler(signal.SIGHUP, reload)
            log.info("nmcore %s starting station %r", __version__, station.station.id)
            await current.run(duration_s, status_every_s=1.0)
            if not current.reloading:
                break
            daemon = make(station, text)

    try:
        eventloop.run(main())
    finally:
        notifier.close()
        if truth_file is not None:
            truth_file.close()
    return 0
