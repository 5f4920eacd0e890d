"""The perturbation platform: a TTL trigger line and the platform's own IMU.

The trigger goes high at the first sample taken at or after each trial's trigger time and stays
high for `trigger_pulse_ms`. The IMU (x forward, y left, z up) reads specific force and angular
rate of the platform surface: a tilt of angle a toward a direction reads -g sin(a) on that
horizontal axis and g cos on z; the rate reads on y (+ for a forward tilt) or x (- for a tilt to
the left). A translation reads its acceleration on x or y.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.sim.base import IMU_CHANNELS, stream_descriptor
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.scenario import G_MPS2, device_rng

__all__ = ["PlatformOptions", "imu_noise", "platform_generators", "platform_streams"]

FloatArray = npt.NDArray[np.float64]


class PlatformOptions(SimDeviceOptions):
    rate_hz: float = Field(1000.0, gt=0.0, le=20_000.0)
    trigger_pulse_ms: float = Field(50.0, gt=0.0, le=1000.0)
    acc_noise_rms_mps2: float = Field(0.02, ge=0.0, le=5.0)
    gyro_noise_rms_dps: float = Field(0.1, ge=0.0, le=50.0)
    acc_bias_mps2: float = Field(0.05, ge=0.0, le=5.0, description="max |bias| per axis")
    gyro_bias_dps: float = Field(0.3, ge=0.0, le=50.0, description="max |bias| per axis")
    clock: ClockOptions = ClockOptions(drift_ppm=-12.0)
    transport: TransportOptions = TransportOptions(kind="serial")


def imu_noise(rng: np.random.Generator, n: int, acc_rms: float, gyro_rms: float) -> FloatArray:
    """White sensor noise for n samples of (acc xyz, gyro xyz)."""
    noise = rng.standard_normal((n, 6))
    noise[:, :3] *= acc_rms
    noise[:, 3:] *= gyro_rms
    return noise


def platform_streams(device_id: str, options: PlatformOptions) -> list[StreamDescriptor]:
    """`<id>.trigger` (0/1) and `<id>.imu` (m/s^2, deg/s)."""
    return [
        stream_descriptor(
            device_id,
            "trigger",
            StreamKind.TRIGGER,
            options.rate_hz,
            (ChannelSpec("trigger", "1"),),
            options,
        ),
        stream_descriptor(device_id, "imu", StreamKind.IMU, options.rate_hz, IMU_CHANNELS, options),
    ]


def platform_generators(device_id: str, opt: PlatformOptions, device: SimDevice) -> list[Generator]:
    """Signal generators for the streams of `platform_streams`, in that order."""
    scenario = device.scenario
    pulse_s = opt.trigger_pulse_ms / 1000.0
    seed = opt.scenario.seed
    bias_rng = device_rng(seed, device_id, "imu.bias")
    bias = np.concatenate(
        [
            bias_rng.uniform(-opt.acc_bias_mps2, opt.acc_bias_mps2, 3),
            bias_rng.uniform(-opt.gyro_bias_dps, opt.gyro_bias_dps, 3),
        ]
    )
    noise_rng = device_rng(seed, device_id, "imu.noise")
    tilt = opt.scenario.kind == "tilt"
    trig_stream = device.streams[0]
    if scenario.trigger_grid is None:

        def on_trigger_grid(t_s: float) -> float:
            return trig_stream.time_of(trig_stream.index_at(t_s))

        scenario.trigger_grid = on_trigger_grid

    def trigger(n0: int, t: FloatArray) -> FloatArray:
        out = np.zeros((t.shape[0], 1))
        for tr in scenario.trials_between(float(t[0]) - pulse_s, float(t[-1]), device.sink):
            # the edge is the first sample at or after the trigger (its own sample when the
            # trigger is on this grid); 1 ns of slack absorbs float rounding
            on = tr.t_s - 1e-9
            out[(t >= on) & (t < on + pulse_s), 0] = 1.0
        return out

    def imu(n0: int, t: FloatArray) -> FloatArray:
        n = t.shape[0]
        out = imu_noise(noise_rng, n, opt.acc_noise_rms_mps2, opt.gyro_noise_rms_dps)
        out += bias
        trials = scenario.active_trials(float(t[0]), float(t[-1]), device.sink)
        if not trials:
            out[:, 2] += G_MPS2
            return out
        pos, vel, acc = scenario.platform_motion(trials, t)
        if tilt:
            out[:, 0] -= G_MPS2 * np.sin(pos[:, 0])
            out[:, 1] -= G_MPS2 * np.sin(pos[:, 1])
            out[:, 2] += G_MPS2 * np.cos(pos[:, 0]) * np.cos(pos[:, 1])
            out[:, 3] -= np.degrees(vel[:, 1])
            out[:, 4] += np.degrees(vel[:, 0])
        else:
            out[:, 0] += acc[:, 0]
            out[:, 1] += acc[:, 1]
            out[:, 2] += G_MPS2
        return out

    return [trigger, imu]
