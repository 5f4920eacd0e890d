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

__all__ = [
    "affine_map",
    "bracket_range",
    "envelope_fit",
    "event_grid",
    "group_minima",
    "local_floor",
    "minima_slope",
    "shrink_slope",
]


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
def group_minima(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    group_s: float,
    gu: npt.NDArray[np.float64],
    gv: npt.NDArray[np.float64],
) -> int:
    """The lowest point (least v - d*u) of each span of `group_s` in u, in order, written to
    gu/gv from index 0; returns their number. Points sorted by u; groups are floor(u /
    group_s), so a point's group never depends on which other points are in the ring."""
    cap = u.shape[0]
    m = 0
    g_cur = np.nan
    best = np.inf
    for k in range(n):
        i = (start + k) % cap
        g = np.floor(u[i] / group_s)
        key = v[i] - d * u[i]
        if g != g_cur:
            g_cur = g
            gu[m] = u[i]
            gv[m] = v[i]
            best = key
            m += 1
        elif key < best:
            best = key
            gu[m - 1] = u[i]
            gv[m - 1] = v[i]
    return m


@jit
def shrink_slope(
    u: npt.NDArray[np.float64],
    start: int,
    n: int,
    work: npt.NDArray[np.float64],
    d: float,
    prior_sd: float,
) -> float:
    """The slope `d` of `minima_slope` shrunk toward 0 by its own standard error.

    d * prior_sd**2 / (prior_sd**2 + se**2): the posterior mean under a N(0, prior_sd**2)
    prior on the drift, with se from the residuals `minima_slope` left in `work` (the same
    high-outlier cut). Why: with dense packets se is a few ppm and nothing changes; with
    sparse long frames (an H10: one frame per 0.18-0.56 s, most 0.5 s bins holding only a
    phase-locked frame 25-30 ms above the floor) the minima are a sawtooth and the plain
    slope runs to the drift limit (measured: +-300 ppm fitted for -100 after 10 s).
    """
    cap = u.shape[0]
    if n < 3:
        return d
    med = np.median(work[:n])
    mad = np.median(np.abs(work[:n] - med))
    keep_all = med + 3.0 * 1.4826 * mad
    su = 0.0
    m = 0
    u0 = u[start % cap]
    for k in range(n):
        if work[k] <= keep_all:
            su += u[(start + k) % cap] - u0
            m += 1
    if m < 3:
        return d
    mu = su / m
    suu = 0.0
    srr = 0.0
    for k in range(n):
        if work[k] <= keep_all:
            du = u[(start + k) % cap] - u0 - mu
            suu += du * du
            srr += work[k] * work[k]
    if suu <= 0.0:
        return 0.0
    se2 = srr / (m - 2) / suu
    p2 = prior_sd * prior_sd
    return d * p2 / (p2 + se2)


@jit
def local_floor(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    u_lo: float,
    u_hi: float,
) -> float:
    """min(v - d*u) over the points with u_lo <= u < u_hi (inf when there is none): the
    floor just before a suspected step, compared over seconds rather than the whole window
    so that a slope error costs little."""
    cap = u.shape[0]
    best = np.inf
    for k in range(n):
        i = (start + k) % cap
        if u_lo <= u[i] < u_hi:
            best = min(best, v[i] - d * u[i])
    return best


@jit
def _objective(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    d: float,
    u_now: float,
    mode: int,
) -> float:
    """At slope d, with up = min(v - d*u) and lo = max(w - d*wu) (NaN lower bounds skipped):
    mode 0 the room up - lo; mode 1 the highest line's value at u_now, up + d*u_now; mode 2
    minus the lowest line's value there, -(lo + d*u_now). All three are concave in d."""
    cap = u.shape[0]
    up = np.inf
    lo = -np.inf
    for k in range(n):
        i = (start + k) % cap
        a = v[i] - d * u[i]
        if a < up:
            up = a
        b = w[i] - d * wu[i]
        if b > lo:  # False for NaN
            lo = b
    if mode == 0:
        return up - lo
    if mode == 1:
        return up + d * u_now
    return -(lo + d * u_now)


@jit
def _golden_max(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    a: float,
    b: float,
    u_now: float,
    mode: int,
) -> float:
    """Golden-section search for the maximiser of a concave `_objective` on [a, b]."""
    g = 0.6180339887498949  # (sqrt(5) - 1) / 2
    x1 = b - g * (b - a)
    x2 = a + g * (b - a)
    f1 = _objective(u, v, wu, w, start, n, x1, u_now, mode)
    f2 = _objective(u, v, wu, w, start, n, x2, u_now, mode)
    # 64 steps shrink the interval by 0.618**64 ~ 4e-14: below 1e-16 for a 600 ppm range.
    for _ in range(64):
        if f1 < f2:
            a = x1
            x1 = x2
            f1 = f2
            x2 = a + g * (b - a)
            f2 = _objective(u, v, wu, w, start, n, x2, u_now, mode)
        else:
            b = x2
            x2 = x1
            f2 = f1
            x1 = b - g * (b - a)
            f1 = _objective(u, v, wu, w, start, n, x1, u_now, mode)
    return 0.5 * (a + b)


@jit
def _room_edge(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    inside: float,
    outside: float,
) -> float:
    """Bisection for the edge of {d : room(d) >= 0} between a slope inside it and one out."""
    if _objective(u, v, wu, w, start, n, outside, 0.0, 0) >= 0.0:
        return outside
    for _ in range(64):
        mid = 0.5 * (inside + outside)
        if _objective(u, v, wu, w, start, n, mid, 0.0, 0) >= 0.0:
            inside = mid
        else:
            outside = mid
    return inside


