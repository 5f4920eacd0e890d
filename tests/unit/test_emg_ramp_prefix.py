"""The per-onset kernels made cheap for `nmcore analyze`: the rest statistics of `arm` and
the one-call burst metrics of `results` (offset searched from the alarm), each against a
plain numpy reference and its `.py_func`. The look-back is tested in
test_emg_onset_posterior.py."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.detect import _emg_kernels as k
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0


def _squared_trial(rng: np.random.Generator, shape: str, snr_db: float) -> np.ndarray:
    x = synth_emg_trial(
        rng, rate_hz=RATE_HZ, duration_s=0.8, onset_s=0.4, snr_db=snr_db, shape=shape
    )[:, 0]
    return x * x


@pytest.mark.parametrize("n_channels", [2, 3, 16])
def test_rest_statistics_equal_numpy_bit_for_bit(n_channels: int) -> None:
    """`arm` takes them from the kernel for two or more channels: the same numbers as the
    numpy mean / std it replaced, so no threshold (and no onset) moves."""
    rng = np.random.default_rng(15)
    n_hist = 1500
    hist = rng.standard_normal((2, n_hist, n_channels)) * rng.uniform(1e-6, 1e3, n_channels)
    hist[1] = np.abs(hist[1])
    hist[:, :, 0] = 0.0  # a flat channel: SD and mean square floored, never zero
    for start, stop in [(100, 1100), (3 * n_hist - 300, 3 * n_hist + 700)]:  # the 2nd wraps
        idx = np.arange(start, stop) % n_hist
        d, y = hist[1][idx], hist[0][idx]
        tiny = np.finfo(np.float64).tiny
        expected = np.column_stack(
            [
                d.mean(axis=0),
                np.maximum(d.std(axis=0), tiny),
                np.maximum((y * y).mean(axis=0), tiny),
            ]
        )
        for fn in (k.rest_statistics, k.rest_statistics.py_func):
            fstate = np.zeros((n_channels, k.N_FSTATE))
            fn(hist, start, stop, fstate)
            got = fstate[:, [k.F_MU, k.F_SD, k.F_SIG2]]
            np.testing.assert_array_equal(got, expected)


def _reference_burst(
    y: np.ndarray, onset: int, end: int, window: int, offset_rms: float, search_from: int = 0
) -> tuple[int, float, float, float]:
    """Moving rms over the last `window` samples (fewer at the start), summed afresh."""
    peak = area = total = 0.0
    for i in range(onset, end):
        seg = y[max(onset, i - window + 1) : i + 1]
        quiet = float(np.sum(seg * seg)) < offset_rms**2 * window
        if i - onset >= window and i >= search_from and quiet:
            return i, peak, area, total / max(1, i - onset)
        rms = float(np.sqrt(np.mean(seg * seg)))
        peak, area, total = max(peak, rms), area + rms, total + float(y[i] ** 2)
    return -1, peak, area, total / max(1, end - onset)


def test_burst_metrics_all_channels_in_one_call() -> None:
    rng = np.random.default_rng(16)
    n = 2400
    x = np.column_stack(
        [
            synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=n / RATE_HZ, onset_s=0.5, snr_db=snr)[
                :, 0
            ]
            for snr in (6.0, 15.0, 25.0)
        ]
    )
    x[1600:, 1] *= 0.01  # channel 1 stops: an offset inside the window
    n_hist = 2000
    shift = 7 * n_hist - 1100  # absolute index `shift + i` holds x[i]; the burst wraps
    hist_y = np.empty((n_hist, 3))
    for i in range(n - n_hist, n):
        hist_y[(shift + i) % n_hist] = x[i]
    onsets = np.array([shift + 1000, shift + 1010, -1], dtype=np.int64)
    ends = np.array([shift + 2390, shift + 2390, shift + 1001], dtype=np.int64)
    rest_rms = np.sqrt(np.mean(x[:900] ** 2, axis=0))
    offset_rms = 2.0 * rest_rms
    # channel 0 searches its offset from the onset, channel 1 from 1400 (its alarm, say)
    search_from = np.array([shift + 1000, shift + 1400, 0], dtype=np.int64)
    for fn in (k.burst_metrics_all, k.burst_metrics_all.py_func):
        out = np.full((3, 4), -7.0)
        fn(hist_y, onsets, ends, 50, offset_rms, search_from, out)
        np.testing.assert_array_equal(out[2], -7.0)  # no onset: left alone
        for c in range(2):
            ref = _reference_burst(
                x[:, c], 1000 + 10 * c, 2390, 50, float(offset_rms[c]), 1000 + 400 * c
            )
            off = int(out[c, 0])
            assert off == (ref[0] + shift if ref[0] >= 0 else -1)
            np.testing.assert_allclose(out[c, 1:], ref[1:], rtol=1e-9)
            single = k.burst_metrics(
                hist_y, c, int(onsets[c]), int(ends[c]), 50, offset_rms[c], int(search_from[c])
            )
            assert tuple(out[c]) == (float(single[0]), *single[1:])
    assert out[1, 0] > 0  # the stopped channel has its offset


def test_offset_is_not_searched_before_the_alarm() -> None:
    """A burst quiet for its first 40 ms (a ramp's start): searched from the onset, the
    offset lands in that quiet start; searched from the alarm, at the burst's real end."""
    rng = np.random.default_rng(19)
    y = rng.standard_normal(1000)
    y[200:700] *= np.concatenate([np.full(80, 1.2), np.full(420, 8.0)])  # quiet, then loud
    ring = np.ascontiguousarray(y[:, None])
    for fn in (k.burst_metrics, k.burst_metrics.py_func):
        early = fn(ring, 0, 200, 1000, 50, 2.0)
        late = fn(ring, 0, 200, 1000, 50, 2.0, 300)
        assert 250 <= early[0] < 300
        assert 700 <= late[0] < 760
        assert late == _reference_burst(y, 200, 1000, 50, 2.0, 300)[:1] + late[1:]
        np.testing.assert_allclose(late[1:], _reference_burst(y, 200, 1000, 50, 2.0, 300)[1:])


def _reference_clipped(x: np.ndarray, run: int) -> bool:
    for c in range(x.shape[1]):
        col = x[:, c][np.isfinite(x[:, c])]
        if col.size < run:
            continue
        for extreme in (col.max(), col.min()):
            hit = (col == extreme).astype(int)
            # a run of `run` hits: a window of `run` ones
            if np.any(np.convolve(hit, np.ones(run, dtype=int), "valid") == run):
                return True
    return False


def test_clipped_any_matches_reference_and_py_func() -> None:
    rng = np.random.default_rng(17)
    cases = []
    for _ in range(40):
        x = np.round(rng.standard_normal((300, 4)), 1)  # coarse: repeated extremes happen
        top = float(x.max())
        where = rng.integers(0, 297)
        if rng.random() < 0.5:
            x[where : where + int(rng.integers(1, 4)), int(rng.integers(0, 4))] = top + 1.0
        if rng.random() < 0.3:
            x[rng.integers(0, 300, 20), int(rng.integers(0, 4))] = np.nan
        cases.append(x)
    flat = np.zeros((10, 2))
    flat[:, 1] = np.arange(10.0)  # a constant channel is clipped
    nan_split = np.arange(20.0)[:, None].copy()
    nan_split[[5, 7]] = np.nan
    nan_split[[4, 6, 8]] = 99.0  # 99, nan, 99, nan, 99: three in a row once NaNs are skipped
    inf_only = np.full((6, 1), np.inf)
    inf_only[0] = 1.0
    cases += [flat, nan_split, inf_only, np.zeros((2, 3))]
    expected = [_reference_clipped(x, 3) for x in cases]
    assert 5 < sum(expected) < len(cases)  # both answers occur
    assert expected[-4:] == [True, True, False, False]
    for fn in (k.clipped_any, k.clipped_any.py_func):
        assert [bool(fn(np.ascontiguousarray(x), 3)) for x in cases] == expected


def test_step_search_across_the_ring_wrap() -> None:
    """`ml_variance_change` walks the ring with a moving position: the same answer as numpy
    on the unwrapped record, and as its `.py_func`."""
    rng = np.random.default_rng(18)
    d = _squared_trial(rng, "ramp", 8.0)
    sig2 = float(d[:700].mean())
    n_hist = 700
    shift = 3 * n_hist - 850  # the search span 760..1100 wraps in the ring
    ring = np.empty((n_hist, 2))
    for i in range(500, 500 + n_hist):  # the ring holds samples 500..1199
        ring[(shift + i) % n_hist, :] = d[i]
    lo, hi, kend = 760, 900, 1100
    gains = []
    for j in range(lo, hi + 1):
        r = float(d[j : kend + 1].mean()) / sig2
        gains.append((kend - j + 1) * (r - 1.0 - np.log(r)) if r > 1.0 else -1.0)
    j_ref = lo + int(np.argmax(gains))
    for fn in (k.ml_variance_change, k.ml_variance_change.py_func):
        assert fn(ring, 1, shift + lo, shift + hi, shift + kend, sig2) == shift + j_ref
