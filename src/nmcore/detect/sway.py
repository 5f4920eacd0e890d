"""Postural sway measures of a centre-of-pressure (COP) window, after Prieto et al. 1996.

Prieto TE, Myklebust JB, Hoffmann RG, Lovett EG, Myklebust BM (1996). Measures of postural
steadiness: differences between healthy young and elderly adults. IEEE Trans Biomed Eng
43(9):956-966. Names follow the paper (MDIST, RDIST, TOTEX, MVELO, AREA-CC, AREA-CE, AREA-SW,
MFREQ, FD-CE, POWER, F50, F95, CFREQ, FREQD; "-" written "_").

Conventions (those of the reference values in shared/data/forceplate/cop_reference_measures.csv):
AP is the plate's y, ML its x; lengths are reported in cm; the mean is removed over the window;
T = N / rate (N samples, not N - 1 steps); second moments use 1/N unless a name says ddof1.
Spectral measures use a Welch estimate (Hann window, `welch_segment_s` segments with
`welch_overlap`, per-segment linear detrend, one-sided density) summed over `band_hz`.

Excluded frames (COP NaN or valid=False, e.g. subject off the plate) are never filled in:
leading and trailing ones are trimmed, interior ones make a gap. With gaps, time-domain
measures use the valid samples and skip steps across a gap, spectral measures are None, and
preprocessing (which needs a contiguous signal) makes every measure None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.detect import _sway_kernels as k
from nmcore.dsp import butter_sos, sosfiltfilt

__all__ = [
    "MEASURE_UNITS",
    "SPECTRAL_MEASURES",
    "SwayMonitor",
    "SwayParams",
    "SwayResult",
    "SwayUpdate",
    "f_quantile_2_dof",
    "spectral_measures",
    "sway_measures",
    "welch_psd",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CM_PER_M = 100.0
_DETREND = {"none": k.DETREND_NONE, "constant": k.DETREND_CONSTANT, "linear": k.DETREND_LINEAR}
# Prieto's one-sided 95 % normal quantile, as printed in the paper (1.645, not 1.6448536...):
# AREA_CC95 of the reference values uses it.
Z_95_PRIETO = 1.645
# chi-square 0.95 quantile with 2 degrees of freedom, -2 ln(0.05), in closed form.
CHI2_95_2DOF = -2.0 * math.log(0.05)
CONFIDENCE = 0.95

MEASURE_UNITS: dict[str, str] = {
    "MDIST": "cm",
    "MDIST_AP": "cm",
    "MDIST_ML": "cm",
    "RDIST": "cm",
    "RDIST_AP": "cm",
    "RDIST_ML": "cm",
    "SD_AP_ddof1": "cm",
    "SD_ML_ddof1": "cm",
    "RANGE_AP": "cm",
    "RANGE_ML": "cm",
    "TOTEX": "cm",
    "TOTEX_AP": "cm",
    "TOTEX_ML": "cm",
    "MVELO": "cm/s",
    "MVELO_AP": "cm/s",
    "MVELO_ML": "cm/s",
    "AREA_CC95": "cm^2",
    "AREA_CE95_Prieto": "cm^2",
    "AREA_PE95_chi2_SchubertKirchner": "cm^2",
    "AREA_PE95_Fexact": "cm^2",
    "AREA_PE95_Fexact_ddof1": "cm^2",
    "AREA_SW": "cm^2/s",
    "MFREQ": "Hz",
    "MFREQ_AP": "Hz",
    "MFREQ_ML": "Hz",
    "FD_CE": "1",
    "POWER_AP": "cm^2",
    "F50_AP": "Hz",
    "F95_AP": "Hz",
    "CFREQ_AP": "Hz",
    "FREQD_AP": "1",
    "POWER_ML": "cm^2",
    "F50_ML": "Hz",
    "F95_ML": "Hz",
    "CFREQ_ML": "Hz",
    "FREQD_ML": "1",
}
SPECTRAL_MEASURES = tuple(
    f"{m}_{d}" for d in ("AP", "ML") for m in ("POWER", "F50", "F95", "CFREQ", "FREQD")
)


class SwayParams(BaseModel):
    """Preprocessing and spectral settings; echoed in every result.

    lowpass_hz: optional Butterworth low-pass of `lowpass_order`, run forwards and backwards
    (zero phase; the effective order doubles) with scipy's default odd padding.
    resample_hz: optional resampling (linear interpolation onto a uniform grid), after the
    low-pass; it needs lowpass_hz below half of resample_hz so nothing aliases.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowpass_hz: float | None = Field(default=None, gt=0)
    lowpass_order: int = Field(default=4, ge=1, le=8)
    resample_hz: float | None = Field(default=None, gt=0)
    band_hz: tuple[float, float] = (0.15, 5.0)
    welch_segment_s: float = Field(default=10.0, gt=0)
    welch_overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    detrend: Literal["linear", "constant", "none"] = "linear"

    @model_validator(mode="after")
    def _check(self) -> SwayParams:
        lo, hi = self.band_hz
        if not 0 <= lo < hi:
            raise ValueError(
                f"band_hz must be (low, high) with 0 <= low < high (got {self.band_hz})"
            )
        if self.resample_hz is not None and (
            self.lowpass_hz is None or self.lowpass_hz >= self.resample_hz / 2
        ):
            raise ValueError(
                f"resample_hz={self.resample_hz} needs lowpass_hz below {self.resample_hz / 2} "
                f"Hz (got {self.lowpass_hz}) so the resampled COP does not alias"
            )
        return self


