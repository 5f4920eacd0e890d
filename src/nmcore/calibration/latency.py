"""Latency calibration: the constant delay from a physical event to the daemon's timestamp.

Each event k is a pair: `out_s[k]`, the host time the event physically happened (a loopback:
the host drives an output line that feeds the trigger input; a tap: an independent reference
such as a photodiode or contact switch read on a line with known timing), and `edge_s[k]`, the
host time the daemon stamped the edge it saw (NaN when it saw none). delay = edge - out.

The delay includes the sampling quantisation exactly as it occurs in trials (an edge is
stamped at the first sample after it: half a period late on average), so correcting results
by the mean delay removes it on average; the spread shows as `sd_ms`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from nmcore.calibration.model import Check, LatencyValues, jsonable

__all__ = ["from_pairs"]

# robust outlier rule: a median absolute deviation scaled to a normal SD (1.4826)
MAD_TO_SD = 1.4826
OUTLIER_MADS = 6.0
# below this a deviation is clock rounding, not a stall (device-timed edges: the MAD is ~0)
OUTLIER_FLOOR_MS = 0.05
# an output and its edge are mapped to host time by the clock model at two moments (the reply,
# the edge's block) and the model moves between them by some microseconds: a device-timed
# loopback of true delay 0 can read -0.02 ms. A mis-paired edge is off by a pulse gap (>= 100 ms).
CLOCK_SLACK_MS = 0.1


def from_pairs(
    out_s: npt.ArrayLike,
    edge_s: npt.ArrayLike,
    *,
    method: Literal["loopback", "tap"],
    sample_period_s: float,
    path: str = "",
    max_sd_ms: float = 2.0,
    min_events: int = 10,
    max_missing_fraction: float = 0.05,
    max_delay_ms: float = 1000.0,
) -> tuple[LatencyValues, dict[str, Any], list[Check]]:
    """Mean delay (ms), its standard error, the spread, from paired event times (host s).

    Checks (all fail): fewer than `min_events` seen edges; missing edges (NaN) above
    `max_missing_fraction`; a negative delay or one above `max_delay_ms` (a mis-paired edge);
    (below -`CLOCK_SLACK_MS`, which is the clock model moving between the two mappings);
    the spread above one sample period plus `max_sd_ms` (a uniform quantisation over +- a
    period has SD period/sqrt(3), so a period is a generous allowance); outliers (more than 6
    MADs plus a period plus 0.05 ms from the median), which also fail: an occasional late edge is a
    buffering stall the constant delay would hide.
    """
    out = np.asarray(out_s, dtype=np.float64)
    edge = np.asarray(edge_s, dtype=np.float64)
    if out.ndim != 1 or out.shape != edge.shape:
        raise ValueError(
            f"out_s and edge_s must be 1-D and of equal length (got {out.shape}, {edge.shape})"
        )
    if not sample_period_s > 0:
        raise ValueError(f"sample_period_s must be > 0 (got {sample_period_s})")
    if not np.all(np.isfinite(out)):
        raise ValueError("out_s must be finite: every event needs the time it was made")
    k = out.shape[0]
    seen = np.isfinite(edge)
    n_missing = int(k - seen.sum())
    d_ms = (edge[seen] - out[seen]) * 1e3
    n = int(d_ms.shape[0])
    period_ms = sample_period_s * 1e3
    checks: list[Check] = []

    enough = n >= max(min_events, 2)
    checks.append(
        Check(
            name="events",
            passed=enough,
            value=float(n),
            limit=float(min_events),
            message=f"{n} events"
            if enough
            else f"only {n} edges were seen (need {min_events}): make more events, and check "
            "that the output line is wired to the trigger input",
        )
    )
    missing_fraction = n_missing / k if k else 1.0
    checks.append(
        Check(
            name="missing",
            passed=missing_fraction <= max_missing_fraction,
            value=missing_fraction,
            limit=max_missing_fraction,
            message=f"{n_missing} of {k} edges missing"
            if missing_fraction <= max_missing_fraction
            else f"{n_missing} of {k} events produced no edge ({100 * missing_fraction:.0f} %, "
            f"limit {100 * max_missing_fraction:g} %): check the wiring, the trigger threshold "
            "and that events are spaced further apart than the trigger's refractory time",
        )
    )
    if n < 2:
        values = LatencyValues(
            delay_ms=math.nan if n == 0 else float(d_ms[0]),
            sigma_ms=math.inf,
            sd_ms=math.nan,
            n_events=n,
            n_missing=n_missing,
            method=method,
            path=path,
            sample_period_ms=period_ms,
        )
        return values, jsonable({"n_events": n, "n_missing": n_missing, "delays_ms": d_ms}), checks

    mean = float(d_ms.mean())
    sd = float(d_ms.std(ddof=1))
    sigma = sd / math.sqrt(n)
    median = float(np.median(d_ms))
    mad_sd = MAD_TO_SD * float(np.median(np.abs(d_ms - median)))
    outliers = np.abs(d_ms - median) > OUTLIER_MADS * mad_sd + period_ms + OUTLIER_FLOOR_MS
    n_out = int(outliers.sum())

    lo, hi = float(d_ms.min()), float(d_ms.max())
    in_range = lo >= -CLOCK_SLACK_MS and hi <= max_delay_ms
    checks.append(
        Check(
            name="delay_range",
            passed=in_range,
            value=lo if lo < -CLOCK_SLACK_MS else hi,
            limit=-CLOCK_SLACK_MS if lo < -CLOCK_SLACK_MS else max_delay_ms,
            unit="ms",
            message=f"delays {lo:.3f} to {hi:.3f} ms"
            if in_range
            else f"delays range from {lo:.3f} to {hi:.3f} ms (allowed -{CLOCK_SLACK_MS:g} to "
            f"{max_delay_ms:g}): "
            "edges are paired with the wrong events (an edge before its event is impossible); "
            "space the events further apart and check the output and trigger streams share "
            "the host clock",
        )
    )
    allowed_sd = period_ms + max_sd_ms
    checks.append(
        Check(
            name="spread",
            passed=sd <= allowed_sd,
            value=sd,
            limit=allowed_sd,
            unit="ms",
            message=f"spread {sd:.3f} ms"
            if sd <= allowed_sd
            else f"the delay varies by {sd:.2f} ms SD (limit: one sample period {period_ms:.2f} "
            f"ms + {max_sd_ms:g} ms): the path buffers irregularly (USB/BLE batching, a busy "
            "host); use a wired trigger line, a higher sample rate, or an idle host",
        )
    )
    checks.append(
        Check(
            name="outliers",
            passed=n_out == 0,
            value=float(n_out),
            limit=0.0,
            message="no outlying delays"
            if n_out == 0
            else f"{n_out} delays lie far from the median {median:.2f} ms (e.g. "
            f"{float(d_ms[outliers][0]):.2f} ms): the link stalled during those events; check "
            "the host load and the connection, then measure again",
        )
    )
    values = LatencyValues(
        delay_ms=mean,
        sigma_ms=sigma,
        sd_ms=sd,
        n_events=n,
        n_missing=n_missing,
        method=method,
        path=path,
        sample_period_ms=period_ms,
    )
    stats = jsonable(
        {
            "n_events": n,
            "n_missing": n_missing,
            "delays_ms": d_ms,
            "median_ms": median,
            "mad_sd_ms": mad_sd,
            "min_ms": lo,
            "max_ms": hi,
            "n_outliers": n_out,
            "quantisation_sd_ms": period_ms / math.sqrt(12.0),
        }
    )
    return values, stats, checks
