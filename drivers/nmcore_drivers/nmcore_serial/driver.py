"""`nmcore.serial`: the nmcore reference firmware (or any device speaking firmware/PROTOCOL.md)
over a serial port.

Session: open the port, IDENTIFY (check the protocol version, the device id if configured,
and that every configured stream exists with the configured kind, rate, channel count and
unit; take each stream's scale), then START the configured streams. A stream already running
keeps its counter (the firmware only restarts counters of stopped streams), so after a link
loss with the device still powered the runtime sees the exact number of samples missed.

Streams are declared in the options (`describe()` does no I/O and returns exactly what the
options declare); `open()` checks the device against them and raises a `DeviceError` naming
the option to fix when they differ. The defaults match the reference firmware's host build.

Reading: each serial read goes through `FrameDecoder.feed` once; consecutive packets of one
stream in a read that continue each other (counter and device clock) become one
`SampleBlock`, scaled to physical units, with the device's u32 microsecond time of its first
sample in `device_ticks` (descriptor: timestamp_hz=1e6, timestamp_bits=32; counter_bits=32).

Trigger edges: each edge is (a) an `Event("trigger_edge")` through `ctx.emit`, whose `t_s`
is the host *arrival* time (an upper bound) and whose data carry the device time
(`device_us`, raw u32) for the runtime to map through the clock model, and (b) one sample of
the trigger stream `<id>.trigger` (if `trigger` is configured): channels `level` (1 rising,
0 falling) and `line`, counter = the device's edge counter (a lost edge is a missing sample),
`device_ticks` = the edge time, so the pipeline stamps it with the clock model exactly like
any sample. The stream is not a sampled 0/1 level: its "rate" is only a bound on the edge
rate, used to size buffers; consumers read edges as irregular events with their own times.

Time sync: every `time_sync_period_s` a TIME_SYNC_PING goes out while streaming; each reply
becomes a `TimeSyncSample` (host send time, device rx/tx times, host receive time), kept in
`sync_samples` and passed to the `on_sync` callback if set. `Pipeline` does not consume them
yet; see `TimeSyncSample` for how the runtime turns one into `ClockModel.observe_sync`.

Status packets update `stats()` (battery, device-side dropped samples, buffer overruns,
bad command frames); a rise in the device's drop counters is emitted as a `device_drops`
event, and a sample packet flagged DISCONTINUITY (the device skipped samples before it) as a
`device_discontinuity` event naming the stream and counter, so a gap can be told apart from
a loss on the link. The port vanishing (unplug, pty closed) ends `blocks()` with
`DeviceGoneError`; the supervisor calls `close()` and `open()` again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nmcore.driver import DriverContext, StreamSession, validate_options
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.framing import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Packet,
    PacketFlags,
    PacketType,
    encode_command,
    encode_packet,
)
from nmcore.model import ChannelSpec, Event, SampleBlock, StreamDescriptor, StreamKind
from nmcore.transport.serial import Chunk, SerialTransport

__all__ = [
    "NmcoreSerialDriver",
    "NmcoreSerialOptions",
    "SerialStreamOptions",
    "TimeSyncSample",
    "TriggerOptions",
]

DEVICE_CLOCK_HZ = 1e6  # the protocol's device clock is in microseconds
DEVICE_CLOCK_BITS = 32
COUNTER_BITS = 32
_U32 = 1 << 32
# Pings older than this without an answer are counted lost (a reply takes < 10 ms on a
# healthy link; 5 s also covers a device busy with a multi-second backlog).
_PING_EXPIRY_S = 5.0
_STOP_TIMEOUT_S = 0.2
_SYNC_KEEP = 256  # recent exchanges kept for inspection (4 min at one per second)

_KINDS: dict[str, tuple[StreamKind, PacketType]] = {
    "emg": (StreamKind.EMG, PacketType.EMG),
    "imu": (StreamKind.IMU, PacketType.IMU),
    "force": (StreamKind.FORCE, PacketType.FORCE),
}


class SerialStreamOptions(BaseModel):
    """One sampled stream of the device: `name` becomes the stream id `<device>.<name>`;
    `index` is the firmware's stream id (bit `index` of the START mask)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="e.g. 'emg'")
    index: int = Field(ge=0, le=7, description="the firmware's stream id (0..7)")
    kind: Literal["emg", "imu", "force"]
    rate_hz: int = Field(gt=0, le=10_000, description="must match the device's IDENTIFY reply")
    channels: list[str] = Field(min_length=1, max_length=255, description="names, device order")
    unit: str = Field(max_length=8, description="physical unit the device reports, e.g. 'V'")

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("channel names must be unique")
        return v

    @field_validator("rate_hz")
    @classmethod
    def _whole_period(cls, v: int) -> int:
        # the protocol restricts rates so that the sample period is a whole number of µs
        if 1_000_000 % v:
            raise ValueError(f"{v} Hz does not divide 1000000; use e.g. 500, 1000, 2000, 4000")
        return v


