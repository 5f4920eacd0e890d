"""An nmcore acquisition board on the Nordic UART Service: the serial wire protocol
(COBS frames, nmcore.framing) carried as a byte stream, commands written to RX, frames
notified on TX cut into (MTU - 3)-byte pieces that ignore frame boundaries."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from nmcore.framing import FrameDecoder, PacketType, SampleFormat, encode_packet
from nmcore.hostclock import HostClock

from .service import CharSpec, FakeDevice, ServiceSpec

__all__ = ["NUS_RX", "NUS_SERVICE", "NUS_TX", "NusBoardEmulator"]

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"


class NusBoardEmulator:
    name = "nmcore-emg-01"
    services = (
        ServiceSpec(
            NUS_SERVICE,
            (
                CharSpec(NUS_RX, ("write", "write-without-response")),
                CharSpec(NUS_TX, ("notify",)),
            ),
        ),
    )

    def __init__(
        self,
        clock: HostClock,
        *,
        address: str = "F0:0D:CA:FE:00:01",
        rate_hz: int = 1000,
        channels: int = 2,
        per_packet: int = 20,
        scale_uv: float = 0.5,
        conn_interval_s: float = 0.015,
        mtu: int = 185,
    ) -> None:
        self.clock = clock
        self.address = address
        self.rate_hz = rate_hz
        self.channels = channels
        self.per_packet = per_packet
        self.scale_uv = scale_uv
        self.conn_interval_s = conn_interval_s
        self.mtu = mtu
        self.t0_s = clock.now()
        self.dev: FakeDevice | None = None
        self.running = False
        self.next_k = 0
        self.delivered_samples = 0
        self.commands: list[str] = []
        self._rx = FrameDecoder()
        self._tx = bytearray()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def counts(k: np.ndarray, channels: int) -> np.ndarray:
        cols = [((k * (7 + 5 * c)) % 2001 - 1000) for c in range(channels)]
        return np.stack(cols, axis=1).astype(np.int64)

    def on_connect(self, dev: FakeDevice) -> None:
        self.dev = dev
        self._rx = FrameDecoder()
        self._tx.clear()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def on_disconnect(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.dev = None

    def on_notify_changed(self, char_uuid: str, enabled: bool) -> None:
        del char_uuid, enabled

    def on_read(self, char_uuid: str) -> bytes:
        del char_uuid
        return b""

    def on_write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid != NUS_RX:
            return
        for pkt in self._rx.feed(data):
            if not pkt.ptype.is_command:
                continue
            self.commands.append(pkt.ptype.name)
            fields: dict[str, object] = {"command": pkt.ptype.name}
            if pkt.ptype is PacketType.IDENTIFY:
                fields.update(
                    device_id="emg-ble-01",
                    firmware_version=[1, 2, 0],
                    streams=[
                        {
                            "stream_id": 0,
                            "kind": "emg",
                            "sample_format": "i16",
                            "channel_count": self.channels,
                            "samples_per_packet": self.per_packet,
                            "rate_hz": self.rate_hz,
                            "scale": self.scale_uv,
                            "unit": "uV",
                        }
                    ],
                )
            elif pkt.ptype is PacketType.START:
                if not self.running:
                    self.next_k = math.ceil((self.clock.now() - self.t0_s) * self.rate_hz)
                self.running = True
                fields["running_mask"] = 1
            elif pkt.ptype is PacketType.STOP:
                self.running = False
                fields["running_mask"] = 0
            self._tx += encode_packet(PacketType.COMMAND_REPLY, counter=pkt.counter, fields=fields)

    async def _pump(self) -> None:
        chunk = self.mtu - 3
        t = self.clock.now()
        while True:
            t += self.conn_interval_s
            await self.clock.sleep_until(t)
            if self.running:
                k_end = math.floor((self.clock.now() - self.t0_s) * self.rate_hz)
                while self.next_k + self.per_packet <= k_end:
                    k = np.arange(self.next_k, self.next_k + self.per_packet, dtype=np.int64)
                    self._tx += encode_packet(
                        PacketType.EMG,
                        counter=self.next_k & 0xFFFFFFFF,
                        device_us=(self.next_k * 1_000_000 // self.rate_hz) & 0xFFFFFFFF,
                        samples=self.counts(k, self.channels),
                        sample_format=SampleFormat.I16,
                    )
                    self.next_k += self.per_packet
                    self.delivered_samples += self.per_packet
            while self._tx and self.dev is not None:
                piece, self._tx = bytes(self._tx[:chunk]), self._tx[chunk:]
                self.dev.notify(NUS_TX, piece)
