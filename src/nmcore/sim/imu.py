"""A body-worn IMU (trunk, x forward, y left, z up) on the standing subject.

The trunk leans with the COM (angle = COM / COM height, small-angle pendulum): specific force
reads the horizontal acceleration at the sensor height minus g sin(lean) on x (AP) and y (ML),
g cos on z; the gyroscope reads the lean rate (+y for leaning forward, -x for leaning left).
In translation trials the body is carried by the platform, so its acceleration adds on x/y.
Postural responses start at each trial's response onset (truth record "imu_response").

The sensor may sit rotated on the segment (`mount_rotation_deg`, roll pitch yaw, see
`nmcore.sim.bench.rpy_matrix`): it reads every segment-frame vector through that rotation, with
biases (drawn from the seed, `ImuOptions.truth_errors`) and noise in its own axes. In
calibration mode (a `Bench` installed) the IMU lies still and level on the bench until the
bench's actions move it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.model import StreamDescriptor, StreamKind
from nmcore.sim.base import IMU_CHANNELS, stream_descriptor
from nmcore.sim.bench import ImuMotion
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.platform import Rpy, imu_bias, imu_noise, imu_truth_errors, mount_rotate
from nmcore.sim.scenario import G_MPS2, device_rng

__all__ = ["ImuOptions", "imu_generators", "imu_streams"]

FloatArray = npt.NDArray[np.float64]


class ImuOptions(SimDeviceOptions):
    rate_hz: float = Field(1000.0, gt=0.0, le=20_000.0)
    sensor_height_m: float = Field(1.0, gt=0.0, le=2.2, description="above the ankles")
    acc_noise_rms_mps2: float = Field(0.03, ge=0.0, le=5.0)
    gyro_noise_rms_dps: float = Field(0.15, ge=0.0, le=50.0)
    acc_bias_mps2: float = Field(0.08, ge=0.0, le=5.0, description="max |bias| per axis")
    gyro_bias_dps: float = Field(0.5, ge=0.0, le=50.0, description="max |bias| per axis")
    mount_rotation_deg: Rpy = Field(
        (0.0, 0.0, 0.0), description="roll, pitch, yaw of the sensor on the segment"
    )
    clock: ClockOptions = ClockOptions(drift_ppm=35.0, offset_s=1234.5)
    transport: TransportOptions = TransportOptions(kind="ble")

    def truth_errors(self, device_id: str) -> dict[str, Any]:
        return imu_truth_errors(
            device_id,
            self.scenario.seed,
            self.acc_bias_mps2,
            self.gyro_bias_dps,
            self.mount_rotation_deg,
        )


def imu_streams(device_id: str, options: ImuOptions) -> list[StreamDescriptor]:
    """`<id>.imu`: acc xyz (m/s^2), gyro xyz (deg/s)."""
    return [
        stream_descriptor(device_id, "imu", StreamKind.IMU, options.rate_hz, IMU_CHANNELS, options)
    ]


def imu_generators(device_id: str, opt: ImuOptions, device: SimDevice) -> list[Generator]:
    """The generator of `imu_streams`' one stream."""
    scenario = device.scenario
    sid = device.streams[0].desc.stream_id
    h_com = scenario.options.body.com_height_m
    lever = opt.sensor_height_m / h_com
    seed = opt.scenario.seed
    bias = imu_bias(device_id, seed, opt.acc_bias_mps2, opt.gyro_bias_dps)
    noise_rng = device_rng(seed, device_id, "imu.noise")
    translation = scenario.options.kind == "translation"
    state: dict[str, Any] = {"next_trial": 0}

    def body_signal(t: FloatArray) -> FloatArray:
        """Specific force and rate of the trunk segment (n, 6), segment axes."""
        pos, vel, acc, trials = scenario.body_com(t, device.sink)
        for tr in trials:
            if tr.index < state["next_trial"]:
                continue
            state["next_trial"] = tr.index + 1
            if tr.response_onset_t_s >= t[0]:
                device.record(
                    {
                        "type": "imu_response",
                        "device_id": device_id,
                        "stream_id": sid,
                        "trial": tr.index,
                        "t_s": tr.response_onset_t_s,
                        "latency_ms": (tr.response_onset_t_s - tr.motion_onset_t_s) * 1000.0,
                    }
                )
        lean = pos / h_com
        sig = np.empty((t.shape[0], 6))
        sig[:, 0] = lever * acc[:, 0] - G_MPS2 * np.sin(lean[:, 0])
        sig[:, 1] = lever * acc[:, 1] - G_MPS2 * np.sin(lean[:, 1])
        sig[:, 2] = G_MPS2 * np.cos(lean[:, 0]) * np.cos(lean[:, 1])
        sig[:, 3] = -np.degrees(vel[:, 1] / h_com)
        sig[:, 4] = np.degrees(vel[:, 0] / h_com)
        sig[:, 5] = 0.0
        if translation and trials:
            _p, _v, plat_acc = scenario.platform_motion(trials, t)
            sig[:, 0] += plat_acc[:, 0]
            sig[:, 1] += plat_acc[:, 1]
        return sig

    def generate(n0: int, t: FloatArray) -> FloatArray:
        n = t.shape[0]
        out = imu_noise(noise_rng, n, opt.acc_noise_rms_mps2, opt.gyro_noise_rms_dps)
        out += bias
        bench = scenario.bench
        if bench is None:
            sig = body_signal(t)
        else:
            # on the subject before calibration mode, on the bench after
            sig = np.empty((n, 6))
            for i0, i1, motion in bench.states_at(device_id, "imu", t):
                if isinstance(motion, ImuMotion):
                    sig[i0:i1] = motion.signal(t[i0:i1])
                else:
                    sig[i0:i1] = body_signal(t[i0:i1])
        out += mount_rotate(sig, opt.mount_rotation_deg)
        return out

    return [generate]
