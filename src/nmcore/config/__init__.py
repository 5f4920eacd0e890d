"""Station configuration: pydantic models, TOML loading, field-path error messages."""

from nmcore.config.load import load_station, validate_station
from nmcore.config.models import (
    BufferConfig,
    DetectorsConfig,
    DeviceConfig,
    MqttConfig,
    RecordingConfig,
    StationConfig,
    StreamConfig,
    TrialConfig,
)

__all__ = [
    "BufferConfig",
    "DetectorsConfig",
    "DeviceConfig",
    "MqttConfig",
    "RecordingConfig",
    "StationConfig",
    "StreamConfig",
    "TrialConfig",
    "load_station",
    "validate_station",
]
