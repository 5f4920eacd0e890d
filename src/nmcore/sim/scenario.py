"""The shared scenario of a simulated station: when trials happen, what the platform does, and
how the body sways and responds. Every simulated device of a station reads the same Scenario
(kept in `DriverContext.shared`), so the platform, the EMG, the force plate and the body IMUs
agree on every perturbation.

Conventions (world = host clock time base, seconds):

- Trial k: trigger (perturbation command) at `t_s`; platform motion starts at
  `motion_onset_t_s = t_s + trigger_to_motion_ms`. Latencies are measured from motion onset.
  With a platform in the station, `t_s` is a sample time of its trigger line (the platform
  raises the line on one of its samples); trials scheduled before the platform first opened
  keep their unsnapped times.
- Platform and body axes: x forward (anterior), y left, z up. A direction is a unit vector in
  (AP, ML) = (forward, left): forward (1, 0), backward (-1, 0), left (0, 1), right (0, -1).
- Tilt "forward" means the surface slopes down toward the front (toes down); translation
  "forward" moves the support forward. Motion profile: minimum jerk (Flash & Hogan 1985) out
  over `motion_duration_ms`, held, and back over `return_duration_ms`.
- Body: a linearised inverted pendulum of COM height h. The COM trajectory c(t) (per horizontal
  axis) is a random-phase multisine (deterministic in world time, so every device samples the
  same body) plus, per trial, a smooth postural response starting `response latency` after
  motion onset. The centre of pressure follows from the pendulum: cop = c - (h/g) c''.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.sim._kernels import multisine_block

__all__ = [
    "G_MPS2",
    "SCENARIO_KEY",
    "Body",
    "BodyOptions",
    "Scenario",
    "ScenarioOptions",
    "Trial",
    "add_min_jerk_step",
    "device_rng",
    "min_jerk",
]

FloatArray = npt.NDArray[np.float64]

G_MPS2 = 9.80665  # standard gravity
SCENARIO_KEY = "sim.scenario"
TRUTH_KEPT = 200_000  # in-memory truth records kept (~2 days of a 16-muscle rig at 6 s trials)

Direction = Literal["forward", "backward", "left", "right"]
_DIRECTIONS: dict[str, tuple[float, float]] = {
    "forward": (1.0, 0.0),
    "backward": (-1.0, 0.0),
    "left": (0.0, 1.0),
    "right": (0.0, -1.0),
}
# Reference amplitudes: the body response option is given for these; it scales linearly.
_REF_TILT_DEG = 4.0
_REF_TRANSLATION_M = 0.08
# How long after a trial's trigger anything of it can still be seen (platform return, body
# recovery); trials are looked up this far back.
_EFFECT_MARGIN_S = 1.0


class BodyOptions(BaseModel):
    """The standing subject every device sees (sway statistics and the postural response)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    com_height_m: float = Field(0.95, gt=0.3, le=1.5, description="COM height above the ankles")
    sway_ap_rms_mm: float = Field(4.5, ge=0.0, le=50.0, description="COP AP rms, quiet stance")
    sway_ml_rms_mm: float = Field(3.0, ge=0.0, le=50.0, description="COP ML rms, quiet stance")
    sway_corner_hz: float = Field(
        0.35, gt=0.01, le=3.0, description="COP spectrum corner; sets the mean sway velocity"
    )
    response_latency_mean_ms: float = Field(110.0, ge=0.0, le=1000.0)
    response_latency_sd_ms: float = Field(15.0, ge=0.0, le=300.0)
    response_com_mm: float = Field(
        15.0, ge=0.0, le=200.0, description="peak COM excursion at the reference amplitude"
    )
    response_duration_ms: float = Field(400.0, gt=10.0, le=5000.0)
    recovery_duration_ms: float = Field(1000.0, gt=10.0, le=10000.0)


