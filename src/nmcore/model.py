"""The data that crosses stage seams: stream descriptors, sample blocks, events.

Times named `*_s` without qualification are host monotonic seconds (the one clock every
published result uses). Device time is always named `device_*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ChannelSpec",
    "Event",
    "SampleBlock",
    "StreamDescriptor",
    "StreamKind",
]

FloatArray = npt.NDArray[np.float64]


class StreamKind(StrEnum):
    EMG = "emg"
    IMU = "imu"
    FORCE = "force"
    TRIGGER = "trigger"
    COP = "cop"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    unit: str


@dataclass(frozen=True, slots=True)
class StreamDescriptor:
    """What a device says about one of its streams, once; everything downstream asks this.

    `counter_bits`: the device sample counter wraps at 2**counter_bits (0: the device has no
    counter and the driver counts samples itself). `timestamp_hz`/`timestamp_bits`: the device
    clock's tick rate and wrap (0 Hz: no device timestamp, the counter times the nominal period
    is the device time).
    """

    stream_id: str
    device_id: str
    kind: StreamKind
    rate_hz: float
    channels: tuple[ChannelSpec, ...]
    counter_bits: int = 32
    timestamp_hz: float = 0.0
    timestamp_bits: int = 64

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)


@dataclass(slots=True)
class SampleBlock:
    """Consecutive samples of one stream as a device sent them.

    `counter`: raw device counter of the first sample (modulo 2**counter_bits).
    `device_ticks`: raw device timestamp (modulo 2**timestamp_bits) of sample `ticks_index`
    of this block, or None. `arrival_s`: host monotonic time the transport received the bytes.
    `data`: (n_samples, n_channels) float64 in physical units after driver scaling.
    `host_t_s`: sample times already on the host clock (a replayed recording, an analyzed
    file's time column); the pipeline then uses them as they are instead of the clock model.
    `packet_samples`: when a driver joined the contiguous packets of one delivery into one
    block, their size (0: the block is one packet). The clock model then sees every packet's
    end, as if they had come one by one: the first packet's is the delivery's tightest lower
    bound (it was not complete when the previous delivery left), the last one's its tightest
    upper bound, and the model's batch logic counts packets. Set it only when every packet
    of the block has that size and came whole in this delivery (a byte stream can split a
    frame across reads).
    """

    stream_id: str
    counter: int
    data: FloatArray
    arrival_s: float
    device_ticks: int | None = None
    ticks_index: int = 0
    host_t_s: FloatArray | None = None
    packet_samples: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])


@dataclass(slots=True)
class Event:
    """Something that happened at host time `t_s`: a perturbation, an onset, a gap, a device
    state change. `data` holds the type-specific fields; publishers turn it into a schema."""

    type: str
    t_s: float
    source: str
    data: dict[str, Any] = field(default_factory=dict)
