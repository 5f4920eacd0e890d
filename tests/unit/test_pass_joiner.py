"""`driver.PassJoiner`: the packets a BLE driver decoded in one loop pass become one block per
run of contiguous packets of a stream, and the pipeline sees the same samples, counters and
packet ends as from the packets one by one."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.driver import PassJoiner
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.runtime.pipeline import Pipeline


def _desc(stream_id: str, counter_bits: int = 16, timestamp_hz: float = 0.0) -> StreamDescriptor:
    return StreamDescriptor(
        stream_id=stream_id,
        device_id="dev",
        kind=StreamKind.EMG,
        rate_hz=1000.0,
        channels=(ChannelSpec("a", "uV"), ChannelSpec("b", "uV")),
        counter_bits=counter_bits,
        timestamp_hz=timestamp_hz,
    )


def _packet(
    stream_id: str, counter: int, n: int, arrival_s: float, ticks: int | None = None
) -> SampleBlock:
    data = np.arange(counter, counter + n, dtype=np.float64)[:, None] * [1.0, -1.0]
    return SampleBlock(stream_id, counter, data, arrival_s, device_ticks=ticks, ticks_index=n - 1)


def test_contiguous_packets_join_with_the_last_arrival_and_timestamp() -> None:
    joiner = PassJoiner([_desc("s")])
    for k in range(3):
        joiner.add(_packet("s", 100 + 8 * k, 8, 5.0 + 1e-5 * k, ticks=1000 + 8 * k + 7))
    assert len(joiner) == 3
    (block,) = joiner.take()
    assert len(joiner) == 0
    assert (block.counter, block.n_samples, block.packet_samples) == (100, 24, 8)
    assert block.arrival_s == 5.0 + 2e-5  # every packet was in by the last one's arrival
    # the last packet's timestamp, at its last sample: 2 * 8 + 7 in the joined block
    assert (block.device_ticks, block.ticks_index) == (1023, 23)
    np.testing.assert_array_equal(block.data[:, 0], np.arange(100, 124))


def test_runs_break_at_a_loss_a_size_change_and_a_wrap_is_contiguous() -> None:
    joiner = PassJoiner([_desc("s", counter_bits=8)])
    counters_sizes = [(240, 8), (248, 8), (0, 8), (16, 8), (24, 4), (28, 4)]  # wrap at 256
    for c, n in counters_sizes:
        joiner.add(_packet("s", c, n, 1.0))
    blocks = joiner.take()
    assert [(b.counter, b.n_samples, b.packet_samples) for b in blocks] == [
        (240, 24, 8),  # 240, 248, 0: the counter wrapped, still contiguous
        (16, 8, 0),  # 8 samples lost before it; a 4-sample packet after it: a lone packet
        (24, 8, 4),
    ]


def test_interleaved_streams_join_per_stream_in_first_packet_order() -> None:
    joiner = PassJoiner([_desc("ecg"), _desc("acc")])
    for block in (
        _packet("ecg", 0, 13, 1.0),
        _packet("acc", 50, 20, 1.0),
        _packet("ecg", 13, 13, 1.0),
        _packet("acc", 70, 20, 1.0),
        _packet("ecg", 26, 13, 1.0),
    ):
        joiner.add(block)
    blocks = joiner.take()
    assert [(b.stream_id, b.counter, b.n_samples) for b in blocks] == [
        ("ecg", 0, 39),
        ("acc", 50, 40),
    ]


def test_a_lone_packet_and_blocks_it_must_not_touch_pass_through() -> None:
    joiner = PassJoiner([_desc("s")])
    one = _packet("s", 0, 8, 1.0)
    joiner.add(one)
    assert joiner.take()[0] is one
    with_times = _packet("s", 8, 8, 1.0)
    with_times.host_t_s = np.arange(8.0)
    already_joined = _packet("s", 24, 16, 1.0)
    already_joined.packet_samples = 8
    for block in (_packet("s", 0, 8, 1.0), with_times, already_joined, _packet("s", 40, 16, 1.0)):
        joiner.add(block)
    assert [b.n_samples for b in joiner.take()] == [8, 8, 16, 16]


@pytest.mark.parametrize("timestamps", [False, True])
def test_the_pipeline_keeps_and_stamps_a_joined_pass_as_its_packets(timestamps: bool) -> None:
    """Packet by packet against the joined blocks of each pass: the same samples kept, the
    same loss counted, and the same times once settled (a joined block is stamped after all
    its packets were observed; one by one, the first ones before the later ones are seen).
    `test_pipeline_joined_blocks` checks that the clock sees the same packet ends."""
    desc = _desc("s", timestamp_hz=1e6 if timestamps else 0.0)
    rng = np.random.default_rng(3)
    passes: list[list[SampleBlock]] = []
    counter = 0
    for k in range(400):  # 15 ms connection events, 8-sample packets at 1 kHz, up to 3 each
        t_event = 2.0 + 0.015 * k
        arrival = t_event + 0.0003 + rng.exponential(0.0005)
        done = int((t_event - 2.0) * 1000.0) // 8 * 8
        pkts: list[SampleBlock] = []
        while counter + 8 <= done and len(pkts) < 3:
            ticks = (counter + 7) * 1000 if timestamps else None
            pkts.append(_packet("s", counter, 8, arrival, ticks=ticks))
            counter += 8
        if k == 200:  # a lost packet mid-pass: two runs in that pass
            assert len(pkts) >= 2
            del pkts[len(pkts) // 2]
        if pkts:
            passes.append(pkts)
    ingested: dict[bool, int] = {}
    rings = {}
    counters = {}
    for join in (False, True):
        pipe = Pipeline([desc], history_s=60.0, emit=lambda _e: None)
        joiner = PassJoiner([desc])
        ingested[join] = 0
        for pkts in passes:
            for p in pkts:
                joiner.add(p)
            joined_blocks = joiner.take()
            for b in joined_blocks if join else pkts:
                pipe.ingest(b)
                ingested[join] += 1
        rings[join] = pipe.streams["s"].ring
        counters[join] = pipe.streams["s"].counters
    assert ingested[True] < 0.7 * ingested[False]
    assert counters[True].missing_samples == counters[False].missing_samples == 8
    assert counters[True].gaps == counters[False].gaps == 1
    assert counters[True].samples == counters[False].samples == counter - 8
    one, joined = (rings[j].window_by_index(0, counter) for j in (False, True))
    np.testing.assert_array_equal(joined.data, one.data)
    np.testing.assert_array_equal(joined.valid, one.valid)
    ok = one.valid
    truth = 2.0 + np.arange(counter)[ok] / 1000.0  # sample i taken at 2 s + i ms
    err_one, err_joined = (np.abs(w.t_s[ok] - truth)[1000:] for w in (one, joined))
    assert np.max(np.abs(joined.t_s[ok] - one.t_s[ok])[1000:]) < 0.5e-3
    assert np.percentile(err_joined, 99) <= np.percentile(err_one, 99) + 0.05e-3