class ScenarioOptions(BaseModel):
    """When trials happen and what the platform does. Give every sim device the same table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="one seed for the whole simulated station")
    first_trial_s: float = Field(3.0, ge=0.0, description="first trigger, after scenario start")
    trial_period_s: float = Field(6.0, gt=0.5, le=3600.0)
    trial_jitter_s: float = Field(1.0, ge=0.0, description="uniform +- jitter of each trigger")
    n_trials: int | None = Field(None, ge=0, description="None: trials never stop")
    kind: Literal["tilt", "translation"] = "translation"
    direction: Literal["forward", "backward", "left", "right", "random"] = "forward"
    tilt_amplitude_deg: float = Field(4.0, gt=0.0, le=30.0)
    translation_amplitude_m: float = Field(0.08, gt=0.0, le=1.0)
    motion_duration_ms: float = Field(300.0, gt=10.0, le=5000.0)
    return_after_ms: float = Field(2000.0, ge=0.0, le=60000.0, description="after motion end")
    return_duration_ms: float = Field(1500.0, gt=10.0, le=10000.0)
    trigger_to_motion_ms: float = Field(0.0, ge=0.0, le=1000.0)
    body: BodyOptions = BodyOptions()

    @model_validator(mode="after")
    def _trials_do_not_overlap(self) -> ScenarioOptions:
        busy_s = (
            self.trigger_to_motion_ms
            + self.motion_duration_ms
            + self.return_after_ms
            + self.return_duration_ms
        ) / 1000.0
        if self.trial_period_s - 2.0 * self.trial_jitter_s < busy_s:
            raise ValueError(
                f"trial_period_s ({self.trial_period_s:g}) minus twice trial_jitter_s "
                f"({self.trial_jitter_s:g}) must leave room for one platform cycle "
                f"({busy_s:g} s: motion, hold, return); raise trial_period_s or lower the jitter"
            )
        return self


def device_rng(seed: int, device_id: str, purpose: str) -> np.random.Generator:
    """An independent random stream per (seed, device, purpose): reproducible whatever order
    devices open in and however many draws other streams make."""
    key = [seed, zlib.crc32(device_id.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def min_jerk(tau: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Minimum-jerk step 0 -> 1 over tau in [0, 1]: (position, d/dtau, d2/dtau2)."""
    x = np.clip(tau, 0.0, 1.0)
    inside = (tau > 0.0) & (tau < 1.0)
    pos = x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)
    vel = np.where(inside, 30.0 * x * x * (1.0 - x) ** 2, 0.0)
    acc = np.where(inside, 60.0 * x * (1.0 - x) * (1.0 - 2.0 * x), 0.0)
    return pos, vel, acc


def add_min_jerk_step(
    t_s: FloatArray,
    start_s: float,
    duration_s: float,
    step: FloatArray,
    pos: FloatArray,
    vel: FloatArray,
    acc: FloatArray,
) -> None:
    """Add a minimum-jerk move by `step` (per axis) starting at `start_s` to pos/vel/acc
    (n, n_axes) sampled at the sorted times `t_s`; only the moving part is computed."""
    i0 = int(np.searchsorted(t_s, start_s, "right"))
    i1 = int(np.searchsorted(t_s, start_s + duration_s, "left"))
    if i1 > i0:
        p, v, a = min_jerk((t_s[i0:i1] - start_s) / duration_s)
        pos[i0:i1] += p[:, None] * step[None, :]
        vel[i0:i1] += (v / duration_s)[:, None] * step[None, :]
        acc[i0:i1] += (a / (duration_s * duration_s))[:, None] * step[None, :]
    if i1 < t_s.shape[0]:
        pos[i1:] += step[None, :]


@dataclass(frozen=True, slots=True)
class Trial:
    index: int
    t_s: float  # trigger
    motion_onset_t_s: float
    kind: str
    direction: str
    amplitude: float  # deg (tilt) or m (translation)
    response_onset_t_s: float  # the body's postural response (force plate, body IMUs)

    @property
    def unit_vector(self) -> tuple[float, float]:
        return _DIRECTIONS[self.direction]

    def as_truth(self) -> dict[str, Any]:
        return {
            "type": "trial",
            "trial": self.index,
            "t_s": self.t_s,
            "motion_onset_t_s": self.motion_onset_t_s,
            "kind": self.kind,
            "direction": self.direction,
            "amplitude": self.amplitude,
            "amplitude_unit": "deg" if self.kind == "tilt" else "m",
        }


