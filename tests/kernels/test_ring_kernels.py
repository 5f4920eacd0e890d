"""Ring kernels: each compared with a plain numpy reference and with its own `.py_func`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nmcore._numba import entry_point
from nmcore.buffer import _kernels as k

F64 = npt.NDArray[np.float64]

PUSH_IMPLS = [
    pytest.param(k.ring_push, id="jit"),
    pytest.param(k.ring_push.py_func, id="py_func"),
]


class Buffers:
    def __init__(self, capacity: int, n_channels: int, start: int = 0) -> None:
        self.data = np.full((capacity, n_channels), np.nan)
        self.t = np.full(capacity, np.nan)
        self.valid = np.zeros(capacity, dtype=np.uint8)
        self.meta = np.zeros(k.META_LEN, dtype=np.int64)
        self.meta[k.META_HEAD] = start
        self.meta[k.META_START] = start

    def copy(self) -> Buffers:
        other = Buffers.__new__(Buffers)
        other.data = self.data.copy()
        other.t = self.t.copy()
        other.valid = self.valid.copy()
        other.meta = self.meta.copy()
        return other

    def assert_equal(self, other: Buffers) -> None:
        np.testing.assert_array_equal(self.data, other.data)
        np.testing.assert_array_equal(self.t, other.t)
        np.testing.assert_array_equal(self.valid, other.valid)
        np.testing.assert_array_equal(self.meta, other.meta)


def push_reference(b: Buffers, first_index: int, data: F64, t_s: F64) -> tuple[int, int, int]:
    """Fancy-indexing numpy version of `ring_push`, written from the specification."""
    capacity = b.t.shape[0]
    n = data.shape[0]
    head = int(b.meta[k.META_HEAD])
    rejected = max(0, min(n, head - first_index))
    gap = max(0, first_index - head)
    if gap:
        idx = np.arange(head, first_index)[-capacity:] % capacity
        b.data[idx] = np.nan
        b.t[idx] = np.nan
        b.valid[idx] = 0
    keep = np.arange(first_index + rejected, first_index + n)
    src = np.arange(rejected, n)
    slots = keep[-capacity:] % capacity
    b.data[slots] = data[src[-capacity:]]
    b.t[slots] = t_s[src[-capacity:]]
    b.valid[slots] = 1
    b.meta[k.META_HEAD] = max(head, first_index + n)
    b.meta[k.META_GAP_TOTAL] += gap
    b.meta[k.META_REJECTED_TOTAL] += rejected
    b.meta[k.META_WRITTEN_TOTAL] += n - rejected
    return n - rejected, gap, rejected


def random_push_sequence(
    rng: np.random.Generator, capacity: int, n_channels: int, n_pushes: int
) -> list[tuple[int, F64, F64]]:
    """Pushes of random size with wrap-around, gaps (some longer than the ring),
    overlaps and pushes entirely in the past."""
    pushes = []
    head = 0
    for _ in range(n_pushes):
        n = int(rng.integers(0, 2 * capacity)) if rng.random() < 0.1 else int(rng.integers(0, 40))
        r = rng.random()
        if r < 0.6:
            first = head
        elif r < 0.8:
            first = head + int(rng.integers(1, 3 * capacity if rng.random() < 0.2 else 20))
        else:
            first = max(0, head - int(rng.integers(1, 50)))
        data = rng.standard_normal((n, n_channels))
        t_s = 100.0 + (first + np.arange(n)) * 1e-3
        pushes.append((first, data, t_s))
        head = max(head, first + n)
    return pushes


@pytest.mark.parametrize("push", PUSH_IMPLS)
@pytest.mark.parametrize(("capacity", "n_channels", "seed"), [(37, 3, 1), (64, 16, 2), (5, 1, 3)])
def test_push_matches_numpy_reference(
    push: Callable[..., tuple[int, int, int]], capacity: int, n_channels: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    got = Buffers(capacity, n_channels)
    want = Buffers(capacity, n_channels)
    for first, data, t_s in random_push_sequence(rng, capacity, n_channels, 150):
        result = push(got.data, got.t, got.valid, got.meta, first, data, t_s)
        expected = push_reference(want, first, data, t_s)
        assert tuple(result) == expected
        got.assert_equal(want)


def test_push_jit_equals_py_func_on_the_same_sequence() -> None:
    rng = np.random.default_rng(11)
    a = Buffers(50, 4, start=7)
    b = a.copy()
    for first, data, t_s in random_push_sequence(rng, 50, 4, 200):
        ra = k.ring_push(a.data, a.t, a.valid, a.meta, first + 7, data, t_s)
        rb = k.ring_push.py_func(b.data, b.t, b.valid, b.meta, first + 7, data, t_s)
        assert ra == rb
        a.assert_equal(b)


@pytest.mark.parametrize("push", PUSH_IMPLS)
def test_push_wraps_and_counts_a_gap_longer_than_the_ring(
    push: Callable[..., tuple[int, int, int]],
) -> None:
    b = Buffers(8, 2)
    data = np.arange(12.0).reshape(6, 2)
    t_s = np.arange(6.0)
    assert tuple(push(b.data, b.t, b.valid, b.meta, 0, data, t_s)) == (6, 0, 0)
    # indices 6..9 wrap into slots 6, 7, 0, 1
    assert tuple(push(b.data, b.t, b.valid, b.meta, 6, data[:4], t_s[:4])) == (4, 0, 0)
    np.testing.assert_array_equal(b.data[[6, 7, 0, 1]], data[:4])
    np.testing.assert_array_equal(b.t[2:6], t_s[2:6])
    # a 100-sample gap invalidates every slot except the 3 samples pushed after it
    assert tuple(push(b.data, b.t, b.valid, b.meta, 110, data[:3], t_s[:3])) == (3, 100, 0)
    assert b.meta[k.META_HEAD] == 113
    held = np.arange(105, 113) % 8
    assert b.valid[held].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert np.isnan(b.t[held[:5]]).all()
    assert np.isnan(b.data[held[:5]]).all()


@pytest.mark.parametrize("push", PUSH_IMPLS)
def test_push_rejects_samples_behind_head(push: Callable[..., tuple[int, int, int]]) -> None:
    b = Buffers(16, 1)
    ones = np.ones((10, 1))
    push(b.data, b.t, b.valid, b.meta, 0, ones, np.arange(10.0))
    before = b.copy()
    # entirely in the past: nothing changes but the count
    assert tuple(push(b.data, b.t, b.valid, b.meta, 2, 5 * ones[:4], np.zeros(4))) == (0, 0, 4)
    np.testing.assert_array_equal(b.data, before.data)
    assert b.meta[k.META_HEAD] == 10
    # overlapping: the 3 old ones refused, 2 new ones written at 10 and 11
    assert tuple(push(b.data, b.t, b.valid, b.meta, 7, 2 * ones[:5], np.zeros(5))) == (2, 0, 3)
    assert b.data[7:12, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert b.meta[k.META_REJECTED_TOTAL] == 7


@pytest.mark.parametrize("push", PUSH_IMPLS)
def test_push_refuses_mismatched_shapes_without_writing(
    push: Callable[..., tuple[int, int, int]],
) -> None:
    b = Buffers(8, 2)
    before = b.copy()
    assert tuple(push(b.data, b.t, b.valid, b.meta, 3, np.ones((4, 3)), np.ones(4))) == (-1, 0, 0)
    assert tuple(push(b.data, b.t, b.valid, b.meta, 3, np.ones((4, 2)), np.ones(5))) == (-1, 0, 0)
    b.assert_equal(before)


def _at_head_entry(b: Buffers) -> tuple[Callable[..., int], npt.NDArray[np.int64]]:
    """The compiled `ring_push_at_head` for b's table (as `RingBuffer.push` calls it)."""
    table = k.ring_table(b.data, b.t, b.valid, b.meta)
    entry = entry_point(k.ring_push_at_head, (table, 0, np.empty((1, 1)), np.empty(1)))
    return entry, table


