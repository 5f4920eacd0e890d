"""The driver side of every simulated device: option validation, the shared scenario, the
open/close/blocks life cycle and pacing on the context's clock. Device classes add their
streams (`_descriptors`) and signal generators (`_generators`)."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import AsyncGenerator, Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ValidationError

from nmcore.driver import DriverContext, StreamSession
from nmcore.errors import ConfigError, DeviceError, DeviceGoneError
from nmcore.hostclock import Cancellable, TimerClock
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.sim.bench import Bench, fire_loopback
from nmcore.sim.device import (
    Generator,
    SimDevice,
    SimDeviceOptions,
    check_transport,
    device_key,
)
from nmcore.sim.scenario import Body, BodyOptions, Scenario

__all__ = ["IMU_CHANNELS", "SimDriverBase", "device_key", "stream_descriptor"]

IMU_CHANNELS = (
    ChannelSpec("acc_x", "m/s^2"),
    ChannelSpec("acc_y", "m/s^2"),
    ChannelSpec("acc_z", "m/s^2"),
    ChannelSpec("gyro_x", "deg/s"),
    ChannelSpec("gyro_y", "deg/s"),
    ChannelSpec("gyro_z", "deg/s"),
)


def stream_descriptor(
    device_id: str,
    name: str,
    kind: StreamKind,
    rate_hz: float,
    channels: Sequence[ChannelSpec],
    options: SimDeviceOptions,
) -> StreamDescriptor:
    clk = options.clock
    return StreamDescriptor(
        stream_id=f"{device_id}.{name}",
        device_id=device_id,
        kind=kind,
        rate_hz=rate_hz,
        channels=tuple(channels),
        counter_bits=clk.counter_bits,
        timestamp_hz=clk.timestamp_hz,
        timestamp_bits=clk.timestamp_bits if clk.timestamp_hz > 0 else 64,
    )


def _field_names(model: type[BaseModel]) -> list[str]:
    """Every option name of `model` and its sub-models (for did-you-mean hints)."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        names.append(name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names += _field_names(ann)
    return names


