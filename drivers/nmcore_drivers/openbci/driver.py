"""`openbci.cyton`: an OpenBCI Cyton (8 channels, 250 Hz) through its USB radio dongle.

Session: 's' (stop a stream left running), drop what arrived, 'v' (soft reset; the board
answers with a banner ending in '$$$'), optional channel settings (gain) and '<' (board time
stamps), then 'b' (stream). Each serial read goes through the decoder once; packets with
consecutive sample numbers become one `SampleBlock` (a jump in the 8-bit sample number,
i.e. packets lost on the radio link, starts a new block so the runtime sees the gap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nmcore.buffer.sequence import contiguous_runs
from nmcore.driver import DriverContext, validate_options
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.transport.serial import Chunk, ReadDecodingDriver, SerialTransport
from nmcore_drivers.openbci.decoder import (
    GAINS,
    CytonDecoder,
    CytonPackets,
    uv_per_count,
    warm_up,
)

__all__ = ["CytonDriver", "CytonOptions"]

RATE_HZ = 250.0  # the Cyton's only rate over the RFduino dongle
COUNTER_BITS = 8
BOARD_TIME_HZ = 1000.0  # board time stamps are millis()
BOARD_TIME_BITS = 32
_GAIN_CODE = {g: str(i) for i, g in enumerate(GAINS)}  # ADS1299 gain setting '0'-'6'
DEFAULT_GAIN = 24  # what 'v' (soft reset) restores


class CytonOptions(BaseModel):
    """Options of `openbci.cyton` (the `options` table of a device)."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(description="serial port; prefer /dev/serial/by-id/usb-FTDI_..._<serial>")
    baudrate: int = Field(115200, gt=0, description="the dongle's default is 115200")
    channels: list[str] = Field(
        default_factory=lambda: [f"ch{i}" for i in range(1, 9)],
        min_length=8,
        max_length=8,
        description="names of the 8 channels, in board order",
    )
    gain: int | list[int] = Field(
        DEFAULT_GAIN, description="ADS1299 gain, one for all channels or one per channel"
    )
    board_timestamps: bool = Field(
        False, description="ask the board for its millisecond clock in every packet ('<')"
    )
    reply_timeout_s: float = Field(3.0, gt=0, le=30, description="wait for '$$$' replies")
    settle_s: float = Field(
        0.1, ge=0, le=5, description="after 's', time for packets in flight to arrive"
    )

    @field_validator("gain")
    @classmethod
    def _gains(cls, v: int | list[int]) -> int | list[int]:
        vals = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) != 8:
            raise ValueError(f"give one gain or 8 (one per channel), not {len(v)}")
        bad = [g for g in vals if g not in GAINS]
        if bad:
            raise ValueError(f"gain {bad[0]} is not an ADS1299 gain; use one of {GAINS}")
        return v

    @field_validator("channels")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("channel names must be unique")
        return v

    def gains(self) -> list[int]:
        return list(self.gain) if isinstance(self.gain, list) else [self.gain] * 8


