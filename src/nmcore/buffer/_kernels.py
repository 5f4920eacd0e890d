"""Ring buffer kernels (private; `ring.RingBuffer` is the public face).

Layout shared with jitted consumers (see `ring.RingState`):

- `data`  (capacity, n_channels) float64
- `t_s`   (capacity,) float64, host monotonic seconds; NaN for a missing sample
- `valid` (capacity,) uint8, 1 for a received sample, 0 for a missing one
- `meta`  (META_LEN,) int64: head, start and running totals (indices below)

Absolute sample index `i` lives in slot `i % capacity`. The ring holds the indices
`[max(start, head - capacity), head)`; `ring_oldest` computes the lower end.

Every loop is explicit: 2-D slice assignment compiled 10x slower and ran 2.5x slower
(PERFORMANCE.md). The slot is stepped and wrapped by hand instead of taking `i % capacity`
per sample, because a 64-bit modulo costs more than the copy of a 16-channel row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from nmcore._numba import ENTRY_FLAGS, carray, f64_at, i64_at, jit, u8_at

__all__ = [
    "META_GAP_TOTAL",
    "META_HEAD",
    "META_LEN",
    "META_REJECTED_TOTAL",
    "META_START",
    "META_WRITTEN_TOTAL",
    "RING_TABLE_LEN",
    "check_kernel_arrays",
    "fill_ring_slots",
    "ring_bin_means",
    "ring_count_invalid",
    "ring_lower_bound_time",
    "ring_oldest",
    "ring_push",
    "ring_push_at_head",
    "ring_read",
    "ring_table",
    "ring_time_key",
    "ring_time_span",
]

META_HEAD = 0  # absolute index of the next sample to be written
META_START = 1  # first absolute index this ring ever covered
META_GAP_TOTAL = 2  # samples written as missing since construction
META_REJECTED_TOTAL = 3  # samples refused because their index was already behind head
META_WRITTEN_TOTAL = 4  # samples accepted from pushes
META_LEN = 5

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

# `ring_table` slots: the four arrays' addresses, and the two sizes (meta is META_LEN long)
RT_DATA, RT_CAPACITY, RT_N_CHANNELS = 0, 1, 2
RT_T = 3
RT_VALID = 4
RT_META = 5
RING_TABLE_LEN = 6


@jit
def ring_oldest(meta: I64, capacity: int) -> int:
    """Oldest absolute index still held."""
    return int(max(meta[META_START], meta[META_HEAD] - capacity))


@jit
def ring_push(
    buf_data: F64,
    buf_t: F64,
    buf_valid: U8,
    meta: I64,
    first_index: int,
    data: F64,
    t_s: F64,
) -> tuple[int, int, int]:
    """Write `data[k]`, `t_s[k]` at absolute index `first_index + k`; return
    (written, gap_samples, rejected_samples), or (-1, 0, 0) without touching anything when
    `data` has the wrong number of channels or `t_s` the wrong length.

    A forward jump leaves `[head, first_index)` as NaN rows with valid=0 (only the last
    `capacity` of them can still be held, so only those are touched). Samples whose index is
    already behind head are refused: overwriting history would change what readers saw.
    """
    capacity = buf_t.shape[0]
    n_channels = buf_data.shape[1]
    n = data.shape[0]
    if data.shape[1] != n_channels or t_s.shape[0] != n:
        return -1, 0, 0
    head = meta[META_HEAD]
    rejected = 0
    gap = 0
    k0 = 0
    if first_index < head:
        rejected = min(n, head - first_index)
        k0 = rejected
    elif first_index > head:
        gap = first_index - head
        g0 = max(head, first_index + n - capacity)
        if g0 < first_index:
            slot = g0 % capacity
            for _ in range(first_index - g0):
                for c in range(n_channels):
                    buf_data[slot, c] = np.nan
                buf_t[slot] = np.nan
                buf_valid[slot] = 0
                slot += 1
                if slot == capacity:
                    slot = 0
    # Of a block longer than the ring only the last `capacity` samples survive.
    k_start = max(k0, n - capacity)
    if k_start < n:
        slot = (first_index + k_start) % capacity
        for k in range(k_start, n):
            for c in range(n_channels):
                buf_data[slot, c] = data[k, c]
            buf_t[slot] = t_s[k]
            buf_valid[slot] = 1
            slot += 1
            if slot == capacity:
                slot = 0
    written = n - k0
    if first_index + n > head:
        meta[META_HEAD] = first_index + n
    meta[META_GAP_TOTAL] += gap
    meta[META_REJECTED_TOTAL] += rejected
    meta[META_WRITTEN_TOTAL] += written
    return written, gap, rejected


@jit
def ring_push_at_head(table: I64, first_index: int, data: F64, t_s: F64) -> int:
    """`ring_push` on the arrays `table` (from `ring_table`) points to, for a block that
    starts at head (the steady state: nothing missing, nothing refused): return the samples
    written, or -1 without touching anything when the block does not start at head or has
    the wrong number of channels or times. Four arguments, not seven: calling compiled code
    from Python costs per array argument (see `ring_table`)."""
    if table.shape[0] != RING_TABLE_LEN:  # before any slot is read (no bounds checks)
        return -1
    capacity = table[RT_CAPACITY]
    n_channels = table[RT_N_CHANNELS]
    meta = carray(i64_at(table[RT_META]), (META_LEN,))
    if first_index != meta[META_HEAD]:
        return -1
    written, _gap, _rejected = ring_push(
        carray(f64_at(table[RT_DATA]), (capacity, n_channels)),
        carray(f64_at(table[RT_T]), (capacity,)),
        carray(u8_at(table[RT_VALID]), (capacity,)),
        meta,
        first_index,
        data,
        t_s,
    )
    return written


def check_kernel_arrays(arrays: Iterable[tuple[str, np.ndarray, int, type]]) -> None:
    """Refuse, naming it, any (name, array, ndim, dtype) whose array a kernel reached
    through a table of addresses could not read as its own type: native `dtype`, `ndim`
    dimensions, `ENTRY_FLAGS` (C-contiguous, aligned, writeable)."""
    for name, a, ndim, dtype in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if not (
            a.dtype == dtype
            and a.dtype.isnative
            and a.ndim == ndim
            and a.flags.num & ENTRY_FLAGS == ENTRY_FLAGS
        ):
            f = a.flags
            raise ValueError(
                f"{name} must be a C-contiguous, aligned, writeable {ndim}-D "
                f"{np.dtype(dtype)} array; got {a.ndim}-D {a.dtype} (c_contiguous="
                f"{f.c_contiguous}, aligned={f.aligned}, writeable={f.writeable}): pass the "
                "ring's (and the detector's) own arrays"
            )


def fill_ring_slots(table: I64, buf_data: F64, buf_t: F64, buf_valid: U8, meta: I64) -> None:
    """Write the ring's slots (the first RING_TABLE_LEN) of a table; the caller checked the
    arrays (`check_kernel_arrays`) and their sizes."""
    table[RT_DATA] = buf_data.ctypes.data
    table[RT_CAPACITY] = buf_data.shape[0]
    table[RT_N_CHANNELS] = buf_data.shape[1]
    table[RT_T] = buf_t.ctypes.data
    table[RT_VALID] = buf_valid.ctypes.data
    table[RT_META] = meta.ctypes.data


def ring_table(buf_data: F64, buf_t: F64, buf_valid: U8, meta: I64) -> I64:
    """The read-only int64 table of a ring's four arrays' addresses and sizes, which
    `ring_push_at_head` reads them through (the pipeline's fused EMG kernel reads a table
    that starts with the same slots): numba builds a reference for every array argument of
    a call from Python (~55 ns each), a good part of a 32 x 16 push.

    The kernels write through these addresses, so the caller must keep every array alive
    and in place for as long as it uses the table. Each must be the exact type the kernels
    read (`check_kernel_arrays`), with sizes that agree; ValueError says which is not."""
    check_kernel_arrays(
        (
            ("ring data", buf_data, 2, np.float64),
            ("ring t_s", buf_t, 1, np.float64),
            ("ring valid", buf_valid, 1, np.uint8),
            ("ring meta", meta, 1, np.int64),
        )
    )
    capacity = buf_data.shape[0]
    # the kernels index without bounds checks: every size they rely on is checked here
    if (
        capacity < 1
        or buf_t.shape != (capacity,)
        or buf_valid.shape != (capacity,)
        or meta.shape != (META_LEN,)
    ):
        raise ValueError(
            f"ring arrays disagree: data {buf_data.shape}, t_s {buf_t.shape}, valid "
            f"{buf_valid.shape}, meta {meta.shape} (want t_s and valid (capacity,), "
            f"capacity >= 1, meta ({META_LEN},))"
        )
    table = np.zeros(RING_TABLE_LEN, dtype=np.int64)
    fill_ring_slots(table, buf_data, buf_t, buf_valid, meta)
    table.flags.writeable = False  # addresses the kernels write through
    return table


@jit
def ring_read(
    buf_data: F64,
    buf_t: F64,
    buf_valid: U8,
    start: int,
    out_data: F64,
    out_t: F64,
    out_valid: B,
) -> None:
    """Copy absolute indices `[start, start + len(out_t))` (the caller checks they are held)."""
    capacity = buf_t.shape[0]
    n_channels = buf_data.shape[1]
    slot = start % capacity
    for k in range(out_t.shape[0]):
        for c in range(n_channels):
            out_data[k, c] = buf_data[slot, c]
        out_t[k] = buf_t[slot]
        out_valid[k] = buf_valid[slot] != 0
        slot += 1
        if slot == capacity:
            slot = 0


@jit
def ring_bin_means(
    buf_data: F64, buf_t: F64, start: int, per_bin: int, rms: bool, out: F64, count: I64
) -> float:
    """Per channel, the mean (`rms`: the root mean square) of each of `out.shape[0]` bins of
    `per_bin` consecutive absolute indices from `start` (all held) into `out`, skipping NaN
    values (missing samples) as `np.nanmean` does: NaN for a bin with none. Returns the mean
    time of the first bin's received samples (NaN if it has none). `count` is scratch of
    n_channels. For live views: no copy of the window, one pass."""
    capacity = buf_t.shape[0]
    n_channels = buf_data.shape[1]
    slot = start % capacity
    t_sum = 0.0
    t_n = 0
    for b in range(out.shape[0]):
        for c in range(n_channels):
            out[b, c] = 0.0
            count[c] = 0
        for _ in range(per_bin):
            for c in range(n_channels):
                v = buf_data[slot, c]
                if v == v:
                    out[b, c] += v * v if rms else v
                    count[c] += 1
            if b == 0:
                t = buf_t[slot]
                if t == t:
                    t_sum += t
                    t_n += 1
            slot += 1
            if slot == capacity:
                slot = 0
        for c in range(n_channels):
            m = out[b, c] / count[c] if count[c] else np.nan
            out[b, c] = np.sqrt(m) if rms else m
    return t_sum / t_n if t_n else np.nan


@jit
def ring_count_invalid(buf_valid: U8, start: int, stop: int) -> int:
    """Number of missing samples among absolute indices `[start, stop)` (all held)."""
    capacity = buf_valid.shape[0]
    count = 0
    if stop <= start:
        return 0
    slot = start % capacity
    for _ in range(stop - start):
        if buf_valid[slot] == 0:
            count += 1
        slot += 1
        if slot == capacity:
            slot = 0
    return count


@jit
def ring_time_key(buf_t: F64, lo: int, hi: int, index: int) -> float:
    """The time used to place absolute `index` (held, in `[lo, hi)`) on the time axis.

    A received sample's own time. A missing sample (NaN time) gets the linear interpolation
    between its nearest timed neighbours, so a time window includes the gap rows that fall
    inside it instead of silently stitching over them; with a neighbour on one side only it
    takes that neighbour's time; NaN if nothing in `[lo, hi)` has a time. Non-decreasing in
    `index` whenever the received times are, which the binary search needs.
    """
    capacity = buf_t.shape[0]
    t = float(buf_t[index % capacity])
    if not np.isnan(t):
        return t
    prev = index - 1
    t_prev = np.nan
    while prev >= lo:
        t_prev = buf_t[prev % capacity]
        if not np.isnan(t_prev):
            break
        prev -= 1
    nxt = index + 1
    t_next = np.nan
    while nxt < hi:
        t_next = buf_t[nxt % capacity]
        if not np.isnan(t_next):
            break
        nxt += 1
    has_prev = prev >= lo
    has_next = nxt < hi
    if has_prev and has_next:
        return t_prev + (index - prev) * (t_next - t_prev) / (nxt - prev)
    if has_prev:
        return t_prev
    if has_next:
        return t_next
    return np.nan


@jit
def ring_lower_bound_time(buf_t: F64, lo: int, hi: int, t: float) -> int:
    """First absolute index in held `[lo, hi)` whose time key is >= `t`, or `hi` if none."""
    a = lo
    b = hi
    while a < b:
        mid = a + (b - a) // 2
        # Keys use the whole held range so a gap's interpolation sees both neighbours.
        if ring_time_key(buf_t, lo, hi, mid) >= t:
            b = mid
        else:
            a = mid + 1
    return a


@jit
def ring_time_span(buf_t: F64, lo: int, hi: int, t0_s: float, t1_s: float) -> tuple[int, int, bool]:
    """(start, stop, clipped) of the samples with `t0_s <= key < t1_s` among held `[lo, hi)`.

    `clipped`: the request reaches before the oldest or past the newest held time, so
    samples of `[t0_s, t1_s)` may be missing from the answer (overwritten or not yet here).
    """
    if hi <= lo:
        return hi, hi, True
    start = ring_lower_bound_time(buf_t, lo, hi, t0_s)
    stop = max(ring_lower_bound_time(buf_t, lo, hi, t1_s), start)
    first_key = ring_time_key(buf_t, lo, hi, lo)
    last_key = ring_time_key(buf_t, lo, hi, hi - 1)
    clipped = bool(np.isnan(first_key) or t0_s < first_key or t1_s > last_key)
    return start, stop, clipped
