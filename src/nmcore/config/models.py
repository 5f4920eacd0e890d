"""Pydantic v2 models of the station file. Every model forbids unknown keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from nmcore.detect.emg import OnsetParams
from nmcore.detect.landing import LandingParams
from nmcore.detect.perturbation import MotionOnsetParams
from nmcore.detect.sway import SwayParams
from nmcore.model import StreamKind

__all__ = [
    "BufferConfig",
    "CalibrationConfig",
    "CopSwayConfig",
    "DetectorsConfig",
    "DeviceConfig",
    "EmgOnsetConfig",
    "ForceResponseConfig",
    "LandingConfig",
    "MqttConfig",
    "PerturbationConfig",
    "RecordingConfig",
    "StationConfig",
    "StationInfo",
    "StreamConfig",
    "TlsConfig",
    "TrialConfig",
]

Identifier = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, '_' or '-'")
]
StreamRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64})?$",
        description="a stream id: '<device>.<stream>'",
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationInfo(Strict):
    id: Identifier = "lab"
    name: str = ""


class DeviceConfig(Strict):
    id: Identifier
    driver: str = Field(description="an installed driver name, e.g. 'sim.emg'")
    enabled: bool = True
    options: dict[str, Any] = Field(
        default_factory=dict, description="validated against the driver's own options model"
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    silence_timeout_s: float = Field(
        2.0, gt=0, le=600, description="no data for this long and the device is declared lost"
    )
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    calibration: str | list[str] | None = Field(
        None,
        description="calibration id(s) to apply, pinned (default: the newest passing one of "
        "each kind, see [calibration])",
    )


class ChannelConfig(Strict):
    name: Identifier
    unit: str = ""


class StreamConfig(Strict):
    """A stream read from a file (analyze) rather than announced by a device."""

    id: StreamRef
    kind: StreamKind
    rate_hz: float = Field(gt=0, le=100_000)
    channels: list[ChannelConfig] = Field(min_length=1)


class BufferConfig(Strict):
    history_s: float = Field(60.0, ge=1.0, le=3600.0, description="look-back kept per stream")


class TlsConfig(Strict):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    root: str = Field("nmcore", pattern=r"^[^#+]{1,64}$")
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(15, ge=2, le=3600)
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: Path | None = Field(None, description="file whose first line is the password")
    tls: TlsConfig | None = None
    outbox_path: Path | None = Field(None, description="SQLite outbox; default in the state dir")
    outbox_max_messages: int = Field(100_000, ge=100)
    live_rate_hz: float = Field(25.0, gt=0, le=200)
    publish_timeout_s: float = Field(5.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("set either password_env or password_file, not both")
        return self

    def password(self) -> SecretStr | None:
        """The broker password from the environment or the file; never from the TOML."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return SecretStr(value)
        if self.password_file:
            return SecretStr(self.password_file.read_text().splitlines()[0])
        return None


class RecordingConfig(Strict):
    enabled: bool = False
    directory: Path = Path("var/recordings")
    flush_interval_s: float = Field(1.0, gt=0, le=1.0)
    rotate_mb: float = Field(512.0, gt=1)
    rotate_s: float = Field(3600.0, gt=10)
    min_free_mb: float = Field(500.0, ge=0)


class CalibrationConfig(Strict):
    """Where `nmcore calibrate` writes calibration files and which ones the daemon applies."""

    directory: Path | None = Field(None, description="default: <state dir>/calibration")
    apply: Literal["latest", "pinned", "none"] = Field(
        "latest",
        description="latest: the newest passing file per device and kind (a device's pinned "
        "ids win); pinned: only the ids given in devices[].calibration; none: raw data",
    )
    max_age_h: float = Field(
        24.0, gt=0, description="older calibrations are flagged by `calibrate check` and logged"
    )
    g_mps2: float = Field(9.80665, gt=9.7, lt=9.9, description="local gravity for mass steps")


