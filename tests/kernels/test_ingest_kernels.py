"""`push_chain_arrays` (ring push + EMG chain in one call) against its `.py_func` and a numpy
reference: numpy fancy-index ring writes and the detector's own two-call chain; and
`ingest_push_chain`, the same call through a `state_table` of the arrays (it has no
`.py_func`: Python cannot follow the table's addresses), against `push_chain_arrays`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nmcore.buffer import _kernels as rk
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams
from nmcore.runtime._ingest_kernels import (
    NOT_FUSED,
    TABLE_LEN,
    ingest_push_chain,
    push_chain_arrays,
    state_table,
)

RATE_HZ = 2000.0
N_CH = 4
CAPACITY = 300  # wraps several times over the record


def _through_table(*args: Any) -> int:
    """`ingest_push_chain` with `push_chain_arrays`'s arguments (the table built per call,
    while the arrays are alive)."""
    r_data, r_t, r_valid, meta, first, data, t_s, work, istate, hist = args
    table = state_table(r_data, r_t, r_valid, meta, work, istate, hist)
    return int(ingest_push_chain(table, first, data, t_s))


IMPLS = [
    pytest.param(push_chain_arrays, id="jit"),
    pytest.param(push_chain_arrays.py_func, id="py_func"),
    pytest.param(_through_table, id="table"),
]


def _record(seed: int = 3, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_CH))
    x[3500:] *= np.array([25.0, 1.0, 12.0, 40.0])  # bursts on three channels
    return x


class Ring:
    def __init__(self) -> None:
        self.data = np.full((CAPACITY, N_CH), np.nan)
        self.t = np.full(CAPACITY, np.nan)
        self.valid = np.zeros(CAPACITY, dtype=np.uint8)
        self.meta = np.zeros(rk.META_LEN, dtype=np.int64)

    def args(self) -> tuple[np.ndarray, ...]:
        return self.data, self.t, self.valid, self.meta


def _numpy_push(r: Ring, first: int, data: np.ndarray, t_s: np.ndarray) -> None:
    slots = np.arange(first, first + data.shape[0]) % CAPACITY
    r.data[slots] = data
    r.t[slots] = t_s
    r.valid[slots] = 1
    r.meta[rk.META_HEAD] = first + data.shape[0]
    r.meta[rk.META_WRITTEN_TOTAL] += data.shape[0]


def _detector() -> EmgOnsetDetector:
    return EmgOnsetDetector(RATE_HZ, N_CH, OnsetParams(response_window_ms=1500.0))


def _stream(
    impl: Callable[..., int] | None, blocks: list[int]
) -> tuple[Ring, EmgOnsetDetector, list[tuple[int, Any]]]:
    """Feed the record in blocks of the given sizes; arm at sample 2000. `impl` None: the
    numpy reference (numpy ring writes, then the detector's own `process`)."""
    x = _record()
    ring, det = Ring(), _detector()
    events: list[tuple[int, Any]] = []
    pos = 0
    armed = False
    for size in blocks:
        block = np.ascontiguousarray(x[pos : pos + size])
        t_s = (pos + np.arange(size)) / RATE_HZ
        if impl is None:
            _numpy_push(ring, pos, block, t_s)
            ev = det.process(block)
        else:
            n_ev = impl(*ring.args(), pos, block, t_s, det.work, det.istate, det.hist)
            assert n_ev >= 0
            ev = det.collect_events() if n_ev else []
        events.extend((pos, e) for e in ev)
        pos += size
        if not armed and pos >= 2000:
            det.arm(2000)
            armed = True
    return ring, det, events


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sizes", [[32], [7, 32, 1, 50]], ids=["32", "mixed"])
def test_matches_numpy_reference(impl: Callable[..., int], sizes: list[int]) -> None:
    kept: list[int] = []
    for b in itertools.cycle(sizes):  # block sizes in turn, up to the record's 6000 samples
        if sum(kept) + b > 6000:
            break
        kept.append(b)
    ref_ring, ref_det, ref_events = _stream(None, kept)
    ring, det, events = _stream(impl, kept)
    for a, b in zip(ring.args(), ref_ring.args(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(det.istate, ref_det.istate)
    np.testing.assert_array_equal(det.work, ref_det.work)
    written = min(det.head, det.hist.shape[1])  # the rest of the history is np.empty
    np.testing.assert_array_equal(det.hist[:, :written], ref_det.hist[:, :written])
    assert events == ref_events
    assert any(e.kind == "onset" for _, e in events)  # the bursts were found


@pytest.mark.parametrize("impl", IMPLS)
def test_not_fused_touches_nothing(impl: Callable[..., int]) -> None:
    x = _record()
    ring, det = Ring(), _detector()
    chain = (det.work, det.istate, det.hist)
    assert impl(*ring.args(), 0, x[:32].copy(), np.arange(32.0), *chain) >= 0
    before = [a.copy() for a in (*ring.args(), det.work, det.istate, det.hist)]
    cases = [
        (40, x[32:64], np.arange(32.0)),  # a gap: the ring's head is 32
        (16, x[16:48], np.arange(32.0)),  # an overlap
        (32, x[32:64, :2], np.arange(32.0)),  # wrong channel count
        (32, x[32:64], np.arange(31.0)),  # wrong time count
    ]
    for first, block, t_s in cases:
        got = impl(
            *ring.args(), first, np.ascontiguousarray(block), t_s, det.work, det.istate, det.hist
        )
        assert got == NOT_FUSED
    for a, b in zip((*ring.args(), det.work, det.istate, det.hist), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # the detector behind the ring (it skipped a block) is not fused either
    ring.meta[rk.META_HEAD] = 64
    got = impl(*ring.args(), 64, x[64:96].copy(), np.arange(32.0), det.work, det.istate, det.hist)
    assert got == NOT_FUSED


def test_state_table_refuses_arrays_the_kernel_cannot_read() -> None:
    """The kernel reads the table's addresses as its own types: every other array is refused
    when the table is built, naming the array."""
    ring, det = Ring(), _detector()
    good = (*ring.args(), det.work, det.istate, det.hist)
    table = state_table(*good)
    assert table.shape == (TABLE_LEN,)
    assert table[0] == ring.data.ctypes.data
    frozen = det.hist.copy()
    frozen.flags.writeable = False
    wide = np.zeros((CAPACITY, 2 * N_CH))
    bad = {
        "ring data": (wide[:, ::2], 0),
        "ring t_s": (ring.t.astype(">f8"), 1),
        "ring valid": (ring.valid.astype(np.int64), 2),
        "ring meta": (ring.meta.astype(np.int32), 3),
        "chain work": (det.work[None, :], 4),
        "chain istate": (np.asfortranarray(det.istate), 5),
        "chain hist": (frozen, 6),
    }
    for name, (array, i) in bad.items():
        args = list(good)
        args[i] = array
        with pytest.raises(ValueError, match=f"^{name} must be"):
            state_table(*args)
    # every shape the kernel indexes without bounds checks
    disagree = {
        "hist channels": (6, np.zeros((2, 50, N_CH + 1))),
        "hist rows": (6, np.zeros((2, 0, N_CH))),
        "hist planes": (6, np.zeros((3, 50, N_CH))),
        "t_s length": (1, ring.t[:-1].copy()),
        "valid length": (2, ring.valid[:-1].copy()),
        "meta length": (3, ring.meta[:1].copy()),
        "istate columns": (5, det.istate[:, :3].copy()),
        "istate rows": (5, np.zeros((N_CH - 1, det.istate.shape[1]), dtype=np.int64)),
    }
    for i, array in disagree.values():
        args = list(good)
        args[i] = array
        with pytest.raises(ValueError, match="state arrays disagree"):
            state_table(*args)
    # a detector for another channel count than the ring's
    other = EmgOnsetDetector(RATE_HZ, N_CH - 1, OnsetParams())
    with pytest.raises(ValueError, match="state arrays disagree"):
        state_table(*ring.args(), other.work, other.istate, other.hist)
    # the kernel writes through the table's addresses: nobody else may change them
    with pytest.raises(ValueError, match="read-only"):
        table[0] = 0


def test_fused_kernels_close_over_the_digest_only() -> None:
    """numba's cache key pickles a kernel's closure cells; a dispatcher in a cell pickles
    differently in every process, so the cached kernel would never be found again."""
    for kernel in (push_chain_arrays, ingest_push_chain):
        cells = kernel.py_func.__closure__ or ()
        assert [type(c.cell_contents) for c in cells] == [int]


def test_table_kernel_loads_from_the_cache_in_a_new_process(tmp_path: Any) -> None:
    """A second process finds the first one's compiled `ingest_push_chain` on disk."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from nmcore.buffer.ring import RingBuffer\n"
        "from nmcore.detect.emg import EmgOnsetDetector\n"
        "from nmcore.runtime._ingest_kernels import ingest_push_chain, state_table\n"
        "d = EmgOnsetDetector(2000.0, 2)\n"
        "r = RingBuffer(2, 64)\n"
        "t = state_table(*r.state, d.work, d.istate, d.hist)\n"
        "assert ingest_push_chain(t, 0, np.zeros((4, 2)), np.arange(4.0)) == 0\n"
        "s = ingest_push_chain.stats\n"
        "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout.split() == ["0", "1"]  # compiled and saved
    assert runs[1].stdout.split() == ["1", "0"]  # loaded


def test_a_table_of_another_length_is_not_fused() -> None:
    ring, det = Ring(), _detector()
    table = state_table(*ring.args(), det.work, det.istate, det.hist)
    x = _record()[:32].copy()
    assert ingest_push_chain(table[:-1].copy(), 0, x, np.arange(32.0)) == NOT_FUSED
    assert ring.meta[rk.META_HEAD] == 0
    assert ingest_push_chain(table, 0, x, np.arange(32.0)) >= 0
    assert ring.meta[rk.META_HEAD] == 32