@pytest.mark.parametrize(("capacity", "n_channels", "seed"), [(37, 3, 1), (64, 16, 2), (5, 1, 3)])
def test_push_at_head_through_the_table_matches_the_numpy_reference(
    capacity: int, n_channels: int, seed: int
) -> None:
    """`ring_push_at_head` has no `.py_func` to compare with (its pointer intrinsics run only
    compiled): the steady state of the random sequences, against the reference."""
    rng = np.random.default_rng(seed)
    got = Buffers(capacity, n_channels, start=3)
    want = got.copy()
    entry, table = _at_head_entry(got)
    n_steady = 0
    for first, data, t_s in random_push_sequence(rng, capacity, n_channels, 200):
        first += 3
        if first == want.meta[k.META_HEAD]:
            assert entry(table, first, data, t_s) == push_reference(want, first, data, t_s)[0]
            n_steady += 1
        else:  # gaps and overlaps are `ring_push`'s (the facade's checked path)
            assert entry(table, first, data, t_s) == -1
            got.assert_equal(want)
            push_reference(want, first, data, t_s)
            k.ring_push(got.data, got.t, got.valid, got.meta, first, data, t_s)
        got.assert_equal(want)
    assert n_steady > 50


def test_push_at_head_refuses_without_writing_what_is_not_the_steady_state() -> None:
    b = Buffers(8, 2, start=4)
    entry, table = _at_head_entry(b)
    before = b.copy()
    assert entry(table, 5, np.ones((3, 2)), np.ones(3)) == -1  # a gap
    assert entry(table, 3, np.ones((3, 2)), np.ones(3)) == -1  # behind head
    assert entry(table, 4, np.ones((3, 3)), np.ones(3)) == -1  # channels
    assert entry(table, 4, np.ones((3, 2)), np.ones(4)) == -1  # times
    assert entry(table[:3], 4, np.ones((3, 2)), np.ones(3)) == -1  # not a ring table
    b.assert_equal(before)
    assert entry(table, 4, np.ones((3, 2)), np.arange(3.0)) == 3
    assert b.meta[k.META_HEAD] == 7


