"""EMG calibration from a rest recording (and optionally a maximal contraction, MVC).

Per channel: the baseline noise level, mains interference at 50/60 Hz and its harmonics, dead
and saturated (clipped) channels, the SNR against the MVC, and the rest statistics the onset
detectors compute from a pre-stimulus window (`OnsetRestStats`), for trials without one.

Mains: least-squares sinusoids. The fundamental f is refined near the nominal 50 or 60 Hz
(grids decide which one when not given) by maximising the summed periodogram of all
harmonics over all channels (the grid's frequency is common to every channel); then DC, a
linear trend and cos/sin at h f for h = 1..n_harmonics (below Nyquist) are fitted jointly by
least squares. Amplitudes are peak amplitudes, sqrt(a_h^2 + b_h^2), with the white-noise
standard error sigma_resid sqrt(2 / n). The noise level is the rms of what the fit leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from nmcore.calibration.model import (
    Check,
    EmgChannelValues,
    EmgValues,
    OnsetRestStats,
    jsonable,
    mean_sem,
)
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams, rest_params_hash

__all__ = ["fit_mains", "rest", "saturation_fraction"]

FloatArray = npt.NDArray[np.float64]

MAINS_SEARCH_HZ = 0.3  # grids hold 50/60 Hz within +-0.2 Hz in normal operation
# 0.5 uV rms: below any real surface-EMG amplifier's input noise (1-5 uV in band): a channel
# that quiet is not connected to anything that makes noise
DEAD_RMS_UV = 0.5
MIN_SATURATION_RUN = 5  # identical extreme samples in a row: noise never repeats its maximum
SETTLE_S = 0.25  # detector chain start-up transient left out of the rest statistics
MVC_WINDOW_S = 0.25
MVC_ACTIVE_FRACTION = 0.5  # windows whose rms is >= this x the largest window rms are "active"


def _regressors(n: int, rate_hz: float, f_hz: float, n_harmonics: int) -> FloatArray:
    t = np.arange(n) / rate_hz
    tc = t - t.mean()
    cols = [np.ones(n), tc / max(float(np.abs(tc).max()), 1e-12)]
    for h in range(1, n_harmonics + 1):
        if h * f_hz >= 0.5 * rate_hz:
            break
        w = 2.0 * math.pi * h * f_hz * t
        cols.extend((np.cos(w), np.sin(w)))
    return np.stack(cols, axis=1)


def _harmonic_power(x: FloatArray, rate_hz: float, f_hz: float, n_harmonics: int) -> float:
    """Sum over harmonics below Nyquist and channels of |sum_t x e^{-i 2 pi h f t}|^2."""
    n = x.shape[0]
    e1 = np.exp(-2j * math.pi * f_hz / rate_hz * np.arange(n))
    e = e1
    total = 0.0
    for h in range(1, n_harmonics + 1):
        if h * f_hz >= 0.5 * rate_hz:
            break
        if h > 1:
            e = e * e1  # powers of the fundamental: cheaper than another exp
        total += float(np.sum(np.abs(e @ x) ** 2))
    return total


def _refine(
    x: FloatArray, rate_hz: float, nominal_hz: float, n_harmonics: int, search_hz: float
) -> tuple[float, float]:
    """The f near `nominal_hz` maximising the harmonics' periodogram; and that power."""
    if search_hz <= 0:
        return nominal_hz, _harmonic_power(x, rate_hz, nominal_hz, n_harmonics)
    duration_s = x.shape[0] / rate_hz
    # the fundamental's peak is ~1/T wide: a coarse grid on it alone, 4 points per width;
    # then parabolic steps on every harmonic, shrinking 4x, until the frequency error is far
    # below 1/(T n_harmonics) (a leftover phase drift would inflate the noise level)
    step = 0.25 / duration_s
    best_f, best_p = nominal_hz, -1.0
    for f in np.arange(nominal_hz - search_hz, nominal_hz + search_hz + step / 2, step):
        p = _harmonic_power(x, rate_hz, float(f), 1)
        if p > best_p:
            best_f, best_p = float(f), p
    best_p = _harmonic_power(x, rate_hz, best_f, n_harmonics)
    step /= n_harmonics
    shrinks = 0
    for _ in range(24):  # at most a few moves uphill, then 5 shrinks
        lo = _harmonic_power(x, rate_hz, best_f - step, n_harmonics)
        hi = _harmonic_power(x, rate_hz, best_f + step, n_harmonics)
        if max(lo, hi) > best_p:  # not bracketed yet: walk uphill
            best_f, best_p = (best_f - step, lo) if lo > hi else (best_f + step, hi)
            continue
        curv = lo - 2.0 * best_p + hi
        if curv < 0:
            f_new = best_f + 0.5 * (lo - hi) / curv * step  # parabola vertex, within step/2
            p_new = _harmonic_power(x, rate_hz, f_new, n_harmonics)
            if p_new > best_p:
                best_f, best_p = f_new, p_new
        step /= 4.0
        shrinks += 1
        if shrinks == 5:
            break
    return best_f, best_p


