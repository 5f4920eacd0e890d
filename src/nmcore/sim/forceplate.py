"""A 6-axis force plate under the standing subject (AMTI/Bertec conventions).

Plate axes: x mediolateral (+ to the subject's left), y anteroposterior (+ forward), z down
(right-handed), origin `plate_dz_m` below the surface. Forces are those the subject applies
to the plate (Fz = +m g when standing still); moments are about the origin, so

    Mx = cop_y Fz + dz Fy,  My = -cop_x Fz - dz Fx,  Mz = cop_x Fy - cop_y Fx + Tz

and the usual formulas cop_x = (-My - dz Fx)/Fz, cop_y = (Mx - dz Fy)/Fz give the COP back.
The COP comes from the body model (inverted pendulum: cop = com - (h/g) com''), the shear is
minus the mass times the COM acceleration, so forces and COP are consistent by construction.

Hops (optional): countermovement, take-off, flight (Fz = 0), landing impact of `hop_peak_bw`
body weights about 50 ms after touch-down, then a damped settling back to body weight.

Sensor errors (for calibration): the six-axis output is raw = gain * true + zero_offset (+ noise,
in raw units), per channel. `output = "load_cells"` gives a plate on four vertical load cells
instead (channels c0..c3, N): the true split (`load_cell_split`) sums to Fz, puts the COP
exactly where the subject / masses put it (cells at the surface: no dz term) and twists like a
real, not perfectly rigid plate (bilinear between the corners). Each cell reads
cell_gain * f + cell_offset_n (+ noise).

In calibration mode (a `Bench` installed) the plate is empty until the bench puts masses, the
subject or a shake on it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.sim.base import stream_descriptor
from nmcore.sim.bench import PlateLoad
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.scenario import G_MPS2, device_rng

__all__ = [
    "FORCE_CHANNELS",
    "LOAD_CELL_CHANNELS",
    "ForcePlateOptions",
    "cop_from_plate",
    "forceplate_generators",
    "forceplate_streams",
    "hop_vertical_bw",
    "load_cell_split",
]

FloatArray = npt.NDArray[np.float64]

FORCE_CHANNELS = (
    ChannelSpec("Fx", "N"),
    ChannelSpec("Fy", "N"),
    ChannelSpec("Fz", "N"),
    ChannelSpec("Mx", "N.m"),
    ChannelSpec("My", "N.m"),
    ChannelSpec("Mz", "N.m"),
)

LOAD_CELL_CHANNELS = tuple(ChannelSpec(f"c{i}", "N") for i in range(4))
# 0.4 m (x, ML) by 0.6 m (y, AP): c0 front left, c1 front right, c2 back right, c3 back left
_CELLS_M = ((0.2, 0.3), (-0.2, 0.3), (-0.2, -0.3), (0.2, -0.3))

Six = tuple[float, float, float, float, float, float]
Four = tuple[float, float, float, float]

_PUSH_S = 0.25  # propulsion phase before take-off
_UNWEIGHT_S = 0.2  # unweighting dip before the propulsion
_IMPACT_PEAK_S = 0.05  # touch-down to impact peak
_SETTLE_S = 3.0  # after this the landing transient is negligible (< 1e-3 BW)


class ForcePlateOptions(SimDeviceOptions):
    rate_hz: float = Field(1000.0, gt=0.0, le=20_000.0)
    mass_kg: float = Field(70.0, gt=1.0, le=400.0)
    plate_dz_m: float = Field(
        0.04, ge=0.0, le=0.2, description="depth of the moment origin below the surface"
    )
    stance_x_m: float = Field(0.0, ge=-0.3, le=0.3, description="mean COP, ML")
    stance_y_m: float = Field(0.0, ge=-0.3, le=0.3, description="mean COP, AP")
    force_noise_n: float = Field(0.3, ge=0.0, le=50.0, description="rms per force channel")
    moment_noise_nm: float = Field(0.03, ge=0.0, le=10.0, description="rms per moment channel")
    hop_period_s: float | None = Field(None, gt=2.0, description="None: no hops")
    first_hop_s: float = Field(5.0, ge=1.0, description="first take-off after scenario start")
    hop_flight_s: float = Field(0.35, gt=0.05, le=1.0)
    hop_flight_sd_s: float = Field(0.03, ge=0.0, le=0.2)
    hop_peak_bw: float = Field(3.5, ge=1.2, le=10.0, description="landing impact, body weights")
    hop_peak_sd_bw: float = Field(0.4, ge=0.0, le=3.0)
    output: Literal["six_axis", "load_cells"] = "six_axis"
    zero_offset: Six = Field(
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0), description="six_axis raw offsets, N and N.m"
    )
    gain: Six = Field((1.0, 1.0, 1.0, 1.0, 1.0, 1.0), description="six_axis raw / true")
    cell_positions_m: tuple[tuple[float, float], ...] = Field(
        _CELLS_M, description="load_cells: (x, y) of c0..c3 from the surface centre"
    )
    cell_gain: Four = Field((1.0, 1.0, 1.0, 1.0), description="load_cells raw / true")
    cell_offset_n: Four = Field((0.0, 0.0, 0.0, 0.0), description="load_cells raw offsets")
    clock: ClockOptions = ClockOptions(drift_ppm=18.0, counter_bits=24, timestamp_hz=0.0)
    transport: TransportOptions = TransportOptions(kind="serial")

    @model_validator(mode="after")
    def _sane_errors(self) -> ForcePlateOptions:
        for name in ("zero_offset", "gain", "cell_gain", "cell_offset_n"):
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise ValueError(f"{name} must be finite numbers")
        for name in ("gain", "cell_gain"):
            if any(abs(v) < 1e-6 for v in getattr(self, name)):
                raise ValueError(f"{name}: a gain of 0 reads nothing; use 1.0 for a perfect one")
        if len(self.cell_positions_m) != 4:
            raise ValueError(
                f"cell_positions_m has {len(self.cell_positions_m)} cells; give the (x, y) of 4"
            )
        a = _cell_matrix(self.cell_positions_m)
        if np.linalg.matrix_rank(a, tol=1e-6) < 3:
            raise ValueError(
                "cell_positions_m: the 4 load cells lie on one line and cannot locate the "
                "COP; place them at the corners of the plate"
            )
        return self

    def truth_errors(self, device_id: str) -> dict[str, Any]:
        if self.output == "load_cells":
            return {
                "output": "load_cells",
                "cell_positions_m": [list(p) for p in self.cell_positions_m],
                "cell_gain": list(self.cell_gain),
                "cell_offset_n": list(self.cell_offset_n),
                "noise_n": self.force_noise_n,
            }
        return {
            "output": "six_axis",
            "zero_offset": list(self.zero_offset),
            "gain": list(self.gain),
            "plate_dz_m": self.plate_dz_m,
            "noise": [self.force_noise_n] * 3 + [self.moment_noise_nm] * 3,
        }


def _cell_matrix(cells: tuple[tuple[float, float], ...]) -> FloatArray:
    """Rows: sum of forces, moment giving Mx (sum y f), moment giving -My (sum x f)."""
    return np.array([[1.0] * len(cells), [y for _, y in cells], [x for x, _ in cells]])


def load_cell_split(
    fz: FloatArray, mx0: FloatArray, my0: FloatArray, cells: tuple[tuple[float, float], ...]
) -> FloatArray:
    """(n, 4) cell forces (N) of a plate on four cells carrying Fz with moments Mx0, My0 about
    the surface centre: sum f = Fz, sum y f = Mx0, sum x f = -My0 (so the cells give the COP),
    and sum x y f = Fz cop_x cop_y, the twist of a plate that is not perfectly rigid (bilinear
    interpolation between the corners of a rectangle). A perfectly rigid plate (the least-norm
    split alone) would never load the twist mode, and no set of dead weights could then tell
    the four cell gains apart."""
    a = _cell_matrix(cells)
    pinv = np.linalg.pinv(a)  # (4, 3)
    rhs = np.column_stack([fz, mx0, -my0])
    out: FloatArray = rhs @ pinv.T
    null = np.linalg.svd(a)[2][-1]  # the one direction no force or moment sees
    xy = np.array([x * y for x, y in cells])
    norm = float(null @ xy)
    if abs(norm) > 1e-12:
        safe = np.where(np.abs(fz) > 1e-9, fz, 1.0)
        twist = np.where(np.abs(fz) > 1e-9, (-my0) * mx0 / safe, 0.0)  # Fz cop_x cop_y
        out += (twist / norm)[:, None] * null[None, :]
    return out


def forceplate_streams(device_id: str, options: ForcePlateOptions) -> list[StreamDescriptor]:
    """`<id>.force`: Fx Fy Fz (N), Mx My Mz (N.m); with load cells c0..c3 (N)."""
    chans = LOAD_CELL_CHANNELS if options.output == "load_cells" else FORCE_CHANNELS
    return [
        stream_descriptor(device_id, "force", StreamKind.FORCE, options.rate_hz, chans, options)
    ]


def cop_from_plate(data: FloatArray, dz_m: float) -> FloatArray:
    """COP (n, 2) [x, y] in m from (n, 6) Fx Fy Fz Mx My Mz, AMTI convention."""
    fx, fy, fz, mx, my = data[:, 0], data[:, 1], data[:, 2], data[:, 3], data[:, 4]
    return np.column_stack([(-my - dz_m * fx) / fz, (mx - dz_m * fy) / fz])


def hop_vertical_bw(tau_s: FloatArray, flight_s: float, peak_bw: float) -> FloatArray:
    """Vertical force in body weights around one hop; tau_s is time since take-off.

    Before take-off: an unweighting dip then a propulsion bump ending at 0 at take-off;
    flight: 0; landing (tau = flight_s): impact bump peaking `_IMPACT_PEAK_S` after touch-down
    plus a damped settling to 1 BW."""
    v = np.ones_like(tau_s)
    u = (tau_s + _PUSH_S + _UNWEIGHT_S) / _UNWEIGHT_S
    m = (u >= 0.0) & (u < 1.0)
    v[m] = 1.0 - 0.4 * np.sin(np.pi * u[m]) ** 2
    u = (tau_s + _PUSH_S) / _PUSH_S
    m = (u >= 0.0) & (u < 1.0)
    v[m] = (1.0 + 1.5 * np.sin(np.pi * u[m])) * (1.0 - u[m] ** 6)
    v[(tau_s >= 0.0) & (tau_s < flight_s)] = 0.0
    x = tau_s - flight_s
    m = (x >= 0.0) & (x < _SETTLE_S)
    xm = x[m]
    r = xm / _IMPACT_PEAK_S
    impact = (peak_bw - 1.0) * r * r * np.exp(2.0 * (1.0 - r))
    settle = (1.0 - np.exp(-((xm / 0.08) ** 2))) * (
        1.0 + 0.25 * np.exp(-xm / 0.4) * np.sin(2.0 * np.pi * 1.5 * xm)
    )
    v[m] = impact + settle
    return v


class _Hops:
    """The plate's hop schedule, drawn lazily in hop order (reproducible)."""

    def __init__(self, opt: ForcePlateOptions, epoch_s: float, rng: np.random.Generator) -> None:
        self.opt = opt
        self.epoch_s = epoch_s
        self.rng = rng
        self.hops: list[tuple[float, float, float]] = []  # take-off, flight, peak_bw

    def around(self, t0_s: float, t1_s: float) -> list[tuple[int, float, float, float]]:
        o = self.opt
        assert o.hop_period_s is not None
        while True:
            k = len(self.hops)
            t_to = self.epoch_s + o.first_hop_s + k * o.hop_period_s
            if t_to - _PUSH_S - _UNWEIGHT_S > t1_s:
                break
            z = self.rng.standard_normal(2)
            flight = float(max(0.1, o.hop_flight_s + o.hop_flight_sd_s * z[0]))
            peak = float(max(1.5, o.hop_peak_bw + o.hop_peak_sd_bw * z[1]))
            self.hops.append((t_to, flight, peak))
        return [
            (k, t_to, fl, pk)
            for k, (t_to, fl, pk) in enumerate(self.hops)
            if t_to - _PUSH_S - _UNWEIGHT_S <= t1_s and t_to + fl + _SETTLE_S >= t0_s
        ]


