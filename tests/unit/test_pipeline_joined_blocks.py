"""A block of joined packets (`SampleBlock.packet_samples`) teaches the clock model what the
same packets would have, delivered one by one: the pipeline observes every kept packet's end."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.clock import ClockModel
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.runtime.pipeline import Pipeline

RATE_HZ = 1000.0
P = 5  # samples per packet
TICKS_PER_SAMPLE = 1000  # a 1 MHz device clock
DRIFT = 80e-6


class RecordingClock(ClockModel):
    """The clock model, keeping every packet observation it is given (`observe` is
    `observe_block` of one packet)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        super().__init__(nominal_rate_hz=RATE_HZ)
        self.seen: list[tuple[float, float]] = []

    def observe_block(
        self,
        first_device_s: float,
        period_s: float,
        k_start: int,
        k_step: int,
        k_last: int,
        arrival_s: float,
        out: np.ndarray,
    ) -> np.ndarray:
        for k in [*range(k_start, k_last, k_step), k_last]:
            self.seen.append((k * period_s + first_device_s, arrival_s))
        return super().observe_block(
            first_device_s, period_s, k_start, k_step, k_last, arrival_s, out
        )


def _pipeline() -> Pipeline:
    desc = StreamDescriptor(
        "dev.imu",
        "dev",
        StreamKind.IMU,
        RATE_HZ,
        (ChannelSpec("a", "g"), ChannelSpec("b", "g")),
        counter_bits=16,
        timestamp_hz=1e6,
        timestamp_bits=32,
    )
    pipe = Pipeline([desc], history_s=30.0, emit=lambda _event: None)
    pipe.clocks["dev"] = pipe.streams["dev.imu"].clock = RecordingClock()
    return pipe


def _deliveries(seed: int) -> list[tuple[int, int, float]]:
    """(first sample index, samples, arrival) of each delivery: USB-like bursts every ~16 ms
    carrying the packets completed by then, some re-sending samples already delivered (a
    head that is partly or wholly a duplicate, not on a packet boundary either)."""
    rng = np.random.default_rng(seed)
    out = []
    sent = 0  # samples delivered so far (whole packets)
    t = 0.0
    while sent < 8000:
        t += 0.016 + rng.uniform(-0.0005, 0.0005)
        done = int((t * RATE_HZ) // P) * P  # samples in complete packets by t
        if done <= sent:
            continue
        arrival = 10.0 + t * (1 + DRIFT) + rng.exponential(0.0003)
        start = sent
        if rng.random() < 0.15:  # a retransmission: starts up to 2 packets back
            start = max(0, sent - int(rng.integers(1, 2 * P + 1)))
        out.append((start, done - start, arrival))
        sent = done
    return out


def _block(first: int, n: int, arrival: float, packet_samples: int) -> SampleBlock:
    data = np.stack([np.arange(first, first + n, dtype=np.float64)] * 2, axis=1)
    return SampleBlock(
        "dev.imu",
        first % (1 << 16),
        data,
        arrival,
        device_ticks=first * TICKS_PER_SAMPLE,
        ticks_index=0,
        packet_samples=packet_samples,
    )


def _feed(seed: int, how: str) -> Pipeline:
    """`how`: "packets" (one block per packet, on the packet grid of the joined block, so a
    partly duplicate head is a partly duplicate packet), "joined" (one block per delivery
    with packet_samples), "joined_unmarked" (the same without packet_samples)."""
    pipe = _pipeline()
    for first, n, arrival in _deliveries(seed):
        if how == "packets":
            for k in range(0, n, P):
                pipe.ingest(_block(first + k, min(P, n - k), arrival, 0))
        else:
            pipe.ingest(_block(first, n, arrival, P if how == "joined" else 0))
    return pipe


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_joined_blocks_teach_the_clock_what_single_packets_would(seed: int) -> None:
    one_by_one, joined, unmarked = (
        _feed(seed, h) for h in ("packets", "joined", "joined_unmarked")
    )
    st_p, st_j, st_u = (p.streams["dev.imu"] for p in (one_by_one, joined, unmarked))
    total = max(first + n for first, n, _ in _deliveries(seed))
    # the same samples kept, duplicates counted the same
    assert st_j.counters.samples == st_p.counters.samples == total
    assert st_j.counters.duplicate_samples == st_p.counters.duplicate_samples > 0
    assert st_j.counters.missing_samples == st_p.counters.missing_samples == 0
    # the clock saw the same observations: every packet's end once, in the same order (the
    # device times may differ by float rounding: ticks minus an offset per packet against
    # first + k * period)
    seen_p, seen_j, seen_u = (np.array(st.clock.seen) for st in (st_p, st_j, st_u))  # type: ignore[attr-defined]
    assert seen_j.shape == seen_p.shape
    np.testing.assert_allclose(seen_j[:, 0], seen_p[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(seen_j[:, 1], seen_p[:, 1])
    assert len(seen_u) < len(seen_p) / 2  # the block's end alone
    # a joined block is stamped once all its packets were observed (one by one, the first
    # packets are stamped before the later ones are seen): the same samples, times close
    total_w = (st.ring.window_by_index(0, total) for st in (st_p, st_j))
    w_p, w_j = total_w
    np.testing.assert_array_equal(w_j.data, w_p.data)
    assert np.max(np.abs(w_j.t_s - w_p.t_s)[1000:]) < 0.5e-3
