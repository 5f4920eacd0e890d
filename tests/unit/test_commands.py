"""Command parsing and dispatch without a broker: every failure becomes a coded reply."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from nmcore.publish.commands import (
    COMMAND_NAMES,
    MAX_COMMAND_BYTES,
    Command,
    CommandError,
    CommandRejected,
    Mark,
    SetSubject,
    StartTrial,
    commands_json_schema,
    dispatch_command,
    parse_command,
)


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("start_trial", b"{", "malformed_json"),
        ("start_trial", b'"text"', "malformed_json"),
        ("start_trial", b"\xff\xfe", "malformed_json"),
        ("reboot", b"{}", "unknown_command"),
        ("set_subject", b'{"subject_id": "a b", "session_id": "s"}', "invalid_payload"),
        ("set_subject", b'{"subject_id": "a"}', "invalid_payload"),
        (
            "set_subject",
            b'{"subject_id": "../../etc/passwd", "session_id": "s"}',
            "invalid_payload",
        ),
        ("arm", b'{"timeout_s": "soon"}', "invalid_payload"),
        ("arm", b'{"timeout_s": -1}', "invalid_payload"),
        ("mark", b'{"label": ""}', "invalid_payload"),
        ("mark", b'{"label": "a\\u0000b"}', "invalid_payload"),
        ("tare", b'{"device_id": "fp1", "file": "/tmp/x"}', "invalid_payload"),
        ("tare", b'{"command": "arm"}', "invalid_payload"),
        ("mark", b" " * (MAX_COMMAND_BYTES + 1), "payload_too_large"),
    ],
)
def test_bad_commands_raise_coded_errors(name: str, payload: bytes, code: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(name, payload)
    assert info.value.code == code
    assert info.value.message


def test_error_message_names_the_field() -> None:
    with pytest.raises(CommandError, match="subject_id"):
        parse_command("set_subject", b'{"subject_id": 5, "session_id": "s"}')


def test_routing_survives_an_invalid_payload() -> None:
    payload = orjson.dumps({"subject_id": 5, "reply_to": "dash1", "correlation_id": "c9"})
    with pytest.raises(CommandError) as info:
        parse_command("set_subject", payload)
    assert (info.value.reply_to, info.value.correlation_id) == ("dash1", "c9")
    # an unsafe reply_to is not used for routing
    with pytest.raises(CommandError) as info:
        parse_command("set_subject", orjson.dumps({"reply_to": "../x"}))
    assert info.value.reply_to is None


def test_valid_commands_parse_to_their_models() -> None:
    assert parse_command("start_trial", b"") == StartTrial()
    cmd = parse_command("set_subject", b'{"subject_id": "P07", "session_id": "S-2"}')
    assert isinstance(cmd, SetSubject)
    assert cmd.subject_id == "P07"
    mark = parse_command("mark", '{"label": "eyes closed – 30 s"}'.encode())
    assert isinstance(mark, Mark)
    for name in COMMAND_NAMES:
        if name not in {"mark", "set_subject"}:
            assert parse_command(name, b"{}").command == name


def test_no_command_takes_a_path() -> None:
    for entry in commands_json_schema().values():
        for field, spec in entry["schema"]["properties"].items():
            assert "path" not in field
            assert "file" not in field
            assert spec.get("format") != "path"


async def _ok(cmd: Command) -> dict[str, Any]:
    return {"command": cmd.command}


async def _reject(cmd: Command) -> dict[str, Any]:
    raise CommandRejected("no trial is running; send start_trial first", "no_trial")


async def _crash(cmd: Command) -> dict[str, Any]:
    raise ZeroDivisionError


async def _slow(cmd: Command) -> dict[str, Any]:
    await asyncio.sleep(5)
    return {}


async def _not_json(cmd: Command) -> dict[str, Any]:
    return {"when": object()}


async def test_dispatch_turns_every_outcome_into_a_reply(caplog: pytest.LogCaptureFixture) -> None:
    body = orjson.dumps({"reply_to": "d", "correlation_id": "c"})
    ok = await dispatch_command("get_state", body, _ok, timeout_s=1)
    assert (ok.ok, ok.result, ok.reply_to, ok.correlation_id) == (True, {"command": "get_state"},
                                                                   "d", "c")  # fmt: skip
    cases = [(_reject, "no_trial"), (_crash, "internal_error"), (_slow, "timeout"),
             (_not_json, "internal_error")]  # fmt: skip
    for handler, code in cases:
        out = await dispatch_command("stop_trial", body, handler, timeout_s=0.05)
        assert not out.ok
        assert out.error is not None
        assert out.error.code == code
        assert (out.reply_to, out.correlation_id) == ("d", "c")
    bad = await dispatch_command("stop_trial", b"{", _ok, timeout_s=1)
    assert bad.error is not None
    assert bad.error.code == "malformed_json"
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)  # the crash