@jit
def bracket_range(
    u: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    wu: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    start: int,
    n: int,
    d_lo: float,
    d_hi: float,
    u_now: float,
    out: npt.NDArray[np.float64],
) -> bool:
    """Every line v = c + d*u, d in [d_lo, d_hi], that lies on or below the upper bounds
    (u, v) and on or above the lower bounds (wu, w; NaN: none in that slot): the range of
    their values at u_now and of their slopes.

    out[0], out[1]: lowest and highest value at u_now; out[2], out[3]: lowest and highest
    slope; out[4]: the slope with the most room between the two sides. The set of such
    (c, d) is convex, so each extreme is a one-dimensional concave search: the room
    min(v - d*u) - max(w - d*wu) is concave in d, its non-negative part is an interval of
    slopes, and over it the highest line's value at u_now is concave and the lowest's
    convex. Returns False (out untouched) without a lower bound or when no line fits.
    """
    cap = u.shape[0]
    any_lower = False
    for k in range(n):
        x = w[(start + k) % cap]
        if x == x:
            any_lower = True
            break
    if n <= 0 or not any_lower:
        return False
    d_best = _golden_max(u, v, wu, w, start, n, d_lo, d_hi, 0.0, 0)
    if _objective(u, v, wu, w, start, n, d_best, 0.0, 0) < 0.0:
        return False
    d1 = _room_edge(u, v, wu, w, start, n, d_best, d_lo)
    d2 = _room_edge(u, v, wu, w, start, n, d_best, d_hi)
    d_top = _golden_max(u, v, wu, w, start, n, d1, d2, u_now, 1)
    d_bot = _golden_max(u, v, wu, w, start, n, d1, d2, u_now, 2)
    out[0] = -_objective(u, v, wu, w, start, n, d_bot, u_now, 2)
    out[1] = _objective(u, v, wu, w, start, n, d_top, u_now, 1)
    out[2] = d1
    out[3] = d2
    out[4] = d_best
    return True


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


@jit
def grid_map(
    first_x: float,
    step: float,
    x0: float,
    slope: float,
    base: float,
    out: npt.NDArray[np.float64],
) -> None:
    """out[k] = base + slope * ((k * step + first_x) - x0): `affine_map` of a block's device
    times x[k] = k * step + first_x (the same operations in the same order, so the same
    bits) without building x."""
    for k in range(out.shape[0]):
        out[k] = base + slope * ((k * step + first_x) - x0)


@jit
def event_grid(
    a: npt.NDArray[np.float64],
    start: int,
    n: int,
    step_s: float,
    k_lo: int,
    k_hi: int,
    frac_min: float,
    slide_max: float,
    work: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
) -> bool:
    """The delivery grid of a link from its batch arrival times (host seconds, sorted).

    For each interval I = k * step_s, k from k_hi down to k_lo, the residues a mod I are
    tested for one cluster: the best window of width I / 4 (circular) must hold at least
    `frac_min` of them. The largest such I wins: a divisor of the true interval clusters
    as well but would make lower bounds that are too high, a multiple spreads over several
    residues (a multiple that clusters by chance, a link using only every second event,
    gives looser but still true bounds). out[0] = I, out[1] = the lowest residue of the
    cluster (the event phase plus the fastest host path), both relative to a[start].
    The radio's clock drifts against the host's: the cluster's lower edge slides, by at
    most `slide_max` seconds per second; out[0] is then the interval in host seconds and
    out[1] the edge at a[start] (the lowest line under the residues, Moon et al. again).
    `work` (length >= n) is scratch. False (out untouched) when no interval clusters.
    """
    cap = a.shape[0]
    if n < 8 or k_hi < k_lo:
        return False
    a0 = a[start % cap]
    need = frac_min * n
    for k in range(k_hi, k_lo - 1, -1):
        iv = k * step_s
        for j in range(n):
            r = (a[(start + j) % cap] - a0) % iv
            work[j] = r
        res = np.sort(work[:n])
        width = 0.25 * iv
        best = 0
        best_i = 0
        hi = 0
        for i in range(n):
            # residues i..hi-1 (wrapping once) within [res[i], res[i] + width]
            if hi < i + 1:
                hi = i + 1
            while hi < i + n:
                x = res[hi % n] + (iv if hi >= n else 0.0)
                if x - res[i] > width:
                    break
                hi += 1
            if hi - i > best:
                best = hi - i
                best_i = i
        if best >= need:
            # The events' clock (the radio's) drifts against the host's: fit the slow
            # slide of the cluster's lower edge (lowest line under the residues).
            # Only the cluster's members: an arrival a host stall pushed to just before
            # the next event would otherwise pull the edge early, and the bounds with it.
            p = res[best_i]
            tu = np.empty(n)
            tv = np.empty(n)
            m = 0
            for j in range(n):
                i = (start + j) % cap
                r = (a[i] - a0 - p) % iv
                if r > iv - 1e-9:  # the edge itself, rounded to just below a whole interval
                    r -= iv
                if r <= width:
                    tu[m] = a[i] - a0
                    tv[m] = r
                    m += 1
            hull = np.empty(m, dtype=np.int64)
            fit = np.empty(3)
            envelope_fit(tu, tv, 0, m, -slide_max, slide_max, hull, fit)
            slide = fit[1]
            out[0] = iv * (1.0 + slide)
            out[1] = p + fit[0]
            return True
    return False
