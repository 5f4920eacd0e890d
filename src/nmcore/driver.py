"""The driver plugin API. Drivers live under the top-level `drivers/` folder and are found
through the `nmcore.drivers` entry-point group; the core never imports one by name.

A driver owns one device: it opens the transport, decodes frames, scales to physical units
and yields `SampleBlock`s carrying the device's raw counters and timestamps. It does not
timestamp samples on the host (the clock model does) and does not reconnect (the runtime's
supervisor does, by calling `open` again after `close`).
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, ParamSpec, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from nmcore.errors import ConfigError, NmcoreError
from nmcore.hostclock import HostClock
from nmcore.model import Event, StreamDescriptor

__all__ = [
    "ENTRY_POINT_GROUP",
    "Driver",
    "DriverContext",
    "StreamSession",
    "available_drivers",
    "load_driver",
    "validate_options",
]

ENTRY_POINT_GROUP = "nmcore.drivers"


@dataclass(slots=True)
class DriverContext:
    """What the runtime hands every driver.

    `clock`: the host clock for arrival stamps and pacing. `realtime`: False when a simulated
    device should run as fast as possible. `truth`: where simulated devices write ground truth
    (a callable taking one JSON-able dict), None when nobody asked. `emit`: device-level events
    (a trigger edge time-stamped by the device, a status report) for the runtime.
    `shared`: one dict for all drivers of a station (simulated devices keep their common
    scenario there, so every simulated device agrees on when trials happen).
    """

    clock: HostClock
    realtime: bool = True
    truth: Callable[[dict[str, Any]], None] | None = None
    emit: Callable[[Event], None] | None = None
    shared: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Driver(Protocol):
    """One device. Lifecycle: construct -> (open -> blocks... -> close)*.

    - `Options`: a pydantic model (extra="forbid") for the device's `options` table.
    - `streams`: the descriptors, known after construction (from options) and fixed.
    - `open`: connect and start streaming; raise `DeviceError` with an actionable message.
    - `blocks`: yield sample blocks until the device is gone (`DeviceGoneError`) or closed.
    - `close`: release OS resources; idempotent, never raises for a device already gone.

    Optional: `async def stream(self, on_block: Callable[[SampleBlock], None]) -> None`, the
    same blocks handed to `on_block` from the driver's own callbacks (a timer, a reader, a
    notification) instead of yielded to a task: a delivery then costs one pass of the event
    loop instead of two. Like `blocks()`, it ends when closed (returning or raising
    `DeviceGoneError`, as `blocks()` does for that driver), raises `DeviceGoneError` when the
    device is gone, and raises whatever `on_block` raised. The runtime prefers it when the
    driver's class defines it as a coroutine function.
    """

    Options: ClassVar[type[BaseModel]]
    device_id: str

    @property
    def streams(self) -> Sequence[StreamDescriptor]: ...

    async def open(self) -> None: ...

    def blocks(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


DriverFactory = Callable[[str, Any, DriverContext], Driver]

P = ParamSpec("P")


class StreamSession:
    """How a driver's `stream()` ends when its blocks come from callbacks.

    `guard(fn, late)` wraps a callback: an exception it raises (a bug downstream, in
    `on_block`) ends the session with that exception instead of going to the event loop's
    handler, which would only log it; once the session has ended (also by the awaiting task
    being cancelled) calls go to `late` (a transport queues the data again) or nowhere.
    `fail(exc)` ends it from a callback (the device gone); `end()` ends it normally;
    `await session.wait()` returns or raises accordingly. Create it in the running loop.
    """

    def __init__(self) -> None:
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def ended(self) -> bool:
        return self._done.done()

    def fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)

    def end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def guard(
        self, fn: Callable[P, None], late: Callable[P, None] | None = None
    ) -> Callable[P, None]:
        done = self._done

        def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
            if done.done():
                # the session is over but the transport has not taken the callback back yet
                # (the awaiting task runs on a later pass): `late` keeps what still arrives
                if late is not None:
                    late(*args, **kwargs)
                return
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                self.fail(exc)

        return guarded

    async def wait(self) -> None:
        await self._done


M = TypeVar("M", bound=BaseModel)


def validate_options(model: type[M], device_id: str, options: Any, what: str) -> M:
    """A driver's options as its model: an instance passes through, a mapping is validated;
    a ConfigError names every bad field as `devices.<id>.options.<path>`."""
    if isinstance(options, model):
        return options
    try:
        return model.model_validate(options or {})
    except ValidationError as exc:
        problems = [
            f"devices.{device_id}.options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"invalid options for {what} {device_id!r}", problems) from exc


def available_drivers() -> dict[str, Any]:
    """Entry points of every installed driver, by name (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_driver(name: str, *, field_path: str = "driver") -> Any:
    """The driver class registered as `name`, or a ConfigError suggesting the nearest name."""
    eps = available_drivers()
    if name not in eps:
        close = difflib.get_close_matches(name, list(eps), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(eps)) or "none installed"
        raise ConfigError(
            "invalid configuration",
            [f"{field_path}: unknown driver {name!r}{hint} (installed drivers: {known})"],
        )
    try:
        return eps[name].load()
    except Exception as exc:
        raise NmcoreError(
            f"driver {name!r} is installed but failed to load ({type(exc).__name__}: {exc}); "
            "reinstall nmcore or the package that provides it"
        ) from exc
