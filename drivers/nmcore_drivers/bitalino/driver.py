"""`bitalino`: a BITalino (r)evolution board over its serial link (Bluetooth rfcomm or USB).

Session: 0xFF (idle from any mode), drop what arrived, 0x07 (version: the board answers a
line containing 'BITalino'), the rate command (<rate code> 0000 11), then live mode with
the channel mask (A6..A1 0 1). Frames with consecutive sequence numbers become one block.

The sequence number has 4 bits (wraps at 16): the runtime's tracker unwraps it, but a loss
of 16 frames or more in one gap cannot be told from a smaller one (at 1 kHz that is any
gap over 16 ms); the host arrival times are the only hint then.

Streams: `<id>.emg` (acquired analog channels in uV through the EMG sensor's transfer
function) and, with `digital_stream`, `<id>.digital` (I1 I2 O1 O2 as 0/1), same counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.buffer.sequence import contiguous_runs
from nmcore.driver import DriverContext, validate_options
from nmcore.errors import DeviceError, DeviceGoneError
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.transport.serial import Chunk, ReadDecodingDriver, SerialTransport
from nmcore_drivers.bitalino.decoder import (
    EMG_GAIN,
    VCC_V,
    BitalinoDecoder,
    BitalinoFrames,
    channel_bits,
    emg_uv,
    warm_up,
)

__all__ = ["BitalinoDriver", "BitalinoOptions", "command_bytes"]

COUNTER_BITS = 4
RATE_CODES = {1: 0, 10: 1, 100: 2, 1000: 3}
CMD_IDLE = 0xFF  # (r)evolution: back to idle from any mode
CMD_STOP = 0x00
CMD_VERSION = 0x07
DIGITAL_NAMES = ("I1", "I2", "O1", "O2")
_VERSION_RE = re.compile(rb"BITalino[^\n]*\n")


def command_bytes(rate_hz: int, analog: Sequence[int]) -> tuple[int, int]:
    """(set-rate command, start-live command) for a rate and 1-based analog channels."""
    start = 0x01
    for a in analog:
        start |= 1 << (2 + a - 1)
    return (RATE_CODES[rate_hz] << 6) | 0x03, start


class BitalinoOptions(BaseModel):
    """Options of `bitalino` (the `options` table of a device)."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(description="serial port, e.g. /dev/rfcomm0 or /dev/serial/by-id/...")
    baudrate: int = Field(115200, gt=0)
    rate_hz: Literal[1, 10, 100, 1000] = Field(1000, description="1, 10, 100 or 1000 Hz")
    analog: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        max_length=6,
        description="analog inputs to acquire, 1-6 (A1-A6), ascending",
    )
    channels: list[str] | None = Field(None, description="names, one per analog input")
    vcc_v: float = Field(VCC_V, gt=0, le=10)
    emg_gain: float = Field(EMG_GAIN, gt=0, description="G_EMG of the sensor (datasheet)")
    digital_stream: bool = Field(True, description="also publish I1 I2 O1 O2 as a stream")
    command_gap_s: float = Field(0.1, ge=0, le=2, description="pause before each command")
    reply_timeout_s: float = Field(3.0, gt=0, le=30)

    @model_validator(mode="after")
    def _check(self) -> BitalinoOptions:
        if any(a not in range(1, 7) for a in self.analog):
            raise ValueError("analog: inputs are numbered 1 to 6 (A1-A6)")
        if sorted(set(self.analog)) != self.analog:
            raise ValueError("analog: list each input once, ascending (the frame order)")
        if self.channels is not None:
            if len(self.channels) != len(self.analog):
                raise ValueError(
                    f"channels: give {len(self.analog)} names (one per analog input), "
                    f"not {len(self.channels)}"
                )
            if len(set(self.channels)) != len(self.channels):
                raise ValueError("channels: names must be unique")
        return self

    def channel_names(self) -> list[str]:
        return self.channels if self.channels is not None else [f"A{a}" for a in self.analog]