class CytonDriver(ReadDecodingDriver):
    """One OpenBCI Cyton: stream `<id>.emg`, 8 channels in uV (see `nmcore.driver.Driver`)."""

    Options: ClassVar[type[CytonOptions]] = CytonOptions

    def __init__(self, device_id: str, options: Any, ctx: DriverContext) -> None:
        self.device_id = device_id
        self.options = validate_options(CytonOptions, device_id, options, "OpenBCI Cyton")
        self.ctx = ctx
        self._streams = self._descriptors(device_id, self.options)
        self._scale = np.array([uv_per_count(g) for g in self.options.gains()], np.float64)
        self.decoder = CytonDecoder()
        self.transport = SerialTransport(
            self.options.port,
            baudrate=self.options.baudrate,
            clock=ctx.clock,
            device_id=device_id,
        )
        self.banner = ""

    @classmethod
    def describe(cls, device_id: str, options: Any) -> list[StreamDescriptor]:
        """The streams this device announces (no I/O)."""
        return cls._descriptors(
            device_id, validate_options(CytonOptions, device_id, options, "OpenBCI Cyton")
        )

    @staticmethod
    def _descriptors(device_id: str, opts: CytonOptions) -> list[StreamDescriptor]:
        ts = opts.board_timestamps
        return [
            StreamDescriptor(
                stream_id=f"{device_id}.emg",
                device_id=device_id,
                kind=StreamKind.EMG,
                rate_hz=RATE_HZ,
                channels=tuple(ChannelSpec(n, "uV") for n in opts.channels),
                counter_bits=COUNTER_BITS,
                timestamp_hz=BOARD_TIME_HZ if ts else 0.0,
                timestamp_bits=BOARD_TIME_BITS if ts else 64,
            )
        ]

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return self._streams

    def stats(self) -> dict[str, int]:
        """Transport and decoder counters (for status reports)."""
        t, d = self.transport.stats, self.decoder.stats
        return {
            "bytes_in": t.bytes_in,
            "reads": t.reads,
            "read_errors": t.errors,
            "dropped_chunks": t.dropped_chunks,
            "packets": d.packets,
            "bad_packets": d.bad_packets,
            "skipped_bytes": d.skipped_bytes,
        }

    # -- life cycle --------------------------------------------------------------------------
    async def open(self) -> None:
        await self.transport.close()
        # the first decode compiles the kernel (seconds): never on the event loop
        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        await self.transport.open()
        try:
            await self._start()
        except BaseException:
            await self.transport.close()
            raise

    async def _command(self, cmd: bytes, what: str) -> str:
        tr = self.transport
        await tr.write(cmd)
        try:
            reply = await tr.read_until(b"$$$", self.options.reply_timeout_s)
        except DeviceGoneError:
            raise
        except DeviceError as exc:
            raise DeviceError(
                f"no answer to {what} ({cmd!r}) from {self.options.port}: is the board switched "
                f"on (switch at PC) and the dongle's switch at GPIO6? ({exc})",
                self.device_id,
            ) from exc
        return reply.decode("ascii", "replace")

    async def _start(self) -> None:
        tr = self.transport
        opts = self.options
        await tr.write(b"s")
        await asyncio.sleep(opts.settle_s)
        tr.discard_input()
        banner = await self._command(b"v", "soft reset")
        if "failed" in banner.lower() and "OpenBCI" not in banner:
            raise DeviceError(
                f"the dongle on {opts.port} answered but the board did not ({banner.strip()!r}):"
                " switch the Cyton on and check both radios use the same channel",
                self.device_id,
            )
        if "OpenBCI" not in banner:
            raise DeviceError(
                f"{opts.port} answered {banner[-80:]!r} to a soft reset, not an OpenBCI banner:"
                " is this the Cyton dongle?",
                self.device_id,
            )
        self.banner = banner
        for ch, gain in enumerate(opts.gains(), start=1):
            if gain != DEFAULT_GAIN:
                # x <channel> <power down 0> <gain> <input normal 0> <bias 1> <SRB2 1> <SRB1 0> X
                cmd = f"x{ch}0{_GAIN_CODE[gain]}0110X".encode()
                await self._command(cmd, f"channel {ch} settings")
        if opts.board_timestamps:
            await self._command(b"<", "time stamps on")
        tr.discard_input()
        self.decoder.reset()
        await tr.write(b"b")

    def _decode(self, chunk: Chunk) -> list[SampleBlock]:
        pk = self.decoder.feed(chunk.data)
        return self._blocks_of(pk, self._streams[0].stream_id, chunk.arrival_s) if pk.n else []

    def _blocks_of(self, pk: CytonPackets, stream_id: str, arrival_s: float) -> list[SampleBlock]:
        data = pk.counts * self._scale
        out = []
        for a, b in contiguous_runs(pk.counter, 1 << COUNTER_BITS):
            ticks: int | None = None
            idx = 0
            if self.options.board_timestamps:
                stamped = np.flatnonzero(pk.board_ms[a:b] >= 0)
                if stamped.shape[0]:
                    idx = int(stamped[0])
                    ticks = int(pk.board_ms[a + idx])
            out.append(SampleBlock(stream_id, int(pk.counter[a]), data[a:b], arrival_s, ticks, idx))
        return out

    async def close(self) -> None:
        if self.transport.is_open:
            with contextlib.suppress(DeviceError, OSError):
                await self.transport.write(b"s", timeout_s=0.2)
        await self.transport.close()
