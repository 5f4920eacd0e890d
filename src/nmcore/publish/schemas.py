"""Payload models of every MQTT message nmcore publishes (pydantic v2, JSON via orjson).

Every message carries an envelope the publisher stamps, so the runtime builds messages
without it:
- `schema_version`: bumped on any incompatible change of a payload.
- `seq`: per-publisher sequence number, strictly increasing over the life of the outbox
  database (it survives daemon restarts). Subscribers de-duplicate on (`station`, `seq`):
  QoS 1 delivers at least once, so a message can arrive twice after a reconnect. The numbers
  are shared by all topics and not contiguous (live messages and restarts use some up), so a
  gap is not a loss; losses are counted in the daemon status and in `PublisherStats`.
- `station`: the station id; `sent_s`: host monotonic seconds when the message was stamped.
- `utc`: wall-clock time of the message's `t_s` (or of stamping when it has none), for humans
  only; every computation uses the host-monotonic `*_s` times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "SCHEMA_VERSION",
    "AlgorithmRef",
    "ClockFigures",
    "CommandReply",
    "CrossCheck",
    "DeviceCounters",
    "DeviceEvent",
    "DeviceStatusMessage",
    "ErrorInfo",
    "EventMessage",
    "GapEvent",
    "LandingMessage",
    "LiveMessage",
    "MarkEvent",
    "MessageBase",
    "MuscleOnset",
    "OnsetEvent",
    "OnsetQuality",
    "PerturbationEvent",
    "Provenance",
    "StatusMessage",
    "SwayMessage",
    "TrialQuality",
    "TrialResultMessage",
    "messages_json_schema",
]

SCHEMA_VERSION = 1

Identifier = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="letters, digits, '_', '-' or '.'")
]
DaemonState = Literal["init", "ready", "degraded", "lost", "stopping", "stopped"]


class MessageBase(BaseModel):
    """The envelope; the publisher fills `seq`, `station`, `sent_s` and `utc`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    seq: int = Field(0, ge=0, description="per-publisher sequence number (stamped on publish)")
    station: str = Field("", max_length=64, description="station id (stamped on publish)")
    sent_s: float = Field(0.0, description="host monotonic s when stamped (stamped on publish)")
    utc: datetime | None = Field(
        None, description="wall-clock time of t_s, or of sending; for humans (stamped on publish)"
    )

    def event_time_s(self) -> float | None:
        """The host-monotonic time `utc` describes; None means 'now'."""
        value = getattr(self, "t_s", None)
        return float(value) if value is not None else None


# -- daemon and devices ------------------------------------------------------------------------
class StatusMessage(MessageBase):
    """`<root>/<station>/status`, retained. Homie-like: init -> ready <-> degraded -> stopping
    -> stopped; `lost` comes from the broker (the last will) when the daemon vanished."""

    state: DaemonState
    detail: str = Field("", max_length=512)
    nmcore_version: str = ""


class ClockFigures(BaseModel):
    """The clock model's view of one device (None until the model has enough data)."""

    model_config = ConfigDict(extra="forbid")

    drift_ppm: float | None = None
    offset_uncertainty_ms: float | None = Field(None, ge=0)
    arrival_jitter_ms: float | None = Field(None, ge=0)
    model_age_s: float | None = Field(None, ge=0, description="time since the last model update")


class DeviceCounters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    missing_samples: int = Field(0, ge=0)
    duplicate_samples: int = Field(0, ge=0)
    bad_crc: int = Field(0, ge=0)


class DeviceStatusMessage(MessageBase):
    """`<root>/<station>/device/<device_id>/status`, retained, published on change."""

    device_id: Identifier
    state: str = Field(
        pattern=r"^[a-z_]{1,32}$",
        description="e.g. connecting, streaming, stalled, reconnecting, lost, disabled",
    )
    t_s: float | None = Field(None, description="host monotonic s of the state change")
    clock: ClockFigures = ClockFigures()
    counters: DeviceCounters = DeviceCounters()
    battery_pct: float | None = Field(None, ge=0, le=100, description="None where unknown")
    calibration_ids: list[str] = Field(
        default_factory=list, description="calibrations the daemon applies to this device"
    )


# -- events ---------------------------------------------------------------------------------
class OnsetQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snr_db: float | None = None
    gap_in_window: bool = Field(False, description="samples were missing in the analysis window")
    clipping: bool = False
    missed: bool = Field(False, description="no onset found in the response window")