def test_ring_table_refuses_arrays_the_kernels_cannot_read() -> None:
    b = Buffers(8, 2)
    good = (b.data, b.t, b.valid, b.meta)
    table = k.ring_table(*good)
    assert table.shape == (k.RING_TABLE_LEN,)
    assert table[k.RT_DATA] == b.data.ctypes.data
    assert (table[k.RT_CAPACITY], table[k.RT_N_CHANNELS]) == (8, 2)
    frozen = b.t.copy()
    frozen.flags.writeable = False
    bad = {
        "ring data": (np.zeros((8, 4))[:, ::2], 0),
        "ring t_s": (frozen, 1),
        "ring valid": (b.valid.astype(np.int64), 2),
        "ring meta": (b.meta.astype(">i8"), 3),
    }
    for name, (array, i) in bad.items():
        args = list(good)
        args[i] = array
        with pytest.raises(ValueError, match=f"^{name} must be"):
            k.ring_table(*args)
    for i, array in ((1, b.t[:-1].copy()), (2, b.valid[:-1].copy()), (3, b.meta[:2].copy())):
        args = list(good)
        args[i] = array
        with pytest.raises(ValueError, match="ring arrays disagree"):
            k.ring_table(*args)
    with pytest.raises(TypeError, match="ring meta must be a numpy array"):
        k.ring_table(b.data, b.t, b.valid, [0, 0, 0, 0, 0])  # type: ignore[arg-type]
    # the kernels write through the table's addresses: nobody else may change them
    with pytest.raises(ValueError, match="read-only"):
        table[0] = 0