def forceplate_generators(
    device_id: str, opt: ForcePlateOptions, device: SimDevice
) -> list[Generator]:
    """The generator of `forceplate_streams`' one stream."""
    scenario = device.scenario
    stream = device.streams[0]
    sid = stream.desc.stream_id
    weight_n = opt.mass_kg * G_MPS2
    hg = scenario.body.h_over_g
    dz = opt.plate_dz_m
    seed = opt.scenario.seed
    noise_rng = device_rng(seed, device_id, "force.noise")
    hops = (
        _Hops(opt, scenario.epoch_s, device_rng(seed, device_id, "hops"))
        if opt.hop_period_s is not None
        else None
    )
    state: dict[str, Any] = {"next_trial": 0, "next_hop": 0}

    def subject(t: FloatArray) -> FloatArray:
        """(n, 6) Fx, Fy, Fz, and Mx, My about the surface centre, Mz: the standing subject."""
        n = t.shape[0]
        pos, _vel, acc, trials = scenario.body_com(t, device.sink)
        for tr in trials:
            if tr.index < state["next_trial"]:
                continue
            state["next_trial"] = tr.index + 1
            if tr.response_onset_t_s >= t[0]:
                device.record(
                    {
                        "type": "force_response",
                        "device_id": device_id,
                        "stream_id": sid,
                        "trial": tr.index,
                        "t_s": tr.response_onset_t_s,
                        "latency_ms": (tr.response_onset_t_s - tr.motion_onset_t_s) * 1000.0,
                    }
                )
        # body AP/ML -> plate y/x; ML in the body model is + left, as plate x
        cop_x = opt.stance_x_m + pos[:, 1] - hg * acc[:, 1]
        cop_y = opt.stance_y_m + pos[:, 0] - hg * acc[:, 0]
        vert = np.ones(n)
        if hops is not None:
            for k, t_to, flight, peak in hops.around(float(t[0]), float(t[-1])):
                vert *= hop_vertical_bw(t - t_to, flight, peak)
                if k >= state["next_hop"]:
                    state["next_hop"] = k + 1
                    fine = np.arange(0.0, 0.5, 1e-4)
                    prof = hop_vertical_bw(flight + fine, flight, peak)
                    device.record(
                        {
                            "type": "landing",
                            "device_id": device_id,
                            "stream_id": sid,
                            "hop": k,
                            "takeoff_t_s": t_to,
                            "landing_t_s": t_to + flight,
                            "flight_s": flight,
                            "peak_force_n": float(prof.max() * weight_n),
                            "peak_t_s": t_to + flight + float(fine[int(np.argmax(prof))]),
                        }
                    )
        fz = weight_n * vert
        out = np.empty((n, 6))
        out[:, 0] = -opt.mass_kg * acc[:, 1] * vert
        out[:, 1] = -opt.mass_kg * acc[:, 0] * vert
        out[:, 2] = fz
        out[:, 3] = cop_y * fz
        out[:, 4] = -cop_x * fz
        out[:, 5] = cop_x * out[:, 1] - cop_y * out[:, 0]
        return out

    load_cells = opt.output == "load_cells"
    gain = np.asarray(opt.cell_gain if load_cells else opt.gain)
    offset = np.asarray(opt.cell_offset_n if load_cells else opt.zero_offset)
    exact = bool(np.all(gain == 1.0) and np.all(offset == 0.0))

    def generate(n0: int, t: FloatArray) -> FloatArray:
        n = t.shape[0]
        bench = scenario.bench
        if bench is None:
            true = subject(t)
        else:
            # the subject before calibration mode; then whatever the bench put on the plate
            true = np.zeros((n, 6))
            for i0, i1, load in bench.states_at(device_id, "plate", t):
                if not isinstance(load, PlateLoad) or load.subject:
                    true[i0:i1] = subject(t[i0:i1])
                if isinstance(load, PlateLoad):
                    true[i0:i1] += load.forces(t[i0:i1])
        if load_cells:
            out = load_cell_split(true[:, 2], true[:, 3], true[:, 4], opt.cell_positions_m)
            noise_sd = np.full(4, opt.force_noise_n)
        else:
            # moments about the origin, dz below the surface (module docstring)
            out = true
            out[:, 3] += dz * true[:, 1]
            out[:, 4] -= dz * true[:, 0]
            noise_sd = np.array([opt.force_noise_n] * 3 + [opt.moment_noise_nm] * 3)
        if not exact:
            out = gain * out + offset
        if np.any(noise_sd > 0.0):
            out += noise_sd * noise_rng.standard_normal((n, out.shape[1]))
        return out

    return [generate]
