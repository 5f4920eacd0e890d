"""Commands arriving on `<root>/<station>/cmd/<name>`: validation and dispatch (no MQTT here).

A command payload is a JSON object (at most `MAX_COMMAND_BYTES`) with the command's own fields
plus two optional routing fields for clients that cannot use MQTT v5 response topics:
- `reply_to`: a suffix; the reply goes to `<root>/<station>/reply/<reply_to>`;
- `correlation_id`: echoed in the reply so the client can match it to its request.
An MQTT v5 client sets the response-topic and correlation-data properties instead (or too).

Valid commands go to the runtime's handler (`async def handler(cmd: Command) -> dict`), which
returns a JSON-able result or raises `CommandRejected` (e.g. stop_trial with no trial running).
Every failure becomes an error reply with a stable code; nothing here raises to the caller.
No command takes a filesystem path: every name is a safe identifier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nmcore.errors import NmcoreError

__all__ = [
    "COMMAND_NAMES",
    "MAX_COMMAND_BYTES",
    "Arm",
    "Command",
    "CommandError",
    "CommandHandler",
    "CommandOutcome",
    "CommandRejected",
    "GetState",
    "Mark",
    "SetSubject",
    "StartTrial",
    "StopTrial",
    "Tare",
    "commands_json_schema",
    "dispatch_command",
    "parse_command",
]

_log = logging.getLogger(__name__)

# Commands are a few fields; 4 KiB leaves room for long labels yet caps the parse cost of
# hostile input.
MAX_COMMAND_BYTES = 4096

SafeId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="1-64 letters, digits, '_' or '-'"),
]
CorrelationId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x20-\x7e]+$")]
Label = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$", description="text")
]


class CommandRejected(NmcoreError):
    """Raised by a command handler: the command is valid but not now (wrong state, busy).
    `code` goes into the error reply; the message should say what to do instead."""

    def __init__(self, message: str, code: str = "rejected") -> None:
        self.code = code
        super().__init__(message)


class _CommandBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reply_to: SafeId | None = Field(None, description="reply on <root>/<station>/reply/<this>")
    correlation_id: CorrelationId | None = Field(None, description="echoed in the reply")


class StartTrial(_CommandBase):
    """Start a trial now (protocols whose stimulus is 'command') or open the trial window."""

    command: Literal["start_trial"] = "start_trial"
    trial_id: SafeId | None = Field(None, description="default: the runtime numbers trials")
    protocol: SafeId | None = None


class StopTrial(_CommandBase):
    command: Literal["stop_trial"] = "stop_trial"
    trial_id: SafeId | None = Field(None, description="default: the running trial")


class Arm(_CommandBase):
    """Arm the perturbation detector for the next trial."""

    command: Literal["arm"] = "arm"
    timeout_s: float | None = Field(None, gt=0, le=3600, description="disarm after this long")


class Mark(_CommandBase):
    """Put a labelled marker into the record and onto event/mark."""

    command: Literal["mark"] = "mark"
    label: Label
    note: str = Field("", max_length=512, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")


class Tare(_CommandBase):
    """Zero the force plates (all, or one device)."""

    command: Literal["tare"] = "tare"
    device_id: SafeId | None = None


class SetSubject(_CommandBase):
    command: Literal["set_subject"] = "set_subject"
    subject_id: SafeId
    session_id: SafeId


class GetState(_CommandBase):
    command: Literal["get_state"] = "get_state"


Command = Annotated[
    StartTrial | StopTrial | Arm | Mark | Tare | SetSubject | GetState,
    Field(discriminator="command"),
]
CommandHandler = Callable[[Command], Awaitable[dict[str, Any]]]

_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
COMMAND_NAMES: tuple[str, ...] = (
    "start_trial",
    "stop_trial",
    "arm",
    "mark",
    "tare",
    "set_subject",
    "get_state",
)


class CommandError(Exception):
    """A command that cannot run; `reply_to`/`correlation_id` are kept when readable so the
    error still reaches the client."""

    def __init__(
        self,
        code: str,
        message: str,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What to reply. `result` is set when ok, `error` otherwise."""

    command: str
    ok: bool
    result: dict[str, Any] | None
    error: CommandError | None
    reply_to: str | None
    correlation_id: str | None


