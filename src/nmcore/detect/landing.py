"""Jump-landing measures from ground reaction force at any sampling rate.

From the vertical force (and, with a 6-axis plate, the horizontal forces) of one trial -
quiet stance, jump, landing - this finds body weight, take-off, landing, flight time, jump
height from flight time (h = g t^2 / 8), the peak landing force in body weights, time to
stabilisation (TTS) and the dynamic postural stability index:

- TTS, sequential average (Colby et al. 1999, Am J Sports Med 27:150; Ross & Guskiewicz
  2003): the running mean of the vertical force from landing is compared with the mean
  +- `seqavg_sd_fraction` SD of the analysis window; TTS is the time after which it stays in.
- TTS, band: the first time after landing from which the force stays within
  +- `band_bw_fraction` of body weight for `hold_s`, inside the analysis window.
- DPSI (Wikstrom et al. 2005, J Athl Train 40:305): over `analysis_window_s` after landing,
  MLSI = sqrt(mean(Fx^2))/BW, APSI = sqrt(mean(Fy^2))/BW, VSI = sqrt(mean((BW-Fz)^2))/BW,
  DPSI = sqrt(mean(Fx^2 + Fy^2 + (BW-Fz)^2))/BW (Fx = ML, Fy = AP).

A subject who leaves the plate inside the analysis window gets status "stepped_off" and None
for every measure that needs the window; the measures are never computed over a truncated
window. Times are seconds from the record's first sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "LandingParams",
    "LandingResult",
    "LandingStatus",
    "landing_measures",
    "stability_indices",
    "tts_sequential_average",
    "tts_within_band",
]

FloatArray = npt.NDArray[np.float64]
LandingStatus = Literal[
    "ok",
    "stepped_off",
    "short_record",
    "no_step_on",
    "no_quiet_stance",
    "no_takeoff",
    "no_landing",
]


class LandingParams(BaseModel):
    """How a trial is segmented and measured; echoed in every result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Force above which a foot is on the plate. 20 N: over an unloaded plate's noise, and far
    # below the ~40-100 N the force passes through in the last sample before take-off.
    contact_threshold_n: float = Field(default=20.0, gt=0)
    bw_delay_s: float = Field(default=0.5, ge=0)  # after step-on, before quiet stance settles
    bw_window_s: float = Field(default=1.0, gt=0)
    min_flight_s: float = Field(default=0.05, gt=0)  # shorter unloaded spells are noise
    analysis_window_s: float = Field(default=3.0, gt=0)
    seqavg_sd_fraction: float = Field(default=0.25, gt=0)
    band_bw_fraction: float = Field(default=0.05, gt=0)
    hold_s: float = Field(default=1.0, gt=0)
    gravity_m_s2: float = Field(default=9.81, gt=0)

    @model_validator(mode="after")
    def _check(self) -> LandingParams:
        if self.hold_s > self.analysis_window_s:
            raise ValueError(
                f"hold_s={self.hold_s} must not exceed analysis_window_s="
                f"{self.analysis_window_s}: the band hold has to fit in the window"
            )
        return self


@dataclass(frozen=True, slots=True)
class LandingResult:
    """Measures of one trial; None where the status says a measure cannot be had.

    `post_landing_available_s`: on-plate time from landing to the step-off (or record end).
    Stability indices are in body weights (dimensionless); mlsi/apsi/dpsi need Fx and Fy.
    """

    status: LandingStatus
    rate_hz: float
    params: dict[str, Any]
    step_on_s: float | None = None
    body_weight_n: float | None = None
    takeoff_s: float | None = None
    landing_s: float | None = None
    flight_time_s: float | None = None
    jump_height_m: float | None = None
    peak_landing_force_bw: float | None = None
    step_off_s: float | None = None
    post_landing_available_s: float | None = None
    tts_seqavg_s: float | None = None
    tts_band_s: float | None = None
    vsi: float | None = None
    mlsi: float | None = None
    apsi: float | None = None
    dpsi: float | None = None
    notes: tuple[str, ...] = ()
    algorithm: str = "flight_time+colby1999+wikstrom2005"


