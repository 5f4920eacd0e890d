"""The 1.1 look-back of the default method: the step-or-ramp posterior median
(`onset_posterior_median`), the rest-window whitener (`whitening_filter`) and the whole
`refine_onset` through the detector, each against a plain numpy reference that writes every
term out, and against its `.py_func`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nmcore.detect import _emg_kernels as k
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams
from nmcore.dsp import butter_sos, sosfilt
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0


def _reference_posterior_median(
    d: np.ndarray,
    nj: int,
    sig2: float,
    ramp_max: int,
    ramp_n: int,
    block: int,
    kappa: float,
    log_odds: float,
) -> tuple[int, np.ndarray]:
    """Every candidate's log-likelihood summed sample by sample (the ramp profile w^2 taken
    as its mean over each `block`-sample block, as the kernel models it). Returns the
    median position and the posterior's CDF."""
    z = d / sig2
    n = z.size
    b = float(z[nj - 1 :].mean()) - 1.0
    if b <= 1e-12:
        return nj - 1, np.array([])
    rows = []
    profiles = [np.ones(0)]
    for m in range(1, ramp_n + 1):
        ramp = max(1, (ramp_max * m) // ramp_n)
        nb = -(-ramp // block)
        u = np.arange(nb * block)
        w2 = np.minimum(1.0, (u + 1) / ramp) ** 2
        profiles.append(np.repeat(w2.reshape(nb, block).mean(axis=1), block))
    for prof in profiles:
        gains = np.full(nj, -np.inf)
        for j in range(nj):
            if j + prof.size > n:
                continue
            p = np.ones(n - j)
            p[: prof.size] = prof
            ratio = 1.0 + b * p
            gains[j] = 0.5 * kappa * float(np.sum(z[j:] * (1.0 - 1.0 / ratio) - np.log(ratio)))
        rows.append(gains)
    log_prior = [-math.log1p(math.exp(-log_odds))] + [
        -math.log1p(math.exp(log_odds)) - math.log(ramp_n)
    ] * ramp_n
    logs = np.array([g + lp for g, lp in zip(rows, log_prior, strict=True)])
    post = np.exp(logs - logs.max()).sum(axis=0)
    cdf = np.cumsum(post) / post.sum()
    return int(np.searchsorted(cdf, 0.5)), cdf


def _assert_same_median(got: int, ref: int, cdf: np.ndarray) -> None:
    """Equal, or a CDF tie at one half within rounding (the sums run in another order)."""
    if got != ref:
        assert abs(cdf[min(got, ref)] - 0.5) < 1e-9, (got, ref)


def _squared(rng: np.random.Generator, shape: str, snr_db: float) -> np.ndarray:
    x = synth_emg_trial(
        rng, rate_hz=RATE_HZ, duration_s=0.8, onset_s=0.4, snr_db=snr_db, shape=shape
    )[:, 0]
    return x * x


@pytest.mark.parametrize("shape", ["step", "ramp"])
@pytest.mark.parametrize("snr_db", [3.0, 10.0, 25.0])
def test_posterior_median_matches_reference_and_py_func(shape: str, snr_db: float) -> None:
    rng = np.random.default_rng(21)
    d2 = _squared(rng, shape, snr_db)
    sig2 = float(d2[:700].mean())
    answers = set()
    for lo, hi, kend, ramp_max, ramp_n, block, log_odds in [
        (560, 860, 1060, 150, 6, 4, math.log(9.0)),  # the defaults at 2 kHz
        (700, 900, 1000, 150, 6, 1, 0.0),  # per-sample ramps, even prior odds
        (780, 830, 850, 150, 6, 4, 2.0),  # ramps longer than the data: steps only
        (600, 880, 1200, 240, 13, 8, 5.0),
        (805, 805, 900, 37, 5, 3, 1.0),  # one candidate
    ]:
        d = np.ascontiguousarray(d2[lo : kend + 1])
        nj = hi - lo + 1
        args = (d, nj, sig2, ramp_max, ramp_n, block, 0.43, log_odds)
        got = k.onset_posterior_median(*args)
        assert k.onset_posterior_median.py_func(*args) == got
        ref, cdf = _reference_posterior_median(*args)
        _assert_same_median(got, ref, cdf)
        answers.add(lo + got)
    assert len(answers) >= 2  # the cases do exercise different answers


def test_posterior_median_prior_moves_a_ramp_onset_early() -> None:
    """On a ramp, a smaller prior for steps can only move the median earlier (more mass on
    the ramps, whose onsets precede the step's), and the ramp-favouring median is earlier."""
    rng = np.random.default_rng(22)
    d2 = _squared(rng, "ramp", 12.0)
    sig2 = float(d2[:700].mean())
    d = np.ascontiguousarray(d2[600:1100])
    picks = [k.onset_posterior_median(d, 300, sig2, 150, 6, 4, 0.43, lo) for lo in (-4, 0, 9)]
    assert picks[0] <= picks[1] <= picks[2]
    assert picks[0] < picks[2]


def test_posterior_median_degenerate_inputs() -> None:
    flat = np.full(300, 2.0)
    for fn in (k.onset_posterior_median, k.onset_posterior_median.py_func):
        assert fn(flat, 100, 2.0, 150, 6, 4, 0.43, 2.0) == 99  # no excess: the alarm
        assert fn(flat, 100, 5.0, 150, 6, 4, 0.43, 2.0) == 99
        assert fn(flat[:0], 0, 2.0, 150, 6, 4, 0.43, 2.0) == 0
        assert fn(flat, 400, 1.0, 150, 6, 4, 0.43, 2.0) == 299  # more candidates than data
    # a huge ratio (flat, clipped rest) stays finite: the exponentials are taken off the top
    spike = np.concatenate([np.full(200, 1e-60), np.full(200, 1.0)])
    assert k.onset_posterior_median(spike, 300, 1e-60, 150, 6, 4, 0.43, 2.0) == 200


def _reference_whitener(y: np.ndarray, order: int) -> tuple[np.ndarray, float]:
    n = y.size
    r = np.array([float(np.dot(y[: n - lag], y[lag:])) / n for lag in range(order + 1)])
    toeplitz = np.array([[r[abs(i - j)] for j in range(order)] for i in range(order)])
    a = np.concatenate([[1.0], -np.linalg.solve(toeplitz, r[1:])])
    return a, float(np.dot(a, r))


def test_whitening_filter_matches_yule_walker() -> None:
    rng = np.random.default_rng(23)
    x = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=0.6, onset_s=None, snr_db=0.0)[:, 0]
    y, _ = sosfilt(butter_sos(2, (20.0, 450.0), RATE_HZ, "bandpass"), x)  # as the detector
    seg = np.ascontiguousarray(y[250:1050])
    a_ref, err_ref = _reference_whitener(seg, 8)
    e = np.convolve(seg, a_ref)[8:800]
    for fn in (k.whitening_filter, k.whitening_filter.py_func):
        a, lag_sums = np.empty(9), np.empty(9)
        err = fn(seg, 8, a, lag_sums)
        np.testing.assert_allclose(a, a_ref, rtol=1e-7, atol=1e-9)
        assert err == pytest.approx(err_ref, rel=1e-9)
        np.testing.assert_allclose(
            lag_sums, [float(np.dot(seg[lag:], seg[: seg.size - lag])) for lag in range(9)]
        )
    # most of the band-passed signal is predictable from its last 8 samples (the whitener
    # keeps the unpredictable part), and what is left is much less correlated
    assert err_ref < 0.2 * float(np.mean(seg * seg))
    lag1 = [float(np.dot(v[:-1], v[1:]) / np.dot(v, v)) for v in (seg, e)]
    assert lag1[1] < 0.6 * lag1[0]
    a, lag_sums = np.empty(9), np.empty(9)
    assert k.whitening_filter(seg[:5], 8, a, lag_sums) == 0.0  # too short
    assert k.whitening_filter(np.zeros(50), 8, a, lag_sums) == 0.0  # silent


@pytest.mark.parametrize("order", [1, 3, 8])
def test_whitened_power_equals_the_mean_square_of_the_filtered_window(order: int) -> None:
    """From the lag sums and O(order^2) end corrections: the mean of e_t^2 over the window's
    samples with a full filter history (a Levinson model of the biased autocovariance does
    not give it: its error variance is off by tens of percent on band-passed EMG)."""
    rng = np.random.default_rng(27)
    x = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=0.5, onset_s=None, snr_db=0.0)[:, 0]
    y, _ = sosfilt(butter_sos(2, (20.0, 450.0), RATE_HZ, "bandpass"), x)
    seg = np.ascontiguousarray(y[100:900])
    a, lag_sums = np.empty(order + 1), np.empty(order + 1)
    model_err = k.whitening_filter(seg, order, a, lag_sums)
    expected = float(np.mean(np.convolve(seg, a)[order : seg.size] ** 2))
    for fn in (k.whitened_power, k.whitened_power.py_func):
        assert fn(seg, order, a, lag_sums) == pytest.approx(expected, rel=1e-9)
    if order == 8:
        assert abs(model_err / expected - 1.0) > 0.05  # why it is measured
    assert k.whitened_power(seg[:order], order, a, lag_sums) == 0.0


