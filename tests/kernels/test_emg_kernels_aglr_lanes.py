"""The AGLR test across channels (`_aglr_test_block`, the steady state of a trial) leaves
exactly what the per-channel test (`_test_channel` for every channel) leaves: the same bits
in every state array after every block, through alarms, history wraps, window ends and
channels in different phases; and the jitted kernel agrees with its `.py_func`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from nmcore.detect import _emg_kernels as k
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0
N_CH = 11  # one group of eight channels side by side, three single ones
STIM = 1100

Block = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]


def _per_channel_block(
    x: np.ndarray, work: np.ndarray, istate: np.ndarray, hist: np.ndarray
) -> int:
    """`emg_filter_chain_block` without the lanes: the filter, then `_test_channel` for every
    channel (the path every method other than AGLR takes)."""
    n, n_ch = x.shape
    n_bp, n_env = int(work[k.C_NBP]), int(work[k.C_NENV])
    n_coef, z0, total = k.work_layout(n_bp, n_env, n_ch)
    coef = work[:n_coef]
    fstate = work[n_coef:z0].reshape(n_ch, k.N_FSTATE)
    zs = work[z0:total].reshape(k.n_zstate_rows(n_bp, n_env), n_ch)
    head0 = int(istate[0, k.I_HEAD])
    n_hist = hist.shape[1]
    k._chain_two_sections(x, coef, zs, hist[0], hist[1], head0 % n_hist, int(coef[k.C_METHOD]))
    events = 0
    for c in range(n_ch):
        istate[c, k.I_HEAD] = head0 + n
        events += k._test_channel(coef, fstate, istate, hist[0], hist[1], c)
    return events


def _signal(seed: int) -> np.ndarray:
    """Eleven channels: onsets at different times (alarms in different blocks, in the group
    of eight and in the single channels), two silent."""
    rng = np.random.default_rng(seed)
    onsets = (0.6, 0.66, 0.7, 0.75, 0.9, None, 0.63, 0.81, 0.72, None, 0.68)
    snrs = (10.0, 6.0, 20.0, 3.0, 10.0, 0.0, 12.0, 8.0, 15.0, 0.0, 10.0)
    cols = [
        synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=1.4, onset_s=t, snr_db=snr)
        for t, snr in zip(onsets, snrs, strict=True)
    ]
    return np.ascontiguousarray(np.column_stack(cols))


def _detector(history_s: float, window_ms: float) -> EmgOnsetDetector:
    params = OnsetParams(method="aglr", response_window_ms=window_ms)
    return EmgOnsetDetector(RATE_HZ, N_CH, params, history_s=history_s)


def _run(
    fn: Block,
    x: np.ndarray,
    block: int,
    *,
    history_s: float,
    window_ms: float,
    mixed: bool,
    behind: int = 5,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Feed x in blocks; snapshot (work, istate, hist, events) after every block. The
    stimulus lies `behind` samples before the first block: that block catches up from it."""
    det = _detector(history_s, window_ms)
    det.hist.fill(0.0)
    args = (det.work, det.istate, det.hist)
    fn(np.ascontiguousarray(x[:STIM]), *args)
    det.arm(STIM - behind)
    if mixed:
        det.istate[1, k.I_PHASE] = k.P_IDLE  # never armed
        det.istate[2, k.I_END] = STIM + 301  # its window closes inside a block
    out = []
    for i in range(STIM, x.shape[0], block):
        if mixed and STIM + 96 <= i < STIM + 96 + block:
            # channel 4 re-armed later, behind the head (armed phase inside the run)
            det.istate[4, k.I_PHASE] = k.P_ARMED
            det.istate[4, k.I_CURSOR] = i - 40
        ev = fn(np.ascontiguousarray(x[i : i + block]), *args)
        out.append((det.work.copy(), det.istate.copy(), det.hist.copy(), ev))
    return out


@pytest.fixture(scope="module")
def emg() -> np.ndarray:
    return _signal(11)


