"""Multi-channel ring buffer indexed by absolute sample index (facade over `_kernels`).

Absolute index `i` lives in slot `i % capacity`: index arithmetic stays O(1) and a gap is a
run of slots marked missing rather than something readers have to infer. Each slot holds one
sample's channel values, its host time `t_s` (from the clock model) and a validity flag.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import numpy as np
import numpy.typing as npt

from nmcore._numba import ENTRY_FLAGS, entry_point
from nmcore.buffer import _kernels as k

__all__ = ["PushResult", "RingBuffer", "RingState", "Window"]

FloatArray = npt.NDArray[np.float64]
_F64 = np.dtype(np.float64)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one `RingBuffer.push` did.

    `written`: samples of the block accepted (at most `capacity` of them are still held when
    the block is longer than the ring). `gap_samples`: samples missing between the previous
    head and this block, written as NaN rows with valid=False (the exact count, even when the
    gap is longer than the ring). `rejected_samples`: leading samples refused because their
    index was already behind head.
    """

    written: int
    gap_samples: int
    rejected_samples: int


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """A copy of consecutive absolute indices `[first_index, first_index + len(t_s))`.

    `data` (n, n_channels), `t_s` (n,), `valid` (n,) bool. A missing sample is a row of NaN
    with valid=False, never skipped. `clipped`: the request reached outside what the ring held
    (overwritten, not yet written, or, for time windows, outside the held time span), so the
    window is shorter than asked.
    """

    first_index: int
    data: FloatArray
    t_s: FloatArray
    valid: npt.NDArray[np.bool_]
    clipped: bool

    @property
    def has_gap(self) -> bool:
        """True if any sample of the window is missing."""
        return not bool(self.valid.all())

    @property
    def stop_index(self) -> int:
        """One past the last absolute index of the window."""
        return self.first_index + int(self.t_s.shape[0])

    def __len__(self) -> int:
        return int(self.t_s.shape[0])


class RingState(NamedTuple):
    """The ring's raw arrays, for jitted consumers that read it inside their own kernel.

    `data` (capacity, n_channels) float64, `t_s` (capacity,) float64, `valid` (capacity,)
    uint8, `meta` int64 with `meta[_kernels.META_HEAD]` = head and `meta[_kernels.META_START]`
    = the first index ever covered. Absolute index `i` is in slot `i % capacity`; the held
    indices are `[max(start, head - capacity), head)`. Pass the arrays to the kernel one by
    one (`kernel(*ring.state, ...)`), read them only in the writer's thread, and never write,
    except through `_kernels.ring_push` at the head followed by `RingBuffer.pushed_by_kernel`.
    """

    data: FloatArray
    t_s: FloatArray
    valid: npt.NDArray[np.uint8]
    meta: npt.NDArray[np.int64]


