"""Prieto et al. 1996 sway measures against shared/data/forceplate/cop_reference_measures.csv
(independent implementation, cross-checked with Quijoux's and BMClab's code), plus the
kernel, spectral and sliding-window machinery."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import signal, stats

from nmcore.detect import _sway_kernels as k
from nmcore.detect.cop import CopResult, cop_from_six_axis, cop_given
from nmcore.detect.sway import (
    MEASURE_UNITS,
    SPECTRAL_MEASURES,
    SwayMonitor,
    SwayParams,
    f_quantile_2_dof,
    spectral_measures,
    sway_measures,
    welch_psd,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "forceplate"
RATE_HZ = 100.0
WINDOW = slice(4000, 7000)  # the rows the reference values were computed on
REF_TOL = 1e-6
# reference key -> our key, where they differ
KEY_MAP = {"BMC_hyperellipsoid_area95": "AREA_PE95_Fexact_ddof1"}
LENGTH_MEASURES = [m for m, u in MEASURE_UNITS.items() if u in ("cm", "cm/s")]
AREA_MEASURES = [m for m, u in MEASURE_UNITS.items() if u.startswith("cm^2")]
INVARIANT_MEASURES = [m for m, u in MEASURE_UNITS.items() if u in ("Hz", "1")]


def _reference() -> dict[str, dict[str, float]]:
    with (DATA / "cop_reference_measures.csv").open() as fh:
        rows = list(csv.reader(fh))
    cols = ["amti_raw", "amti_lp10", "kistler"]
    return {c: {r[0]: float(r[j + 1]) for r in rows[1:]} for j, c in enumerate(cols)}


REF = _reference()


@pytest.fixture(scope="module")
def amti_cop() -> CopResult:
    a = np.loadtxt(DATA / "amti_quiet_standing.csv", delimiter=",", skiprows=35)
    return cop_from_six_axis(*(a[:, i] for i in (3, 4, 5, 6, 7)), dz_m=0.0)


@pytest.fixture(scope="module")
def amti_recorded() -> tuple[np.ndarray, np.ndarray]:
    a = np.loadtxt(DATA / "amti_quiet_standing.csv", delimiter=",", skiprows=35)
    return a[WINDOW, 10], a[WINDOW, 9]  # Cy (AP), Cx (ML)


@pytest.fixture(scope="module")
def kistler_cop() -> CopResult:
    kd = np.loadtxt(DATA / "kistler_bmclab_output.csv", delimiter=",", skiprows=1)
    return cop_given(kd[:, 7], kd[:, 8], kd[:, 3], min_fz_n=50.0)


def _relerr(ours: dict[str, float | None], ref: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, val in ref.items():
        if key in ("n", "fs", "T_s"):
            continue
        mine = ours[KEY_MAP.get(key, key)]
        assert mine is not None, key
        out[key] = abs(mine - val) / abs(val)
    return out


def _assert_matches(ours: dict[str, float | None], ref: dict[str, float], tol: float) -> None:
    errs = _relerr(ours, ref)
    bad = {key: e for key, e in errs.items() if e > tol}
    assert not bad, bad
    assert len(errs) == 36  # every reference measure was compared


def test_reference_covers_every_measure() -> None:
    ours = set(MEASURE_UNITS)
    theirs = {KEY_MAP.get(key, key) for key in REF["amti_raw"]} - {"n", "fs", "T_s"}
    assert theirs == ours


def test_amti_raw_matches_reference(amti_cop: CopResult) -> None:
    res = sway_measures(amti_cop.ap_m[WINDOW], amti_cop.ml_m[WINDOW], RATE_HZ)
    assert res.status == "ok"
    assert res.n_samples == 3000
    assert res.n_excluded == 0
    assert res.duration_s == REF["amti_raw"]["T_s"]
    _assert_matches(res.measures, REF["amti_raw"], REF_TOL)


def test_amti_lowpass_matches_reference(amti_cop: CopResult) -> None:
    params = SwayParams(lowpass_hz=10.0, lowpass_order=4)
    res = sway_measures(amti_cop.ap_m[WINDOW], amti_cop.ml_m[WINDOW], RATE_HZ, params)
    assert res.params["lowpass_hz"] == 10.0
    assert res.params["lowpass_order"] == 4
    _assert_matches(res.measures, REF["amti_lp10"], REF_TOL)


def test_kistler_matches_reference(kistler_cop: CopResult) -> None:
    res = sway_measures(kistler_cop.ap_m, kistler_cop.ml_m, RATE_HZ, valid=kistler_cop.valid)
    assert res.n_samples == 2000
    assert res.n_excluded == 0
    _assert_matches(res.measures, REF["kistler"], REF_TOL)


def _lp_measures(amti_cop: CopResult, filt: object) -> dict[str, float | None]:
    ap = filt(amti_cop.ap_m[WINDOW])  # type: ignore[operator]
    ml = filt(amti_cop.ml_m[WINDOW])  # type: ignore[operator]
    return sway_measures(ap, ml, RATE_HZ).measures


def test_which_zero_phase_filter_the_reference_used(amti_cop: CopResult) -> None:
    """filtfilt(b, a) with its default odd padding (padlen 15) reproduces the LP10Hz column to
    rounding; sosfiltfilt pads the same way and differs only by ~1e-13 (section-wise
    arithmetic). Other padding (none, Gustafsson) moves measures by ~1e-3: not it."""
    b, a = signal.butter(4, 10.0, fs=RATE_HZ)
    sos = signal.butter(4, 10.0, fs=RATE_HZ, output="sos")
    ref = REF["amti_lp10"]
    ba = max(_relerr(_lp_measures(amti_cop, lambda x: signal.filtfilt(b, a, x)), ref).values())
    so = max(_relerr(_lp_measures(amti_cop, lambda x: signal.sosfiltfilt(sos, x)), ref).values())
    nopad = max(
        _relerr(_lp_measures(amti_cop, lambda x: signal.filtfilt(b, a, x, padlen=0)), ref).values()
    )
    gust = max(
        _relerr(
            _lp_measures(amti_cop, lambda x: signal.filtfilt(b, a, x, method="gust")), ref
        ).values()
    )
    assert ba < 1e-12
    assert so < 1e-10
    assert nopad > 1e-4
    assert gust > 1e-4


def test_recorded_rounded_cop_does_not_reproduce_reference(
    amti_recorded: tuple[np.ndarray, np.ndarray],
) -> None:
    """The reference took the COP from the moments (-My/Fz, Mx/Fz), not the file's Cx, Cy
    columns, which are rounded to 1 um; on those, path-length measures move by ~1e-4."""
    ap, ml = amti_recorded
    errs = _relerr(sway_measures(ap, ml, RATE_HZ).measures, REF["amti_raw"])
    assert errs["TOTEX_ML"] > 1e-4
    assert errs["MDIST"] < 1e-5  # positions agree to the rounding


def test_resampled_pipeline_is_close_to_quijoux_positional_features(amti_cop: CopResult) -> None:
    """Quijoux et al.'s pipeline (SWARII resampling to 25 Hz, then 10 Hz low-pass) is not ours
    (10 Hz low-pass, then linear interpolation to 25 Hz): positional features agree to 0.5 %,
    velocities (sensitive to the interpolation) only to ~5 %."""
    res = sway_measures(
        amti_cop.ap_m[WINDOW],
        amti_cop.ml_m[WINDOW],
        RATE_HZ,
        SwayParams(lowpass_hz=10.0, resample_hz=25.0),
    )
    assert res.rate_hz == 25.0
    assert res.n_analysed == 750
    with (DATA / "amti_quiet_standing.quijoux_features.csv").open() as fh:
        q = {r[0]: float(r[1]) for r in list(csv.reader(fh))[1:]}
    pairs = {
        "MDIST": "mean_distance_Radius",
        "MDIST_AP": "mean_distance_AP",
        "MDIST_ML": "mean_distance_ML",
        "RDIST_AP": "rms_AP",
        "RDIST_ML": "rms_ML",
        "RANGE_AP": "range_AP",
        "RANGE_ML": "range_ML",
        "AREA_PE95_Fexact": "confidence_ellipse_area_ML_AND_AP",
    }
    for ours, theirs in pairs.items():
        assert res.measures[ours] == pytest.approx(q[theirs], rel=5e-3), ours
    assert res.measures["MVELO"] == pytest.approx(q["mean_velocity_ML_AND_AP"], rel=0.1)


def test_scale_and_translation(amti_cop: CopResult) -> None:
    ap, ml = amti_cop.ap_m[WINDOW], amti_cop.ml_m[WINDOW]
    base = sway_measures(ap, ml, RATE_HZ).measures
    scale = 7.3
    scaled = sway_measures(ap * scale + 0.1, ml * scale - 0.25, RATE_HZ).measures
    for m in LENGTH_MEASURES:
        assert scaled[m] == pytest.approx(base[m] * scale, rel=1e-9), m  # type: ignore[operator]
    for m in [*AREA_MEASURES, "POWER_AP", "POWER_ML"]:
        assert scaled[m] == pytest.approx(base[m] * scale**2, rel=1e-9), m  # type: ignore[operator]
    for m in INVARIANT_MEASURES:
        assert scaled[m] == pytest.approx(base[m], rel=1e-9), m
    assert set(LENGTH_MEASURES + AREA_MEASURES + INVARIANT_MEASURES) | {
        "POWER_AP",
        "POWER_ML",
    } == set(MEASURE_UNITS)


def test_rate_changes_time_measures_only(amti_cop: CopResult) -> None:
    ap, ml = amti_cop.ap_m[WINDOW], amti_cop.ml_m[WINDOW]
    a = sway_measures(ap, ml, 100.0).measures
    b = sway_measures(ap, ml, 200.0, SwayParams(welch_segment_s=5.0)).measures
    # (spectral measures are left out: the fixed 0.15-5 Hz band does not scale with the rate)
    for m in ("MVELO", "MVELO_ML", "AREA_SW", "MFREQ", "MFREQ_AP"):
        assert b[m] == pytest.approx(2 * a[m], rel=1e-9), m  # type: ignore[operator]
    for m in ("MDIST", "TOTEX", "AREA_CE95_Prieto", "FD_CE"):
        assert b[m] == pytest.approx(a[m], rel=1e-12), m


def test_quantiles_in_closed_form_match_scipy() -> None:
    for d2 in (1, 2, 5, 98, 1998, 2998, 59998):
        assert f_quantile_2_dof(0.95, d2) == pytest.approx(stats.f.ppf(0.95, 2, d2), rel=1e-12)
    assert f_quantile_2_dof(0.5, 30) == pytest.approx(stats.f.ppf(0.5, 2, 30), rel=1e-12)
    from nmcore.detect.sway import CHI2_95_2DOF

    assert pytest.approx(stats.chi2.ppf(0.95, 2), rel=1e-14) == CHI2_95_2DOF
    with pytest.raises(ValueError, match="d2"):
        f_quantile_2_dof(0.95, 0)


@pytest.mark.parametrize(
    ("n", "seg", "ovl", "detrend"),
    [(3000, 1000, 500, "linear"), (2999, 999, 333, "constant"), (1000, 256, 0, "none")],
)
def test_welch_matches_scipy(n: int, seg: int, ovl: int, detrend: str) -> None:
    x = np.cumsum(np.random.default_rng(n).normal(size=n))
    f, p = welch_psd(x, 100.0, seg, ovl, detrend)  # type: ignore[arg-type]
    fs, ps = signal.welch(
        x, fs=100.0, nperseg=seg, noverlap=ovl, detrend=False if detrend == "none" else detrend
    )
    np.testing.assert_allclose(f, fs, rtol=0, atol=0)
    np.testing.assert_allclose(p, ps, rtol=1e-10, atol=1e-12 * ps.max())


def test_spectral_measures_of_a_pure_tone() -> None:
    rate = 100.0
    t = np.arange(6000) / rate
    x = np.sin(2 * np.pi * 1.0 * t)  # exactly on a 0.1 Hz bin
    f, p = welch_psd(x, rate, 1000, 500, "linear")
    sm = spectral_measures(f, p, (0.15, 5.0))
    # a Hann window spreads a bin-centred tone 1/6 : 2/3 : 1/6 over three bins
    assert sm["F50"] == pytest.approx(1.0)
    assert sm["F95"] == pytest.approx(1.1)
    assert sm["CFREQ"] == pytest.approx(math.sqrt((0.81 + 4.0 + 1.21) / 6.0), rel=1e-3)
    assert sm["FREQD"] == pytest.approx(math.sqrt(1.0 - 6.0 / 6.02), rel=1e-2)
    assert sm["POWER"] == pytest.approx(0.5, rel=1e-2)  # variance of a unit sine


def _sums_numpy(ap: np.ndarray, ml: np.ndarray, step_ok: np.ndarray) -> np.ndarray:
    a = ap - ap.mean()
    m = ml - ml.mean()
    da, dm = np.diff(a)[step_ok], np.diff(m)[step_ok]
    cross = np.abs(a[1:] * m[:-1] - a[:-1] * m[1:])[step_ok]
    out = np.empty(k.N_SWAY_SUMS)
    out[k.MEAN_AP], out[k.MEAN_ML] = ap.mean(), ml.mean()
    out[k.SUM_ABS_AP], out[k.SUM_ABS_ML] = np.abs(a).sum(), np.abs(m).sum()
    out[k.SUM_RD] = np.hypot(a, m).sum()
    out[k.SUM_AP2], out[k.SUM_ML2], out[k.SUM_APML] = (a * a).sum(), (m * m).sum(), (a * m).sum()
    out[k.MIN_AP], out[k.MAX_AP], out[k.MIN_ML], out[k.MAX_ML] = a.min(), a.max(), m.min(), m.max()
    out[k.PATH] = np.hypot(da, dm).sum()
    out[k.PATH_AP], out[k.PATH_ML] = np.abs(da).sum(), np.abs(dm).sum()
    out[k.SUM_CROSS] = cross.sum()
    out[k.N_STEPS] = step_ok.sum()
    return out


@pytest.mark.parametrize("impl", ["jit", "py_func"])
def test_sway_sums_kernel_matches_numpy(impl: str) -> None:
    rng = np.random.default_rng(5)
    n = 2500
    ap = np.cumsum(rng.normal(size=n)) * 0.01 + 3.0
    ml = np.cumsum(rng.normal(size=n)) * 0.01 - 1.0
    step_ok = rng.random(n - 1) > 0.05
    kern = k.sway_sums_kernel if impl == "jit" else k.sway_sums_kernel.py_func  # type: ignore[attr-defined]
    out = np.empty(k.N_SWAY_SUMS)
    kern(ap, ml, step_ok, out)
    np.testing.assert_allclose(out, _sums_numpy(ap, ml, step_ok), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("impl", ["jit", "py_func"])
@pytest.mark.parametrize("detrend", ["none", "constant", "linear"])
def test_welch_segments_kernel_matches_scipy_detrend(impl: str, detrend: str) -> None:
    x = np.cumsum(np.random.default_rng(9).normal(size=1000)) + 50.0
    seg_n, step = 256, 100
    n_seg = 1 + (x.size - seg_n) // step
    window = signal.get_window("hann", seg_n)  # periodic Hann, as welch uses
    code = {"none": k.DETREND_NONE, "constant": k.DETREND_CONSTANT, "linear": k.DETREND_LINEAR}
    kern = k.welch_segments_kernel if impl == "jit" else k.welch_segments_kernel.py_func  # type: ignore[attr-defined]
    out = np.empty((n_seg, seg_n))
    kern(x, step, code[detrend], window, out)
    segs = np.stack([x[s * step : s * step + seg_n] for s in range(n_seg)])
    if detrend != "none":
        segs = signal.detrend(segs, axis=1, type=detrend)
    np.testing.assert_allclose(out, segs * window, rtol=1e-9, atol=1e-10)


def test_edge_exclusions_are_trimmed_and_counted(amti_cop: CopResult) -> None:
    ap = amti_cop.ap_m[3990:7010].copy()
    ml = amti_cop.ml_m[3990:7010].copy()
    valid = np.ones(ap.size, dtype=bool)
    valid[:10] = False
    ap[-10:] = np.nan
    res = sway_measures(ap, ml, RATE_HZ, valid=valid)
    assert res.status == "ok"
    assert res.n_samples == 3020
    assert res.n_excluded == 20
    _assert_matches(res.measures, REF["amti_raw"], REF_TOL)


def test_interior_gap_skips_steps_and_drops_spectra(amti_cop: CopResult) -> None:
    ap = amti_cop.ap_m[WINDOW].copy()
    ml = amti_cop.ml_m[WINDOW].copy()
    ap[1500:1503] = np.nan  # like the AMTI recorder's dropped frames
    res = sway_measures(ap, ml, RATE_HZ)
    assert res.status == "gaps"
    assert res.n_excluded == 3
    assert res.n_analysed == 2997
    assert all(res.measures[m] is None for m in SPECTRAL_MEASURES)
    keep = np.isfinite(ap)
    a, m = ap[keep] * 100, ml[keep] * 100
    a, m = a - a.mean(), m - m.mean()
    steps = np.hypot(np.diff(a), np.diff(m))
    steps = np.delete(steps, 1499)  # the step that would jump the gap
    assert res.measures["TOTEX"] == pytest.approx(steps.sum(), rel=1e-12)
    assert res.measures["MVELO"] == pytest.approx(steps.sum() / 29.97, rel=1e-12)
    # filtering cannot run across a gap: nothing is computed rather than something wrong
    lp = sway_measures(ap, ml, RATE_HZ, SwayParams(lowpass_hz=10.0))
    assert lp.status == "gaps"
    assert all(v is None for v in lp.measures.values())


def test_too_short_and_short_for_spectra() -> None:
    res = sway_measures([0.0, 0.01, np.nan], [0.0, 0.0, 0.0], RATE_HZ)
    assert res.status == "too_short"
    assert all(v is None for v in res.measures.values())
    lp = sway_measures(np.zeros(15), np.zeros(15), RATE_HZ, SwayParams(lowpass_hz=10.0))
    assert lp.status == "too_short"
    assert "low-pass" in lp.notes[0]
    rng = np.random.default_rng(0)
    short = sway_measures(rng.normal(size=500) * 1e-3, rng.normal(size=500) * 1e-3, RATE_HZ)
    assert short.status == "ok"
    assert short.measures["MDIST"] is not None
    assert all(short.measures[m] is None for m in SPECTRAL_MEASURES)
    assert short.notes


def test_params_are_strict_and_echoed() -> None:
    with pytest.raises(ValidationError, match="lowpass_hertz"):
        SwayParams(lowpass_hertz=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="resample_hz"):
        SwayParams(resample_hz=25.0)
    with pytest.raises(ValidationError, match="band_hz"):
        SwayParams(band_hz=(5.0, 0.15))
    with pytest.raises(ValueError, match="Nyquist"):
        sway_measures(np.zeros(3000), np.zeros(3000), 100.0, SwayParams(lowpass_hz=60.0))
    p = SwayParams(welch_segment_s=5.0, detrend="constant")
    res = sway_measures(np.sin(np.arange(3000) / 50.0) * 1e-2, np.zeros(3000), 100.0, p)
    assert res.params == p.model_dump()
    assert res.units == MEASURE_UNITS
    assert res.algorithm == "prieto1996"


def test_monitor_matches_batch_on_each_due_window(amti_cop: CopResult) -> None:
    ap = amti_cop.ap_m[4000:8000]
    ml = amti_cop.ml_m[4000:8000]
    mon = SwayMonitor(rate_hz=RATE_HZ, window_s=30.0, update_every_s=1.0)
    rng = np.random.default_rng(2)
    updates = []
    i = 0
    while i < ap.size:
        n = int(rng.integers(1, 250))
        updates += mon.push(ap[i : i + n], ml[i : i + n])
        i += n
    assert [u.end_sample for u in updates] == list(range(3000, 4001, 100))
    for u in updates[::5]:
        batch = sway_measures(
            ap[u.end_sample - 3000 : u.end_sample], ml[u.end_sample - 3000 : u.end_sample], RATE_HZ
        )
        assert u.result.measures == batch.measures
    _assert_matches(updates[0].result.measures, REF["amti_raw"], REF_TOL)


def test_monitor_counts_excluded_frames_and_rejects_bad_blocks() -> None:
    mon = SwayMonitor(rate_hz=10.0, window_s=2.0, update_every_s=0.5)
    assert mon.push(np.zeros(19), np.zeros(19)) == []
    x = np.random.default_rng(1).normal(size=10) * 1e-3
    valid = np.ones(10, dtype=bool)
    valid[2] = False  # stream sample 21: inside both due windows
    ups = mon.push(x, x[::-1], valid)
    assert [u.end_sample for u in ups] == [20, 25]
    assert ups[0].result.n_excluded == 0
    assert ups[1].result.n_excluded == 1
    assert ups[1].result.status == "gaps"
    with pytest.raises(ValueError, match="one length"):
        mon.push(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="rate_hz"):
        SwayMonitor(rate_hz=0.0)
    assert math.isfinite(ups[0].result.measures["MDIST"])  # type: ignore[arg-type]