class TriggerOptions(BaseModel):
    """The device's trigger-edge stream."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(3, ge=0, le=255, description="the firmware's trigger stream id")
    max_edge_rate_hz: float = Field(
        100.0, gt=0, le=10_000, description="bound on edges per second (sizes the buffer)"
    )


def _reference_streams() -> list[SerialStreamOptions]:
    # nm_default_streams in firmware/src/device.c
    return [
        SerialStreamOptions(
            name="emg",
            index=0,
            kind="emg",
            rate_hz=2000,
            channels=[f"emg{i}" for i in range(1, 17)],
            unit="V",
        ),
        SerialStreamOptions(
            name="imu", index=1, kind="imu", rate_hz=200, channels=["ax", "ay", "az"], unit="m/s2"
        ),
        SerialStreamOptions(
            name="force",
            index=2,
            kind="force",
            rate_hz=1000,
            channels=["load1", "load2", "load3", "load4"],
            unit="N",
        ),
    ]


class NmcoreSerialOptions(BaseModel):
    """Options of `nmcore.serial` (the `options` table of a device)."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(description="serial port; prefer /dev/serial/by-id/... (see nmcore devices)")
    baudrate: int = Field(1_000_000, gt=0, description="the reference firmware uses 1 Mbaud")
    expected_device_id: str | None = Field(
        None, max_length=32, description="refuse a device whose IDENTIFY id differs"
    )
    streams: list[SerialStreamOptions] = Field(
        default_factory=_reference_streams,
        min_length=1,
        description="the streams to start; defaults: the reference firmware's EMG, IMU, force",
    )
    trigger: TriggerOptions | None = Field(
        default_factory=TriggerOptions, description="trigger edges as a stream (null: events only)"
    )
    command_timeout_s: float = Field(0.5, gt=0, le=30, description="wait for each reply")
    command_retries: int = Field(
        2, ge=0, le=10, description="resend a command whose reply was lost (corrupted line)"
    )
    time_sync_period_s: float = Field(1.0, ge=0, le=60, description="0 turns pings off")
    queue_chunks: int = Field(4096, ge=16, le=1_000_000)

    @model_validator(mode="after")
    def _distinct(self) -> NmcoreSerialOptions:
        names = [s.name for s in self.streams]
        idx = [s.index for s in self.streams]
        if len(set(names)) != len(names) or "trigger" in names:
            raise ValueError("streams: names must be unique and not 'trigger'")
        if len(set(idx)) != len(idx):
            raise ValueError("streams: each firmware stream index may appear once")
        if self.trigger is not None and self.trigger.index in idx:
            raise ValueError(f"trigger.index {self.trigger.index} is also a sampled stream's index")
        return self


@dataclass(frozen=True, slots=True)
class TimeSyncSample:
    """One ping/reply exchange. The device read `device_rx_us` when the ping's last byte was
    handled and `device_tx_us` just before queueing the reply (raw, wrapping u32 µs), both
    between `host_send_s` and `host_recv_s` (host monotonic seconds).

    To feed `ClockModel.observe_sync`, the runtime unwraps `device_rx_us` with the same
    `TickUnwrapper` as the device's sample timestamps and passes
    `(host_send_s, unwrapped_rx_s + device_hold_s / 2, host_recv_s)`: with equal latency both
    ways the midpoint of the host interval matches the midpoint of the device's hold.
    """

    seq: int
    host_send_s: float
    device_rx_us: int
    device_tx_us: int
    host_recv_s: float

    @property
    def device_hold_s(self) -> float:
        return ((self.device_tx_us - self.device_rx_us) % _U32) / DEVICE_CLOCK_HZ

    @property
    def round_trip_s(self) -> float:
        return self.host_recv_s - self.host_send_s