def tts_sequential_average(
    fz_n: npt.ArrayLike, rate_hz: float, sd_fraction: float = 0.25
) -> float | None:
    """Time to stabilisation by the sequential average method over the given window.

    s[k] = mean(fz[0..k]); the band is mean(fz) +- sd_fraction * SD(fz) (population SD) over
    the whole window; the result is k/rate_hz for the first k from which s stays inside.
    (s ends at the window mean, so a result near the window's end means "not stable".)
    None for a window shorter than 2 samples or one still outside at its last sample.
    """
    f = np.asarray(fz_n, dtype=np.float64)
    if f.size < 2:
        return None
    running = np.cumsum(f) / np.arange(1, f.size + 1)
    half = sd_fraction * float(f.std())
    outside = np.flatnonzero(np.abs(running - f.mean()) > half)
    k = 0 if outside.size == 0 else int(outside[-1]) + 1
    return None if k >= f.size else k / rate_hz


def tts_within_band(
    fz_n: npt.ArrayLike, rate_hz: float, target_n: float, half_width_n: float, hold_s: float
) -> float | None:
    """First time k/rate_hz from which |fz - target| <= half_width for round(hold_s*rate)
    consecutive samples, all inside the given window; None if that never happens."""
    f = np.asarray(fz_n, dtype=np.float64)
    hold_n = max(1, round(hold_s * rate_hz))
    if f.size < hold_n:
        return None
    inside = (np.abs(f - target_n) <= half_width_n).astype(np.int64)
    run = np.concatenate([[0], np.cumsum(inside)])
    full = np.flatnonzero(run[hold_n:] - run[:-hold_n] == hold_n)
    return None if full.size == 0 else int(full[0]) / rate_hz


def stability_indices(
    fz_n: npt.ArrayLike,
    body_weight_n: float,
    fx_n: npt.ArrayLike | None = None,
    fy_n: npt.ArrayLike | None = None,
) -> dict[str, float | None]:
    """Wikstrom et al. 2005 indices over the given window: VSI always, MLSI/APSI/DPSI only
    with both horizontal forces (Fx = ML, Fy = AP)."""
    fz = np.asarray(fz_n, dtype=np.float64)
    vert = float(np.mean((body_weight_n - fz) ** 2))
    out: dict[str, float | None] = {
        "vsi": math.sqrt(vert) / body_weight_n,
        "mlsi": None,
        "apsi": None,
        "dpsi": None,
    }
    if fx_n is not None and fy_n is not None:
        fx = np.asarray(fx_n, dtype=np.float64)
        fy = np.asarray(fy_n, dtype=np.float64)
        if fx.shape != fz.shape or fy.shape != fz.shape:
            raise ValueError(f"fx_n, fy_n need the length of fz_n ({fz.shape[0]})")
        ml = float(np.mean(fx * fx))
        ap = float(np.mean(fy * fy))
        out["mlsi"] = math.sqrt(ml) / body_weight_n
        out["apsi"] = math.sqrt(ap) / body_weight_n
        out["dpsi"] = math.sqrt(ml + ap + vert) / body_weight_n
    return out


