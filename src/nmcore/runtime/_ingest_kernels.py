"""The daemon's per-block EMG ingest in one jitted call (private; `pipeline` is the face).

`push_chain_arrays` writes a block into the ring exactly as `buffer._kernels.ring_push` does
(it calls that kernel) and runs `detect._emg_kernels.emg_filter_chain_block` on the same
block: one call per block instead of two.

`ingest_push_chain` is the same call with the seven state arrays (the ring's four, the
chain's three) passed as one int64 table of their addresses and shapes (`state_table`).
Calling compiled code from Python costs ~55 ns per array argument (numba builds a
reference for each); with ten arguments that was ~0.5 us of a ~2.5 us block. The table
is built once per chain; whoever holds it must keep the seven arrays alive and must not
replace them (`StreamState` keeps them beside the table).

Only the steady state is fused: the block starts at the ring's head and at the detector's
head. Anything else (a gap, a refused overlap, a wrong shape) returns `NOT_FUSED` before
touching anything, and the caller takes the two-call path, which owns those cases.

Why a factory: numba's cache key of a function covers its own file and bytecode, not the
kernels it calls in other modules, so a cached fused kernel would keep running yesterday's
EMG chain after `_emg_kernels.py` changed. The key does hash the closure's cell contents,
so the kernels close over a digest of the callee files: any edit there recompiles them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nmcore import _numba
from nmcore._numba import carray, f64_at, i64_at, jit, u8_at
from nmcore.buffer import _kernels as ring_k
from nmcore.detect import _emg_kernels as emg_k

__all__ = [
    "NOT_FUSED",
    "TABLE_LEN",
    "entry_point_for",
    "ingest_push_chain",
    "push_chain_arrays",
    "state_table",
]

NOT_FUSED = -1  # nothing was touched: take the two-call path

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

ArraysKernel = Callable[[F64, F64, U8, I64, int, F64, F64, F64, I64, F64], int]
IngestKernel = Callable[[I64, int, F64, F64], int]

# `state_table` slots: the ring's table (`buffer._kernels.ring_table`), then the chain's
# addresses and the sizes that are not constants (istate (n_channels, N_ISTATE), hist
# (2, rows, n_channels): `state_table` checks)
T_RING_DATA, T_CAPACITY, T_N_CHANNELS = ring_k.RT_DATA, ring_k.RT_CAPACITY, ring_k.RT_N_CHANNELS
T_RING_T = ring_k.RT_T
T_RING_VALID = ring_k.RT_VALID
T_META = ring_k.RT_META
T_WORK, T_WORK_LEN = ring_k.RING_TABLE_LEN, ring_k.RING_TABLE_LEN + 1
T_ISTATE = ring_k.RING_TABLE_LEN + 2
T_HIST, T_HIST_ROWS = ring_k.RING_TABLE_LEN + 3, ring_k.RING_TABLE_LEN + 4
TABLE_LEN = ring_k.RING_TABLE_LEN + 5


def _callee_digest() -> int:
    """A 60-bit digest of the callees' source files and of `_numba` (its pointer intrinsics
    are inlined): the fused kernels' cache key."""
    h = hashlib.sha256()
    for mod in (ring_k, emg_k, _numba):
        h.update(Path(str(mod.__file__)).read_bytes())
    return int.from_bytes(h.digest()[:8], "little") >> 4


# Callees are reached as module globals, never closure cells: the cache key pickles every
# cell, and a pickled dispatcher differs between processes (the cache would never hit). So
# each kernel has its own factory, and the table kernel calls `push_chain_arrays` as a global.


def _make_arrays_kernel(callee_digest: int) -> ArraysKernel:
    @jit
    def push_chain_arrays(
        ring_data: F64,
        ring_t: F64,
        ring_valid: U8,
        meta: I64,
        first_index: int,
        data: F64,
        t_s: F64,
        work: F64,
        istate: I64,
        hist: F64,
    ) -> int:
        """Push `data`, `t_s` at `first_index` and run the EMG chain on `data`; return the
        chain's event count, or NOT_FUSED (-1, nothing touched) unless the block continues
        both the ring and the detector with the right shapes."""
        # the digest only has to be part of the closure (the cache key); this keeps it used
        if callee_digest < 0:
            return NOT_FUSED
        n = data.shape[0]
        if (
            first_index != meta[ring_k.META_HEAD]
            or first_index != istate[0, emg_k.I_HEAD]
            or data.shape[1] != ring_data.shape[1]
            or data.shape[1] != istate.shape[0]
            or t_s.shape[0] != n
        ):
            return NOT_FUSED
        # chain first: the ring's rows are cold (60 s of history), and its stores then drain
        # while the call returns instead of stalling the chain's (~0.17 us a block)
        events = emg_k.emg_filter_chain_block(data, work, istate, hist)
        ring_k.ring_push(ring_data, ring_t, ring_valid, meta, first_index, data, t_s)
        return events

    return push_chain_arrays


