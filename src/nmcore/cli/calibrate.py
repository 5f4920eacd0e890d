"""`nmcore calibrate forceplate|emg|imu|latency|check`: guided calibration at a terminal.

Each command talks to the station's devices through the daemon's own stages
(`nmcore.calibration.acquire`), walks the technician through the steps with prompts, a
progress bar and live readings, computes the calibration (`nmcore.calibration.*`), prints it
with its quality checks and saves it only if every check passed (exit 65 otherwise, nothing
written). `--yes` runs every step without waiting for Enter (scripts, CI); on the simulated
rig the tool also plays the technician's part through the rig's bench, and `--fast` runs
the rig in virtual time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmcore.buffer.ring import Window
from nmcore.config import StationConfig
from nmcore.errors import CalibrationError, ConfigError, DeviceError
from nmcore.model import StreamKind
from nmcore.runtime import eventloop

__all__ = ["add_arguments", "run"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 65
EXIT_UNAVAILABLE = 69

_KIND_STREAM = {
    "forceplate": StreamKind.FORCE,
    "emg": StreamKind.EMG,
    "imu": StreamKind.IMU,
    "latency": StreamKind.TRIGGER,
}


# -- the terminal ------------------------------------------------------------------------------
class Aborted(Exception):
    """The technician quit at a prompt."""


@dataclass
class Ui:
    """Prompts on stderr (stdout stays for `--json`). Interactive only on a terminal and
    without `--yes`; the progress bar redraws in place on a terminal, else prints a line."""

    interactive: bool
    out: IO[str] = field(default_factory=lambda: sys.stderr)
    n_steps: int = 0
    step_no: int = 0

    @property
    def tty(self) -> bool:
        return self.out.isatty()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def step(
        self,
        instruction: str,
        sim_action: Callable[[], str] | None = None,
        *,
        session: Any = None,
        settle_s: float = 0.0,
    ) -> float | None:
        """Show the step, wait for Enter (interactive), let the simulated technician act;
        returns the host time from which the step's data count: the action's effect plus
        `settle_s` (None without a session)."""
        self.step_no += 1
        self.say(f"\nStep {self.step_no}/{self.n_steps}: {instruction}")
        if self.interactive:
            answer = await asyncio.to_thread(_read_line, "  Press Enter when ready (q to quit): ")
            if answer.strip().lower() in {"q", "quit"}:
                raise Aborted
        if session is None:
            if sim_action is not None:
                self.say(f"  [simulated rig] {sim_action()}")
            return None
        t_s: float = session.clock.now()
        if sim_action is not None:
            bench = session.bench
            n_before = len(bench.truth()["actions"]) if bench is not None else 0
            self.say(f"  [simulated rig] {sim_action()}")
            if bench is not None:
                acts = bench.truth()["actions"][n_before:]
                t_s = max([t_s, *(float(a.get("effective_s", t_s)) for a in acts)])
        return t_s + settle_s

    def progress(
        self, label: str, reading: Callable[[Window], str]
    ) -> Callable[[float, Window | None], None]:
        width = 28
        state = {"last": -1}

        def draw(frac: float, live: Window | None) -> None:
            text = reading(live) if live is not None and len(live) else ""
            pct = int(frac * 100)
            if self.tty:
                cols = shutil.get_terminal_size((100, 24)).columns
                bar = "#" * int(frac * width) + "." * (width - int(frac * width))
                line = f"  {label} [{bar}] {pct:3d}%  {text}"
                self.out.write("\r" + line[: cols - 1].ljust(cols - 1))
                if frac >= 1.0:
                    self.out.write("\n")
                self.out.flush()
            elif pct // 50 != state["last"] or frac >= 1.0:
                if frac >= 1.0 and state["last"] == 2:
                    return
                state["last"] = pct // 50
                self.say(f"  {label} {pct:3d}%  {text}")

        return draw


def _read_line(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        return "q"


# -- shared plumbing ---------------------------------------------------------------------------
def _station(args: argparse.Namespace) -> StationConfig:
    from nmcore.cli.main import DEFAULT_CONFIG
    from nmcore.config import load_station

    return load_station(Path(args.config) if args.config else DEFAULT_CONFIG)


def _state_dir(args: argparse.Namespace) -> Path:
    from nmcore.runtime.daemon import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _store(args: argparse.Namespace, station: StationConfig) -> Any:
    from nmcore.calibration.store import CalibrationStore
    from nmcore.runtime.calibrations import calibration_dir

    directory = Path(args.dir) if args.dir else calibration_dir(station, _state_dir(args))
    return CalibrationStore(directory)


def _pick_device(station: StationConfig, args: argparse.Namespace, kind: str) -> str:
    """`--device`, or the only device with a stream of the kind's type."""
    from nmcore.driver import load_driver

    if args.device:
        return str(args.device)
    want = _KIND_STREAM[kind]
    found = []
    for dev in station.devices:
        if not dev.enabled:
            continue
        cls = load_driver(dev.driver)
        describe = getattr(cls, "describe", None)
        if describe is None:
            continue
        if any(s.kind == want for s in describe(dev.id, dev.options)):
            found.append(dev.id)
    if len(found) == 1:
        return found[0]
    raise ConfigError(
        "which device?",
        [
            f"--device: {len(found)} devices have {want.value} streams "
            f"({', '.join(found) or 'none'}); name one with --device"
        ],
    )


