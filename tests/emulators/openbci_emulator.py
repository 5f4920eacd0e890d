"""An OpenBCI Cyton (with its dongle) on a pty, answering like firmware v3.

Commands: 'v' soft reset (banner ending in '$$$'), 'b' start, 's' stop, '?' registers,
'<' board time stamps on (footer 0xC3 once, then 0xC4), 'x...X' channel settings.
Streams 33-byte packets at 250 Hz with a wrapping sample number; channel values are
seeded random 24-bit counts (plus the extremes now and then). Every generated packet is
recorded with what happened to it: sent, dropped (never sent, as the radio loses packets),
corrupted (bytes flipped) or truncated (only a prefix sent).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pty_device import Pacer, PtyDevice

from nmcore_drivers.openbci.decoder import encode_packet

BANNER = (
    b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n"
    b"LIS3DH Device ID: 0x33\nFirmware: v3.1.2\n$$$"
)
REGISTERS = b"Board ADS Registers\nADS_ID, 00, 3E, 0, 0, 1, 1, 1, 1, 1, 0\n$$$"


@dataclass(slots=True)
class Emitted:
    index: int
    counter: int
    counts: tuple[int, ...]
    board_ms: int | None
    fate: str  # "sent", "dropped", "corrupted", "truncated"


class CytonEmulator(PtyDevice):
    def __init__(
        self,
        link: Path,
        *,
        seed: int = 0,
        rate_hz: float = 250.0,
        corrupt_p: float = 0.0,
        truncate_every: int = 0,
        answer: bool = True,
    ) -> None:
        super().__init__(link)
        self.rng = np.random.default_rng(seed)
        self._frng = random.Random(seed + 1)
        self.pacer = Pacer(rate_hz, self._emit)
        self.corrupt_p = corrupt_p
        self.truncate_every = truncate_every
        self.answer = answer
        self.emitted: list[Emitted] = []
        self.commands: list[bytes] = []
        self.counter = 0
        self.timestamps = False
        self._time_set_pending = False
        self._drop = 0
        self._cmd = bytearray()
        self.t0_ms = 1_000_000

    @property
    def streaming(self) -> bool:
        return self.pacer.running

    def drop_next(self, n: int) -> None:
        """Generate but do not send the next `n` packets (a radio loss)."""
        self._drop += n

    def on_unplug(self) -> None:
        self.pacer.stop()

    def on_bytes(self, data: bytes) -> None:
        for byte in data:
            c = bytes([byte])
            if self._cmd:  # inside an 'x...X' channel setting
                self._cmd += c
                if c == b"X":
                    self.commands.append(bytes(self._cmd))
                    ch = chr(self._cmd[1])
                    self._cmd.clear()
                    self.send(f"Success: Channel set for {ch}$$$".encode())
                continue
            self.commands.append(c)
            if not self.answer:
                continue
            if c == b"v":
                self.pacer.stop()
                self.timestamps = False
                self.send(BANNER)
            elif c == b"b":
                self.pacer.start()
            elif c == b"s":
                self.pacer.stop()
            elif c == b"?":
                self.send(REGISTERS)
            elif c == b"<":
                self.timestamps = True
                self._time_set_pending = True
                if not self.streaming:
                    self.send(b"Time stamp ON$$$")
            elif c == b"x":
                self._cmd += c

    def _counts(self) -> np.ndarray:
        vals = self.rng.integers(-(2**23), 2**23, 8)
        r = self.rng.random()
        if r < 0.05:
            vals[self.rng.integers(8)] = 2**23 - 1  # 0x7FFFFF
        elif r < 0.10:
            vals[self.rng.integers(8)] = -(2**23)  # 0x800000
        return vals

    def packet(self) -> tuple[bytes, Emitted]:
        idx = len(self.emitted)
        counts = self._counts()
        ms: int | None = None
        if self.timestamps:
            footer = 0xC3 if self._time_set_pending else 0xC4
            self._time_set_pending = False
            ms = (self.t0_ms + idx * 4) % 2**32
            raw = encode_packet(self.counter, counts, footer=footer, board_ms=ms)
        else:
            aux = tuple(int(a) for a in self.rng.integers(-2000, 2000, 3))
            raw = encode_packet(self.counter, counts, aux=aux)  # type: ignore[arg-type]
        e = Emitted(idx, self.counter, tuple(int(v) for v in counts), ms, "sent")
        self.counter = (self.counter + 1) & 0xFF
        return raw, e

    def _emit(self, n: int) -> None:
        out = bytearray()
        for _ in range(n):
            raw, e = self.packet()
            self.emitted.append(e)
            if self._drop > 0:
                self._drop -= 1
                e.fate = "dropped"
                continue
            if self.truncate_every and (e.index + 1) % self.truncate_every == 0:
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
