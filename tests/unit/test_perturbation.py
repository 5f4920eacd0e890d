"""Perturbation onset: trigger edges exact to the sample; IMU/force onsets by knee fit."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.detect.perturbation import MotionOnsetParams, motion_onset, rising_edges

RATE_HZ = 1000.0


def _profile(kind: str, u_s: np.ndarray, dur_s: float = 0.3) -> np.ndarray:
    x = np.clip(u_s / dur_s, 0, 1)
    inside = (u_s > 0) & (u_s < dur_s)
    if kind == "min_jerk":  # acceleration of a minimum-jerk move: starts as a ramp
        return np.where(inside, 60 * x - 180 * x**2 + 120 * x**3, 0.0) / 5.77
    return inside.astype(float)  # a step in acceleration


@pytest.mark.parametrize("kind", ["min_jerk", "step"])
def test_motion_onset_within_a_millisecond(kind: str) -> None:
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(20):
        n = 2000
        t = np.arange(n) / RATE_HZ
        onset_s = 1.0 + rng.integers(0, 50) / RATE_HZ + rng.uniform(0, 1) / RATE_HZ
        x = rng.normal(0, 0.05, (n, 3))  # accelerometer noise, m/s^2
        x[:, 0] += 2.0 * _profile(kind, t - onset_s)
        res = motion_onset(x, RATE_HZ, 700, MotionOnsetParams(search_window_ms=800))
        assert res.detected
        assert res.onset_index is not None
        assert res.alarm_index is not None
        assert res.alarm_index >= res.onset_index
        errors.append(res.onset_index / RATE_HZ - onset_s)
    assert np.mean(np.abs(errors)) * 1e3 < 1.0


def test_motion_onset_is_unit_free_and_quiet_on_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.05, (2000, 3))
    t = np.arange(2000) / RATE_HZ
    x[:, 1] += 2.0 * _profile("min_jerk", t - 1.2)
    a = motion_onset(x, RATE_HZ, 700)
    b = motion_onset(x * 1e-3 + 7.0, RATE_HZ, 700)  # other units, other offset
    assert a.onset_index == b.onset_index
    assert not motion_onset(rng.normal(0, 0.05, (2000, 3)), RATE_HZ, 700).detected


def test_a_gap_gives_no_number() -> None:
    x = np.random.default_rng(0).normal(0, 1, (1500, 2))
    x[900:910] = np.nan
    assert not motion_onset(x, RATE_HZ, 700).detected


def test_rising_edges_exact_and_across_blocks() -> None:
    x = np.array([0, 0, 1, 1, 0, 1, np.nan, 1, 0], dtype=float)
    np.testing.assert_array_equal(rising_edges(x, 0.5, previous=0.0), [2, 5])
    # an edge on the first sample of a block needs the previous block's last value
    np.testing.assert_array_equal(rising_edges(np.array([1.0, 1.0]), 0.5, previous=0.0), [0])
    assert rising_edges(np.array([1.0, 1.0]), 0.5, previous=1.0).size == 0


def test_rising_edges_kernel_matches_numpy_and_py_func() -> None:
    """The trigger scan's kernel against a plain numpy reference and its `.py_func`, on a
    2-D block read in place (column 1), with NaN gaps that must never make or arm an edge."""
    from nmcore.detect import _perturbation_kernels as pk
    from nmcore.detect.perturbation import rising_edges_in

    rng = np.random.default_rng(5)
    x = np.zeros((400, 3))
    x[:, 1] = (rng.random(400) > 0.7).astype(float)
    x[50:53, 1] = np.nan
    x[200, 1] = np.nan
    for previous in (0.0, 1.0, np.nan):
        col = x[:, 1]
        prev = np.concatenate([[previous], col[:-1]])
        ref = np.flatnonzero((col >= 0.5) & (prev < 0.5))
        np.testing.assert_array_equal(rising_edges_in(x, 1, 0.5, previous), ref)
        np.testing.assert_array_equal(rising_edges(col.copy(), 0.5, previous), ref)
        out = np.empty(400, dtype=np.int64)
        n = pk.rising_edges_column.py_func(x, 1, 0.5, previous, out)
        np.testing.assert_array_equal(out[:n], ref)
    assert rising_edges_in(x[:0], 1, 0.5, 0.0).size == 0
