"""RingBuffer facade against a plain dict-of-samples model of what it should hold."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmcore._numba import numba
from nmcore.buffer import PushResult, RingBuffer, Window
from nmcore.buffer import _kernels as k

F64 = npt.NDArray[np.float64]
PERIOD_S = 0.001
T0_S = 10.0


def time_of_index(index: npt.ArrayLike) -> F64:
    return np.asarray(T0_S + np.asarray(index, dtype=np.float64) * PERIOD_S, dtype=np.float64)


class Model:
    """What the ring must hold, as a dict {absolute index: (row, t, valid)}."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.n_channels = n_channels
        self.capacity = capacity
        self.samples: dict[int, tuple[list[float], float, bool]] = {}
        self.head = 0

    def push(self, first: int, data: F64, t_s: F64) -> PushResult:
        n = data.shape[0]
        gap = max(0, first - self.head)
        for i in range(self.head, first):
            self.samples[i] = ([math.nan] * self.n_channels, math.nan, False)
        rejected = 0
        for j in range(n):
            if first + j < self.head:
                rejected += 1
            else:
                self.samples[first + j] = (list(data[j]), float(t_s[j]), True)
        self.head = max(self.head, first + n)
        return PushResult(n - rejected, gap, rejected)

    @property
    def oldest(self) -> int:
        return max(0, self.head - self.capacity)

    def rows(self, start: int, stop: int) -> list[int]:
        return [i for i in range(start, stop) if self.oldest <= i < self.head]

    def keys(self) -> dict[int, float]:
        held = list(range(self.oldest, self.head))
        timed = [i for i in held if self.samples[i][2] and not math.isnan(self.samples[i][1])]
        keys = {}
        for i in held:
            if i in timed:
                keys[i] = self.samples[i][1]
                continue
            before = [j for j in timed if j < i]
            after = [j for j in timed if j > i]
            if before and after:
                p, q = before[-1], after[0]
                tp, tq = self.samples[p][1], self.samples[q][1]
                keys[i] = tp + (i - p) * (tq - tp) / (q - p)
            elif before or after:
                keys[i] = self.samples[(before or after)[-1 if before else 0]][1]
            else:
                keys[i] = math.nan
        return keys


def assert_window(window: Window, model: Model, indices: list[int], clipped: bool) -> None:
    assert len(window) == len(indices)
    if indices:
        assert window.first_index == indices[0]
        assert indices == list(range(indices[0], indices[-1] + 1))
    assert window.data.shape == (len(indices), model.n_channels)
    want_data = np.array([model.samples[i][0] for i in indices]).reshape(-1, model.n_channels)
    np.testing.assert_array_equal(window.data, want_data)
    np.testing.assert_array_equal(window.t_s, [model.samples[i][1] for i in indices])
    np.testing.assert_array_equal(window.valid, [model.samples[i][2] for i in indices])
    assert window.has_gap == (not all(model.samples[i][2] for i in indices))
    assert window.clipped == clipped


