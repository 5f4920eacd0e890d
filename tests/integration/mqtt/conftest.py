"""Fixtures for tests against a real, private Mosquitto (see tests/mosquitto.py)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from nmcore.config.models import MqttConfig

_HELPER = Path(__file__).resolve().parents[2] / "mosquitto.py"
_spec = importlib.util.spec_from_file_location("nmcore_tests_mosquitto", _HELPER)
assert _spec is not None
assert _spec.loader is not None
mosquitto_helper = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mosquitto_helper
_spec.loader.exec_module(mosquitto_helper)
Mosquitto = mosquitto_helper.Mosquitto

ROOT = "nmtest"


def _need_mosquitto() -> None:
    if not mosquitto_helper.mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A fresh private broker (no persistence) for this test."""
    _need_mosquitto()
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def mosquitto_cls() -> Any:
    """The Mosquitto helper class, for tests that control the broker's life themselves."""
    _need_mosquitto()
    return Mosquitto


@pytest.fixture
def station(request: pytest.FixtureRequest) -> str:
    """A station id unique to this test, so retained messages never leak between tests."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _mqtt_config(broker: Any, **overrides: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "root": ROOT,
        "keepalive_s": 5,
        "publish_timeout_s": 2.0,
    }
    base.update(overrides)
    return MqttConfig(**base)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass
class Collector:
    """Messages a test subscriber received, with a way to wait for a condition."""

    messages: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout_s: float = 5.0
    ) -> list[Received]:
        async with asyncio.timeout(timeout_s):
            while not predicate(self.messages):
                self.changed.clear()
                await self.changed.wait()
        return self.messages

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]


@contextlib.asynccontextmanager
async def _subscriber(
    broker: Any,
    topics: list[str],
    *,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    qos: int = 1,
    identifier: str | None = None,
) -> AsyncIterator[tuple[aiomqtt.Client, Collector]]:
    collector = Collector()
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=protocol, identifier=identifier
    ) as c:
        for t in topics:
            await c.subscribe(t, qos=qos)

        async def pump() -> None:
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                collector.messages.append(Received(str(m.topic), m.payload, m.retain, m.properties))
                collector.changed.set()

        task = asyncio.create_task(pump())
        try:
            yield c, collector
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@pytest.fixture
def mqtt_config() -> Callable[..., MqttConfig]:
    """mqtt_config(broker, **overrides) -> MqttConfig pointing at that broker."""
    return _mqtt_config


@pytest.fixture
def subscriber() -> Callable[..., Any]:
    """async with subscriber(broker, [filters], protocol=..., qos=...) as (client, collector)"""
    return _subscriber