def _make_table_kernel(callee_digest: int) -> IngestKernel:
    @jit
    def ingest_push_chain(table: I64, first_index: int, data: F64, t_s: F64) -> int:
        """`push_chain_arrays` on the arrays `table` (from `state_table`) points to."""
        if callee_digest < 0 or table.shape[0] != TABLE_LEN:
            return NOT_FUSED
        capacity = table[T_CAPACITY]
        n_ch = table[T_N_CHANNELS]
        return push_chain_arrays(
            carray(f64_at(table[T_RING_DATA]), (capacity, n_ch)),
            carray(f64_at(table[T_RING_T]), (capacity,)),
            carray(u8_at(table[T_RING_VALID]), (capacity,)),
            carray(i64_at(table[T_META]), (ring_k.META_LEN,)),
            first_index,
            data,
            t_s,
            carray(f64_at(table[T_WORK]), (table[T_WORK_LEN],)),
            carray(i64_at(table[T_ISTATE]), (n_ch, emg_k.N_ISTATE)),
            carray(f64_at(table[T_HIST]), (2, table[T_HIST_ROWS], n_ch)),
        )

    return ingest_push_chain


_DIGEST = _callee_digest()
push_chain_arrays = _make_arrays_kernel(_DIGEST)
ingest_push_chain = _make_table_kernel(_DIGEST)


def state_table(
    ring_data: F64, ring_t: F64, ring_valid: U8, meta: I64, work: F64, istate: I64, hist: F64
) -> I64:
    """The (read-only) int64 table of the seven state arrays' addresses and shapes that
    `ingest_push_chain` reads them through: the ring's table (`ring_k.ring_table`), then
    the chain's slots.

    The kernel writes through these addresses, so the caller must keep every array alive
    (and in place) for as long as it uses the table. Each array must be the exact type the
    kernel reads: native dtype, C-contiguous, aligned and writeable (ValueError names the
    one that is not), with shapes that agree (a detector for the ring's channels)."""
    ring_k.check_kernel_arrays(
        (
            ("ring data", ring_data, 2, np.float64),
            ("ring t_s", ring_t, 1, np.float64),
            ("ring valid", ring_valid, 1, np.uint8),
            ("ring meta", meta, 1, np.int64),
            ("chain work", work, 1, np.float64),
            ("chain istate", istate, 2, np.int64),
            ("chain hist", hist, 3, np.float64),
        )
    )
    capacity, n_ch = ring_data.shape
    # the kernel indexes without bounds checks: every shape it relies on is checked here
    if (
        capacity < 1
        or ring_t.shape != (capacity,)
        or ring_valid.shape != (capacity,)
        or meta.shape != (ring_k.META_LEN,)
        or istate.shape != (n_ch, emg_k.N_ISTATE)
        or hist.shape[0] != 2
        or hist.shape[1] < 1
        or hist.shape[2] != n_ch
    ):
        raise ValueError(
            f"state arrays disagree: ring data {ring_data.shape}, t_s {ring_t.shape}, valid "
            f"{ring_valid.shape}, meta {meta.shape}, istate {istate.shape}, hist {hist.shape} "
            f"(want t_s and valid (capacity,), meta ({ring_k.META_LEN},), istate (channels, "
            f"{emg_k.N_ISTATE}), hist (2, n >= 1, channels): a detector for the ring's channels)"
        )
    table = np.zeros(TABLE_LEN, dtype=np.int64)
    ring_k.fill_ring_slots(table, ring_data, ring_t, ring_valid, meta)
    table[[T_WORK, T_WORK_LEN]] = work.ctypes.data, work.shape[0]
    table[T_ISTATE] = istate.ctypes.data
    table[[T_HIST, T_HIST_ROWS]] = hist.ctypes.data, hist.shape[1]
    table.flags.writeable = False  # addresses the kernel writes through
    return table


def entry_point_for(args: Sequence[object]) -> IngestKernel:
    """The compiled `ingest_push_chain` for exactly these arguments' types (`_numba.
    entry_point`): the caller must pass only arrays of the types `args` had (for `data` and
    `t_s`: float64, 2-D and 1-D, `ENTRY_FLAGS`). `StreamState.push_chain` checks the
    block's two arrays before every call."""
    entry: IngestKernel = _numba.entry_point(ingest_push_chain, tuple(args))
    return entry
