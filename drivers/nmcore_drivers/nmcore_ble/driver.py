"""`nmcore.ble`: an nmcore firmware board reached over the Nordic UART Service.

The board speaks the same COBS-framed protocol as over serial (nmcore.framing); BLE only
changes the transport: notifications on TX are byte chunks that cut frames anywhere, so the
same `FrameDecoder` reassembles them, and commands are written to RX in MTU-sized pieces.
open() connects, subscribes, asks the board to IDENTIFY (checks the configured stream
against what the firmware reports and takes its scale), then STARTs it; the board forgets
START when the link drops, so every open() sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.driver import DriverContext
from nmcore.errors import DeviceError
from nmcore.framing import FrameDecoder, Packet, PacketType, encode_command
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.transport.ble import BleByteStream, BleLink

__all__ = ["NmcoreBleDriver", "NmcoreBleOptions"]

_STOP_TIMEOUT_S = 0.5


class NmcoreBleOptions(BaseModel):
    """Options of `nmcore.ble`. The EMG stream's shape is configured (so the runtime knows it
    before connecting) and checked against the board's IDENTIFY answer at every open()."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    name: str | None = Field(
        None, min_length=1, description="advertised name, e.g. 'nmcore-emg-01'"
    )
    stream_index: int = Field(0, ge=0, le=255, description="the board's stream id for EMG")
    rate_hz: int = Field(1000, gt=0, le=10_000)
    channels: list[str] = Field(default_factory=lambda: ["ch1", "ch2"], min_length=1, max_length=64)
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    command_timeout_s: float = Field(2.0, gt=0, le=30)
    queue_chunks: int = Field(4096, ge=16, le=1_000_000)

    @model_validator(mode="after")
    def _one_identity(self) -> NmcoreBleOptions:
        if (self.address is None) == (self.name is None):
            raise ValueError(
                'address/name: give exactly one, e.g. address = "F0:0D:CA:FE:00:01" '
                '(see `bluetoothctl devices`) or name = "nmcore-emg-01"'
            )
        return self