def _pick_stream(session: Any, device_id: str, kind: str, stream_id: str | None) -> Any:
    if stream_id:
        return session.stream(stream_id)
    want = _KIND_STREAM[kind]
    streams = [st for st in session.streams_of(device_id) if st.desc.kind == want]
    if len(streams) != 1:
        names = ", ".join(st.desc.stream_id for st in session.streams_of(device_id))
        raise ConfigError(
            "which stream?",
            [f"--stream: device {device_id} has {len(streams)} {want.value} streams ({names})"],
        )
    return streams[0]


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        text = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    else:
        text = str(v)
    return f"{text} {unit}".strip()


def _print_checks(ui: Ui, checks: Sequence[Any]) -> None:
    ui.say("\nQuality checks:")
    for c in checks:
        mark = "PASS" if c.passed else ("WARN" if c.severity == "warn" else "FAIL")
        value = _fmt(c.value, c.unit)
        limit = "" if c.limit is None else f" (limit {_fmt(c.limit, c.unit)})"
        ui.say(f"  {mark:4}  {c.name:<44} {value}{limit}")
        if not c.passed:
            ui.say(f"        {c.message}")


def _finish(args: argparse.Namespace, ui: Ui, store: Any, cal: Any, lines: list[str]) -> int:
    ui.say("\nResult:")
    for line in lines:
        ui.say(f"  {line}")
    _print_checks(ui, cal.checks)
    if args.json:
        print(cal.model_dump_json(indent=2))
    if not cal.passed:
        names = ", ".join(c.name for c in cal.failures())
        raise CalibrationError(
            f"calibration of {cal.device_id} NOT saved: failed {names} (see the checks above)"
        )
    path = store.save(cal)
    ui.say(f"\nSaved {cal.id} -> {path}")
    ui.say("The daemon applies it at its next start (`systemctl restart nmcore`).")
    return EXIT_OK


async def _session(args: argparse.Namespace, station: StationConfig, devices: list[str]) -> Any:
    from nmcore.calibration.acquire import CalibrationSession

    session = CalibrationSession(
        station, devices, realtime=not args.fast, state_dir=_state_dir(args)
    )
    if args.fast and not session.simulated:
        raise ConfigError("--fast", ["--fast: simulated devices only (virtual time)"])
    return session


async def _step_record(
    ui: Ui,
    session: Any,
    sid: str,
    step: tuple[str, Callable[[], str] | None],
    duration_s: float,
    progress: Callable[[float, Window | None], None],
    settle_s: float,
) -> Any:
    """One guided step (the instruction, then Enter or the simulated technician), then a
    recording of `duration_s` from the moment the step has settled."""
    t0 = await ui.step(step[0], step[1], session=session, settle_s=settle_s)
    return await session.record(sid, duration_s, after_s=t0, progress=progress)


def _create(
    args: argparse.Namespace,
    station: StationConfig,
    store: Any,
    values: Any,
    st: Any,
    stats: dict[str, Any],
    checks: list[Any],
) -> Any:
    from nmcore.calibration.model import Calibration

    return Calibration.create(
        values,
        device_id=st.desc.device_id,
        stream_id=st.desc.stream_id,
        channels=list(st.desc.channel_names),
        now_utc=datetime.now(UTC),
        stats=stats,
        checks=checks,
        station_id=station.station.id,
        operator=args.operator,
        taken=store.ids(),
    )


# -- force plate -------------------------------------------------------------------------------
def _parse_mass(text: str) -> tuple[float, float, float]:
    """'20' or '20@100,-50': kg at (x, y) mm from the centre -> (kg, x_m, y_m)."""
    try:
        kg_s, _, pos = text.partition("@")
        kg = float(kg_s)
        x_mm, y_mm = (float(v) for v in pos.split(",")) if pos else (0.0, 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write KG or KG@X_MM,Y_MM (e.g. 20 or 20@150,-100)"
        ) from None
    if not 0 < kg <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: the mass must be in (0, 1000] kg")
    return kg, x_mm / 1e3, y_mm / 1e3


