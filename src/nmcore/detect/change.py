"""A generic statistical change detector for one 1-D signal (IMU acceleration magnitude,
angular velocity, force): perturbation onset, force onset (motor time).

Model: Gaussian samples with the rest mean mu0 and variance s0^2 (estimated from a rest window
before the reference index); after the change, an unknown mean and/or variance. The test is a
windowed generalized likelihood ratio (Willsky & Jones 1976; Basseville & Nikiforov 1993,
"Detection of Abrupt Changes", ch. 2): over the last `window_ms`,

    mean:      g = n/2 * (m - mu0)^2 / s0^2
    variance:  g = n/2 * (r - 1 - ln r),          r = mean((x - mu0)^2) / s0^2
    both:      g = n/2 * ((v + (m - mu0)^2) / s0^2 - 1 - ln(v / s0^2))   (v: window variance)

scaled by 1 / tau, tau = the rest window's integrated autocorrelation time in samples (slow
signals such as force are strongly correlated; tau counts the independent samples, which keeps
`h` meaningful at any rate). An alarm is raised causally when g > h; the change time is then the
maximum-likelihood split over the look-back (the same g with the window running from the
candidate to `refine_ms` after the alarm). Thresholds are log-likelihood ratios, so the result
does not depend on the signal's unit or offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from nmcore.detect._emg_kernels import glr_change_scan
from nmcore.detect.emg import params_hash

__all__ = ["ChangeParams", "ChangePoint", "detect_change"]

ALGORITHM_VERSION = "1.0.0"
FloatArray = npt.NDArray[np.float64]
Kind = Literal["mean", "variance", "both"]
_KIND_CODES = {"mean": 0, "variance": 1, "both": 2}
_DIRECTION_CODES = {"up": 1, "down": -1, "any": 0}
_MAX_TAU_LAG = 1000  # autocorrelation is summed over at most this many lags


class ChangeParams(BaseModel):
    """Parameters of `detect_change`. Durations in ms, the threshold in log-likelihood units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind = "both"
    direction: Literal["up", "down", "any"] = Field(
        "any", description="mean changes: only increases, only decreases, or either"
    )
    rest_window_ms: float = Field(500.0, gt=0)
    search_window_ms: float = Field(1000.0, gt=0, description="changes searched after the ref")
    window_ms: float = Field(20.0, gt=0, description="GLR window")
    h: float = Field(15.0, gt=0, description="alarm threshold (log-likelihood ratio)")
    lookback_ms: float = Field(300.0, gt=0)
    refine_ms: float = Field(30.0, ge=0)
    tau_samples: float | None = Field(
        None, gt=0, description="independent-sample spacing; None: estimated from rest"
    )


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """Result of `detect_change`: indices are into the signal passed."""

    onset_index: int | None
    alarm_index: int | None
    detected: bool
    peak_statistic: float
    tau_samples: float
    algorithm: str
    algorithm_version: str
    params_hash: str


def _integrated_autocorrelation(x: FloatArray) -> float:
    """1 + 2 sum of the autocorrelation up to its first non-positive lag (Sokal's estimator
    with the simplest window), >= 1."""
    z = x - x.mean()
    var = float(np.dot(z, z))
    if var <= 0.0:
        return 1.0
    n = len(z)
    max_lag = min(_MAX_TAU_LAG, n // 4)
    nfft = 1 << (2 * n - 1).bit_length()
    spec = np.fft.rfft(z, nfft)
    acf = np.fft.irfft(spec * np.conj(spec), nfft)[: max_lag + 1] / var
    tau = 1.0
    for lag in range(1, max_lag + 1):
        if acf[lag] <= 0.0:
            break
        tau += 2.0 * float(acf[lag])
    return tau


def detect_change(
    x: FloatArray, rate_hz: float, ref_index: int, params: ChangeParams | None = None
) -> ChangePoint:
    """Find the first change after `ref_index` in the 1-D signal x (rest: the window before it)."""
    p = params or ChangeParams()
    sig = np.ascontiguousarray(x, dtype=np.float64)
    if sig.ndim != 1:
        raise ValueError(f"x must be 1-D (got shape {sig.shape})")
    rest = max(2, round(p.rest_window_ms * 1e-3 * rate_hz))
    if ref_index - rest < 0 or ref_index >= len(sig):
        raise ValueError(
            f"ref_index {ref_index} needs rest_window_ms ({p.rest_window_ms} ms = {rest} "
            f"samples) of data before it and must lie inside the signal (length {len(sig)})"
        )
    rest_x = sig[ref_index - rest : ref_index]
    mu0 = float(rest_x.mean())
    s0 = float(rest_x.var())
    s0 = max(s0, np.finfo(np.float64).tiny)
    tau = p.tau_samples if p.tau_samples is not None else _integrated_autocorrelation(rest_x)
    end = min(len(sig), ref_index + round(p.search_window_ms * 1e-3 * rate_hz))
    window = max(2, round(p.window_ms * 1e-3 * rate_hz))
    out = np.zeros(3)
    glr_change_scan(
        sig,
        ref_index,
        end,
        mu0,
        s0,
        1.0 / tau,
        window,
        p.h,
        _KIND_CODES[p.kind],
        _DIRECTION_CODES[p.direction],
        max(1, round(p.lookback_ms * 1e-3 * rate_hz)),
        round(p.refine_ms * 1e-3 * rate_hz),
        out,
    )
    alarm, onset, peak = int(out[0]), int(out[1]), float(out[2])
    return ChangePoint(
        onset_index=onset if onset >= 0 else None,
        alarm_index=alarm if alarm >= 0 else None,
        detected=onset >= 0,
        peak_statistic=peak,
        tau_samples=float(tau),
        algorithm=f"change.glr_{p.kind}",
        algorithm_version=ALGORITHM_VERSION,
        params_hash=params_hash(p),
    )
