"""Commands through a real Mosquitto: validation, handler outcomes, v5 and v3.1.1 replies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nmcore.publish import (
    Arm,
    Command,
    CommandRejected,
    GetState,
    Publisher,
    SetSubject,
    StartTrial,
    StopTrial,
    Tare,
)

ROOT = "nmtest"


class LabState:
    """A small stand-in for the runtime's command handler (a real object, not a mock)."""

    def __init__(self) -> None:
        self.trial: str | None = None
        self.subject: tuple[str, str] | None = None
        self.seen: list[Command] = []

    async def handle(self, cmd: Command) -> dict[str, Any]:
        self.seen.append(cmd)
        match cmd:
            case StartTrial():
                if self.trial is not None:
                    raise CommandRejected(f"trial {self.trial} is running; stop it first", "busy")
                self.trial = cmd.trial_id or "t1"
                return {"trial_id": self.trial}
            case StopTrial():
                if self.trial is None:
                    raise CommandRejected("no trial is running", "no_trial")
                done, self.trial = self.trial, None
                return {"stopped": done}
            case SetSubject():
                self.subject = (cmd.subject_id, cmd.session_id)
                return {"subject_id": cmd.subject_id}
            case Tare() if cmd.device_id == "boom":
                raise RuntimeError("simulated driver crash")
            case Arm() if cmd.timeout_s == 99:
                await asyncio.sleep(10)  # slower than the command timeout
                return {}
            case GetState():
                return {"trial": self.trial, "subject": list(self.subject or ())}
            case _:
                return {}


def v5_props(response_topic: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


BAD_CASES: list[tuple[str, bytes, str]] = [
    ("start_trial", b"{not json", "malformed_json"),
    ("start_trial", b"[1, 2]", "malformed_json"),
    ("launch_rocket", b"{}", "unknown_command"),
    ("set_subject", b'{"subject_id": 5, "session_id": "s1"}', "invalid_payload"),
    ("set_subject", b'{"subject_id": "../etc", "session_id": "s1"}', "invalid_payload"),
    ("start_trial", b'{"path": "/tmp/x"}', "invalid_payload"),
    ("start_trial", b'{"command": "tare"}', "invalid_payload"),
    ("mark", b'{"label": "' + b"x" * 5000 + b'"}', "payload_too_large"),
    ("stop_trial", b"{}", "no_trial"),
    ("tare", b'{"device_id": "boom"}', "internal_error"),
    ("arm", b'{"timeout_s": 99}', "timeout"),
]


async def test_every_bad_command_gets_an_error_reply_and_serving_goes_on(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    lab = LabState()
    base = f"{ROOT}/{station}"
    reply_topic = f"{base}/reply/dash-v5"
    async with (
        Publisher(
            mqtt_config(broker),
            station,
            tmp_path,
            command_handler=lab.handle,
            command_timeout_s=0.3,
        ) as pub,
        subscriber(broker, [reply_topic]) as (client, got),
    ):
        assert await pub.wait_connected(5.0)
        for i, (name, payload, _) in enumerate(BAD_CASES):
            props = v5_props(reply_topic, f"req-{i}".encode())
            await client.publish(f"{base}/cmd/{name}", payload, qos=1, properties=props)
            await got.wait_for(lambda m, n=i + 1: len(m) == n)
        replies = [(m.properties.CorrelationData, m.json()) for m in got.messages]
        for i, ((corr, body), (name, _, code)) in enumerate(zip(replies, BAD_CASES, strict=True)):
            assert corr == f"req-{i}".encode(), name
            assert body["ok"] is False, name
            assert body["error"]["code"] == code, (name, body)
            assert body["error"]["message"], name
        assert pub.stats.rejected_commands == len(BAD_CASES)
        # the publisher still serves: a good command after all that
        props = v5_props(reply_topic, b"good")
        await client.publish(
            f"{base}/cmd/set_subject",
            orjson.dumps({"subject_id": "P07", "session_id": "S2"}),
            qos=1,
            properties=props,
        )
        await got.wait_for(lambda m: len(m) == len(BAD_CASES) + 1)
        last = got.messages[-1]
        assert last.properties.CorrelationData == b"good"
        assert last.json()["ok"] is True
        assert last.json()["result"] == {"subject_id": "P07"}
        assert lab.subject == ("P07", "S2")
        assert pub.stats.commands_ok == 1
        # and the handler never saw an invalid command
        assert all(type(c).__name__ in {"StopTrial", "Tare", "Arm", "SetSubject"} for c in lab.seen)


async def test_v311_client_gets_replies_on_reply_topic_with_correlation_id(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any
) -> None:
    lab = LabState()
    base = f"{ROOT}/{station}"
    async with (
        Publisher(mqtt_config(broker), station, tmp_path, command_handler=lab.handle) as pub,
        subscriber(broker, [f"{base}/reply/#"], protocol=aiomqtt.ProtocolVersion.V311) as (
            client,
            got,
        ),
    ):
        assert await pub.wait_connected(5.0)
        cmd = {"trial_id": "T12", "reply_to": "dash-311", "correlation_id": "c-1"}
        await client.publish(f"{base}/cmd/start_trial", orjson.dumps(cmd), qos=1)
        await client.publish(
            f"{base}/cmd/start_trial", orjson.dumps(cmd | {"correlation_id": "c-2"})
        )
        bad = {"subject_id": 5, "session_id": "s", "reply_to": "dash-311", "correlation_id": "c-3"}
        await client.publish(f"{base}/cmd/set_subject", orjson.dumps(bad), qos=1)
        await got.wait_for(lambda m: len(m) == 3)
        by_corr = {m.json()["correlation_id"]: m for m in got.messages}
        assert all(m.topic == f"{base}/reply/dash-311" for m in got.messages)
        assert by_corr["c-1"].json()["ok"] is True
        assert by_corr["c-1"].json()["result"] == {"trial_id": "T12"}
        assert by_corr["c-2"].json()["error"]["code"] == "busy"
        assert by_corr["c-3"].json()["error"]["code"] == "invalid_payload"
        assert "subject_id" in by_corr["c-3"].json()["error"]["message"]
        assert lab.trial == "T12"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_response_topic_outside_reply_tree_is_not_used(
    broker: Any, station: str, tmp_path: Path, mqtt_config: Any, subscriber: Any, protocol: str
) -> None:
    lab = LabState()
    base = f"{ROOT}/{station}"
    cfg = mqtt_config(broker, protocol=protocol)
    async with (
        Publisher(cfg, station, tmp_path, command_handler=lab.handle) as pub,
        subscriber(broker, [f"{base}/reply/#", "elsewhere/#"]) as (client, got),
    ):
        assert await pub.wait_connected(5.0)
        props = v5_props("elsewhere/x", b"c")
        payload = orjson.dumps({"reply_to": "d1"})
        await client.publish(f"{base}/cmd/get_state", payload, qos=1, properties=props)
        await got.wait_for(lambda m: len(m) == 1)
        await asyncio.sleep(0.1)  # nothing more arrives
        assert [m.topic for m in got.messages] == [f"{base}/reply/d1"]
        assert got.messages[0].json()["result"] == {"trial": None, "subject": []}
        # correlation data is echoed only over MQTT v5
        assert getattr(got.messages[0].properties, "CorrelationData", None) == (
            b"c" if protocol == "5" else None
        )