class PerturbationEvent(MessageBase):
    """`event/perturbation`: the platform moved. `t_s` = `onset_s`."""

    type: Literal["perturbation"] = "perturbation"
    t_s: float
    trial_id: Identifier | None = None
    source: str = Field(max_length=64, description="stream or trigger that detected it")
    onset_s: float
    alarm_s: float = Field(description="host monotonic s when the detector raised the alarm")
    disagreement_ms: float | None = Field(
        None, description="cross-check between two sources (e.g. trigger vs force plate)"
    )
    latency_correction_ms: float = Field(
        0.0, description="calibrated input delay already subtracted from onset_s"
    )


class OnsetEvent(MessageBase):
    """`event/onset`: one muscle's EMG onset after a stimulus. `t_s` = `onset_s`."""

    type: Literal["onset"] = "onset"
    t_s: float
    trial_id: Identifier
    stream_id: Identifier | None = None
    channel: Identifier
    onset_s: float
    alarm_s: float
    latency_ms: float
    algorithm: str = Field(max_length=64)
    algorithm_version: str = Field(max_length=32)
    params_hash: str = Field(max_length=64)
    quality: OnsetQuality = Field(default_factory=OnsetQuality)


class GapEvent(MessageBase):
    """`event/gap`: samples a device never delivered (counted, never interpolated silently)."""

    type: Literal["gap"] = "gap"
    t_s: float
    stream_id: Identifier
    first_index: int = Field(ge=0, description="stream sample index of the first missing sample")
    missing_samples: int = Field(ge=1)
    start_s: float
    end_s: float

    @model_validator(mode="after")
    def _ordered(self) -> GapEvent:
        if self.end_s < self.start_s:
            raise ValueError("end_s must not be before start_s")
        return self


class DeviceEvent(MessageBase):
    """`event/device`: a device changed state (connected, lost, reconnecting ...)."""

    type: Literal["device"] = "device"
    t_s: float
    device_id: Identifier
    state: str = Field(pattern=r"^[a-z_]{1,32}$")
    reason: str = Field("", max_length=512)


class MarkEvent(MessageBase):
    """`event/mark`: a labelled marker (from the `mark` command)."""

    type: Literal["mark"] = "mark"
    t_s: float
    label: str = Field(min_length=1, max_length=128)
    note: str = Field("", max_length=512)


EventMessage = Annotated[
    PerturbationEvent | OnsetEvent | GapEvent | DeviceEvent | MarkEvent,
    Field(discriminator="type"),
]


# -- trials and sway ---------------------------------------------------------------------------
class MuscleOnset(BaseModel):
    """One muscle in a trial. premotor = stimulus -> EMG onset; motor = EMG onset -> force or
    movement onset; latency_ms = premotor_ms unless the protocol defines it otherwise."""

    model_config = ConfigDict(extra="forbid")

    channel: Identifier
    detected: bool = True
    onset_s: float | None = None
    alarm_s: float | None = None
    latency_ms: float | None = None
    premotor_ms: float | None = None
    motor_ms: float | None = None
    peak: float | None = Field(None, description="peak of the filtered EMG, signal units")
    area: float | None = Field(None, description="envelope area over the burst, units x s")
    quality: OnsetQuality = Field(default_factory=OnsetQuality)


class AlgorithmRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    version: str = Field(max_length=32)
    params_hash: str = Field(max_length=64)


class Provenance(BaseModel):
    """Enough to reproduce a result: which code with which parameters on which devices."""

    model_config = ConfigDict(extra="forbid")

    algorithms: dict[str, AlgorithmRef] = Field(
        default_factory=dict, description="role (emg_onset, force_response, ...) -> algorithm"
    )
    nmcore_version: str
    device_ids: list[str] = Field(default_factory=list)
    calibration_ids: dict[str, str] = Field(
        default_factory=dict,
        description="stream id -> id of the calibration applied to it (`nmcore calibrate`)",
    )
    latency_corrections_ms: dict[str, float] = Field(
        default_factory=dict,
        description="stream id -> constant delay (latency calibration) subtracted from the "
        "times of its events",
    )


class CrossCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    onset_s: float
    disagreement_ms: float = Field(description="this source's onset minus the trial's stimulus")


class TrialQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gap_in_window: bool = False
    clipping: bool = False
    incomplete: bool = Field(False, description="closed before every stream had the window")
    missed: list[str] = Field(default_factory=list, description="muscles with no onset")
    rest_from_calibration: bool = Field(
        False,
        description="no pre-stimulus rest window: EMG rest statistics came from the calibration",
    )