class SimDriverBase:
    """A simulated device driver (see `nmcore.driver.Driver`)."""

    Options: ClassVar[type[SimDeviceOptions]] = SimDeviceOptions

    def __init__(
        self, device_id: str, options: dict[str, Any] | SimDeviceOptions, ctx: DriverContext
    ) -> None:
        self.device_id = device_id
        self.options = self._validate(device_id, options)
        self.ctx = ctx
        self._streams = self._descriptors(device_id, self.options)
        check_transport(device_id, self.options.transport, self._streams)
        self._open = False
        self._gone = False

    # -- description -------------------------------------------------------------------------
    @classmethod
    def _validate(cls, device_id: str, options: Any) -> Any:
        if isinstance(options, cls.Options):
            return options
        try:
            return cls.Options.model_validate(options or {})
        except ValidationError as exc:
            names = _field_names(cls.Options)
            problems = []
            for err in exc.errors():
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1)
                    msg += f"; did you mean {close[0]!r}?" if close else ""
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"devices.{device_id}.options.{loc}: {msg}")
            raise ConfigError(
                f"invalid options for simulated device {device_id!r}", problems
            ) from exc

    @classmethod
    def describe(
        cls, device_id: str, options: dict[str, Any] | SimDeviceOptions
    ) -> list[StreamDescriptor]:
        """The streams this device would announce (no I/O)."""
        return cls._descriptors(device_id, cls._validate(device_id, options))

    @classmethod
    def _descriptors(cls, device_id: str, options: Any) -> list[StreamDescriptor]:
        """The device's streams (subclasses: call the model's `*_streams`)."""
        raise NotImplementedError

    def _generators(self, device: SimDevice) -> list[Generator]:
        """One generator per stream, in the order of `_descriptors` (subclasses: call the
        model's `*_generators`)."""
        raise NotImplementedError

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return self._streams

    @property
    def device(self) -> SimDevice | None:
        """The running simulated device (None before the first open)."""
        dev = self.ctx.shared.get(device_key(self.device_id))
        return dev if isinstance(dev, SimDevice) else None

    @property
    def scenario(self) -> Scenario | None:
        dev = self.device
        return dev.scenario if dev is not None else None

    def warm(self) -> None:
        """Compile the body model's kernel before the daemon says it is ready."""
        body = Body(BodyOptions(), np.random.default_rng(0), 0.0)
        body.sway(np.linspace(0.0, 0.01, 8))

    # -- life cycle --------------------------------------------------------------------------
    async def open(self) -> None:
        now_s = self.ctx.clock.now()
        dev = self.device
        if dev is None:
            scenario = Scenario.shared(
                self.ctx.shared, self.options.scenario, now_s, self.device_id
            )
            bench = Bench.of(self.ctx.shared)
            if bench is not None:
                bench.attach(scenario)  # installed before the first device opened
            dev = SimDevice(
                self.device_id, self.options, self._streams, scenario, now_s, self.ctx.truth
            )
            for stream, gen in zip(dev.streams, self._generators(dev), strict=True):
                stream.gen = gen
            self.ctx.shared[device_key(self.device_id)] = dev
        else:
            # a device found again keeps its own sink: the runtime may have replaced ctx
            dev.sink = self.ctx.truth
            end_s = dev.link_down_until(now_s)
            if end_s is not None:
                raise DeviceGoneError(
                    f"not reachable (simulated outage, back in {end_s - now_s:.2f} s)",
                    self.device_id,
                )
            dev.reconnect(now_s)
        self._open = True
        self._gone = False

    def _streaming_device(self) -> SimDevice:
        dev = self.device
        if dev is None or not self._open:
            raise DeviceGoneError("blocks() before open()", self.device_id)
        if self._gone:
            raise DeviceGoneError("link lost; close and open again", self.device_id)
        return dev

    @staticmethod
    def _next_wake(dev: SimDevice) -> tuple[float, tuple[float, float] | None]:
        """When the device next needs the loop: its next delivery, or the start of an outage
        that comes first (then the outage, else None)."""
        t_ev = dev.next_event_s()
        outage = dev.next_outage(dev.last_t_s) if dev.has_outages else None
        if outage is not None and outage[0] <= t_ev:
            return outage[0], outage
        return t_ev, None

    def _lose_link(self, dev: SimDevice, outage: tuple[float, float]) -> DeviceGoneError:
        dev.record_outage(*outage)
        self._gone = True
        return DeviceGoneError(
            "link lost (simulated outage); the supervisor should reconnect", self.device_id
        )

    async def blocks(self) -> AsyncGenerator[SampleBlock, None]:
        dev = self._streaming_device()
        clock = self.ctx.clock
        while self._open:
            t_s, outage = self._next_wake(dev)
            await clock.sleep_until(t_s)
            if not self._open:
                return
            if outage is not None:
                raise self._lose_link(dev, outage)
            for block in dev.advance(t_s):
                yield block

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        """`blocks()` handed to `on_block` from clock callbacks, until the link is lost
        (`DeviceGoneError`) or the driver closed: one pass of the event loop per delivery
        instead of a timer pass and a task pass. An exception from `on_block` ends the
        stream with it."""
        dev = self._streaming_device()
        clock = self.ctx.clock
        if not isinstance(clock, TimerClock):  # a clock without callbacks: pace a task
            async with contextlib.aclosing(self.blocks()) as blocks:
                async for block in blocks:
                    on_block(block)
            return
        session = StreamSession()
        timer: Cancellable | None = None

        def wake(t_s: float, outage: tuple[float, float] | None) -> None:
            nonlocal timer
            if not self._open:
                session.end()
            elif outage is not None:
                session.fail(self._lose_link(dev, outage))
            else:
                for block in dev.advance(t_s):
                    on_block(block)
                t_next, outage_next = self._next_wake(dev)
                timer = clock.call_at(t_next, partial(guarded, t_next, outage_next))

        guarded = session.guard(wake)
        t_first, outage_first = self._next_wake(dev)
        timer = clock.call_at(t_first, partial(guarded, t_first, outage_first))
        try:
            await session.wait()
        finally:
            timer.cancel()

    async def close(self) -> None:
        self._open = False

    # -- calibration -------------------------------------------------------------------------
    def truth_errors(self) -> dict[str, Any]:
        """The device's true sensor errors (offsets, gains, biases drawn from the seed, mount
        rotation, trigger delay): what a calibration should recover. No I/O."""
        return dict(self.options.truth_errors(self.device_id))

    async def loopback_trigger(self, pulse_s: float) -> int:
        """Raise the trigger output for `pulse_s` (wired back to the trigger input) and return
        the raw device ticks (modulo 2**timestamp_bits) at which it went high, once it has.
        The input shows the edge `trigger_delay_ms` later, on the first trigger sample at or
        after it. Only devices with a trigger stream and a timestamp clock (sim.platform)."""
        dev = self.device
        if dev is None or not self._open:
            raise DeviceGoneError("open the device before a loopback test", self.device_id)
        if self.options.clock.timestamp_hz <= 0:
            raise DeviceError(
                "has no timestamp clock (timestamp_hz = 0) to report the edge in; set "
                "clock.timestamp_hz",
                self.device_id,
            )
        edge = fire_loopback(dev, self.ctx.clock.now(), pulse_s, 0.0)
        bench = Bench.of(self.ctx.shared)
        if bench is not None:
            bench.note_loopback(edge)
        await self.ctx.clock.sleep_until(edge.t_s)
        assert edge.device_ticks is not None
        return edge.device_ticks
