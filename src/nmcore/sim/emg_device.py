"""The EMG amplifier: N channels of surface EMG (nmcore.sim.emg.EmgGenerator) whose bursts
start a per-muscle latency after each perturbation's motion onset.

Per trial and muscle, a fixed number of draws (so the schedule does not depend on chunking):
latency ~ N(mean, sd) clipped to [latency_min_ms, latency_max_ms], burst duration ~ N(mean,
sd), and whether the muscle responds at all (`respond_prob`). The truth onset is the first
sample of the burst (sample times on this device's own crystal), with its latency from motion
onset.

Sensor errors and calibration (all off by default): `gain` per channel (raw = gain * true);
`dead_channels` read a flat 0 (a broken lead / a channel that is off); `full_scale_uv` is the
amplifier's input range, every channel clips at +-full_scale_uv; a channel in
`saturate_channels` has lost its electrode contact: its electrode offset (1.5 x full scale, a
dry or detached electrode's half-cell potential on a DC-coupled input) pins it to the positive
rail. `mvc_rms_uv` is the rms of a maximal voluntary contraction: in calibration mode (a
`Bench` installed) `contract(level)` adds a burst of level * mvc_rms_uv rms.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.sim.base import stream_descriptor
from nmcore.sim.bench import EmgActivity
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.emg import EmgGenerator
from nmcore.sim.scenario import device_rng

__all__ = ["EmgOptions", "emg_generators", "emg_streams"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_MUSCLES = ("tibialis_anterior", "soleus", "gastrocnemius_med", "rectus_femoris")
PerMuscle = float | list[float]
_SATURATING_OFFSET = 1.5  # x full scale: the offset of a detached electrode, past the rail


class EmgOptions(SimDeviceOptions):
    rate_hz: float = Field(2000.0, gt=100.0, le=20_000.0)
    n_channels: int = Field(4, ge=1, le=64)
    channel_names: list[str] | None = Field(None, description="default: muscle names / emg<i>")
    latency_mean_ms: PerMuscle = Field(90.0, description="one value or one per channel")
    latency_sd_ms: PerMuscle = Field(12.0, description="one value or one per channel")
    latency_min_ms: float = Field(30.0, ge=0.0, le=1000.0)
    latency_max_ms: float = Field(300.0, gt=0.0, le=2000.0)
    snr_db: PerMuscle = Field(20.0, description="20 log10(burst rms / noise rms)")
    burst_duration_ms: float = Field(300.0, gt=5.0, le=5000.0)
    burst_duration_sd_ms: float = Field(50.0, ge=0.0, le=2000.0)
    respond_prob: float = Field(1.0, ge=0.0, le=1.0, description="chance a muscle responds")
    onset_shape: Literal["step", "ramp"] = "step"
    ramp_ms: float = Field(50.0, gt=0.0, le=1000.0)
    noise_rms_uv: float = Field(5.0, gt=0.0, le=1000.0)
    band_hz: tuple[float, float] = (20.0, 450.0)
    tonic_rms_uv: float = Field(0.0, ge=0.0, le=1000.0)
    mains_hz: float = Field(50.0, ge=0.0, le=70.0)
    mains_uv: float = Field(0.0, ge=0.0, le=10_000.0)
    ecg_uv: float = Field(0.0, ge=0.0, le=10_000.0)
    gain: PerMuscle = Field(1.0, description="raw / true, one value or one per channel")
    dead_channels: list[int] = Field(default_factory=list, description="read a flat 0")
    saturate_channels: list[int] = Field(
        default_factory=list, description="pinned to the rail (needs full_scale_uv)"
    )
    full_scale_uv: float | None = Field(
        None, gt=0.0, le=1e6, description="input range +-; None: never clips"
    )
    mvc_rms_uv: PerMuscle = Field(300.0, description="rms of a maximal voluntary contraction")
    clock: ClockOptions = ClockOptions(drift_ppm=25.0)
    transport: TransportOptions = TransportOptions(kind="serial")

    @model_validator(mode="after")
    def _per_channel_lists(self) -> EmgOptions:
        for name in ("latency_mean_ms", "latency_sd_ms", "snr_db", "gain", "mvc_rms_uv"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != self.n_channels:
                raise ValueError(
                    f"{name} has {len(value)} values for n_channels={self.n_channels}; "
                    "give one value, or one per channel"
                )
        if self.channel_names is not None and len(self.channel_names) != self.n_channels:
            raise ValueError(
                f"channel_names has {len(self.channel_names)} names for "
                f"n_channels={self.n_channels}"
            )
        if self.latency_min_ms >= self.latency_max_ms:
            raise ValueError("latency_min_ms must be below latency_max_ms")
        if np.any(np.abs(self.per_channel("gain")) < 1e-6):
            raise ValueError("gain: a gain of 0 reads nothing; list the channel in dead_channels")
        if np.any(self.per_channel("mvc_rms_uv") <= 0.0):
            raise ValueError("mvc_rms_uv must be > 0 (typically 100-1000 uV)")
        for name in ("dead_channels", "saturate_channels"):
            bad = [c for c in getattr(self, name) if not 0 <= c < self.n_channels]
            if bad:
                raise ValueError(
                    f"{name} {bad} out of range: channels are 0..{self.n_channels - 1}"
                )
        if self.saturate_channels and self.full_scale_uv is None:
            raise ValueError(
                "saturate_channels needs full_scale_uv (the amplifier's input range, e.g. 5000)"
            )
        return self

    def truth_errors(self, device_id: str) -> dict[str, Any]:
        return {
            "gain": self.per_channel("gain").tolist(),
            "dead_channels": sorted(self.dead_channels),
            "saturate_channels": sorted(self.saturate_channels),
            "full_scale_uv": self.full_scale_uv,
            "mvc_rms_uv": self.per_channel("mvc_rms_uv").tolist(),
            "noise_rms_uv": self.noise_rms_uv,
        }

    def per_channel(self, name: str) -> FloatArray:
        value = getattr(self, name)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (self.n_channels,)).copy()

    def names(self) -> list[str]:
        if self.channel_names is not None:
            return list(self.channel_names)
        if self.n_channels <= len(DEFAULT_MUSCLES):
            return list(DEFAULT_MUSCLES[: self.n_channels])
        return [f"emg{i + 1}" for i in range(self.n_channels)]


def emg_streams(device_id: str, options: EmgOptions) -> list[StreamDescriptor]:
    """`<id>.emg`: one channel per muscle, uV."""
    chans = tuple(ChannelSpec(n, "uV") for n in options.names())
    return [stream_descriptor(device_id, "emg", StreamKind.EMG, options.rate_hz, chans, options)]


def emg_generators(device_id: str, opt: EmgOptions, device: SimDevice) -> list[Generator]:
    """The generator of `emg_streams`' one stream."""
    scenario = device.scenario
    stream = device.streams[0]
    sid = stream.desc.stream_id
    seed = opt.scenario.seed
    gen = EmgGenerator(
        rate_hz=opt.rate_hz,
        n_channels=opt.n_channels,
        rng=device_rng(seed, device_id, "emg.signal"),
        noise_rms_uv=opt.noise_rms_uv,
        band_hz=opt.band_hz,
        tonic_rms_uv=opt.tonic_rms_uv,
        mains_hz=opt.mains_hz,
        mains_uv=opt.mains_uv,
        ecg_uv=opt.ecg_uv,
    )
    draw_rng = device_rng(seed, device_id, "emg.trials")
    lat_mean = opt.per_channel("latency_mean_ms")
    lat_sd = opt.per_channel("latency_sd_ms")
    snr = opt.per_channel("snr_db")
    names = opt.names()
    ch = opt.n_channels
    state: dict[str, Any] = {"next_trial": 0}

    def schedule(n0: int, t1_s: float) -> None:
        for tr in scenario.active_trials(float(stream.time_of(n0)), t1_s, device.sink):
            if tr.index < state["next_trial"]:
                continue
            state["next_trial"] = tr.index + 1
            z = draw_rng.standard_normal((2, ch))
            u = draw_rng.random(ch)
            latency_ms = np.clip(lat_mean + lat_sd * z[0], opt.latency_min_ms, opt.latency_max_ms)
            dur_ms = np.maximum(20.0, opt.burst_duration_ms + opt.burst_duration_sd_ms * z[1])
            for c in range(ch):
                if u[c] >= opt.respond_prob:
                    continue
                onset = stream.index_at(tr.motion_onset_t_s + latency_ms[c] / 1000.0)
                if onset < n0:
                    continue  # the device was not running yet
                n_dur = max(1, round(dur_ms[c] * 1e-3 * opt.rate_hz))
                gen.schedule_burst(c, onset, n_dur, float(snr[c]), opt.onset_shape, opt.ramp_ms)
                t_on = float(stream.time_of(onset))
                device.record(
                    {
                        "type": "muscle_onset",
                        "device_id": device_id,
                        "stream_id": sid,
                        "trial": tr.index,
                        "channel": c,
                        "muscle": names[c],
                        "t_s": t_on,
                        "index": onset,
                        "latency_ms": (t_on - tr.motion_onset_t_s) * 1000.0,
                        "duration_ms": n_dur / opt.rate_hz * 1000.0,
                        "snr_db": float(snr[c]),
                        "shape": opt.onset_shape,
                    }
                )

    gain = opt.per_channel("gain")
    mvc_uv = opt.per_channel("mvc_rms_uv")
    unit_gain = bool(np.all(gain == 1.0))
    rail_uv = opt.full_scale_uv
    saturated = sorted(set(opt.saturate_channels))
    dead = sorted(set(opt.dead_channels))

    def activity(t: FloatArray) -> FloatArray | None:
        bench = scenario.bench
        if bench is None:
            return None
        out: FloatArray | None = None
        for i0, i1, act in bench.states_at(device_id, "emg", t):
            if isinstance(act, EmgActivity):
                levels = act.levels(ch)
                if np.any(levels > 0.0):
                    if out is None:
                        out = np.zeros((t.shape[0], ch))
                    out[i0:i1] = levels * mvc_uv
        return out

    def generate(n0: int, t: FloatArray) -> FloatArray:
        if n0 != gen.position:
            raise RuntimeError(f"EMG generator at sample {gen.position}, asked for {n0}")
        schedule(n0, float(t[-1]))
        out = gen.generate(t.shape[0], activity(t))
        if not unit_gain:
            out *= gain
        if rail_uv is not None:
            if saturated:
                out[:, saturated] += _SATURATING_OFFSET * rail_uv
            np.clip(out, -rail_uv, rail_uv, out=out)
        if dead:
            out[:, dead] = 0.0
        return out

    return [generate]