READ_IMPLS = [pytest.param(k.ring_read, id="jit"), pytest.param(k.ring_read.py_func, id="py_func")]


@pytest.mark.parametrize("read", READ_IMPLS)
def test_read_matches_numpy_take(read: Callable[..., None]) -> None:
    rng = np.random.default_rng(5)
    capacity, n_channels = 23, 5
    b = Buffers(capacity, n_channels)
    for first, data, t_s in random_push_sequence(rng, capacity, n_channels, 60):
        k.ring_push(b.data, b.t, b.valid, b.meta, first, data, t_s)
        head = int(b.meta[k.META_HEAD])
        oldest = k.ring_oldest(b.meta, capacity)
        assert oldest == k.ring_oldest.py_func(b.meta, capacity) == max(0, head - capacity)
        start = int(rng.integers(oldest, head + 1))
        stop = int(rng.integers(start, head + 1))
        n = stop - start
        out_data = np.empty((n, n_channels))
        out_t = np.empty(n)
        out_valid = np.empty(n, dtype=np.bool_)
        read(b.data, b.t, b.valid, start, out_data, out_t, out_valid)
        idx = np.arange(start, stop) % capacity
        np.testing.assert_array_equal(out_data, b.data[idx])
        np.testing.assert_array_equal(out_t, b.t[idx])
        np.testing.assert_array_equal(out_valid, b.valid[idx] == 1)


@pytest.mark.parametrize(
    "count", [pytest.param(k.ring_count_invalid, id="jit"), k.ring_count_invalid.py_func]
)
def test_count_invalid_matches_numpy(count: Callable[[Any, int, int], int]) -> None:
    rng = np.random.default_rng(8)
    valid = (rng.random(31) < 0.7).astype(np.uint8)
    for _ in range(200):
        start = int(rng.integers(0, 200))
        stop = start + int(rng.integers(-3, 32))
        want = (
            0 if stop <= start else int(np.count_nonzero(valid[np.arange(start, stop) % 31] == 0))
        )
        assert count(valid, start, stop) == want


@pytest.mark.parametrize(
    "bins", [pytest.param(k.ring_bin_means, id="jit"), k.ring_bin_means.py_func]
)
@pytest.mark.parametrize("rms", [False, True])
def test_bin_means_match_nanmean_of_the_window(bins: Callable[..., float], rms: bool) -> None:
    rng = np.random.default_rng(11)
    capacity, n_ch = 37, 3
    data = rng.normal(size=(capacity, n_ch))
    t = np.arange(capacity) / 100.0
    data[[4, 5, 20]] = np.nan  # missing samples: whole NaN rows
    t[[4, 5, 20]] = np.nan
    data[9, 1] = np.nan  # one channel without a value
    count = np.empty(n_ch, dtype=np.int64)
    for _ in range(100):
        start = int(rng.integers(0, 300))
        n_bins = int(rng.integers(1, 9))
        per_bin = int(rng.integers(1, capacity // n_bins + 1))
        out = np.full((n_bins, n_ch), -1.0)
        t0 = bins(data, t, start, per_bin, rms, out, count)
        idx = np.arange(start, start + n_bins * per_bin) % capacity  # wraps
        x = data[idx].reshape(n_bins, per_bin, n_ch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
            want = np.sqrt(np.nanmean(x * x, axis=1)) if rms else np.nanmean(x, axis=1)
            want_t0 = np.nanmean(t[idx[:per_bin]])
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=0.0)
        np.testing.assert_allclose(t0, want_t0, rtol=1e-12)
    # a bin of nothing but missing samples is NaN, and so is the time of such a first bin
    out = np.empty((2, n_ch))
    assert np.isnan(bins(data, t, 4, 2, rms, out, count))
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1]).all()