@dataclass(frozen=True, slots=True)
class SwayResult:
    """Every measure (None where it cannot be computed, see `status`/`notes`), its unit, the
    parameters, and the sample accounting. `rate_hz` is the analysis rate (after resampling);
    `n_samples` counts the window's input samples, `n_excluded` those not valid."""

    measures: dict[str, float | None]
    units: dict[str, str]
    params: dict[str, Any]
    status: Literal["ok", "gaps", "too_short"]
    n_samples: int
    n_excluded: int
    n_analysed: int
    rate_hz: float
    duration_s: float
    notes: tuple[str, ...] = ()
    algorithm: str = "prieto1996"


def f_quantile_2_dof(p: float, d2: int) -> float:
    """Quantile p of Fisher's F with (2, d2) degrees of freedom, in closed form.

    For d1 = 2 the CDF is 1 - (1 + 2x/d2)^(-d2/2), so x = d2/2 * ((1-p)^(-2/d2) - 1).
    """
    if d2 < 1 or not 0 < p < 1:
        raise ValueError(f"need d2 >= 1 and 0 < p < 1 (got d2={d2}, p={p})")
    return d2 / 2.0 * math.expm1(-2.0 / d2 * math.log1p(-p))


def welch_psd(
    x: FloatArray,
    rate_hz: float,
    segment_n: int,
    overlap_n: int,
    detrend: Literal["linear", "constant", "none"] = "linear",
) -> tuple[FloatArray, FloatArray]:
    """One-sided power spectral density by Welch's method (periodic Hann window, mean of the
    segment periodograms), as scipy.signal.welch(..., scaling="density") computes it."""
    n = x.shape[0]
    if segment_n < 2 or not 0 <= overlap_n < segment_n or n < segment_n:
        raise ValueError(
            f"need 2 <= segment_n <= len(x) and 0 <= overlap_n < segment_n "
            f"(got segment_n={segment_n}, overlap_n={overlap_n}, len(x)={n})"
        )
    step = segment_n - overlap_n
    n_seg = 1 + (n - segment_n) // step
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(segment_n) / segment_n)
    segs = np.empty((n_seg, segment_n))
    k.welch_segments_kernel(
        np.ascontiguousarray(x, dtype=np.float64), step, _DETREND[detrend], window, segs
    )
    spec = np.fft.rfft(segs, axis=1)
    psd = (spec.real**2 + spec.imag**2) / (rate_hz * float(window @ window))
    # one-sided: double everything but DC and (for even lengths) Nyquist
    last = psd.shape[1] - 1 if segment_n % 2 == 0 else psd.shape[1]
    psd[:, 1:last] *= 2.0
    f_hz = np.fft.rfftfreq(segment_n, 1.0 / rate_hz).astype(np.float64)
    return f_hz, np.asarray(psd.mean(axis=0), dtype=np.float64)


