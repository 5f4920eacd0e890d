"""The daemon's per-block EMG ingest in one jitted call (private; `pipeline` is the face).

`ingest_push_chain` writes a block into the ring exactly as `buffer._kernels.ring_push` does
(it calls that kernel) and runs `detect._emg_kernels.emg_filter_chain_block` on the same
block: one dispatch per block instead of two (numba's dispatch, ~0.25 µs per call plus
~0.07 µs per array argument, is as large as the push itself for a 32 x 16 block).

Only the steady state is fused: the block starts at the ring's head and at the detector's
head. Anything else (a gap, a refused overlap, a wrong shape) returns `NOT_FUSED` before
touching anything, and the caller takes the two-call path, which owns those cases.

Why a factory: numba's cache key of a function covers its own file and bytecode, not the
kernels it calls in other modules, so a cached fused kernel would keep running yesterday's
EMG chain after `_emg_kernels.py` changed. The key does hash the closure's cell contents,
so the kernel closes over a digest of the two callee files: any edit there recompiles it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit
from nmcore.buffer import _kernels as ring_k
from nmcore.detect import _emg_kernels as emg_k

__all__ = ["NOT_FUSED", "entry_point_for", "ingest_push_chain"]

NOT_FUSED = -1  # nothing was touched: take the two-call path

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

IngestKernel = Callable[[F64, F64, U8, I64, int, F64, F64, F64, I64, F64], int]


def _callee_digest() -> int:
    """A 60-bit digest of the callees' source files (the fused kernel's cache key)."""
    h = hashlib.sha256()
    for mod in (ring_k, emg_k):
        h.update(Path(str(mod.__file__)).read_bytes())
    return int.from_bytes(h.digest()[:8], "little") >> 4


def _make_kernel(callee_digest: int) -> IngestKernel:
    # callees are reached as module globals, not closure cells: only the digest may be in
    # the closure, because the cache key pickles every cell
    @jit
    def ingest_push_chain(
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
        ring_k.ring_push(ring_data, ring_t, ring_valid, meta, first_index, data, t_s)
        return emg_k.emg_filter_chain_block(data, work, istate, hist)

    return ingest_push_chain


ingest_push_chain = _make_kernel(_callee_digest())


def entry_point_for(args: Sequence[object]) -> IngestKernel:
    """The compiled `ingest_push_chain` for exactly these arguments' types (compiled, or
    loaded from the cache, now: not per block).

    Calling it skips numba's per-call dispatch (typing ten arguments and picking the
    specialisation, ~0.3 us a block) and with it numba's check: the caller must pass only
    arrays of the types `args` had (for `data` and `t_s`: float64, C-contiguous, aligned,
    writeable, 2-D and 1-D), because a compiled entry point reads whatever it gets as its
    own types. `StreamState.push_chain` checks the block's two arrays before every call."""
    kernel: Any = ingest_push_chain  # the numba dispatcher behind the typed name
    sig = tuple(kernel.typeof_pyval(a) for a in args)
    entry: IngestKernel = kernel.compile(sig)
    return entry
