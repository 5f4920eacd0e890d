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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.sim.base import stream_descriptor
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
    "ForcePlateOptions",
    "cop_from_plate",
    "forceplate_generators",
    "forceplate_streams",
    "hop_vertical_bw",
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
    clock: ClockOptions = ClockOptions(drift_ppm=18.0, counter_bits=24, timestamp_hz=0.0)
    transport: TransportOptions = TransportOptions(kind="serial")


def forceplate_streams(device_id: str, options: ForcePlateOptions) -> list[StreamDescriptor]:
    """`<id>.force`: Fx Fy Fz (N), Mx My Mz (N.m)."""
    return [
        stream_descriptor(
            device_id, "force", StreamKind.FORCE, options.rate_hz, FORCE_CHANNELS, options
        )
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

    def generate(n0: int, t: FloatArray) -> FloatArray:
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
        out[:, 3] = cop_y * fz + dz * out[:, 1]
        out[:, 4] = -cop_x * fz - dz * out[:, 0]
        out[:, 5] = cop_x * out[:, 1] - cop_y * out[:, 0]
        if opt.force_noise_n > 0.0 or opt.moment_noise_nm > 0.0:
            noise = noise_rng.standard_normal((n, 6))
            out[:, :3] += opt.force_noise_n * noise[:, :3]
            out[:, 3:] += opt.moment_noise_nm * noise[:, 3:]
        return out

    return [generate]
