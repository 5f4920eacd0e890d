"""StreamSession: how a driver's callback-driven `stream()` ends."""

from __future__ import annotations

import asyncio

import pytest

from nmcore.driver import StreamSession
from nmcore.errors import DeviceGoneError


async def test_guarded_callbacks_run_until_the_session_ends() -> None:
    session = StreamSession()
    seen: list[int] = []
    on_item = session.guard(seen.append)
    on_item(1)
    on_item(2)
    assert not session.ended
    session.end()
    on_item(3)  # after the end: ignored
    await session.wait()
    assert seen == [1, 2]


async def test_an_exception_in_a_callback_ends_the_session_with_it() -> None:
    session = StreamSession()
    calls: list[str] = []

    def on_item(x: str) -> None:
        calls.append(x)
        if x == "bad":
            raise KeyError("a bug downstream")

    guarded = session.guard(on_item)
    guarded("ok")
    guarded("bad")  # does not raise into the caller (a transport's callback)
    guarded("after")
    assert calls == ["ok", "bad"]
    with pytest.raises(KeyError):
        await session.wait()


async def test_the_first_failure_wins() -> None:
    session = StreamSession()
    waiter = asyncio.create_task(session.wait())
    session.fail(DeviceGoneError("unplugged", "d"))
    session.fail(RuntimeError("later"))
    session.end()
    with pytest.raises(DeviceGoneError, match="unplugged"):
        await waiter
