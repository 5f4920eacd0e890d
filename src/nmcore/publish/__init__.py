"""MQTT interface of the daemon: results, events and live data out; commands in.

The runtime needs only what is exported here; see docs/mqtt.md for the topic tree.
"""

from __future__ import annotations

from nmcore.publish.commands import (
    Arm,
    Command,
    CommandHandler,
    CommandRejected,
    GetState,
    Mark,
    SetSubject,
    StartTrial,
    StopTrial,
    Tare,
)
from nmcore.publish.mqtt import Publisher, PublisherStats
from nmcore.publish.schemas import (
    AlgorithmRef,
    ClockFigures,
    CommandReply,
    CrossCheck,
    DeviceCounters,
    DeviceEvent,
    DeviceStatusMessage,
    EventMessage,
    GapEvent,
    LandingMessage,
    LiveMessage,
    MarkEvent,
    MuscleOnset,
    OnsetEvent,
    OnsetQuality,
    PerturbationEvent,
    Provenance,
    StatusMessage,
    SwayMessage,
    TrialQuality,
    TrialResultMessage,
    messages_json_schema,
)
from nmcore.publish.topics import Topics

__all__ = [
    "AlgorithmRef",
    "Arm",
    "ClockFigures",
    "Command",
    "CommandHandler",
    "CommandRejected",
    "CommandReply",
    "CrossCheck",
    "DeviceCounters",
    "DeviceEvent",
    "DeviceStatusMessage",
    "EventMessage",
    "GapEvent",
    "GetState",
    "LandingMessage",
    "LiveMessage",
    "Mark",
    "MarkEvent",
    "MuscleOnset",
    "OnsetEvent",
    "OnsetQuality",
    "PerturbationEvent",
    "Provenance",
    "Publisher",
    "PublisherStats",
    "SetSubject",
    "StartTrial",
    "StatusMessage",
    "StopTrial",
    "SwayMessage",
    "Tare",
    "Topics",
    "TrialQuality",
    "TrialResultMessage",
    "messages_json_schema",
]