@pytest.mark.parametrize("behind", [0, 5, 90])
@pytest.mark.parametrize("block", [1, 7, 32, 45])
@pytest.mark.parametrize(
    ("history_s", "mixed"),
    [(1.6, False), (1.6, True), (1.2183, False), (1.2183, True)],
    ids=["long-history", "long-history-mixed", "wrapping-history", "wrapping-history-mixed"],
)
def test_lanes_leave_the_same_bits_as_the_per_channel_test(
    emg: np.ndarray, block: int, history_s: float, mixed: bool, behind: int
) -> None:
    # 1.2183 s = 2436.6 -> 2437 rows: the history wraps inside blocks, at an odd position;
    # behind: armed at the block's start, or the first block catches up from the stimulus
    window_ms = 500.0 if history_s > 1.5 else 300.0
    kw = {"history_s": history_s, "window_ms": window_ms, "mixed": mixed, "behind": behind}
    fast = _run(k.emg_filter_chain_block, emg, block, **kw)  # type: ignore[arg-type]
    slow = _run(_per_channel_block, emg, block, **kw)  # type: ignore[arg-type]
    assert len(fast) == len(slow)
    for (w1, i1, h1, e1), (w2, i2, h2, e2) in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(h1, h2)
        assert e1 == e2
    final = fast[-1][1]
    # the runs did raise alarms and find onsets (so the redo-on-alarm path ran)
    assert (final[:8, k.I_ALARM] > STIM).sum() >= 3
    assert (final[8:, k.I_ALARM] > STIM).sum() >= 1
    assert sum(s[3] for s in fast) >= 4


@pytest.mark.parametrize("history_s", [1.6, 1.2183])
@pytest.mark.parametrize(
    ("pre", "stim", "block"), [(1350, 1150, 32), (1400, 1100, 7), (1300, 1250, 1)]
)
def test_armed_lanes_that_cross_in_the_catch_up_block_are_redone_with_the_same_bits(
    emg: np.ndarray, history_s: float, pre: int, stim: int, block: int
) -> None:
    """Armed late (the stimulus `pre - stim` samples back, onsets in between): the lanes take
    their starting sums, several cross in the catch-up block and are redone per channel from
    there; every state array equals the per-channel path's after every block."""
    window_ms = 500.0 if history_s > 1.5 else 300.0
    runs = []
    for fn in (k.emg_filter_chain_block, _per_channel_block):
        det = _detector(history_s, window_ms)
        det.hist.fill(0.0)
        args = (det.work, det.istate, det.hist)
        fn(np.ascontiguousarray(emg[:pre]), *args)
        det.arm(stim)
        if fn is k.emg_filter_chain_block:
            # the catch-up is taken by the lanes (not refused) and some of them cross
            n_coef, z0, _ = k.work_layout(int(det.work[k.C_NBP]), int(det.work[k.C_NENV]), N_CH)
            w, i = det.work.copy(), det.istate.copy()
            f = w[n_coef:z0].reshape(N_CH, k.N_FSTATE)
            redo = k._aglr_test_block(w[:n_coef], f, i, det.hist_d, stim + 1, pre - stim - 1)
            assert redo > 0
        out = []
        for j in range(pre, pre + 300, block):
            ev = fn(np.ascontiguousarray(emg[j : j + block]), *args)
            out.append((det.work.copy(), det.istate.copy(), det.hist.copy(), ev))
        runs.append(out)
    fast, slow = runs
    assert fast[0][3] > 0  # the catch-up block raised alarms
    for (w1, i1, h1, e1), (w2, i2, h2, e2) in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(h1, h2)
        assert e1 == e2


