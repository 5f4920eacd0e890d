"""Message models: strictness, shapes, JSON round trips, the exported JSON Schemas."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from nmcore.publish.schemas import (
    AlgorithmRef,
    CommandReply,
    DeviceStatusMessage,
    EventMessage,
    GapEvent,
    LiveMessage,
    MarkEvent,
    MuscleOnset,
    OnsetEvent,
    PerturbationEvent,
    Provenance,
    StatusMessage,
    SwayMessage,
    TrialResultMessage,
    messages_json_schema,
)


def test_unknown_fields_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="latency_sec"):
        MuscleOnset(channel="TA", latency_sec=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="colour"):
        StatusMessage.model_validate({"state": "ready", "colour": "red"})


def test_event_union_picks_the_model_by_type() -> None:
    adapter: TypeAdapter[EventMessage] = TypeAdapter(EventMessage)
    gap = adapter.validate_python(
        {"type": "gap", "t_s": 1, "stream_id": "a.b", "first_index": 3, "missing_samples": 2,
         "start_s": 1.0, "end_s": 1.01}
    )  # fmt: skip
    assert isinstance(gap, GapEvent)
    mark = adapter.validate_python({"type": "mark", "t_s": 2, "label": "eyes closed"})
    assert isinstance(mark, MarkEvent)
    with pytest.raises(ValidationError, match="tag"):
        adapter.validate_python({"type": "explosion", "t_s": 1})


def test_gap_end_before_start_is_refused() -> None:
    with pytest.raises(ValidationError, match="end_s"):
        GapEvent(t_s=1, stream_id="s", first_index=0, missing_samples=1, start_s=2, end_s=1)


def test_live_message_shape_is_checked_with_a_fix() -> None:
    with pytest.raises(ValidationError, match="one list of samples per channel"):
        LiveMessage(stream_id="s", t0_s=0, rate_hz=10, channels=["a", "b"], values=[[1.0]])
    with pytest.raises(ValidationError, match="same length"):
        LiveMessage(stream_id="s", t0_s=0, rate_hz=10, channels=["a", "b"], values=[[1.0], []])


def test_identifiers_cannot_become_topic_or_path_tricks() -> None:
    with pytest.raises(ValidationError, match="device_id"):
        DeviceStatusMessage(device_id="emg/../x", state="streaming")
    with pytest.raises(ValidationError, match="state"):
        DeviceStatusMessage(device_id="emg1", state="Streaming!")


def test_json_round_trip_of_a_stamped_result() -> None:
    msg = TrialResultMessage(
        seq=7,
        station="lab1",
        sent_s=12.5,
        utc=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        t_s=10.0,
        trial_id="t1",
        protocol="perturbation",
        stimulus_s=10.0,
        onsets=[MuscleOnset(channel="TA", onset_s=10.08, latency_ms=80.0, premotor_ms=80.0,
                            motor_ms=35.0)],
        postural_latency_ms=120.0,
        provenance=Provenance(
            algorithms={"emg_onset": AlgorithmRef(name="hodges_bui", version="1",
                                                  params_hash="ab12")},
            nmcore_version="0.1.0", device_ids=["emg1"], calibration_ids={"fp": "fp-2026-01"}),
    )  # fmt: skip
    raw = orjson.dumps(msg.model_dump(), option=orjson.OPT_UTC_Z)
    body = orjson.loads(raw)
    assert body["utc"] == "2026-01-02T03:04:05.678000Z"
    assert body["schema_version"] == 1
    assert TrialResultMessage.model_validate_json(raw) == msg


def test_every_message_and_command_has_a_json_schema() -> None:
    doc = messages_json_schema()
    assert set(doc["messages"]) == {
        "StatusMessage", "DeviceStatusMessage", "EventMessage", "TrialResultMessage",
        "SwayMessage", "LandingMessage", "LiveMessage", "CommandReply",
    }  # fmt: skip
    assert set(doc["commands"]) == {
        "start_trial", "stop_trial", "arm", "mark", "tare", "set_subject", "get_state",
    }  # fmt: skip
    for entry in doc["messages"].values():
        props = entry["schema"].get("properties") or {}
        if props:  # the event union lists its variants under oneOf/$defs instead
            assert {"schema_version", "seq", "station", "sent_s", "utc"} <= set(props)
            assert entry["schema"]["additionalProperties"] is False
    event_defs = doc["messages"]["EventMessage"]["schema"]["$defs"]
    assert {"PerturbationEvent", "OnsetEvent", "GapEvent", "DeviceEvent", "MarkEvent"} <= set(
        event_defs
    )
    orjson.dumps(doc)  # serialisable as the CLI prints it


def test_other_models_construct_with_their_required_fields() -> None:
    PerturbationEvent(t_s=1, source="fp1", onset_s=1, alarm_s=1.01, disagreement_ms=0.4)
    OnsetEvent(t_s=1, trial_id="t", channel="TA", onset_s=1, alarm_s=1.02, latency_ms=80,
               algorithm="hodges-bui", algorithm_version="1", params_hash="h")  # fmt: skip
    SwayMessage(t_s=1, stream_id="fp1.cop", window_s=30, measures={"MVELO": 1.2},
                units={"MVELO": "cm/s"})  # fmt: skip
    reply = CommandReply(command="arm", ok=True, result={"armed": True}, correlation_id="c")
    assert reply.error is None