class Body:
    """COM kinematics of the standing subject, deterministic in world time.

    Quiet sway per axis is a multisine: N_SINES frequencies log-spaced over 0.02-3 Hz (randomly
    nudged), random phases, COP amplitude spectrum |P(f)| ~ 1/(1 + (f/f_c)^2) scaled to the
    requested COP rms; the COM amplitude is |P| / (1 + (h/g)(2 pi f)^2), so
    cop = com - (h/g) com'' holds exactly. Deterministic amplitudes make window statistics
    converge much faster than a Gaussian process would.
    """

    N_SINES = 40

    def __init__(self, options: BodyOptions, rng: np.random.Generator, epoch_s: float) -> None:
        self.options = options
        self.epoch_s = epoch_s
        self.h_over_g = options.com_height_m / G_MPS2
        edges = np.geomspace(0.02, 3.0, self.N_SINES + 1)
        # columns: AP (forward), ML (left)
        self._omega = np.empty((self.N_SINES, 2))
        self._amp_com = np.empty((self.N_SINES, 2))
        self._phase = rng.uniform(0.0, 2.0 * np.pi, size=(self.N_SINES, 2))
        for axis, rms_mm in enumerate((options.sway_ap_rms_mm, options.sway_ml_rms_mm)):
            f_hz = edges[:-1] * (edges[1:] / edges[:-1]) ** rng.uniform(0.0, 1.0, self.N_SINES)
            width = np.diff(edges)
            p_amp = np.sqrt(width) / (1.0 + (f_hz / options.sway_corner_hz) ** 2)
            p_amp *= (rms_mm * 1e-3) / math.sqrt(float(np.sum(p_amp**2)) / 2.0)
            w = 2.0 * np.pi * f_hz
            self._omega[:, axis] = w
            self._amp_com[:, axis] = p_amp / (1.0 + self.h_over_g * w * w)

    def sway(self, t_s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Quiet-sway COM (position m, velocity m/s, acceleration m/s^2), each (n, 2) AP/ML,
        on a uniform time grid `t_s` (one numba call)."""
        n = t_s.shape[0]
        pos = np.empty((n, 2))
        vel = np.empty((n, 2))
        acc = np.empty((n, 2))
        if n == 0:
            return pos, vel, acc
        dt = float(t_s[-1] - t_s[0]) / (n - 1) if n > 1 else 0.0
        multisine_block(
            float(t_s[0]) - self.epoch_s,
            dt,
            self._omega,
            self._amp_com,
            self._phase,
            pos,
            vel,
            acc,
        )
        return pos, vel, acc

    def sway_reference(self, t_s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Plain numpy `sway` on any time grid (the kernel's test reference)."""
        arg = (t_s - self.epoch_s)[:, None, None] * self._omega[None] + self._phase[None]
        s = np.sin(arg)
        a = self._amp_com[None]
        w = self._omega[None]
        return (
            np.sum(a * s, axis=1),
            np.sum(a * w * np.cos(arg), axis=1),
            -np.sum(a * w * w * s, axis=1),
        )

    def response(
        self, trials: list[Trial], t_s: FloatArray, amplitude_ref: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The postural responses of `trials` at `t_s`: COM out and back, opposite the
        perturbation direction, starting exactly at each trial's response onset."""
        n = t_s.shape[0]
        pos = np.zeros((n, 2))
        vel = np.zeros((n, 2))
        acc = np.zeros((n, 2))
        opt = self.options
        t1 = opt.response_duration_ms / 1000.0
        t2 = opt.recovery_duration_ms / 1000.0
        for tr in trials:
            t0 = tr.response_onset_t_s
            if t_s[-1] <= t0 or t_s[0] >= t0 + t1 + t2:
                continue
            d_m = opt.response_com_mm * 1e-3 * tr.amplitude / amplitude_ref
            ux, uy = tr.unit_vector
            step = np.array([-ux * d_m, -uy * d_m])
            add_min_jerk_step(t_s, t0, t1, step, pos, vel, acc)
            add_min_jerk_step(t_s, t0 + t1, t2, -step, pos, vel, acc)
        return pos, vel, acc


class Scenario:
    """Trial schedule, body model and the in-memory ground truth of one simulated station."""

    def __init__(self, options: ScenarioOptions, epoch_s: float) -> None:
        self.options = options
        self.epoch_s = epoch_s
        # the newest records, for tests and notebooks (a long daemon run must not grow memory)
        self.truth: deque[dict[str, Any]] = deque(maxlen=TRUTH_KEPT)
        self._trial_rng = device_rng(options.seed, "scenario", "trials")
        self.body = Body(options.body, device_rng(options.seed, "scenario", "body"), epoch_s)
        self._trials: list[Trial] = []
        # The platform puts the trigger on its own sample grid: once it has registered here,
        # trigger times are its sample times, so the TTL edge is exactly at the onset.
        self.trigger_grid: Callable[[float], float] | None = None
        self._trial_times: list[float] = []  # sorted: triggers never overlap (validated)
        # Calibration mode (`nmcore.sim.bench.Bench`): generators ask it what the technician
        # did; no trial triggers at or after `trials_stop_s`.
        self.bench: Any = None
        self.trials_stop_s: float | None = None
        self._schedule_closed = False
        self.amplitude = (
            options.tilt_amplitude_deg
            if options.kind == "tilt"
            else options.translation_amplitude_m
        )
        self.amplitude_ref = _REF_TILT_DEG if options.kind == "tilt" else _REF_TRANSLATION_M
        o = options
        self.effect_s = (
            o.trigger_to_motion_ms
            + o.motion_duration_ms
            + o.return_after_ms
            + o.return_duration_ms
            + o.body.response_latency_mean_ms
            + 6.0 * o.body.response_latency_sd_ms
            + o.body.response_duration_ms
            + o.body.recovery_duration_ms
        ) / 1000.0 + _EFFECT_MARGIN_S

    @classmethod
    def shared(
        cls,
        shared: dict[str, Any],
        options: ScenarioOptions,
        now_s: float,
        device_id: str,
    ) -> Scenario:
        """The station's scenario, created by the first device that asks."""
        existing = shared.get(SCENARIO_KEY)
        if existing is None:
            scenario = cls(options, now_s)
            shared[SCENARIO_KEY] = scenario
            return scenario
        if not isinstance(existing, Scenario):
            raise TypeError(f"ctx.shared[{SCENARIO_KEY!r}] holds a {type(existing).__name__}")
        if existing.options != options:
            # Imported lazily: errors is tiny, but keep the module import-light anyway.
            from nmcore.errors import DeviceError

            raise DeviceError(
                "its scenario options differ from those of the simulated devices opened "
                "before it; put the same [scenario] table in every sim device's options",
                device_id,
            )
        return existing

    def record(self, rec: dict[str, Any], sink: Any = None) -> None:
        """Keep `rec` in memory and pass it to the runtime's truth sink if there is one."""
        self.truth.append(rec)
        if sink is not None:
            sink(rec)

    def suspend_trials(self, from_s: float) -> None:
        """No trial triggers at or after `from_s` (calibration mode). Trials already drawn
        (and announced in the truth) still run to their end: a device may have generated
        them already."""
        if self.trials_stop_s is None or from_s < self.trials_stop_s:
            self.trials_stop_s = from_s

    def _extend(self, until_s: float, sink: Any) -> None:
        o = self.options
        while not self._schedule_closed and (o.n_trials is None or len(self._trials) < o.n_trials):
            k = len(self._trials)
            nominal = self.epoch_s + o.first_trial_s + k * o.trial_period_s
            if nominal - o.trial_jitter_s > until_s:
                return
            # a fixed number of draws per trial keeps the schedule independent of who asks
            u_jitter, u_dir = self._trial_rng.random(2).tolist()
            z_lat = float(self._trial_rng.standard_normal())
            t_s = max(self.epoch_s, nominal + (2.0 * u_jitter - 1.0) * o.trial_jitter_s)
            if self.trigger_grid is not None:
                t_s = self.trigger_grid(t_s)
            if self.trials_stop_s is not None and t_s >= self.trials_stop_s:
                # the schedule ends for good: drawing this trial again with fresh random
                # numbers could put it before the stop, where data may exist already
                self._schedule_closed = True
                return
            direction = o.direction
            if direction == "random":
                direction = ("forward", "backward", "left", "right")[min(3, int(u_dir * 4))]
            motion_s = t_s + o.trigger_to_motion_ms / 1000.0
            b = o.body
            latency_ms = b.response_latency_mean_ms + b.response_latency_sd_ms * z_lat
            latency_ms = max(0.25 * b.response_latency_mean_ms, latency_ms)
            trial = Trial(
                index=k,
                t_s=t_s,
                motion_onset_t_s=motion_s,
                kind=o.kind,
                direction=direction,
                amplitude=self.amplitude,
                response_onset_t_s=motion_s + latency_ms / 1000.0,
            )
            self._trials.append(trial)
            self._trial_times.append(t_s)
            self.record(trial.as_truth(), sink)

    def trials_between(self, t0_s: float, t1_s: float, sink: Any = None) -> list[Trial]:
        """Trials whose trigger lies in [t0_s, t1_s] (the schedule grows lazily)."""
        self._extend(t1_s, sink)
        lo = bisect.bisect_left(self._trial_times, t0_s)
        hi = bisect.bisect_right(self._trial_times, t1_s)
        return self._trials[lo:hi]

    def active_trials(self, t0_s: float, t1_s: float, sink: Any = None) -> list[Trial]:
        """Trials that may show anywhere in [t0_s, t1_s]."""
        return self.trials_between(t0_s - self.effect_s, t1_s, sink)

    def platform_motion(
        self, trials: list[Trial], t_s: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Platform displacement, velocity, acceleration (n, 2) along (AP, ML): rad for tilt,
        m for translation."""
        o = self.options
        n = t_s.shape[0]
        pos = np.zeros((n, 2))
        vel = np.zeros((n, 2))
        acc = np.zeros((n, 2))
        t_out = o.motion_duration_ms / 1000.0
        t_back = o.return_duration_ms / 1000.0
        back_start = t_out + o.return_after_ms / 1000.0
        scale = math.radians(self.amplitude) if o.kind == "tilt" else self.amplitude
        for tr in trials:
            t0 = tr.motion_onset_t_s
            if t_s[-1] <= t0 or t_s[0] >= t0 + back_start + t_back:
                continue
            step = np.array(tr.unit_vector) * scale
            add_min_jerk_step(t_s, t0, t_out, step, pos, vel, acc)
            add_min_jerk_step(t_s, t0 + back_start, t_back, -step, pos, vel, acc)
        return pos, vel, acc

    def body_com(
        self, t_s: FloatArray, sink: Any = None
    ) -> tuple[FloatArray, FloatArray, FloatArray, list[Trial]]:
        """COM (pos, vel, acc) (n, 2) AP/ML = quiet sway + postural responses, and the trials
        whose responses may show in this span."""
        trials = self.active_trials(float(t_s[0]), float(t_s[-1]), sink)
        pos, vel, acc = self.body.sway(t_s)
        if trials:
            rp, rv, ra = self.body.response(trials, t_s, self.amplitude_ref)
            pos += rp
            vel += rv
            acc += ra
        return pos, vel, acc, trials
