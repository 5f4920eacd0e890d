"""Pydantic v2 models of the station file. Every model forbids unknown keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from nmcore.model import StreamKind

__all__ = [
    "BufferConfig",
    "DetectorsConfig",
    "DeviceConfig",
    "MqttConfig",
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
    calibration: str | None = Field(None, description="calibration id the daemon applies")


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


class DetectorsConfig(Strict):
    """Detector sections; each detector module owns its own parameter model (issue 4)."""

    perturbation: dict[str, Any] | None = None
    emg_onset: dict[str, Any] | None = None
    cop_sway: dict[str, Any] | None = None
    landing: dict[str, Any] | None = None


class TrialConfig(Strict):
    """A trial protocol: what starts a trial and where to look for the responses."""

    stimulus: Literal["perturbation", "trigger", "command"] = "perturbation"
    response_window_ms: tuple[float, float] = (20.0, 500.0)
    rest_window_ms: tuple[float, float] = (-500.0, -20.0)

    @model_validator(mode="after")
    def _windows_ordered(self) -> TrialConfig:
        lo, hi = self.response_window_ms
        if not 0 <= lo < hi:
            raise ValueError("response_window_ms must be [start, end] with 0 <= start < end")
        lo, hi = self.rest_window_ms
        if not lo < hi <= 0:
            raise ValueError("rest_window_ms must be [start, end] with start < end <= 0")
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

    @model_validator(mode="after")
    def _unique_ids(self) -> StationConfig:
        seen: set[str] = set()
        for dev in self.devices:
            if dev.id in seen:
                raise ValueError(f"device id {dev.id!r} is used twice; give each device its own id")
            seen.add(dev.id)
        return self