def spectral_measures(
    f_hz: FloatArray, psd: FloatArray, band_hz: tuple[float, float]
) -> dict[str, float | None]:
    """Prieto's spectral measures of one direction over band_hz (edges included).

    POWER = sum(G) df; F50/F95: the lowest frequency at which the cumulative power reaches
    50/95 % of POWER; CFREQ = sqrt(mu2/mu0); FREQD = sqrt(1 - mu1^2/(mu0 mu2)), with the
    spectral moments mu_k = sum(f^k G) df.
    """
    df = float(f_hz[1] - f_hz[0])
    tol = 1e-9 * df  # a bin nominally on a band edge is in the band
    sel = (f_hz >= band_hz[0] - tol) & (f_hz <= band_hz[1] + tol)
    fb, g = f_hz[sel], psd[sel]
    m0 = float(g.sum())
    if fb.size == 0 or not m0 > 0:
        return {
            "POWER": 0.0 if fb.size else None,
            "F50": None,
            "F95": None,
            "CFREQ": None,
            "FREQD": None,
        }
    m1 = float((fb * g).sum())
    m2 = float((fb * fb * g).sum())
    cum = np.cumsum(g)
    f50 = float(fb[min(int(np.searchsorted(cum, 0.5 * cum[-1])), fb.size - 1)])
    f95 = float(fb[min(int(np.searchsorted(cum, 0.95 * cum[-1])), fb.size - 1)])
    return {
        "POWER": m0 * df,
        "F50": f50,
        "F95": f95,
        "CFREQ": math.sqrt(m2 / m0),
        "FREQD": math.sqrt(max(0.0, 1.0 - m1 * m1 / (m0 * m2))),
    }


def _ratio(num: float, den: float) -> float | None:
    if den == 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den