def _force_reading(channels: Sequence[str]) -> Callable[[Window], str]:
    names = list(channels)

    def reading(w: Window) -> str:
        m = np.nanmean(w.data, axis=0)
        if "Fz" in names:
            fz = m[names.index("Fz")]
            text = f"Fz {fz:8.1f} N"
            if {"Mx", "My"} <= set(names) and abs(fz) > 20:
                x = -m[names.index("My")] / fz * 1e3
                y = m[names.index("Mx")] / fz * 1e3
                text += f"  COP ({x:+6.1f}, {y:+6.1f}) mm"
            return text
        return "sum " + f"{float(np.sum(m)):8.1f} N"

    return reading


async def _forceplate(args: argparse.Namespace, ui: Ui) -> int:
    from nmcore.calibration import forceplate as fp

    station = _station(args)
    store = _store(args, station)
    dev = _pick_device(station, args, "forceplate")
    masses = [_parse_mass(m) for m in args.mass] or [(20.0, 0.0, 0.0)]
    cop = _parse_mass(args.cop_check) if args.cop_check else None
    session = await _session(args, station, [dev])
    ui.n_steps = 1 + len(masses) + (cop is not None)
    async with session:
        st = _pick_stream(session, dev, "forceplate", args.stream)
        sid, channels = st.desc.stream_id, list(st.desc.channel_names)
        ui.say(f"Force plate {dev} ({sid}: {', '.join(channels)}), {st.desc.rate_hz:g} Hz")
        await session.wait_streaming([sid])
        bench = session.bench
        reading = _force_reading(channels)
        previous = store.latest(dev, "forceplate")

        def unload() -> str:
            assert bench is not None
            t = bench.place_masses(dev, [])
            if args.sim_fault == "shake":  # the simulated technician leans on the plate
                bench.shake_plate(dev, 5.0)
                return f"plate unloaded at t={t:.2f} s (fault: someone leans on it)"
            return f"plate unloaded at t={t:.2f} s"

        rec = await _step_record(
            ui,
            session,
            sid,
            (
                "Take everything off the plate; nobody touches it.",
                unload if bench else None,
            ),
            args.duration_s,
            ui.progress("zero    ", reading),
            args.settle_s,
        )
        zero, zero_checks = fp.zero(
            rec.clean(),
            channels,
            rec.rate_hz,
            # raw load-cell offsets are arbitrary: "unloaded" is judged against the previous
            # calibration only
            max_fz_n=20.0 if set(fp.SIX_AXIS_CHANNELS) <= set(channels) else None,
            previous=previous.values if previous is not None else None,
            previous_channels=previous.channels if previous is not None else None,
        )
        if bench and args.sim_fault == "shake":
            bench.shake_plate(dev, 0.0)
        steps = []
        for i, (kg, x, y) in enumerate(masses):

            def place(kg: float = kg, x: float = x, y: float = y, first: bool = i == 0) -> str:
                assert bench is not None
                if first and args.sim_fault == "no-mass":
                    return f"(fault: the {kg:g} kg mass was not put on the plate)"
                t = bench.place_masses(dev, [(kg, x, y)])
                return f"{kg:g} kg placed at t={t:.2f} s"

            rec = await _step_record(
                ui,
                session,
                sid,
                (
                    f"Put the {kg:g} kg mass at ({x * 1e3:+.0f}, {y * 1e3:+.0f}) mm from the "
                    "plate centre (x left, y forward); hands off.",
                    place if bench else None,
                ),
                args.duration_s,
                ui.progress(f"{kg:g} kg   ", reading),
                args.settle_s,
            )
            steps.append(fp.mass_step(rec.clean(), channels, rec.rate_hz, kg, x, y))
        cop_step = None
        if cop is not None:
            kg, x, y = cop
            rec = await _step_record(
                ui,
                session,
                sid,
                (
                    f"COP check: put the {kg:g} kg mass at ({x * 1e3:+.0f}, {y * 1e3:+.0f}) mm.",
                    (lambda: f"{kg:g} kg placed at t={bench.place_masses(dev, [(kg, x, y)]):.2f} s")
                    if bench
                    else None,
                ),
                args.duration_s,
                ui.progress("COP     ", reading),
                args.settle_s,
            )
            cop_step = fp.mass_step(rec.clean(), channels, rec.rate_hz, kg, x, y, label="cop check")
        if bench:
            bench.place_masses(dev, [])
        positions = _cell_positions(args, session.driver(dev))
        values, stats, checks = fp.fit(
            zero,
            steps,
            g_mps2=station.calibration.g_mps2,
            cell_positions_m=positions,
            cop_check=cop_step,
            max_cop_error_mm=args.max_cop_error_mm,
        )
        stats = {"zero": zero.model_dump(), **stats}
        cal = _create(args, station, store, values, st, stats, zero_checks + checks)
    lines = []
    for i, c in enumerate(channels):
        unit = "N" if c.startswith(("F", "c")) else "N.m"
        gain = (
            f"gain {values.gains[i]:.5f} +- {values.gain_sigmas[i]:.5f}"
            if values.gain_calibrated[i]
            else "gain 1 (not calibrated by dead weights)"
        )
        lines.append(
            f"{c:<3} offset {values.offsets[i]:+9.4f} +- {values.offset_sigmas[i]:.4f} {unit:<4} "
            f"{gain}"
        )
    if values.cop_check is not None:
        lines.append(f"COP error: {values.cop_check.error_mm:.2f} mm")
    return _finish(args, ui, store, cal, lines)