def test_lanes_are_taken_in_the_steady_state_and_refused_otherwise(emg: np.ndarray) -> None:
    det = _detector(1.6, 500.0)
    det.hist.fill(0.0)
    det.process(np.ascontiguousarray(emg[:STIM]))
    det.arm(STIM)
    n_coef, z0, _ = k.work_layout(int(det.work[k.C_NBP]), int(det.work[k.C_NENV]), N_CH)
    coef, fstate = det.work[:n_coef], det.work[n_coef:z0].reshape(N_CH, k.N_FSTATE)
    # an empty block: nothing touched
    before = (det.work.copy(), det.istate.copy())
    for fn in (k._aglr_test_block, k._aglr_test_block.py_func):
        assert fn(coef, fstate, det.istate, det.hist_d, STIM, 0) == -1
    np.testing.assert_array_equal(before[0], det.work)
    np.testing.assert_array_equal(before[1], det.istate)
    # armed at the block's start: the lanes start testing there (same bits as the per-channel
    # start, `_test_channel` on the armed state)
    armed = []
    for fn in (k._aglr_test_block, k._aglr_test_block.py_func, None):
        w, i = det.work.copy(), det.istate.copy()
        f = w[n_coef:z0].reshape(N_CH, k.N_FSTATE)
        if fn is None:
            i[:, k.I_HEAD] = STIM + 32
            for c in range(N_CH):
                k._test_channel(w[:n_coef], f, i, det.hist_y, det.hist_d, c)
        else:
            assert fn(w[:n_coef], f, i, det.hist_d, STIM, 32) == 0
        assert (i[:, k.I_PHASE] == k.P_TESTING).all()
        assert (i[:, k.I_CURSOR] == STIM + 32).all()
        armed.append((w, i))
    for w, i in armed[1:]:
        np.testing.assert_array_equal(armed[0][0], w)
        np.testing.assert_array_equal(armed[0][1], i)
    # armed with the window before the stimulus not in the history: refused, untouched
    young = det.istate.copy()
    young[:, k.I_CURSOR] = 10
    young[:, k.I_STIM] = 10
    before = (det.work.copy(), young.copy())
    assert k._aglr_test_block(coef, fstate, young, det.hist_d, 32, 32) == -1
    np.testing.assert_array_equal(before[0], det.work)
    np.testing.assert_array_equal(before[1], young)
    det.process(np.ascontiguousarray(emg[STIM : STIM + 32]))  # testing now
    assert (det.istate[:, k.I_PHASE] == k.P_TESTING).all()
    # the next block, written by the filter only, then tested by each implementation
    results = []
    for fn in (k._aglr_test_block, k._aglr_test_block.py_func):
        w, i = det.work.copy(), det.istate.copy()
        f = w[n_coef:z0].reshape(N_CH, k.N_FSTATE)
        head0 = STIM + 32
        i[:, k.I_HEAD] = head0  # the block's rows are in the history from an earlier run
        assert fn(w[:n_coef], f, i, det.hist_d, head0, 32) == 0
        assert (i[:, k.I_CURSOR] == head0 + 32).all()
        results.append((w, i))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # lanes, but a block so long that the samples leaving the window are overwritten: refused
    n_hist = det.hist_d.shape[0]
    head0 = STIM + 64
    i = det.istate.copy()
    i[:, k.I_HEAD] = head0
    i[:, k.I_CURSOR] = head0
    i[:, k.I_END] = 10**9
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, head0, 32) == 0
    i[:, k.I_CURSOR] = head0
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, head0, n_hist - 10) == -1
    i[:, k.I_CURSOR] = head0
    i[5, k.I_CURSOR] = head0 - 1  # behind the others: not a lane
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, head0, 32) == 1 << 5
    i[:, k.I_CURSOR] = head0 - 1  # all behind alike: lanes from there
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, head0, 32) == 0
    i[:, k.I_CURSOR] = head0
    i[3, k.I_PHASE] = k.P_DONE  # the other channels are lanes: channel 3 is left to test
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, head0, 32) == 1 << 3