def _time_domain(sums: FloatArray, n: int, rate_hz: float) -> dict[str, float | None]:
    """Prieto's time-domain measures from the sums of sway_sums_kernel (cm, n samples)."""
    duration_s = n / rate_hz
    mdist = sums[k.SUM_RD] / n
    mdist_ap = sums[k.SUM_ABS_AP] / n
    mdist_ml = sums[k.SUM_ABS_ML] / n
    var_ap = sums[k.SUM_AP2] / n
    var_ml = sums[k.SUM_ML2] / n
    cov = sums[k.SUM_APML] / n
    rdist = math.sqrt(var_ap + var_ml)
    totex, totex_ap, totex_ml = sums[k.PATH], sums[k.PATH_AP], sums[k.PATH_ML]
    mvelo, mvelo_ap, mvelo_ml = totex / duration_s, totex_ap / duration_s, totex_ml / duration_s
    s_rd = math.sqrt(max(0.0, rdist * rdist - mdist * mdist))
    sqrt_det = math.sqrt(max(0.0, var_ap * var_ml - cov * cov))
    f95 = f_quantile_2_dof(CONFIDENCE, n - 2)
    # Prieto's 95 % confidence ellipse: area 2 pi F sqrt(det S); its axes d1, d2 (full
    # lengths) have sqrt(d1 d2) = 2 sqrt(2 F sqrt(det S)), the d of FD-CE.
    area_ce = 2.0 * math.pi * f95 * sqrt_det
    d_ce = 2.0 * math.sqrt(2.0 * f95 * sqrt_det)
    pe_factor = 2.0 * (n - 1) * (n + 1) / (n * (n - 2)) * f95
    fd_den = math.log(n * d_ce / totex) if d_ce > 0 and totex > 0 else 0.0
    return {
        "MDIST": mdist,
        "MDIST_AP": mdist_ap,
        "MDIST_ML": mdist_ml,
        "RDIST": rdist,
        "RDIST_AP": math.sqrt(var_ap),
        "RDIST_ML": math.sqrt(var_ml),
        "SD_AP_ddof1": math.sqrt(sums[k.SUM_AP2] / (n - 1)),
        "SD_ML_ddof1": math.sqrt(sums[k.SUM_ML2] / (n - 1)),
        "RANGE_AP": sums[k.MAX_AP] - sums[k.MIN_AP],
        "RANGE_ML": sums[k.MAX_ML] - sums[k.MIN_ML],
        "TOTEX": totex,
        "TOTEX_AP": totex_ap,
        "TOTEX_ML": totex_ml,
        "MVELO": mvelo,
        "MVELO_AP": mvelo_ap,
        "MVELO_ML": mvelo_ml,
        "AREA_CC95": math.pi * (mdist + Z_95_PRIETO * s_rd) ** 2,
        "AREA_CE95_Prieto": area_ce,
        # prediction ellipses: chi-square approximation (Schubert & Kirchner 2014) and the
        # exact F form, both with the 1/N covariance the reference uses, and the F form with
        # the unbiased 1/(N-1) covariance (BMClab's hyperellipsoid)
        "AREA_PE95_chi2_SchubertKirchner": math.pi * CHI2_95_2DOF * sqrt_det,
        "AREA_PE95_Fexact": math.pi * pe_factor * sqrt_det,
        "AREA_PE95_Fexact_ddof1": math.pi * pe_factor * sqrt_det * n / (n - 1),
        "AREA_SW": sums[k.SUM_CROSS] / (2.0 * duration_s),
        "MFREQ": _ratio(mvelo, 2.0 * math.pi * mdist),
        "MFREQ_AP": _ratio(mvelo_ap, 4.0 * math.sqrt(2.0) * mdist_ap),
        "MFREQ_ML": _ratio(mvelo_ml, 4.0 * math.sqrt(2.0) * mdist_ml),
        "FD_CE": _ratio(math.log(n), fd_den),
    }


def _lowpass(x: FloatArray, rate_hz: float, params: SwayParams) -> FloatArray:
    assert params.lowpass_hz is not None
    sos = butter_sos(params.lowpass_order, params.lowpass_hz, rate_hz, "lowpass")
    return np.asarray(sosfiltfilt(sos, x), dtype=np.float64)


def _resample(x: FloatArray, rate_hz: float, new_rate_hz: float) -> FloatArray:
    n_new = math.floor((x.shape[0] - 1) * new_rate_hz / rate_hz + 1e-9) + 1
    t_new = np.arange(n_new) / new_rate_hz
    return np.interp(t_new, np.arange(x.shape[0]) / rate_hz, x)


def _empty(
    params: SwayParams,
    status: Literal["gaps", "too_short"],
    n: int,
    n_excl: int,
    rate_hz: float,
    note: str,
) -> SwayResult:
    return SwayResult(
        measures=dict.fromkeys(MEASURE_UNITS),
        units=dict(MEASURE_UNITS),
        params=params.model_dump(),
        status=status,
        n_samples=n,
        n_excluded=n_excl,
        n_analysed=0,
        rate_hz=rate_hz,
        duration_s=0.0,
        notes=(note,),
    )