def fit_mains(
    x_uv: npt.ArrayLike,
    rate_hz: float,
    *,
    mains_hz: float | None = None,
    n_harmonics: int = 5,
    search_hz: float = MAINS_SEARCH_HZ,
) -> tuple[float, Literal[50, 60], FloatArray, FloatArray]:
    """Mains fit of x (n, c): (fitted fundamental Hz, nominal 50/60, amplitudes (c, n_harm)
    peak uV (0 above Nyquist), residual (n, c) after DC, trend and every harmonic)."""
    x = np.asarray(x_uv, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    xc = x - x.mean(axis=0)
    if mains_hz is None:
        candidates = [_refine(xc, rate_hz, nom, n_harmonics, search_hz) for nom in (50.0, 60.0)]
        pick = int(np.argmax([p for _, p in candidates]))
        f_hz = candidates[pick][0]
        nominal: Literal[50, 60] = 50 if pick == 0 else 60
    else:
        f_hz, _ = _refine(xc, rate_hz, float(mains_hz), n_harmonics, search_hz)
        nominal = 50 if abs(mains_hz - 50.0) <= abs(mains_hz - 60.0) else 60
    r = _regressors(x.shape[0], rate_hz, f_hz, n_harmonics)
    # normal equations: the columns are O(1) and nearly orthogonal, and lstsq's SVD costs
    # ~50x more on long records
    beta = np.linalg.solve(r.T @ r, r.T @ x)
    resid = x - r @ beta
    amps = np.zeros((x.shape[1], n_harmonics))
    n_fit = (r.shape[1] - 2) // 2
    for h in range(n_fit):
        amps[:, h] = np.hypot(beta[2 + 2 * h], beta[3 + 2 * h])
    return f_hz, nominal, amps, resid


def saturation_fraction(
    x: npt.ArrayLike, full_scale: float | None = None, min_run: int = MIN_SATURATION_RUN
) -> FloatArray:
    """Per channel of x (n, c): the fraction of samples that are clipped: at +-full_scale (when
    given), or at the channel's max or min when that value occurs in a run of >= min_run
    samples, or in at least max(min_run, n / 1000) samples in all.
    A constant channel is dead, not clipped: it counts only when it sits at full scale."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n, c = a.shape
    out = np.zeros(c)
    for j in range(c):
        col = a[:, j]
        clipped = np.zeros(n, dtype=bool)
        if full_scale is not None:
            clipped |= np.abs(col) >= full_scale * (1.0 - 1e-9)
        lo, hi = float(col.min()), float(col.max())
        if hi > lo:
            for extreme in (lo, hi):
                at = col == extreme
                # a continuous signal reaches its extreme once; clipping holds it there, in
                # runs, or scattered over many samples (noise around the rail)
                if int(at.sum()) >= max(min_run, 1e-3 * n):
                    clipped |= at
                else:
                    clipped |= _in_runs(at, min_run)
        out[j] = clipped.mean()
    return out


def _in_runs(mask: npt.NDArray[np.bool_], min_run: int) -> npt.NDArray[np.bool_]:
    """True where mask is inside a run of at least min_run consecutive True."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    out = np.zeros(mask.shape[0], dtype=bool)
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= min_run:
            out[start:stop] = True
    return out


def _mvc_rms(x: FloatArray, rate_hz: float) -> FloatArray:
    """rms of the active part of an MVC record per channel: the 250 ms windows whose rms is at
    least half the largest window's."""
    xc = x - x.mean(axis=0)
    w = max(1, round(MVC_WINDOW_S * rate_hz))
    n_win = xc.shape[0] // w
    if n_win < 1:
        raise ValueError(
            f"the MVC recording is shorter than one {MVC_WINDOW_S} s window: record longer"
        )
    ms = (xc[: n_win * w] ** 2).reshape(n_win, w, -1).mean(axis=1)
    peak = ms.max(axis=0)
    active = ms >= (MVC_ACTIVE_FRACTION**2) * peak
    rms: FloatArray = np.sqrt((ms * active).sum(axis=0) / np.maximum(active.sum(axis=0), 1))
    return rms


def _onset_rest_stats(
    x: FloatArray, rate_hz: float, params: OnsetParams, settle_n: int
) -> list[OnsetRestStats]:
    n, c = x.shape
    det = EmgOnsetDetector(rate_hz, c, params, history_s=(n + 1) / rate_hz + 1.0)
    det.process(x)
    # the detector's own ring: hist_d is its test-domain value, hist_y the band-passed signal
    d = det.hist_d[settle_n:n]
    y = det.hist_y[settle_n:n]
    mu = d.mean(axis=0)
    sd = d.std(axis=0)
    sig2 = (y * y).mean(axis=0)
    h = rest_params_hash(params)
    return [
        OnsetRestStats(
            method=params.method,
            params_hash=h,
            rate_hz=rate_hz,
            mu=float(mu[j]),
            sd=float(sd[j]),
            sig2=float(sig2[j]),
            n_samples=n - settle_n,
        )
        for j in range(c)
    ]


def rest(
    data_uv: npt.ArrayLike,
    rate_hz: float,
    channels: Sequence[str],
    *,
    mains_hz: float | None = None,
    n_harmonics: int = 5,
    full_scale_uv: float | None = None,
    mvc_uv: npt.ArrayLike | None = None,
    min_snr_db: float = 20.0,
    onset_params: OnsetParams | None = None,
    dead_rms_uv: float = DEAD_RMS_UV,
    max_saturated_fraction: float = 0.0,
    min_saturation_run: int = MIN_SATURATION_RUN,
    max_mains_uv: float = 5.0,
    max_rest_rms_uv: float = 20.0,
    mains_search_hz: float = MAINS_SEARCH_HZ,
) -> tuple[EmgValues, dict[str, Any], list[Check]]:
    """Rest calibration of an EMG stream. data_uv (n, c) in µV, the muscle relaxed.

    Checks (per channel): dead (rest rms < `dead_rms_uv` or constant) fails; saturated (a
    clipped fraction > `max_saturated_fraction`, rest or MVC) fails; SNR below `min_snr_db`
    fails (only with an MVC); mains fundamental above `max_mains_uv` and rest rms above
    `max_rest_rms_uv` warn. `onset_params`: the detector whose rest statistics to provide
    (default `OnsetParams()`).
    """
    x = np.asarray(data_uv, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(channels):
        raise ValueError(
            f"data_uv must be (n_samples, {len(channels)}) for channels {list(channels)} "
            f"(got shape {x.shape})"
        )
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
    if not 1 <= n_harmonics <= 20:
        raise ValueError(f"n_harmonics must be 1..20 (got {n_harmonics})")
    if not np.all(np.isfinite(x)):
        raise ValueError("data_uv holds NaN/inf samples (dropped frames?): record the rest again")
    n, c = x.shape
    params = onset_params or OnsetParams()
    settle_n = round(SETTLE_S * rate_hz)
    min_n = settle_n + round(params.rest_window_ms * 1e-3 * rate_hz)
    if n < max(min_n, round(1.0 * rate_hz)):
        raise ValueError(
            f"the rest recording has {n / rate_hz:.2f} s; record at least "
            f"{max(min_n / rate_hz, 1.0):.2f} s (5-10 s gives stable statistics)"
        )
    f_hz, nominal, amps, resid = fit_mains(
        x, rate_hz, mains_hz=mains_hz, n_harmonics=n_harmonics, search_hz=mains_search_hz
    )
    n_params = 2 + 2 * n_harmonics
    ms, ms_sem = mean_sem(resid * resid)
    ms = ms * n / max(n - n_params, 1)
    rms = np.sqrt(ms)
    rms_sigma = ms_sem / np.maximum(2.0 * rms, 1e-300)
    amp_sigma = rms * math.sqrt(2.0 / n)
    constant = np.ptp(x, axis=0) == 0
    dead = (rms < dead_rms_uv) | constant
    sat = saturation_fraction(x, full_scale_uv, min_saturation_run)
    mvc_rms: FloatArray | None = None
    mvc_sat: FloatArray | None = None
    snr: FloatArray | None = None
    if mvc_uv is not None:
        m = np.asarray(mvc_uv, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != c:
            raise ValueError(f"mvc_uv must be (n_samples, {c}) (got shape {m.shape})")
        mvc_rms = _mvc_rms(m, rate_hz)
        mvc_sat = saturation_fraction(m, full_scale_uv, min_saturation_run)
        with np.errstate(divide="ignore"):
            snr = 20.0 * np.log10(mvc_rms / np.maximum(rms, 1e-300))
    onset_rest = _onset_rest_stats(x, rate_hz, params, settle_n)

    checks: list[Check] = []
    values: list[EmgChannelValues] = []
    for j, name in enumerate(channels):
        saturated = bool(sat[j] > max_saturated_fraction) or bool(
            mvc_sat is not None and mvc_sat[j] > max_saturated_fraction
        )
        values.append(
            EmgChannelValues(
                name=name,
                rest_rms_uv=float(rms[j]),
                rest_rms_sigma_uv=float(rms_sigma[j]),
                mains_amplitude_uv=amps[j].tolist(),
                mains_amplitude_sigma_uv=float(amp_sigma[j]),
                snr_db=None if snr is None else float(snr[j]),
                mvc_rms_uv=None if mvc_rms is None else float(mvc_rms[j]),
                dead=bool(dead[j]),
                saturated=saturated,
                saturated_fraction=float(sat[j]),
                mvc_saturated_fraction=None if mvc_sat is None else float(mvc_sat[j]),
                onset_rest=onset_rest[j],
            )
        )
        checks.append(_dead_check(name, float(rms[j]), bool(constant[j]), dead_rms_uv))
        checks.append(
            _saturation_check(name, "rest", float(sat[j]), max_saturated_fraction, x[:, j])
        )
        if mvc_sat is not None and mvc_uv is not None:
            m_col = np.asarray(mvc_uv, dtype=np.float64)[:, j]
            checks.append(
                _saturation_check(name, "MVC", float(mvc_sat[j]), max_saturated_fraction, m_col)
            )
        if snr is not None:
            ok = bool(snr[j] >= min_snr_db)
            checks.append(
                Check(
                    name=f"snr:{name}",
                    passed=ok,
                    value=float(snr[j]) if math.isfinite(snr[j]) else None,
                    limit=min_snr_db,
                    unit="dB",
                    message=f"{name}: SNR {snr[j]:.1f} dB"
                    if ok
                    else f"{name}: SNR {snr[j]:.1f} dB against the MVC (minimum {min_snr_db:g} "
                    "dB): the contraction was weak or the rest noisy; check the electrode "
                    "placement over the muscle belly and the skin preparation, and ask for a "
                    "maximal contraction",
                )
            )
        fundamental = float(amps[j, 0])
        ok = fundamental <= max_mains_uv
        checks.append(
            Check(
                name=f"mains:{name}",
                passed=ok,
                severity="warn",
                value=fundamental,
                limit=max_mains_uv,
                unit="uV",
                message=f"{name}: mains {f_hz:.2f} Hz at {fundamental:.2f} uV"
                if ok
                else f"{name}: mains interference {fundamental:.1f} uV at {f_hz:.2f} Hz (limit "
                f"{max_mains_uv:g} uV): prepare the skin again, check the reference/ground "
                "electrode and keep leads away from power cables",
            )
        )
        ok = rms[j] <= max_rest_rms_uv
        checks.append(
            Check(
                name=f"rest_noise:{name}",
                passed=bool(ok),
                severity="warn",
                value=float(rms[j]),
                limit=max_rest_rms_uv,
                unit="uV",
                message=f"{name}: rest noise {rms[j]:.2f} uV rms"
                if ok
                else f"{name}: rest noise {rms[j]:.1f} uV rms (limit {max_rest_rms_uv:g} uV): "
                "the muscle was not relaxed or the contact is poor; relax, re-prepare the "
                "skin and record the rest again",
            )
        )
    vals = EmgValues(
        mains_hz=f_hz,
        mains_nominal_hz=nominal,
        mains_source="auto" if mains_hz is None else "given",
        n_harmonics=n_harmonics,
        channels=values,
    )
    stats = jsonable(
        {
            "n_samples": n,
            "rate_hz": rate_hz,
            "duration_s": n / rate_hz,
            "mean_uv": x.mean(axis=0),
            "sd_uv": x.std(axis=0, ddof=1),
            "residual_ms_uv2": ms,
            "residual_ms_sem_uv2": ms_sem,
            "min_uv": x.min(axis=0),
            "max_uv": x.max(axis=0),
            "full_scale_uv": full_scale_uv,
            "mvc_n_samples": None if mvc_uv is None else int(np.shape(mvc_uv)[0]),
            "onset_params": params.model_dump(mode="json"),
            "settle_s": SETTLE_S,
        }
    )
    return vals, stats, checks


def _dead_check(name: str, rms: float, constant: bool, limit: float) -> Check:
    if constant or rms < limit:
        what = "is constant" if constant else f"rest rms {rms:.3f} uV (minimum {limit:g} uV)"
        return Check(
            name=f"dead:{name}",
            passed=False,
            value=rms,
            limit=limit,
            unit="uV",
            message=f"{name} {what}: no signal reaches the channel; check the electrode, the "
            "lead and that the amplifier channel is switched on",
        )
    return Check(
        name=f"dead:{name}",
        passed=True,
        value=rms,
        limit=limit,
        unit="uV",
        message=f"{name}: live ({rms:.2f} uV rms at rest)",
    )


def _saturation_check(
    name: str, record: str, fraction: float, limit: float, col: FloatArray
) -> Check:
    ok = fraction <= limit
    return Check(
        name=f"saturated:{name}:{record}",
        passed=ok,
        value=fraction,
        limit=limit,
        unit="",
        message=f"{name}: no clipping in the {record} recording"
        if ok
        else f"{name}: {100 * fraction:.2f} % of the {record} recording is clipped (at "
        f"{col.min():.1f} / {col.max():.1f} uV): lower the amplifier gain, and check the "
        "electrode contact (a lifted electrode drives the input to the rail)",
    )