def _cell_positions(args: argparse.Namespace, driver: Any) -> list[tuple[float, float]] | None:
    if args.cell_positions_mm:
        pts = []
        for pair in args.cell_positions_mm.split(";"):
            x, y = (float(v) / 1e3 for v in pair.split(","))
            pts.append((x, y))
        return pts
    opts = getattr(driver, "options", None)
    cells = getattr(opts, "cell_positions_m", None)
    if cells is not None and getattr(opts, "output", "six_axis") == "load_cells":
        return [(float(x), float(y)) for x, y in cells]
    return None


# -- EMG ---------------------------------------------------------------------------------------
def _emg_reading(w: Window) -> str:
    rms = np.sqrt(np.nanmean((w.data - np.nanmean(w.data, axis=0)) ** 2, axis=0))
    return f"rms {np.nanmin(rms):.1f}-{np.nanmax(rms):.1f} uV"


async def _emg(args: argparse.Namespace, ui: Ui) -> int:
    from nmcore.calibration import emg as cal_emg

    station = _station(args)
    store = _store(args, station)
    dev = _pick_device(station, args, "emg")
    session = await _session(args, station, [dev])
    ui.n_steps = 1 + (2 if args.mvc else 0)
    async with session:
        st = _pick_stream(session, dev, "emg", args.stream)
        sid, channels = st.desc.stream_id, list(st.desc.channel_names)
        ui.say(f"EMG {dev} ({sid}: {len(channels)} channels), {st.desc.rate_hz:g} Hz")
        await session.wait_streaming([sid])
        bench = session.bench
        rest = await _step_record(
            ui,
            session,
            sid,
            (
                "The subject relaxes every muscle (sitting or lying, supported, still).",
                (lambda: f"rest from t={bench.contract(dev, 0.0):.2f} s") if bench else None,
            ),
            args.duration_s,
            ui.progress("rest ", _emg_reading),
            args.settle_s,
        )
        mvc = None
        if args.mvc:
            rec = await _step_record(
                ui,
                session,
                sid,
                (
                    f"Maximal voluntary contraction of the measured muscles: push as hard as "
                    f"possible and hold for {args.mvc_s:g} s, starting now.",
                    (lambda: f"MVC from t={bench.contract(dev, 1.0):.2f} s") if bench else None,
                ),
                args.mvc_s,
                ui.progress("MVC  ", _emg_reading),
                args.settle_s,
            )
            mvc = rec.clean()
            await ui.step(
                "Relax.",
                (lambda: f"rest from t={bench.contract(dev, 0.0):.2f} s") if bench else None,
            )
        ecfg = station.detectors.emg_onset
        onset_params = ecfg.params if ecfg is not None and ecfg.stream == sid else None
        values, stats, checks = cal_emg.rest(
            rest.clean(),
            rest.rate_hz,
            channels,
            mains_hz=args.mains_hz,
            full_scale_uv=args.full_scale_uv,
            mvc_uv=mvc,
            min_snr_db=args.min_snr_db,
            onset_params=onset_params,
        )
        cal = _create(
            args,
            station,
            store,
            values,
            st,
            {"missing_samples": rest.missing_samples, **stats},
            checks,
        )
    lines = [f"mains {values.mains_hz:.2f} Hz ({values.mains_source})"]
    for c in values.channels:
        flags = " DEAD" if c.dead else ""
        flags += " SATURATED" if c.saturated else ""
        snr = f"  SNR {c.snr_db:.1f} dB" if c.snr_db is not None else ""
        lines.append(
            f"{c.name:<20} rest {c.rest_rms_uv:6.2f} uV  mains {c.mains_amplitude_uv[0]:6.2f} uV"
            f"{snr}{flags}"
        )
    return _finish(args, ui, store, cal, lines)


# -- IMU ---------------------------------------------------------------------------------------
_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def _imu_channels(channels: Sequence[str]) -> tuple[list[int], list[int]]:
    names = list(channels)
    try:
        acc = [names.index(f"acc_{a}") for a in "xyz"]
        gyro = [names.index(f"gyro_{a}") for a in "xyz"]
    except ValueError:
        raise ConfigError(
            "not an IMU stream",
            [f"--stream: channels {names}: need acc_x..acc_z and gyro_x..gyro_z"],
        ) from None
    return acc, gyro


def _imu_reading(acc: list[int], gyro: list[int]) -> Callable[[Window], str]:
    def reading(w: Window) -> str:
        m = np.nanmean(w.data, axis=0)
        sd = np.nanstd(w.data[:, gyro], axis=0)
        return f"|g| {np.linalg.norm(m[acc]):.3f} m/s^2  gyro sd {np.max(sd):.3f} deg/s"

    return reading