@pytest.mark.parametrize("block", [7, 32])
def test_py_func_agrees_through_alarms(emg: np.ndarray, block: int) -> None:
    kw = {"history_s": 1.2183, "window_ms": 300.0, "mixed": True}
    jit = _run(k.emg_filter_chain_block, emg[:1500], block, **kw)  # type: ignore[arg-type]
    py = _run(k.emg_filter_chain_block.py_func, emg[:1500], block, **kw)  # type: ignore[arg-type]
    for (w1, i1, h1, e1), (w2, i2, h2, e2) in zip(jit, py, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(h1, h2)
        assert e1 == e2


def test_more_channels_than_mask_bits_and_a_young_history_take_the_per_channel_path(
    emg: np.ndarray,
) -> None:
    # 66 channels (> 62 mask bits): every block is refused by the lanes and tested per
    # channel, with the same bits as the per-channel path
    x = np.ascontiguousarray(np.tile(emg[:1400], (1, 6)))  # 66 channels
    n_ch = x.shape[1]
    params = OnsetParams(method="aglr", response_window_ms=300.0)
    runs = []
    for fn in (k.emg_filter_chain_block, _per_channel_block):
        det = EmgOnsetDetector(RATE_HZ, n_ch, params, history_s=1.6)
        det.hist.fill(0.0)  # rows not written yet are compared too
        args = (det.work, det.istate, det.hist)
        fn(np.ascontiguousarray(x[:STIM]), *args)
        det.arm(STIM)
        events = [fn(np.ascontiguousarray(x[i : i + 32]), *args) for i in range(STIM, 1400, 32)]
        runs.append((det.work.copy(), det.istate.copy(), det.hist.copy(), events))
        n_coef, z0, _ = k.work_layout(int(det.work[k.C_NBP]), int(det.work[k.C_NENV]), n_ch)
        i = det.istate.copy()
        i[:, k.I_PHASE] = k.P_TESTING
        i[:, k.I_CURSOR] = i[:, k.I_HEAD]
        i[:, k.I_END] = 10**9
        f = det.work[n_coef:z0].reshape(n_ch, k.N_FSTATE)
        head0 = int(i[0, k.I_HEAD])
        assert k._aglr_test_block(det.work[:n_coef], f, i, det.hist_d, head0, 32) == -1
    for a, b in zip(runs[0][:3], runs[1][:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0][3] == runs[1][3]
    assert sum(runs[0][3]) >= 6  # alarms and onsets on the tiled channels
    # a history younger than the window: the samples leaving it were never written
    det = _detector(1.6, 500.0)
    det.hist.fill(0.0)
    n_coef, z0, _ = k.work_layout(int(det.work[k.C_NBP]), int(det.work[k.C_NENV]), N_CH)
    coef, fstate = det.work[:n_coef], det.work[n_coef:z0].reshape(N_CH, k.N_FSTATE)
    window = int(coef[k.C_WINDOW])
    i = det.istate.copy()
    i[:, k.I_PHASE] = k.P_TESTING
    i[:, k.I_CURSOR] = window - 1
    i[:, k.I_END] = 10**9
    before = (det.work.copy(), i.copy())
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, window - 1, 32) == -1
    np.testing.assert_array_equal(before[0], det.work)
    np.testing.assert_array_equal(before[1], i)
    i[:, k.I_CURSOR] = window
    assert k._aglr_test_block(coef, fstate, i, det.hist_d, window, 32) == 0


@pytest.mark.parametrize(("lo", "hi"), [(0, 60), (70, 130), (90, 90), (250, 310)])
def test_window_start_sums_in_order_across_the_ring_wrap(lo: int, hi: int) -> None:
    """The starting window sum walks the ring position (no modulo per sample): the same
    additions in the same order as summing the absolute indices, wrap or not."""
    n_hist = 100
    hist_d = np.random.default_rng(lo).standard_normal((n_hist, 3)) ** 2
    want = 0.0
    for j in range(lo, hi):
        want += hist_d[j % n_hist, 1]
    got = k._window_start(hist_d, 1, lo, hi)
    assert got == want
    assert k._window_start.py_func(hist_d, 1, lo, hi) == want
