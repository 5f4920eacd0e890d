"""EMG onset kernels: the jitted kernel, its .py_func, and a plain numpy/scipy reference agree."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from nmcore.detect import _emg_kernels as k
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams, build_coef
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0
STIM = 1000


def _reference_chain(x: np.ndarray, params: OnsetParams, rate_hz: float) -> dict[str, object]:
    """Independent reference: scipy filtering, numpy conditioning, python-loop detectors."""
    coef = build_coef(params, rate_hz)
    n_bp, n_env = int(coef[k.C_NBP]), int(coef[k.C_NENV])
    bp = coef[k.C_SOS : k.C_SOS + 6 * n_bp].reshape(n_bp, 6)
    env = coef[k.C_SOS + 6 * n_bp : k.C_SOS + 6 * (n_bp + n_env)].reshape(n_env, 6)
    y = signal.sosfilt(bp, x, axis=0)
    if params.method == "hodges_bui":
        d = signal.sosfilt(env, np.abs(y), axis=0)
    elif params.method == "tkeo":
        # TKEO of sample k-1, known at k (causal): |y[k-1]^2 - y[k-2] y[k]|, zeros before.
        ypad = np.vstack([np.zeros((2, y.shape[1])), y])
        tk = np.abs(ypad[1:-1] ** 2 - ypad[:-2] * y)
        d = signal.sosfilt(env, tk, axis=0)
    else:
        d = y * y
    rest = round(params.rest_window_ms * 1e-3 * rate_hz)
    out: dict[str, object] = {"y": y, "d": d, "alarm": [], "onset": []}
    for c in range(x.shape[1]):
        dc = d[:, c]
        mu, sd = dc[STIM - rest : STIM].mean(), dc[STIM - rest : STIM].std()
        sig2 = float(np.mean(y[STIM - rest : STIM, c] ** 2))
        alarm, onset = _reference_detect(dc, params, coef, mu, sd, sig2)
        out["alarm"].append(alarm)  # type: ignore[attr-defined]
        out["onset"].append(onset)  # type: ignore[attr-defined]
    return out


def _ml(d: np.ndarray, lo: int, hi: int, kend: int, sig2: float) -> int:
    gains = []
    for j in range(lo, hi + 1):
        r = d[j : kend + 1].mean() / sig2
        gains.append((kend - j + 1) * (r - 1 - np.log(r)) if r > 1 else -1.0)
    return lo + int(np.argmax(gains)) if max(gains) > -1.0 else hi


def _reference_detect(
    d: np.ndarray, params: OnsetParams, coef: np.ndarray, mu: float, sd: float, sig2: float
) -> tuple[int, int]:
    end = STIM + round(params.response_window_ms * 1e-3 * RATE_HZ)
    h, run = coef[k.C_H], int(coef[k.C_RUN])
    kappa = coef[k.C_KAPPA]
    delay = int(coef[k.C_DELAY])
    if params.method in ("hodges_bui", "tkeo"):
        above = d > mu + h * sd
        for i in range(STIM, end):
            if above[i - run + 1 : i + 1].all() and i - run + 1 >= STIM:
                start = i - run + 1
                return i, start
        return -1, -1
    if params.method == "bonato":
        z = np.zeros_like(d)
        z[1:] = (d[:-1] + d[1:]) / sig2
        ab = z > h
        need = int(coef[k.C_BONATO_R])
        for i in range(STIM, end):
            if ab[i - run + 1 : i + 1].sum() >= need:
                first = i - run + 1 + int(np.argmax(ab[i - run + 1 : i + 1]))
                return i, first - delay
        return -1, -1
    if params.method == "cusum":
        rho = coef[k.C_RHO]
        s, last_zero = 0.0, STIM - 1
        for i in range(STIM, end):
            s = max(0.0, s + kappa * 0.5 * ((1 - 1 / rho) * d[i] / sig2 - np.log(rho)))
            if s == 0.0:
                last_zero = i
            if s > h:
                return i, last_zero + 1 - delay
        return -1, -1
    window = int(coef[k.C_WINDOW])
    for i in range(STIM, end):
        r = d[i - window + 1 : i + 1].mean() / sig2
        g = kappa * 0.5 * window * (r - 1 - np.log(r)) if r > 1 else 0.0
        if g > h:
            kend = min(i + int(coef[k.C_REFINE]), end - 1)
            lo = max(STIM, i - int(coef[k.C_LOOKBACK]))
            return i, _ml(d, lo, i, kend, sig2) - delay
    return -1, -1


def _kernel_run(x: np.ndarray, params: OnsetParams, *, py_func: bool, block: int) -> dict:
    det = EmgOnsetDetector(RATE_HZ, x.shape[1], params, history_s=3.0)
    fn = k.emg_filter_chain_block.py_func if py_func else k.emg_filter_chain_block
    args = (det.work, det.istate, det.hist)
    fn(np.ascontiguousarray(x[:STIM]), *args)
    det.arm(STIM)
    for i in range(STIM, x.shape[0], block):
        fn(np.ascontiguousarray(x[i : i + block]), *args)
    n = x.shape[0]
    return {
        "y": det.hist_y[:n].copy(),
        "d": det.hist_d[:n].copy(),
        "alarm": list(det.istate[:, k.I_ALARM]),
        "onset": list(det.istate[:, k.I_ONSET]),
    }


@pytest.fixture(scope="module")
def trial() -> np.ndarray:
    rng = np.random.default_rng(42)
    x = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=1.6, onset_s=0.62, snr_db=10.0)
    y = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=1.6, onset_s=0.7, snr_db=6.0)
    z = synth_emg_trial(rng, rate_hz=RATE_HZ, duration_s=1.6, onset_s=None, snr_db=0.0)
    return np.column_stack([x, y, z])


# The chain reference has no ramp model (the look-back is tested in test_emg_onset_posterior).
PLAIN = {"ramp_max_ms": 0.0}


@pytest.mark.parametrize("method", ["aglr", "cusum", "hodges_bui", "tkeo", "bonato"])
def test_fused_kernel_matches_reference_and_py_func(trial: np.ndarray, method: str) -> None:
    params = OnsetParams(method=method, **PLAIN)  # type: ignore[arg-type]
    ref = _reference_chain(trial, params, RATE_HZ)
    jit_out = _kernel_run(trial, params, py_func=False, block=32)
    py_out = _kernel_run(trial, params, py_func=True, block=32)
    for out in (jit_out, py_out):
        np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["d"], ref["d"], rtol=1e-9, atol=1e-9)
        assert out["alarm"] == ref["alarm"]
        assert out["onset"] == ref["onset"]
    expected_delay = 1 if method == "aglr" else 0  # 2 kHz, 20-450 Hz: one sample
    assert int(build_coef(params, RATE_HZ)[k.C_DELAY]) == expected_delay
    # the noise-only third channel must stay silent and the bursts must be found
    assert ref["alarm"][2] == -1  # type: ignore[index]
    assert ref["alarm"][0] > STIM  # type: ignore[index]


@pytest.mark.parametrize("block", [1, 7, 32, 600])
def test_block_size_does_not_change_results(trial: np.ndarray, block: int) -> None:
    params = OnsetParams()
    whole = _kernel_run(trial, params, py_func=False, block=10_000)
    split = _kernel_run(trial, params, py_func=False, block=block)
    np.testing.assert_array_equal(split["y"], whole["y"])
    assert split["onset"] == whole["onset"]
    assert split["alarm"] == whole["alarm"]


def test_ml_kernels_match_numpy_and_py_func() -> None:
    rng = np.random.default_rng(3)
    for shape in ("step", "ramp"):
        x = synth_emg_trial(
            rng, rate_hz=RATE_HZ, duration_s=0.5, onset_s=0.2, snr_db=10.0, shape=shape
        )[:, 0]
        d = np.ascontiguousarray((x * x)[:, None])
        sig2 = float(np.mean(d[:300, 0]))
        lo, hi, kend = 300, 500, 560
        ref = _ml(d[:, 0], lo, hi, kend, sig2)
        assert k.ml_variance_change(d, 0, lo, hi, kend, sig2) == ref
        assert k.ml_variance_change.py_func(d, 0, lo, hi, kend, sig2) == ref


def _numpy_glr(x: np.ndarray, start: int, end: int, mu0: float, s0: float, window: int) -> int:
    for i in range(start, end):
        z = x[max(0, i - window + 1) : i + 1] - mu0
        n = len(z)
        q, m = np.mean(z * z), np.mean(z)
        v = max(q - m * m, 1e-300)
        g = max(0.0, 0.5 * n * (q / s0 - 1 - np.log(v / s0)))
        if g > 15.0:
            return i
    return -1


def test_glr_change_scan_matches_numpy_and_py_func() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal(3000)
    x[1700:] = 0.8 + 1.5 * x[1700:]
    mu0, s0 = float(x[:1000].mean()), float(x[:1000].var())
    ref_alarm = _numpy_glr(x, 1000, 3000, mu0, s0, 40)
    outs = []
    for fn in (k.glr_change_scan, k.glr_change_scan.py_func):
        out = np.zeros(3)
        fn(x, 1000, 3000, mu0, s0, 1.0, 40, 15.0, 2, 0, 200, 40, out)
        outs.append(out)
    assert outs[0][0] == ref_alarm == outs[1][0]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert 1690 <= outs[0][1] <= 1710


@pytest.mark.parametrize("band_order", [1, 3])
@pytest.mark.parametrize("method", ["aglr", "tkeo"])
def test_generic_section_path_matches_reference(
    trial: np.ndarray, band_order: int, method: str
) -> None:
    # band orders other than 2 take the generic loop instead of the register fast path
    params = OnsetParams(method=method, band_order=band_order, **PLAIN)  # type: ignore[arg-type]
    ref = _reference_chain(trial, params, RATE_HZ)
    for py_func in (False, True):
        out = _kernel_run(trial, params, py_func=py_func, block=32)
        np.testing.assert_allclose(out["d"], ref["d"], rtol=1e-9, atol=1e-9)
        assert out["onset"] == ref["onset"]


def test_burst_metrics_match_numpy_and_py_func() -> None:
    rng = np.random.default_rng(8)
    y = rng.standard_normal((3000, 1))
    y[1000:1800] *= 10.0
    onset, end, win = 1000, 2900, 50
    ref_rms = np.array(
        [np.sqrt(np.mean(y[max(onset, i - win + 1) : i + 1, 0] ** 2)) for i in range(onset, end)]
    )
    below = [i for i in range(onset + win, end) if ref_rms[i - onset] < 3.0]
    ref_off = below[0]
    for fn in (k.burst_metrics, k.burst_metrics.py_func):
        off, peak, area, mean_sq = fn(y, 0, onset, end, win, 3.0)
        assert off == ref_off
        assert peak == pytest.approx(ref_rms[: off - onset].max(), rel=1e-12)
        assert area == pytest.approx(ref_rms[: off - onset].sum(), rel=1e-12)
        assert mean_sq == pytest.approx(np.mean(y[onset:off, 0] ** 2), rel=1e-12)