class PerturbationConfig(Strict):
    """Where the perturbation (or stimulus) onset comes from. The configured `source` defines
    the trial's time zero; the other configured streams cross-check it."""

    source: Literal["trigger", "imu", "forceplate"] = "trigger"
    trigger_stream: StreamRef | None = None
    trigger_channel: str = "trigger"
    trigger_threshold: float = Field(0.5, description="rising edge: first sample >= this")
    imu_stream: StreamRef | None = None
    imu_channels: list[str] | None = Field(None, description="default: every channel")
    force_stream: StreamRef | None = None
    force_channels: list[str] = Field(default_factory=lambda: ["Fx", "Fy"])
    refractory_s: float = Field(1.0, ge=0, description="a new perturbation no sooner than this")
    onset: MotionOnsetParams = MotionOnsetParams()

    @model_validator(mode="after")
    def _source_stream_given(self) -> PerturbationConfig:
        needed = {
            "trigger": self.trigger_stream,
            "imu": self.imu_stream,
            "forceplate": self.force_stream,
        }[self.source]
        if needed is None:
            field = {
                "trigger": "trigger_stream",
                "imu": "imu_stream",
                "forceplate": "force_stream",
            }[self.source]
            raise ValueError(f"source = {self.source!r} needs {field}")
        return self


class EmgOnsetConfig(Strict):
    stream: StreamRef
    channels: list[str] | None = Field(None, description="default: every channel")
    params: OnsetParams = OnsetParams()


class ForceResponseConfig(Strict):
    """Force/movement onset after the stimulus: motor time and postural response latency."""

    stream: StreamRef
    channels: list[str] = Field(default_factory=lambda: ["Fx", "Fy", "Mx", "My"])
    params: MotionOnsetParams = MotionOnsetParams(baseline="linear", alarm_highpass_hz=2.0)


class CopSwayConfig(Strict):
    stream: StreamRef
    input: Literal["six_axis", "cop", "load_cells"] = "six_axis"
    channels: list[str] | None = Field(
        None,
        description="six_axis: Fx Fy Fz Mx My (Mz unused); cop: x y [Fz]; load_cells: 4 cells",
    )
    dz_m: float = Field(0.0, description="plate surface above the sensor origin (m)")
    min_fz_n: float = Field(50.0, ge=0, description="frames below this are off-plate: excluded")
    window_s: float = Field(30.0, gt=1)
    update_every_s: float = Field(1.0, gt=0)
    whole_record: bool = Field(True, description="analyze: also measure the whole record")
    params: SwayParams = SwayParams()


class LandingConfig(Strict):
    stream: StreamRef
    channel: str = "Fz"
    params: LandingParams = LandingParams()


class DetectorsConfig(Strict):
    perturbation: PerturbationConfig | None = None
    emg_onset: EmgOnsetConfig | None = None
    force_response: ForceResponseConfig | None = None
    cop_sway: CopSwayConfig | None = None
    landing: LandingConfig | None = None


class TrialConfig(Strict):
    """How a trial closes: the response window after the stimulus (onsets outside it are not
    this trial's), and how long to wait for late streams before closing anyway."""

    response_window_ms: tuple[float, float] = (20.0, 500.0)
    close_timeout_s: float = Field(2.0, gt=0, description="wait this long for lagging streams")

    @model_validator(mode="after")
    def _windows_ordered(self) -> TrialConfig:
        lo, hi = self.response_window_ms
        if not 0 <= lo < hi:
            raise ValueError("response_window_ms must be [start, end] with 0 <= start < end")
        return self


class StationConfig(Strict):
    station: StationInfo = StationInfo()
    devices: list[DeviceConfig] = Field(default_factory=list)
    streams: list[StreamConfig] = Field(default_factory=list)
    buffer: BufferConfig = BufferConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    trial: TrialConfig = TrialConfig()
    mqtt: MqttConfig = MqttConfig()
    recording: RecordingConfig = RecordingConfig()
    calibration: CalibrationConfig = CalibrationConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> StationConfig:
        seen: set[str] = set()
        for dev in self.devices:
            if dev.id in seen:
                raise ValueError(f"device id {dev.id!r} is used twice; give each device its own id")
            seen.add(dev.id)
        return self
