"""The per-onset kernels made cheap for `nmcore analyze`: the ramp-model look-back
(`ml_ramp_change`: prefix sums over the plateau, chunked logarithms) against a plain numpy
reference that sums every term of the log-likelihood; the rest statistics of `arm` and the
one-call burst metrics of `results`; each also against its `.py_func`."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.detect import _emg_kernels as k
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0


def _reference_gains(
    d: np.ndarray,
    lo: int,
    hi: int,
    kend: int,
    sig2: float,
    ramp_max: int,
    ramp_n: int,
    kappa: float,
    penalty: float,
) -> dict[int, float]:
    """Best log-likelihood gain of every candidate j (over the ramp lengths), every term of
    the sum written out: before j variance sig2, from j on sig2 + a^2 min(1, (i-j+1)/R)^2."""
    best: dict[int, float] = {}
    for m in range(ramp_n + 1):
        ramp = (ramp_max * m) // ramp_n
        for j in range(max(lo, hi - int(0.5 * ramp)), hi + 1):
            i = np.arange(j, kend + 1)
            if i.size == 0:
                continue
            w = np.ones(i.size) if ramp == 0 else np.minimum(1.0, (i - j + 1) / ramp)
            excess = float(np.sum(d[i] - sig2))
            if excess <= 0.0:
                continue
            a2 = excess / float(np.sum(w * w))
            ratio = 1.0 + a2 * w * w / sig2
            gain = float(np.sum(-np.log(ratio) + d[i] / sig2 * (1.0 - 1.0 / ratio)))
            gain = 0.5 * kappa * gain - (penalty if ramp > 0 else 0.0)
            best[j] = max(best.get(j, -np.inf), gain)
    return best


def _check(
    ring: np.ndarray,
    flat: np.ndarray,
    c: int,
    args: tuple[int, int, int, float, int, int, float, float],
) -> int:
    """Kernel == py_func, and the kernel's j is the reference's best up to float rounding
    (the two sum in different orders; a near-tie may then pick either candidate)."""
    hi = args[1]
    got = k.ml_ramp_change(ring, c, *args)
    assert k.ml_ramp_change.py_func(ring, c, *args) == got
    gains = _reference_gains(flat, *args)
    if not gains or max(gains.values()) <= -1.0:
        assert got == hi  # nothing fits: the step estimate is kept
        return got
    top = max(gains.values())
    ref_j = max(gains, key=lambda j: (gains[j], -j))  # first maximum, as the kernel scans
    assert got == ref_j or gains[got] >= top - 1e-9 * abs(top), (got, ref_j)
    return got


def _squared_trial(rng: np.random.Generator, shape: str, snr_db: float) -> np.ndarray:
    x = synth_emg_trial(
        rng, rate_hz=RATE_HZ, duration_s=0.8, onset_s=0.4, snr_db=snr_db, shape=shape
    )[:, 0]
    return x * x


@pytest.mark.parametrize("shape", ["step", "ramp"])
@pytest.mark.parametrize("snr_db", [3.0, 10.0, 25.0])
def test_ramp_kernel_matches_reference_and_py_func(shape: str, snr_db: float) -> None:
    rng = np.random.default_rng(11)
    d = _squared_trial(rng, shape, snr_db)
    sig2 = float(d[:700].mean())
    two = np.ascontiguousarray(np.column_stack([d[::-1], d]))  # channel 1 is the record
    picked = set()
    for hi, kend, ramp_max, ramp_n in [
        (820, 1020, 150, 6),  # the defaults at 2 kHz
        (850, 1100, 150, 13),
        (800, 830, 150, 6),  # ramps longer than the data after j
        (820, 1020, 0, 1),  # ramp model off: the step alone
        (810, 1200, 240, 50),
        (805, 805, 37, 5),  # kend == hi
    ]:
        lo = hi - ramp_max
        args = (lo, hi, kend, sig2, ramp_max, ramp_n, 0.43, 1.0)
        picked.add(_check(two, d, 1, args))
    assert len(picked) > 1  # the cases do exercise different answers


def test_ramp_kernel_reads_the_ring_across_its_wrap() -> None:
    rng = np.random.default_rng(12)
    d = _squared_trial(rng, "ramp", 10.0)
    sig2 = float(d[:700].mean())
    n_hist = 900
    shift = 5 * n_hist - 790  # absolute index `shift + i` holds d[i]; 800..1100 wraps
    ring = np.empty((n_hist, 3))
    for i in range(600, 600 + n_hist):  # the ring holds samples 600..1499
        ring[(shift + i) % n_hist, :] = d[i]
    flat = np.zeros(shift + d.size)
    flat[shift:] = d
    for c in range(3):
        args = (shift + 680, shift + 830, shift + 1030, sig2, 150, 6, 0.43, 1.0)
        got = _check(ring, flat, c, args)
        assert (
            got
            == k.ml_ramp_change(
                np.ascontiguousarray(d[:, None]), 0, 680, 830, 1030, sig2, 150, 6, 0.43, 1.0
            )
            + shift
        )


def test_ramp_kernel_degenerate_inputs() -> None:
    d = np.ascontiguousarray(np.full((400, 1), 2.0))
    # no excess over the rest variance anywhere: the step estimate `hi` is returned
    assert k.ml_ramp_change(d, 0, 100, 200, 300, 2.0, 50, 5, 0.5, 1.0) == 200
    assert k.ml_ramp_change(d, 0, 100, 200, 300, 5.0, 50, 5, 0.5, 1.0) == 200
    # kend before every candidate, and an empty candidate range
    assert k.ml_ramp_change(d, 0, 100, 200, 150, 1.0, 50, 5, 0.5, 1.0) == 200
    assert k.ml_ramp_change(d, 0, 210, 200, 300, 1.0, 50, 5, 0.5, 1.0) == 200
    assert k.ml_ramp_change.py_func(d, 0, 100, 200, 150, 1.0, 50, 5, 0.5, 1.0) == 200


def test_huge_variance_ratio_takes_one_logarithm_per_sample() -> None:
    """A flat (clipped) rest leaves a tiny sig2: a^2 / sig2 beyond the chunked-product range
    must still give the reference's answer, with no overflow to inf."""
    rng = np.random.default_rng(13)
    d = _squared_trial(rng, "ramp", 20.0)
    d[:700] = 0.0
    sig2 = 1e-60
    args = (670, 820, 1020, sig2, 150, 6, 0.43, 1.0)
    _check(np.ascontiguousarray(d[:, None]), d, 0, args)