class RingBuffer:
    """Multi-channel ring of float64 samples addressed by absolute sample index.

    Threading rule: one writer. Readers run in the writer's thread (the event loop), or they
    work on copies: every `Window` is a copy, and `state` exposes the live arrays only for
    kernels called from the writer's thread. Nothing here takes a lock.

    Pushes go through one jitted call per block. A forward jump in `first_index` is written
    as missing samples (NaN data, NaN time, valid=False); samples behind head are refused and
    counted. Reads never stitch over a gap: missing samples come back as NaN rows.
    """

    def __init__(self, n_channels: int, capacity: int, *, start_index: int = 0) -> None:
        if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
            raise ValueError(f"n_channels must be an integer >= 1, got {n_channels!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(
                f"capacity must be an integer >= 1 (samples held per channel), got {capacity!r}"
            )
        if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
            raise ValueError(f"start_index must be an integer >= 0, got {start_index!r}")
        self._n_channels = n_channels
        self._capacity = capacity
        # Slots never written read as missing, so a reader cannot mistake them for zeros.
        self._data = np.full((capacity, n_channels), np.nan)
        self._t = np.full(capacity, np.nan)
        self._valid = np.zeros(capacity, dtype=np.uint8)
        self._meta = np.zeros(k.META_LEN, dtype=np.int64)
        self._meta[k.META_HEAD] = start_index
        self._meta[k.META_START] = start_index
        self._start = start_index
        self._head = start_index
        self._ok_results: dict[int, PushResult] = {}
        # the arrays never move: the steady-state push reaches them through this table, with
        # the compiled entry point bound here, not looked up per block
        self._table = k.ring_table(self._data, self._t, self._valid, self._meta)
        self._push_entry = _push_at_head()

    @classmethod
    def for_history(cls, n_channels: int, rate_hz: float, history_s: float) -> RingBuffer:
        """A ring holding at least `history_s` seconds of a stream sampled at `rate_hz`."""
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
        if not (math.isfinite(history_s) and history_s > 0):
            raise ValueError(f"history_s must be a finite number > 0, got {history_s!r}")
        # The small tolerance keeps 2000 Hz x 0.1 s at 200 slots instead of 201 from rounding.
        capacity = max(1, math.ceil(rate_hz * history_s - 1e-9))
        return cls(n_channels, capacity)

    # -- state -------------------------------------------------------------------------

    @property
    def n_channels(self) -> int:
        return self._n_channels

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def head(self) -> int:
        """Absolute index of the next sample to be written."""
        return self._head

    @property
    def oldest(self) -> int:
        """Oldest absolute index still held (equals `head` while the ring is empty)."""
        return max(self._start, self._head - self._capacity)

    @property
    def n_held(self) -> int:
        """Number of absolute indices held, `head - oldest`."""
        return self.head - self.oldest

    @property
    def gap_samples_total(self) -> int:
        """Samples written as missing since construction."""
        return int(self._meta[k.META_GAP_TOTAL])

    @property
    def rejected_samples_total(self) -> int:
        """Samples refused (index already behind head) since construction."""
        return int(self._meta[k.META_REJECTED_TOTAL])

    @property
    def written_total(self) -> int:
        """Samples accepted from pushes since construction."""
        return int(self._meta[k.META_WRITTEN_TOTAL])

    @property
    def state(self) -> RingState:
        """The live arrays for jitted readers; see `RingState` for the layout and rules."""
        return RingState(self._data, self._t, self._valid, self._meta)

    @property
    def data(self) -> FloatArray:
        """Live (capacity, n_channels) sample array; slot of index i is i % capacity."""
        return self._data

    @property
    def t_s(self) -> FloatArray:
        """Live (capacity,) host-time array; NaN for missing samples."""
        return self._t

    @property
    def valid(self) -> npt.NDArray[np.uint8]:
        """Live (capacity,) uint8 validity array; 0 for missing samples."""
        return self._valid

    # -- writing -----------------------------------------------------------------------

    def push(self, first_index: int, data: FloatArray, t_s: FloatArray) -> PushResult:
        """Write `data` (n, n_channels) float64 and `t_s` (n,) float64 at absolute indices
        `[first_index, first_index + n)` in one jitted call.

        `first_index > head`: `[head, first_index)` is written as missing (`gap_samples`; a gap
        longer than the ring just invalidates all of it). Samples with index < head are
        refused and counted (`rejected_samples`); the rest are written.
        """
        head = self._head
        # The steady state (the block starts at head: nothing missing, nothing refused) goes
        # to the compiled entry point of `ring_push_at_head`, skipping numba's per-call typing
        # of seven arguments; so the block's two arrays are checked here to be the compiled
        # types. Shapes are checked in the kernel, which returns -1 then.
        if first_index == head and fits_entry_points(first_index, data, t_s):
            n = self._push_entry(self._table, first_index, data, t_s)
            if n >= 0:
                # PushResult is immutable, so one instance per block size is shared
                # (building a frozen dataclass costs as much as the kernel call)
                self._head = head + n
                result = self._ok_results.get(n)
                if result is None:
                    result = self._ok_results.setdefault(n, PushResult(n, 0, 0))
                return result
            self._raise_bad_block(data, t_s)
        # Python checks only what the kernel cannot: a dtype or layout numba has not seen
        # would compile a new specialisation (a 0.2 s stall) instead of failing.
        if data.dtype != _F64 or t_s.dtype != _F64 or data.ndim != 2 or t_s.ndim != 1:
            self._raise_bad_block(data, t_s)
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        if not t_s.flags.c_contiguous:
            t_s = np.ascontiguousarray(t_s)
        counts = k.ring_push(self._data, self._t, self._valid, self._meta, first_index, data, t_s)
        if counts[0] < 0:
            self._raise_bad_block(data, t_s)
        written, gap, rejected = counts
        # `_head` mirrors meta[META_HEAD] so `head` costs no numpy scalar access.
        self._head = max(head, int(first_index) + data.shape[0])
        return PushResult(written, gap, rejected)

    def pushed_by_kernel(self, first_index: int, n: int) -> PushResult:
        """Keep the facade in step after a fused kernel called `_kernels.ring_push` on
        `state` itself with a block of `n` samples starting exactly at `head` (the one
        sanctioned write through `state`: in the writer's thread, contiguous only)."""
        head = self._head
        if first_index != head:
            raise ValueError(
                f"pushed_by_kernel is for contiguous blocks: first_index {first_index} is not "
                f"head {head}; push through RingBuffer.push instead"
            )
        self._head = head + n
        result = self._ok_results.get(n)
        if result is None:
            result = self._ok_results.setdefault(n, PushResult(n, 0, 0))
        return result

    def _raise_bad_block(self, data: FloatArray, t_s: FloatArray) -> NoReturn:
        raise ValueError(
            f"push needs data of shape (n, {self._n_channels}) float64 and t_s of shape (n,) "
            f"float64; got data {data.shape} {data.dtype} and t_s {t_s.shape} {t_s.dtype} "
            "(convert with np.asarray(x, dtype=np.float64))"
        )

    # -- reading -----------------------------------------------------------------------

    def window_by_index(self, start: int, stop: int) -> Window:
        """Copy of absolute indices `[start, stop)`, clipped to `[oldest, head)`.

        `clipped` says the answer is shorter than asked (an empty request never is).
        `stop < start` is an error.
        """
        if stop < start:
            raise ValueError(f"window_by_index needs start <= stop, got [{start}, {stop})")
        if stop == start:
            return self._read(start, start, clipped=False)
        head = self._head
        oldest = max(self._start, head - self._capacity)
        lo = min(max(start, oldest), head)
        hi = max(min(stop, head), lo)
        return self._read(lo, hi, clipped=lo != start or hi != stop)

    def latest(self, n: int) -> Window:
        """Copy of the newest `n` indices `[head - n, head)`; clipped if fewer are held."""
        if n < 0:
            raise ValueError(f"latest needs n >= 0, got {n}")
        head = self._head
        return self.window_by_index(head - n, head)

    def window_by_time(self, t0_s: float, t1_s: float) -> Window:
        """Copy of the samples with `t0_s <= t < t1_s` (binary search in a kernel).

        Times must be non-decreasing per stream except at missing samples. A missing sample
        is placed at the time interpolated between its received neighbours, so gap rows
        inside the interval are part of the window (NaN, valid=False). `clipped`: the
        interval reaches before the oldest or past the newest held time.
        """
        if not (t0_s <= t1_s):
            raise ValueError(f"window_by_time needs t0_s <= t1_s, got [{t0_s}, {t1_s})")
        lo = self.oldest
        hi = self.head
        start, stop, clipped = k.ring_time_span(self._t, lo, hi, float(t0_s), float(t1_s))
        return self._read(int(start), int(stop), clipped=bool(clipped))

    def has_gap(self, start: int, stop: int) -> bool:
        """False only if every index of `[start, stop)` is held and was received.

        Indices outside `[oldest, head)` count as missing: overwritten or not yet written,
        the ring cannot vouch for them. An empty range has no gap.
        """
        if stop <= start:
            return False
        head = self.head
        if start < self.oldest or stop > head:
            return True
        return bool(k.ring_count_invalid(self._valid, start, stop) > 0)

    def bin_means(
        self, start: int, stop: int, n_bins: int, *, rms: bool = False
    ) -> tuple[FloatArray, float]:
        """A decimated view of `[start, stop)` for live displays, without copying it out:
        `n_bins` bins of `(stop - start) // n_bins` samples from `start` (the remainder at
        the end is left out), each channel's mean (`rms`: root mean square) over the bin's
        received samples, NaN for a bin with none: shape (n_bins, n_channels). Also the
        mean time of the first bin's received samples (NaN if none).

        Raises ValueError unless `[start, stop)` is held and has at least `n_bins` samples.
        """
        start, stop, n_bins = operator.index(start), operator.index(stop), operator.index(n_bins)
        if n_bins < 1:
            raise ValueError(f"bin_means needs n_bins >= 1, got {n_bins}")
        oldest, head = self.oldest, self._head
        if not oldest <= start <= stop <= head:
            raise ValueError(
                f"bin_means needs [start, stop) within the held [{oldest}, {head}), got "
                f"[{start}, {stop}) (capacity {self._capacity}; raise history_s to keep more)"
            )
        if stop - start < n_bins:
            raise ValueError(
                f"bin_means got {stop - start} samples for {n_bins} bins: widen [start, stop) "
                "or ask for fewer bins"
            )
        out = np.empty((n_bins, self._n_channels))
        count = np.empty(self._n_channels, dtype=np.int64)
        per_bin = (stop - start) // n_bins
        t0 = k.ring_bin_means(self._data, self._t, start, per_bin, rms, out, count)
        return out, float(t0)

    def time_of(self, index: int) -> float:
        """Host time of absolute `index` (NaN if that sample is missing).

        Raises IndexError if the index is not held.
        """
        oldest = self.oldest
        head = self.head
        if not oldest <= index < head:
            raise IndexError(
                f"sample {index} is not held: the ring holds [{oldest}, {head}) "
                f"(capacity {self._capacity}; raise history_s to keep more)"
            )
        return float(self._t[index % self._capacity])

    def _read(self, lo: int, hi: int, *, clipped: bool) -> Window:
        n = hi - lo
        out_data = np.empty((n, self._n_channels))
        out_t = np.empty(n)
        out_valid = np.empty(n, dtype=np.bool_)
        if n:
            k.ring_read(self._data, self._t, self._valid, lo, out_data, out_t, out_valid)
        return Window(lo, out_data, out_t, out_valid, clipped)

    def __repr__(self) -> str:
        return (
            f"RingBuffer(n_channels={self._n_channels}, capacity={self._capacity}, "
            f"held=[{self.oldest}, {self.head}))"
        )