def _first_flight(below: npt.NDArray[np.bool_], start: int, min_n: int) -> tuple[int, int] | None:
    """(first, end) of the first run of `below` at or after start lasting >= min_n samples
    (end = index after the run, len(below) if it runs to the end)."""
    b = below[start:].astype(np.int8)
    edges = np.diff(np.concatenate([[0], b, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    long_runs = np.flatnonzero(ends - starts >= min_n)
    if long_runs.size == 0:
        return None
    r = int(long_runs[0])
    return start + int(starts[r]), start + int(ends[r])


def landing_measures(
    fz_n: npt.ArrayLike,
    rate_hz: float,
    params: LandingParams | None = None,
    fx_n: npt.ArrayLike | None = None,
    fy_n: npt.ArrayLike | None = None,
) -> LandingResult:
    """Segment one jump-landing trial and measure it (see the module docstring).

    fz_n: vertical force, positive under load (N). fx_n/fy_n: optional horizontal forces
    (ML, AP) for MLSI/APSI/DPSI.
    """
    p = params or LandingParams()
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
    fz = np.asarray(fz_n, dtype=np.float64)
    if fz.ndim != 1:
        raise ValueError(f"fz_n must be 1-D (got shape {fz.shape})")
    for name, a in (("fx_n", fx_n), ("fy_n", fy_n)):
        if a is not None and np.shape(a) != fz.shape:
            raise ValueError(f"{name} must have the length of fz_n ({fz.shape[0]})")
    base: dict[str, Any] = {"rate_hz": float(rate_hz), "params": p.model_dump()}
    n = fz.shape[0]
    # NaN (dropped frames) counts as "not in contact": it never becomes a force value
    with np.errstate(invalid="ignore"):
        contact = fz > p.contact_threshold_n
    on = np.flatnonzero(contact)
    if on.size == 0:
        return LandingResult(status="no_step_on", **base, notes=("force never exceeds threshold",))
    i_on = int(on[0])
    res: dict[str, Any] = {"step_on_s": i_on / rate_hz}
    bw_lo = i_on + round(p.bw_delay_s * rate_hz)
    bw_hi = bw_lo + round(p.bw_window_s * rate_hz)
    if bw_hi > n or not contact[bw_lo:bw_hi].all():
        return LandingResult(
            status="no_quiet_stance",
            **base,
            **res,
            notes=(f"no {p.bw_window_s} s of contact {p.bw_delay_s} s after step-on",),
        )
    bw = float(fz[bw_lo:bw_hi].mean())
    res["body_weight_n"] = bw
    flight = _first_flight(~contact, bw_hi, max(1, round(p.min_flight_s * rate_hz)))
    if flight is None:
        return LandingResult(status="no_takeoff", **base, **res)
    i_to, i_ld = flight
    res["takeoff_s"] = i_to / rate_hz
    if i_ld >= n:
        return LandingResult(status="no_landing", **base, **res)
    res["landing_s"] = i_ld / rate_hz
    res["flight_time_s"] = res["landing_s"] - res["takeoff_s"]
    res["jump_height_m"] = p.gravity_m_s2 * res["flight_time_s"] ** 2 / 8.0
    off = np.flatnonzero(~contact[i_ld:])
    i_off = i_ld + int(off[0]) if off.size else n
    if off.size:
        res["step_off_s"] = i_off / rate_hz
    res["post_landing_available_s"] = (i_off - i_ld) / rate_hz
    win_n = round(p.analysis_window_s * rate_hz)
    res["peak_landing_force_bw"] = float(fz[i_ld : min(i_off, i_ld + win_n)].max()) / bw
    if i_off - i_ld < win_n:
        status: LandingStatus = "stepped_off" if off.size else "short_record"
        note = (
            f"only {res['post_landing_available_s']:.3f} s on the plate after landing; "
            f"TTS and stability indices need {p.analysis_window_s} s"
        )
        return LandingResult(status=status, **base, **res, notes=(note,))
    win = slice(i_ld, i_ld + win_n)
    res["tts_seqavg_s"] = tts_sequential_average(fz[win], rate_hz, p.seqavg_sd_fraction)
    res["tts_band_s"] = tts_within_band(fz[win], rate_hz, bw, p.band_bw_fraction * bw, p.hold_s)
    fx_w = None if fx_n is None else np.asarray(fx_n, dtype=np.float64)[win]
    fy_w = None if fy_n is None else np.asarray(fy_n, dtype=np.float64)[win]
    res.update(stability_indices(fz[win], bw, fx_w, fy_w))
    return LandingResult(status="ok", **base, **res)
