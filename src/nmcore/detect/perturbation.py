"""Perturbation onset from a trigger line, a platform IMU or a force plate.

- Trigger: the first sample at or above the threshold after one below it (exact to the sample;
  a device that time-stamps the edge itself reports the edge time directly).
- IMU / force plate (any set of channels): the alarm comes from the GLR change detector
  (`nmcore.detect.change`) run on the summed squared z-scores of the channels against their
  rest statistics (chi-square distributed at rest, so the threshold is statistical, not in
  m/s^2 or N). The onset is then refined by looking back from the alarm: the channels are
  projected on the direction of the change and a hinge model (flat baseline, then a
  polynomial rise) is fitted
  by least squares (a ramp-led cubic, with or without a step at the knee, chosen by BIC);
  its knee is the last baseline sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from nmcore.detect import _perturbation_kernels as _pk
from nmcore.detect._perturbation_kernels import knee_fit
from nmcore.detect.change import ChangeParams, detect_change
from nmcore.detect.emg import params_hash
from nmcore.dsp import butter_sos, sosfilt

__all__ = [
    "ALGORITHM_VERSION",
    "MotionOnset",
    "MotionOnsetParams",
    "motion_onset",
    "rising_edges",
    "rising_edges_in",
]

ALGORITHM_VERSION = "1"
FloatArray = npt.NDArray[np.float64]
# The knee model: a ramp-led cubic (smooth acceleration profiles, e.g. minimum jerk, start
# linearly), with or without a step (an abrupt start); chosen by BIC.
_SMOOTH = np.array([1, 2, 3], dtype=np.int64)
_ABRUPT = np.array([0, 1, 2, 3], dtype=np.int64)


class MotionOnsetParams(BaseModel):
    """Onset of a change in a multi-channel motion or force signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rest_window_ms: float = Field(300.0, gt=0, description="rest statistics before the search")
    search_window_ms: float = Field(500.0, gt=0, description="how far after the reference")
    glr_window_ms: float = Field(10.0, gt=0)
    h: float = Field(20.0, gt=0, description="alarm threshold (log-likelihood ratio)")
    lookback_ms: float = Field(150.0, gt=0, description="how far before the alarm the knee may lie")
    post_alarm_ms: float = Field(60.0, ge=0, description="data after the alarm used by the fit")
    alarm_highpass_hz: float | None = Field(
        None, gt=0, description="high-pass the alarm statistic only (slow sway is not a change)"
    )
    baseline: Literal["flat", "linear"] = Field(
        "flat", description="linear: the baseline may drift (body sway under a force plate)"
    )


@dataclass(frozen=True, slots=True)
class MotionOnset:
    detected: bool
    onset_index: int | None
    alarm_index: int | None
    shape: str | None  # "smooth" (starts as a ramp) | "abrupt" (starts with a step)
    algorithm: str
    algorithm_version: str
    params_hash: str


def rising_edges(x: FloatArray, threshold: float, previous: float) -> npt.NDArray[np.int64]:
    """Indices i where x[i] >= threshold and the sample before (x[i-1], or `previous` for
    i == 0) was below it. NaN (a gap) is never an edge and never arms one. `x`: 1-D, or 2-D
    with the trigger in column 0 (see `rising_edges_in`)."""
    arr = np.asarray(x, dtype=np.float64)
    return rising_edges_in(arr.reshape(arr.shape[0], -1), 0, threshold, previous)


def rising_edges_in(
    x: FloatArray, column: int, threshold: float, previous: float
) -> npt.NDArray[np.int64]:
    """`rising_edges` of x[:, column] (x 2-D float64), without copying the column out."""
    out = np.empty(x.shape[0], dtype=np.int64)
    n = _pk.rising_edges_column(x, column, float(threshold), float(previous), out)
    return out[:n]


def motion_onset(
    x: FloatArray, rate_hz: float, ref_index: int, params: MotionOnsetParams | None = None
) -> MotionOnset:
    """Onset of the first change after `ref_index` in x (n_samples, n_channels); the rest
    statistics come from the `rest_window_ms` before `ref_index`."""
    p = params or MotionOnsetParams()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    algorithm = "motion_glr_hinge"
    phash = params_hash(p)
    none = MotionOnset(False, None, None, None, algorithm, ALGORITHM_VERSION, phash)
    rest = max(4, round(p.rest_window_ms * 1e-3 * rate_hz))
    if ref_index - rest < 0 or ref_index >= arr.shape[0]:
        raise ValueError(
            f"ref_index {ref_index} needs rest_window_ms ({rest} samples) of data before it "
            f"and must lie inside the signal (length {arr.shape[0]})"
        )
    rest_x = arr[ref_index - rest : ref_index]
    tiny = np.finfo(np.float64).tiny
    mu = rest_x.mean(axis=0)
    z = (arr - mu) / np.maximum(rest_x.std(axis=0), tiny)
    za = z
    if p.alarm_highpass_hz is not None:
        # causal, so the alarm still comes from past samples only
        sos = butter_sos(2, p.alarm_highpass_hz, rate_hz, "highpass")
        hp, _ = sosfilt(sos, np.ascontiguousarray(arr - mu))
        hp_rest = hp[ref_index - rest : ref_index]
        za = (hp - hp_rest.mean(axis=0)) / np.maximum(hp_rest.std(axis=0), tiny)
    chi2 = np.sum(za * za, axis=1)
    if not np.all(np.isfinite(chi2[ref_index - rest :])):
        return none  # a gap in the window: no number rather than a wrong one
    cp = detect_change(
        chi2,
        rate_hz,
        ref_index,
        ChangeParams(
            kind="mean",
            direction="up",
            rest_window_ms=p.rest_window_ms,
            search_window_ms=p.search_window_ms,
            window_ms=p.glr_window_ms,
            h=p.h,
            lookback_ms=p.lookback_ms,
            refine_ms=p.post_alarm_ms,
        ),
    )
    if cp.alarm_index is None:
        return none
    alarm = cp.alarm_index
    post = round(p.post_alarm_ms * 1e-3 * rate_hz)
    lookback = max(2, round(p.lookback_ms * 1e-3 * rate_hz))
    lo = max(ref_index - rest // 2, alarm - lookback)
    hi = min(arr.shape[0], alarm + post + 1)
    seg = z[lo:hi]
    direction = seg[max(0, alarm - lo) :].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:
        return none
    y = np.ascontiguousarray(seg @ (direction / norm))
    # the knee may follow the alarm when baseline drift raised the alarm early; leave the
    # fit half the post-alarm data to see the rise
    last = max(2, min(y.shape[0] - max(2, post // 2), y.shape[0] - 2))
    trend = p.baseline == "linear"
    out = np.zeros(2)
    n = y.shape[0]
    fits = []
    for powers, name in ((_SMOOTH, "smooth"), (_ABRUPT, "abrupt")):
        knee_fit(y, 1, last, powers, trend, out)
        if out[0] >= 0:
            n_par = powers.shape[0] + 2 + int(trend)
            bic = n * np.log(max(out[1], 1e-300) / n) + n_par * np.log(n)
            fits.append((bic, int(out[0]), name))
    if not fits:
        return none
    best = min(fits)
    onset = lo + best[1]
    return MotionOnset(True, onset, alarm, best[2], algorithm, ALGORITHM_VERSION, phash)


def _warm() -> None:
    out = np.zeros(2)
    knee_fit(np.arange(16.0), 1, 12, _ABRUPT, False, out)
    knee_fit(np.arange(16.0), 1, 12, _ABRUPT, True, out)
