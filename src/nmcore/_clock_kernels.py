"""Numba kernel of the clock model: the lower-envelope line fit (Moon, Skelly & Towsley 1999).

Called once per closed bin (every `bin_s`, about twice a second), never per sample.

Points are (u, v) with u = device seconds since the fit's anchor and v = host seconds minus
the anchor minus u (so v is the transport delay plus the drift term, milliseconds in size,
which keeps the hull's cross products well conditioned). They sit in a ring buffer of
capacity `cap`, `n` of them from `start`, sorted by u.

The fit is the linear programme of Moon et al.: among lines v = c + d*u lying on or below
every point, maximise the sum of the line's values at the points, i.e. maximise
c + d*mean(u). The optimum is the lower convex hull's edge above mean(u); with the slope
limited to [d_lo, d_hi] (a concave objective in d) the optimum is the clamped slope with the
highest c that still keeps the line below every point.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nmcore._numba import jit

__all__ = ["affine_map", "envelope_fit", "minima_slope"]


@jit
def envelope_fit(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d_lo: float,
    d_hi: float,
    hull: npt.NDArray[np.int64],
    out: npt.NDArray[np.float64],
) -> int:
    """Fit v = c + d*u under the points; write out[0] = c, out[1] = d, out[2] = mean(u).

    `hull` is a work array (length >= n) that receives the ring indices of the lower hull.
    Returns the number of hull vertices (0 when n == 0, and then `out` is left untouched).
    """
    cap = u.shape[0]
    if n <= 0:
        return 0
    # Andrew's monotone chain, lower half only: keep strictly counter-clockwise turns.
    m = 0
    u_sum = 0.0
    for k in range(n):
        i = (start + k) % cap
        u_sum += u[i]
        while m >= 2:
            a = hull[m - 2]
            b = hull[m - 1]
            cross = (u[b] - u[a]) * (v[i] - v[a]) - (v[b] - v[a]) * (u[i] - u[a])
            if cross > 0.0:
                break
            m -= 1
        hull[m] = i
        m += 1
    u_bar = u_sum / n
    d = 0.0
    for k in range(m - 1):
        a = hull[k]
        b = hull[k + 1]
        if u[a] <= u_bar <= u[b]:
            du = u[b] - u[a]
            if du > 0.0:
                d = (v[b] - v[a]) / du
            break
    d = min(max(d, d_lo), d_hi)
    # Highest line of slope d below every point (attained at the hull edge when unclamped).
    c = np.inf
    for k in range(n):
        i = (start + k) % cap
        c = min(c, v[i] - d * u[i])
    out[0] = c
    out[1] = d
    out[2] = u_bar
    return m


@jit
def minima_slope(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    work: npt.NDArray[np.float64],
) -> float:
    """Slope of a least-squares line through the bin minima, after dropping high outliers.

    Bin minima are order statistics of a stationary delay distribution, so a line through
    all of them has a far steadier slope than the two hull vertices that fix the envelope's
    slope on a short span. Minima more than 3 robust SDs above a first fit (a stalled bin)
    are dropped, then the line is refitted. `work` (length >= n) receives residuals.
    """
    cap = u.shape[0]
    if n < 2:
        return 0.0
    u0 = u[start % cap]
    keep_all = np.inf
    d = 0.0
    for _ in range(2):
        su = 0.0
        sv = 0.0
        m = 0
        for k in range(n):
            i = (start + k) % cap
            if work[k] > keep_all:
                continue
            su += u[i] - u0
            sv += v[i]
            m += 1
        if m < 2:
            return d
        mu = su / m
        mv = sv / m
        suu = 0.0
        suv = 0.0
        for k in range(n):
            i = (start + k) % cap
            if work[k] > keep_all:
                continue
            du = u[i] - u0 - mu
            suu += du * du
            suv += du * (v[i] - mv)
        if suu <= 0.0:
            return d
        d = suv / suu
        for k in range(n):
            i = (start + k) % cap
            work[k] = v[i] - mv - d * (u[i] - u0 - mu)
        med = np.median(work[:n])
        mad = np.median(np.abs(work[:n] - med))
        keep_all = med + 3.0 * 1.4826 * mad
    return d


@jit
def affine_map(
    x: npt.NDArray[np.float64],
    x0: float,
    slope: float,
    base: float,
    out: npt.NDArray[np.float64],
) -> None:
    """out[i] = base + slope * (x[i] - x0): device seconds to host seconds for one block.

    Subtracting the anchor first keeps the product small, so the result is exact to float64
    rounding of the host time itself.
    """
    for i in range(x.shape[0]):
        out[i] = base + slope * (x[i] - x0)