class BitalinoDriver(ReadDecodingDriver):
    """One BITalino (r)evolution (see `nmcore.driver.Driver`)."""

    Options: ClassVar[type[BitalinoOptions]] = BitalinoOptions

    def __init__(self, device_id: str, options: Any, ctx: DriverContext) -> None:
        self.device_id = device_id
        self.options = validate_options(BitalinoOptions, device_id, options, "BITalino")
        self.ctx = ctx
        self._streams = self._descriptors(device_id, self.options)
        n = len(self.options.analog)
        self._bits = np.array(channel_bits(n), np.float64)
        self.decoder = BitalinoDecoder(n)
        self.transport = SerialTransport(
            self.options.port,
            baudrate=self.options.baudrate,
            clock=ctx.clock,
            device_id=device_id,
        )
        self.version = ""

    @classmethod
    def describe(cls, device_id: str, options: Any) -> list[StreamDescriptor]:
        """The streams this device announces (no I/O)."""
        return cls._descriptors(
            device_id, validate_options(BitalinoOptions, device_id, options, "BITalino")
        )

    @staticmethod
    def _descriptors(device_id: str, opts: BitalinoOptions) -> list[StreamDescriptor]:
        out = [
            StreamDescriptor(
                stream_id=f"{device_id}.emg",
                device_id=device_id,
                kind=StreamKind.EMG,
                rate_hz=float(opts.rate_hz),
                channels=tuple(ChannelSpec(n, "uV") for n in opts.channel_names()),
                counter_bits=COUNTER_BITS,
            )
        ]
        if opts.digital_stream:
            out.append(
                StreamDescriptor(
                    stream_id=f"{device_id}.digital",
                    device_id=device_id,
                    kind=StreamKind.TRIGGER,
                    rate_hz=float(opts.rate_hz),
                    channels=tuple(ChannelSpec(n, "") for n in DIGITAL_NAMES),
                    counter_bits=COUNTER_BITS,
                )
            )
        return out

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return self._streams

    def stats(self) -> dict[str, int]:
        t, d = self.transport.stats, self.decoder.stats
        return {
            "bytes_in": t.bytes_in,
            "reads": t.reads,
            "read_errors": t.errors,
            "dropped_chunks": t.dropped_chunks,
            "frames": d.frames,
            "bad_frames": d.bad_frames,
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

    async def _send(self, cmd: int) -> None:
        # the board drops a command that follows the previous one too closely
        await asyncio.sleep(self.options.command_gap_s)
        await self.transport.write(bytes([cmd]))

    async def _start(self) -> None:
        tr = self.transport
        opts = self.options
        await self._send(CMD_IDLE)
        await asyncio.sleep(opts.command_gap_s)
        tr.discard_input()
        await self._send(CMD_VERSION)
        try:
            reply = await tr.read_until(b"\n", opts.reply_timeout_s)
            while b"BITalino" not in reply:
                reply = await tr.read_until(b"\n", opts.reply_timeout_s)
        except DeviceGoneError:
            raise
        except DeviceError as exc:
            raise DeviceError(
                f"no version reply from {opts.port}: is the BITalino switched on and paired "
                f"(rfcomm bound), and is this its port? ({exc})",
                self.device_id,
            ) from exc
        m = _VERSION_RE.search(reply)
        self.version = m.group(0).decode("ascii", "replace").strip() if m else ""
        rate_cmd, start_cmd = command_bytes(opts.rate_hz, opts.analog)
        await self._send(rate_cmd)
        tr.discard_input()
        self.decoder.reset()
        await self._send(start_cmd)

    def _decode(self, chunk: Chunk) -> list[SampleBlock]:
        fr = self.decoder.feed(chunk.data)
        return self._blocks_of(fr, chunk.arrival_s) if fr.n else []

    def _blocks_of(self, fr: BitalinoFrames, arrival_s: float) -> list[SampleBlock]:
        opts = self.options
        uv = emg_uv(fr.analog, self._bits, opts.vcc_v, opts.emg_gain)
        emg_id = self._streams[0].stream_id
        dig = fr.digital.astype(np.float64) if opts.digital_stream else None
        out = []
        for a, b in contiguous_runs(fr.seq, 1 << COUNTER_BITS):
            c = int(fr.seq[a])
            out.append(SampleBlock(emg_id, c, uv[a:b], arrival_s))
            if dig is not None:
                out.append(SampleBlock(self._streams[1].stream_id, c, dig[a:b], arrival_s))
        return out

    async def close(self) -> None:
        if self.transport.is_open:
            with contextlib.suppress(DeviceError, OSError):
                await self.transport.write(bytes([CMD_STOP]), timeout_s=0.2)
        await self.transport.close()
