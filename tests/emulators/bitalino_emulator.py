"""A BITalino (r)evolution on a pty.

Idle commands: 0x07 version ('BITalino_v5.2\\n'), 0x0B state (16 bytes + CRC-4), the rate
command (<code> 0000 11), live mode (A6..A1 0 1), simulation mode (.. 1 0), battery
threshold (<value> 00), 0xFF idle from any mode. While live: 0x00 stops, trigger commands
are accepted, anything else is ignored. Frames carry a 4-bit sequence number; analog
values are seeded random 10-bit (6-bit for the 5th and 6th acquired channel).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pty_device import Pacer, PtyDevice

from nmcore_drivers.bitalino.decoder import channel_bits, crc4, encode_frame

VERSION = b"BITalino_v5.2\n"
RATES = {0: 1, 1: 10, 2: 100, 3: 1000}


@dataclass(slots=True)
class Emitted:
    index: int
    seq: int
    analog: tuple[int, ...]
    digital: tuple[int, int, int, int]
    fate: str  # "sent", "dropped", "corrupted", "truncated"


class BitalinoEmulator(PtyDevice):
    def __init__(
        self,
        link: Path,
        *,
        seed: int = 0,
        corrupt_p: float = 0.0,
        truncate_every: int = 0,
        rate_scale: float = 1.0,
    ) -> None:
        super().__init__(link)
        self.rng = np.random.default_rng(seed)
        self._frng = random.Random(seed + 1)
        self.rate_hz = 1000
        self.rate_scale = rate_scale
        self.analog: list[int] = []
        self.pacer = Pacer(1000, self._emit)
        self.corrupt_p = corrupt_p
        self.truncate_every = truncate_every
        self.emitted: list[Emitted] = []
        self.commands: list[int] = []
        self.seq = 0
        self._drop = 0
        self.outputs = (0, 0)

    @property
    def live(self) -> bool:
        return self.pacer.running

    def drop_next(self, n: int) -> None:
        self._drop += n

    def on_unplug(self) -> None:
        self.pacer.stop()

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            self.commands.append(c)
            if c == 0xFF:
                self.pacer.stop()
            elif self.live:
                if c == 0x00:
                    self.pacer.stop()
                elif c & 0xF3 == 0xB3:
                    self.outputs = ((c >> 2) & 1, (c >> 3) & 1)
            elif c == 0x07:
                self.send(VERSION)
            elif c == 0x0B:
                self.send(self.state_reply())
            elif c & 0x3F == 0x03:
                self.rate_hz = RATES[c >> 6]
            elif c & 0x03 in (0x01, 0x02):
                mask = c >> 2
                self.analog = [a for a in range(1, 7) if mask & (1 << (a - 1))]
                if self.analog:
                    self.seq = 0
                    self.pacer.rate_hz = self.rate_hz * self.rate_scale
                    self.pacer.start()

    def state_reply(self) -> bytes:
        vals = [int(v) for v in self.rng.integers(0, 1024, 7)]  # A1-A6, battery
        out = bytearray()
        for v in vals:
            out += v.to_bytes(2, "little")
        out.append(30)  # battery threshold
        out.append((self.outputs[0] << 5) | (self.outputs[1] << 4))
        out[-1] |= crc4(bytes(out))
        return bytes(out)

    def _emit(self, n: int) -> None:
        out = bytearray()
        bits = channel_bits(len(self.analog))
        for _ in range(n):
            idx = len(self.emitted)
            vals = tuple(int(self.rng.integers(0, 1 << b)) for b in bits)
            dig = (idx & 1, (idx >> 3) & 1, self.outputs[0], self.outputs[1])
            raw = encode_frame(self.seq, vals, dig)
            e = Emitted(idx, self.seq, vals, dig, "sent")
            self.emitted.append(e)
            self.seq = (self.seq + 1) & 0xF
            if self._drop > 0:
                self._drop -= 1
                e.fate = "dropped"
                continue
            if self.truncate_every and (idx + 1) % self.truncate_every == 0:
                raw = raw[: self._frng.randrange(1, len(raw))]
                e.fate = "truncated"
            elif self.corrupt_p > 0:
                b = bytearray(raw)
                for i in range(len(b)):
                    if self._frng.random() < self.corrupt_p:
                        b[i] ^= self._frng.randrange(1, 256)
                        e.fate = "corrupted"
                raw = bytes(b)
            out += raw
        self.send(bytes(out))
