"""IMU calibration on synthetic records with a KNOWN gyro bias, mounting rotation and clock
error: the estimates fall within their stated uncertainty over many seeds, and the checks
reject a moving IMU, a wrong accelerometer unit, a wrong rate and a useless axis motion."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.signal import lfilter

from nmcore.calibration.imu import minimal_rotation, rate_from_timestamps, still, triad
from nmcore.calibration.model import Calibration, ImuValues

G = 9.80665
RATE_HZ = 200.0
UP = np.array([0.0, 0.0, 1.0])
AXIS = np.array([0.0, 1.0, 0.0])


def random_rotation(rng: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def ar(rng: np.random.Generator, n: int, sd: float, phi: float = 0.5) -> np.ndarray:
    white = rng.standard_normal((n + 50, 3))
    return lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], white, axis=0)[50:] * sd


def record(
    rng: np.random.Generator,
    r_true: np.ndarray,
    bias: np.ndarray,
    ppm: float = 0.0,
    n: int = 2000,
    block: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    acc = r_true.T @ (G * UP) + ar(rng, n, 0.03)
    gyro = bias + ar(rng, n, 0.08)
    i = np.arange(n)
    t = 100.0 + i / (RATE_HZ * (1 + ppm * 1e-6))
    if block > 1:
        # stamped per block at its arrival, the block's samples spread back at the nominal period
        arrival = t[block - 1 :: block] + rng.exponential(2e-3, n // block)
        t = np.repeat(arrival, block) - (block - 1 - i % block) / RATE_HZ
    else:
        t = t + rng.normal(0, 0.5e-3, n)
    return acc, gyro, t


def turn(
    rng: np.random.Generator, r_true: np.ndarray, bias: np.ndarray, axis: np.ndarray
) -> np.ndarray:
    """Gyro while turning +90 deg about `axis` (target frame) in 1 s, smoothly."""
    m = int(RATE_HZ)
    s = np.arange(m) / m
    rate_dps = 180.0 * np.sin(np.pi * s) ** 2  # integrates to 90 deg over 1 s
    w_target = rate_dps[:, None] * axis
    return w_target @ r_true + bias + ar(rng, m, 0.08)


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed and c.severity == "fail"]


def angle_deg(r: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1) / 2))))


def test_recovers_bias_rotation_and_rate_within_stated_sigma() -> None:
    zs, tilt_r, heading_z = [], [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        r_true = random_rotation(rng, 60.0)
        bias = rng.uniform(-2, 2, 3)
        ppm = rng.uniform(-300, 300)
        acc, gyro, t = record(rng, r_true, bias, ppm, block=1 if seed % 2 else 8)
        motion = turn(rng, r_true, bias, AXIS)
        values, _, checks = still(acc, gyro, t, RATE_HZ, axis_motion=motion, target_axis=AXIS)
        assert failed(checks) == [], (seed, failed(checks))
        assert values.rotation_method == "triad"
        zb = (np.array(values.gyro_bias_dps) - bias) / np.array(values.gyro_bias_sigma_dps)
        zr = (values.rate_error_ppm - ppm) / values.rate_error_sigma_ppm
        zg = (values.gravity_mps2 - G) / values.gravity_sigma_mps2
        zs.append([*zb, zr, zg])
        r_est = np.array(values.rotation)
        # gravity direction error (2-D: within 3 sigma 98.9 % of the time) and heading error
        g_est = r_est.T @ UP
        g_true = r_true.T @ UP
        g_err = math.degrees(math.acos(min(1.0, float(g_est @ g_true))))
        tilt_r.append(g_err / values.tilt_sigma_deg)
        e = r_est @ r_true.T
        heading_err = math.degrees(math.atan2(e[1, 0] - e[0, 1], e[0, 0] + e[1, 1]))
        assert values.heading_sigma_deg is not None
        heading_z.append(heading_err / values.heading_sigma_deg)
        assert angle_deg(e) < 1.0
    z = np.array(zs)
    assert np.all((np.abs(z) <= 3).mean(axis=0) >= 0.97), (np.abs(z) <= 3).mean(axis=0)
    assert np.all((z * z).mean(axis=0) > 0.6), (z * z).mean(axis=0)
    assert np.all((z * z).mean(axis=0) < 1.8), (z * z).mean(axis=0)
    # gravity direction error is 2-D (Rayleigh: within 3 sigma 98.9 %, mean r^2 = 2)
    tr = np.array(tilt_r)
    assert (tr <= 3).mean() >= 0.97
    assert 0.6 < (tr * tr).mean() / 2 < 1.8
    hz = np.array(heading_z)
    assert (np.abs(hz) <= 3).mean() >= 0.97
    assert 0.6 < (hz * hz).mean() < 1.8


def test_without_axis_motion_the_rotation_is_the_minimal_one() -> None:
    rng = np.random.default_rng(1)
    r_true = random_rotation(rng, 40.0)
    acc, gyro, t = record(rng, r_true, np.zeros(3))
    values, _, checks = still(acc, gyro, t, RATE_HZ)
    assert failed(checks) == []
    assert values.rotation_method == "gravity_minimal"
    assert values.heading_sigma_deg is None
    r = np.array(values.rotation)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    a_hat = np.array(values.acc_mean_mps2) / values.gravity_mps2
    np.testing.assert_allclose(r @ a_hat, UP, atol=1e-12)
    # minimal: it turns about an axis perpendicular to up (no heading change)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    assert abs(axis @ UP) < 1e-12
    # tilt agrees with the true rotation's tilt of gravity
    true_tilt = math.degrees(math.acos((r_true.T @ UP) @ UP))
    assert abs(values.tilt_deg - true_tilt) <= 3 * values.tilt_sigma_deg


def test_rotation_helpers() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.standard_normal(3)
        b = rng.standard_normal(3)
        r = minimal_rotation(a, b)
        np.testing.assert_allclose(r @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-12)
    r = minimal_rotation([0, 0, 1], [0, 0, -1])  # opposite vectors
    np.testing.assert_allclose(r @ [0, 0, 1], [0, 0, -1], atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    r_true = random_rotation(rng)
    s1, s2 = r_true.T @ UP, r_true.T @ AXIS
    np.testing.assert_allclose(triad(s1, s2, UP, AXIS), r_true, atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        triad(UP, 2 * UP, UP, AXIS)


def test_moving_imu_fails_the_still_check() -> None:
    rng = np.random.default_rng(3)
    acc, gyro, t = record(rng, np.eye(3), np.zeros(3))
    s = np.arange(acc.shape[0]) / RATE_HZ
    wobble = 15.0 * np.sin(2 * np.pi * 0.7 * s)  # deg/s about x: held in a hand
    gyro[:, 0] += wobble
    tilt = np.radians(np.cumsum(wobble) / RATE_HZ)
    acc[:, 1] = G * np.sin(tilt) + acc[:, 1] - acc[:, 1].mean()
    acc[:, 2] = G * np.cos(tilt) + acc[:, 2] - acc[:, 2].mean()
    _, _, checks = still(acc, gyro, t, RATE_HZ)
    assert failed(checks) == ["still"]
    msg = next(c.message for c in checks if c.name == "still")
    assert "gx SD" in msg
    assert "record the still part again" in msg


def test_wrong_accelerometer_unit_fails_gravity() -> None:
    rng = np.random.default_rng(4)
    acc, gyro, t = record(rng, np.eye(3), np.zeros(3))
    _, _, checks = still(acc / G, gyro, t, RATE_HZ)  # in g, not m/s^2
    assert "gravity" in failed(checks)
    assert "m/s^2, not g" in next(c.message for c in checks if c.name == "gravity")


def test_rate_check_fails_a_wrong_nominal_rate_and_warns_a_poor_clock() -> None:
    rng = np.random.default_rng(5)
    acc, gyro, t = record(rng, np.eye(3), np.zeros(3), ppm=50_000)  # 210 Hz device
    values, _, checks = still(acc, gyro, t, RATE_HZ)
    assert "rate" in failed(checks)
    assert values.rate_hz_measured == pytest.approx(210.0, rel=1e-4)
    acc, gyro, t = record(rng, np.eye(3), np.zeros(3), ppm=3000)
    _, _, checks = still(acc, gyro, t, RATE_HZ)
    assert failed(checks) == []
    rate = next(c for c in checks if c.name == "rate")
    assert not rate.passed
    assert rate.severity == "warn"


def test_timestamp_stall_warns() -> None:
    rng = np.random.default_rng(6)
    acc, gyro, t = record(rng, np.eye(3), np.zeros(3))
    t[1000:1040] = t[1040]  # a 0.2 s stall: 40 samples stamped at once
    _, _, checks = still(acc, gyro, t, RATE_HZ)
    stamp = next(c for c in checks if c.name == "timestamps")
    assert not stamp.passed
    assert stamp.severity == "warn"


def test_bad_axis_motion_fails() -> None:
    rng = np.random.default_rng(7)
    r_true = random_rotation(rng, 30.0)
    acc, gyro, t = record(rng, r_true, np.zeros(3))
    about_up = turn(rng, r_true, np.zeros(3), UP)  # turned about gravity: no heading info
    _, _, checks = still(acc, gyro, t, RATE_HZ, axis_motion=about_up)
    assert "axis_motion" in failed(checks)
    small = turn(rng, r_true, np.zeros(3), AXIS) * 0.1  # only 9 deg
    _, _, checks = still(acc, gyro, t, RATE_HZ, axis_motion=small)
    assert "axis_motion" in failed(checks)
    with pytest.raises(ValueError, match="across gravity"):
        still(acc, gyro, t, RATE_HZ, axis_motion=small, target_axis=(0, 0.1, 1))


def test_rate_from_timestamps_exact_line() -> None:
    t = 5.0 + np.arange(1000) / 250.0
    period, se, resid = rate_from_timestamps(t)
    assert period == pytest.approx(1 / 250.0, rel=1e-12)
    assert se < 1e-12
    assert np.abs(resid).max() < 1e-9


def test_correction_applies_bias_and_rotation() -> None:
    rng = np.random.default_rng(8)
    r_true = random_rotation(rng, 60.0)
    bias = np.array([0.5, -1.0, 0.25])
    acc, gyro, t = record(rng, r_true, bias)
    values, stats, checks = still(
        acc, gyro, t, RATE_HZ, axis_motion=turn(rng, r_true, bias, AXIS), target_axis=AXIS
    )
    cal = Calibration.create(
        values,
        device_id="imu1",
        stream_id="imu1.imu",
        channels=["ax", "ay", "az", "gx", "gy", "gz"],
        now_utc=datetime(2026, 11, 21, tzinfo=UTC),
        stats=stats,
        checks=checks,
    )
    corr = cal.correction()
    assert corr is not None
    w_target = np.array([0.0, 30.0, 0.0])
    a_target = G * UP
    raw = np.concatenate([r_true.T @ a_target, r_true.T @ w_target + bias])
    out = corr.apply(raw[None, :])[0]
    np.testing.assert_allclose(out[:3], a_target, atol=0.05)
    np.testing.assert_allclose(out[3:], w_target, atol=0.05)
    assert ImuValues.model_validate_json(values.model_dump_json()) == values