push_ops = st.lists(
    st.tuples(
        st.sampled_from(["next", "next", "gap", "back"]),
        st.integers(0, 50),  # block size
        st.integers(1, 120),  # gap or overlap size
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    ops=push_ops,
    capacity=st.integers(1, 64),
    n_channels=st.integers(1, 4),
    queries=st.lists(st.tuples(st.integers(-20, 400), st.integers(0, 90)), max_size=6),
)
def test_ring_matches_model(
    ops: list[tuple[str, int, int]],
    capacity: int,
    n_channels: int,
    queries: list[tuple[int, int]],
) -> None:
    ring = RingBuffer(n_channels, capacity)
    model = Model(n_channels, capacity)
    rng = np.random.default_rng(len(ops))
    for kind, n, jump in ops:
        first = {"next": ring.head, "gap": ring.head + jump, "back": max(0, ring.head - jump)}[kind]
        data = rng.standard_normal((n, n_channels))
        t_s = time_of_index(np.arange(first, first + n))
        assert ring.push(first, data, t_s) == model.push(first, data, t_s)
        assert (ring.head, ring.oldest) == (model.head, model.oldest)
    keys = model.keys()
    for start, length in queries:
        stop = start + length
        rows = model.rows(start, stop)
        want_clipped = rows != list(range(start, stop))
        assert_window(ring.window_by_index(start, stop), model, rows, want_clipped)
        assert ring.has_gap(start, stop) == (
            (want_clipped and stop > start) or not all(model.samples[i][2] for i in rows)
        )
        # half-sample offsets keep query times off the sample times
        t0 = float(time_of_index(start - 0.5))
        t1 = float(time_of_index(stop - 0.5))
        inside = [i for i, key in keys.items() if t0 <= key < t1]
        finite = [key for key in keys.values() if not math.isnan(key)]
        clipped_t = not finite or t0 < keys[model.oldest] or t1 > keys[model.head - 1]
        assert_window(ring.window_by_time(t0, t1), model, inside, clipped_t)
    n_latest = queries[0][1] if queries else 5
    latest_rows = model.rows(model.head - n_latest, model.head)
    assert_window(ring.latest(n_latest), model, latest_rows, len(latest_rows) != n_latest)


def test_gap_rows_are_nan_and_invalid_never_stitched() -> None:
    ring = RingBuffer(2, 100)
    block = np.ones((10, 2))
    ring.push(0, block, time_of_index(np.arange(10)))
    result = ring.push(15, 2 * block, time_of_index(np.arange(15, 25)))
    assert result == PushResult(written=10, gap_samples=5, rejected_samples=0)
    window = ring.window_by_index(5, 20)
    assert window.has_gap
    assert window.valid.tolist() == [True] * 5 + [False] * 5 + [True] * 5
    assert np.isnan(window.data[5:10]).all()
    assert np.isnan(window.t_s[5:10]).all()
    # a time window over the hole returns the hole's rows
    by_time = ring.window_by_time(float(time_of_index(11.5)), float(time_of_index(13.5)))
    assert (by_time.first_index, len(by_time)) == (12, 2)
    assert not by_time.valid.any()
    assert ring.has_gap(8, 12)
    assert not ring.has_gap(15, 25)
    assert not ring.has_gap(3, 3)
    assert math.isnan(ring.time_of(12))
    assert ring.time_of(20) == float(time_of_index(20))
    assert ring.gap_samples_total == 5


def test_gap_longer_than_capacity_invalidates_everything() -> None:
    ring = RingBuffer(1, 8)
    ring.push(0, np.ones((8, 1)), time_of_index(np.arange(8)))
    result = ring.push(1000, np.empty((0, 1)), np.empty(0))
    assert result.gap_samples == 992
    assert (ring.head, ring.oldest) == (1000, 992)
    window = ring.latest(8)
    assert not window.valid.any()
    assert not window.clipped


def test_samples_behind_head_are_rejected_and_counted() -> None:
    ring = RingBuffer(1, 32)
    ring.push(0, np.zeros((10, 1)), time_of_index(np.arange(10)))
    result = ring.push(6, np.ones((6, 1)), time_of_index(np.arange(6, 12)))
    assert result == PushResult(written=2, gap_samples=0, rejected_samples=4)
    assert ring.latest(12).data[:, 0].tolist() == [0.0] * 10 + [1.0] * 2
    assert ring.rejected_samples_total == 4
    assert ring.written_total == 12


def test_clipping_is_reported() -> None:
    ring = RingBuffer(3, 16)
    ring.push(0, np.ones((40, 3)), time_of_index(np.arange(40)))
    assert (ring.oldest, ring.head, ring.n_held) == (24, 40, 16)
    window = ring.window_by_index(20, 30)
    assert (window.first_index, len(window), window.clipped) == (24, 6, True)
    assert not ring.window_by_index(24, 40).clipped
    assert ring.latest(100).clipped
    assert not ring.latest(16).clipped
    assert ring.has_gap(20, 30)  # 20-23 are overwritten: the ring cannot vouch for them
    assert ring.has_gap(38, 41)  # 40 is not written yet
    with pytest.raises(IndexError, match="not held"):
        ring.time_of(23)
    with pytest.raises(IndexError, match="not held"):
        ring.time_of(40)
    by_time = ring.window_by_time(0.0, float(time_of_index(30)))
    assert (by_time.first_index, len(by_time), by_time.clipped) == (24, 6, True)
    inside = ring.window_by_time(float(time_of_index(25)), float(time_of_index(30)))
    assert (inside.first_index, len(inside), inside.clipped) == (25, 5, False)


def test_empty_ring_reads() -> None:
    ring = RingBuffer(2, 4, start_index=50)
    assert (ring.head, ring.oldest) == (50, 50)
    window = ring.latest(3)
    assert (window.first_index, len(window), window.clipped) == (50, 0, True)
    assert window.data.shape == (0, 2)
    assert not window.has_gap
    assert ring.window_by_time(0.0, 1.0).clipped
    assert ring.push(50, np.ones((1, 2)), np.array([1.0])) == PushResult(1, 0, 0)


def test_for_history_sizes_the_ring() -> None:
    assert RingBuffer.for_history(16, 2000.0, 0.1).capacity == 200
    assert RingBuffer.for_history(16, 2000.0, 2.5).capacity == 5000
    assert RingBuffer.for_history(1, 100.0, 0.015).capacity == 2
    with pytest.raises(ValueError, match="rate_hz"):
        RingBuffer.for_history(1, 0.0, 1.0)
    with pytest.raises(ValueError, match="history_s"):
        RingBuffer.for_history(1, 100.0, math.nan)


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="n_channels"):
        RingBuffer(0, 10)
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(1, 0)
    ring = RingBuffer(2, 10)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        ring.push(0, np.ones((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="float64"):
        ring.push(0, np.ones((3, 2), dtype=np.float32), np.ones(3))
    with pytest.raises(ValueError, match="t_s"):
        ring.push(0, np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        ring.push(0, np.ones(6), np.ones(3))
    with pytest.raises(ValueError, match="t_s"):
        ring.push(3, np.ones((3, 2)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="start <= stop"):
        ring.window_by_index(5, 4)
    with pytest.raises(ValueError, match="t0_s <= t1_s"):
        ring.window_by_time(2.0, 1.0)
    assert ring.head == 0


def test_non_contiguous_block_is_written_correctly() -> None:
    ring = RingBuffer(2, 10)
    wide = np.arange(24.0).reshape(6, 4)
    ring.push(0, wide[:, ::2], np.arange(12.0)[::2])
    window = ring.latest(6)
    np.testing.assert_array_equal(window.data, wide[:, ::2])
    np.testing.assert_array_equal(window.t_s, np.arange(0.0, 12.0, 2.0))


def test_steady_blocks_of_every_array_type_land_alike() -> None:
    """A block at head of the compiled entry point's type (float64, C-contiguous, aligned,
    writeable, an int index) takes the fast path; any other (a strided view, a read-only
    array, a numpy integer index) the checked one: the same samples either way."""
    rng = np.random.default_rng(5)
    fast, checked = RingBuffer(3, 50), RingBuffer(3, 50)
    for i in range(40):
        n = int(rng.integers(0, 12))
        data = rng.standard_normal((n, 3))
        t_s = time_of_index(np.arange(fast.head, fast.head + n))
        assert fast.push(fast.head, data, t_s) == PushResult(n, 0, 0)
        other = [np.asfortranarray(data), data.copy()][i % 2]
        if i % 2:
            other.flags.writeable = False
        wide = np.empty((n, 6))
        wide[:, ::2] = data
        view = [wide[:, ::2], other][i % 3 == 0]
        assert checked.push(np.int64(checked.head), view, t_s.copy()) == PushResult(n, 0, 0)
    for a, b in ((fast.data, checked.data), (fast.t_s, checked.t_s), (fast.valid, checked.valid)):
        np.testing.assert_array_equal(a, b)
    assert fast.head == checked.head == fast.written_total == checked.written_total


def test_push_results_for_clean_blocks_are_shared_and_correct() -> None:
    ring = RingBuffer(1, 64)
    first = ring.push(0, np.ones((4, 1)), np.arange(4.0))
    second = ring.push(4, np.ones((4, 1)), np.arange(4.0, 8.0))
    assert first is second
    assert first == PushResult(4, 0, 0)


@numba.njit(cache=False)
def _mean_of_held(
    data: F64, t_s: F64, valid: npt.NDArray[np.uint8], meta: npt.NDArray[np.int64]
) -> float:
    # A consumer kernel reading the ring through the documented layout.
    capacity = t_s.shape[0]
    head = meta[k.META_HEAD]
    oldest = max(meta[k.META_START], head - capacity)
    total = 0.0
    count = 0
    for i in range(oldest, head):
        if valid[i % capacity]:
            total += data[i % capacity, 0]
            count += 1
    return total / count


def test_state_is_readable_by_a_jitted_consumer() -> None:
    ring = RingBuffer(1, 5)
    ring.push(0, np.arange(8.0).reshape(8, 1), np.arange(8.0))
    ring.push(9, np.array([[100.0]]), np.array([9.0]))
    # held: 5, 6, 7, (8 missing), 9
    assert _mean_of_held(*ring.state) == pytest.approx((5 + 6 + 7 + 100) / 4)
    assert ring.state.data is ring.data
    assert ring.state.valid is ring.valid
    assert ring.state.t_s is ring.t_s


def test_bin_means_decimate_a_held_range_without_stitching_gaps() -> None:
    ring = RingBuffer(2, 50)
    x = np.arange(40.0).reshape(20, 2)
    ring.push(0, x[:10], np.arange(10.0))
    ring.push(14, x[14:], np.arange(14.0, 20.0))  # 10..13 missing
    means, t0 = ring.bin_means(0, 19, 3)  # bins of 6: [0, 6), [6, 12), [12, 18)
    np.testing.assert_allclose(means[0], x[0:6].mean(axis=0))
    np.testing.assert_allclose(means[1], x[6:10].mean(axis=0))  # the gap is left out
    np.testing.assert_allclose(means[2], x[14:18].mean(axis=0))
    assert t0 == pytest.approx(2.5)
    rms, _ = ring.bin_means(10, 14, 2, rms=True)  # nothing received there
    assert np.isnan(rms).all()
    with pytest.raises(ValueError, match=r"within the held \[0, 20\)"):
        ring.bin_means(0, 21, 2)  # past head
    with pytest.raises(ValueError, match="2 samples for 3 bins"):
        ring.bin_means(5, 7, 3)
    with pytest.raises(ValueError, match="n_bins >= 1"):
        ring.bin_means(5, 7, 0)
    with pytest.raises(TypeError):
        ring.bin_means(5.0, 7, 1)  # type: ignore[arg-type]


def test_warm_compiles_every_kernel_the_facade_uses() -> None:
    # In a fresh interpreter: here the other tests have compiled the kernels already.
    # (ring_time_key and ring_lower_bound_time compile inside ring_time_span.)
    code = (
        "from nmcore.buffer import _kernels as k\n"
        "from nmcore.buffer.ring import _warm\n"
        "kernels = (k.ring_push, k.ring_push_at_head, k.ring_read, k.ring_time_span,\n"
        "    k.ring_count_invalid, k.ring_bin_means)\n"
        "assert not any(f.signatures for f in kernels)\n"
        "_warm()\n"
        "print(sum(bool(f.signatures) for f in kernels))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=100
    )
    assert out.stdout.strip() == "6"