@dataclass(slots=True)
class _Stream:
    desc: StreamDescriptor
    index: int
    ptype: PacketType
    period_us: int
    scale: float = 1.0


_warm = False


def warm_up() -> None:
    """Compile (or load from the cache) the frame decoder's kernel; off the event loop."""
    global _warm
    if not _warm:
        frame = encode_packet(PacketType.EMG, samples=[[1, 2]], sample_format=1)
        FrameDecoder().feed(frame + encode_command("identify", seq=1))
        _warm = True


class NmcoreSerialDriver:
    """One nmcore-protocol device on a serial port (see the module docstring)."""

    Options: ClassVar[type[NmcoreSerialOptions]] = NmcoreSerialOptions

    def __init__(self, device_id: str, options: Any, ctx: DriverContext) -> None:
        self.device_id = device_id
        self.options = validate_options(
            NmcoreSerialOptions, device_id, options, "nmcore serial device"
        )
        self.ctx = ctx
        self._descs = self._descriptors(device_id, self.options)
        self._by_index: dict[int, _Stream] = {}
        for s, desc in zip(self.options.streams, self._descs, strict=False):
            self._by_index[s.index] = _Stream(
                desc, s.index, _KINDS[s.kind][1], 1_000_000 // s.rate_hz
            )
        self._trigger_desc = self._descs[-1] if self.options.trigger is not None else None
        self.transport = SerialTransport(
            self.options.port,
            baudrate=self.options.baudrate,
            clock=ctx.clock,
            device_id=device_id,
            queue_chunks=self.options.queue_chunks,
        )
        self.decoder = FrameDecoder()
        self.identity: dict[str, Any] = {}
        self.on_sync: Callable[[TimeSyncSample], None] | None = None
        self.sync_samples: deque[TimeSyncSample] = deque(maxlen=_SYNC_KEEP)
        self.status: dict[str, Any] = {}
        self._pending: deque[tuple[float, Packet]] = deque()
        self._waiting: dict[int, asyncio.Future[Packet]] = {}
        self._pings: dict[int, float] = {}
        self._last_ping_s = -float("inf")
        self._seq = 0
        self._streaming = False
        self._last_status_seq: int | None = None
        self._last_edge: int | None = None
        self._counts = dict.fromkeys(
            (
                "opens",
                "commands",
                "command_retries",
                "sync_sent",
                "sync_answered",
                "sync_lost",
                "status_packets",
                "status_lost",
                "trigger_edges",
                "trigger_edges_lost",
                "discontinuity_flags",
                "unexpected_replies",
                "unknown_stream_packets",
            ),
            0,
        )

    # -- description (no I/O) ----------------------------------------------------------------
    @classmethod
    def describe(cls, device_id: str, options: Any) -> list[StreamDescriptor]:
        """The streams the options declare (no I/O); `open()` checks the device matches."""
        return cls._descriptors(
            device_id,
            validate_options(NmcoreSerialOptions, device_id, options, "nmcore serial device"),
        )

    @staticmethod
    def _descriptors(device_id: str, opts: NmcoreSerialOptions) -> list[StreamDescriptor]:
        out = [
            StreamDescriptor(
                stream_id=f"{device_id}.{s.name}",
                device_id=device_id,
                kind=_KINDS[s.kind][0],
                rate_hz=float(s.rate_hz),
                channels=tuple(ChannelSpec(c, s.unit) for c in s.channels),
                counter_bits=COUNTER_BITS,
                timestamp_hz=DEVICE_CLOCK_HZ,
                timestamp_bits=DEVICE_CLOCK_BITS,
            )
            for s in opts.streams
        ]
        if opts.trigger is not None:
            out.append(
                StreamDescriptor(
                    stream_id=f"{device_id}.trigger",
                    device_id=device_id,
                    kind=StreamKind.TRIGGER,
                    rate_hz=opts.trigger.max_edge_rate_hz,
                    channels=(ChannelSpec("level", "1"), ChannelSpec("line", "1")),
                    counter_bits=COUNTER_BITS,
                    timestamp_hz=DEVICE_CLOCK_HZ,
                    timestamp_bits=DEVICE_CLOCK_BITS,
                )
            )
        return out

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return self._descs

    def stats(self) -> dict[str, Any]:
        """Decoder, transport, device status and driver counters (for status reports)."""
        d, t = self.decoder.stats, self.transport.stats
        out: dict[str, Any] = {
            "frames_ok": d.frames_ok,
            "frames_rejected": d.frames_rejected,
            "bad_crc": d.bad_crc,
            "bad_cobs": d.bad_cobs,
            "truncated": d.truncated,
            "unknown_type": d.unknown_type,
            "bad_version": d.bad_version,
            "oversize": d.oversize,
            "garbage_bytes": d.bytes_skipped,
            "bytes_in": t.bytes_in,
            "reads": t.reads,
            "read_errors": t.errors,
            "dropped_chunks": t.dropped_chunks,
            **self._counts,
        }
        for key in ("battery_mv", "battery_pct", "dropped_samples", "buffer_overruns"):
            if key in self.status:
                out[f"device_{key}"] = self.status[key]
        if "rx_bad_frames" in self.status:
            out["device_rx_bad_frames"] = self.status["rx_bad_frames"]
        return out

    # -- life cycle --------------------------------------------------------------------------
    async def open(self) -> None:
        await self.close()
        # the first decode compiles the kernel (seconds on a cold cache): not on the loop
        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        # a partial frame from the last session is garbage; counts restart per session
        self.decoder = FrameDecoder()
        self._pending.clear()
        self._pings.clear()
        self._last_ping_s = -float("inf")
        self._last_status_seq = None
        await self.transport.open()
        try:
            ident = await self._command_direct("identify")
            self._check_identity(ident.fields)
            mask = 0
            for s in self._by_index.values():
                mask |= 1 << s.index
            reply = await self._command_direct("start", stream_mask=mask)
            running = int(reply.fields.get("running_mask", 0))
            if running & mask != mask:
                raise DeviceError(
                    f"START asked for streams {mask:#04x} but the device runs {running:#04x}: "
                    "check the stream indices in the config against `nmcore devices --probe`",
                    self.device_id,
                )
        except BaseException:
            await self.transport.close()
            raise
        self._counts["opens"] += 1
        self._streaming = True

    async def close(self) -> None:
        """Stop the streams (best effort) and release the port. Idempotent, never raises."""
        self._streaming = False
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(DeviceGoneError("port closed", self.device_id))
                fut.exception()  # retrieved: nobody may be awaiting it any more
        self._waiting.clear()
        if self.transport.is_open:
            mask = 0
            for s in self._by_index.values():
                mask |= 1 << s.index
            with contextlib.suppress(DeviceError, OSError):
                await self.transport.write(
                    encode_command("stop", seq=self._next_seq(), stream_mask=mask),
                    timeout_s=_STOP_TIMEOUT_S,
                )
        await self.transport.close()

    # -- commands ----------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _refused(self, name: str, pkt: Packet) -> DeviceError:
        return DeviceError(
            f"the device refused {name}: {pkt.fields.get('status')} "
            "(wrong firmware, or a command this firmware does not support)",
            self.device_id,
        )

    async def _command_direct(self, name: str, **kw: Any) -> Packet:
        """A command during open(): this task reads the port itself; packets that are not
        the reply wait in `_pending` for `blocks()`. Resent on a lost reply."""
        tr = self.transport
        timeout_s = self.options.command_timeout_s
        for attempt in range(self.options.command_retries + 1):
            seq = self._next_seq()
            self._counts["commands"] += 1
            if attempt:
                self._counts["command_retries"] += 1
            await tr.write(encode_command(name, seq=seq, **kw))
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        chunk = await tr.read_chunk()
                        reply: Packet | None = None
                        for pkt in self.decoder.feed(chunk.data):
                            if (
                                reply is None
                                and pkt.ptype is PacketType.COMMAND_REPLY
                                and pkt.counter == seq
                            ):
                                reply = pkt
                            else:
                                self._pending.append((chunk.arrival_s, pkt))
                        if reply is not None:
                            if reply.fields.get("status") != "ok":
                                raise self._refused(name, reply)
                            return reply
            except TimeoutError:
                continue
        raise DeviceError(
            f"no reply to {name} from {self.options.port} within "
            f"{timeout_s:g} s ({self.options.command_retries + 1} tries): is it an nmcore device "
            f"running protocol version {PROTOCOL_VERSION} at {self.options.baudrate} baud?",
            self.device_id,
        )

    async def command(self, name: str, **kw: Any) -> Packet:
        """Send a command while streaming (e.g. `command("loopback_trigger", pulse_us=500)`)
        and return its reply. The reply is picked up by `blocks()`, which must be running."""
        if not self._streaming:
            raise DeviceError(f"{name}: the device is not open", self.device_id)
        seq = self._next_seq()
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = fut
        self._counts["commands"] += 1
        try:
            await self.transport.write(encode_command(name, seq=seq, **kw))
            async with asyncio.timeout(self.options.command_timeout_s):
                reply = await fut
        except TimeoutError:
            raise DeviceError(
                f"no reply to {name} within {self.options.command_timeout_s:g} s",
                self.device_id,
            ) from None
        finally:
            self._waiting.pop(seq, None)
        if reply.fields.get("status") != "ok":
            raise self._refused(name, reply)
        return reply

    # trigger edges are stamped by the device's microsecond clock, not sampled
    edge_resolution_s = 1e-6

    async def loopback_trigger(self, pulse_s: float) -> int:
        """Drive the loopback output high for `pulse_s` (latency calibration); returns the
        device clock (raw u32 us) when it went high. The edge comes back as a trigger edge."""
        pulse_us = round(pulse_s * 1e6)
        if not 1 <= pulse_us <= 65535:
            raise ValueError(f"pulse_s={pulse_s}: the firmware takes 1 us to 65.535 ms")
        reply = await self.command("loopback_trigger", pulse_us=pulse_us)
        return int(reply.fields["output_us"])

    def _check_identity(self, fields: dict[str, Any]) -> None:
        self.identity = fields
        dev = self.device_id
        proto = fields.get("protocol_version")
        if fields.get("malformed") or proto is None:
            raise DeviceError("the device's IDENTIFY reply is malformed: update its firmware", dev)
        if proto != PROTOCOL_VERSION:
            newer = "nmcore" if proto > PROTOCOL_VERSION else "the firmware"
            raise DeviceError(
                f"the device speaks protocol version {proto}, this nmcore speaks "
                f"{PROTOCOL_VERSION}: update {newer}",
                dev,
            )
        want_id = self.options.expected_device_id
        if want_id is not None and fields.get("device_id") != want_id:
            raise DeviceError(
                f"{self.options.port} is device {fields.get('device_id')!r}, the config expects "
                f"{want_id!r}: fix options.port or options.expected_device_id",
                dev,
            )
        reported = {int(s["stream_id"]): s for s in fields.get("streams", [])}
        for i, opt in enumerate(self.options.streams):
            where = f"options.streams[{i}]"
            s = reported.get(opt.index)
            if s is None:
                have = ", ".join(f"{k}:{v['kind']}" for k, v in sorted(reported.items()))
                raise DeviceError(
                    f"{where}.index = {opt.index} but the device has no such stream "
                    f"(it has {have or 'none'})",
                    dev,
                )
            checks = (
                ("kind", opt.kind, s["kind"]),
                ("rate_hz", opt.rate_hz, s["rate_hz"]),
                ("channels", len(opt.channels), s["channel_count"]),
                ("unit", opt.unit, s["unit"]),
            )
            for key, mine, theirs in checks:
                if mine != theirs:
                    n = "channel count" if key == "channels" else key
                    raise DeviceError(
                        f"{where}.{key}: the config says {n} {mine!r}, the device reports "
                        f"{theirs!r} for stream {opt.index}: change the config to match",
                        dev,
                    )
            self._by_index[opt.index].scale = float(s["scale"])
        trig = self.options.trigger
        if trig is not None:
            s = reported.get(trig.index)
            if s is None or s["kind"] != "trigger":
                raise DeviceError(
                    f"options.trigger.index = {trig.index} is not a trigger stream on this "
                    "device: fix it, or set trigger = null to take edges as events only",
                    dev,
                )

    # -- reading -----------------------------------------------------------------------------
    async def blocks(self) -> AsyncGenerator[SampleBlock, None]:
        if not self._streaming or not self.transport.is_open:
            raise DeviceGoneError("blocks() before open()", self.device_id)
        tr = self.transport
        clock = self.ctx.clock
        period_s = self.options.time_sync_period_s
        for block in self._pending_blocks():
            yield block
        while True:
            if period_s > 0:
                now_s = clock.now()
                if now_s - self._last_ping_s >= period_s:
                    await self._ping(now_s)
            chunk = await tr.read_chunk()  # DeviceGoneError once the port is gone
            for block in self._decode(chunk):
                yield block

    def _pending_blocks(self) -> list[SampleBlock]:
        """Blocks of the packets read while waiting for a command reply, in arrival order."""
        out: list[SampleBlock] = []
        while self._pending:
            arrival_s, pkt = self._pending.popleft()
            out += self._handle([pkt], arrival_s)
        return out

    def _decode(self, chunk: Chunk) -> list[SampleBlock]:
        packets = self.decoder.feed(chunk.data)
        return self._handle(packets, chunk.arrival_s) if packets else []

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        """`blocks()` handed to `on_block` from the port's reader callback: one pass of the
        event loop per read instead of two. Pings go out from a task of their own."""
        if not self._streaming or not self.transport.is_open:
            raise DeviceGoneError("blocks() before open()", self.device_id)
        tr = self.transport
        session = StreamSession()

        def on_chunk(chunk: Chunk) -> None:
            for block in self._decode(chunk):
                on_block(block)

        def pinger_done(task: asyncio.Task[None]) -> None:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:  # a failed write: the device is gone
                session.fail(exc)

        for block in self._pending_blocks():
            on_block(block)
        pinger = None
        if self.options.time_sync_period_s > 0:
            pinger = asyncio.create_task(self._ping_every(), name=f"{self.device_id}.time_sync")
            pinger.add_done_callback(pinger_done)
        try:
            await tr.stream_to(on_chunk, session)  # DeviceGoneError once the port is gone
        finally:
            if pinger is not None and not pinger.done():
                pinger.cancel()
                # wait() does not raise the pinger's CancelledError, so a cancel aimed at
                # this task (shutdown) while it waits is not swallowed
                await asyncio.wait({pinger})

    async def _ping_every(self) -> None:
        clock = self.ctx.clock
        period_s = self.options.time_sync_period_s
        while True:
            await clock.sleep_until(self._last_ping_s + period_s)
            await self._ping(clock.now())

    async def _ping(self, now_s: float) -> None:
        self._last_ping_s = now_s
        for seq, sent_s in list(self._pings.items()):
            if now_s - sent_s > _PING_EXPIRY_S:
                del self._pings[seq]
                self._counts["sync_lost"] += 1
        seq = self._next_seq()
        frame = encode_command("time_sync_ping", seq=seq)
        # stamped before the write: the device cannot have seen the ping earlier
        self._pings[seq] = self.ctx.clock.now()
        self._counts["sync_sent"] += 1
        await self.transport.write(frame)

    def _handle(self, packets: list[Packet], arrival_s: float) -> list[SampleBlock]:
        """Blocks from one read's packets; everything else is dispatched on the way."""
        out: list[SampleBlock] = []
        run: list[Packet] = []
        run_stream: _Stream | None = None
        for pkt in packets:
            if pkt.samples is not None:
                st = self._by_index.get(pkt.stream_id)
                if st is None or pkt.ptype is not st.ptype:
                    self._counts["unknown_stream_packets"] += 1
                    continue
                if pkt.flags & PacketFlags.DISCONTINUITY:
                    self._discontinuity(pkt, st, arrival_s)
                if run and run_stream is st and self._continues(run[-1], pkt, st):
                    run.append(pkt)
                    continue
                if run and run_stream is not None:
                    out.append(self._block(run, run_stream, arrival_s))
                run = [pkt]
                run_stream = st
                continue
            block = self._other(pkt, arrival_s)
            if block is not None:
                out.append(block)
        if run and run_stream is not None:
            out.append(self._block(run, run_stream, arrival_s))
        return out

    def _discontinuity(self, pkt: Packet, st: _Stream, arrival_s: float) -> None:
        """The device says it skipped samples right before this packet (its scheduler ran
        late): the counter jump is the device's loss, not the link's."""
        self._counts["discontinuity_flags"] += 1
        if self.ctx.emit is not None:
            self.ctx.emit(
                Event(
                    "device_discontinuity",
                    arrival_s,
                    self.device_id,
                    {
                        "stream_id": st.desc.stream_id,
                        "counter": pkt.counter,
                        "device_us": pkt.device_us,
                    },
                )
            )

    @staticmethod
    def _continues(prev: Packet, pkt: Packet, st: _Stream) -> bool:
        assert prev.samples is not None
        n = int(prev.samples.shape[0])
        return (
            pkt.counter == (prev.counter + n) % _U32
            and pkt.device_us == (prev.device_us + n * st.period_us) % _U32
        )

    def _block(self, run: list[Packet], st: _Stream, arrival_s: float) -> SampleBlock:
        first = run[0]
        parts: list[npt.NDArray[Any]] = [p.samples for p in run if p.samples is not None]
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        data = raw.astype(np.float64)
        if st.scale != 1.0:
            data *= st.scale
        return SampleBlock(
            stream_id=st.desc.stream_id,
            counter=first.counter,
            data=data,
            arrival_s=arrival_s,
            device_ticks=first.device_us,
            ticks_index=0,
        )

    def _other(self, pkt: Packet, arrival_s: float) -> SampleBlock | None:
        t = pkt.ptype
        f = pkt.fields
        if t is PacketType.TRIGGER_EDGE:
            return self._edge(pkt, arrival_s)
        if t is PacketType.STATUS:
            self._status(pkt, arrival_s)
        elif t is PacketType.TIME_SYNC_REPLY:
            self._sync(pkt, arrival_s)
        elif t is PacketType.COMMAND_REPLY:
            fut = self._waiting.get(pkt.counter)
            if fut is not None and not fut.done():
                fut.set_result(pkt)
            else:
                self._counts["unexpected_replies"] += 1
        elif f.get("malformed"):
            self._counts["unexpected_replies"] += 1
        return None

    def _edge(self, pkt: Packet, arrival_s: float) -> SampleBlock | None:
        f = pkt.fields
        if f.get("malformed"):
            return None
        n = int(f["edge_counter"])
        self._counts["trigger_edges"] += 1
        if self._last_edge is not None:
            lost = (n - self._last_edge - 1) % _U32
            if lost < _U32 // 2:
                self._counts["trigger_edges_lost"] += lost
        self._last_edge = n
        emit = self.ctx.emit
        if emit is not None:
            emit(
                Event(
                    "trigger_edge",
                    arrival_s,
                    self.device_id,
                    {
                        "device_us": int(f["edge_us"]),
                        "arrival_s": arrival_s,
                        "polarity": int(f["polarity"]),
                        "line": int(f["line"]),
                        "edge_counter": n,
                        "stream_id": None
                        if self._trigger_desc is None
                        else self._trigger_desc.stream_id,
                        "host_time": "arrival",  # t_s is an upper bound until the runtime maps it
                    },
                )
            )
        desc = self._trigger_desc
        if (
            desc is None
            or self.options.trigger is None
            or pkt.stream_id != self.options.trigger.index
        ):
            return None
        data = np.array([[float(f["polarity"]), float(f["line"])]])
        return SampleBlock(desc.stream_id, n, data, arrival_s, int(f["edge_us"]), 0)

    def _status(self, pkt: Packet, arrival_s: float) -> None:
        f = pkt.fields
        if f.get("malformed"):
            return
        self._counts["status_packets"] += 1
        if self._last_status_seq is not None:
            lost = (pkt.counter - self._last_status_seq - 1) % _U32
            if lost < _U32 // 2:
                self._counts["status_lost"] += lost
        self._last_status_seq = pkt.counter
        prev = self.status
        rises: dict[str, Any] = {
            k: int(f[k]) - int(prev[k])
            for k in ("dropped_samples", "buffer_overruns")
            if k in prev and int(f[k]) > int(prev[k])
        }
        self.status = dict(f)
        if rises and self.ctx.emit is not None:
            self.ctx.emit(
                Event(
                    "device_drops",
                    arrival_s,
                    self.device_id,
                    {**rises, "device_us": pkt.device_us, "totals": dict(f)},
                )
            )

    def _sync(self, pkt: Packet, arrival_s: float) -> None:
        f = pkt.fields
        if f.get("malformed"):
            return
        sent_s = self._pings.pop(int(f["host_seq"]), None)
        if sent_s is None:
            self._counts["unexpected_replies"] += 1
            return
        self._counts["sync_answered"] += 1
        sample = TimeSyncSample(
            seq=int(f["host_seq"]),
            host_send_s=sent_s,
            device_rx_us=int(f["rx_us"]),
            device_tx_us=int(f["tx_us"]),
            host_recv_s=arrival_s,
        )
        self.sync_samples.append(sample)
        if self.on_sync is not None:
            self.on_sync(sample)
