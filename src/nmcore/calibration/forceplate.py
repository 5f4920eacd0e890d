"""Force plate calibration: zero offsets, gains from known masses, a COP position check.

Raw data are the device's units (a plate amplifier's N and N·m, or volts, or load-cell
counts); the calibration maps them to physical units: corrected = gain * (raw - offset).

Procedure (each step a few seconds of data, the plate left alone while recording):
1. `zero`: the plate unloaded and still: offsets, and checks that it is still and unloaded.
2. `mass_step` once per known mass at a known position (x, y on the surface, plate frame).
3. `fit`: gains by least squares through the origin, residuals, the missing-mass check and,
   optionally, the COP check from one more step with a mass at a known location.

Six-axis plates (Fx Fy Fz Mx My Mz, z down into the plate, moments about the plate origin):
a dead weight m at (x, y) on the surface loads Fz = m g, Mx = y m g, My = -x m g (the surface
height dz only enters through shear forces, which a dead weight does not make). So Fz is
calibrated from every mass, Mx and My only from off-centre masses, and Fx, Fy, Mz cannot be
calibrated with dead weights at all: their gain stays 1.0 and `stats["notes"]` says so.

Load-cell plates: each cell i reads r_ij for loading j; gains solve sum_i g_i r_ij = m_j g by
least squares (needs at least as many loadings at distinct positions as cells).

Uncertainty: the step means' standard errors come from batch means (`mean_cov`), and are
propagated through the least-squares solution as errors in the variables (the zero offsets
shared by every step included), plus the masses' and positions' tolerances. When there are
more steps than gains, the covariance is scaled up by the Birge ratio chi2/dof if the
residuals scatter more than that noise explains (a non-linear plate, an inexact mass).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from nmcore.calibration.model import (
    Check,
    CopCheck,
    ForcePlateValues,
    MassResidual,
    Strict,
    jsonable,
    mean_cov,
)

__all__ = [
    "DEFAULT_MAX_SD",
    "G_STANDARD_MPS2",
    "SIX_AXIS_CHANNELS",
    "StepStats",
    "fit",
    "mass_step",
    "zero",
]

FloatArray = npt.NDArray[np.float64]
Layout = Literal["six_axis", "load_cells"]

G_STANDARD_MPS2 = 9.80665  # standard gravity; pass the local g for better than 0.3 %
SIX_AXIS_CHANNELS = ("Fx", "Fy", "Fz", "Mx", "My", "Mz")
# SD limits of a quiet plate, raw units taken as N / N·m: lab plates show 0.1-1 N of
# amplifier noise on Fz and a few tenths on the others; a hand resting on the plate or a
# footstep nearby gives tens of N. "*" is the limit of any channel not named (load cells,
# whose cheap amplifiers are noisier).
DEFAULT_MAX_SD: dict[str, float] = {
    "Fx": 2.0,
    "Fy": 2.0,
    "Fz": 4.0,
    "Mx": 1.0,
    "My": 1.0,
    "Mz": 0.5,
    "*": 3.0,
}
# a still plate drifts far less than its noise over a few seconds; a loaded plate settling,
# or someone stepping on or off, moves the mean by many SDs
DRIFT_PER_SD = 2.0
# Gaussian noise stays within +-6 SD (12 SD peak to peak) for ~1e9 samples; a knock does not
PTP_PER_SD = 12.0


class StepStats(Strict):
    """The statistics of one recorded step (zero, mass or COP check), in raw units."""

    label: str
    channels: list[str]
    rate_hz: float
    n: int
    duration_s: float
    means: list[float]
    sems: list[float] = Field(description="standard errors of the means (batch means)")
    cov: list[list[float]] = Field(description="covariance of the means (batch means)")
    sds: list[float]
    drifts: list[float] = Field(description="linear trend over the step (raw units)")
    ptps: list[float] = Field(description="peak to peak")
    still: bool
    still_problems: list[str] = Field(default_factory=list)
    mass_kg: float | None = None
    x_m: float | None = None
    y_m: float | None = None

    def mean_array(self) -> FloatArray:
        return np.asarray(self.means, dtype=np.float64)

    def cov_array(self) -> FloatArray:
        return np.asarray(self.cov, dtype=np.float64)


def _layout(channels: Sequence[str]) -> Layout:
    return "six_axis" if sorted(channels) == sorted(SIX_AXIS_CHANNELS) else "load_cells"


def _unit(channel: str, layout: Layout) -> str:
    if layout == "six_axis":
        return "N·m" if channel.startswith("M") else "N"
    return "N"


def _limits(
    channels: Sequence[str],
    max_sd: Mapping[str, float] | None,
    max_drift: Mapping[str, float] | None,
    max_ptp: Mapping[str, float] | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    sd_map = {**DEFAULT_MAX_SD, **(max_sd or {})}
    sd = np.array([sd_map.get(c, sd_map["*"]) for c in channels])
    drift_map = max_drift or {}
    ptp_map = max_ptp or {}
    drift = np.array(
        [drift_map.get(c, DRIFT_PER_SD * s) for c, s in zip(channels, sd, strict=True)]
    )
    ptp = np.array([ptp_map.get(c, PTP_PER_SD * s) for c, s in zip(channels, sd, strict=True)])
    return sd, drift, ptp


def _step(
    label: str,
    data: npt.ArrayLike,
    channels: Sequence[str],
    rate_hz: float,
    max_sd: Mapping[str, float] | None,
    max_drift: Mapping[str, float] | None,
    max_ptp: Mapping[str, float] | None,
    mass_kg: float | None = None,
    x_m: float | None = None,
    y_m: float | None = None,
) -> StepStats:
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(channels):
        raise ValueError(
            f"{label}: data must be (n_samples, {len(channels)}) for channels {list(channels)} "
            f"(got shape {x.shape})"
        )
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
    n = x.shape[0]
    if n < 10:
        raise ValueError(f"{label}: need at least 10 samples (got {n}): record longer")
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(
            f"{label}: {bad} samples are NaN/inf (dropped frames?): record the step again"
        )
    layout = _layout(channels)
    mean, cov = mean_cov(x)
    sds = x.std(axis=0, ddof=1)
    t = np.arange(n) - (n - 1) / 2.0
    slope = (t @ (x - mean)) / (t @ t)  # least-squares trend per sample
    drifts = slope * (n - 1)
    ptps = np.ptp(x, axis=0)
    lim_sd, lim_drift, lim_ptp = _limits(channels, max_sd, max_drift, max_ptp)
    problems: list[str] = []
    for i, c in enumerate(channels):
        u = _unit(c, layout)
        if sds[i] > lim_sd[i]:
            problems.append(f"{c} SD {sds[i]:.3g} {u} (limit {lim_sd[i]:.3g})")
        if abs(drifts[i]) > lim_drift[i]:
            problems.append(f"{c} drift {drifts[i]:+.3g} {u} (limit {lim_drift[i]:.3g})")
        if ptps[i] > lim_ptp[i]:
            problems.append(f"{c} peak-to-peak {ptps[i]:.3g} {u} (limit {lim_ptp[i]:.3g})")
    return StepStats(
        label=label,
        channels=list(channels),
        rate_hz=float(rate_hz),
        n=n,
        duration_s=n / rate_hz,
        means=mean.tolist(),
        sems=np.sqrt(np.diag(cov)).tolist(),
        cov=cov.tolist(),
        sds=sds.tolist(),
        drifts=drifts.tolist(),
        ptps=ptps.tolist(),
        still=not problems,
        still_problems=problems,
        mass_kg=mass_kg,
        x_m=x_m,
        y_m=y_m,
    )


def _still_check(step: StepStats) -> Check:
    if step.still:
        return Check(
            name=f"still:{step.label}",
            passed=True,
            message=f"{step.label}: the plate was still",
        )
    return Check(
        name=f"still:{step.label}",
        passed=False,
        message=(
            f"{step.label}: the plate was not still ({'; '.join(step.still_problems)}): "
            "nobody may touch the plate or stand near it, wait for a placed mass to stop "
            "swinging, then record the step again"
        ),
    )


def _vertical(step: StepStats) -> tuple[float, int | None]:
    """Vertical force of a step in raw units: Fz, or the sum of the cells; and Fz's index."""
    if _layout(step.channels) == "six_axis":
        i = step.channels.index("Fz")
        return step.means[i], i
    return float(sum(step.means)), None


