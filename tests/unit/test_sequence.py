"""SequenceTracker: raw wrapping counters in, exact absolute indices and loss counts out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmcore.buffer import Admission, SequenceTracker
from nmcore.buffer.sequence import DEFAULT_RESET_THRESHOLD

BIT_WIDTHS = [8, 16, 24, 32]


@dataclass(frozen=True)
class Packet:
    true_start: int  # absolute index in the device's own numbering (never wraps)
    n: int

    def raw(self, bits: int) -> int:
        return self.true_start % (1 << bits) if bits else self.true_start


def make_packets(start: int, sizes: list[int]) -> list[Packet]:
    packets = []
    index = start
    for n in sizes:
        packets.append(Packet(index, n))
        index += n
    return packets


def limit_consecutive_drops(actions: list[str], limit: int) -> list[str]:
    out: list[str] = []
    run = 0
    for action in actions:
        if action == "drop":
            run += 1
            if run > limit:
                action, run = "keep", 0
        else:
            run = 0
        out.append(action)
    return out


@st.composite
def lossy_streams(draw: st.DrawFn) -> tuple[int, list[Packet], list[bool]]:
    bits = draw(st.sampled_from(BIT_WIDTHS))
    # 8-bit counters need short packets: a run of drops must stay under half the range (128).
    max_n = 8 if bits == 8 else 40
    start = draw(st.integers(0, (1 << bits) - 1))
    sizes = draw(st.lists(st.integers(1, max_n), min_size=2, max_size=120))
    actions = draw(
        st.lists(
            st.sampled_from(["keep", "keep", "drop"]), min_size=len(sizes), max_size=len(sizes)
        )
    )
    actions = limit_consecutive_drops(actions, 10)
    actions[0] = "keep"  # the tracker anchors on the first packet it sees
    return bits, make_packets(start, sizes), [a == "keep" for a in actions]


@settings(max_examples=150, deadline=None)
@given(stream=lossy_streams())
def test_counted_missing_samples_equal_the_injected_drops(
    stream: tuple[int, list[Packet], list[bool]],
) -> None:
    bits, packets, kept = stream
    tracker = SequenceTracker(bits)
    base = packets[0].true_start
    for packet, keep in zip(packets, kept, strict=True):
        if keep:
            adm = tracker.admit(packet.raw(bits), packet.n)
            assert adm.first_index == packet.true_start - base
            assert (adm.skip, adm.n_keep) == (0, packet.n)
    last_kept = max(i for i, keep in enumerate(kept) if keep)
    # drops after the last kept packet cannot be seen yet; every other one is counted exactly
    injected = sum(p.n for p, keep in zip(packets[:last_kept], kept, strict=False) if not keep)
    totals = tracker.totals
    assert totals.missing_samples == injected
    assert totals.packets == sum(kept)
    assert (totals.duplicate_samples, totals.out_of_order_packets, totals.resets) == (0, 0, 0)


@pytest.mark.parametrize("bits", BIT_WIDTHS)
def test_gap_sizes_are_exact_across_many_wraps(bits: int) -> None:
    rng = np.random.default_rng(bits)
    modulus = 1 << bits
    tracker = SequenceTracker(bits)
    true_index = modulus - 300  # start just before a wrap
    expected_first = 0
    injected = 0
    # each packet is 200 samples or a quarter of the range, so 8- and 16-bit wrap many times
    n = min(200, modulus // 4)
    for i in range(400):
        gap = int(rng.integers(1, modulus // 2 - n)) if i and rng.random() < 0.2 else 0
        true_index += gap
        expected_first += gap
        injected += gap
        adm = tracker.admit(true_index % modulus, n)
        assert adm.first_index == expected_first
        assert adm.gap_samples == gap
        assert adm.kind == ("gap" if gap else "ok")
        true_index += n
        expected_first += n
    assert tracker.totals.missing_samples == injected
    assert tracker.next_index == expected_first


def test_forward_jump_of_half_the_range_reads_as_backwards() -> None:
    tracker = SequenceTracker(8, reset_threshold=200)
    tracker.admit(0, 4)
    assert tracker.admit(4 + 127, 4).kind == "gap"  # 127 ahead: a gap
    tracker2 = SequenceTracker(8, reset_threshold=200)
    tracker2.admit(0, 4)
    assert tracker2.admit(4 + 128, 4).kind == "duplicate"  # 128 ahead == 128 behind


def test_duplicates_are_dropped_and_counted() -> None:
    tracker = SequenceTracker(16)
    assert tracker.admit(100, 10) == Admission(0, 0, 10, 0, "ok")
    assert tracker.admit(110, 10) == Admission(10, 0, 10, 0, "ok")
    assert tracker.admit(110, 10) == Admission(20, 10, 0, 0, "duplicate")
    # a packet overlapping the last one by 4 samples keeps its new 6
    assert tracker.admit(116, 10) == Admission(20, 4, 6, 0, "duplicate")
    assert tracker.admit(126, 5) == Admission(26, 0, 5, 0, "ok")
    totals = tracker.totals
    assert (totals.duplicate_samples, totals.missing_samples, totals.packets) == (14, 0, 5)


def test_late_packet_is_out_of_order_and_stays_missing() -> None:
    tracker = SequenceTracker(8)
    tracker.admit(250, 4)  # 250..253
    assert tracker.admit(2, 4) == Admission(8, 0, 4, 4, "gap")  # 254, 255, 0, 1 lost (wrap)
    late = tracker.admit(254, 4)
    assert late == Admission(8, 4, 0, 0, "out_of_order")
    assert tracker.admit(254, 4).kind == "duplicate"  # the late packet again
    assert tracker.admit(6, 4) == Admission(12, 0, 4, 0, "ok")
    totals = tracker.totals
    assert totals.missing_samples == 4
    assert totals.out_of_order_packets == 1
    assert totals.late_samples == 4
    assert totals.duplicate_samples == 4


@st.composite
def shuffled_streams(draw: st.DrawFn) -> tuple[int, list[Packet], list[Packet]]:
    bits = draw(st.sampled_from(BIT_WIDTHS))
    max_n = 6 if bits == 8 else 30
    start = draw(st.integers(0, (1 << bits) - 1))
    sizes = draw(st.lists(st.integers(1, max_n), min_size=2, max_size=80))
    actions = draw(
        st.lists(
            st.sampled_from(["keep", "keep", "keep", "drop", "dup", "late1", "late2", "late3"]),
            min_size=len(sizes),
            max_size=len(sizes),
        )
    )
    actions = limit_consecutive_drops(actions, 5)
    actions[0] = "keep"
    packets = make_packets(start, sizes)
    # Arrival order: packet i at position i; "lateD" moves it just after packet i + D;
    # "dup" sends it twice in a row.
    keyed: list[tuple[float, Packet]] = []
    for i, (packet, action) in enumerate(zip(packets, actions, strict=True)):
        if action == "drop":
            continue
        if action.startswith("late"):
            keyed.append((i + int(action[-1]) + 0.5, packet))
        else:
            keyed.append((float(i), packet))
            if action == "dup":
                keyed.append((i + 0.25, packet))
    arrival = [packet for _, packet in sorted(keyed, key=lambda item: item[0])]
    return bits, packets, arrival


@settings(max_examples=150, deadline=None)
@given(stream=shuffled_streams())
def test_reordered_duplicated_lossy_stream_matches_reference(
    stream: tuple[int, list[Packet], list[Packet]],
) -> None:
    bits, packets, arrival = stream
    tracker = SequenceTracker(bits)
    base = packets[0].true_start
    received: set[int] = set()
    front = base  # one past the newest index the stream has reached
    missing = duplicates = late_total = late_packets = 0
    for packet in arrival:
        start, stop = packet.true_start, packet.true_start + packet.n
        behind = range(start, min(stop, front))
        late = sum(1 for i in behind if i not in received)
        dup = len(behind) - late
        gap = max(0, start - front)
        kind = "gap" if gap else "ok" if start == front else "out_of_order" if late else "duplicate"
        skip = len(behind)
        want = Admission(start + skip - base, skip, packet.n - skip, gap, kind)  # type: ignore[arg-type]
        assert tracker.admit(packet.raw(bits), packet.n) == want
        received.update(range(start, stop))
        missing += gap
        duplicates += dup
        late_total += late
        late_packets += bool(late)
        front = max(front, stop)
    totals = tracker.totals
    assert totals.missing_samples == missing
    assert totals.duplicate_samples == duplicates
    assert totals.late_samples == late_total
    assert totals.out_of_order_packets == late_packets
    assert totals.resets == 0


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_counter_restart_is_a_reset_and_indices_keep_increasing(bits: int) -> None:
    tracker = SequenceTracker(bits)
    tracker.admit(20_000, 32)
    tracker.admit(20_032, 32)
    adm = tracker.admit(0, 32)  # the device rebooted
    assert adm == Admission(64, 0, 32, 0, "reset")
    assert tracker.admit(32, 32) == Admission(96, 0, 32, 0, "ok")
    assert tracker.totals.resets == 1
    assert tracker.totals.missing_samples == 0


def test_late_packet_from_an_older_gap_is_recognised() -> None:
    tracker = SequenceTracker(16)
    tracker.admit(0, 10)
    tracker.admit(20, 10)  # 10..19 lost
    tracker.admit(40, 10)  # 30..39 lost
    assert tracker.admit(10, 10) == Admission(20, 10, 0, 0, "out_of_order")
    assert tracker.admit(30, 10).kind == "out_of_order"
    assert tracker.admit(10, 10).kind == "duplicate"
    totals = tracker.totals
    assert (totals.missing_samples, totals.late_samples, totals.duplicate_samples) == (20, 20, 10)


def test_reset_threshold_default_and_override() -> None:
    assert SequenceTracker(32).reset_threshold == DEFAULT_RESET_THRESHOLD
    assert SequenceTracker(8).reset_threshold == 64
    assert SequenceTracker(0).reset_threshold == DEFAULT_RESET_THRESHOLD
    tracker = SequenceTracker(16, reset_threshold=10)
    tracker.admit(1000, 20)
    assert tracker.admit(1020 - 10, 4).kind == "duplicate"  # exactly the threshold back
    assert tracker.admit(1020 - 11, 4).kind == "reset"  # one more is a restart


def test_restart_more_than_half_the_range_back_needs_max_gap() -> None:
    # A 16-bit counter falling from 50 064 to 0 is 15 472 *ahead* in modular terms:
    # counters alone read it as a gap; a plausibility limit on gaps catches it.
    plain = SequenceTracker(16)
    plain.admit(50_000, 64)
    assert plain.admit(0, 32) == Admission(15_536, 0, 32, 15_472, "gap")
    limited = SequenceTracker(16, max_gap=4096)
    limited.admit(50_000, 64)
    assert limited.admit(0, 32) == Admission(64, 0, 32, 0, "reset")


def test_max_gap_turns_implausible_jumps_into_resets() -> None:
    tracker = SequenceTracker(32, max_gap=10_000)
    tracker.admit(5, 10)
    assert tracker.admit(15 + 10_000, 10).kind == "gap"
    assert tracker.admit(2_000_000_000, 10) == Admission(10_020, 0, 10, 0, "reset")
    assert tracker.totals.missing_samples == 10_000


def test_resync_restarts_the_mapping_where_the_runtime_says() -> None:
    tracker = SequenceTracker(16)
    tracker.admit(7, 10)
    tracker.resync(500)  # reconnected; the clock says ~483 samples passed
    assert tracker.admit(40_000, 10) == Admission(500, 0, 10, 0, "ok")
    assert tracker.admit(40_010, 10).first_index == 510
    tracker.resync(100)  # never backwards: indices must keep increasing
    assert tracker.admit(3, 5).first_index == 520
    totals = tracker.totals
    assert (totals.resyncs, totals.resync_skipped_samples, totals.missing_samples) == (2, 490, 0)


def test_driver_counted_stream_without_device_counter() -> None:
    tracker = SequenceTracker(0)
    assert tracker.admit(0, 100).kind == "ok"
    assert tracker.admit(2**40, 100) == Admission(2**40, 0, 100, 2**40 - 100, "gap")
    assert tracker.admit(2**40 + 100, 1).first_index == 2**40 + 100


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="counter_bits"):
        SequenceTracker(65)
    with pytest.raises(ValueError, match="counter_bits"):
        SequenceTracker(-1)
    with pytest.raises(ValueError, match="reset_threshold"):
        SequenceTracker(16, reset_threshold=-3)
    tracker = SequenceTracker(8)
    with pytest.raises(ValueError, match="does not fit a 8-bit counter"):
        tracker.admit(256, 1)
    with pytest.raises(ValueError, match="n_samples"):
        tracker.admit(0, -1)
    with pytest.raises(ValueError, match="raw_counter"):
        tracker.admit(1.5, 1)  # type: ignore[arg-type]
    assert tracker.totals.packets == 0


def test_numpy_integers_are_accepted() -> None:
    tracker = SequenceTracker(16)
    tracker.admit(np.uint16(65_530), np.int64(10))
    adm = tracker.admit(np.uint16(4), 3)
    assert (adm.first_index, adm.kind) == (10, "ok")
    assert type(adm.first_index) is int