def fits_entry_points(first_index: object, data: np.ndarray, t_s: np.ndarray) -> bool:
    """The block is of the one type the compiled entry points that take blocks are built
    for (`_push_at_head`, the pipeline's fused EMG call): an int index, float64 data 2-D
    and times 1-D, both `ENTRY_FLAGS`. An entry point reads whatever it gets as its own
    types, so nothing else may reach one."""
    return (
        type(first_index) is int
        and (data.dtype is _F64 or data.dtype == _F64)
        and (t_s.dtype is _F64 or t_s.dtype == _F64)
        and data.ndim == 2
        and t_s.ndim == 1
        and data.flags.num & ENTRY_FLAGS == ENTRY_FLAGS
        and t_s.flags.num & ENTRY_FLAGS == ENTRY_FLAGS
    )


@functools.cache
def _push_at_head() -> Callable[[npt.NDArray[np.int64], int, FloatArray, FloatArray], int]:
    """The compiled `ring_push_at_head` for a ring's table and a float64 block (compiled, or
    loaded from the cache, when the process's first ring is built: before the daemon is
    ready, in `Pipeline` and in `_warm`)."""
    table = k.ring_table(
        np.empty((1, 1)), np.empty(1), np.zeros(1, np.uint8), np.zeros(k.META_LEN, np.int64)
    )
    entry: Callable[[npt.NDArray[np.int64], int, FloatArray, FloatArray], int] = entry_point(
        k.ring_push_at_head, (table, 0, np.empty((1, 1)), np.empty(1))
    )
    return entry


def _warm() -> None:
    """Call every ring kernel once on tiny inputs so it is compiled (or loaded from numba's
    on-disk cache) before the first real block; `runtime.warmup` calls this at start-up."""
    ring = RingBuffer(1, 4)
    ring.push(0, np.zeros((2, 1)), np.array([0.0, 1.0]))
    ring.push(3, np.zeros((1, 1)), np.array([3.0]))  # the gap path
    ring.latest(4)
    ring.window_by_index(0, 4)
    ring.window_by_time(0.5, 2.5)
    ring.has_gap(0, 4)
    ring.bin_means(0, 4, 2, rms=True)