async def _imu(args: argparse.Namespace, ui: Ui) -> int:
    from nmcore.calibration import imu as cal_imu

    station = _station(args)
    store = _store(args, station)
    dev = _pick_device(station, args, "imu")
    session = await _session(args, station, [dev])
    ui.n_steps = 1 + (args.axis_motion is not None)
    async with session:
        st = _pick_stream(session, dev, "imu", args.stream)
        sid, channels = st.desc.stream_id, list(st.desc.channel_names)
        acc, gyro = _imu_channels(channels)
        ui.say(f"IMU {dev} ({sid}), {st.desc.rate_hz:g} Hz nominal")
        await session.wait_streaming([sid])
        bench = session.bench
        reading = _imu_reading(acc, gyro)

        def still_pose() -> str:
            assert bench is not None
            if args.sim_fault == "move":
                return f"(fault: the sensor is handled) from t={bench.move_imu(dev, 5.0):.2f} s"
            return f"still from t={bench.hold_still(dev):.2f} s"

        still = await _step_record(
            ui,
            session,
            sid,
            (
                "Leave the sensor still in its neutral pose (platform level, segment at rest).",
                still_pose if bench else None,
            ),
            args.duration_s,
            ui.progress("still ", reading),
            args.settle_s,
        )
        motion = None
        if args.axis_motion is not None:
            axis = _AXES[args.axis_motion]
            t0 = await ui.step(
                f"Rotate the platform / segment about its {args.axis_motion} axis (positive "
                f"direction, right-hand rule) for about {args.motion_s:g} s.",
                (
                    lambda: (
                        f"rotating from t={bench.rotate_imu(dev, axis, 30.0, args.motion_s):.2f} s"
                    )
                )
                if bench
                else None,
                session=session,
            )
            rec = await session.record(
                sid, args.motion_s, after_s=t0, progress=ui.progress("rotate", reading)
            )
            motion = rec.clean()[:, gyro]
            if bench:
                bench.hold_still(dev)
        ok = still.valid
        values, stats, checks = cal_imu.still(
            still.data[ok][:, acc],
            still.data[ok][:, gyro],
            still.t_s[ok],
            st.desc.rate_hz,
            target_up=_AXES[args.up],
            axis_motion=motion,
            target_axis=_AXES[args.axis_motion] if args.axis_motion else (0.0, 1.0, 0.0),
            acc_channels=[channels[i] for i in acc],
            gyro_channels=[channels[i] for i in gyro],
            g_mps2=station.calibration.g_mps2,
        )
        cal = _create(
            args,
            station,
            store,
            values,
            st,
            {"missing_samples": still.missing_samples, **stats},
            checks,
        )
    b, sb = values.gyro_bias_dps, values.gyro_bias_sigma_dps
    lines = [
        "gyro bias (deg/s): "
        + ", ".join(f"{a} {v:+.4f} +- {s:.4f}" for a, v, s in zip("xyz", b, sb, strict=True)),
        f"|g| {values.gravity_mps2:.4f} m/s^2",
        f"rate {values.rate_hz_measured:.4f} Hz ({values.rate_error_ppm:+.1f} ppm vs nominal)",
        "rotation sensor -> target: "
        + "; ".join(" ".join(f"{v:+.4f}" for v in row) for row in values.rotation),
    ]
    return _finish(args, ui, store, cal, lines)


# -- latency -----------------------------------------------------------------------------------
def _first_edge(w: Window, channel: int, after_s: float, threshold: float) -> float:
    col = w.data[:, channel]
    prev = 0.0
    for i in range(len(w)):
        v = col[i]
        if not w.valid[i]:
            prev = 0.0
            continue
        if w.t_s[i] >= after_s and prev < threshold <= v:
            return float(w.t_s[i])
        prev = v
    return math.nan


def _signed_ms(v_ms: float) -> str:
    """`v_ms` to the microsecond with its sign, and no "-0.000" for what rounds to zero."""
    r = round(v_ms, 3)
    return f"{r:+.3f}" if r != 0 else "0.000"


async def _loopback_out_s(session: Any, dev: str, pulse_s: float) -> float:
    driver = session.driver(dev)
    fire = getattr(driver, "loopback_trigger", None)
    if fire is None:
        raise ConfigError(
            "no loopback",
            [
                f"--device {dev}: its driver has no loopback output; use the tap test "
                "described in docs/calibration.md"
            ],
        )
    ticks = await fire(pulse_s)
    t = session.device_to_host(dev, int(ticks))
    if t is None:
        raise DeviceError(f"{dev}: no clock model yet to map the loopback time", dev)
    return float(t)