def sway_measures(
    ap_m: npt.ArrayLike,
    ml_m: npt.ArrayLike,
    rate_hz: float,
    params: SwayParams | None = None,
    valid: npt.ArrayLike | None = None,
) -> SwayResult:
    """Prieto et al. 1996 sway measures of one COP window (AP = plate y, ML = plate x, metres).

    valid: optional mask of usable frames (e.g. CopResult.valid); NaN frames are excluded too.
    """
    params = params or SwayParams()
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
    ap = np.ascontiguousarray(ap_m, dtype=np.float64) * CM_PER_M
    ml = np.ascontiguousarray(ml_m, dtype=np.float64) * CM_PER_M
    if ap.ndim != 1 or ap.shape != ml.shape:
        raise ValueError(f"ap_m and ml_m must be 1-D of one length (got {ap.shape}, {ml.shape})")
    ok = np.isfinite(ap) & np.isfinite(ml)
    if valid is not None:
        v = np.asarray(valid, dtype=np.bool_)
        if v.shape != ap.shape:
            raise ValueError(f"valid must have the length of ap_m (got {v.shape}, {ap.shape})")
        ok &= v
    n_total = ap.shape[0]
    n_excl = n_total - int(ok.sum())
    if n_excl == 0:  # the common case: no index arrays, no copies
        idx = None
        step_ok = np.ones(max(0, n_total - 1), dtype=np.bool_)
        has_gaps = False
    else:
        idx = np.flatnonzero(ok)
        step_ok = np.diff(idx) == 1
        has_gaps = not bool(step_ok.all())
    if n_total - n_excl < 3:
        return _empty(
            params,
            "too_short",
            n_total,
            n_excl,
            rate_hz,
            f"{n_total - n_excl} valid samples: at least 3 are needed",
        )
    preprocess = params.lowpass_hz is not None or params.resample_hz is not None
    if has_gaps and preprocess:
        return _empty(
            params,
            "gaps",
            n_total,
            n_excl,
            rate_hz,
            "excluded frames inside the window: filtering/resampling need a "
            "contiguous COP, so no measure is computed",
        )
    if params.lowpass_hz is not None:
        # sosfiltfilt pads 3 * (2 * n_sections + 1) samples by odd reflection and needs more
        pad_n = 3 * (2 * math.ceil(params.lowpass_order / 2) + 1)
        if n_total <= pad_n:
            return _empty(
                params,
                "too_short",
                n_total,
                n_excl,
                rate_hz,
                f"{n_total - n_excl} samples: the zero-phase low-pass needs more than {pad_n}",
            )
    if idx is not None:
        ap, ml = ap[idx], ml[idx]
    notes: list[str] = []
    rate = float(rate_hz)
    if params.lowpass_hz is not None:
        if params.lowpass_hz >= rate / 2:
            raise ValueError(
                f"lowpass_hz={params.lowpass_hz} must be below Nyquist ({rate / 2} Hz)"
            )
        ap, ml = _lowpass(ap, rate, params), _lowpass(ml, rate, params)
    if params.resample_hz is not None:
        ap = _resample(ap, rate, params.resample_hz)
        ml = _resample(ml, rate, params.resample_hz)
        rate = params.resample_hz
        step_ok = np.ones(max(0, ap.shape[0] - 1), dtype=np.bool_)
    n = ap.shape[0]
    if n < 3:
        return _empty(params, "too_short", n_total, n_excl, rate, f"{n} samples after resampling")
    sums = np.empty(k.N_SWAY_SUMS)
    k.sway_sums_kernel(ap, ml, step_ok, sums)
    measures: dict[str, float | None] = dict(_time_domain(sums, n, rate))
    segment_n = round(params.welch_segment_s * rate)
    overlap_n = round(params.welch_overlap * segment_n)
    spectral_ok = not has_gaps and n >= segment_n
    if has_gaps:
        notes.append(
            f"{n_excl} excluded frames leave gaps: spectral measures need a contiguous COP"
        )
    elif n < segment_n:
        notes.append(f"{n} samples are fewer than one Welch segment ({segment_n})")
    for name, x in (("AP", ap), ("ML", ml)):
        if spectral_ok:
            f_hz, psd = welch_psd(x, rate, segment_n, overlap_n, params.detrend)
            for m, val in spectral_measures(f_hz, psd, params.band_hz).items():
                measures[f"{m}_{name}"] = val
        else:
            for m in ("POWER", "F50", "F95", "CFREQ", "FREQD"):
                measures[f"{m}_{name}"] = None
    return SwayResult(
        # plain floats (not numpy scalars) so publishers serialise them as they are
        measures={
            key: None if (mv := measures[key]) is None else float(mv) for key in MEASURE_UNITS
        },
        units=dict(MEASURE_UNITS),
        params=params.model_dump(),
        status="gaps" if has_gaps else "ok",
        n_samples=n_total,
        n_excluded=n_excl,
        n_analysed=n,
        rate_hz=rate,
        duration_s=n / rate,
        notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class SwayUpdate:
    """Measures over the `window_n` samples ending just before stream sample `end_sample`."""

    end_sample: int
    result: SwayResult


@dataclass(slots=True)
class SwayMonitor:
    """Sway measures over a sliding window: feed COP blocks, get results when they are due.

    The first result comes when the window is first full, then one every `update_every_s`.
    Samples are counted from the first one pushed; map `end_sample` to time with the stream's
    clock model.
    """

    rate_hz: float
    window_s: float = 30.0
    update_every_s: float = 1.0
    params: SwayParams = field(default_factory=SwayParams)
    _window_n: int = field(init=False)
    _update_n: int = field(init=False)
    _ap: FloatArray = field(init=False)
    _ml: FloatArray = field(init=False)
    _ok: BoolArray = field(init=False)
    _n_seen: int = field(init=False, default=0)
    _next_due: int = field(init=False)

    def __post_init__(self) -> None:
        if not (self.rate_hz > 0 and self.window_s > 0 and self.update_every_s > 0):
            raise ValueError(
                "rate_hz, window_s and update_every_s must be > 0 (got "
                f"{self.rate_hz}, {self.window_s}, {self.update_every_s})"
            )
        self._window_n = round(self.window_s * self.rate_hz)
        self._update_n = max(1, round(self.update_every_s * self.rate_hz))
        if self._window_n < 3:
            raise ValueError(f"window_s={self.window_s} holds fewer than 3 samples")
        self._ap = np.empty(0)
        self._ml = np.empty(0)
        self._ok = np.empty(0, dtype=np.bool_)
        self._next_due = self._window_n

    def push(
        self, ap_m: npt.ArrayLike, ml_m: npt.ArrayLike, valid: npt.ArrayLike | None = None
    ) -> list[SwayUpdate]:
        """Append one block (consecutive samples); return the updates that fell due in it."""
        ap = np.asarray(ap_m, dtype=np.float64).ravel()
        ml = np.asarray(ml_m, dtype=np.float64).ravel()
        ok = np.ones(ap.shape, dtype=np.bool_) if valid is None else np.asarray(valid, np.bool_)
        if ml.shape != ap.shape or ok.shape != ap.shape:
            raise ValueError(
                f"ap_m, ml_m and valid need one length (got {ap.shape}, {ml.shape}, {ok.shape})"
            )
        start = self._n_seen - self._ap.shape[0]  # stream index of the history's first sample
        hist_ap = np.concatenate([self._ap, ap])
        hist_ml = np.concatenate([self._ml, ml])
        hist_ok = np.concatenate([self._ok, ok])
        self._n_seen += ap.shape[0]
        out: list[SwayUpdate] = []
        while self._next_due <= self._n_seen:
            hi = self._next_due - start
            lo = hi - self._window_n
            res = sway_measures(
                hist_ap[lo:hi], hist_ml[lo:hi], self.rate_hz, self.params, hist_ok[lo:hi]
            )
            out.append(SwayUpdate(self._next_due, res))
            self._next_due += self._update_n
        keep = min(self._window_n, hist_ap.shape[0])
        self._ap = hist_ap[-keep:].copy()
        self._ml = hist_ml[-keep:].copy()
        self._ok = hist_ok[-keep:].copy()
        return out