def zero(
    data: npt.ArrayLike,
    channels: Sequence[str],
    rate_hz: float,
    *,
    max_fz_n: float | None = 20.0,
    max_sd: Mapping[str, float] | None = None,
    max_drift: Mapping[str, float] | None = None,
    max_ptp: Mapping[str, float] | None = None,
    previous: ForcePlateValues | None = None,
    previous_channels: Sequence[str] | None = None,
    max_offset_change_n: float = 10.0,
) -> tuple[StepStats, list[Check]]:
    """Statistics of the unloaded plate and the checks that it was still and unloaded.

    `data` (n, c) raw. Still: per channel SD, linear drift and peak to peak below limits
    (`DEFAULT_MAX_SD`, drift 2 SD, peak to peak 12 SD). Unloaded: |vertical force| (Fz, or
    the sum of the cells) below `max_fz_n` (None: skip, for load cells whose raw offsets are
    arbitrary: rely on `previous`), and, given the `previous` calibration's values,
    its offset has not moved by more than `max_offset_change_n` (`previous_channels`: their
    order, default the same as `channels`).
    """
    step = _step("zero", data, channels, rate_hz, max_sd, max_drift, max_ptp)
    checks = [_still_check(step)]
    vertical, _ = _vertical(step)
    name = "Fz" if _layout(channels) == "six_axis" else "the cells' sum"
    if max_fz_n is not None:
        ok = abs(vertical) <= max_fz_n
        checks.append(
            Check(
                name="unloaded",
                passed=ok,
                value=abs(vertical),
                limit=max_fz_n,
                unit="N",
                message=(
                    f"{name} reads {vertical:.2f} N: unloaded"
                    if ok
                    else f"{name} reads {vertical:.1f} N with the plate meant to be unloaded "
                    f"(limit {max_fz_n:g} N): take everything off the plate (or zero the "
                    "amplifier if the plate is empty) and record the zero again"
                ),
            )
        )
    if previous is not None:
        prev_ch = list(previous_channels or channels)
        if sorted(prev_ch) != sorted(channels) or len(prev_ch) != len(previous.offsets):
            raise ValueError(
                f"previous calibration channels {prev_ch} do not match {list(channels)}: "
                "pass previous_channels in the order of the previous calibration"
            )
        if _layout(channels) == "six_axis":
            prev_vertical = previous.offsets[prev_ch.index("Fz")]
        else:
            prev_vertical = float(sum(previous.offsets))
        change = vertical - prev_vertical
        ok = abs(change) <= max_offset_change_n
        checks.append(
            Check(
                name="offset_change",
                passed=ok,
                value=abs(change),
                limit=max_offset_change_n,
                unit="N",
                message=(
                    f"{name} offset moved {change:+.2f} N since the previous calibration"
                    if ok
                    else f"{name} offset moved {change:+.1f} N since the previous calibration "
                    f"(limit {max_offset_change_n:g} N): something is on the plate or leaning "
                    "on it; clear it and record the zero again (if the amplifier was "
                    "re-zeroed or replaced, calibrate without the previous calibration)"
                ),
            )
        )
    return step, checks