def keys_reference(t_by_index: list[float]) -> list[float]:
    """Time key of every held index, by plain list scans (the definition, no binary search)."""
    finite = [i for i, t in enumerate(t_by_index) if not np.isnan(t)]
    keys = []
    for i, t in enumerate(t_by_index):
        if not np.isnan(t):
            keys.append(t)
            continue
        before = [j for j in finite if j < i]
        after = [j for j in finite if j > i]
        if before and after:
            p, q = before[-1], after[0]
            tp, tq = t_by_index[p], t_by_index[q]
            keys.append(tp + (i - p) * (tq - tp) / (q - p))
        elif before:
            keys.append(t_by_index[before[-1]])
        elif after:
            keys.append(t_by_index[after[0]])
        else:
            keys.append(np.nan)
    return keys


SPAN_IMPLS = [
    pytest.param(k.ring_time_span, id="jit"),
    pytest.param(k.ring_time_span.py_func, id="py_func"),
]


@pytest.mark.parametrize("span", SPAN_IMPLS)
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_time_span_matches_list_filter(span: Callable[..., Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = 41
    b = Buffers(capacity, 1)
    for first, data, _ in random_push_sequence(rng, capacity, 1, 80):
        # jittered but monotonic times, as the clock model gives them
        n = data.shape[0]
        t_s = 3.0 + (first + np.arange(n) + rng.uniform(0, 0.3, n)) * 0.01
        k.ring_push(b.data, b.t, b.valid, b.meta, first, data, t_s)
        head = int(b.meta[k.META_HEAD])
        lo = int(k.ring_oldest(b.meta, capacity))
        held_t = [float(b.t[i % capacity]) for i in range(lo, head)]
        keys = keys_reference(held_t)
        for _ in range(5):
            t0 = 3.0 + rng.uniform(lo - 5, head + 5) * 0.01
            t1 = t0 + rng.uniform(0, 0.3)
            start, stop, clipped = span(b.t, lo, head, t0, t1)
            inside = [lo + j for j, key in enumerate(keys) if t0 <= key < t1]
            if inside:
                assert (start, stop) == (inside[0], inside[-1] + 1)
                assert inside == list(range(start, stop))  # contiguous: keys are monotonic
            else:
                assert start == stop
            finite_keys = [key for key in keys if not np.isnan(key)]
            want_clipped = not finite_keys or t0 < keys[0] or t1 > keys[-1]
            assert bool(clipped) == want_clipped


@pytest.mark.parametrize(
    ("key", "lower_bound"),
    [
        pytest.param(k.ring_time_key, k.ring_lower_bound_time, id="jit"),
        pytest.param(k.ring_time_key.py_func, k.ring_lower_bound_time.py_func, id="py_func"),
    ],
)
def test_gap_rows_are_placed_by_interpolation(
    key: Callable[..., float], lower_bound: Callable[..., int]
) -> None:
    # indices 0-9 at t = index, 10-14 missing, 15-19 at t = index
    t = np.arange(20.0)
    t[10:15] = np.nan
    assert key(t, 0, 20, 12) == 12.0
    assert key(t, 0, 20, 3) == 3.0
    assert lower_bound(t, 0, 20, 11.5) == 12
    assert lower_bound(t, 0, 20, 100.0) == 20
    assert lower_bound(t, 0, 20, -1.0) == 0
    # one-sided neighbours: the held range starts or ends inside the gap
    assert key(t, 12, 20, 13) == 15.0
    assert key(t, 0, 13, 12) == 9.0
    assert np.isnan(key(t, 11, 14, 12))


def test_time_span_of_an_all_missing_ring_is_empty_and_clipped() -> None:
    t = np.full(8, np.nan)
    for span in (k.ring_time_span, k.ring_time_span.py_func):
        start, stop, clipped = span(t, 3, 11, 0.0, 1e9)
        assert start == stop
        assert clipped
        assert tuple(span(t, 5, 5, 0.0, 1.0)) == (5, 5, True)
