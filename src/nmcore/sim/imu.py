"""A body-worn IMU (trunk, x forward, y left, z up) on the standing subject.

The trunk leans with the COM (angle = COM / COM height, small-angle pendulum): specific force
reads the horizontal acceleration at the sensor height minus g sin(lean) on x (AP) and y (ML),
g cos on z; the gyroscope reads the lean rate (+y for leaning forward, -x for leaning left).
In translation trials the body is carried by the platform, so its acceleration adds on x/y.
Postural responses start at each trial's response onset (truth record "imu_response").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.model import StreamDescriptor, StreamKind
from nmcore.sim.base import IMU_CHANNELS, stream_descriptor
from nmcore.sim.device import (
    ClockOptions,
    Generator,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.platform import imu_noise
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
    clock: ClockOptions = ClockOptions(drift_ppm=35.0, offset_s=1234.5)
    transport: TransportOptions = TransportOptions(kind="ble")


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
    bias_rng = device_rng(seed, device_id, "imu.bias")
    bias = np.concatenate(
        [
            bias_rng.uniform(-opt.acc_bias_mps2, opt.acc_bias_mps2, 3),
            bias_rng.uniform(-opt.gyro_bias_dps, opt.gyro_bias_dps, 3),
        ]
    )
    noise_rng = device_rng(seed, device_id, "imu.noise")
    translation = scenario.options.kind == "translation"
    state: dict[str, Any] = {"next_trial": 0}

    def generate(n0: int, t: FloatArray) -> FloatArray:
        n = t.shape[0]
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
        out = imu_noise(noise_rng, n, opt.acc_noise_rms_mps2, opt.gyro_noise_rms_dps)
        out += bias
        out[:, 0] += lever * acc[:, 0] - G_MPS2 * np.sin(lean[:, 0])
        out[:, 1] += lever * acc[:, 1] - G_MPS2 * np.sin(lean[:, 1])
        out[:, 2] += G_MPS2 * np.cos(lean[:, 0]) * np.cos(lean[:, 1])
        out[:, 3] -= np.degrees(vel[:, 1] / h_com)
        out[:, 4] += np.degrees(vel[:, 0] / h_com)
        if translation and trials:
            _p, _v, plat_acc = scenario.platform_motion(trials, t)
            out[:, 0] += plat_acc[:, 0]
            out[:, 1] += plat_acc[:, 1]
        return out

    return [generate]