class TrialResultMessage(MessageBase):
    """`trial/result`: everything measured in one trial. `t_s` = `stimulus_s`."""

    type: Literal["trial_result"] = "trial_result"
    t_s: float
    trial_id: Identifier
    protocol: str = Field(max_length=64)
    subject_id: str | None = Field(None, max_length=64)
    session_id: str | None = Field(None, max_length=64)
    stimulus_source: str = Field("", max_length=64)
    stimulus_s: float
    onsets: list[MuscleOnset]
    force_onset_s: float | None = None
    postural_latency_ms: float | None = Field(
        None, description="stimulus -> force-plate (postural) response onset"
    )
    cross_check: dict[str, CrossCheck] = Field(default_factory=dict)
    quality: TrialQuality = TrialQuality()
    provenance: Provenance


class SwayMessage(MessageBase):
    """`sway`: centre-of-pressure measures (Prieto et al. 1996 names, see `units`) over one
    window ending at `t_s`; the preprocessing is echoed in `params`."""

    type: Literal["sway"] = "sway"
    t_s: float
    stream_id: Identifier
    trial_id: str | None = Field(None, max_length=64)
    window_s: float = Field(gt=0)
    status: str = Field("ok", max_length=32)
    n_samples: int = Field(0, ge=0)
    n_excluded: int = Field(0, ge=0, description="frames off the plate or missing")
    measures: dict[str, float | None] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None


class LandingMessage(MessageBase):
    """`landing`: one hop landing; `status` other than "ok" (e.g. "stepped_off") means the
    measures that need the window are null, not numbers."""

    type: Literal["landing"] = "landing"
    t_s: float
    stream_id: Identifier
    status: str = Field(max_length=32)
    measures: dict[str, float | None] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="why a measure is null")
    params: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None


# -- live and replies ---------------------------------------------------------------------------
class LiveMessage(MessageBase):
    """`live/<stream_id>`: one decimated block for dashboards. `values[i]` holds channel i's
    samples at `t0_s + k / rate_hz`; a missing sample is null."""

    stream_id: Identifier
    t0_s: float
    rate_hz: float = Field(gt=0)
    channels: list[str]
    values: list[list[float | None]]

    @model_validator(mode="after")
    def _shape(self) -> LiveMessage:
        if len(self.values) != len(self.channels):
            raise ValueError(
                f"values has {len(self.values)} lists but channels names {len(self.channels)}:"
                " give one list of samples per channel"
            )
        if len({len(v) for v in self.values}) > 1:
            raise ValueError("every channel's value list must have the same length")
        return self

    def event_time_s(self) -> float | None:
        return self.t0_s


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="stable machine-readable code, e.g. invalid_payload")
    message: str = Field(description="what was wrong and how to fix it")


class CommandReply(MessageBase):
    """Reply to a command, on the v5 response topic and/or `reply/<reply_to>`."""

    command: str = Field(max_length=64)
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    correlation_id: str | None = Field(None, max_length=128)


# topic pattern, QoS, retained, model: the table docs/mqtt.md describes
_CATALOGUE: tuple[tuple[str, str, int, bool, Any], ...] = (
    ("StatusMessage", "<root>/<station>/status", 1, True, StatusMessage),
    ("DeviceStatusMessage", "<root>/<station>/device/<device_id>/status", 1, True,
     DeviceStatusMessage),
    ("EventMessage", "<root>/<station>/event/<type>", 1, False, TypeAdapter(EventMessage)),
    ("TrialResultMessage", "<root>/<station>/trial/result", 1, False, TrialResultMessage),
    ("SwayMessage", "<root>/<station>/sway", 1, False, SwayMessage),
    ("LandingMessage", "<root>/<station>/landing", 1, False, LandingMessage),
    ("LiveMessage", "<root>/<station>/live/<stream_id>", 0, False, LiveMessage),
    ("CommandReply", "<v5 response topic> | <root>/<station>/reply/<reply_to>", 1, False,
     CommandReply),
)  # fmt: skip


def messages_json_schema() -> dict[str, Any]:
    """JSON Schemas of every message published and every command accepted."""
    from nmcore.publish.commands import (
        commands_json_schema,
    )  # here: commands must not import schemas

    messages: dict[str, Any] = {}
    for name, topic, qos, retain, model in _CATALOGUE:
        schema = (
            model.json_schema() if isinstance(model, TypeAdapter) else model.model_json_schema()
        )
        messages[name] = {"topic": topic, "qos": qos, "retain": retain, "schema": schema}
    return {
        "title": "nmcore MQTT messages",
        "schema_version": SCHEMA_VERSION,
        "messages": messages,
        "commands": commands_json_schema(),
    }
