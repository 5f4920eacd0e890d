"""The generic change detector (perturbation onset on IMU, force onset for motor time)."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from nmcore.detect.change import ChangeParams, detect_change


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Correlated noise (moving average of white noise), unit variance."""
    x = np.convolve(rng.standard_normal(n + width), np.ones(width) / np.sqrt(width), "valid")
    return x[:n]


@pytest.mark.parametrize("rate_hz", [100.0, 1000.0])
def test_force_onset_mean_step_found(rate_hz: float) -> None:
    rng = np.random.default_rng(1)
    ref = round(1.0 * rate_hz)
    width = max(1, round(0.01 * rate_hz))  # 10 ms correlation at any rate
    for _ in range(20):
        x = 700.0 + 2.0 * _smooth_noise(rng, round(3.0 * rate_hz), width)  # N, quiet standing
        onset = ref + round(rng.uniform(0.1, 1.0) * rate_hz)
        x[onset:] += 12.0  # a 6 SD push
        r = detect_change(x, rate_hz, ref, ChangeParams(kind="mean", direction="up"))
        assert r.detected
        assert abs(r.onset_index - onset) <= max(2, round(0.01 * rate_hz))  # type: ignore[operator]
        assert r.alarm_index >= r.onset_index  # type: ignore[operator]


def test_imu_variance_burst_found_and_offset_scale_do_not_matter() -> None:
    rng = np.random.default_rng(2)
    rate_hz = 1000.0
    for _ in range(10):
        x = _smooth_noise(rng, 3000, 5)
        onset = 1300 + int(rng.integers(0, 800))
        x[onset:] *= 4.0
        r = detect_change(x, rate_hz, 1000, ChangeParams(kind="variance"))
        assert abs(r.onset_index - onset) <= 10  # type: ignore[operator]
        r2 = detect_change(9.81 + 1e-3 * x, rate_hz, 1000, ChangeParams(kind="variance"))
        assert (r2.onset_index, r2.alarm_index) == (r.onset_index, r.alarm_index)
        r3 = detect_change(4096.0 * x - 77.0, rate_hz, 1000)  # kind="both"
        assert abs(r3.onset_index - onset) <= 10  # type: ignore[operator]


def test_no_false_alarm_on_noise_and_direction_respected() -> None:
    rng = np.random.default_rng(3)
    for width in (1, 5, 20):
        for _ in range(30):
            x = _smooth_noise(rng, 3000, width)
            assert not detect_change(x, 1000.0, 1000).detected
    x = _smooth_noise(rng, 3000, 5)
    x[1500:] -= 6.0
    assert not detect_change(x, 1000.0, 1000, ChangeParams(kind="mean", direction="up")).detected
    r = detect_change(x, 1000.0, 1000, ChangeParams(kind="mean", direction="down"))
    assert abs(r.onset_index - 1500) <= 5  # type: ignore[operator]
    assert r.tau_samples > 1.0  # correlation was noticed
    assert r.algorithm == "change.glr_mean"
    assert len(r.params_hash) == 12


def test_change_parameter_errors() -> None:
    with pytest.raises(pydantic.ValidationError, match="window_ms"):
        ChangeParams(window_ms=0)
    with pytest.raises(pydantic.ValidationError, match="thresh"):
        ChangeParams(thresh=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="rest_window_ms"):
        detect_change(np.zeros(1000), 1000.0, 100)
    with pytest.raises(ValueError, match="1-D"):
        detect_change(np.zeros((1000, 2)), 1000.0, 600)
    # a flat rest (a clipped sensor) still works: any change is a change
    x = np.zeros(2000)
    x[1500:] = 1.0
    assert detect_change(x, 1000.0, 1000).onset_index == 1500
