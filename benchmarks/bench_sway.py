"""Cost of the full Prieto sway-measure set, and of COP from a 6-axis plate.

Usage: .venv/bin/python benchmarks/bench_sway.py [--smoke]

Figures (one JSON object each on stdout), every one next to a naive numpy/scipy version
measured in the same run:
- sway_full_30s_100hz / sway_full_60s_1khz: `sway_measures` (numba time-domain kernel +
  numpy Welch) per window, in µs; baseline: the measures written directly with numpy
  (np.diff/np.hypot, np.cov) and scipy.signal.welch.
- sway_time_domain_60s_1khz: the time-domain part alone (one kernel call) against numpy.
- sway_monitor_update_30s_100hz: one sliding-window update (1 s block, 30 s window).
- cop_six_axis_60s_1khz: COP from Fx..My in samples/s against the numpy expression.
The COP signal is a real AMTI recording (shared/data), tiled and interpolated for 1 kHz.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import signal

from nmcore.detect._sway_kernels import N_SWAY_SUMS, sway_sums_kernel
from nmcore.detect.cop import cop_from_six_axis
from nmcore.detect.sway import SwayMonitor, sway_measures

FloatArray = npt.NDArray[np.float64]
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "forceplate"


def _timeit(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds per call over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _emit(
    name: str, value: float, unit: str, base_name: str, base: float, lower_better: bool
) -> None:
    ratio = base / value if lower_better else value / base
    print(
        json.dumps(
            {
                "name": name,
                "value": value,
                "unit": unit,
                "baseline": {"name": base_name, "value": base},
                "ratio": ratio,
            }
        )
    )


def naive_sway(ap_m: FloatArray, ml_m: FloatArray, rate_hz: float) -> dict[str, float]:
    """The same measures as one would first write them: numpy + scipy, no kernels."""
    ap = ap_m * 100 - np.mean(ap_m * 100)
    ml = ml_m * 100 - np.mean(ml_m * 100)
    n = ap.size
    t = n / rate_hz
    rd = np.hypot(ap, ml)
    out = {
        "MDIST": rd.mean(),
        "MDIST_AP": np.abs(ap).mean(),
        "MDIST_ML": np.abs(ml).mean(),
        "RDIST": np.sqrt(np.mean(rd**2)),
        "RDIST_AP": ap.std(),
        "RDIST_ML": ml.std(),
        "RANGE_AP": np.ptp(ap),
        "RANGE_ML": np.ptp(ml),
    }
    d_ap, d_ml = np.diff(ap), np.diff(ml)
    out["TOTEX"] = np.hypot(d_ap, d_ml).sum()
    out["TOTEX_AP"], out["TOTEX_ML"] = np.abs(d_ap).sum(), np.abs(d_ml).sum()
    out["MVELO"] = out["TOTEX"] / t
    cov = np.cov(ap, ml, ddof=0)
    f95 = (n - 2) / 2 * (0.05 ** (-2 / (n - 2)) - 1)  # closed form (scipy.stats costs ~ms)
    out["AREA_CE95"] = 2 * np.pi * f95 * np.sqrt(np.linalg.det(cov))
    out["AREA_SW"] = np.abs(ap[1:] * ml[:-1] - ap[:-1] * ml[1:]).sum() / (2 * t)
    out["MFREQ"] = out["MVELO"] / (2 * np.pi * out["MDIST"])
    d = 2 * np.sqrt(2 * f95 * np.sqrt(np.linalg.det(cov)))
    out["FD_CE"] = np.log(n) / np.log(n * d / out["TOTEX"])
    seg = round(10 * rate_hz)
    for name, x in (("AP", ap), ("ML", ml)):
        f, p = signal.welch(x, fs=rate_hz, nperseg=seg, noverlap=seg // 2, detrend="linear")
        b = (f >= 0.15) & (f <= 5.0)
        fb, g = f[b], p[b]
        cum = np.cumsum(g)
        out["POWER_" + name] = g.sum() * (f[1] - f[0])
        out["F50_" + name] = fb[np.searchsorted(cum, 0.5 * cum[-1])]
        out["CFREQ_" + name] = np.sqrt((fb**2 * g).sum() / g.sum())
    return out


def _cop_signal(rate_hz: float, duration_s: float) -> tuple[FloatArray, FloatArray]:
    a = np.loadtxt(DATA / "amti_quiet_standing.csv", delimiter=",", skiprows=35)
    cop = cop_from_six_axis(*(a[:, i] for i in (3, 4, 5, 6, 7)))
    ap, ml = cop.ap_m[cop.valid], cop.ml_m[cop.valid]
    t_src = np.arange(ap.size) / 100.0
    t = np.arange(round(duration_s * rate_hz)) / rate_hz % t_src[-1]
    return np.interp(t, t_src, ap), np.interp(t, t_src, ml)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="few repeats, a few seconds")
    args = parser.parse_args()
    repeats = 3 if args.smoke else 30

    for label, rate, dur in (("30s_100hz", 100.0, 30.0), ("60s_1khz", 1000.0, 60.0)):
        ap, ml = _cop_signal(rate, dur)
        ours = _timeit(partial(sway_measures, ap, ml, rate), repeats)
        base = _timeit(partial(naive_sway, ap, ml, rate), repeats)
        _emit(
            f"sway_full_{label}",
            ours * 1e6,
            "us/window",
            "numpy+scipy naive",
            base * 1e6,
            lower_better=True,
        )

    ap, ml = _cop_signal(1000.0, 60.0)
    apc, mlc = ap * 100, ml * 100
    step_ok = np.ones(ap.size - 1, dtype=np.bool_)
    out = np.empty(N_SWAY_SUMS)

    def time_numpy() -> float:
        a, m = apc - apc.mean(), mlc - mlc.mean()
        da, dm = np.diff(a), np.diff(m)
        return float(
            np.hypot(a, m).sum()
            + np.abs(a).sum()
            + np.abs(m).sum()
            + (a * a).sum()
            + (m * m).sum()
            + (a * m).sum()
            + np.ptp(a)
            + np.ptp(m)
            + np.hypot(da, dm).sum()
            + np.abs(da).sum()
            + np.abs(dm).sum()
            + np.abs(a[1:] * m[:-1] - a[:-1] * m[1:]).sum()
        )

    ours = _timeit(lambda: sway_sums_kernel(apc, mlc, step_ok, out), repeats)
    base = _timeit(time_numpy, repeats)
    _emit(
        "sway_time_domain_60s_1khz",
        ours * 1e6,
        "us/window",
        "numpy expressions",
        base * 1e6,
        lower_better=True,
    )

    ap, ml = _cop_signal(100.0, 60.0)
    mon = SwayMonitor(rate_hz=100.0, window_s=30.0, update_every_s=1.0)
    mon.push(ap[:2900], ml[:2900])
    blocks = [(ap[i : i + 100], ml[i : i + 100]) for i in range(2900, 6000 - 100, 100)]
    it = iter(blocks * (1 + repeats // len(blocks) + 1))
    ours = _timeit(lambda: mon.push(*next(it)), min(repeats, len(blocks) - 2))
    base = _timeit(lambda: naive_sway(ap[:3000], ml[:3000], 100.0), repeats)
    _emit(
        "sway_monitor_update_30s_100hz",
        ours * 1e6,
        "us/update",
        "naive full recompute",
        base * 1e6,
        lower_better=True,
    )

    rng = np.random.default_rng(0)
    n = 60_000
    fx, fy, mx, my = (rng.normal(0, 20, n) for _ in range(4))
    fz = rng.uniform(400, 900, n)
    fz[::997] = 0.0

    def cop_numpy() -> None:
        ok = fz > 50.0
        with np.errstate(divide="ignore", invalid="ignore"):
            np.where(ok, (-my - 0.04 * fx) / fz, math.nan)
            np.where(ok, (mx - 0.04 * fy) / fz, math.nan)

    ours = _timeit(lambda: cop_from_six_axis(fx, fy, fz, mx, my, dz_m=0.04), repeats)
    base = _timeit(cop_numpy, repeats)
    _emit(
        "cop_six_axis_60s_1khz", n / ours, "samples/s", "numpy where", n / base, lower_better=False
    )


if __name__ == "__main__":
    main()