def _detector(
    x: np.ndarray, rate_hz: float, params: OnsetParams, rest: bool = True
) -> EmgOnsetDetector:
    stim = round(0.5 * rate_hz)
    det = EmgOnsetDetector(rate_hz, 1, params, history_s=x.shape[0] / rate_hz + 1.0)
    det.process(x[:stim])
    if rest:
        det.arm(stim)
    else:
        det.arm(stim, rest=(np.zeros(1), np.ones(1), np.array([25.0])))
    det.process(x[stim:])
    det.finish()
    return det


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_detector_onset_is_the_whitened_reference(shape: str) -> None:
    """Through the whole detector at 2 kHz: whiten the buffered band-passed signal with a
    numpy Yule-Walker model of the rest window, take the numpy posterior median of the
    squares from the detector's alarm: the detector's onset (no delay correction)."""
    rng = np.random.default_rng(24)
    params = OnsetParams()
    for _ in range(3):
        x = synth_emg_trial(
            rng,
            rate_hz=RATE_HZ,
            duration_s=1.5,
            onset_s=0.6 + 0.2 * rng.random(),
            snr_db=8.0,
            shape=shape,  # type: ignore[arg-type]
        )
        det = _detector(x, RATE_HZ, params)
        coef, istate = det.coef, det.istate
        stim, alarm = int(istate[0, k.I_STIM]), int(istate[0, k.I_ALARM])
        rest = int(coef[k.C_REST])
        kend = alarm + int(coef[k.C_REFINE])
        lo = max(stim, alarm - int(coef[k.C_LOOKBACK]))
        y = det.hist_y[:, 0]  # the ring is longer than the record: row = sample index
        a, _ = _reference_whitener(y[stim - rest : stim], 8)
        e = np.convolve(y[: kend + 1], a)[: kend + 1]
        sig2 = float(np.mean(e[stim - rest + 8 : stim] ** 2))
        ref, cdf = _reference_posterior_median(
            e[lo : kend + 1] ** 2,
            alarm - lo + 1,
            sig2,
            int(coef[k.C_RAMP_MAX]),
            int(coef[k.C_RAMP_N]),
            int(coef[k.C_RAMP_BLOCK]),
            1.0,
            float(coef[k.C_RAMP_PENALTY]),
        )
        _assert_same_median(int(istate[0, k.I_ONSET]) - lo, ref, cdf)


