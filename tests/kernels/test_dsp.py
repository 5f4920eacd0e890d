from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from nmcore.dsp import SosFilter, butter_sos, sosfilt, sosfilt_zi, sosfiltfilt
from nmcore.dsp._kernels import sosfilt_block

CASES = [
    (4, 10.0, 100.0, "lowpass"),
    (2, 20.0, 2000.0, "highpass"),
    (3, 50.0, 1000.0, "lowpass"),
    (4, (20.0, 450.0), 2000.0, "bandpass"),
    (2, (20.0, 450.0), 4000.0, "bandpass"),
    (1, 5.0, 1000.0, "highpass"),
    (5, 450.0, 2000.0, "lowpass"),
]


def _numpy_sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Plain numpy/python reference: direct form I per section."""
    y = x.astype(float).copy()
    for b0, b1, b2, _a0, a1, a2 in sos:
        out = np.zeros_like(y)
        for n in range(len(y)):
            acc = b0 * y[n]
            if n >= 1:
                acc += b1 * y[n - 1] - a1 * out[n - 1]
            if n >= 2:
                acc += b2 * y[n - 2] - a2 * out[n - 2]
            out[n] = acc
        y = out
    return y


@pytest.mark.parametrize(("order", "cut", "fs", "btype"), CASES)
def test_butter_matches_scipy_response(order, cut, fs, btype) -> None:
    sos = butter_sos(order, cut, fs, btype)
    ref = signal.butter(order, cut, btype=btype, fs=fs, output="sos")
    _, h = signal.sosfreqz(sos, worN=2048, fs=fs)
    _, h_ref = signal.sosfreqz(ref, worN=2048, fs=fs)
    np.testing.assert_allclose(np.abs(h), np.abs(h_ref), atol=1e-9)
    x = np.random.default_rng(1).standard_normal(3000)
    np.testing.assert_allclose(sosfilt(sos, x)[0], signal.sosfilt(ref, x), atol=1e-9)


def test_kernel_against_numpy_reference_and_py_func() -> None:
    sos = butter_sos(2, (20.0, 450.0), 2000.0, "bandpass")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400, 3))
    ref = np.column_stack([_numpy_sosfilt(sos, x[:, c]) for c in range(3)])
    for fn in (sosfilt_block, sosfilt_block.py_func):
        state = np.zeros((3, sos.shape[0], 2))
        out = np.empty_like(x)
        fn(sos, x, state, out)
        np.testing.assert_allclose(out, ref, atol=1e-10)


def test_state_carries_across_blocks() -> None:
    sos = butter_sos(4, (20.0, 450.0), 2000.0, "bandpass")
    x = np.random.default_rng(3).standard_normal((1000, 4))
    whole, _ = sosfilt(sos, x)
    filt = SosFilter(sos, 4)
    parts = [filt.process(np.ascontiguousarray(x[i : i + 37])) for i in range(0, 1000, 37)]
    np.testing.assert_allclose(np.vstack(parts), whole, atol=1e-12)


def test_zi_and_filtfilt_match_scipy() -> None:
    sos = butter_sos(4, 10.0, 100.0, "lowpass")
    ref = signal.butter(4, 10.0, fs=100.0, output="sos")
    np.testing.assert_allclose(
        sosfilt_zi(sos).sum(axis=1).sum(), signal.sosfilt_zi(ref).sum(axis=1).sum(), rtol=1e-9
    )
    x = np.cumsum(np.random.default_rng(5).standard_normal(3000))
    np.testing.assert_allclose(sosfiltfilt(sos, x), signal.sosfiltfilt(ref, x), atol=1e-8)
    b, a = signal.butter(4, 10.0, fs=100.0)
    np.testing.assert_allclose(sosfiltfilt(sos, x), signal.filtfilt(b, a, x), atol=1e-7)


def test_bad_design_arguments_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        butter_sos(4, 1500.0, 2000.0, "lowpass")
    with pytest.raises(ValueError, match="bandpass needs"):
        butter_sos(4, 20.0, 2000.0, "bandpass")
