"""IMU calibration: gyroscope bias while still, gravity alignment, sample rate vs host clock.

Gyro in deg/s, accelerometer in m/s^2, in the sensor frame. The rotation R maps sensor to
target frame (the platform or body segment): gravity measured while still (the accelerometer
reads +g along "up") is rotated onto `target_up`. Without more information the heading (the
rotation about up) is unknown and R is the minimal rotation. With `axis_motion` (gyro samples
while the technician turns the segment or platform, in the positive sense, about a known
`target_axis`) the principal axis of that motion fixes the heading: TRIAD (Black 1964, AIAA J
2:1350), with gravity as the primary vector because it is measured more precisely.

Rate: the host timestamps of the samples are regressed on the sample index over batch means
(the record cut into 20 consecutive batches; OLS on their mean index and mean time): the slope
is the sample period on the host clock, and its standard error, from the batch scatter, stays
honest when timestamps are stamped per block or jitter with a correlated delay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from nmcore.calibration.model import N_BATCHES, Check, ImuValues, jsonable, mean_cov, mean_sem

__all__ = ["minimal_rotation", "rate_from_timestamps", "still", "triad"]

FloatArray = npt.NDArray[np.float64]

G_STANDARD_MPS2 = 9.80665
# a MEMS gyro's noise is 0.01-0.1 deg/s/sqrt(Hz): well under 1 deg/s at any IMU rate; a hand
# holding the sensor, or a platform being walked on, gives several deg/s
MAX_GYRO_SD_DPS = 1.0
MAX_ACC_SD_MPS2 = 0.2  # MEMS accelerometer noise is a few mg (0.02-0.05 m/s^2)
MAX_ACC_DRIFT_MPS2 = 0.1  # mean change over the record: tilting or sliding
MAX_GYRO_DRIFT_DPS = 0.5


def _unit(v: npt.ArrayLike, name: str) -> FloatArray:
    a = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(a))
    if a.shape != (3,) or not norm > 0:
        raise ValueError(f"{name} must be a non-zero 3-vector (got {v!r})")
    return a / norm


def _skew(v: FloatArray) -> FloatArray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def minimal_rotation(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """The smallest rotation R with R a_hat = b_hat (Rodrigues)."""
    ah, bh = _unit(a, "a"), _unit(b, "b")
    v = np.cross(ah, bh)
    s = float(np.linalg.norm(v))
    c = float(ah @ bh)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # opposite: half a turn about any axis perpendicular to a
        perp = np.cross(ah, np.eye(3)[int(np.argmin(np.abs(ah)))])
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    k = _skew(v)
    return np.eye(3) + k + k @ k * ((1.0 - c) / (s * s))


def triad(s1: npt.ArrayLike, s2: npt.ArrayLike, t1: npt.ArrayLike, t2: npt.ArrayLike) -> FloatArray:
    """R with R s1_hat = t1_hat exactly and R s2 as close to t2 as the angle allows."""

    def frame(p: npt.ArrayLike, q: npt.ArrayLike, name: str) -> FloatArray:
        u1 = _unit(p, name)
        u2 = np.cross(u1, _unit(q, name))
        n = float(np.linalg.norm(u2))
        if n < 1e-6:
            raise ValueError(f"{name}: the two vectors are parallel; TRIAD needs two directions")
        u2 /= n
        return np.stack([u1, u2, np.cross(u1, u2)], axis=1)

    rot: FloatArray = frame(t1, t2, "target") @ frame(s1, s2, "sensor").T
    return rot


def rate_from_timestamps(
    host_t_s: npt.ArrayLike, n_batches: int = N_BATCHES
) -> tuple[float, float, FloatArray]:
    """(period_s, its standard error, residuals of the full OLS line) from per-sample host
    times. Slope and SE by OLS over batch means (see module docstring)."""
    t = np.asarray(host_t_s, dtype=np.float64)
    n = t.shape[0]
    if t.ndim != 1 or n < 2 * n_batches:
        raise ValueError(f"host_t_s must be 1-D with >= {2 * n_batches} samples (got {t.shape})")
    idx = np.arange(n, dtype=np.float64)
    length = n // n_batches
    bi = idx[: length * n_batches].reshape(n_batches, length).mean(axis=1)
    bt = t[: length * n_batches].reshape(n_batches, length).mean(axis=1)
    bic = bi - bi.mean()
    slope = float(bic @ (bt - bt.mean()) / (bic @ bic))
    r = bt - bt.mean() - slope * bic
    se = math.sqrt(float(r @ r) / (n_batches - 2) / float(bic @ bic))
    ic = idx - idx.mean()
    full_slope = float(ic @ (t - t.mean()) / (ic @ ic))
    resid = t - t.mean() - full_slope * ic
    return slope, se, resid


def _triple(v: FloatArray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _trend(x: FloatArray) -> FloatArray:
    n = x.shape[0]
    t = np.arange(n) - (n - 1) / 2.0
    trend: FloatArray = (t @ (x - x.mean(axis=0))) / (t @ t) * (n - 1)
    return trend


def still(
    acc: npt.ArrayLike,
    gyro: npt.ArrayLike,
    host_t_s: npt.ArrayLike,
    rate_hz_nominal: float,
    *,
    target_up: Sequence[float] = (0.0, 0.0, 1.0),
    axis_motion: npt.ArrayLike | None = None,
    target_axis: Sequence[float] = (0.0, 1.0, 0.0),
    acc_channels: Sequence[str] = ("ax", "ay", "az"),
    gyro_channels: Sequence[str] = ("gx", "gy", "gz"),
    g_mps2: float = G_STANDARD_MPS2,
    max_gravity_error_mps2: float = 0.3,
    max_gyro_sd_dps: float = MAX_GYRO_SD_DPS,
    max_acc_sd_mps2: float = MAX_ACC_SD_MPS2,
    max_acc_drift_mps2: float = MAX_ACC_DRIFT_MPS2,
    max_gyro_drift_dps: float = MAX_GYRO_DRIFT_DPS,
    max_rate_error_ppm: float = 20_000.0,
    warn_rate_error_ppm: float = 1_000.0,
    max_timestamp_residual_s: float = 0.1,
    min_rotation_deg: float = 20.0,
    min_axis_angle_deg: float = 30.0,
    min_axis_fraction: float = 0.9,
) -> tuple[ImuValues, dict[str, Any], list[Check]]:
    """Calibrate from a still record (acc, gyro (n, 3); host_t_s (n,) host seconds per sample).

    Checks: still (gyro and acc SD and drift under limits) fails; |g| within
    `max_gravity_error_mps2` of `g_mps2` fails; rate error above `max_rate_error_ppm` fails
    (above `warn_rate_error_ppm` warns); a timestamp residual above `max_timestamp_residual_s`
    warns (a stall or gap). With axis_motion: the rotation must reach `min_rotation_deg`
    net, keep `min_axis_fraction` of its energy on one axis, and that axis must be at least
    `min_axis_angle_deg` from gravity, else it fails.
    """
    a = np.asarray(acc, dtype=np.float64)
    w = np.asarray(gyro, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or w.shape != a.shape:
        raise ValueError(f"acc and gyro must both be (n, 3) (got {a.shape} and {w.shape})")
    n = a.shape[0]
    if n < 2 * N_BATCHES:
        raise ValueError(f"need >= {2 * N_BATCHES} samples while still (got {n}): record longer")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(w))):
        raise ValueError("acc/gyro hold NaN/inf (dropped samples?): record the still part again")
    if rate_hz_nominal <= 0:
        raise ValueError(f"rate_hz_nominal must be > 0 (got {rate_hz_nominal})")
    up = _unit(target_up, "target_up")
    checks: list[Check] = []

    bias, bias_sem = mean_sem(w)
    acc_mean, acc_cov = mean_cov(a)
    acc_sem = np.sqrt(np.diag(acc_cov))
    gyro_sd = w.std(axis=0, ddof=1)
    acc_sd = a.std(axis=0, ddof=1)
    gyro_drift = _trend(w)
    acc_drift = _trend(a)

    problems = [
        f"{gyro_channels[i]} SD {gyro_sd[i]:.3g} dps (limit {max_gyro_sd_dps:g})"
        for i in range(3)
        if gyro_sd[i] > max_gyro_sd_dps
    ]
    problems += [
        f"{gyro_channels[i]} drift {gyro_drift[i]:+.3g} dps (limit {max_gyro_drift_dps:g})"
        for i in range(3)
        if abs(gyro_drift[i]) > max_gyro_drift_dps
    ]
    problems += [
        f"{acc_channels[i]} SD {acc_sd[i]:.3g} m/s^2 (limit {max_acc_sd_mps2:g})"
        for i in range(3)
        if acc_sd[i] > max_acc_sd_mps2
    ]
    problems += [
        f"{acc_channels[i]} drift {acc_drift[i]:+.3g} m/s^2 (limit {max_acc_drift_mps2:g})"
        for i in range(3)
        if abs(acc_drift[i]) > max_acc_drift_mps2
    ]
    checks.append(
        Check(
            name="still",
            passed=not problems,
            message="the IMU was still"
            if not problems
            else f"the IMU moved ({'; '.join(problems)}): put it down (or hold the segment) "
            "without touching it, away from vibration, and record the still part again",
        )
    )

    g_meas = float(np.linalg.norm(acc_mean))
    a_hat = acc_mean / g_meas
    g_sigma = math.sqrt(float(a_hat @ acc_cov @ a_hat))
    g_err = g_meas - g_mps2
    g_ok = abs(g_err) <= max_gravity_error_mps2
    checks.append(
        Check(
            name="gravity",
            passed=g_ok,
            value=g_meas,
            limit=max_gravity_error_mps2,
            unit="m/s^2",
            message=f"|g| = {g_meas:.3f} m/s^2"
            if g_ok
            else f"the accelerometer reads |g| = {g_meas:.3f} m/s^2, {g_err:+.3f} from "
            f"{g_mps2:g} (limit +-{max_gravity_error_mps2:g}): check the unit (m/s^2, not g) "
            "and the range setting, keep the IMU still, or recalibrate the accelerometer",
        )
    )

    # gravity direction uncertainty: the acc mean's scatter across the direction, over |g|
    proj = np.eye(3) - np.outer(a_hat, a_hat)
    cos_tilt = float(np.clip(a_hat @ up, -1.0, 1.0))
    tilt = math.acos(cos_tilt)
    toward = up - cos_tilt * a_hat
    if float(np.linalg.norm(toward)) > 1e-9:
        e = toward / np.linalg.norm(toward)
        tilt_sigma = math.sqrt(float(e @ acc_cov @ e)) / g_meas
    else:
        tilt_sigma = math.sqrt(float(np.trace(proj @ acc_cov @ proj)) / 2.0) / g_meas
    roll = math.atan2(acc_mean[1], acc_mean[2])
    pitch = math.atan2(-acc_mean[0], math.hypot(acc_mean[1], acc_mean[2]))

    heading_sigma: float | None = None
    motion_stats: dict[str, Any] | None = None
    if axis_motion is None:
        rot = minimal_rotation(a_hat, up)
        method: Literal["gravity_minimal", "triad"] = "gravity_minimal"
        t_axis = None
    else:
        t_axis = _unit(target_axis, "target_axis")
        if abs(float(t_axis @ up)) > math.cos(math.radians(min_axis_angle_deg)):
            raise ValueError(
                f"target_axis {tuple(target_axis)} is within {min_axis_angle_deg:g} deg of "
                f"target_up {tuple(target_up)}: pick an axis across gravity"
            )
        m = np.asarray(axis_motion, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != 3 or m.shape[0] < 3:
            raise ValueError(f"axis_motion must be (m, 3) gyro samples (got {m.shape})")
        wm = m - bias
        scatter = wm.T @ wm
        evals, evecs = np.linalg.eigh(scatter)
        v = evecs[:, 2]
        along = wm @ v
        net_deg = float(along.sum()) / rate_hz_nominal
        if net_deg < 0:
            v, along, net_deg = -v, -along, -net_deg
        fraction = float(evals[2] / max(float(evals.sum()), 1e-300))
        axis_angle = math.degrees(math.acos(min(1.0, abs(float(v @ a_hat)))))
        # the principal axis tilts by the perpendicular noise over the motion's energy
        noise_sd = float(np.max(bias_sem)) * math.sqrt(n)
        v_sigma = noise_sd / math.sqrt(max(float(along @ along), 1e-300))
        # only the axis's component across gravity sets the heading
        heading_sigma = math.degrees(v_sigma / max(math.sin(math.radians(axis_angle)), 1e-6))
        motion_ok = (
            net_deg >= min_rotation_deg
            and fraction >= min_axis_fraction
            and axis_angle >= min_axis_angle_deg
        )
        motion_stats = {
            "n_samples": m.shape[0],
            "net_rotation_deg": net_deg,
            "axis_sensor": v,
            "axis_energy_fraction": fraction,
            "axis_angle_to_gravity_deg": axis_angle,
        }
        checks.append(
            Check(
                name="axis_motion",
                passed=motion_ok,
                value=net_deg,
                limit=min_rotation_deg,
                unit="deg",
                message=f"turned {net_deg:.0f} deg about one axis ({100 * fraction:.0f} % of "
                f"the motion), {axis_angle:.0f} deg from gravity"
                if motion_ok
                else f"the axis motion does not fix the heading: turned {net_deg:.0f} deg net "
                f"(need {min_rotation_deg:g}), {100 * fraction:.0f} % about one axis (need "
                f"{100 * min_axis_fraction:.0f}), axis {axis_angle:.0f} deg from gravity (need "
                f"{min_axis_angle_deg:g}): turn the segment or platform smoothly, one way "
                f"(positive, right-hand rule), at least {min_rotation_deg:g} deg about the "
                "axis across gravity, and record it again",
            )
        )
        rot = triad(a_hat, v, up, t_axis)
        method = "triad"

    period, period_se, resid = rate_from_timestamps(host_t_s)
    if resid.shape[0] != n:
        raise ValueError(f"host_t_s needs one time per sample ({n}), got {resid.shape[0]}")
    rate = 1.0 / period
    ppm = (rate / rate_hz_nominal - 1.0) * 1e6
    ppm_sigma = 1e6 * period_se / (period * period * rate_hz_nominal)
    if abs(ppm) > max_rate_error_ppm:
        rate_check = Check(
            name="rate",
            passed=False,
            value=ppm,
            limit=max_rate_error_ppm,
            unit="ppm",
            message=f"the IMU delivers {rate:.3f} Hz against the host clock, {ppm:+.0f} ppm from "
            f"the nominal {rate_hz_nominal:g} Hz (limit {max_rate_error_ppm:g}): the device "
            "runs at another rate than configured, or drops samples; fix the rate setting",
        )
    else:
        rate_check = Check(
            name="rate",
            passed=abs(ppm) <= warn_rate_error_ppm,
            severity="warn",
            value=ppm,
            limit=warn_rate_error_ppm,
            unit="ppm",
            message=f"measured rate {rate:.4f} Hz ({ppm:+.0f} +- {ppm_sigma:.0f} ppm)"
            + (
                ""
                if abs(ppm) <= warn_rate_error_ppm
                else ": a large clock error; the clock model corrects it, but check the device"
            ),
        )
    checks.append(rate_check)
    worst = float(np.max(np.abs(resid)))
    checks.append(
        Check(
            name="timestamps",
            passed=worst <= max_timestamp_residual_s,
            severity="warn",
            value=worst,
            limit=max_timestamp_residual_s,
            unit="s",
            message=f"host timestamps within {1e3 * worst:.1f} ms of a straight line"
            if worst <= max_timestamp_residual_s
            else f"a host timestamp lies {worst:.3f} s off the line (limit "
            f"{max_timestamp_residual_s:g} s): the link stalled or samples were lost; check "
            "the connection and record again",
        )
    )

    values = ImuValues(
        acc_channels=list(acc_channels),
        gyro_channels=list(gyro_channels),
        gyro_bias_dps=bias.tolist(),
        gyro_bias_sigma_dps=bias_sem.tolist(),
        acc_mean_mps2=acc_mean.tolist(),
        acc_mean_sigma_mps2=acc_sem.tolist(),
        gravity_mps2=g_meas,
        gravity_sigma_mps2=g_sigma,
        rotation=rot.tolist(),
        rotation_method=method,
        target_up=_triple(up),
        target_axis=None if t_axis is None else _triple(t_axis),
        tilt_deg=math.degrees(tilt),
        tilt_sigma_deg=math.degrees(tilt_sigma),
        roll_deg=math.degrees(roll),
        pitch_deg=math.degrees(pitch),
        heading_sigma_deg=heading_sigma,
        rate_hz_nominal=rate_hz_nominal,
        rate_hz_measured=rate,
        rate_error_ppm=ppm,
        rate_error_sigma_ppm=ppm_sigma,
    )
    stats = jsonable(
        {
            "n_samples": n,
            "gyro_mean_dps": bias,
            "gyro_sem_dps": bias_sem,
            "gyro_sd_dps": gyro_sd,
            "gyro_drift_dps": gyro_drift,
            "acc_mean_mps2": acc_mean,
            "acc_cov_mps2": acc_cov,
            "acc_sd_mps2": acc_sd,
            "acc_drift_mps2": acc_drift,
            "period_s": period,
            "period_sem_s": period_se,
            "timestamp_resid_max_s": worst,
            "timestamp_resid_sd_s": float(resid.std()),
            "n_batches": N_BATCHES,
            "axis_motion": motion_stats,
            "g_mps2": g_mps2,
        }
    )
    return values, stats, checks