@pytest.mark.parametrize(("rate_hz", "rest"), [(RATE_HZ, False), (1000.0, True)])
def test_detector_falls_back_to_the_squared_signal(rate_hz: float, rest: bool) -> None:
    """No rest window (rest statistics given to `arm`), or a band that fills the Nyquist
    band (1 kHz: nothing to whiten): the posterior of y**2 with kappa, minus the band-pass
    delay."""
    rng = np.random.default_rng(25)
    x = synth_emg_trial(rng, rate_hz=rate_hz, duration_s=1.5, onset_s=0.68, snr_db=10.0)
    det = _detector(x, rate_hz, OnsetParams(), rest=rest)
    coef, istate = det.coef, det.istate
    stim, alarm = int(istate[0, k.I_STIM]), int(istate[0, k.I_ALARM])
    assert alarm > stim
    kend = alarm + int(coef[k.C_REFINE])
    lo = max(stim, alarm - int(coef[k.C_LOOKBACK]))
    ref, cdf = _reference_posterior_median(
        det.hist_d[lo : kend + 1, 0],
        alarm - lo + 1,
        float(det.fstate[0, k.F_SIG2]),
        int(coef[k.C_RAMP_MAX]),
        int(coef[k.C_RAMP_N]),
        int(coef[k.C_RAMP_BLOCK]),
        float(coef[k.C_KAPPA]),
        float(coef[k.C_RAMP_PENALTY]),
    )
    _assert_same_median(int(istate[0, k.I_ONSET]) + int(coef[k.C_DELAY]) - lo, ref, cdf)


def test_refine_onset_py_func_and_ring_wrap() -> None:
    """`refine_onset` on a ring whose look-back and rest window wrap: the same onset as on
    the unwrapped history, and as its `.py_func`."""
    rng = np.random.default_rng(26)
    x = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=1.5, onset_s=0.7, snr_db=10.0)
    det = _detector(x, RATE_HZ, OnsetParams())
    coef, istate = det.coef, det.istate
    stim, alarm = int(istate[0, k.I_STIM]), int(istate[0, k.I_ALARM])
    kend = alarm + int(coef[k.C_REFINE])
    n_hist = 2000
    shift = 5 * n_hist - 1300  # the rest window and the look-back straddle the wrap
    hist = np.empty((2, n_hist, 1))
    for i in range(kend + 1 - n_hist, kend + 1):
        hist[:, (shift + i) % n_hist, 0] = det.hist[:, i, 0]
    args = (
        int(coef[k.C_LOOKBACK]),
        int(coef[k.C_RAMP_MAX]),
        int(coef[k.C_RAMP_N]),
        int(coef[k.C_RAMP_BLOCK]),
        float(coef[k.C_KAPPA]),
        float(coef[k.C_RAMP_PENALTY]),
        int(coef[k.C_DELAY]),
        int(coef[k.C_REST]),
    )
    sig2 = float(det.fstate[0, k.F_SIG2])
    for rest_ok in (True, False):
        flat = k.refine_onset(det.hist_y, det.hist_d, 0, stim, alarm, kend, sig2, *args, rest_ok, 0)
        for fn in (k.refine_onset, k.refine_onset.py_func):
            got = fn(
                hist[0],
                hist[1],
                0,
                shift + stim,
                shift + alarm,
                shift + kend,
                sig2,
                *args,
                rest_ok,
                shift + kend + 1 - n_hist,
            )
            assert got == shift + flat
        if rest_ok:
            assert flat == int(istate[0, k.I_ONSET])