class NmcoreBleDriver:
    """The `nmcore.ble` driver (see the module docstring)."""

    Options: ClassVar[type[BaseModel]] = NmcoreBleOptions

    def __init__(
        self, device_id: str, options: NmcoreBleOptions | dict[str, Any], ctx: DriverContext
    ):
        self.device_id = device_id
        self.options = (
            options
            if isinstance(options, NmcoreBleOptions)
            else NmcoreBleOptions.model_validate(options)
        )
        self.ctx = ctx
        (self._desc,) = self.describe(device_id, self.options)
        self.link = BleLink(
            device_id=device_id,
            clock=ctx.clock,
            address=self.options.address,
            name=self.options.name,
            connect_timeout_s=self.options.connect_timeout_s,
            queue_chunks=self.options.queue_chunks,
        )
        self.decoder = FrameDecoder()
        self.identity: dict[str, Any] = {}
        self.scale = 1.0
        self.start_commands = 0
        self._stream: BleByteStream | None = None
        self._pending: deque[tuple[float, Packet]] = deque()
        self._seq = 0

    @classmethod
    def describe(
        cls, device_id: str, options: NmcoreBleOptions | dict[str, Any]
    ) -> list[StreamDescriptor]:
        opts = (
            options
            if isinstance(options, NmcoreBleOptions)
            else NmcoreBleOptions.model_validate(options)
        )
        return [
            StreamDescriptor(
                stream_id=f"{device_id}.emg",
                device_id=device_id,
                kind=StreamKind.EMG,
                rate_hz=float(opts.rate_hz),
                channels=tuple(ChannelSpec(name, "uV") for name in opts.channels),
                counter_bits=32,
                timestamp_hz=1e6,
                timestamp_bits=32,
            )
        ]

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return [self._desc]

    async def open(self) -> None:
        await self.link.connect()
        self._stream = BleByteStream(self.link)
        await self._stream.open()
        self.decoder = FrameDecoder()  # a partial frame from the dead link is garbage
        self._pending.clear()
        ident = await self._command("identify")
        self._check_identity(ident.fields)
        await self._command("start", stream_mask=1 << self.options.stream_index)
        self.start_commands += 1

    def _check_identity(self, fields: dict[str, Any]) -> None:
        self.identity = fields
        opts = self.options
        for s in fields.get("streams", []):
            if s["stream_id"] != opts.stream_index:
                continue
            if s["rate_hz"] != opts.rate_hz or s["channel_count"] != len(opts.channels):
                raise DeviceError(
                    f"the board streams {s['channel_count']} channels at {s['rate_hz']} Hz on "
                    f"stream {opts.stream_index}, the config says {len(opts.channels)} at "
                    f"{opts.rate_hz} Hz: fix rate_hz/channels in the config",
                    self.device_id,
                )
            self.scale = float(s["scale"])
            return
        raise DeviceError(
            f"the board has no stream {opts.stream_index}: fix stream_index in the config",
            self.device_id,
        )

    async def _command(self, name: str, **kw: Any) -> Packet:
        stream = self._stream
        assert stream is not None
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        await stream.write(encode_command(name, seq=seq, **kw))
        try:
            async with asyncio.timeout(self.options.command_timeout_s):
                while True:
                    arrival_s, chunk = await stream.read()
                    for pkt in self.decoder.feed(chunk):
                        if pkt.ptype is PacketType.COMMAND_REPLY and pkt.counter == seq:
                            if pkt.fields.get("status") != "ok":
                                raise DeviceError(
                                    f"the board refused {name}: {pkt.fields.get('status')}",
                                    self.device_id,
                                )
                            return pkt
                        self._pending.append((arrival_s, pkt))
        except TimeoutError:
            raise DeviceError(
                f"no reply to {name} within {self.options.command_timeout_s:g} s: check the "
                "board runs nmcore firmware with BLE enabled and no other host is connected",
                self.device_id,
            ) from None

    def _block(self, arrival_s: float, pkt: Packet) -> SampleBlock | None:
        if (
            pkt.ptype is not PacketType.EMG
            or pkt.stream_id != self.options.stream_index
            or pkt.samples is None
        ):
            return None
        data = pkt.samples.astype(np.float64)
        data *= self.scale
        return SampleBlock(
            stream_id=self._desc.stream_id,
            counter=pkt.counter,
            data=data,
            arrival_s=arrival_s,
            device_ticks=pkt.device_us,
            ticks_index=0,
        )

    def _decode(self, arrival_s: float, chunk: bytes) -> list[SampleBlock]:
        blocks = (self._block(arrival_s, pkt) for pkt in self.decoder.feed(chunk))
        return [b for b in blocks if b is not None]

    def _pending_blocks(self) -> list[SampleBlock]:
        """Blocks of the packets read while waiting for a command reply (at open)."""
        pending = (self._block(*self._pending.popleft()) for _ in range(len(self._pending)))
        return [b for b in pending if b is not None]

    def _byte_stream(self) -> BleByteStream:
        if self._stream is None:
            raise DeviceError("blocks() before open()", self.device_id)
        return self._stream

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        stream = self._byte_stream()
        for block in self._pending_blocks():
            yield block
        while True:
            arrival_s, chunk = await stream.read()  # DeviceGoneError when the link drops
            for block in self._decode(arrival_s, chunk):
                yield block

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        """`blocks()` handed to `on_block` from the notification callback."""
        stream = self._byte_stream()
        for block in self._pending_blocks():
            on_block(block)

        def handle(arrival_s: float, chunk: bytes) -> None:
            for block in self._decode(arrival_s, chunk):
                on_block(block)

        await stream.queue.stream_to(handle)  # DeviceGoneError when the link drops

    async def close(self) -> None:
        if self.link.connected and self._stream is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    self._seq = (self._seq + 1) & 0xFFFFFFFF
                    await self._stream.write(encode_command("stop", seq=self._seq))
        self._stream = None
        await self.link.close()