def mass_step(
    data: npt.ArrayLike,
    channels: Sequence[str],
    rate_hz: float,
    mass_kg: float,
    x_m: float,
    y_m: float,
    *,
    label: str | None = None,
    max_sd: Mapping[str, float] | None = None,
    max_drift: Mapping[str, float] | None = None,
    max_ptp: Mapping[str, float] | None = None,
) -> StepStats:
    """Statistics of one step with `mass_kg` resting at (x_m, y_m) on the surface."""
    if not mass_kg > 0:
        raise ValueError(f"mass_kg must be > 0 (got {mass_kg})")
    return _step(
        label or f"mass {mass_kg:g} kg at ({x_m:+.3f}, {y_m:+.3f}) m",
        data,
        channels,
        rate_hz,
        max_sd,
        max_drift,
        max_ptp,
        mass_kg=float(mass_kg),
        x_m=float(x_m),
        y_m=float(y_m),
    )


def _fit_gains(
    net: FloatArray,
    net_cov: FloatArray,
    zero_cov: FloatArray,
    target: FloatArray,
    target_var: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Least squares through the origin, net (k, c) @ g = target (k,), with errors in `net`.

    net_cov (k, c, c): covariance of each step's mean; zero_cov (c, c): of the offsets, which
    every step shares (net = step mean - offset). Returns g, cov(g), residuals, Birge ratio.
    """
    k, c = net.shape
    pinv = np.linalg.pinv(net)
    g = pinv @ target
    resid = net @ g - target
    # d(net @ g) per step: g . (e_j - o): independent step noise plus the shared offset noise
    cw = np.full((k, k), float(g @ zero_cov @ g))
    for j in range(k):
        cw[j, j] += float(g @ net_cov[j] @ g) + target_var[j]
    cov_g = pinv @ cw @ pinv.T
    birge = 1.0
    dof = k - c
    if dof > 0:
        chi2 = float(resid @ np.linalg.pinv(cw) @ resid)
        birge = max(1.0, chi2 / dof)
    return g, cov_g * birge, resid, birge


def fit(
    zero_step: StepStats,
    mass_steps: Sequence[StepStats],
    *,
    g_mps2: float = G_STANDARD_MPS2,
    dz_m: float = 0.0,
    layout: Layout | None = None,
    cell_positions_m: Sequence[tuple[float, float]] | None = None,
    cop_check: StepStats | None = None,
    nominal_gain: float = 1.0,
    mass_fraction_range: tuple[float, float] = (0.5, 1.5),
    max_residual_fraction: float = 0.01,
    max_cop_error_mm: float = 5.0,
    mass_sigma_kg: float = 0.0,
    position_sigma_m: float = 0.0,
    min_lever_m: float = 0.05,
    max_gain_deviation: float = 0.2,
) -> tuple[ForcePlateValues, dict[str, Any], list[Check]]:
    """Offsets from the zero step, gains from the mass steps, residuals and checks.

    `nominal_gain`: N per raw unit expected before calibration (1.0 when the amplifier already
    outputs N); only the missing-mass check uses it: a step whose net vertical force is outside
    `mass_fraction_range` x m g fails, naming the step, and is left out of the fit. Residual
    check: |measured - m g| <= `max_residual_fraction` x m g per step. `min_lever_m`: the
    off-centre distance a mass needs to calibrate Mx (|y|) or My (|x|). A gain <= 0 fails
    (reversed polarity or swapped channels); one more than `max_gain_deviation` (relative)
    from `nominal_gain` warns (a wrong amplifier range).

    The checks cover the mass and COP steps and the fit; the zero step's checks come from
    `zero()`: a calibration needs both lists.
    """
    channels = list(zero_step.channels)
    lay: Layout = layout or _layout(channels)
    if lay == "six_axis" and _layout(channels) != "six_axis":
        raise ValueError(f"layout 'six_axis' needs channels {SIX_AXIS_CHANNELS}, got {channels}")
    if lay == "load_cells" and (cell_positions_m is None or len(cell_positions_m) != len(channels)):
        raise ValueError(
            f"layout 'load_cells' needs cell_positions_m: one (x_m, y_m) per cell "
            f"({len(channels)} cells: {channels})"
        )
    for s in (*mass_steps, *([cop_check] if cop_check else [])):
        if s.channels != channels:
            raise ValueError(f"step {s.label!r} has channels {s.channels}, the zero {channels}")
        if s.mass_kg is None or s.x_m is None or s.y_m is None:
            raise ValueError(f"step {s.label!r} has no mass and position: use mass_step()")
    c = len(channels)
    offsets = zero_step.mean_array()
    zero_cov = zero_step.cov_array()
    checks: list[Check] = [_still_check(s) for s in mass_steps]
    notes: list[str] = []

    # missing (or wrong) mass: judged with the nominal gain before any fit
    usable: list[StepStats] = []
    for s in mass_steps:
        check = _mass_present(s, zero_step, nominal_gain, g_mps2, mass_fraction_range)
        checks.append(check)
        if check.passed:
            usable.append(s)

    gains = np.ones(c)
    gain_cov = np.zeros((c, c))
    calibrated = [False] * c
    fit_stats: dict[str, Any] = {}
    if not usable:
        checks.append(
            Check(
                name="gain_fit",
                passed=False,
                message="no usable mass step: record at least one step with a known mass on "
                "the plate (load cells: at least one per cell, at distinct positions)",
            )
        )
    elif lay == "six_axis":
        _fit_six_axis(
            channels,
            usable,
            offsets,
            zero_cov,
            g_mps2,
            mass_sigma_kg,
            position_sigma_m,
            min_lever_m,
            gains,
            gain_cov,
            calibrated,
            fit_stats,
            notes,
        )
    else:
        _fit_load_cells(
            channels,
            usable,
            offsets,
            zero_cov,
            g_mps2,
            mass_sigma_kg,
            gains,
            gain_cov,
            calibrated,
            fit_stats,
            checks,
        )

    for i, name in enumerate(channels):
        if calibrated[i]:
            checks.append(_gain_check(name, float(gains[i]), nominal_gain, max_gain_deviation))

    # residual per step with the fitted gains, in N of vertical force
    residuals: list[MassResidual] = []
    for j, s in enumerate(mass_steps):
        assert s.mass_kg is not None
        assert s.x_m is not None
        assert s.y_m is not None
        corrected = gains * (s.mean_array() - offsets)
        measured = float(corrected[channels.index("Fz")] if lay == "six_axis" else corrected.sum())
        expected = s.mass_kg * g_mps2
        residuals.append(
            MassResidual(
                step=j,
                mass_kg=s.mass_kg,
                x_m=s.x_m,
                y_m=s.y_m,
                expected_n=expected,
                measured_n=measured,
                residual_n=measured - expected,
            )
        )
    usable_labels = {s.label for s in usable}
    for r, s in zip(residuals, mass_steps, strict=True):
        if s.label not in usable_labels or not any(calibrated):
            continue
        frac = abs(r.residual_n) / r.expected_n
        ok = frac <= max_residual_fraction
        checks.append(
            Check(
                name=f"residual:{s.label}",
                passed=ok,
                value=frac,
                limit=max_residual_fraction,
                unit="",
                message=(
                    f"{s.label}: residual {r.residual_n:+.2f} N"
                    if ok
                    else f"{s.label}: the fitted plate reads {r.measured_n:.1f} N for "
                    f"{r.expected_n:.1f} N ({100 * frac:.2f} % off, limit "
                    f"{100 * max_residual_fraction:g} %): check the mass value and that only "
                    "the mass touches the plate; if it persists the plate is non-linear "
                    "and needs servicing"
                ),
            )
        )

    cop = None
    if cop_check is not None:
        checks.append(_still_check(cop_check))
        checks.append(
            _mass_present(cop_check, zero_step, nominal_gain, g_mps2, mass_fraction_range)
        )
        cop = _cop_check(cop_check, offsets, gains, lay, dz_m, cell_positions_m, max_cop_error_mm)
        checks.append(
            Check(
                name="cop_position",
                passed=bool(cop.error_mm <= max_cop_error_mm),
                value=cop.error_mm,
                limit=max_cop_error_mm,
                unit="mm",
                message=(
                    f"COP error {cop.error_mm:.2f} mm at ({cop.x_m:+.3f}, {cop.y_m:+.3f}) m"
                    if cop.error_mm <= max_cop_error_mm
                    else f"the COP of the {cop.mass_kg:g} kg mass reads "
                    f"({cop.measured_x_m:+.4f}, {cop.measured_y_m:+.4f}) m, "
                    f"{cop.error_mm:.1f} mm from where it was placed ({cop.x_m:+.4f}, "
                    f"{cop.y_m:+.4f}) m (limit {max_cop_error_mm:g} mm): check the position "
                    "marks and the mass's placement, then the plate's dz and cell positions; "
                    "recalibrate with off-centre masses"
                ),
            )
        )

    if lay == "six_axis":
        notes.extend(
            f"{name}: dead weights load no {name}; gain kept at 1.0 (the amplifier's)"
            for name in ("Fx", "Fy", "Mz")
        )
    values = ForcePlateValues(
        layout=lay,
        offsets=offsets.tolist(),
        offset_sigmas=zero_step.sems,
        gains=gains.tolist(),
        gain_sigmas=np.sqrt(np.diag(gain_cov)).tolist(),
        gain_calibrated=calibrated,
        residuals=residuals,
        cop_check=cop,
        g_mps2=g_mps2,
        dz_m=dz_m,
        cell_positions_m=[(float(x), float(y)) for x, y in cell_positions_m]
        if lay == "load_cells" and cell_positions_m is not None
        else None,
    )
    stats: dict[str, Any] = jsonable(
        {
            "zero": zero_step.model_dump(),
            "mass_steps": [s.model_dump() for s in mass_steps],
            "cop_check": cop_check.model_dump() if cop_check else None,
            "gain_cov": gain_cov,
            "fit": fit_stats,
            "notes": notes,
            "nominal_gain": nominal_gain,
            "mass_sigma_kg": mass_sigma_kg,
            "position_sigma_m": position_sigma_m,
        }
    )
    return values, stats, checks


def _mass_present(
    s: StepStats,
    zero_step: StepStats,
    nominal_gain: float,
    g_mps2: float,
    mass_fraction_range: tuple[float, float],
) -> Check:
    assert s.mass_kg is not None
    net_n = (_vertical(s)[0] - _vertical(zero_step)[0]) * nominal_gain
    expected = s.mass_kg * g_mps2
    ratio = net_n / expected
    lo, hi = mass_fraction_range
    ok = lo <= ratio <= hi
    return Check(
        name=f"mass_present:{s.label}",
        passed=ok,
        value=ratio,
        limit=lo if ratio < lo else hi,
        unit="",
        message=(
            f"{s.label}: net {net_n:.1f} N for m g = {expected:.1f} N"
            if ok
            else f"{s.label}: the plate read a net {net_n:.1f} N, {100 * ratio:.0f} % "
            f"of m g = {expected:.1f} N (allowed {100 * lo:.0f}-{100 * hi:.0f} %): "
            f"{'the mass was not on the plate' if ratio < lo else 'more than the mass'}"
            f" or the wrong mass was entered; put exactly {s.mass_kg:g} kg on the plate"
            " (nothing else) and record this step again"
        ),
    )


def _gain_check(name: str, gain: float, nominal: float, max_deviation: float) -> Check:
    if gain <= 0:
        return Check(
            name=f"gain_sign:{name}",
            passed=False,
            value=gain,
            limit=0.0,
            message=f"{name} gain is {gain:.4g}: the channel's polarity is reversed or the "
            "channels are mapped to the wrong names; fix the channel order/sign in the driver "
            "configuration and calibrate again",
        )
    deviation = gain / nominal - 1.0
    ok = abs(deviation) <= max_deviation
    return Check(
        name=f"gain_range:{name}",
        passed=ok,
        severity="warn",
        value=gain,
        limit=nominal * (1 + max_deviation if deviation > 0 else 1 - max_deviation),
        message=f"{name} gain {gain:.5g}"
        if ok
        else f"{name} gain {gain:.4g} is {100 * deviation:+.0f} % from the nominal "
        f"{nominal:g}: check the amplifier range setting and the mass values",
    )


def _fit_six_axis(
    channels: list[str],
    usable: Sequence[StepStats],
    offsets: FloatArray,
    zero_cov: FloatArray,
    g_mps2: float,
    mass_sigma_kg: float,
    position_sigma_m: float,
    min_lever_m: float,
    gains: FloatArray,
    gain_cov: FloatArray,
    calibrated: list[bool],
    fit_stats: dict[str, Any],
    notes: list[str],
) -> None:
    masses = np.array([s.mass_kg for s in usable], dtype=np.float64)
    xs = np.array([s.x_m for s in usable], dtype=np.float64)
    ys = np.array([s.y_m for s in usable], dtype=np.float64)
    w = masses * g_mps2
    sw2 = (mass_sigma_kg * g_mps2) ** 2
    sp2 = (position_sigma_m * w) ** 2
    # (channel, target, target variance, usable: a lever that loads it)
    plans = {
        "Fz": (w, np.full_like(w, sw2), np.ones(len(w), dtype=bool)),
        "Mx": (ys * w, ys * ys * sw2 + sp2, np.abs(ys) >= min_lever_m),
        "My": (-xs * w, xs * xs * sw2 + sp2, np.abs(xs) >= min_lever_m),
    }
    for name, (target, tvar, lever) in plans.items():
        i = channels.index(name)
        if not lever.any():
            notes.append(
                f"{name}: no mass at least {min_lever_m:g} m off centre along "
                f"{'y' if name == 'Mx' else 'x'}; gain kept at 1.0 (add an off-centre step)"
            )
            continue
        net = np.array([[s.means[i] - offsets[i]] for s in usable])
        net_cov = np.array([[[s.cov[i][i]]] for s in usable])
        g, cov, resid, birge = _fit_gains(
            net, net_cov, zero_cov[i : i + 1, i : i + 1], target, tvar
        )
        gains[i] = g[0]
        gain_cov[i, i] = cov[0, 0]
        calibrated[i] = True
        fit_stats[name] = {
            "n_steps": len(usable),
            "residuals": resid,
            "birge_ratio": birge,
            "gain": g[0],
            "gain_sigma": math.sqrt(cov[0, 0]),
        }


def _fit_load_cells(
    channels: list[str],
    usable: Sequence[StepStats],
    offsets: FloatArray,
    zero_cov: FloatArray,
    g_mps2: float,
    mass_sigma_kg: float,
    gains: FloatArray,
    gain_cov: FloatArray,
    calibrated: list[bool],
    fit_stats: dict[str, Any],
    checks: list[Check],
) -> None:
    c = len(channels)
    net = np.array([s.mean_array() - offsets for s in usable])
    # a rank below c: the loadings did not separate the cells (too few, or same position);
    # singular values within 10x the size of the means' noise count as zero
    noise = math.sqrt(
        sum(float(np.trace(s.cov_array())) for s in usable)
        + len(usable) * float(np.trace(zero_cov))
    )
    rank = int((np.linalg.svd(net, compute_uv=False) > 10.0 * noise).sum())
    if len(usable) < c or rank < c:
        checks.append(
            Check(
                name="gain_fit",
                passed=False,
                value=float(rank),
                limit=float(c),
                message=(
                    f"{len(usable)} usable loadings separate only {rank} of the {c} cells: "
                    f"record at least {c} mass steps at distinct positions (e.g. one near "
                    "each cell), so every cell's gain can be told apart"
                ),
            )
        )
        return
    masses = np.array([s.mass_kg for s in usable], dtype=np.float64)
    target = masses * g_mps2
    net_cov = np.array([s.cov_array() for s in usable])
    g, cov, resid, birge = _fit_gains(
        net, net_cov, zero_cov, target, np.full(len(usable), (mass_sigma_kg * g_mps2) ** 2)
    )
    gains[:] = g
    gain_cov[:, :] = cov
    for i in range(c):
        calibrated[i] = True
    fit_stats["cells"] = {
        "n_steps": len(usable),
        "residuals": resid,
        "birge_ratio": birge,
        "condition_number": float(np.linalg.cond(net)),
    }


def _cop_check(
    step: StepStats,
    offsets: FloatArray,
    gains: FloatArray,
    layout: Layout,
    dz_m: float,
    cell_positions_m: Sequence[tuple[float, float]] | None,
    limit_mm: float,
) -> CopCheck:
    assert step.mass_kg is not None
    assert step.x_m is not None
    assert step.y_m is not None
    f = gains * (step.mean_array() - offsets)
    ch = step.channels
    if layout == "six_axis":
        fx, fy, fz = f[ch.index("Fx")], f[ch.index("Fy")], f[ch.index("Fz")]
        mx, my = f[ch.index("Mx")], f[ch.index("My")]
        x = (-my - dz_m * fx) / fz if fz > 0 else math.nan
        y = (mx - dz_m * fy) / fz if fz > 0 else math.nan
    else:
        assert cell_positions_m is not None
        pos = np.asarray(cell_positions_m, dtype=np.float64)
        total = float(f.sum())
        x = float(f @ pos[:, 0]) / total if total > 0 else math.nan
        y = float(f @ pos[:, 1]) / total if total > 0 else math.nan
    err = 1e3 * math.hypot(x - step.x_m, y - step.y_m)
    return CopCheck(
        mass_kg=step.mass_kg,
        x_m=step.x_m,
        y_m=step.y_m,
        measured_x_m=float(x),
        measured_y_m=float(y),
        error_mm=err if math.isfinite(err) else math.inf,
        limit_mm=limit_mm,
    )
