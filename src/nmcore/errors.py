"""One error root; the CLI maps each class to a stable exit code (see README, "Exit codes")."""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DeviceError",
    "DeviceGoneError",
    "NmcoreError",
    "ProtocolError",
    "PublishError",
]


class NmcoreError(Exception):
    """Root of every error nmcore raises on purpose. Messages are written for a lab technician."""

    exit_code = 1


class ConfigError(NmcoreError):
    """The station configuration is invalid. `problems` holds one line per offending field."""

    exit_code = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops restart loops

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        full = message if not self.problems else message + "\n" + "\n".join(self.problems)
        super().__init__(full)


class DeviceError(NmcoreError):
    """A device could not be opened, configured or read. `device_id` names it."""

    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, message: str, device_id: str | None = None) -> None:
        self.device_id = device_id
        super().__init__(f"{device_id}: {message}" if device_id else message)


class DeviceGoneError(DeviceError):
    """The device vanished (unplugged, out of range, link lost); the supervisor reconnects."""


class ProtocolError(NmcoreError):
    """Bytes from a device broke the wire protocol in a way the decoder cannot count and skip."""

    exit_code = 65  # EX_DATAERR


class PublishError(NmcoreError):
    """The MQTT broker refused or dropped a publish; the outbox keeps the message."""

    exit_code = 69


class CalibrationError(NmcoreError):
    """A calibration failed its quality checks and was not saved."""

    exit_code = 65