async def _latency(args: argparse.Namespace, ui: Ui) -> int:
    from nmcore.calibration import latency as cal_latency

    station = _station(args)
    store = _store(args, station)
    dev = _pick_device(station, args, "latency")
    session = await _session(args, station, [dev])
    ui.n_steps = 1
    rng = np.random.default_rng()
    async with session:
        st = _pick_stream(session, dev, "latency", args.stream)
        sid = st.desc.stream_id
        names = list(st.desc.channel_names)
        ch = names.index(args.channel) if args.channel in names else 0
        # a trigger line that only reports edges has no data until a pulse: wait for the
        # device's sampled streams, or for the device itself
        sampled = [x.desc.stream_id for x in session.streams_of(dev) if x is not st]
        if sampled:
            await session.wait_streaming(sampled)
        else:
            await session.wait_device(dev)
        # the clock model must have settled before the loopback times are mapped
        await session.wait_clock_settled(dev)
        await session.sleep(args.settle_s)
        await ui.step(
            f"Loopback: wire the device's trigger output to its trigger input; "
            f"{args.pulses} pulses of {args.pulse_ms:g} ms follow.",
        )
        pulse_s = args.pulse_ms / 1e3
        outs, edges = [], []
        show = ui.progress("pulses", lambda w: "")
        for i in range(args.pulses):
            out_s = await _loopback_out_s(session, dev, pulse_s)
            # the first edge after the output, once it has arrived (an edge stream only
            # moves on edges; a sampled line moves all the time)
            edge_s = math.nan
            while session.clock.now() < out_s + args.max_delay_ms / 1e3 + 0.5:
                w = session.window_after(sid, out_s - 0.05, out_s + args.max_delay_ms / 1e3)
                edge_s = _first_edge(w, ch, out_s - 0.002, args.threshold)
                if edge_s == edge_s:
                    break
                await session.sleep(0.01)
            outs.append(out_s)
            edges.append(edge_s)
            show((i + 1) / args.pulses, None)
            # a random gap: pulses must not lock to the sample grid's phase
            await session.sleep(pulse_s + 0.1 + float(rng.uniform(0.0, 0.05)))
        values, stats, checks = cal_latency.from_pairs(
            np.asarray(outs),
            np.asarray(edges),
            method="loopback",
            path=f"{dev} loopback output -> trigger input -> {sid} ({names[ch]})",
            sample_period_s=getattr(
                session.driver(dev), "edge_resolution_s", 1.0 / st.desc.rate_hz
            ),
        )
        cal = _create(args, station, store, values, st, stats, checks)
    lines = [
        f"delay {values.delay_ms:.3f} +- {values.sigma_ms:.3f} ms "
        f"(spread sd {values.sd_ms:.3f} ms, {values.n_events} pulses)",
        f"trigger onsets on {sid} are corrected by {_signed_ms(-values.delay_ms)} ms",
    ]
    return _finish(args, ui, store, cal, lines)


# -- check -------------------------------------------------------------------------------------
@dataclass
class _Row:
    device: str
    check: str
    value: str
    limit: str
    result: str  # PASS WARN FAIL
    note: str = ""


_CAL_FOR_KIND = {
    StreamKind.FORCE: "forceplate",
    StreamKind.EMG: "emg",
    StreamKind.IMU: "imu",
}


