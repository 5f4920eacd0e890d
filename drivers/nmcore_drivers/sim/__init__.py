"""The simulated lab rig: perturbation platform, EMG, force plate and body IMUs that share one
scenario (ctx.shared) and write their ground truth (ctx.truth). Signal models and the device
machinery live in `nmcore.sim`; these classes only bind them to the driver API."""

from __future__ import annotations

from nmcore.model import StreamDescriptor
from nmcore.sim.base import SimDriverBase
from nmcore.sim.device import Generator, SimDevice
from nmcore.sim.emg_device import EmgOptions, emg_generators, emg_streams
from nmcore.sim.forceplate import ForcePlateOptions, forceplate_generators, forceplate_streams
from nmcore.sim.imu import ImuOptions, imu_generators, imu_streams
from nmcore.sim.platform import PlatformOptions, platform_generators, platform_streams

__all__ = ["SimEmgDriver", "SimForcePlateDriver", "SimImuDriver", "SimPlatformDriver"]


class SimPlatformDriver(SimDriverBase):
    """`sim.platform`: `<id>.trigger` (TTL 0/1) and `<id>.imu` (platform acc + gyro)."""

    Options = PlatformOptions
    options: PlatformOptions

    @classmethod
    def _descriptors(cls, device_id: str, options: PlatformOptions) -> list[StreamDescriptor]:
        return platform_streams(device_id, options)

    def _generators(self, device: SimDevice) -> list[Generator]:
        return platform_generators(self.device_id, self.options, device)


class SimEmgDriver(SimDriverBase):
    """`sim.emg`: `<id>.emg`, N channels of surface EMG in uV."""

    Options = EmgOptions
    options: EmgOptions

    @classmethod
    def _descriptors(cls, device_id: str, options: EmgOptions) -> list[StreamDescriptor]:
        return emg_streams(device_id, options)

    def _generators(self, device: SimDevice) -> list[Generator]:
        return emg_generators(self.device_id, self.options, device)


class SimForcePlateDriver(SimDriverBase):
    """`sim.forceplate`: `<id>.force`, Fx Fy Fz (N) Mx My Mz (N.m), AMTI convention."""

    Options = ForcePlateOptions
    options: ForcePlateOptions

    @classmethod
    def _descriptors(cls, device_id: str, options: ForcePlateOptions) -> list[StreamDescriptor]:
        return forceplate_streams(device_id, options)

    def _generators(self, device: SimDevice) -> list[Generator]:
        return forceplate_generators(self.device_id, self.options, device)


class SimImuDriver(SimDriverBase):
    """`sim.imu`: `<id>.imu`, a body-worn IMU (acc m/s^2, gyro deg/s)."""

    Options = ImuOptions
    options: ImuOptions

    @classmethod
    def _descriptors(cls, device_id: str, options: ImuOptions) -> list[StreamDescriptor]:
        return imu_streams(device_id, options)

    def _generators(self, device: SimDevice) -> list[Generator]:
        return imu_generators(self.device_id, self.options, device)