def _reference_step(d: np.ndarray, lo: int, hi: int, kend: int, sig2: float) -> int:
    gains = []
    for j in range(lo, hi + 1):
        r = float(d[j : kend + 1].mean()) / sig2
        gains.append((kend - j + 1) * (r - 1.0 - np.log(r)) if r > 1.0 else -1.0)
    return lo + int(np.argmax(gains)) if max(gains) > -1.0 else hi


def test_detector_look_back_lands_on_the_reference_onset() -> None:
    """Through the whole detector (ramp stage forced by the gate): from the detector's own
    alarm and rest variance, the numpy step search then the numpy ramp search give the
    detector's onset."""
    rng = np.random.default_rng(14)
    params = OnsetParams(ramp_gate=1e9)
    stim = 1000
    moved = 0
    for shape in ("ramp", "ramp", "ramp", "step"):
        x = synth_emg_trial(
            rng, rate_hz=RATE_HZ, duration_s=1.5, onset_s=0.62, snr_db=8.0, shape=shape
        )
        det = EmgOnsetDetector(RATE_HZ, 1, params)
        det.process(x[:stim])
        det.arm(stim)
        det.process(x[stim:])
        det.finish()
        coef, istate = det.coef, det.istate
        alarm = int(istate[0, k.I_ALARM])
        assert alarm > stim
        kend = alarm + int(coef[k.C_REFINE])
        d = det.hist_d[:, 0]  # the ring is longer than the record: row = sample index
        sig2 = float(det.fstate[0, k.F_SIG2])
        j0 = _reference_step(d, max(stim, alarm - int(coef[k.C_LOOKBACK])), alarm, kend, sig2)
        ramp_max = int(coef[k.C_RAMP_MAX])
        args = (max(stim, j0 - ramp_max), j0, kend, sig2, ramp_max, int(coef[k.C_RAMP_N]))
        gains = _reference_gains(d, *args, float(coef[k.C_KAPPA]), float(coef[k.C_RAMP_PENALTY]))
        expected = max(gains, key=lambda j: (gains[j], -j))
        assert int(istate[0, k.I_ONSET]) + int(coef[k.C_DELAY]) == expected
        moved += expected < j0
    assert moved >= 1  # the ramp stage did move an onset before the step estimate


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
    y: np.ndarray, onset: int, end: int, window: int, offset_rms: float
) -> tuple[int, float, float, float]:
    """Moving rms over the last `window` samples (fewer at the start), summed afresh."""
    peak = area = total = 0.0
    for i in range(onset, end):
        seg = y[max(onset, i - window + 1) : i + 1]
        if i - onset >= window and float(np.sum(seg * seg)) < offset_rms**2 * window:
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
    for fn in (k.burst_metrics_all, k.burst_metrics_all.py_func):
        out = np.full((3, 4), -7.0)
        fn(hist_y, onsets, ends, 50, offset_rms, out)
        np.testing.assert_array_equal(out[2], -7.0)  # no onset: left alone
        for c in range(2):
            ref = _reference_burst(x[:, c], 1000 + 10 * c, 2390, 50, float(offset_rms[c]))
            off = int(out[c, 0])
            assert off == (ref[0] + shift if ref[0] >= 0 else -1)
            np.testing.assert_allclose(out[c, 1:], ref[1:], rtol=1e-9)
            single = k.burst_metrics(hist_y, c, int(onsets[c]), int(ends[c]), 50, offset_rms[c])
            assert tuple(out[c]) == (float(single[0]), *single[1:])
    assert out[1, 0] > 0  # the stopped channel has its offset


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


def test_step_search_and_gate_ratio_across_the_ring_wrap() -> None:
    """`ml_variance_change` and `_early_late_ratio` walk the ring with a moving position:
    the same answers as numpy on the unwrapped record, and as their `.py_func`."""
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
    for j, early in [(j_ref, 20), (790, 40), (1095, 20), (1100, 20)]:
        split = min(j + early, kend)
        late = float(d[split : kend + 1].mean())
        expected = 1.0 if split <= j else float(d[j:split].mean()) / late
        for fn_r in (k._early_late_ratio, k._early_late_ratio.py_func):
            got = fn_r(ring, 0, shift + j, early, shift + kend)
            assert got == pytest.approx(expected, rel=1e-12)