async def _check(args: argparse.Namespace, ui: Ui) -> int:
    from nmcore.runtime.calibrations import select_calibrations

    station = _station(args)
    store = _store(args, station)
    devices = [d.id for d in station.devices if d.enabled]
    if args.device:
        devices = [args.device]
    session = await _session(args, station, devices)
    rows: list[_Row] = []
    now = datetime.now(UTC)
    async with session:
        ui.say(f"Checking {len(devices)} devices for {args.seconds:g} s ...")
        t0 = session.clock.now()
        start = {sid: st.ring.head for sid, st in session.streams.items()}
        missing0 = {sid: st.counters.missing_samples for sid, st in session.streams.items()}
        show = ui.progress("listening", lambda w: "")
        while session.clock.now() < t0 + args.seconds:
            show((session.clock.now() - t0) / args.seconds, None)
            await session.sleep(0.25)
        show(1.0, None)
        status = session.daemon.status()
        for dev in devices:
            entry = status["devices"].get(dev, {})
            state = entry.get("state", "?")
            rows.append(
                _Row(
                    dev, "connected", state, "streaming", "PASS" if state == "streaming" else "FAIL"
                )
            )
            for st in session.streams_of(dev):
                sid = st.desc.stream_id
                n = st.ring.head - start[sid]
                if st.desc.kind == StreamKind.TRIGGER:
                    continue  # edges and levels, not a rate to check
                rate = _measured_rate(st, start[sid])
                err_ppm = (rate / st.desc.rate_hz - 1.0) * 1e6 if rate else math.nan
                ok = n > 0 and abs(err_ppm) <= args.max_rate_error_ppm
                rows.append(
                    _Row(
                        dev,
                        f"rate {sid}",
                        f"{rate:.3f} Hz ({err_ppm:+.0f} ppm)" if rate else "no data",
                        f"{st.desc.rate_hz:g} Hz +- {args.max_rate_error_ppm:g} ppm",
                        "PASS" if ok else "FAIL",
                    )
                )
                lost = st.counters.missing_samples - missing0[sid]
                rows.append(
                    _Row(
                        dev,
                        f"missing {sid}",
                        str(lost),
                        "0",
                        "PASS" if lost == 0 else "WARN",
                        "samples lost while checking" if lost else "",
                    )
                )
            clock = entry.get("clock")
            if clock is not None:
                unc = clock["offset_uncertainty_ms"]
                settled = bool(clock["settled"]) and unc == unc and unc <= args.max_clock_ms
                rows.append(
                    _Row(
                        dev,
                        "clock settled",
                        f"+-{unc:.3f} ms, drift {clock['drift_ppm']:+.1f} ppm",
                        f"+-{args.max_clock_ms:g} ms",
                        "PASS" if settled else "FAIL",
                        "" if settled else "let it run longer (--seconds) or check the link",
                    )
                )
        # the calibrations the daemon would apply if it started now
        try:
            cals = select_calibrations(_with_dir(station, store.directory), _state_dir(args))
        except ConfigError as exc:
            cals = []
            rows.append(_Row("-", "calibration files", "unusable", "", "FAIL", str(exc)))
        for dev in devices:
            kinds = {
                _CAL_FOR_KIND[st.desc.kind]
                for st in session.streams_of(dev)
                if st.desc.kind in _CAL_FOR_KIND
            }
            for kind in sorted(kinds):
                mine = [c for c in cals if c.device_id == dev and c.kind == kind]
                if not mine:
                    rows.append(
                        _Row(
                            dev,
                            f"calibration {kind}",
                            "none",
                            "",
                            "FAIL",
                            f"run `nmcore calibrate {kind} --device {dev}`",
                        )
                    )
                    continue
                c = mine[0]
                age_h = c.age_s(now) / 3600.0
                ok = age_h <= station.calibration.max_age_h
                rows.append(
                    _Row(
                        dev,
                        f"calibration {kind}",
                        f"{c.id} ({age_h:.1f} h old)",
                        f"<= {station.calibration.max_age_h:g} h",
                        "PASS" if ok else "FAIL",
                        "" if ok else f"recalibrate: `nmcore calibrate {kind} --device {dev}`",
                    )
                )
            if any(st.desc.kind == StreamKind.TRIGGER for st in session.streams_of(dev)):
                lat = [c for c in cals if c.device_id == dev and c.kind == "latency"]
                rows.append(
                    _Row(
                        dev,
                        "calibration latency",
                        lat[0].id if lat else "none",
                        "",
                        "PASS" if lat else "WARN",
                        "" if lat else "trigger times uncorrected: `nmcore calibrate latency`",
                    )
                )
    _print_table(ui, rows)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    if any(r.check == "connected" and r.result == "FAIL" for r in rows):
        return EXIT_UNAVAILABLE
    return EXIT_CHECK_FAILED if any(r.result == "FAIL" for r in rows) else EXIT_OK


def _with_dir(station: StationConfig, directory: Path) -> StationConfig:
    cal = station.calibration.model_copy(update={"directory": directory})
    return station.model_copy(update={"calibration": cal})


