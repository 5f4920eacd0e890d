"""The perturbation platform: a TTL trigger line and the platform's own IMU.

The trigger goes high at the first sample taken at or after each trial's trigger time plus
`trigger_delay_ms` (the constant delay of the trigger electronics, 0 by default) and stays high
for `trigger_pulse_ms`. A loopback pulse (`loopback_trigger`, `nmcore.sim.bench`) shows on the
same line, delayed the same way. The IMU (x forward, y left, z up) reads specific force and angular
rate of the platform surface: a tilt of angle a toward a direction reads -g sin(a) on that
horizontal axis and g cos on z; the rate reads on y (+ for a forward tilt) or x (- for a tilt to
the left). A translation reads its acceleration on x or y. The sensor may sit rotated on the
platform (`mount_rotation_deg`, see `nmcore.sim.bench.rpy_matrix`): it reads every
platform-frame vector through that rotation; its biases and noise are in its own axes.
`imu_bias` gives the biases drawn from the seed (`PlatformOptions.truth_errors`).

In calibration mode (a `Bench` installed) the platform holds still; the bench's IMU actions
move the platform frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.model import ChannelSpec, StreamDescriptor, StreamKind
from nmcore.sim.base import IMU_CHANNELS, stream_descriptor
from nmcore.sim.bench import ImuMotion, rpy_matrix
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.scenario import G_MPS2, device_rng

__all__ = [
    "PlatformOptions",
    "imu_bias",
    "imu_noise",
    "imu_truth_errors",
    "mount_rotate",
    "platform_generators",
    "platform_streams",
]

Rpy = tuple[float, float, float]

FloatArray = npt.NDArray[np.float64]


class PlatformOptions(SimDeviceOptions):
    rate_hz: float = Field(1000.0, gt=0.0, le=20_000.0)
    trigger_pulse_ms: float = Field(50.0, gt=0.0, le=1000.0)
    acc_noise_rms_mps2: float = Field(0.02, ge=0.0, le=5.0)
    gyro_noise_rms_dps: float = Field(0.1, ge=0.0, le=50.0)
    acc_bias_mps2: float = Field(0.05, ge=0.0, le=5.0, description="max |bias| per axis")
    gyro_bias_dps: float = Field(0.3, ge=0.0, le=50.0, description="max |bias| per axis")
    mount_rotation_deg: Rpy = Field(
        (0.0, 0.0, 0.0), description="roll, pitch, yaw of the IMU on the platform"
    )
    trigger_delay_ms: float = Field(
        0.0, ge=0.0, le=1000.0, description="physical event to trigger line edge"
    )
    clock: ClockOptions = ClockOptions(drift_ppm=-12.0)
    transport: TransportOptions = TransportOptions(kind="serial")

    def truth_errors(self, device_id: str) -> dict[str, Any]:
        return {
            **imu_truth_errors(
                device_id,
                self.scenario.seed,
                self.acc_bias_mps2,
                self.gyro_bias_dps,
                self.mount_rotation_deg,
            ),
            "trigger_delay_ms": self.trigger_delay_ms,
        }


def imu_bias(device_id: str, seed: int, acc_max_mps2: float, gyro_max_dps: float) -> FloatArray:
    """The constant biases (acc xyz m/s^2, gyro xyz deg/s) of a simulated IMU, uniform within
    +-max per axis, drawn from the seed (the same draws every time)."""
    rng = device_rng(seed, device_id, "imu.bias")
    return np.concatenate(
        [rng.uniform(-acc_max_mps2, acc_max_mps2, 3), rng.uniform(-gyro_max_dps, gyro_max_dps, 3)]
    )


def imu_truth_errors(
    device_id: str, seed: int, acc_max_mps2: float, gyro_max_dps: float, mount_deg: Rpy
) -> dict[str, Any]:
    bias = imu_bias(device_id, seed, acc_max_mps2, gyro_max_dps)
    return {
        "acc_bias_mps2": bias[:3].tolist(),
        "gyro_bias_dps": bias[3:].tolist(),
        "mount_rotation_deg": list(mount_deg),
        # sensor axes (columns) in the platform / segment frame: sensor = M.T @ frame
        "mount_rotation_matrix": rpy_matrix(*mount_deg).tolist(),
    }


def mount_rotate(signal: FloatArray, mount_deg: Rpy) -> FloatArray:
    """(n, 6) frame-axes specific force and rate as the rotated sensor reads them."""
    if mount_deg == (0.0, 0.0, 0.0):
        return signal
    m = rpy_matrix(*mount_deg)
    out = np.empty_like(signal)
    out[:, :3] = signal[:, :3] @ m
    out[:, 3:] = signal[:, 3:] @ m
    return out


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
    delay_s = opt.trigger_delay_ms / 1000.0
    seed = opt.scenario.seed
    bias = imu_bias(device_id, seed, opt.acc_bias_mps2, opt.gyro_bias_dps)
    noise_rng = device_rng(seed, device_id, "imu.noise")
    tilt = opt.scenario.kind == "tilt"
    trig_stream = device.streams[0]
    if scenario.trigger_grid is None:

        def on_trigger_grid(t_s: float) -> float:
            return trig_stream.time_of(trig_stream.index_at(t_s))

        scenario.trigger_grid = on_trigger_grid

    def trigger(n0: int, t: FloatArray) -> FloatArray:
        out = np.zeros((t.shape[0], 1))
        t0, t1 = float(t[0]), float(t[-1])
        edges = [tr.t_s for tr in scenario.trials_between(t0 - pulse_s - delay_s, t1, device.sink)]
        # the edge is the first sample at or after the event plus the delay (the trigger's
        # own sample when the trigger is on this grid and there is no delay); 1 ns of slack
        # absorbs float rounding
        for t_event in edges:
            on = t_event + delay_s - 1e-9
            out[(t >= on) & (t < on + pulse_s), 0] = 1.0
        for t_out, length_s in device.output_pulses:
            on = t_out + delay_s - 1e-9
            if on <= t1 and on + length_s > t0:
                out[(t >= on) & (t < on + length_s), 0] = 1.0
        return out

    def platform_signal(t: FloatArray) -> FloatArray:
        """Specific force and rate of the platform surface (n, 6), platform axes."""
        sig = np.zeros((t.shape[0], 6))
        sig[:, 2] = G_MPS2
        trials = scenario.active_trials(float(t[0]), float(t[-1]), device.sink)
        if not trials:
            return sig
        pos, vel, acc = scenario.platform_motion(trials, t)
        if tilt:
            sig[:, 0] = -G_MPS2 * np.sin(pos[:, 0])
            sig[:, 1] = -G_MPS2 * np.sin(pos[:, 1])
            sig[:, 2] = G_MPS2 * np.cos(pos[:, 0]) * np.cos(pos[:, 1])
            sig[:, 3] = -np.degrees(vel[:, 1])
            sig[:, 4] = np.degrees(vel[:, 0])
        else:
            sig[:, 0] = acc[:, 0]
            sig[:, 1] = acc[:, 1]
        return sig

    def imu(n0: int, t: FloatArray) -> FloatArray:
        n = t.shape[0]
        out = imu_noise(noise_rng, n, opt.acc_noise_rms_mps2, opt.gyro_noise_rms_dps)
        out += bias
        bench = scenario.bench
        sig = platform_signal(t)
        if bench is not None:
            for i0, i1, motion in bench.states_at(device_id, "imu", t):
                if isinstance(motion, ImuMotion):
                    # the bench moves the platform frame; a trial drawn before calibration
                    # mode still finishes its motion on top
                    sig[i0:i1] += motion.signal(t[i0:i1])
                    sig[i0:i1, 2] -= G_MPS2
        out += mount_rotate(sig, opt.mount_rotation_deg)
        return out

    return [trigger, imu]