def _routing(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """reply_to and correlation_id if they are valid, so even a bad command gets its reply."""
    reply_to = obj.get("reply_to")
    corr = obj.get("correlation_id")
    try:
        reply_ok = TypeAdapter(SafeId).validate_python(reply_to) if reply_to is not None else None
    except ValidationError:
        reply_ok = None
    try:
        corr_ok = TypeAdapter(CorrelationId).validate_python(corr) if corr is not None else None
    except ValidationError:
        corr_ok = None
    return reply_ok, corr_ok


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        field = ".".join(str(p) for p in err["loc"][1:]) or "payload"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def parse_command(name: str, payload: bytes) -> Command:
    """Validate one command; raise CommandError with a stable code and a fix-it message."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(
            "payload_too_large",
            f"command payload is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}",
        )
    try:
        obj = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError as exc:
        raise CommandError("malformed_json", f"payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("malformed_json", "payload must be a JSON object, e.g. {}")
    reply_to, corr = _routing(obj)
    if name not in COMMAND_NAMES:
        raise CommandError(
            "unknown_command",
            f"unknown command {name[:64]!r}; known: {', '.join(COMMAND_NAMES)}",
            reply_to,
            corr,
        )
    if obj.get("command", name) != name:
        raise CommandError(
            "invalid_payload",
            f"payload names command {obj.get('command')!r} but the topic says {name!r}",
            reply_to,
            corr,
        )
    try:
        return _ADAPTER.validate_python({**obj, "command": name})
    except ValidationError as exc:
        raise CommandError("invalid_payload", _describe(exc), reply_to, corr) from None


async def dispatch_command(
    name: str, payload: bytes, handler: CommandHandler, *, timeout_s: float
) -> CommandOutcome:
    """Parse, run the handler, and turn every outcome into a reply; never raises (except
    cancellation). Failures are logged here: WARNING for client errors, ERROR for a handler
    that crashed."""
    try:
        cmd = parse_command(name, payload)
    except CommandError as err:
        _log.warning("command %s refused: %s", name[:64], err)
        return CommandOutcome(name[:64], False, None, err, err.reply_to, err.correlation_id)
    try:
        async with asyncio.timeout(timeout_s):
            result = await handler(cmd)
        if not isinstance(result, dict):
            raise TypeError(f"command handler returned {type(result).__name__}, not a dict")
        orjson.dumps(result)  # fail here, not in the publisher, if it is not JSON-able
    except CommandRejected as exc:
        _log.warning("command %s rejected: %s", name, exc)
        rej = CommandError(exc.code, str(exc), cmd.reply_to, cmd.correlation_id)
        return CommandOutcome(name, False, None, rej, cmd.reply_to, cmd.correlation_id)
    except TimeoutError:
        _log.error("command %s: handler did not answer within %.1f s", name, timeout_s)
        late = CommandError("timeout", f"no answer within {timeout_s} s; retry later")
        return CommandOutcome(name, False, None, late, cmd.reply_to, cmd.correlation_id)
    except Exception:  # the daemon keeps running whatever a handler does
        _log.exception("command %s: handler failed", name)
        bug = CommandError("internal_error", "the daemon failed to run this command; see its log")
        return CommandOutcome(name, False, None, bug, cmd.reply_to, cmd.correlation_id)
    return CommandOutcome(name, True, result, None, cmd.reply_to, cmd.correlation_id)


def commands_json_schema() -> dict[str, Any]:
    """JSON Schema of each command payload, keyed by command name (topic cmd/<name>)."""
    out: dict[str, Any] = {}
    for model in (StartTrial, StopTrial, Arm, Mark, Tare, SetSubject, GetState):
        name = model.model_fields["command"].default
        out[name] = {"topic": f"<root>/<station>/cmd/{name}", "schema": model.model_json_schema()}
    return out
