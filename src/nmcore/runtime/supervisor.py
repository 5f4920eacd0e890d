"""One supervisor per device: an explicit state machine that keeps the device streaming.

disconnected -> connecting -> streaming -> (lost) -> backing_off -> connecting ...
Expected failures (`DeviceError`, a connect timeout, a silent device) lead to a capped,
jittered exponential backoff; anything else is a bug and propagates (the TaskGroup stops the
daemon with a traceback). The first failure is logged at WARNING, repeats at DEBUG.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nmcore.config.models import DeviceConfig
from nmcore.errors import DeviceError
from nmcore.hostclock import HostClock
from nmcore.model import SampleBlock

__all__ = ["Backoff", "DeviceState", "DeviceSupervisor"]

log = logging.getLogger("nmcore.runtime.supervisor")

CLOSE_TIMEOUT_S = 2.0


class DeviceState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        delay_s = min(self.max_s, self.initial_s * 2.0**self.attempt)
        self.attempt += 1
        return delay_s * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class SupervisorStats:
    connects: int = 0
    failures: int = 0
    silences: int = 0
    blocks: int = 0


class DeviceSupervisor:
    """Keeps one driver streaming; hands every block to `on_block` (synchronous, cheap)."""

    def __init__(
        self,
        cfg: DeviceConfig,
        driver: Any,
        on_block: Callable[[SampleBlock], None],
        clock: HostClock,
        on_state: Callable[[str, DeviceState, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self._on_block = on_block
        self._on_state = on_state
        self._clock = clock
        self.state = DeviceState.DISCONNECTED
        self.stats = SupervisorStats()
        self._backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s)
        self._warned = False

    def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is self.state:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(self.cfg.id, state, reason)

    async def run(self) -> None:
        try:
            while True:
                reason = await self._one_session()
                self.stats.failures += 1
                delay_s = self._backoff.next_delay_s()
                self._set_state(DeviceState.BACKING_OFF, reason)
                level = logging.DEBUG if self._warned else logging.WARNING
                log.log(level, "%s: %s; retrying in %.1f s", self.cfg.id, reason, delay_s)
                self._warned = True
                await asyncio.sleep(delay_s)
        finally:
            self._set_state(DeviceState.STOPPED, "shutdown")

    async def _one_session(self) -> str:
        """Connect and stream until the device fails; return why it stopped."""
        self._set_state(DeviceState.CONNECTING)
        try:
            try:
                async with asyncio.timeout(self.cfg.connect_timeout_s):
                    await self.driver.open()
            except TimeoutError:
                return f"no answer within {self.cfg.connect_timeout_s:g} s while connecting"
            except DeviceError as exc:
                return str(exc)
            self.stats.connects += 1
            self._set_state(DeviceState.STREAMING)
            if self._warned:
                log.info("%s: streaming again", self.cfg.id)
            self._warned = False
            return await self._pump()
        finally:
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        # bounded, so a wedged device cannot hold up shutdown (SIGTERM must finish in 5 s)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.driver.close()
        except DeviceError as exc:
            log.debug("%s: close: %s", self.cfg.id, exc)
        except TimeoutError:
            log.warning("%s: did not close within %.0f s", self.cfg.id, CLOSE_TIMEOUT_S)

    async def _pump(self) -> str:
        silence_s = self.cfg.silence_timeout_s
        loop = asyncio.get_running_loop()
        first = True
        # one watchdog per session, kept between 1x and 1.5x the timeout after the last block
        # and moved only when needed: a timeout per block cost a quarter of the daemon's CPU
        deadline = loop.time() + silence_s
        watchdog: asyncio.Timeout | None = None
        consumer_error: DeviceError | None = None

        def accept(block: SampleBlock) -> None:
            nonlocal deadline, first, consumer_error
            now = loop.time()
            if deadline - now < silence_s:
                deadline = now + 1.5 * silence_s
                assert watchdog is not None
                watchdog.reschedule(deadline)
            if first:
                self._backoff.reset()
                first = False
            self.stats.blocks += 1
            try:
                self._on_block(block)
            except DeviceError as exc:  # raised by the consumer, not the device: a bug
                consumer_error = exc
                raise

        stream = getattr(type(self.driver), "stream", None)
        blocks = None
        try:
            async with asyncio.timeout(silence_s) as watchdog:
                if inspect.iscoroutinefunction(stream):
                    # the driver calls `accept` from its own callbacks (see Driver.stream)
                    try:
                        await self.driver.stream(accept)
                    except DeviceError as exc:
                        if exc is consumer_error:
                            raise
                        return str(exc)
                    return "the device ended its stream"
                blocks = self.driver.blocks()
                return await self._pull(blocks, accept)
        except TimeoutError:
            self.stats.silences += 1
            return f"silent for more than {silence_s:g} s (watchdog)"
        finally:
            aclose = getattr(blocks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _pull(self, blocks: Any, accept: Callable[[SampleBlock], None]) -> str:
        while True:
            try:
                block = await anext(blocks)
            except StopAsyncIteration:
                return "the device ended its stream"
            except DeviceError as exc:
                return str(exc)
            accept(block)