def _measured_rate(st: Any, start: int) -> float:
    """Samples per host second over what arrived while checking (device counter span over
    the clock-mapped time span: the device's true rate on the host clock)."""
    head = st.ring.head
    if head - start < 10:
        return 0.0
    # the second half only: by then the clock model has settled
    w = st.ring.window_by_index(start + (head - start) // 2, head)
    ok = np.flatnonzero(w.valid)
    if len(ok) < 10:
        return 0.0
    span_s = float(w.t_s[ok[-1]] - w.t_s[ok[0]])
    return float(ok[-1] - ok[0]) / span_s if span_s > 0 else 0.0


def _print_table(ui: Ui, rows: list[_Row]) -> None:
    heads = ("DEVICE", "CHECK", "VALUE", "LIMIT", "RESULT")
    cols = [[r.device, r.check, r.value, r.limit, r.result] for r in rows]
    widths = [
        max(len(h), *(len(c[i]) for c in cols)) if cols else len(h) for i, h in enumerate(heads)
    ]
    ui.say("")
    ui.say("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for r, c in zip(rows, cols, strict=True):
        ui.say("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        if r.note and r.result != "PASS":
            ui.say(f"{'':{widths[0]}}  -> {r.note}")
    n_fail = sum(r.result == "FAIL" for r in rows)
    n_warn = sum(r.result == "WARN" for r in rows)
    ui.say(
        f"\n{'FAIL' if n_fail else 'PASS'}: {n_fail} failed, {n_warn} warnings, {len(rows)} checks"
    )


# -- argparse ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    def common(q: argparse.ArgumentParser, *, device: bool = True) -> None:
        q.add_argument("config", nargs="?", help="station file (default: the simulated rig)")
        if device:
            q.add_argument("--device", help="device id (default: the only one that fits)")
            q.add_argument("--stream", help="stream id (default: the device's stream of that kind)")
        q.add_argument("--yes", "-y", action="store_true", help="do not wait for Enter (scripts)")
        q.add_argument("--fast", action="store_true", help="simulated rig only: virtual time")
        q.add_argument("--operator", help="who calibrated (kept in the file)")
        q.add_argument("--dir", help="calibration directory (default: [calibration] directory)")
        q.add_argument("--state-dir", help="the daemon's state dir (default as for `run`)")
        q.add_argument("--json", action="store_true", help="also print the result as JSON")
        q.add_argument("--settle-s", type=float, default=1.0, help="wait after each step (s)")
        q.add_argument(
            "--sim-fault",
            choices=["shake", "no-mass", "move"],
            help="simulated rig only: the simulated technician makes this mistake (tests)",
        )

    q = sub.add_parser("forceplate", help="zero, gains from known masses, COP check")
    common(q)
    q.add_argument(
        "--mass",
        action="append",
        default=[],
        metavar="KG[@X_MM,Y_MM]",
        help="a known mass and where it stands (repeat; default: 20 kg at the centre)",
    )
    q.add_argument("--cop-check", metavar="KG@X_MM,Y_MM", help="a mass at a marked position")
    q.add_argument("--duration-s", type=float, default=3.0, help="recording per step (s)")
    q.add_argument("--max-cop-error-mm", type=float, default=5.0)
    q.add_argument(
        "--cell-positions-mm",
        help="load cells: 'x0,y0;x1,y1;...' from the plate centre (default: the driver's)",
    )
    q.set_defaults(calibrate=_forceplate)

    q = sub.add_parser(
        "emg", help="rest noise, mains, SNR vs a maximal contraction, dead/saturated"
    )
    common(q)
    q.add_argument("--duration-s", type=float, default=10.0, help="rest recording (s)")
    q.add_argument("--mvc", action="store_true", help="also record a maximal contraction (SNR)")
    q.add_argument("--mvc-s", type=float, default=3.0)
    q.add_argument("--mains-hz", type=float, choices=[50.0, 60.0], default=None)
    q.add_argument("--full-scale-uv", type=float, default=None, help="amplifier input range")
    q.add_argument("--min-snr-db", type=float, default=20.0)
    q.set_defaults(calibrate=_emg)

    q = sub.add_parser("imu", help="gyro bias, gravity alignment, sample-rate check")
    common(q)
    q.add_argument("--duration-s", type=float, default=10.0, help="still recording (s)")
    q.add_argument("--up", choices=sorted(_AXES), default="z", help="target frame's up axis")
    q.add_argument(
        "--axis-motion",
        choices=sorted(_AXES),
        help="also rotate about this target axis to fix the heading (full axis mapping)",
    )
    q.add_argument("--motion-s", type=float, default=3.0)
    q.set_defaults(calibrate=_imu)

    q = sub.add_parser("latency", help="trigger input delay through a loopback")
    common(q)
    q.add_argument("--pulses", type=int, default=30)
    q.add_argument("--pulse-ms", type=float, default=20.0)
    q.add_argument("--channel", default="trigger", help="trigger channel (default: the first)")
    q.add_argument("--threshold", type=float, default=0.5)
    q.add_argument("--max-delay-ms", type=float, default=200.0)
    q.set_defaults(calibrate=_latency)

    q = sub.add_parser("check", help="pre-session check of every device (pass/fail table)")
    common(q, device=False)
    q.add_argument("--device", help="only this device")
    q.add_argument("--seconds", type=float, default=12.0, help="listen this long")
    q.add_argument("--max-rate-error-ppm", type=float, default=1000.0)
    q.add_argument("--max-clock-ms", type=float, default=1.0)
    q.set_defaults(calibrate=_check)


def run(args: argparse.Namespace) -> int:
    ui = Ui(interactive=not args.yes and sys.stdin.isatty() and not args.fast)
    quiet = [logging.getLogger(name) for name in ("nmcore.runtime", "nmcore.calibration")]
    levels = [lg.level for lg in quiet]
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        # the technician reads prompts: the daemon's start/stop chatter is noise here
        for lg in quiet:
            lg.setLevel(logging.WARNING)
    try:
        return int(eventloop.run(args.calibrate(args, ui)))
    except Aborted:
        ui.say("\nAborted: nothing saved.")
        return 130
    finally:
        for lg, level in zip(quiet, levels, strict=True):  # in-process callers keep their logs
            lg.setLevel(level)
